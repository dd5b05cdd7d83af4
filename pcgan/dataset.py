"""The dataset directory: ``grids.npy`` + ``dataset.json`` (+ ``preview.png``).

``grids.npy`` is float16 ``[N, C, H, W]`` and opens with ``np.load(mmap_mode="r")``, so a
dataset larger than memory streams from disk. ``dataset.json`` says how to read it::

    schema, schema_version   "pcgan-dataset", 1
    num_grids                N rows in grids.npy
    grid                     GridMeta.to_dict(): resolution, channels, camera, center, scale,
                             units, background_rgb, sheet_z
    stats                    per-channel mean/std/min/max over surface pixels, surface_fraction
    split                    {"train": [row, ...], "val": [row, ...]}
    files                    one record per source file, in input order:
                             {path, sha256, kind, status: "ok"|"failed", error, warnings, index
                             (row in grids.npy or null), to_canonical (4x4, scan frame and units ->
                             canonical frame in scan units, or in units of the scan's own size
                             when made with --scale per-scan; then GridMeta normalisation
                             applies)}; data_tools/preprocess.py adds loader details
    preprocess               the options the dataset was made with

This module is core (numpy only): training, export and evaluation read datasets through it;
``data_tools`` writes them through :func:`write_dataset`.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pcgan.errors import PcganError
from pcgan.fileio import atomic_path, ensure_writable_dir, write_json
from pcgan.grid import RGB, XYZ, GridMeta, surface_mask

log = logging.getLogger(__name__)

SCHEMA = "pcgan-dataset"
SCHEMA_VERSION = 1
GRIDS_FILE = "grids.npy"
INFO_FILE = "dataset.json"
PREVIEW_FILE = "preview.png"


@dataclass
class Dataset:
    path: Path
    grids: np.ndarray      # [N, C, H, W] float16 (memory-mapped unless loaded with mmap=False)
    meta: GridMeta
    info: dict             # the whole dataset.json

    def __len__(self) -> int:
        return self.grids.shape[0]

    def split(self, name: str) -> np.ndarray:
        """Row indices of a split ("train" or "val"); all rows when the split is absent."""
        rows = self.info.get("split", {}).get(name)
        return np.arange(len(self)) if rows is None else np.asarray(rows, dtype=np.int64)

    def source_transform(self, row: int) -> np.ndarray:
        """4x4 map from grid row ``row``'s source scan frame to the canonical frame (scan units)."""
        for rec in self.info.get("files", []):
            if rec.get("index") == row:
                return np.asarray(rec["to_canonical"], dtype=np.float64)
        raise PcganError(f"{self.path / INFO_FILE}: no source file record for grid row {row}")


def load_dataset(path: str | Path, mmap: bool = True) -> Dataset:
    """Open a dataset directory (or its grids.npy). Raises PcganError naming what is wrong."""
    path = Path(path)
    if path.name == GRIDS_FILE:
        path = path.parent
    info_path, grids_path = path / INFO_FILE, path / GRIDS_FILE
    if not path.is_dir():
        raise PcganError(f"dataset {path} does not exist (make one with `pcgan preprocess SCANS --out {path}`)")
    for p in (info_path, grids_path):
        if not p.is_file():
            raise PcganError(f"dataset {path} has no {p.name}: not a pcgan dataset, or preprocessing did not finish")
    try:
        info = json.loads(info_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise PcganError(f"{info_path}: not valid JSON ({exc})") from None
    if info.get("schema") != SCHEMA:
        raise PcganError(f"{info_path}: schema is {info.get('schema')!r}, expected {SCHEMA!r}")
    if info.get("schema_version", 0) > SCHEMA_VERSION:
        raise PcganError(f"{info_path}: schema_version {info['schema_version']} is newer than this pcgan "
                         f"understands ({SCHEMA_VERSION}); upgrade pcgan")
    meta = GridMeta.from_dict(info["grid"])
    try:
        grids = np.load(grids_path, mmap_mode="r" if mmap else None)
    except (ValueError, OSError, EOFError) as exc:
        raise PcganError(f"{grids_path}: cannot read ({exc})") from None
    expect = (info.get("num_grids", grids.shape[0]), meta.num_channels, meta.resolution, meta.resolution)
    if grids.ndim != 4 or tuple(grids.shape) != expect:
        raise PcganError(f"{grids_path}: shape {list(grids.shape)} disagrees with {INFO_FILE} "
                         f"(expected {list(expect)})")
    return Dataset(path=path, grids=grids, meta=meta, info=info)


def open_npy(path: str | Path, name: str | None = None) -> np.ndarray:
    """A ``.npy`` file memory-mapped, one ``[C, H, W]`` grid given a batch axis (``[1, C, H, W]``);
    other shapes as stored. Unreadable files raise a one-line PcganError naming ``name`` (the
    path by default)."""
    try:
        arr = np.load(path, mmap_mode="r")
    except (ValueError, OSError, EOFError) as exc:
        raise PcganError(f"{name or path}: cannot read as .npy ({exc})") from None
    return arr[None] if arr.ndim == 3 else arr


def load_grids_npy(path: str | Path, name: str | None = None) -> np.ndarray:
    """A bare ``.npy`` of grids, memory-mapped: ``[N, C, H, W]`` (one ``[C, H, W]`` grid gets N = 1).

    ``name`` is how messages refer to the file (e.g. ``"--fakes x.npy"``); the path by default."""
    path = Path(path)
    name = name or str(path)
    if not path.is_file():
        raise PcganError(f"{name} does not exist (give a .npy of grids or a dataset directory)")
    if path.suffix.lower() != ".npy":
        raise PcganError(f"{name}: not a .npy file of grids or a dataset directory")
    grids = open_npy(path, name)
    if grids.ndim != 4:
        raise PcganError(f"{name}: shape {list(grids.shape)}, expected grids [N, C, H, W] or one grid [C, H, W]")
    return grids


def channel_stats(grids: np.ndarray, meta: GridMeta, chunk: int = 256) -> dict:
    """Per-channel mean/std/min/max over surface pixels, NaN count and surface fraction.

    grids: [N, C, H, W] (any float dtype, memmap fine; read in chunks)."""
    C = meta.num_channels
    s1, s2 = np.zeros(C), np.zeros(C)
    lo, hi = np.full(C, np.inf), np.full(C, -np.inf)
    count, pixels, nans, empty = 0, 0, 0, 0
    for start in range(0, grids.shape[0], chunk):
        g = np.asarray(grids[start:start + chunk], dtype=np.float32)       # [b, C, H, W]
        finite = np.isfinite(g)
        nans += int(g.size - np.count_nonzero(finite))
        m = surface_mask(g, meta)                                           # [b, H, W], finite pixels only
        empty += int((m.reshape(m.shape[0], -1).sum(1) == 0).sum())
        pixels += m.size
        count += int(np.count_nonzero(m))
        # Masked reductions over whole arrays: far faster than gathering surface pixels.
        w = m[:, None]                                                      # [b, 1, H, W]
        v = np.where(w, g, 0.0)
        s1 += v.sum(axis=(0, 2, 3), dtype=np.float64)
        s2 += np.square(v, dtype=np.float64).sum(axis=(0, 2, 3))
        lo = np.minimum(lo, np.where(w, g, np.inf).min(axis=(0, 2, 3)))
        hi = np.maximum(hi, np.where(w, g, -np.inf).max(axis=(0, 2, 3)))
    mean = s1 / max(count, 1)
    std = np.sqrt(np.maximum(s2 / max(count, 1) - mean ** 2, 0))
    names = list(meta.channels)
    return {
        "channels": names,
        "mean": mean.round(6).tolist(), "std": std.round(6).tolist(),
        "min": np.where(np.isfinite(lo), lo, 0).round(6).tolist(),
        "max": np.where(np.isfinite(hi), hi, 0).round(6).tolist(),
        "surface_fraction": round(count / max(pixels, 1), 6),
        "nan_values": nans,
        "empty_grids": empty,
    }


def make_split(n: int, val_fraction: float, seed: int = 0) -> dict:
    """A deterministic train/val split of ``n`` rows; at least one val row when n >= 2."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(n)
    n_val = int(round(n * val_fraction))
    if val_fraction > 0 and n >= 2:
        n_val = max(n_val, 1)
    return {"train": sorted(order[n_val:].tolist()), "val": sorted(order[:n_val].tolist()),
            "val_fraction": val_fraction, "seed": seed}


def write_dataset(path: str | Path, grids: np.ndarray, meta: GridMeta, info: dict) -> Path:
    """Write grids.npy (float16) and dataset.json atomically. ``info`` supplies files, split,
    preprocess options and anything else; schema, grid meta, num_grids and stats are filled here."""
    path = ensure_writable_dir(path)
    grids = np.asarray(grids)
    assert grids.ndim == 4 and grids.shape[1:] == (meta.num_channels, meta.resolution, meta.resolution), \
        f"grids {grids.shape} do not match meta {meta.num_channels}x{meta.resolution}^2"
    with atomic_path(path / GRIDS_FILE) as tmp:
        np.save(tmp, grids.astype(np.float16, copy=False))
    full = {"schema": SCHEMA, "schema_version": SCHEMA_VERSION, "num_grids": int(grids.shape[0]),
            "grid": meta.to_dict(), "stats": channel_stats(grids, meta), **info}
    full.setdefault("split", make_split(grids.shape[0], 0.1))
    write_json(path / INFO_FILE, full)
    log.info("wrote %d grids to %s", grids.shape[0], path)
    return path


def validate_dataset(path: str | Path) -> list[str]:
    """Problems that make a dataset unusable for training; empty when it is fine."""
    try:
        ds = load_dataset(path)
    except PcganError as exc:
        return [str(exc)]
    problems = []
    stats = channel_stats(ds.grids, ds.meta)
    if len(ds) == 0:
        problems.append(f"{ds.path}: no grids")
    if stats["nan_values"]:
        problems.append(f"{ds.path / GRIDS_FILE}: {stats['nan_values']} NaN/Inf values")
    if stats["empty_grids"]:
        problems.append(f"{ds.path / GRIDS_FILE}: {stats['empty_grids']} grids have no surface pixel")
    rows = set(range(len(ds)))
    for name in ("train", "val"):
        bad = [int(r) for r in ds.split(name) if int(r) not in rows]
        if bad:
            problems.append(f"{ds.path / INFO_FILE}: split '{name}' names rows {bad[:5]} outside 0..{len(ds) - 1}")
    ok_rows = sorted(r["index"] for r in ds.info.get("files", []) if r.get("status") == "ok")
    if ds.info.get("files") and ok_rows != list(range(len(ds))):
        problems.append(f"{ds.path / INFO_FILE}: file records cover rows {ok_rows[:5]}..., "
                        f"expected each of 0..{len(ds) - 1} once")
    xyz = np.asarray(stats["max"][XYZ] + stats["min"][XYZ])
    if len(ds) and np.abs(xyz).max() > 10:
        problems.append(f"{ds.path}: XYZ reaches {np.abs(xyz).max():.1f} normalised units; "
                        f"expected about [-1, 1] (check center/scale)")
    rgb = np.asarray(stats["max"][RGB] + stats["min"][RGB])
    if len(ds) and np.abs(rgb).max() > 1.01:
        problems.append(f"{ds.path}: RGB outside [-1, 1] (max |value| {np.abs(rgb).max():.2f})")
    return problems

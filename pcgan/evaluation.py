"""Evaluating a generator: fixed seeds -> grids -> metrics against a held-out reference split.

The library behind ``pcgan eval`` and the training loop's snapshot metrics (``train.metrics``):
:func:`evaluate_generator` generates one face per seed with :func:`pcgan.generate.generate_grids`
(seed s is the same face on any batch size) and hands them to
:func:`pcgan.metrics.compute_metrics`; :func:`evaluate_grids` does the same for grids made
elsewhere (an export of another model). :class:`SnapshotMetrics` is the cheap version the
training loop runs at each snapshot.

Reference reals. The set metrics compare the generator with scans it was *not* trained on: the
dataset's ``val`` split. A val split smaller than ``min(wanted, MIN_REFERENCE)`` rows cannot
tell generators apart, so ``split="auto"`` then takes every row instead and says so with the
counts (the numbers then also reward memorising training scans).

Randomness. Nothing here draws from torch's or numpy's global random state: latents and noise
come from per-seed generators, point sampling and subsets from ``EvalOptions.seed``. So
evaluating inside the training loop leaves its random streams, and exact resumes, untouched.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
import logging
import time
from collections import OrderedDict
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from pcgan.dataset import GRIDS_FILE, INFO_FILE, Dataset
from pcgan.errors import PcganError
from pcgan.fileio import atomic_path
from pcgan.generate import check_batch, check_cutoff, check_noise_mode, check_psi, generate_grids
from pcgan.grid import GridMeta
from pcgan.metrics import METRICS, EvalOptions, compute_metrics, expand_names, save_nn_pairs_png
from pcgan.ranges import format_index_list

log = logging.getLogger(__name__)

SPLITS = ("auto", "val", "train", "all")   # which dataset rows are the reference reals
MIN_REFERENCE = 16                         # "auto": a val split needs min(wanted, this) rows
METRIC_FILE = "metric-{name}.jsonl"        # training: one row per snapshot and metric


# ---------------------------------------------------------------------------------------------
# Reference reals


class GridRows:
    """Rows ``rows`` of grids ``[N, C, H, W]`` as an array-like ``[len(rows), C, H, W]``,
    read one row at a time (a memory-mapped dataset stays on disk)."""

    def __init__(self, grids, rows: Sequence[int]):
        self.grids = grids
        self.rows = np.asarray(rows, dtype=np.int64)

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.rows), *self.grids.shape[1:])

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, k):
        if isinstance(k, (slice, list, np.ndarray)):
            return np.stack([np.asarray(self.grids[int(r)], dtype=np.float32) for r in self.rows[k]])
        return np.asarray(self.grids[int(self.rows[k])], dtype=np.float32)       # [C, H, W]


def reference_rows(dataset: Dataset, split: str = "auto", wanted: int | None = None
                   ) -> tuple[np.ndarray, str, str | None]:
    """Which dataset rows are the reference reals.

    split: "val" (held out), "train", "all", or "auto": val when it has at least
        ``min(wanted, MIN_REFERENCE)`` rows, else all rows.
    wanted: how many reals the caller would like (None: MIN_REFERENCE).
    Returns ``(rows [M] int64, the split used, a warning for the user or None)``."""
    if split not in SPLITS:
        raise PcganError(f"split {split!r}: use one of {', '.join(SPLITS)}")
    n = len(dataset)
    if n == 0:
        raise PcganError(f"dataset {dataset.path} holds no grids")
    declared = dataset.info.get("split") or {}
    if split == "all":
        return np.arange(n), "all", None
    if split in ("val", "train"):
        if declared.get(split) is None:
            raise PcganError(f"dataset {dataset.path} declares no '{split}' split in {INFO_FILE}; "
                             f"use --split all")
        rows = dataset.split(split)
        if len(rows) == 0:
            raise PcganError(f"dataset {dataset.path}: its '{split}' split is empty; use --split all")
        return rows, split, None
    need = min(wanted or MIN_REFERENCE, MIN_REFERENCE)
    val = dataset.split("val") if declared.get("val") is not None else np.zeros(0, np.int64)
    if len(val) >= need:
        return val, "val", None
    why = (f"its val split has {len(val)} rows (fewer than {need})" if declared.get("val") is not None
           else "it declares no val split")
    return np.arange(n), "all", (f"dataset {dataset.path}: {why}, so all {n} rows are the reference reals; "
                                 f"the numbers then include training scans (reward memorisation)")


def dataset_fingerprint(dataset: Dataset, rows: Sequence[int]) -> str:
    """A cheap identity of the reference reals for the reals' feature cache: the grids file's
    size and modification time, the dataset.json content and the rows (no pass over the data)."""
    st = (dataset.path / GRIDS_FILE).stat()
    h = hashlib.sha256()
    h.update(f"{st.st_size}:{st.st_mtime_ns}".encode())
    h.update((dataset.path / INFO_FILE).read_bytes())
    h.update(np.asarray(rows, dtype=np.int64).tobytes())
    return h.hexdigest()


def check_compatible(gen_meta: GridMeta, gen_name: str, real_meta: GridMeta, real_name: str) -> list[str]:
    """Generated and real grids must share channels and resolution (PcganError naming both);
    returns warnings for what only shifts the numbers (normalisation, units)."""
    def layout(m: GridMeta) -> str:
        return f"{m.num_channels} channels ({' '.join(m.channels)}) at {m.resolution}x{m.resolution}"
    if tuple(gen_meta.channels) != tuple(real_meta.channels) or gen_meta.resolution != real_meta.resolution:
        raise PcganError(f"{gen_name} makes grids with {layout(gen_meta)}, but {real_name} has {layout(real_meta)}: "
                         f"evaluate against a dataset with the same channels and resolution")
    warnings = []
    if (tuple(gen_meta.center), gen_meta.scale) != (tuple(real_meta.center), real_meta.scale):
        warnings.append(f"{gen_name} is normalised with center {list(gen_meta.center)}, scale {gen_meta.scale:g} but "
                        f"{real_name} with center {list(real_meta.center)}, scale {real_meta.scale:g}: the 3D "
                        f"metrics compare the normalised frames as they are")
    if gen_meta.units != real_meta.units:
        warnings.append(f"{gen_name} is in units {gen_meta.units!r} but {real_name} in {real_meta.units!r}")
    return warnings


def required_weights(names) -> list[str]:
    """Weight files the metrics cannot run without (no download path): the FID Inception."""
    from pcgan.metrics.inception import FILE

    return [FILE] if any(METRICS[n].kind == "2d" and not n.startswith("lpips") for n in expand_names(names)) else []


def check_weights(names, weights_dir=None) -> None:
    """Fail before any work when a needed weights file is missing (one line naming it and where
    to get it; see :mod:`pcgan.metrics.weights`)."""
    from pcgan.metrics.weights import find_weights

    for f in required_weights(names):
        find_weights(f, weights_dir)


# ---------------------------------------------------------------------------------------------
# Evaluating


def evaluate_grids(fakes, reals, meta: GridMeta, names, options: EvalOptions | None = None,
                   nn_png: str | Path | None = None, fake_labels: Sequence[int] | None = None,
                   real_labels: Sequence[int] | None = None) -> dict:
    """Metrics of generated grids ``fakes [N, C, H, W]`` against ``reals [M, C, H, W]``.

    Returns the metrics.json dict of :func:`pcgan.metrics.compute_metrics`. With ``nn_png``,
    also draws the generated grids next to their Chamfer-nearest reals (when a Chamfer set
    metric ran). ``fake_labels`` / ``real_labels``: what the PNG and ``nearest_real`` call
    the grids (seeds, dataset rows; default their positions)."""
    result = compute_metrics(names, fakes, reals, meta, options)
    nearest = result.get("nearest_real")
    if nearest is not None and real_labels is not None:
        nearest["dataset_row"] = [int(real_labels[i]) for i in nearest["real_index"]]
    if nearest is not None and fake_labels is not None:
        nearest["seed"] = [int(fake_labels[i]) for i in nearest["gen_index"]]
    if nn_png is not None:
        if nearest is None:
            log.warning("no nearest-neighbour PNG: none of the metrics computed Chamfer distances "
                        "(add mmd_cd, cov_cd or 1nna_cd)")
        else:
            result["nn_png"] = _nn_png(nn_png, fakes, reals, meta, nearest, fake_labels, real_labels)
    return result


def _nn_png(path, fakes, reals, meta, nearest: dict, fake_labels, real_labels) -> str:
    """save_nn_pairs_png with the grids keyed by their labels, so the picture names seeds and
    dataset rows rather than positions."""
    gi, ri = nearest["gen_index"][:8], nearest["real_index"][:8]
    gl = [int(fake_labels[i]) if fake_labels is not None else i for i in gi]
    rl = [int(real_labels[j]) if real_labels is not None else j for j in ri]
    by_fake = {label: np.asarray(fakes[i], dtype=np.float32) for label, i in zip(gl, gi)}
    by_real = {label: np.asarray(reals[j], dtype=np.float32) for label, j in zip(rl, ri)}
    path = Path(path)
    with atomic_path(path) as tmp:
        save_nn_pairs_png(tmp, by_fake, by_real, meta,
                          {"gen_index": gl, "real_index": rl, "cd": nearest["cd"][:8]})
    return str(path)


def generator_options(G, options: EvalOptions, psi: float = 1.0, cutoff: int | None = None,
                      c=None) -> EvalOptions:
    """``options`` with the generator callables the path-length metrics need (``c``: one
    condition ``[c_dim]`` for a conditional generator). Synthesis uses the learned constant
    noise, so no global random state is drawn."""
    def mapping(z):
        device = next(G.parameters()).device
        cz = None if c is None else torch.as_tensor(c, dtype=torch.float32, device=device).expand(len(z), -1)
        return G.mapping(z.to(device), cz, truncation_psi=psi, truncation_cutoff=cutoff)

    def synthesis(ws):
        return G.synthesis(ws, noise_mode="const")
    return dataclasses.replace(options, mapping=mapping, synthesis=synthesis, z_dim=G.z_dim)


class GeneratedGrids:
    """The grids of ``seeds`` as an array-like ``[N, C, H, W]`` (rows float32 numpy) that
    synthesises them on demand, ``batch`` seeds at a time.

    Chunks are kept until they hold ``cache_bytes``; beyond that the oldest are dropped and
    regenerated when read again (bit-identical: a chunk is always the same seeds in the same
    call). So a small evaluation generates each face once, and fid50k at 256^2 (46 GB of
    float32 grids) streams instead of filling memory. Other arguments as
    :func:`pcgan.generate.generate_grids`; ``c`` is one condition ``[c_dim]`` for all faces."""

    def __init__(self, G, seeds: Sequence[int], psi: float = 1.0, cutoff: int | None = None,
                 noise_mode: str = "const", batch: int = 8, c=None, per_face: bool = True,
                 cache_bytes: int = 1 << 30):
        check_psi(psi)
        check_cutoff(cutoff, G.num_ws)
        check_noise_mode(noise_mode)
        self.batch = check_batch(batch)
        self.G, self.seeds = G, [int(s) for s in seeds]
        self.psi, self.cutoff, self.noise_mode, self.c, self.per_face = psi, cutoff, noise_mode, c, per_face
        self.shape = (len(self.seeds), G.img_channels, G.resolution, G.resolution)
        self.cache_bytes = cache_bytes
        self._chunks: OrderedDict[int, np.ndarray] = OrderedDict()
        self.generated = 0          # faces synthesised so far (more than N when chunks were dropped)
        self.generate_s = 0.0       # seconds spent in the generator

    def __len__(self) -> int:
        return self.shape[0]

    def _chunk(self, k: int) -> np.ndarray:
        if k in self._chunks:
            self._chunks.move_to_end(k)
            return self._chunks[k]
        t0 = time.perf_counter()
        seeds = self.seeds[k * self.batch:(k + 1) * self.batch]
        grids = generate_grids(self.G, seeds, self.psi, self.cutoff, self.noise_mode, len(seeds), c=self.c,
                               per_face=self.per_face).numpy()                     # [b, C, H, W] float32
        self.generate_s += time.perf_counter() - t0
        self.generated += len(seeds)
        self._chunks[k] = grids
        while len(self._chunks) > 1 and sum(v.nbytes for v in self._chunks.values()) > self.cache_bytes:
            self._chunks.popitem(last=False)
        return grids

    def __getitem__(self, i):
        if isinstance(i, (slice, list, np.ndarray)):
            return np.stack([self[int(j)] for j in np.arange(len(self))[i]])
        i = int(i)
        if not 0 <= i < len(self):
            raise IndexError(f"generated grid {i} of {len(self)}")
        return self._chunk(i // self.batch)[i % self.batch]                          # [C, H, W]


def evaluate_generator(G, meta: GridMeta, reals, names, num_gen: int | None = None,
                       seeds: Sequence[int] | None = None, options: EvalOptions | None = None, *,
                       psi: float = 1.0, cutoff: int | None = None, noise_mode: str = "const", batch: int = 8,
                       per_face: bool = True, c=None, nn_png: str | Path | None = None,
                       real_labels: Sequence[int] | None = None) -> dict:
    """Generate one face per seed and evaluate them against ``reals``.

    Args:
        G: a :class:`pcgan.networks.Generator` (e.g. G_ema, or from ``load_generator``).
        meta: the grid layout the reals use (channels, camera, normalisation).
        reals: real grids ``[M, C, H, W]`` (numpy, memmap, torch or :class:`GridRows`).
        names: metric names and/or groups (see :data:`pcgan.metrics.METRICS`).
        num_gen: faces to generate (seeds ``0 .. num_gen - 1``); or give ``seeds``.
        options: :class:`pcgan.metrics.EvalOptions` (generator callables are filled in here).
        psi, cutoff, noise_mode, batch, per_face, c: as :func:`pcgan.generate.generate_grids`.
        nn_png: also write the nearest-neighbour PNG here.
        real_labels: the reals' dataset rows, for ``nearest_real`` and the PNG.
    Returns:
        the metrics.json dict, plus ``"generator"``: seeds, psi, cutoff, noise mode.
    """
    if seeds is None:
        if not num_gen or num_gen < 1:
            raise PcganError(f"number of generated grids {num_gen!r}: give at least 1")
        seeds = range(num_gen)
    seeds = [int(s) for s in seeds]
    opts = options or EvalOptions()
    if any(METRICS[n].kind == "generator" for n in expand_names(names)):
        opts = generator_options(G, opts, psi, cutoff, c)
    fakes = GeneratedGrids(G, seeds, psi, cutoff, noise_mode, batch, c, per_face)    # [N, C, H, W], lazily
    result = evaluate_grids(fakes, reals, meta, names, opts, nn_png, fake_labels=seeds, real_labels=real_labels)
    result["generator"] = {"seeds": format_index_list(sorted(seeds)), "num_seeds": len(seeds), "psi": psi,
                           "cutoff": cutoff, "noise_mode": noise_mode, "per_face": per_face, "batch": batch,
                           "faces_synthesised": fakes.generated, "generate_s": round(fakes.generate_s, 3)}
    return result


# ---------------------------------------------------------------------------------------------
# Training snapshots


def _has_scipy() -> bool:
    """Whether the KD-tree Chamfer and the exact EMD can run (scipy is optional on GPU hosts)."""
    try:
        importlib.import_module("scipy.spatial")
        importlib.import_module("scipy.optimize")
    except ImportError:
        return False
    return True


def metric_outputs(metrics: dict, name: str) -> dict[str, float]:
    """The outputs of registered metric ``name`` in a flat metrics dict (``fid`` -> ``fid/rgb``...)."""
    return {k: v for k, v in metrics.items() if k == name or k.startswith(name + "/")}


class SnapshotMetrics:
    """The training loop's metrics at each snapshot: G_ema on fixed seeds against a fixed subset
    of the reals, small enough to take seconds (``train.metrics``, ``metrics_num``, ``metrics_points``).

    A metric whose requirements are missing on this host (a package, a weights file) is
    dropped with one warning; any other failure skips that snapshot's metrics with a warning.
    Training never stops for a metric."""

    def __init__(self, names: Sequence[str], dataset: Dataset, num: int, points: int, device, seed: int = 0):
        self.names = expand_names(list(names))
        self.dropped: set[str] = set()
        self.meta = dataset.meta
        rows, split, warning = reference_rows(dataset, "auto", num)
        if warning:
            log.warning("snapshot metrics: %s", warning)
        if len(rows) > num:   # a fixed, seeded subset: the same reals at every snapshot
            rows = np.sort(np.random.default_rng([seed, 2]).choice(rows, num, replace=False))
        self.rows, self.split = rows, split
        self.reals = GridRows(dataset.grids, rows)
        self.num_gen = min(num, len(rows))
        device = torch.device(device)
        scipy_ok = _has_scipy()
        self.options = EvalOptions(seed=seed, device=str(device), num_points=points,
                                   cd_backend="torch" if device.type == "cuda" or not scipy_ok else "kdtree",
                                   emd_method="auto" if scipy_ok else "auction",
                                   kid_subset_size=min(1000, self.num_gen), lpips_pairs=min(1000, 4 * self.num_gen),
                                   ppl_samples=self.num_gen, batch_size=min(32, self.num_gen))
        log.info("snapshot metrics %s: %d generated vs %d reals (%s split), %d points per cloud",
                 ", ".join(self.names), self.num_gen, len(rows), split, points)

    @property
    def active(self) -> list[str]:
        return [n for n in self.names if n not in self.dropped]

    def _evaluate(self, G, names) -> dict:
        return evaluate_generator(G, self.meta, self.reals, names, self.num_gen, options=self.options,
                                  batch=self.options.batch_size, per_face=False, real_labels=self.rows)

    def __call__(self, G) -> dict | None:
        """Evaluate ``G`` (in eval mode; weights unchanged). Returns the metrics.json dict of the
        metrics that ran, or None when none did."""
        names = self.active
        if not names:
            return None
        t0 = time.perf_counter()
        try:
            try:
                result = self._evaluate(G, names)
            except (ImportError, PcganError, OSError):
                result = self._one_by_one(G, names)   # find which metric cannot run here
        except Exception as exc:  # noqa: BLE001 - a metric must never stop a training run
            log.warning("snapshot metrics skipped this time (%s: %s)", type(exc).__name__, exc, exc_info=True)
            return None
        if result is None:
            return None
        result["eval_s"] = round(time.perf_counter() - t0, 3)
        return result

    def _one_by_one(self, G, names) -> dict | None:
        merged: dict | None = None
        for n in names:
            try:
                r = self._evaluate(G, [n])
            except (ImportError, PcganError, OSError) as exc:
                self.dropped.add(n)
                log.warning("snapshot metric %s cannot run here and is dropped for this run (%s: %s)",
                            n, type(exc).__name__, exc)
                continue
            if merged is None:
                merged = r
            else:
                merged["metrics"].update(r["metrics"])
                merged["timing_s"].update(r["timing_s"])
        return merged

    def write(self, run_dir: str | Path, result: dict, images_seen: int, snapshot: str) -> None:
        """Append one row per metric to ``run_dir/metric-<name>.jsonl``."""
        common = {"kimg": images_seen / 1000, "snapshot": snapshot, "num_gen": result["num_gen"],
                  "num_real": result["num_real"], "split": self.split,
                  "points": self.options.num_points,
                  "protocol": (result.get("3d") or {}).get("normalization", {}).get("protocol"),
                  "seed": self.options.seed, "created": result.get("created")}
        for n in self.active:
            values = metric_outputs(result["metrics"], n)
            if not values:
                continue
            row = {"metric": n, "results": values, **common, "time_s": result.get("timing_s", {}).get(n)}
            with open(Path(run_dir) / METRIC_FILE.format(name=n), "a", encoding="utf-8") as f:
                f.write(json.dumps(row) + "\n")


__all__ = ("evaluate_generator", "evaluate_grids", "reference_rows", "check_compatible", "check_weights",
           "required_weights", "dataset_fingerprint", "GridRows", "GeneratedGrids", "SnapshotMetrics", "metric_outputs",
           "SPLITS", "MIN_REFERENCE", "METRIC_FILE")

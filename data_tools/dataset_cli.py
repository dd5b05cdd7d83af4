"""``pcgan dataset info|validate|preview DATASET``: look inside a grid dataset.

``info`` prints the shape, channels, camera, normalisation, per-channel statistics over surface
pixels, NaN and empty-grid counts, the split and the source files (failures listed).
``validate`` prints every problem that would make the dataset unusable for training and exits 1
when there is one (0 and "ok" otherwise). ``preview`` writes a contact sheet: one row per grid
showing its colour, its depth (near = bright) and its normals.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from pcgan.dataset import PREVIEW_FILE, channel_stats, load_dataset, validate_dataset
from pcgan.grid import RGB, XYZ, GridMeta, grid_normals, grid_to_rgb, surface_mask

HELP = "inspect a grid dataset: info, validate, preview"
EPILOG = """\
examples:
  pcgan dataset info data/faces256            # shape, channels, stats, NaN/empty counts, files
  pcgan dataset info data/faces256 --json     # the same as JSON
  pcgan dataset validate data/faces256        # exit 1 and the reasons if it is broken
  pcgan dataset preview data/faces256 --count 16 --out sheet.png

Exit status: 0 fine, 1 validate found problems, 2 not a dataset / bad option.
"""

PREVIEW_TILE = 128   # largest tile side in a contact sheet, pixels


def add_arguments(parser) -> None:
    parser.add_argument("action", choices=("info", "validate", "preview"), help="what to do")
    parser.add_argument("dataset", metavar="DATASET", help="dataset directory (or its grids.npy)")
    parser.add_argument("--json", action="store_true", help="info: print JSON instead of text")
    parser.add_argument("--count", type=int, default=8, help="preview: number of grids shown")
    parser.add_argument("--start", type=int, default=0, help="preview: first grid row shown")
    parser.add_argument("--out", default=None, help=f"preview: image to write (default DATASET/{PREVIEW_FILE})")


def run(args) -> int:
    import torch
    torch.set_num_threads(1)     # small grid ops: more threads only contend for the cores
    if args.action == "validate":
        problems = validate_dataset(args.dataset)
        if problems:
            for p in problems:
                print(f"invalid: {p}")
            return 1
        print(f"ok: {args.dataset}")
        return 0
    ds = load_dataset(args.dataset)
    if args.action == "info":
        report = info(ds)
        print(json.dumps(report, indent=2) if args.json else format_info(report))
        return 0
    out = Path(args.out) if args.out else ds.path / PREVIEW_FILE
    rows = write_preview(out, ds.grids, ds.meta, count=args.count, start=args.start)
    print(f"wrote {out} ({rows} grid{'s' * (rows != 1)}: colour | depth | normals)")
    return 0


# ---------------------------------------------------------------------------------------------
# info


def info(ds) -> dict:
    """Everything ``info`` prints, as a dict (stats recomputed from grids.npy, not trusted)."""
    stats = channel_stats(ds.grids, ds.meta)
    files = ds.info.get("files", [])
    failed = [f for f in files if f.get("status") != "ok"]
    return {
        "path": str(ds.path),
        "shape": list(ds.grids.shape), "dtype": str(ds.grids.dtype),
        "channels": list(ds.meta.channels), "resolution": ds.meta.resolution,
        "camera": ds.meta.camera.to_dict(),
        "normalisation": {"center": list(ds.meta.center), "scale": ds.meta.scale, "units": ds.meta.units},
        "background_rgb": list(ds.meta.background_rgb), "sheet_z": ds.meta.sheet_z,
        "stats": stats,
        "split": {k: len(ds.split(k)) for k in ("train", "val")},
        "files": {"total": len(files), "ok": len(files) - len(failed), "failed": len(failed),
                  "warnings": sum(len(f.get("warnings", [])) for f in files)},
        "failures": [f.get("error") or f.get("path") for f in failed],
        "color_space": ds.info.get("preprocess", {}).get("color_space"),
    }


def format_info(r: dict) -> str:
    cam = r["camera"]
    view = (f"{cam['projection']}, fov {cam['fov_deg']} deg, distance {cam['distance']}"
            if cam["projection"] == "perspective" else f"orthographic, half extent {cam['ortho_half_extent']}")
    norm = r["normalisation"]
    st = r["stats"]
    lines = [
        f"dataset    {r['path']}",
        f"grids.npy  {r['shape']} {r['dtype']}",
        f"channels   {' '.join(r['channels'])}",
        f"camera     {view}",
        f"normalise  xyz_n = (xyz - {norm['center']}) / {norm['scale']:.6g}  ({norm['units']} per unit)",
        f"split      {r['split']['train']} train, {r['split']['val']} val",
        f"files      {r['files']['ok']} ok, {r['files']['failed']} failed, {r['files']['warnings']} warnings",
        f"surface    {st['surface_fraction'] * 100:.1f}% of pixels; NaN/Inf values {st['nan_values']}; "
        f"empty grids {st['empty_grids']}",
        "",
        f"  {'channel':<8}{'mean':>10}{'std':>10}{'min':>10}{'max':>10}   (surface pixels)",
    ]
    for i, c in enumerate(st["channels"]):
        lines.append(f"  {c:<8}{st['mean'][i]:>10.4f}{st['std'][i]:>10.4f}{st['min'][i]:>10.4f}{st['max'][i]:>10.4f}")
    if r["failures"]:
        lines += ["", "failed files:"] + [f"  {f}" for f in r["failures"]]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# preview


def _tiles(grid: np.ndarray, meta: GridMeta) -> list[np.ndarray]:
    """Colour, depth and normal images of one grid ``[C, H, W]`` -> three uint8 ``[H, W, 3]``."""
    g = np.asarray(grid, dtype=np.float32)
    valid = surface_mask(g, meta)                                     # [H, W]
    rgb = grid_to_rgb(np.nan_to_num(g[RGB])).transpose(1, 2, 0)       # [H, W, 3]
    z = g[XYZ][2]
    depth = np.zeros_like(z)
    if valid.any():
        lo, hi = z[valid].min(), z[valid].max()
        depth[valid] = 0.15 + 0.85 * (z[valid] - lo) / max(hi - lo, 1e-6)   # near = bright
    normals = np.asarray(grid_normals(np.nan_to_num(g), meta)).transpose(1, 2, 0)
    normals = np.where(valid[..., None], normals * 0.5 + 0.5, 0.25)
    to8 = lambda a: (np.clip(a, 0, 1) * 255 + 0.5).astype(np.uint8)
    return [to8(rgb), to8(np.repeat(depth[..., None], 3, axis=2)), to8(normals)]


def contact_sheet(grids, meta: GridMeta, count: int = 8, start: int = 0) -> np.ndarray:
    """A uint8 ``[H, W, 3]`` image: grids ``start..start+count`` as rows of colour | depth |
    normals tiles (at most PREVIEW_TILE pixels), four rows per column block."""
    from PIL import Image

    n = max(0, min(count, grids.shape[0] - start))
    if n == 0:
        raise ValueError("no grids to preview")
    tile = min(meta.resolution, PREVIEW_TILE)
    rows_per_block = 4 if n > 4 else n
    blocks = math.ceil(n / rows_per_block)
    gap = 4
    sheet = np.full((rows_per_block * (tile + gap) - gap, blocks * (3 * tile + 3 * gap) - gap, 3),
                    32, dtype=np.uint8)
    for i in range(n):
        b, r = divmod(i, rows_per_block)
        y = r * (tile + gap)
        for k, img in enumerate(_tiles(grids[start + i], meta)):
            if img.shape[0] != tile:
                img = np.asarray(Image.fromarray(img).resize((tile, tile), Image.BILINEAR))
            x = b * (3 * tile + 3 * gap) + k * (tile + gap)
            sheet[y:y + tile, x:x + tile] = img
    return sheet


def write_preview(path, grids, meta: GridMeta, count: int = 8, start: int = 0) -> int:
    """Write :func:`contact_sheet` as a PNG (atomically); returns the number of grids shown."""
    from PIL import Image

    from pcgan.fileio import atomic_path

    sheet = contact_sheet(grids, meta, count, start)
    with atomic_path(path) as tmp:
        Image.fromarray(sheet).save(tmp, format="PNG")
    return max(0, min(count, grids.shape[0] - start))

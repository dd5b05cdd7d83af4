"""Presenting metrics: the printed table, two runs side by side, and the nearest-neighbour PNG.

All functions take the dict that :func:`pcgan.metrics.compute_metrics` returns (the content of
metrics.json). The table functions are pure (they return strings; the CLI prints them).
"""

from __future__ import annotations

import math
import os

import numpy as np
import torch

from pcgan.errors import PcganError


def _fmt(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    v = float(v)
    if v != 0 and (abs(v) >= 1e5 or abs(v) < 1e-3):
        return f"{v:.4e}"
    return f"{v:.5f}"


def _header(results: dict) -> list[str]:
    lines = [f"pcgan metrics: {results.get('num_gen', '?')} generated vs {results.get('num_real', '?')} real"]
    td = results.get("3d") or {}
    if "normalization" in td:
        emd = td.get("emd", {}).get("method")
        lines.append(f"3D: {td['num_clouds']} clouds per set x {td['points_per_cloud']} points, "
                     f"protocol {td['normalization']['protocol']}" + (f", EMD {emd}" if emd else ""))
    if "pairs" in td:
        pr = td["pairs"]
        lines.append(f"3D pairs: {pr['num_pairs']} ({pr['pairing']}), units {pr['units']}")
    return lines


def format_table(results: dict) -> str:
    """The printed table: every number of ``results["metrics"]``, then LION's units if any."""
    metrics = results.get("metrics", {})
    width = max([len(k) for k in metrics] + [len("metric")])
    lines = _header(results) + ["", f"{'metric':<{width}}  value"]
    lines += [f"{k:<{width}}  {_fmt(v)}" for k, v in metrics.items()]
    lion = results.get("3d", {}).get("lion_units") if results.get("3d") else None
    if lion:
        lines += ["", "in LION's table units (MMD-CD x1e3, MMD-EMD x1e2, COV/1-NNA in %):"]
        lines += [f"{k:<{width}}  {_fmt(v)}" for k, v in lion.items()]
    return "\n".join(lines)


def compare_table(a: dict, b: dict, labels: tuple[str, str] = ("run1", "run2")) -> str:
    """Two runs' metrics side by side with the difference (b - a); metrics either run lacks show
    "-". Notes differences in protocol, cloud size or sample counts, which make numbers
    incomparable."""
    ma, mb = a.get("metrics", {}), b.get("metrics", {})
    keys = list(ma) + [k for k in mb if k not in ma]
    width = max([len(k) for k in keys] + [len("metric")])
    la, lb = labels
    cw = max(12, len(la), len(lb))
    lines = [f"{'metric':<{width}}  {la:>{cw}}  {lb:>{cw}}  {'diff':>{cw}}"]
    for k in keys:
        va, vb = ma.get(k), mb.get(k)
        diff = vb - va if isinstance(va, (int, float)) and isinstance(vb, (int, float)) else None
        lines.append(f"{k:<{width}}  {_fmt(va):>{cw}}  {_fmt(vb):>{cw}}  {_fmt(diff):>{cw}}")
    notes = []
    for key in ("num_gen", "num_real"):
        if a.get(key) != b.get(key):
            notes.append(f"{key} differs: {a.get(key)} vs {b.get(key)}")
    ta, tb = a.get("3d") or {}, b.get("3d") or {}
    if "normalization" in ta and "normalization" in tb:
        pa, pb = ta["normalization"]["protocol"], tb["normalization"]["protocol"]
        if pa != pb:
            notes.append(f"3D normalisation protocol differs: {pa} vs {pb}")
        if ta["points_per_cloud"] != tb["points_per_cloud"]:
            notes.append(f"points per cloud differ: {ta['points_per_cloud']} vs {tb['points_per_cloud']}")
    if notes:
        lines += [""] + [f"note: {n}" for n in notes]
    return "\n".join(lines)


def _tile(img01: torch.Tensor, size: int) -> np.ndarray:
    """``[3, H, W]`` in [0, 1] -> ``[size, size, 3]`` uint8 by nearest-neighbour scaling."""
    x = torch.nn.functional.interpolate(img01[None].float(), size=(size, size), mode="nearest")[0]
    return (x.clamp(0, 1) * 255 + 0.5).byte().permute(1, 2, 0).numpy()


def save_nn_pairs_png(path: str | os.PathLike, fakes, reals, meta_or_channels, nearest: dict,
                      max_rows: int = 8, tile: int = 128) -> str:
    """A PNG with one row per generated grid: its colour and shaded views, then those of the
    closest real grid (by Chamfer), labelled with the indices and the distance.

    fakes, reals: ``[N, C, H, W]`` grids (numpy/torch). nearest: ``results["nearest_real"]``
    (``gen_index``, ``real_index``, ``cd`` lists). Returns the path written."""
    from PIL import Image, ImageDraw

    from pcgan.metrics.shading import grid_images

    gi, ri, cd = nearest.get("gen_index", []), nearest.get("real_index", []), nearest.get("cd", [])
    rows = min(max_rows, len(gi))
    if rows == 0:
        raise PcganError("no nearest-neighbour pairs to draw (compute a Chamfer set metric first)")
    label_h = 16
    canvas = Image.new("RGB", (4 * tile, rows * (tile + label_h)), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)

    def views(arr, i):
        g = torch.as_tensor(np.asarray(arr[i], dtype=np.float32))[None]
        return [grid_images(g, meta_or_channels, v)[0] for v in ("rgb", "shaded")]

    for r in range(rows):
        y = r * (tile + label_h)
        tiles = views(fakes, gi[r]) + views(reals, ri[r])
        for c, t in enumerate(tiles):
            canvas.paste(Image.fromarray(_tile(t, tile)), (c * tile, y + label_h))
        draw.text((2, y + 2), f"generated {gi[r]}", fill=(0, 0, 0))
        draw.text((2 * tile + 2, y + 2), f"closest real {ri[r]}  CD {cd[r]:.3g}", fill=(0, 0, 0))
    path = str(path)
    canvas.save(path)
    return path

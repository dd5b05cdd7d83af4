"""Per-pair reconstruction metrics through Open3D: a prediction cloud against a ground truth.

For the inversion issue (a reconstructed grid against its target) and for the data tools'
grid-versus-scan fidelity. Distances come from Open3D's
``PointCloud.compute_point_cloud_distance`` (for each point of one cloud, the Euclidean
distance to the nearest point of the other), in the clouds' units (scan units when grids are
denormalised). Open3D is imported inside the functions.

Reported per pair:
- ``accuracy``: mean distance pred -> gt; ``completeness``: mean distance gt -> pred;
- ``chamfer_l1``: (accuracy + completeness) / 2 (Occupancy Networks' Chamfer-L1);
- ``chamfer_l2``: mean squared pred -> gt + mean squared gt -> pred (PointFlow's CD, as in
  :mod:`pcgan.metrics.pointcloud`);
- ``hausdorff``: the larger of the two maximum distances; ``median_accuracy``/``median_completeness``;
- ``precision``, ``recall``, ``fscore`` at ``tau`` (given in the clouds' units, or as a fraction
  of the ground truth's bounding-box diagonal), and ``tau`` itself.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from pcgan import grid as G
from pcgan.errors import PcganError
from pcgan.metrics import pointcloud as pc

log = logging.getLogger(__name__)


def _np3(x, name: str) -> np.ndarray:
    a = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    a = np.ascontiguousarray(a, dtype=np.float64)
    if a.ndim != 2 or a.shape[1] != 3:
        raise PcganError(f"{name} has shape {list(a.shape)}: expected points [N, 3]")
    if len(a) == 0:
        raise PcganError(f"{name} has no points")
    return a


def o3d_distances(source, target) -> np.ndarray:
    """Open3D ``compute_point_cloud_distance``: for each point of ``source [N, 3]``, the
    Euclidean distance to the nearest point of ``target [M, 3]``. ``[N]`` float64."""
    import open3d as o3d

    src, tgt = o3d.geometry.PointCloud(), o3d.geometry.PointCloud()
    src.points = o3d.utility.Vector3dVector(_np3(source, "source cloud"))
    tgt.points = o3d.utility.Vector3dVector(_np3(target, "target cloud"))
    return np.asarray(src.compute_point_cloud_distance(tgt), dtype=np.float64)


def reconstruction_metrics(pred, gt, tau: float | None = None, tau_frac: float | None = 0.01) -> dict[str, float]:
    """All per-pair numbers listed in the module docstring for ``pred [N, 3]`` vs ``gt [M, 3]``.

    tau: F-score threshold in the clouds' units; when None, ``tau_frac`` x the bbox diagonal of gt."""
    pred, gt = _np3(pred, "predicted cloud"), _np3(gt, "ground-truth cloud")
    t = pc.resolve_tau(gt, tau=tau, tau_frac=None if tau is not None else tau_frac)
    d_pg = o3d_distances(pred, gt)
    d_gp = o3d_distances(gt, pred)
    acc, comp = float(d_pg.mean()), float(d_gp.mean())
    precision, recall = float((d_pg < t).mean()), float((d_gp < t).mean())
    return {
        "accuracy": acc, "completeness": comp, "chamfer_l1": (acc + comp) / 2,
        "chamfer_l2": float((d_pg ** 2).mean() + (d_gp ** 2).mean()),
        "hausdorff": float(max(d_pg.max(), d_gp.max())),
        "median_accuracy": float(np.median(d_pg)), "median_completeness": float(np.median(d_gp)),
        "precision": precision, "recall": recall,
        "fscore": 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall),
        "tau": t, "num_pred": len(pred), "num_gt": len(gt),
    }


def grid_vs_scan(grid, meta: G.GridMeta, scan_points, tau: float | None = None,
                 tau_frac: float | None = 0.01) -> dict[str, float]:
    """Fidelity of a grid ``[C, H, W]`` to the scan it was made from (``scan_points [M, 3]`` in
    scan units): the grid's surface points, denormalised with ``meta``, against the scan."""
    pts, _ = G.grid_to_points(torch.as_tensor(np.asarray(grid)).float(), meta, denormalize=True)
    if len(pts) == 0:
        raise PcganError("grid has no surface pixel: nothing to compare with the scan")
    out = reconstruction_metrics(pts, scan_points, tau=tau, tau_frac=tau_frac)
    out["units"] = meta.units
    return out


def paired_grid_metrics(preds, gts, meta_or_channels, denormalize: bool = True, tau: float | None = None,
                        tau_frac: float | None = 0.01) -> dict:
    """:func:`reconstruction_metrics` for each pair ``preds[i]``, ``gts[i]`` (``[N, C, H, W]``
    grids) on all surface points. Returns the mean of each number plus the per-pair lists."""
    if len(preds) != len(gts):
        raise PcganError(f"paired metrics need as many predictions as targets: {len(preds)} vs {len(gts)}")
    per = []
    for i in range(len(preds)):
        clouds = []
        for name, g in (("prediction", preds[i]), ("target", gts[i])):
            p, _ = G.grid_to_points(torch.as_tensor(np.asarray(g)).float(), meta_or_channels, denormalize=denormalize)
            if len(p) == 0:
                raise PcganError(f"{name} grid {i} has no surface pixel")
            clouds.append(p)
        per.append(reconstruction_metrics(clouds[0], clouds[1], tau=tau, tau_frac=tau_frac))
    keys = [k for k in per[0] if k not in ("num_pred", "num_gt")]
    out = {k: float(np.mean([p[k] for p in per])) for k in keys}
    out["per_pair"] = {k: [p[k] for p in per] for k in keys}
    out["units"] = meta_or_channels.units if denormalize and isinstance(meta_or_channels, G.GridMeta) else "normalised"
    return out

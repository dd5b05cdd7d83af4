"""How close a reconstruction is to its target: the numbers ``pcgan invert`` and the
inversion benchmark report.

For one reconstructed grid against its target grid (both ``[C, H, W]`` in a checkpoint's
layout):

- ``chamfer_l1``: (mean distance recon -> target + mean distance target -> recon) / 2 over the
  surface points of each, denormalised to the scans' units (Occupancy Networks' Chamfer-L1);
  ``chamfer_l2``: the same with squared distances, summed (PointFlow's CD; units^2);
- ``fscore`` at ``tau`` = 1% of the target's bounding-box diagonal (and ``fscore_2pct`` at 2%),
  with ``tau`` itself, in the scans' units (Tatarchenko et al. 2019);
- ``psnr_rgb``: PSNR of the colour in [0, 1] over the target's surface pixels, in dB;
- ``mask_iou``: intersection over union of the two surface masks;
- ``lpips_rgb``: LPIPS between the colour images with the background outside the target's
  surface (when an LPIPS network is given).

Nearest neighbours come from :func:`pcgan.metrics.pointcloud.nearest_neighbours` (scipy).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from pcgan.errors import PcganError
from pcgan.grid import RGB, GridMeta, grid_to_points, grid_to_rgb, surface_mask


def reconstruction_metrics(pred, target, meta: GridMeta, lpips_model=None, background=None) -> dict[str, float]:
    """The numbers in the module docstring for ``pred`` and ``target`` grids ``[C, H, W]``.

    lpips_model: an LPIPS module ``(x0, x1) -> [B]`` for ``lpips_rgb`` (None: left out).
    background: ``[3]`` grid-valued background colour for the LPIPS images (default: meta's).
    """
    from pcgan.metrics import pointcloud as pc

    pred = torch.as_tensor(np.asarray(pred) if not isinstance(pred, torch.Tensor) else pred).detach().float().cpu()
    target = torch.as_tensor(np.asarray(target) if not isinstance(target, torch.Tensor) else target).detach().float().cpu()
    p_pts, _ = grid_to_points(pred, meta, denormalize=True)
    t_pts, _ = grid_to_points(target, meta, denormalize=True)
    if len(t_pts) == 0:
        raise PcganError("the target grid has no surface pixel: nothing to compare with")
    out: dict[str, float] = {"units": meta.units, "num_recon_points": int(len(p_pts)), "num_target_points": int(len(t_pts))}
    if len(p_pts) == 0:   # a reconstruction with no surface: the worst possible scores
        out.update(chamfer_l1=math.inf, chamfer_l2=math.inf, fscore=0.0, fscore_2pct=0.0, precision=0.0, recall=0.0,
                   tau=pc.resolve_tau(t_pts, tau_frac=0.01))
    else:
        d_pt, _ = pc.nearest_neighbours(p_pts, t_pts)
        d_tp, _ = pc.nearest_neighbours(t_pts, p_pts)
        tau = pc.resolve_tau(t_pts, tau_frac=0.01)
        p1, r1 = float((d_pt < tau).mean()), float((d_tp < tau).mean())
        p2, r2 = float((d_pt < 2 * tau).mean()), float((d_tp < 2 * tau).mean())
        f = lambda p, r: 0.0 if p + r == 0 else 2 * p * r / (p + r)   # noqa: E731
        out.update(chamfer_l1=float((d_pt.mean() + d_tp.mean()) / 2),
                   chamfer_l2=float((d_pt ** 2).mean() + (d_tp ** 2).mean()),
                   fscore=f(p1, r1), fscore_2pct=f(p2, r2), precision=p1, recall=r1, tau=tau)
    m_t = torch.as_tensor(surface_mask(target, meta))
    m_p = torch.as_tensor(surface_mask(pred, meta))
    out["mask_iou"] = float((m_t & m_p).sum() / (m_t | m_p).sum().clamp(min=1))
    mse = ((grid_to_rgb(pred[RGB]) - grid_to_rgb(target[RGB])) ** 2)[:, m_t].mean()
    out["psnr_rgb"] = float(10 * torch.log10(1.0 / mse.clamp(min=1e-10)))
    if lpips_model is not None:
        bg = torch.as_tensor(background if background is not None else
                             [2 * c - 1 for c in meta.background_rgb], dtype=torch.float32).view(3, 1, 1)
        m = m_t[None].float()
        imgs = [(g[RGB] * m + bg * (1 - m))[None] for g in (pred, target)]
        from pcgan.metrics.perceptual import lpips_distance
        out["lpips_rgb"] = float(lpips_distance(lpips_model, imgs[0], imgs[1])[0])
    return out

"""Losses that compare a generated grid with a target grid, for inversion and encoder training.

Each term is per sample (``[B]``), so one optimiser can invert a batch of targets at once:

- ``xyz``: mean squared XYZ error over the target's surface pixels (normalised units^2);
- ``rgb``: mean squared RGB error over the same pixels (grid values in [-1, 1]);
- ``mask``: mean squared error of the mask channel over all pixels, both sides clamped to
  [-1, 1] (a generated mask beyond +-1 on the right side costs nothing), so the silhouette is
  matched; absent when the grids have no mask channel;
- ``lpips``: LPIPS (Zhang et al. 2018) between the two colour images, each composited onto the
  background colour outside the target's surface, so the background does not count;
- ``chamfer``: a differentiable Chamfer distance between the generated points and the target's
  surface points (normalised units^2), with the generated points weighted by a soft surface
  probability ``p = clamp(0.5 + mask / mask_softness, 0, 1)`` from the generated mask channel
  (a ramp across the threshold 0, exactly 0 or 1 beyond +-softness/2, so a perfect
  reconstruction of a grid whose mask is decisive, as the data's +-1 are, costs nothing). A
  point that is probably surface must lie on the target (accuracy, weighted by ``p``), and
  each target point is covered by the generated point minimising its squared distance plus
  ``miss_penalty * (1 - p)`` (completeness). Random subsets of ``chamfer_points`` points per
  side keep it affordable.

``noise_regularization`` is the StyleGAN2 projector's noise term (Karras et al. 2020,
appendix D): for every noise map and every level of its 2x average-pooled pyramid down to 8x8,
the squared autocorrelation at a one-pixel shift in x and in y, so the optimised noise cannot
carry the image. ``normalize_noise_`` re-centres and re-scales each map after a step.

Only torch at module level: the LPIPS networks load through :func:`load_lpips_loss`, which
imports :mod:`pcgan.metrics.perceptual` (and, there, the ``lpips`` package) when it is called.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from pcgan.errors import PcganError
from pcgan.grid import MASK, MASK_THRESHOLD, RGB, XYZ, GridMeta, check_grid, rgb_to_grid, surface_mask

log = logging.getLogger(__name__)

LPIPS_MODES = ("auto", "on", "off")   # auto: use LPIPS when its weights are found, else warn and skip
LPIPS_MIN_SIZE = 64                   # smaller images are upsampled first (AlexNet's taps vanish below 32 px)


@dataclasses.dataclass(frozen=True)
class LossWeights:
    """Weights of the terms (0 turns a term off). Defaults balance the terms on faces whose
    normalised XYZ spans about [-1, 1]: a 0.05-unit XYZ error weighs about as much as a
    0.05 RGB error, and LPIPS (~0.1-0.5 for different faces) adds the perceptual part."""

    xyz: float = 10.0           # masked L2 on XYZ, normalised units^2
    rgb: float = 1.0            # masked L2 on RGB, grid values in [-1, 1]
    mask: float = 1.0           # L2 on the mask channel, clamped to [-1, 1] (no-op without a mask)
    lpips: float = 1.0          # LPIPS on the masked colour image (needs LPIPS weights)
    chamfer: float = 10.0       # soft-masked Chamfer, normalised units^2
    noise_reg: float = 1e5      # noise autocorrelation (optimisation with noise only)

    def __post_init__(self):
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                raise PcganError(f"loss weight {f.name}={v!r}: must be a finite number >= 0")


# ---------------------------------------------------------------------------------------------
# LPIPS, loaded on request


def load_lpips_loss(mode: str = "auto", net: str = "alex", weights_dir=None,
                    device: torch.device | str = "cpu") -> tuple[nn.Module | None, dict]:
    """The LPIPS network for the ``lpips`` term, or None when it is off.

    mode: "on" (missing weights raise the PcganError naming the file and how to get it; a
        download is tried first as torchvision would), "auto" (local weights only; missing
        weights log a warning and turn the term off), "off".
    net: "alex" (fast; the default) or "vgg" (what the StyleGAN2 projector used).
    weights_dir: folder holding ``alexnet_features.pth`` / ``vgg16_features.pth`` (None: the
        ``PCGAN_WEIGHTS`` variable, then the caches; see :mod:`pcgan.metrics.weights`).
    Returns:
        (module ``(x0, x1) -> [B]`` on ``device`` with inputs ``[B, 3, H, W]`` in [-1, 1], or
        None; an info dict saying what was loaded or why not).
    """
    if mode not in LPIPS_MODES:
        raise PcganError(f"LPIPS mode {mode!r}: use one of {', '.join(LPIPS_MODES)}")
    if mode == "off":
        return None, {"lpips": "off"}
    from pcgan.metrics.perceptual import load_lpips
    try:
        model, info = load_lpips(net, weights_dir=weights_dir, device=device, download=(mode == "on"))
    except PcganError as exc:
        if mode == "on":
            raise
        log.warning("LPIPS term off: %s", exc)
        return None, {"lpips": "off", "reason": str(exc)}
    return model, {"lpips": "on", **info}


def _upsample_for_lpips(images: torch.Tensor) -> torch.Tensor:
    h = images.shape[-1]
    if h >= LPIPS_MIN_SIZE:
        return images
    return F.interpolate(images, scale_factor=LPIPS_MIN_SIZE / h, mode="bilinear", align_corners=False)


# ---------------------------------------------------------------------------------------------
# Chamfer on soft-masked points


def _sq_distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Squared distances ``[P, T]`` between ``a [P, 3]`` and ``b [T, 3]``, one GEMM (for
    finding neighbours only: float32 cancellation makes small values inexact)."""
    return torch.addmm((b * b).sum(-1)[None], a, b.T, alpha=-2.0).add_((a * a).sum(-1, keepdim=True))


def soft_chamfer(pred_points: torch.Tensor, pred_weight: torch.Tensor, target_points: torch.Tensor,
                 miss_penalty: float) -> torch.Tensor:
    """Chamfer between weighted generated points and target points (a scalar).

    Args:
        pred_points: [P, 3] generated points.
        pred_weight: [P] soft surface probabilities in [0, 1].
        target_points: [T, 3] target surface points.
        miss_penalty: extra squared distance for covering a target point with a generated
            point of probability 0 (normalised units^2).
    Returns:
        weighted mean over generated points of the squared distance to the target, plus the
        mean over target points of the penalised squared distance to the generated points.
    """
    # The nearest neighbours are found without autograd; only the chosen pairs are recomputed
    # with it. The gradient is the same as through amin (which routes it to the minimum), at a
    # fraction of the memory and time of back-propagating through the whole [P, T] matrix.
    # Each direction gets its own row-major matrix: argmin along rows is several times faster
    # than along columns.
    with torch.no_grad():
        nearest_t = _sq_distances(pred_points, target_points).argmin(1)  # [P] target nearest to each generated point
        penalised = _sq_distances(target_points, pred_points).add_(miss_penalty * (1.0 - pred_weight)[None])
        nearest_p = penalised.argmin(1)                                  # [T] cheapest generated point per target point
    d_pt = ((pred_points - target_points[nearest_t]) ** 2).sum(-1)      # [P]
    accuracy = (pred_weight * d_pt).sum() / pred_weight.sum().clamp(min=1e-6)
    d_tp = ((target_points - pred_points[nearest_p]) ** 2).sum(-1) + miss_penalty * (1.0 - pred_weight[nearest_p])
    return accuracy + d_tp.mean()


def _subset(n: int, k: int, gen: torch.Generator) -> torch.Tensor:
    return torch.arange(n) if n <= k else torch.randperm(n, generator=gen)[:k]


# ---------------------------------------------------------------------------------------------
# Noise regularisation


def noise_regularization(noises: Sequence[torch.Tensor], min_size: int = 8) -> torch.Tensor:
    """Squared one-pixel autocorrelations of every noise map over its pyramid: ``[B]``.

    noises: maps ``[B, 1, r, r]`` (as ``SynthesisNetwork`` takes them)."""
    total = 0.0
    for n in noises:
        while True:
            total = total + (n * n.roll(1, dims=-1)).mean(dim=(1, 2, 3)) ** 2
            total = total + (n * n.roll(1, dims=-2)).mean(dim=(1, 2, 3)) ** 2
            if n.shape[-1] <= min_size:
                break
            n = F.avg_pool2d(n, 2)
    return total


@torch.no_grad()
def normalize_noise_(noises: Sequence[torch.Tensor]) -> None:
    """Give every map ``[B, 1, r, r]`` zero mean and unit variance per sample, in place."""
    for n in noises:
        mean = n.mean(dim=(1, 2, 3), keepdim=True)
        std = n.std(dim=(1, 2, 3), keepdim=True).clamp(min=1e-8)
        n.sub_(mean).div_(std)


# ---------------------------------------------------------------------------------------------
# The reconstruction loss


class ReconstructionLoss(nn.Module):
    """Weighted sum of the terms in the module docstring, per sample.

    ``forward(pred, target)`` takes two grids ``[B, C, H, W]`` in the layout of ``meta`` and
    returns ``(total [B], {term: [B]})``; terms with weight 0 (or LPIPS without a network) are
    left out of both."""

    def __init__(self,
                 meta: GridMeta,                  # layout of both grids (channels, resolution, background)
                 weights: LossWeights = LossWeights(),
                 lpips_model: nn.Module | None = None,  # from load_lpips_loss; None: no LPIPS term
                 chamfer_points: int = 1024,      # points per side of each Chamfer evaluation
                 mask_softness: float = 1.0,      # width of the mask ramp from "empty" (0) to "surface" (1)
                 miss_penalty: float = 0.05,      # see soft_chamfer, normalised units^2
                 seed: int = 0,                   # seed of the Chamfer subsets
                 ):
        super().__init__()
        if chamfer_points < 1:
            raise PcganError(f"chamfer_points={chamfer_points}: must be >= 1")
        self.meta, self.weights, self.lpips = meta, weights, lpips_model
        if not mask_softness > 0:
            raise PcganError(f"mask_softness={mask_softness}: must be > 0")
        self.chamfer_points, self.mask_softness, self.miss_penalty = chamfer_points, mask_softness, miss_penalty
        self._gen = torch.Generator().manual_seed(seed)
        bg = rgb_to_grid(torch.tensor(meta.background_rgb, dtype=torch.float32))
        self.register_buffer("background", bg.view(1, 3, 1, 1), persistent=False)

    @property
    def uses_lpips(self) -> bool:
        return self.lpips is not None and self.weights.lpips > 0

    def surface_probability(self, pred: torch.Tensor) -> torch.Tensor:
        """Soft surface probability of each generated pixel: ``[B, C, H, W]`` -> ``[B, H, W]``."""
        if self.meta.has_mask:
            return (0.5 + (pred[:, MASK][:, 0] - MASK_THRESHOLD) / self.mask_softness).clamp(0.0, 1.0)
        return surface_mask(pred.detach(), self.meta).float()

    def masked_images(self, grids: torch.Tensor, target_mask: torch.Tensor) -> torch.Tensor:
        """Colour images ``[B, 3, H, W]`` in [-1, 1] with the background outside ``target_mask [B, H, W]``."""
        m = target_mask[:, None].to(grids.dtype)
        return grids[:, RGB] * m + self.background.to(grids.dtype) * (1 - m)

    def chamfer(self, pred: torch.Tensor, target: torch.Tensor, target_mask: torch.Tensor) -> torch.Tensor:
        """Per-sample soft Chamfer ``[B]`` (see the module docstring)."""
        prob = self.surface_probability(pred)                                 # [B, H, W]
        out = []
        for b in range(pred.shape[0]):
            tgt = target[b, XYZ].permute(1, 2, 0)[target_mask[b]]            # [T, 3]
            if len(tgt) == 0:
                out.append(pred.new_zeros(()))
                continue
            pts = pred[b, XYZ].permute(1, 2, 0).reshape(-1, 3)               # [H*W, 3]
            w = prob[b].reshape(-1)
            # Sample generated points among the likely surface; all pixels when there is none.
            cand = (w.detach() > 0).nonzero()[:, 0]
            if len(cand) == 0:
                cand = torch.arange(len(w), device=w.device)
            pick = cand[_subset(len(cand), self.chamfer_points, self._gen).to(cand.device)]
            tpick = _subset(len(tgt), self.chamfer_points, self._gen).to(tgt.device)
            out.append(soft_chamfer(pts[pick], w[pick], tgt[tpick], self.miss_penalty))
        return torch.stack(out)

    def forward(self, pred: torch.Tensor, target: torch.Tensor,
                target_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        # pred, target: [B, C, H, W]; target_mask: [B, H, W] bool (default: the target's surface)
        check_grid(pred, self.meta, "generated grid")
        check_grid(target, self.meta, "target grid")
        if pred.shape[0] != target.shape[0]:
            raise PcganError(f"{pred.shape[0]} generated grids for {target.shape[0]} targets")
        if target_mask is None:
            target_mask = surface_mask(target, self.meta)
        w = self.weights
        m = target_mask[:, None].to(pred.dtype)                              # [B, 1, H, W]
        count = m.sum(dim=(1, 2, 3)).clamp(min=1.0)
        parts: dict[str, torch.Tensor] = {}
        if w.xyz > 0:
            parts["xyz"] = ((pred[:, XYZ] - target[:, XYZ]) ** 2 * m).sum(dim=(1, 2, 3)) / (3 * count)
        if w.rgb > 0:
            parts["rgb"] = ((pred[:, RGB] - target[:, RGB]) ** 2 * m).sum(dim=(1, 2, 3)) / (3 * count)
        if w.mask > 0 and self.meta.has_mask:
            parts["mask"] = ((pred[:, MASK].clamp(-1, 1) - target[:, MASK].clamp(-1, 1)) ** 2).mean(dim=(1, 2, 3))
        if self.uses_lpips:
            a = _upsample_for_lpips(self.masked_images(pred, target_mask))
            b = _upsample_for_lpips(self.masked_images(target, target_mask))
            parts["lpips"] = self.lpips(a, b).reshape(-1)
        if w.chamfer > 0:
            parts["chamfer"] = self.chamfer(pred, target, target_mask)
        total = pred.new_zeros(pred.shape[0])
        for name, value in parts.items():
            total = total + getattr(w, name) * value
        return total, parts

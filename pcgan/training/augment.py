"""Augmentation of XYZRGB grids before the discriminator: dataset x-flip and adaptive (ADA) augmentation.

Two independent mechanisms (Karras et al. 2020, "Training GANs with limited data"):

- **x-flip** (``xflip``, on by default) mirrors a grid left-right *and negates x*
  (:func:`pcgan.grid.mirror`) with probability 0.5, whatever ``p`` is. It is a dataset
  augmentation: apply it to reals only (``pipe(reals)``, ``pipe(fakes, xflip=False)``), as
  StyleGAN's ``--mirror``, so G is still asked for the mirrored data distribution rather than
  for any distribution whose mirror-symmetrisation matches it.
- **Adaptive augmentation**: each transform below is applied to each sample independently with
  probability ``p``, on reals and fakes alike (and differentiably, since it runs on fakes in the
  G step). With ``p`` below about 0.8 the transforms do not leak into the generated
  distribution. :class:`AdaptiveAugment` raises ``p`` while D is overconfident on reals
  (mean sign of D(real) above ``target``) and lowers it otherwise.

The transforms, in the order applied, each chosen so the augmented grid is still a grid
(background pixels on the sheet with the background colour, mask untouched or still +-1):

1. 3D rotation and isotropic scale of the **surface points** about the face centre (the origin
   of the normalised frame: normalisation puts the scans' centre there). Background pixels stay
   on the sheet, so an augmented grid still exports without a mask. With a mask channel the
   blend weight is ``(mask + 1) / 2`` clamped to [0, 1]: exactly the surface for real grids
   (mask +-1), and smooth in a generated soft mask; without one it is
   :func:`pcgan.grid.surface_mask`. RGB and mask are untouched.
2. Integer translation of the whole image. Pixels move to other rays, so like ADA's integer
   translation this is an image-space augmentation, meaningful for D's view only. To keep the
   grid valid, XYZ is moved with the matching shift of the sheet (a rigid 3D translation, the
   same for every pixel of the sample): background pixels land exactly on the sheet at their
   new rays, and uncovered pixels are filled with the empty grid (sheet, background, mask -1).
   So translating an empty grid gives the empty grid.
3. Colour on RGB only, one affine colour map per sample in the [-1, 1] space of linear colour
   (0 is mid-grey): brightness (offset), contrast (scale about mid-grey), hue (rotation about
   the grey axis), saturation (scale away from the grey axis). The map is applied to the whole
   image, background included, as ADA does: a per-sample colour map is invertible and keeps the
   background one uniform colour, whereas restricting it to the surface would need a threshold
   on generated masks (a discontinuity in G's gradient) and would not work without a mask
   channel. XYZ and mask are untouched.
4. Cutout: an axis-aligned square of side ``cutout`` x the grid side, centred uniformly, filled
   with the empty grid.

Randomness comes from torch's global generator on the grid's device (so the training loop's RNG
state save/restore makes resumes exact) or from an explicit ``torch.Generator``. The same
number of random values is drawn on every call whatever ``p`` is. Unselected samples pass
through bit-identical. Everything is batched tensor code: no per-sample Python loops, no
``.item()`` on the hot path, no matmul (so bf16 autocast changes nothing and the output keeps the
input's dtype).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, Literal

import torch
from torch import nn

from pcgan.config import register_section
from pcgan.grid import MASK, RGB, XYZ, GridMeta, check_grid, empty_grid, surface_mask

# ----------------------------------------------------------------------------------------------
# Config


@register_section("augment")
@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    """Augmentation schedule and transform strengths (the ``augment:`` config section).

    Defaults follow ADA's "bgc" pipeline (geometry + colour) with the geometric transforms
    replaced by ones valid for grids; cutout is off by default as in ADA's default pipeline.
    """

    mode: Literal["off", "fixed", "ada"] = "ada"  # off: x-flip only; fixed: constant p; ada: p adapts
    p: float = 0.0                  # initial (ada) or constant (fixed) probability of each transform
    target: float = 0.6             # ada: wanted mean of sign(D(real))
    speed_kimg: float = 500.0       # ada: thousands of images for p to move from 0 to 1
    interval: int = 4               # ada: minibatches between updates of p
    xflip: bool = True              # mirror with x negation, probability 0.5 independent of p
    rgb_brightness: float = 0.2     # std of the offset added to r, g, b (in [-1, 1] units); 0: off
    rgb_contrast: float = 0.5       # std of log2 of the contrast factor about mid-grey; 0: off
    rgb_saturation: float = 1.0     # std of log2 of the saturation factor about the grey axis; 0: off
    rgb_hue: float = 1.0            # largest hue rotation about the grey axis, in half-turns (1: +-180 deg); 0: off
    translate: float = 0.125        # largest integer shift, as a fraction of the grid side; 0: off
    cutout: float = 0.0             # side of the cut-out square as a fraction of the grid side; 0: off
    rotate3d_deg: float = 10.0      # largest angle of the 3D rotation about a uniform random axis, degrees; 0: off
    scale3d: float = 0.1            # std of the natural log of the isotropic 3D scale; 0: off

    def __post_init__(self):
        if self.mode not in ("off", "fixed", "ada"):
            raise ValueError(f"augment.mode must be 'off', 'fixed' or 'ada', got {self.mode!r}")
        if not 0.0 <= self.p <= 1.0:
            raise ValueError(f"augment.p must be in [0, 1], got {self.p}")
        if not 0.0 <= self.target < 1.0:
            raise ValueError(f"augment.target must be in [0, 1), got {self.target} (ADA uses 0.6)")
        if not self.speed_kimg > 0 or self.interval < 1:
            raise ValueError("augment.speed_kimg must be > 0 and augment.interval >= 1")
        for name in ("rgb_brightness", "rgb_contrast", "rgb_saturation", "rgb_hue", "rotate3d_deg", "scale3d"):
            if getattr(self, name) < 0:
                raise ValueError(f"augment.{name} must be >= 0 (0 turns it off), got {getattr(self, name)}")
        if not 0.0 <= self.translate <= 0.5:
            raise ValueError(f"augment.translate must be in [0, 0.5], got {self.translate}")
        if not 0.0 <= self.cutout <= 1.0:
            raise ValueError(f"augment.cutout must be in [0, 1], got {self.cutout}")

    @property
    def has_colour(self) -> bool:
        return any(v > 0 for v in (self.rgb_brightness, self.rgb_contrast, self.rgb_saturation, self.rgb_hue))


# ----------------------------------------------------------------------------------------------
# Small batched linear algebra, written as broadcasts so autocast never lowers it to bf16


def _bmm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``[B, n, k] @ [B, k, m] -> [B, n, m]`` for tiny matrices."""
    return (a.unsqueeze(-1) * b.unsqueeze(-3)).sum(-2)


def _rotation(axis: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    """Rodrigues: unit ``axis [B, 3]``, ``angle [B]`` radians -> rotation matrices ``[B, 3, 3]``."""
    x, y, z = axis.unbind(-1)
    zero = torch.zeros_like(x)
    k = torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], dim=-1).view(-1, 3, 3)   # cross-product matrix
    eye = torch.eye(3, dtype=axis.dtype, device=axis.device)
    s, c = angle.sin()[:, None, None], angle.cos()[:, None, None]
    return eye + s * k + (1 - c) * _bmm(k, k)


def _apply_matrix(m: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Per-sample affine map of 3-channel pixels: ``m [B, 3, 3 or 4]``, ``v [B, 3, H, W]`` -> ``[B, 3, H, W]``."""
    out = m[:, :, 0, None, None] * v[:, 0:1] + m[:, :, 1, None, None] * v[:, 1:2] + m[:, :, 2, None, None] * v[:, 2:3]
    if m.shape[-1] == 4:
        out = out + m[:, :, 3, None, None]
    return out


def _replace(x: torch.Tensor, channels: slice, values: torch.Tensor) -> torch.Tensor:
    """``x`` with ``x[:, channels]`` replaced by ``values`` (out of place, other channels untouched)."""
    return torch.cat([x[:, : channels.start], values.to(x.dtype), x[:, channels.stop:]], dim=1)


def _work(v: torch.Tensor) -> torch.Tensor:
    """Compute in at least float32 (bf16/fp16 inputs are upcast; float64 stays float64)."""
    return v.float() if v.dtype in (torch.float16, torch.bfloat16) else v


def _select(chosen: torch.Tensor, new: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
    """Per sample: ``new`` where ``chosen [B]`` is true, else ``old`` bit for bit."""
    return torch.where(chosen.view(-1, *([1] * (old.dim() - 1))), new.to(old.dtype), old)


# ----------------------------------------------------------------------------------------------
# The pipe


class AugmentPipe(nn.Module):
    """Augments a batch of grids ``[B, C, H, W]``; see the module docstring for the transforms.

    ``p`` is a float32 scalar buffer (saved in ``state_dict``); :class:`AdaptiveAugment` moves it.
    """

    def __init__(self, meta: GridMeta, cfg: AugmentConfig = AugmentConfig()):
        super().__init__()
        self.meta = meta                # grid layout; the empty grid is the fill value
        self.cfg = cfg
        self.register_buffer("p", torch.tensor(cfg.p if cfg.mode != "off" else 0.0, dtype=torch.float32))
        empty = torch.from_numpy(empty_grid(meta))                                    # [C, H, W]
        self.register_buffer("empty", empty, persistent=False)
        sign = torch.ones(meta.num_channels, 1, 1)
        sign[XYZ.start] = -1.0                                                        # mirror negates x
        self.register_buffer("mirror_sign", sign, persistent=False)
        self.translate_px = int(cfg.translate * meta.resolution)                      # largest shift, pixels
        centres = (torch.arange(meta.resolution, dtype=torch.float32) + 0.5) / meta.resolution
        self.register_buffer("uv", centres, persistent=False)                        # [H] pixel centres in [0, 1]

    def extra_repr(self) -> str:
        return f"mode={self.cfg.mode}, resolution={self.meta.resolution}, channels={self.meta.num_channels}"

    # -- randomness: always the same draws per call, from the grid's device -------------------

    @staticmethod
    def _rand(shape, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        return torch.rand(shape, device=x.device, generator=generator)

    @staticmethod
    def _randn(shape, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        return torch.randn(shape, device=x.device, generator=generator)

    def _chosen(self, x: torch.Tensor, generator) -> torch.Tensor:
        """Which samples get a transform: ``[B]`` bool, each true with probability p."""
        return self._rand([x.shape[0]], x, generator) < self.p

    # -- forward -------------------------------------------------------------------------------

    def forward(self, grids: torch.Tensor, xflip: bool | None = None,
                generator: torch.Generator | None = None) -> torch.Tensor:
        """Augment a batch.

        Args:
            grids: ``[B, C, H, W]`` float (any float dtype; the output keeps it).
            xflip: apply the dataset x-flip; None: ``cfg.xflip``. Pass False for fakes.
            generator: random source on ``grids.device``; None: torch's global generator.
        Returns:
            ``[B, C, H, W]``, differentiable with respect to ``grids``.
        """
        check_grid(grids, self.meta, "augmentation input")
        assert grids.dim() == 4, f"AugmentPipe takes a batch [B, C, H, W], got {list(grids.shape)}"
        x, cfg = grids, self.cfg
        if cfg.xflip if xflip is None else xflip:
            x = self._xflip(x, generator)
        if cfg.mode == "off" or (cfg.mode == "fixed" and cfg.p == 0):   # p can never rise: skip the work
            return x
        if cfg.rotate3d_deg > 0 or cfg.scale3d > 0:
            x = self._xyz_similarity(x, generator)
        if self.translate_px > 0:
            x = self._translate(x, generator)
        if cfg.has_colour:
            x = self._colour(x, generator)
        if cfg.cutout > 0:
            x = self._cutout(x, generator)
        return x

    def _xflip(self, x: torch.Tensor, generator) -> torch.Tensor:
        flip = self._rand([x.shape[0]], x, generator) < 0.5                           # [B]
        return _select(flip, x.flip(-1) * self.mirror_sign.to(x.dtype), x)

    def _surface_weight(self, x: torch.Tensor) -> torch.Tensor:
        """How much each pixel is surface: ``[B, 1, H, W]`` in [0, 1]."""
        if self.meta.has_mask:
            return ((_work(x[:, MASK]) + 1.0) * 0.5).clamp(0.0, 1.0)
        return surface_mask(x, self.meta).unsqueeze(1).to(_work(x[:, :1]).dtype)

    def _xyz_similarity(self, x: torch.Tensor, generator) -> torch.Tensor:
        """Rotate and scale surface points about the origin; background stays on the sheet."""
        cfg, B = self.cfg, x.shape[0]
        m = torch.eye(3, device=x.device).expand(B, 3, 3)                             # [B, 3, 3]
        chosen = torch.zeros(B, dtype=torch.bool, device=x.device)
        if cfg.rotate3d_deg > 0:
            axis = self._randn([B, 3], x, generator)
            axis = axis / axis.norm(dim=1, keepdim=True).clamp(min=1e-12)              # uniform on the sphere
            angle = (self._rand([B], x, generator) * 2 - 1) * math.radians(cfg.rotate3d_deg)
            use = self._chosen(x, generator)
            m = _bmm(_rotation(axis, torch.where(use, angle, 0.0)), m)
            chosen = chosen | use
        if cfg.scale3d > 0:
            s = (self._randn([B], x, generator) * cfg.scale3d).exp()
            use = self._chosen(x, generator)
            m = m * torch.where(use, s, 1.0)[:, None, None]
            chosen = chosen | use
        xyz = _work(x[:, XYZ])                                                        # [B, 3, H, W]
        # lerp returns exactly the moved point at weight 1 and the input at weight 0
        moved = torch.lerp(xyz, _apply_matrix(m.to(xyz.dtype), xyz), self._surface_weight(x))
        return _replace(x, XYZ, _select(chosen, moved, x[:, XYZ]))

    def _translate(self, x: torch.Tensor, generator) -> torch.Tensor:
        """Integer shift; XYZ follows the sheet's shift, uncovered pixels get the empty grid."""
        B, C, H, W = x.shape
        n = self.translate_px
        # [B, 2] (dx, dy), uniform integers in [-n, n]
        shift = (self._rand([B, 2], x, generator) * (2 * n + 1)).floor().clamp(max=2 * n).long() - n
        use = self._chosen(x, generator)
        shift = torch.where(use[:, None], shift, 0)
        rows = torch.arange(H, device=x.device).view(1, H, 1) - shift[:, 1].view(B, 1, 1)   # source row [B, H, 1]
        cols = torch.arange(W, device=x.device).view(1, 1, W) - shift[:, 0].view(B, 1, 1)   # source col [B, 1, W]
        inside = (rows >= 0) & (rows < H) & (cols >= 0) & (cols < W)                 # [B, H, W]
        index = (rows.clamp(0, H - 1) * W + cols.clamp(0, W - 1)).view(B, 1, H * W).expand(B, C, H * W)
        empty = self.empty.to(x.dtype)                                                # [C, H, W]
        moved = x.flatten(2).gather(2, index).view(B, C, H, W)
        empty_moved = empty.flatten(1).expand(B, C, H * W).gather(2, index).view(B, C, H, W)
        # empty - empty_moved is the sheet's shift on x, y and exactly 0 on z, RGB and mask
        out = torch.where(inside[:, None], moved + (empty - empty_moved), empty)
        return _select(use, out, x)

    def _colour(self, x: torch.Tensor, generator) -> torch.Tensor:
        """One affine colour map per sample, composed from the enabled colour transforms."""
        cfg, B = self.cfg, x.shape[0]
        dev = x.device
        m = torch.eye(4, device=dev).repeat(B, 1, 1)                                  # [B, 4, 4] homogeneous
        chosen = torch.zeros(B, dtype=torch.bool, device=dev)
        grey = torch.full((3,), 1 / math.sqrt(3), device=dev)                         # unit grey axis
        if cfg.rgb_brightness > 0:
            b = self._randn([B], x, generator) * cfg.rgb_brightness
            use = self._chosen(x, generator)
            t = torch.eye(4, device=dev).repeat(B, 1, 1)
            t[:, :3, 3] = torch.where(use, b, 0.0)[:, None]
            m, chosen = _bmm(t, m), chosen | use
        if cfg.rgb_contrast > 0:
            c = torch.exp2(self._randn([B], x, generator) * cfg.rgb_contrast)
            use = self._chosen(x, generator)
            scale = torch.ones(B, 4, device=dev)
            scale[:, :3] = torch.where(use, c, 1.0)[:, None]
            m, chosen = scale[:, :, None] * m, chosen | use
        if cfg.rgb_hue > 0:
            angle = (self._rand([B], x, generator) * 2 - 1) * math.pi * cfg.rgb_hue
            use = self._chosen(x, generator)
            h = torch.eye(4, device=dev).repeat(B, 1, 1)
            h[:, :3, :3] = _rotation(grey.expand(B, 3), torch.where(use, angle, 0.0))
            m, chosen = _bmm(h, m), chosen | use
        if cfg.rgb_saturation > 0:
            s = torch.exp2(self._randn([B], x, generator) * cfg.rgb_saturation)
            use = self._chosen(x, generator)
            s = torch.where(use, s, 1.0)[:, None, None]
            on_axis = torch.outer(grey, grey)                                         # projector onto grey
            sat = torch.eye(4, device=dev).repeat(B, 1, 1)
            sat[:, :3, :3] = on_axis + s * (torch.eye(3, device=dev) - on_axis)
            m, chosen = _bmm(sat, m), chosen | use
        rgb = _work(x[:, RGB])
        rgb = _apply_matrix(m[:, :3, :].to(rgb.dtype), rgb)                           # [B, 3, H, W]
        return _replace(x, RGB, _select(chosen, rgb, x[:, RGB]))

    def _cutout(self, x: torch.Tensor, generator) -> torch.Tensor:
        """Fill a square of side cfg.cutout (fraction of the side) with the empty grid."""
        B = x.shape[0]
        centre = self._rand([B, 2], x, generator)                                     # [B, 2] (u, v) in [0, 1]
        use = self._chosen(x, generator)
        half = self.cfg.cutout / 2
        in_u = (self.uv.view(1, 1, -1) - centre[:, 0].view(B, 1, 1)).abs() < half    # [B, 1, W]
        in_v = (self.uv.view(1, -1, 1) - centre[:, 1].view(B, 1, 1)).abs() < half    # [B, H, 1]
        cut = in_u & in_v & use.view(B, 1, 1)                                         # [B, H, W]
        return torch.where(cut[:, None], self.empty.to(x.dtype), x)


# ----------------------------------------------------------------------------------------------
# Adaptive p


class AdaptiveAugment:
    """ADA's controller: moves ``pipe.p`` toward the p at which mean(sign(D(real))) == target.

    Call :meth:`accumulate` with D's logits on (augmented) reals in each D step and
    :meth:`step` once per minibatch with the images that minibatch added. Every
    ``cfg.interval`` minibatches' worth of images, p moves by
    ``sign(mean_sign - target) * images / (speed_kimg * 1000)`` and is clamped to [0, 1].
    In modes "off" and "fixed" p never moves (the mean sign is still measured, for logging).

    Under DDP pass the global batch, the global image count, and ``reduce_fn``: it is called
    with the tensor ``[sum of signs, count]`` right before an update, on every process at the
    same step, and must sum it over processes in place (``torch.distributed.all_reduce``) or
    return the sum. :meth:`pending` exposes the same two tensors for callers that reduce
    themselves.
    """

    def __init__(self, pipe: AugmentPipe, cfg: AugmentConfig | None = None, batch_size: int = 1,
                 reduce_fn: Callable[[torch.Tensor], torch.Tensor | None] | None = None):
        self.pipe = pipe                # owns the p buffer
        self.cfg = cfg or pipe.cfg
        self.batch_size = int(batch_size)   # global images per minibatch
        self.reduce_fn = reduce_fn      # sums [sum, count] over processes; None: single process
        assert self.batch_size >= 1, "batch_size must be >= 1"
        # [sum of signs, count]; float32 is exact for the integers one interval can reach
        self._stats = torch.zeros(2, dtype=torch.float32, device=pipe.p.device)
        self._images = 0                # images since the last update
        self.last_rt: torch.Tensor | None = None   # mean sign at the last update (a 0-dim tensor; nan if none seen)

    @property
    def p(self) -> torch.Tensor:
        return self.pipe.p

    def pending(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(sum of signs, count) accumulated since the last update: views, reducible in place."""
        return self._stats[0], self._stats[1]

    def accumulate(self, real_logits: torch.Tensor) -> None:
        """Record sign(D(real)) for ``real_logits [B, 1]`` (no gradient, no host sync)."""
        logits = real_logits.detach()
        if self._stats.device != logits.device:
            self._stats = self._stats.to(logits.device)
        self._stats[0] += logits.float().sign().sum()
        self._stats[1] += logits.numel()

    def step(self, images_seen_delta: int | None = None) -> bool:
        """Count a minibatch (``images_seen_delta`` images; None: ``batch_size``); update p when due.

        Returns True when this call updated (or, outside mode "ada", re-measured) the statistics.
        """
        self._images += self.batch_size if images_seen_delta is None else int(images_seen_delta)
        if self._images < self.batch_size * self.cfg.interval:
            return False
        images, self._images = self._images, 0
        stats = self._stats
        if self.reduce_fn is not None:
            reduced = self.reduce_fn(stats)
            stats = stats if reduced is None else reduced
        total, count = stats[0], stats[1]
        self.last_rt = torch.where(count > 0, total / count.clamp(min=1), torch.nan).float()
        if self.cfg.mode == "ada":
            adjust = torch.sign(self.last_rt - self.cfg.target) * (images / (self.cfg.speed_kimg * 1000))
            adjust = torch.where(count > 0, adjust, 0.0).to(self.pipe.p.device)
            self.pipe.p.copy_((self.pipe.p + adjust).clamp(0.0, 1.0))
        self._stats = torch.zeros_like(self._stats)
        return True

    def state_dict(self) -> dict:
        """Plain numbers for training-state.pt (loads with ``weights_only=True``)."""
        return {
            "p": float(self.pipe.p),
            "sum": float(self._stats[0]),
            "count": float(self._stats[1]),
            "images": int(self._images),
            "last_rt": None if self.last_rt is None else float(self.last_rt),
        }

    def load_state_dict(self, state: dict) -> None:
        self.pipe.p.fill_(float(state["p"]))
        self._stats = torch.tensor([state["sum"], state["count"]], dtype=torch.float32, device=self.pipe.p.device)
        self._images = int(state["images"])
        rt = state.get("last_rt")
        self.last_rt = None if rt is None else torch.tensor(rt, dtype=torch.float32)

"""Images of grids for the 2D metrics: the colour channels, and the geometry shaded.

``"rgb"`` is the grid's colour (linear [0, 1], sRGB-encoded by default because the Inception
and LPIPS networks were trained on sRGB photos). ``"shaded"`` is a grey Lambertian rendering of
the grid's own normals (:func:`pcgan.grid.grid_normals`) under one fixed light, so FID, KID and
LPIPS can judge the geometry in 2D terms too: a bumpy or torn surface shows as shading noise.
Both are pure torch on the grid's pixels (no rasteriser: each pixel already is a surface point
seen by the canonical camera).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from pcgan import grid as G
from pcgan.errors import PcganError

VIEWS = ("rgb", "shaded")
LIGHT = (0.35, 0.5, 1.0)      # toward the light, canonical frame: upper right, camera side
AMBIENT = 0.1                 # intensity of a surface facing away from the light
BACKGROUND = 0.0              # intensity of empty pixels in the shaded view


def _batch(grids) -> torch.Tensor:
    g = grids if isinstance(grids, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(grids))
    if g.dim() == 3:
        g = g[None]
    if g.dim() != 4:
        raise PcganError(f"grids have shape {list(g.shape)}: expected [B, C, H, W] or [C, H, W]")
    return g.float()


def srgb_encode(linear: torch.Tensor) -> torch.Tensor:
    """Linear [0, 1] -> sRGB-encoded [0, 1] (IEC 61966-2-1 transfer curve)."""
    x = linear.clamp(0.0, 1.0)
    return torch.where(x <= 0.0031308, 12.92 * x, 1.055 * x.clamp(min=0.0031308) ** (1 / 2.4) - 0.055)


def rgb_images(grids, srgb: bool = True) -> torch.Tensor:
    """Colour of each pixel: ``[B, C, H, W]`` grids -> ``[B, 3, H, W]`` float32 in [0, 1]."""
    g = _batch(grids)
    lin = G.grid_to_rgb(g[:, G.RGB])
    return srgb_encode(lin) if srgb else lin


def shaded_images(grids, meta_or_channels, light: Sequence[float] = LIGHT, ambient: float = AMBIENT,
                  background: float = BACKGROUND) -> torch.Tensor:
    """Lambertian shading of the grid normals: ``[B, C, H, W]`` -> ``[B, 3, H, W]`` grey in [0, 1].

    light: direction toward the light in the canonical frame (normalised here).
    ambient: floor intensity; a pixel gets ``ambient + (1 - ambient) * max(0, n . l)``.
    background: intensity of pixels with no surface."""
    g = _batch(grids)
    l_dir = torch.tensor(light, dtype=torch.float32)
    l_dir = l_dir / l_dir.norm()
    out = torch.empty(g.shape[0], 3, g.shape[-2], g.shape[-1])
    for k in range(g.shape[0]):   # grid_normals takes one grid
        n = torch.as_tensor(G.grid_normals(g[k].cpu(), meta_or_channels))             # [3, H, W]
        valid = torch.as_tensor(G.surface_mask(g[k].cpu(), meta_or_channels))       # [H, W]
        shade = ambient + (1 - ambient) * (n * l_dir[:, None, None]).sum(0).clamp(min=0)
        out[k] = torch.where(valid, shade, torch.full_like(shade, background))[None].expand(3, -1, -1)
    return out.to(g.device)


def grid_images(grids, meta_or_channels, view: str, srgb: bool = True) -> torch.Tensor:
    """``[B, C, H, W]`` grids -> ``[B, 3, H, W]`` float images in [0, 1] for one view."""
    if view == "rgb":
        return rgb_images(grids, srgb=srgb)
    if view == "shaded":
        return shaded_images(grids, meta_or_channels)
    raise PcganError(f"image view {view!r}: use one of {list(VIEWS)}")


def to_uint8(images01: torch.Tensor) -> torch.Tensor:
    """[0, 1] float -> uint8 [0, 255], rounded (what image files and the FID references hold)."""
    return (images01.clamp(0, 1) * 255 + 0.5).floor().to(torch.uint8)

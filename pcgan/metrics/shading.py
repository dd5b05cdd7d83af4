"""Images of grids for the 2D metrics: the colour channels, and the geometry shaded.

``"rgb"`` is the grid's colour as stored: sRGB-encoded [0, 1] (``pcgan.grid.COLOR_SPACE``), which
is what the Inception and LPIPS networks, trained on sRGB photos, expect. ``"shaded"`` is a grey Lambertian rendering of
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


def rgb_images(grids) -> torch.Tensor:
    """Colour of each pixel: ``[B, C, H, W]`` grids -> ``[B, 3, H, W]`` float32 sRGB in [0, 1]."""
    return G.grid_to_rgb(_batch(grids)[:, G.RGB])


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


def grid_images(grids, meta_or_channels, view: str) -> torch.Tensor:
    """``[B, C, H, W]`` grids -> ``[B, 3, H, W]`` float images in [0, 1] for one view."""
    if view == "rgb":
        return rgb_images(grids)
    if view == "shaded":
        return shaded_images(grids, meta_or_channels)
    raise PcganError(f"image view {view!r}: use one of {list(VIEWS)}")


def to_uint8(images01: torch.Tensor) -> torch.Tensor:
    """[0, 1] float -> uint8 [0, 255], rounded (what image files and the FID references hold)."""
    return (images01.clamp(0, 1) * 255 + 0.5).floor().to(torch.uint8)

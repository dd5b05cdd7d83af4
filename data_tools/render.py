"""Mesh -> XYZRGB grid: cast one ray per pixel of the canonical camera (Open3D RaycastingScene).

Each pixel's ray comes from ``meta.camera.rays`` (so grids from meshes, points and RGB-D share
one camera). Where a ray hits the mesh, the pixel holds the hit point, computed from the hit
triangle's vertices and barycentric coordinates in float64, and its colour:

- texture: the triangle's per-corner UVs interpolated with the barycentrics, then a bilinear
  lookup in that triangle's material texture (OBJ convention: v up, so image row
  ``(1 - v) * h - 0.5``, column ``u * w - 0.5``, texel centres at half-integers, clamped at
  the image edge; UVs outside [0, 1] wrap, which also serves UDIM-style tiles with one
  texture each);
- vertex colours: interpolated with the barycentrics;
- otherwise ``default_rgb``.
Triangles whose material has no texture fall back to vertex colours, then the default.

Colours are the file's 8-bit values / 255 (see ``meshes.COLOR_SPACE``). Pixels whose ray
misses keep the values of :func:`pcgan.grid.empty_grid` (the sheet and the background).
"""

from __future__ import annotations

import functools
import logging

import numpy as np

from data_tools.canonical import apply_transform
from data_tools.meshes import MeshScan
from pcgan.errors import PcganError
from pcgan.grid import MASK, RGB, XYZ, GridMeta, empty_grid, rgb_to_grid

log = logging.getLogger(__name__)

DEFAULT_RGB = (0.7, 0.7, 0.7)   # colour of untextured, uncoloured surfaces (linear [0, 1] grid colour)


def _wrap01(c: np.ndarray) -> np.ndarray:
    """Texture coordinates outside [0, 1] wrap (repeat; UDIM-style tiles); 0 and 1 stay put."""
    return np.where((c < 0.0) | (c > 1.0), c - np.floor(c), c)


def sample_texture(texture: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """Bilinear lookup of ``uv [N, 2]`` in ``texture [h, w, 3]`` uint8 -> ``[N, 3]`` float32 in [0, 1].

    OBJ convention (v = 0 at the bottom row), texel centres at half-integers; coordinates
    outside [0, 1] wrap around, and the bilinear neighbours clamp at the image edge (an atlas'
    opposite edge is unrelated surface)."""
    h, w = texture.shape[:2]
    x = np.clip(_wrap01(uv[:, 0]) * w - 0.5, 0.0, w - 1.0)            # [N] columns
    y = np.clip((1.0 - _wrap01(uv[:, 1])) * h - 0.5, 0.0, h - 1.0)    # [N] rows
    x0 = np.minimum(np.floor(x).astype(np.int64), w - 1)
    y0 = np.minimum(np.floor(y).astype(np.int64), h - 1)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    x1, y1 = np.minimum(x0 + 1, w - 1), np.minimum(y0 + 1, h - 1)
    t = texture
    top = t[y0, x0] * (1 - fx) + t[y0, x1] * fx
    bottom = t[y1, x0] * (1 - fx) + t[y1, x1] * fx
    return ((top * (1 - fy) + bottom * fy) / 255.0).astype(np.float32)


def hit_colors(mesh: MeshScan, tri: np.ndarray, bary: np.ndarray,
               default_rgb=DEFAULT_RGB) -> tuple[np.ndarray, dict]:
    """Colours of surface points given by triangle ids ``tri [N]`` and barycentric weights
    ``bary [N, 3]`` (of corners 0, 1, 2). Returns (``[N, 3]`` float32 in [0, 1], counts of
    pixels coloured by each source)."""
    n = len(tri)
    colors = np.empty((n, 3), dtype=np.float32)
    colors[:] = np.asarray(default_rgb, dtype=np.float32)
    done = np.zeros(n, dtype=bool)
    counts = {"texture": 0, "vertex": 0, "default": 0}
    if mesh.has_texture and n:
        mats = mesh.material_ids[tri] if mesh.material_ids is not None else np.zeros(n, np.int64)
        uv = np.einsum("nk,nkc->nc", bary, mesh.triangle_uvs[tri].astype(np.float64))   # [N, 2]
        for m, tex in enumerate(mesh.textures):
            if tex is None:
                continue
            sel = mats == m
            if sel.any():
                colors[sel] = sample_texture(tex, uv[sel])
                done |= sel
        counts["texture"] = int(done.sum())
    if mesh.vertex_colors is not None and not done.all():
        rest = ~done
        corners = mesh.triangles[tri[rest]]                                             # [n, 3]
        w = bary[rest].astype(np.float32)
        vc = mesh.vertex_colors
        colors[rest] = (vc[corners[:, 0]] * w[:, 0:1] + vc[corners[:, 1]] * w[:, 1:2]
                        + vc[corners[:, 2]] * w[:, 2:3])
        counts["vertex"] = int(rest.sum())
        done[:] = True
    counts["default"] = int((~done).sum())
    return np.clip(colors, 0.0, 1.0), counts


@functools.lru_cache(maxsize=8)
def _rays(camera, resolution: int) -> np.ndarray:
    """The camera's rays as Open3D wants them: ``[H, W, 6]`` float32 (origin, direction)."""
    origins, dirs = camera.rays(resolution)                           # [H, W, 3] each
    rays = np.concatenate([origins, dirs], axis=-1).astype(np.float32)
    rays.flags.writeable = False
    return rays


@functools.lru_cache(maxsize=8)
def _empty(meta: GridMeta) -> np.ndarray:
    grid = empty_grid(meta)
    grid.flags.writeable = False
    return grid


def render_mesh(mesh: MeshScan, to_grid: np.ndarray, meta: GridMeta,
                default_rgb=DEFAULT_RGB) -> tuple[np.ndarray, dict]:
    """Render ``mesh`` into a grid.

    to_grid: 4x4 map from the mesh's own frame to the normalised canonical frame (the scan's
    ``to_canonical`` followed by the dataset normalisation). Returns ``(grid [C, H, W]
    float32, stats)`` with stats ``hit_px``, ``coverage`` (fraction of pixels hit),
    ``border_px`` (hit pixels on the image border: the face is cut by the frame when many) and
    the colour source counts. Raises PcganError when no ray hits the mesh."""
    import open3d as o3d

    verts = apply_transform(to_grid, mesh.vertices)                   # [V, 3] float64, normalised
    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.core.Tensor(verts.astype(np.float32)),
                        o3d.core.Tensor(mesh.triangles.astype(np.uint32)))
    out = scene.cast_rays(o3d.core.Tensor(_rays(meta.camera, meta.resolution)))
    t_hit = out["t_hit"].numpy()                                      # [H, W], inf on a miss
    hit = np.isfinite(t_hit)
    n_hit = int(hit.sum())
    if n_hit == 0:
        raise PcganError(f"{mesh.path}: the scan misses the camera entirely (no pixel sees it); "
                         f"check its orientation, centre and scale (--orient, --transforms, --scale)")
    tri = out["primitive_ids"].numpy()[hit].astype(np.int64)          # [n]
    uv = out["primitive_uvs"].numpy()[hit].astype(np.float64)         # [n, 2]
    bary = np.stack([1.0 - uv[:, 0] - uv[:, 1], uv[:, 0], uv[:, 1]], axis=1)   # [n, 3]
    corners = verts[mesh.triangles[tri]]                              # [n, 3, 3]
    points = np.einsum("nk,nkc->nc", bary, corners)                   # [n, 3] exact hit points
    colors, counts = hit_colors(mesh, tri, bary, default_rgb)

    grid = _empty(meta).copy()
    grid[XYZ][:, hit] = points.T.astype(np.float32)
    grid[RGB][:, hit] = rgb_to_grid(colors).T
    if meta.has_mask:
        grid[MASK][:, hit] = 1.0
    border = hit.copy()
    border[1:-1, 1:-1] = False
    stats = {"hit_px": n_hit, "coverage": round(n_hit / hit.size, 4), "border_px": int(border.sum()),
             **{f"{k}_px": v for k, v in counts.items()}}
    return grid, stats

"""The XYZRGB grid: one module owns its layout, camera, normalisation and conversions.

A grid is a float array ``[C, H, W]`` (or ``[B, C, H, W]``) whose pixels each hold a 3D point
and its colour, plus by default a mask channel. Channel order is ``x y z r g b [mask]``; the
channel list is data (``GridMeta.channels``), stored in ``dataset.json`` and in checkpoints.
Index channels only through ``XYZ``, ``RGB`` and ``MASK`` below.

Canonical frame (normalised units, faces fill about [-1, 1]): right-handed, +x to the image's
right, +y up, +z toward the camera (the face looks along +z). The camera sits on the +z axis
looking at the origin. Pixel (row i, column j) has its centre at (j + 0.5, i + 0.5) in pixel
units, so the principal point is (W/2, H/2) and mirroring the image left-right is exactly the
map x -> -x (see :func:`mirror`).

Values:
- XYZ: ``xyz_n = (xyz - center) / scale`` with the dataset's ``center`` and ``scale`` (in the
  scans' ``units``), so exported clouds come back in the scans' units.
- RGB: colour in [0, 1] mapped to [-1, 1], sRGB-encoded as the scans store it (8-bit value / 255;
  ``COLOR_SPACE``), so .ply/PNG colours round-trip exactly and 2D metrics see what they expect.
- mask: +1 on the surface, -1 where the camera ray missed.
- Empty pixels hold the point where their ray meets the background plane z = ``sheet_z``
  ("the sheet") and the background colour, so the grid is smooth everywhere and can be
  exported without a mask by dropping points on the sheet.

Every function accepts numpy arrays or torch tensors and returns the same kind.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import NamedTuple, Sequence

import numpy as np
import torch

from pcgan.errors import PcganError

# ---------------------------------------------------------------------------------------------
# Channels

DEFAULT_CHANNELS: tuple[str, ...] = ("x", "y", "z", "r", "g", "b", "mask")
XYZ = slice(0, 3)       # x y z, normalised canonical frame
RGB = slice(3, 6)       # r g b, sRGB-encoded colour in [0, 1] mapped to [-1, 1]
MASK = slice(6, 7)      # +1 surface / -1 empty; present only when "mask" is in the channel list
_REQUIRED = ("x", "y", "z", "r", "g", "b")

COLOR_SPACE = "srgb"    # grid colours are the scans' encoded values, not linear light
MASK_THRESHOLD = 0.0    # mask > 0 means surface
SHEET_TOLERANCE = 0.02  # without a mask, a point within this of the sheet (normalised units) is background


def check_channels(channels: Sequence[str]) -> tuple[str, ...]:
    """Validate a channel list: ``x y z r g b`` first, then optionally ``mask``."""
    channels = tuple(channels)
    if channels[: len(_REQUIRED)] != _REQUIRED or channels[len(_REQUIRED):] not in ((), ("mask",)):
        raise PcganError(
            f"unsupported grid channels {list(channels)}: expected {list(_REQUIRED)} "
            f"optionally followed by 'mask'"
        )
    return channels


def has_mask(channels: Sequence[str]) -> bool:
    return "mask" in channels


# ---------------------------------------------------------------------------------------------
# Camera and grid metadata


@dataclass(frozen=True)
class Camera:
    """The canonical camera, in normalised units. It sits at (0, 0, distance) looking at -z."""

    projection: str = "perspective"   # "perspective" or "orthographic"
    fov_deg: float = 25.0             # perspective: full field of view, horizontal = vertical
    distance: float = 5.0             # camera centre on the +z axis
    ortho_half_extent: float = 1.15   # orthographic: half the visible width at any depth

    def __post_init__(self):
        if self.projection not in ("perspective", "orthographic"):
            raise PcganError(f"camera projection {self.projection!r}: use 'perspective' or 'orthographic'")
        if not 0.0 < self.fov_deg < 180.0:
            raise PcganError(f"camera fov_deg={self.fov_deg}: must be in (0, 180)")
        if self.distance <= 0 or self.ortho_half_extent <= 0:
            raise PcganError("camera distance and ortho_half_extent must be positive")

    @property
    def origin(self) -> tuple[float, float, float]:
        return (0.0, 0.0, float(self.distance))

    def focal(self, resolution: int) -> float:
        """Perspective focal length in pixels."""
        return (resolution / 2.0) / math.tan(math.radians(self.fov_deg) / 2.0)

    def intrinsics(self, resolution: int) -> np.ndarray:
        """3x3 pinhole matrix K (OpenCV convention, pixel centres at +0.5). Orthographic: the
        pixel scale sits where the focal length would, for reference only."""
        f = self.focal(resolution) if self.projection == "perspective" else resolution / (2 * self.ortho_half_extent)
        c = resolution / 2.0
        return np.array([[f, 0, c], [0, f, c], [0, 0, 1]], dtype=np.float64)

    def extrinsics(self) -> np.ndarray:
        """4x4 world-to-camera matrix in the OpenCV convention (camera looks along +z_cam, y down)."""
        e = np.diag([1.0, -1.0, -1.0, 1.0])
        e[2, 3] = self.distance
        return e

    def rays(self, resolution: int) -> tuple[np.ndarray, np.ndarray]:
        """Ray origins and unnormalised directions per pixel centre, each ``[H, W, 3]`` float64.
        Directions have z = -1, so ``origin + t * dir`` reaches depth z = distance - t."""
        c = (np.arange(resolution, dtype=np.float64) + 0.5 - resolution / 2.0)
        u, v = np.meshgrid(c, c, indexing="xy")      # u right, v down, both [H, W]
        zeros, ones = np.zeros_like(u), np.ones_like(u)
        if self.projection == "perspective":
            f = self.focal(resolution)
            dirs = np.stack([u / f, -v / f, -ones], axis=-1)
            origins = np.broadcast_to(np.array(self.origin), dirs.shape).copy()
        else:
            s = self.ortho_half_extent / (resolution / 2.0)
            origins = np.stack([u * s, -v * s, zeros + self.distance], axis=-1)
            dirs = np.stack([zeros, zeros, -ones], axis=-1)
        return origins, dirs

    def pixel_size(self, resolution: int) -> float:
        """Side of one pixel's footprint on the plane z = 0 (normalised units)."""
        if self.projection == "perspective":
            return self.distance / self.focal(resolution)
        return 2.0 * self.ortho_half_extent / resolution

    def project(self, points: np.ndarray, resolution: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Project points ``[N, 3]`` (normalised frame) to continuous pixel coordinates.
        Returns (u [N] column, v [N] row, depth [N] distance along the viewing axis)."""
        points = np.asarray(points, dtype=np.float64)
        depth = self.distance - points[:, 2]
        c = resolution / 2.0
        if self.projection == "perspective":
            f = self.focal(resolution)
            with np.errstate(divide="ignore", invalid="ignore"):
                u = f * points[:, 0] / depth + c
                v = -f * points[:, 1] / depth + c
        else:
            s = (resolution / 2.0) / self.ortho_half_extent
            u = s * points[:, 0] + c
            v = -s * points[:, 1] + c
        return u, v, depth

    def pixel_footprint(self, depth, resolution: int):
        """Width of one pixel, in normalised units, at the given depth (array or float)."""
        if self.projection == "perspective":
            return depth / self.focal(resolution)
        return 2.0 * self.ortho_half_extent / resolution + 0.0 * depth

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Camera":
        return cls(**{k: v for k, v in d.items() if k in {f.name for f in dataclasses.fields(cls)}})


@dataclass(frozen=True)
class GridMeta:
    """Everything needed to interpret a grid; stored in dataset.json and every checkpoint."""

    resolution: int                                         # H = W, a power of two
    channels: tuple[str, ...] = DEFAULT_CHANNELS            # channel names in order
    camera: Camera = field(default_factory=Camera)          # canonical camera (normalised units)
    center: tuple[float, float, float] = (0.0, 0.0, 0.0)    # canonical-frame centre, scan units
    scale: float = 1.0                                      # scan units per normalised unit
    units: str = "unknown"                                  # units of the source scans, e.g. "mm"
    background_rgb: tuple[float, float, float] = (0.0, 0.0, 0.0)  # [0, 1] sRGB colour of empty pixels
    sheet_z: float = -1.5                                   # z of the background plane, normalised

    def __post_init__(self):
        object.__setattr__(self, "channels", check_channels(self.channels))
        object.__setattr__(self, "center", tuple(float(c) for c in self.center))
        object.__setattr__(self, "background_rgb", tuple(float(c) for c in self.background_rgb))
        r = self.resolution
        if not isinstance(r, int) or r < 4 or r & (r - 1):
            raise PcganError(f"grid resolution {r}: must be a power of two >= 4 (e.g. 64, 128, 256)")
        if len(self.center) != 3:
            raise PcganError(f"grid center {self.center}: needs 3 values")
        if not self.scale > 0:
            raise PcganError(f"grid scale {self.scale}: must be positive")
        if self.sheet_z >= self.camera.distance:
            raise PcganError(f"sheet_z={self.sheet_z} must lie in front of the camera (< {self.camera.distance})")

    @property
    def num_channels(self) -> int:
        return len(self.channels)

    @property
    def has_mask(self) -> bool:
        return has_mask(self.channels)

    def empty_pixel(self) -> dict:
        """What an empty pixel holds, as plain data: the camera whose rays meet the background
        sheet, the sheet's depth and the background colour (the ``background`` of
        ``ModelConfig.generator_kwargs`` and ``pcgan.networks.Generator``)."""
        return {"camera": self.camera.to_dict(), "sheet_z": self.sheet_z, "rgb": list(self.background_rgb)}

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["channels"] = list(self.channels)
        d["center"] = list(self.center)
        d["background_rgb"] = list(self.background_rgb)
        d["camera"] = self.camera.to_dict()
        d["camera"]["intrinsics"] = self.camera.intrinsics(self.resolution).tolist()
        d["camera"]["extrinsics"] = self.camera.extrinsics().tolist()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "GridMeta":
        known = {f.name for f in dataclasses.fields(cls)}
        kw = {k: v for k, v in d.items() if k in known}
        if "resolution" not in kw:
            raise PcganError("grid metadata has no 'resolution'")
        kw["camera"] = Camera.from_dict(kw.get("camera", {}))
        for key in ("channels", "center", "background_rgb"):
            if key in kw:
                kw[key] = tuple(kw[key])
        return cls(**kw)


def as_meta(meta_or_channels: "GridMeta | Sequence[str]", resolution: int) -> GridMeta:
    """A GridMeta from either a GridMeta or a bare channel list (then camera etc. are defaults)."""
    if isinstance(meta_or_channels, GridMeta):
        return meta_or_channels
    return GridMeta(resolution=resolution, channels=tuple(meta_or_channels))


# ---------------------------------------------------------------------------------------------
# numpy <-> torch plumbing: compute in torch, hand back what came in


def _to_torch(a) -> tuple[torch.Tensor, bool]:
    if isinstance(a, torch.Tensor):
        return a, False
    return torch.from_numpy(np.ascontiguousarray(a)), True


def _back(t: torch.Tensor, was_numpy: bool):
    return t.numpy() if was_numpy else t


def check_grid(grid, meta: GridMeta, name: str = "grid") -> None:
    """Raise PcganError naming the wrong dimension if ``grid`` is not ``[..., C, H, W]`` for meta."""
    shape = tuple(grid.shape)
    expect = (meta.num_channels, meta.resolution, meta.resolution)
    if len(shape) < 3 or shape[-3:] != expect:
        dims = "CHW" if len(shape) >= 3 else "?"
        wrong = [f"{d}={s} (expected {e})" for d, s, e in zip(dims, shape[-3:], expect) if s != e]
        raise PcganError(
            f"{name} has shape {list(shape)}, expected [..., {expect[0]}, {expect[1]}, {expect[2]}] "
            f"for channels {list(meta.channels)}: " + ", ".join(wrong or ["too few dimensions"])
        )


# ---------------------------------------------------------------------------------------------
# Values


def normalize_xyz(xyz, meta: GridMeta):
    """Scan-unit points ``[..., 3]`` -> normalised canonical frame."""
    xyz, np_in = _to_torch(xyz)
    center = torch.tensor(meta.center, dtype=xyz.dtype, device=xyz.device)
    return _back((xyz - center) / meta.scale, np_in)


def denormalize_xyz(xyz, meta: GridMeta):
    """Normalised points ``[..., 3]`` -> scan units (inverse of :func:`normalize_xyz`)."""
    xyz, np_in = _to_torch(xyz)
    center = torch.tensor(meta.center, dtype=xyz.dtype, device=xyz.device)
    return _back(xyz * meta.scale + center, np_in)


def rgb_to_grid(rgb01):
    """Colour in [0, 1] -> grid values in [-1, 1]."""
    return rgb01 * 2.0 - 1.0


def grid_to_rgb(values):
    """Grid colour values -> colour in [0, 1] (clipped)."""
    out = (values + 1.0) * 0.5
    return out.clip(0.0, 1.0)


def sheet_xyz(meta: GridMeta) -> np.ndarray:
    """XYZ of the background plane as seen through each pixel: ``[3, H, W]`` float32."""
    origins, dirs = meta.camera.rays(meta.resolution)
    t = (origins[..., 2] - meta.sheet_z) / -dirs[..., 2]          # [H, W]
    pts = origins + t[..., None] * dirs                           # [H, W, 3]
    return pts.transpose(2, 0, 1).astype(np.float32)


def empty_grid(meta: GridMeta) -> np.ndarray:
    """A grid with no surface: sheet XYZ, background colour, mask -1. ``[C, H, W]`` float32."""
    r = meta.resolution
    grid = np.empty((meta.num_channels, r, r), dtype=np.float32)
    grid[XYZ] = sheet_xyz(meta)
    grid[RGB] = rgb_to_grid(np.asarray(meta.background_rgb, dtype=np.float32))[:, None, None]
    if meta.has_mask:
        grid[MASK] = -1.0
    return grid


def surface_mask(grid, meta_or_channels) -> "np.ndarray | torch.Tensor":
    """Which pixels hold surface: ``[..., C, H, W]`` -> bool ``[..., H, W]``.

    Uses the mask channel when present, else drops points within SHEET_TOLERANCE of the sheet."""
    meta = as_meta(meta_or_channels, grid.shape[-1])
    g, np_in = _to_torch(grid)
    if meta.has_mask:
        m = g[..., MASK, :, :][..., 0, :, :] > MASK_THRESHOLD
    else:
        m = g[..., XYZ, :, :][..., 2, :, :] > meta.sheet_z + SHEET_TOLERANCE
    # A pixel is usable only if every channel is finite; the channel sum is finite exactly then
    # (short of overflow) and is twice as fast as isfinite().all() over the channel axis.
    m = m & torch.isfinite(g.sum(dim=-3))
    return _back(m, np_in)


# ---------------------------------------------------------------------------------------------
# Geometry


def mirror(grid, channels: Sequence[str] = DEFAULT_CHANNELS):
    """Mirror ``[..., C, H, W]`` left-right in the canonical frame: flip W and negate x."""
    check_channels(channels)
    g, np_in = _to_torch(grid)
    out = g.flip(-1).clone()
    out[..., XYZ.start, :, :] = -out[..., XYZ.start, :, :]
    return _back(out, np_in)


def neighbour_difference(xyz: torch.Tensor, valid: torch.Tensor, axis: int) -> torch.Tensor:
    """Mean of the forward and backward differences of ``xyz [..., H, W]`` along ``axis`` (-1
    columns, -2 rows), each used only where both of its pixels are surface (``valid``, same
    trailing shape, broadcast over the leading dims). Differentiable in ``xyz``."""
    n = xyz.shape[axis]
    edge = torch.arange(n, device=xyz.device)
    edge = edge.view(-1, 1) if axis == -2 else edge.view(1, -1)             # [H, 1] or [1, W]
    ok_f = valid & valid.roll(-1, axis) & (edge < n - 1)                    # [H, W]
    ok_b = valid & valid.roll(1, axis) & (edge > 0)
    fwd = xyz.roll(-1, axis) - xyz
    bwd = xyz - xyz.roll(1, axis)
    w_f, w_b = ok_f.to(xyz.dtype), ok_b.to(xyz.dtype)
    return (fwd * w_f + bwd * w_b) / (w_f + w_b).clamp(min=1.0)


def grid_normals(grid, meta_or_channels=DEFAULT_CHANNELS):
    """Unit normals from grid neighbours: ``[C, H, W]`` -> ``[3, H, W]`` float32, facing the camera.

    Central differences where both neighbours are surface, one-sided where only one is, zero
    where neither is (and on empty pixels)."""
    meta = as_meta(meta_or_channels, grid.shape[-1])
    g, np_in = _to_torch(grid)
    assert g.dim() == 3, f"grid_normals takes one grid [C, H, W], got {list(g.shape)}"
    xyz = g[XYZ].float()                                            # [3, H, W]
    valid = torch.as_tensor(surface_mask(g, meta))                  # [H, W]

    du = neighbour_difference(xyz, valid, axis=-1)   # toward +x (image right)
    dv = neighbour_difference(xyz, valid, axis=-2)   # toward -y (image down)
    n = torch.linalg.cross(dv, du, dim=0)                           # [3, H, W], +z for a frontal plane
    to_cam = torch.tensor(meta.camera.origin, dtype=n.dtype)[:, None, None] - xyz
    if meta.camera.projection == "orthographic":
        to_cam = torch.zeros_like(xyz)
        to_cam[2] = 1.0
    flip = (n * to_cam).sum(0, keepdim=True) < 0
    n = torch.where(flip, -n, n)
    # (n * n).sum(0).sqrt() rather than n.norm(dim=0): torch's vector_norm over a leading
    # dim is ~80x slower on CPU (5 ms vs 0.06 ms at 256^2), most of a .ply export's time.
    n = n / (n * n).sum(0, keepdim=True).sqrt().clamp(min=1e-12)
    n = n * valid[None].float()
    return _back(n.float(), np_in)


def grid_to_points(grid, meta_or_channels, denormalize: bool = True, return_normals: bool = False):
    """Surface points of one grid ``[C, H, W]``.

    Returns ``(points [N, 3] float32, colors [N, 3] float32 in [0, 1])``, plus ``normals
    [N, 3]`` with ``return_normals``. Points are in scan units when ``denormalize`` and a
    GridMeta is given, else in the normalised frame. Order: row-major over surface pixels."""
    meta = as_meta(meta_or_channels, grid.shape[-1])
    g, np_in = _to_torch(grid)
    assert g.dim() == 3, f"grid_to_points takes one grid [C, H, W], got {list(g.shape)}"
    check_grid(g, meta)
    valid = torch.as_tensor(surface_mask(g, meta))
    pts = g[XYZ].permute(1, 2, 0)[valid].float()                     # [N, 3]
    cols = grid_to_rgb(g[RGB].permute(1, 2, 0)[valid].float())       # [N, 3]
    if denormalize and isinstance(meta_or_channels, GridMeta):
        pts = denormalize_xyz(pts, meta)
    out = [_back(pts.contiguous(), np_in), _back(cols.contiguous(), np_in)]
    if return_normals:
        nrm = torch.as_tensor(grid_normals(g, meta)).permute(1, 2, 0)[valid]
        out.append(_back(nrm.contiguous(), np_in))
    return tuple(out)


class GridMesh(NamedTuple):
    vertices: np.ndarray   # [V, 3] float32 (scan units when denormalised)
    faces: np.ndarray      # [F, 3] int64, counter-clockwise seen from the camera
    colors: np.ndarray     # [V, 3] float32 in [0, 1]
    normals: np.ndarray    # [V, 3] float32 unit, toward the camera


def grid_to_mesh(grid, meta_or_channels, denormalize: bool = True, max_stretch: float = 6.0) -> GridMesh:
    """Triangulate one grid ``[C, H, W]`` by pixel connectivity.

    Each 2x2 block of surface pixels gives two triangles (one where only three are surface).
    A triangle is dropped when any edge is longer than ``max_stretch`` pixel footprints at its
    depth: that is a depth jump (e.g. nose over cheek), not a surface. No triangle touches an
    empty pixel. Returns numpy arrays (a mesh is an export artefact, not a training tensor)."""
    meta = as_meta(meta_or_channels, grid.shape[-1])
    g = torch.as_tensor(np.asarray(grid) if not isinstance(grid, torch.Tensor) else grid.detach().cpu())
    check_grid(g, meta)
    valid = torch.as_tensor(surface_mask(g, meta)).numpy()          # [H, W]
    xyz = g[XYZ].float().permute(1, 2, 0).numpy()                   # [H, W, 3]
    H, W = valid.shape
    index = np.full((H, W), -1, dtype=np.int64)
    index[valid] = np.arange(int(valid.sum()))

    a, b = index[:-1, :-1], index[:-1, 1:]    # top-left, top-right
    c, d = index[1:, :-1], index[1:, 1:]      # bottom-left, bottom-right
    candidates = np.concatenate([
        np.stack([a, c, b], -1).reshape(-1, 3),   # upper-left triangle of each quad
        np.stack([b, c, d], -1).reshape(-1, 3),   # lower-right triangle
        np.stack([a, c, d], -1)[b < 0].reshape(-1, 3),   # quads missing only b
        np.stack([a, d, b], -1)[c < 0].reshape(-1, 3),   # quads missing only c
    ])
    faces = candidates[(candidates[:, 0] >= 0) & (candidates[:, 1] >= 0) & (candidates[:, 2] >= 0)]

    flat = xyz[valid]                                                 # [V, 3]
    # Per-component arithmetic: numpy reductions over a length-3 axis are ~4x slower at 256^2.
    p0, p1, p2 = flat[faces[:, 0]], flat[faces[:, 1]], flat[faces[:, 2]]
    sq = lambda e: e[:, 0] * e[:, 0] + e[:, 1] * e[:, 1] + e[:, 2] * e[:, 2]   # noqa: E731
    longest2 = np.maximum(np.maximum(sq(p1 - p0), sq(p2 - p1)), sq(p0 - p2))
    depth = meta.camera.distance - (p0[:, 2] + p1[:, 2] + p2[:, 2]) / 3
    limit = max_stretch * np.asarray(meta.camera.pixel_footprint(depth, meta.resolution))
    faces = faces[longest2 <= limit * limit]
    normals = torch.as_tensor(grid_normals(g, meta)).permute(1, 2, 0).numpy()[valid]
    colors = grid_to_rgb(g[RGB].float().permute(1, 2, 0).numpy()[valid])
    verts = flat
    if denormalize and isinstance(meta_or_channels, GridMeta):
        verts = denormalize_xyz(flat, meta)
    return GridMesh(verts.astype(np.float32), faces.astype(np.int64),
                    colors.astype(np.float32), normals.astype(np.float32))

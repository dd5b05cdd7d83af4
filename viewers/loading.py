"""Read what the viewers show into plain arrays: point clouds, meshes, grids, dataset rows.

Every input becomes an :class:`Item`: points ``[N, 3]``, colours, normals, optional triangles,
a name, and a :class:`Framing` that says where a frontal camera looks from:

- ``.ply`` point cloud or mesh (plyfile; any PLY with ``vertex`` x y z, optional colours,
  normals and a ``face`` element), ``.obj`` mesh (Open3D): in the file's own units; framed on
  the bounding box, camera on the +z side looking along -z (the canonical view of a pcgan
  export; a scan in another orientation shows whatever side faces +z).
- ``.npy`` grid ``[C, H, W]`` or batch ``[N, C, H, W]``: the grid meta comes from a sibling
  ``dataset.json`` when its shape agrees, else the defaults (channels ``x y z r g b [mask]`` by
  C, the default canonical camera). Points stay in the normalised canonical frame and the
  framing is the grid's own canonical camera, so a frontal render at the grid's resolution
  puts each point on its own pixel.
- a dataset directory (``grids.npy`` + ``dataset.json``): its rows, like a batch ``.npy``.

Rows of batches are picked with an index list (``"0-9,15"``, :mod:`pcgan.ranges`); without one
the first :data:`DEFAULT_MAX_ROWS` are taken.

Colour modes (:data:`COLOR_MODES`), computed per view by :func:`point_colors`: ``color`` (as
stored), ``lit`` (colour times Lambert shading), ``shade`` (Lambert shading in grey, the
geometry alone), ``depth`` (viridis over the distance from the camera, near = yellow).
The light sits above-left of the camera and moves with it (a headlight), as in the export
previews.

Numpy, scipy, plyfile and pcgan core only; Open3D is imported inside the functions that build
Open3D geometries or read .obj.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

import numpy as np

from pcgan.errors import PcganError
from pcgan.grid import DEFAULT_CHANNELS, GridMeta, check_grid, grid_to_mesh, grid_to_points

log = logging.getLogger(__name__)

COLOR_MODES = ("color", "lit", "shade", "depth")
GRID_AS = ("points", "mesh")   # how grids are drawn: their surface points, or the grid-connectivity mesh
DEFAULT_MAX_ROWS = 16          # rows shown from a dataset / grid batch when no --index is given
FRAME_FOV_DEG = 25.0           # field of view when framing a file in its own units (the canonical camera's)
FRAME_FILL = 0.85              # the framed bounding box fills this fraction of the picture
LIGHT_DIR_CAMERA = np.array([-0.4, 0.5, 1.0]) / np.linalg.norm([-0.4, 0.5, 1.0])  # camera frame: left, up, toward viewer
AMBIENT = 0.12                 # shading floor, so surfaces turned away from the light stay visible
GRID_SUFFIXES = (".npy",)
PLY_SUFFIXES = (".ply",)
MESH_SUFFIXES = (".obj",)


@dataclass(frozen=True)
class Framing:
    """Where a frontal camera looks: from ``target + (0, 0, distance)`` toward ``target``."""

    target: tuple[float, float, float]   # look-at point, scene units
    distance: float                      # camera to target, scene units
    fov_deg: float                       # full field of view, horizontal = vertical


@dataclass
class Item:
    """One thing to show. Arrays are float32; ``faces`` makes it a mesh."""

    name: str                       # label: file name, "file[row]" for batches
    points: np.ndarray              # [N, 3] scene units (file units, or normalised for grids)
    colors: np.ndarray | None       # [N, 3] in [0, 1]; None when the file has none
    normals: np.ndarray | None      # [N, 3] unit; None until known (estimated on demand)
    framing: Framing
    spacing: float                  # typical distance between neighbouring points, scene units
    faces: np.ndarray | None = None  # [F, 3] int64 triangles (meshes only)

    @property
    def is_mesh(self) -> bool:
        return self.faces is not None and len(self.faces) > 0

    def ensure_normals(self) -> np.ndarray:
        """Normals, estimated from the points (meshes: from the triangles) when absent."""
        if self.normals is None:
            self.normals = mesh_normals(self.points, self.faces) if self.is_mesh else estimate_normals(self.points)
        return self.normals


# ---------------------------------------------------------------------------------------------
# Geometry helpers


def frame_points(points: np.ndarray, fov_deg: float = FRAME_FOV_DEG, fill: float = FRAME_FILL) -> Framing:
    """A frontal framing of ``points [N, 3]``: look at the bounding-box centre along -z from
    just far enough that the box's front face fills ``fill`` of the picture."""
    lo, hi = points.min(axis=0).astype(np.float64), points.max(axis=0).astype(np.float64)
    half = max(hi[0] - lo[0], hi[1] - lo[1], 1e-9) / 2.0
    depth_half = (hi[2] - lo[2]) / 2.0
    distance = half / (fill * math.tan(math.radians(fov_deg) / 2.0)) + depth_half
    return Framing(tuple(float(c) for c in (lo + hi) / 2.0), float(distance), float(fov_deg))


def grid_framing(meta: GridMeta) -> Framing:
    """The grid's canonical camera as a framing. An orthographic camera becomes the perspective
    one at the same distance whose view at the origin is as wide."""
    cam = meta.camera
    if cam.projection == "perspective":
        return Framing((0.0, 0.0, 0.0), float(cam.distance), float(cam.fov_deg))
    fov = 2.0 * math.degrees(math.atan(cam.ortho_half_extent / cam.distance))
    return Framing((0.0, 0.0, 0.0), float(cam.distance), fov)


def point_spacing(points: np.ndarray, sample: int = 2000, seed: int = 0) -> float:
    """How far apart the points of a cloud are, which sets the splat size: the median distance
    from a point (of a sample) to its 4th nearest neighbour. On a regular grid that is the
    grid step; on scattered points it is about 1.1 / sqrt(points per unit area), wide enough
    to close the gaps that the nearest-neighbour distance would leave. 0 for < 2 points."""
    if len(points) < 2:
        return 0.0
    from scipy.spatial import cKDTree

    rng = np.random.default_rng(seed)
    query = points if len(points) <= sample else points[rng.choice(len(points), sample, replace=False)]
    k = min(5, len(points))                      # self + 4 neighbours
    dist, _ = cKDTree(points, balanced_tree=False, compact_nodes=False).query(query, k=k)   # 3x faster build
    return float(np.median(dist[:, -1]))


def estimate_normals(points: np.ndarray, k: int = 12) -> np.ndarray:
    """Unit normals ``[N, 3]`` float32 by PCA of each point's ``k`` nearest neighbours, turned
    toward +z (the frontal camera); per view they are turned toward the eye again."""
    n = len(points)
    if n < 3:
        return np.tile(np.array([0, 0, 1], np.float32), (n, 1))
    from scipy.spatial import cKDTree

    k = min(k, n)
    _, nb = cKDTree(points).query(points, k=k)                      # [N, k]
    q = points[nb].astype(np.float64)                                # [N, k, 3]
    q -= q.mean(axis=1, keepdims=True)
    cov = np.einsum("nki,nkj->nij", q, q)                            # [N, 3, 3]
    _, vecs = np.linalg.eigh(cov)                                    # ascending eigenvalues
    normals = vecs[:, :, 0]                                          # [N, 3] smallest-variance axis
    normals[normals[:, 2] < 0] *= -1
    return normals.astype(np.float32)


def mesh_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Area-weighted vertex normals ``[V, 3]`` float32 of a triangle mesh."""
    v = vertices.astype(np.float64)
    tri = v[faces]                                                   # [F, 3, 3]
    fn = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])      # [F, 3], length = 2 * area
    out = np.zeros_like(v)
    for corner in range(3):
        np.add.at(out, faces[:, corner], fn)
    norm = np.linalg.norm(out, axis=1, keepdims=True)
    return np.where(norm > 0, out / np.maximum(norm, 1e-300), 0.0).astype(np.float32)


def _mesh_spacing(vertices: np.ndarray, faces: np.ndarray) -> float:
    e = vertices[faces[:, 1]] - vertices[faces[:, 0]]
    return float(np.median(np.linalg.norm(e, axis=1))) if len(e) else 0.0


# ---------------------------------------------------------------------------------------------
# Colours per view


def view_basis(eye: np.ndarray, target: np.ndarray, up=(0.0, 1.0, 0.0)) -> np.ndarray:
    """Camera axes as rows ``[3, 3]``: right, up, back (toward the eye), for a camera at ``eye``
    looking at ``target``."""
    back = np.asarray(eye, np.float64) - np.asarray(target, np.float64)
    back /= np.linalg.norm(back)
    right = np.cross(np.asarray(up, np.float64), back)
    if np.linalg.norm(right) < 1e-9:        # looking straight up or down: any right will do
        right = np.cross([0.0, 0.0, 1.0], back)
    right /= np.linalg.norm(right)
    return np.stack([right, np.cross(back, right), back])


def depth_colors(depth: np.ndarray) -> np.ndarray:
    """Distances ``[N]`` -> viridis colours ``[N, 3]`` in [0, 1] over their range, near = yellow."""
    from pcgan.export import depth_colormap

    if depth.size == 0:
        return np.zeros((0, 3), np.float32)
    lo, hi = float(depth.min()), float(depth.max())
    t = (hi - depth) / (hi - lo) if hi > lo else np.full_like(depth, 0.5)
    return depth_colormap(t).astype(np.float32) / 255.0


def point_colors(item: Item, mode: str, eye, target) -> np.ndarray:
    """Per-point colours ``[N, 3]`` float32 in [0, 1] of ``item`` seen from ``eye``.

    ``color``: as stored (an item without colours is shaded instead). ``lit``: colour times
    Lambert shading. ``shade``: Lambert shading in grey. ``depth``: viridis over the distance
    along the viewing axis, near = yellow. Shading uses a headlight above-left of the camera;
    normals are turned toward the eye (two-sided), so a cloud's normal sign does not matter."""
    if mode not in COLOR_MODES:
        raise PcganError(f"colour mode {mode!r}: choose one of {', '.join(COLOR_MODES)}")
    if mode in ("color", "lit") and item.colors is None:
        mode = "shade"
    if mode == "color":
        return np.asarray(item.colors, np.float32)
    basis = view_basis(eye, target)
    pts = item.points.astype(np.float64)
    if mode == "depth":
        return depth_colors((np.asarray(eye, np.float64) - pts) @ basis[2])
    n = item.ensure_normals().astype(np.float64)
    to_eye = np.asarray(eye, np.float64) - pts
    flip = np.einsum("ni,ni->n", n, to_eye) < 0
    n = np.where(flip[:, None], -n, n)
    light = LIGHT_DIR_CAMERA @ basis                                 # camera frame -> world
    shade = AMBIENT + (1.0 - AMBIENT) * np.clip(n @ light, 0.0, 1.0)
    shade = np.where(np.abs(n).sum(axis=1) > 0, shade, 1.0)          # no normal (zero vector): unshaded
    if mode == "shade":
        return np.repeat(shade[:, None], 3, axis=1).astype(np.float32)
    return (np.asarray(item.colors, np.float64) * shade[:, None]).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# Files -> items


def _ply_item(path: Path) -> Item:
    from plyfile import PlyData, PlyParseError

    try:
        # Triangle lists read as one numpy block when every face has 3 corners; else per face.
        try:
            ply = PlyData.read(str(path), known_list_len={"face": {"vertex_indices": 3, "vertex_index": 3}})
        except Exception:   # noqa: BLE001 - plyfile raises various errors on a wrong length guess
            ply = PlyData.read(str(path))
    except (OSError, PlyParseError, ValueError) as exc:
        raise PcganError(f"{path}: cannot read as PLY ({exc})") from None
    if "vertex" not in ply:
        raise PcganError(f"{path}: PLY has no 'vertex' element")
    v = ply["vertex"].data
    names = set(v.dtype.names or ())
    if not {"x", "y", "z"} <= names:
        raise PcganError(f"{path}: PLY vertices have no x y z (properties: {', '.join(sorted(names))})")
    points = np.stack([np.asarray(v[k], np.float32) for k in "xyz"], axis=1)
    if len(points) == 0:
        raise PcganError(f"{path}: PLY has no vertices")
    colors = None
    for keys in (("red", "green", "blue"), ("r", "g", "b"), ("diffuse_red", "diffuse_green", "diffuse_blue")):
        if set(keys) <= names:
            c = np.stack([np.asarray(v[k]) for k in keys], axis=1)
            colors = c.astype(np.float32) / 255.0 if c.dtype == np.uint8 else np.clip(c.astype(np.float32), 0, 1)
            break
    normals = None
    if {"nx", "ny", "nz"} <= names:
        normals = np.stack([np.asarray(v[k], np.float32) for k in ("nx", "ny", "nz")], axis=1)
    faces = None
    if "face" in ply and ply["face"].count:
        fdata = ply["face"].data
        key = next((k for k in ("vertex_indices", "vertex_index") if k in (fdata.dtype.names or ())), None)
        if key is not None:
            faces = _triangulate(fdata[key])
            if len(faces) and (faces.min() < 0 or faces.max() >= len(points)):
                raise PcganError(f"{path}: faces index vertices outside 0..{len(points) - 1}")
    if not np.isfinite(points).all():
        keep = np.isfinite(points).all(axis=1)
        if faces is not None:
            raise PcganError(f"{path}: {int((~keep).sum())} vertices are NaN/Inf")
        log.warning("%s: dropping %d NaN/Inf points", path, int((~keep).sum()))
        points = points[keep]
        colors = colors[keep] if colors is not None else None
        normals = normals[keep] if normals is not None else None
    return _file_item(path.name, points, colors, normals, faces)


def _triangulate(lists) -> np.ndarray:
    """PLY face lists (a [F, 3] array, or an object array of per-face index arrays) ->
    [F', 3] int64 triangles (polygons fanned)."""
    arr = np.asarray(lists)
    if arr.ndim == 2:
        return arr.astype(np.int64)
    tris = []
    for poly in arr:
        poly = np.asarray(poly, np.int64)
        tris.extend((poly[0], poly[i], poly[i + 1]) for i in range(1, len(poly) - 1))
    return np.asarray(tris, np.int64).reshape(-1, 3)


def _obj_item(path: Path) -> Item:
    try:
        import open3d as o3d
    except (ImportError, OSError) as exc:
        raise PcganError(f"{path}: reading .obj needs Open3D ({exc})") from None
    mesh = o3d.io.read_triangle_mesh(str(path), enable_post_processing=False)
    v = np.asarray(mesh.vertices, np.float32)
    f = np.asarray(mesh.triangles, np.int64)
    if len(v) == 0:
        raise PcganError(f"{path}: cannot read as a mesh, or it has no vertices")
    colors = np.asarray(mesh.vertex_colors, np.float32) if mesh.has_vertex_colors() else None
    textures = [np.asarray(t) for t in mesh.textures]
    if colors is None and mesh.has_triangle_uvs() and any(t.size for t in textures):
        # Per-vertex colour from the texture at each corner's UV (last corner wins): enough to
        # look at; Open3D flips OBJ images on load, so row = v * height.
        tex = next(t for t in textures if t.size)[..., :3].astype(np.float32) / 255.0
        uv = np.asarray(mesh.triangle_uvs).reshape(-1, 3, 2)
        h, w = tex.shape[:2]
        cols = np.clip((uv[..., 0] * w).astype(int), 0, w - 1)
        rows = np.clip((uv[..., 1] * h).astype(int), 0, h - 1)
        colors = np.zeros((len(v), 3), np.float32)
        colors[f.reshape(-1)] = tex[rows.reshape(-1), cols.reshape(-1)]
    normals = np.asarray(mesh.vertex_normals, np.float32) if mesh.has_vertex_normals() else None
    return _file_item(path.name, v, colors, normals, f)


def _file_item(name: str, points, colors, normals, faces) -> Item:
    if faces is not None and len(faces):
        spacing = _mesh_spacing(points, faces)
    else:
        faces, spacing = None, point_spacing(points)
    return Item(name, points, colors, normals, frame_points(points), spacing, faces)


def default_meta(channels: int, resolution: int) -> GridMeta:
    """Grid meta for a bare grid: default camera, channels by count (7 with mask, 6 without)."""
    names = {len(DEFAULT_CHANNELS): DEFAULT_CHANNELS, len(DEFAULT_CHANNELS) - 1: DEFAULT_CHANNELS[:-1]}
    if channels not in names:
        raise PcganError(f"grid has {channels} channels; expected 7 (x y z r g b mask) or 6 (x y z r g b)")
    return GridMeta(resolution=resolution, channels=names[channels])


def read_meta(path: str | Path) -> GridMeta:
    """GridMeta from a dataset.json (its ``grid`` entry), a dataset directory, or a bare grid
    meta JSON (``GridMeta.to_dict()``)."""
    path = Path(path)
    if path.is_dir():
        path = path / "dataset.json"
    try:
        d = json.loads(path.read_text())
        return GridMeta.from_dict(d["grid"] if "grid" in d else d)
    except OSError as exc:
        raise PcganError(f"{path}: cannot read grid meta ({exc.strerror or exc})") from None
    except (json.JSONDecodeError, UnicodeDecodeError, TypeError, AttributeError) as exc:
        raise PcganError(f"{path}: not a dataset.json / grid meta JSON ({exc})") from None


def grid_meta_for(path: Path, shape: Sequence[int]) -> GridMeta:
    """The meta of a grid file of ``shape [..., C, H, W]``: a sibling dataset.json when it
    agrees, else :func:`default_meta`."""
    c, h, w = shape[-3:]
    if h != w:
        raise PcganError(f"{path}: grid is {h}x{w}; pcgan grids are square [C, H, H]")
    info_path = path.parent / "dataset.json"
    if info_path.is_file():
        try:
            meta = GridMeta.from_dict(json.loads(info_path.read_text())["grid"])
            if (meta.num_channels, meta.resolution) == (c, h):
                return meta
            log.warning("%s: %s describes %dx%d^2 grids, this file holds %dx%d^2; using default grid meta",
                        path, info_path.name, meta.num_channels, meta.resolution, c, h)
        except (json.JSONDecodeError, KeyError, TypeError, PcganError) as exc:
            log.warning("%s: ignoring unreadable %s (%s); using default grid meta", path, info_path, exc)
    try:
        return default_meta(c, h)
    except PcganError as exc:
        raise PcganError(f"{path}: {exc}") from None


def grid_item(grid, meta: GridMeta, name: str, as_mesh: bool = False) -> Item:
    """An item from one grid ``[C, H, W]``: its surface points in the normalised canonical
    frame, colours, grid-neighbour normals and the canonical camera as framing. ``as_mesh``:
    add the grid-connectivity triangles (:func:`pcgan.grid.grid_to_mesh`), which close the gaps
    that turned views show between points sampled at grazing angles."""
    g = np.asarray(grid, dtype=np.float32)
    check_grid(g, meta, name)
    if g.ndim != 3:
        raise PcganError(f"{name}: expected one grid [C, H, W], got shape {list(g.shape)}")
    g = g if g.flags.writeable else g.copy()
    faces = None
    if as_mesh:
        mesh = grid_to_mesh(g, meta, denormalize=False)
        pts, cols, nrm, faces = mesh.vertices, mesh.colors, mesh.normals, mesh.faces
    else:
        pts, cols, nrm = grid_to_points(g, meta, denormalize=False, return_normals=True)
    if len(pts) == 0:
        raise PcganError(f"{name}: grid has no surface pixels (mask all empty); nothing to show")
    framing = grid_framing(meta)
    spacing = float(np.asarray(meta.camera.pixel_footprint(framing.distance, meta.resolution)))
    return Item(name, pts, cols, nrm, framing, spacing, faces if faces is not None and len(faces) else None)


def _rows(n: int, index: str | None, source: Path) -> list[int]:
    from pcgan.ranges import parse_index_list

    if index is not None:
        try:
            return parse_index_list(index, "index", limit=n)
        except PcganError as exc:
            raise PcganError(f"{source}: {exc}") from None
    if n > DEFAULT_MAX_ROWS:
        log.info("%s: showing rows 0-%d of %d; pick others with --index", source, DEFAULT_MAX_ROWS - 1, n)
    return list(range(min(n, DEFAULT_MAX_ROWS)))


def _grid_rows(grids: np.ndarray, meta: GridMeta, index: str | None, source: Path, label: str,
               as_mesh: bool) -> list[Item]:
    if grids.ndim == 3:
        return [grid_item(grids, meta, label, as_mesh)]
    if grids.ndim != 4:
        raise PcganError(f"{source}: array has shape {list(grids.shape)}; expected a grid [C, H, W] or grids [N, C, H, W]")
    return [grid_item(grids[row], meta, f"{label}[{row}]", as_mesh) for row in _rows(grids.shape[0], index, source)]


def load_path(path: str | Path, index: str | None = None, meta: GridMeta | None = None,
              grid_as: str = "points") -> list[Item]:
    """Items from one path (.ply, .obj, .npy, dataset dir). ``meta`` overrides the grid meta of
    a .npy (default: sibling dataset.json, else defaults); ``grid_as`` ("points" or "mesh")
    says how grids are drawn. Raises PcganError naming the file."""
    if grid_as not in GRID_AS:
        raise PcganError(f"grids as {grid_as!r}: use one of {', '.join(GRID_AS)}")
    as_mesh = grid_as == "mesh"
    path = Path(path)
    if path.is_dir():
        from pcgan.dataset import load_dataset

        ds = load_dataset(path)
        return _grid_rows(ds.grids, ds.meta, index, path, path.name, as_mesh)
    if not path.exists():
        raise PcganError(f"{path} does not exist")
    suffix = path.suffix.lower()
    if suffix in PLY_SUFFIXES:
        return [_ply_item(path)]
    if suffix in MESH_SUFFIXES:
        return [_obj_item(path)]
    if suffix in GRID_SUFFIXES:
        try:
            grids = np.load(path, mmap_mode="r")
        except (ValueError, OSError, EOFError) as exc:
            raise PcganError(f"{path}: cannot read as .npy ({exc})") from None
        if grids.ndim not in (3, 4):
            raise PcganError(f"{path}: array has shape {list(grids.shape)}; expected a grid [C, H, W] or grids [N, C, H, W]")
        if meta is not None:
            check_grid(grids, meta, str(path))
        return _grid_rows(grids, meta or grid_meta_for(path, grids.shape), index, path, path.stem, as_mesh)
    raise PcganError(f"{path}: cannot show {suffix or 'a file without suffix'} files; "
                     f"use .ply (point cloud or mesh), .obj, .npy grids or a dataset directory")


def load_items(paths: Sequence[str | Path], index: str | None = None, meta: GridMeta | None = None,
               grid_as: str = "points") -> tuple[list[Item], list[tuple[str, str]]]:
    """Items from many paths, in order. A path that fails is skipped and reported in the
    second list as ``(path, message)``; raises PcganError when none gives an item."""
    items: list[Item] = []
    failed: list[tuple[str, str]] = []
    for p in paths:
        try:
            items.extend(load_path(p, index, meta, grid_as))
        except PcganError as exc:
            failed.append((str(p), str(exc)))
    if not items:
        if failed and len(failed) == 1:
            raise PcganError(failed[0][1])
        detail = "; ".join(msg for _, msg in failed[:3]) or "no input files given"
        raise PcganError(f"nothing to show: {detail}")
    return items, failed


def translated(item: Item, offset) -> Item:
    """A copy of ``item`` moved by ``offset [3]`` (framing moved with it)."""
    off = np.asarray(offset, np.float32)
    f = item.framing
    framing = replace(f, target=tuple(float(a + b) for a, b in zip(f.target, off)))
    return replace(item, points=item.points + off, framing=framing)


# ---------------------------------------------------------------------------------------------
# Open3D geometries


def to_open3d(item: Item, colors: np.ndarray | None = None):
    """An Open3D PointCloud or TriangleMesh (imported here) of ``item`` with ``colors [N, 3]``
    (default: the stored colours, or grey)."""
    import open3d as o3d

    cols = colors if colors is not None else item.colors
    if item.is_mesh:
        geom = o3d.geometry.TriangleMesh(o3d.utility.Vector3dVector(item.points.astype(np.float64)),
                                         o3d.utility.Vector3iVector(item.faces.astype(np.int32)))
        if cols is not None:
            geom.vertex_colors = o3d.utility.Vector3dVector(np.asarray(cols, np.float64))
        if item.normals is not None:
            geom.vertex_normals = o3d.utility.Vector3dVector(item.normals.astype(np.float64))
        return geom
    geom = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(item.points.astype(np.float64)))
    if cols is not None:
        geom.colors = o3d.utility.Vector3dVector(np.asarray(cols, np.float64))
    if item.normals is not None:
        geom.normals = o3d.utility.Vector3dVector(item.normals.astype(np.float64))
    return geom

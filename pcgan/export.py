"""Export grids as files people open: .ply point clouds, .ply/.obj meshes, .npy grids, .png previews.

One grid ``[C, H, W]`` becomes, per requested format (file name = ``out_stem`` + suffix):

    ply    STEM.ply        point cloud: surface pixels only, binary little-endian, float32
                           ``x y z`` in the scans' units, uchar ``red green blue``, float32
                           ``nx ny nz`` from grid neighbours (toward the camera)
    mesh   STEM_mesh.ply   mesh from grid connectivity, vertex colours + normals
    obj    STEM.obj        the same mesh as Wavefront OBJ, colours as ``v x y z r g b``
    npy    STEM.npy        the raw grid
    png    STEM.png        preview: RGB | depth colour map | normal shading, side by side

Everything written is a pure function of the grid and its GridMeta: no timestamps, no
comments that vary, so the same grid always gives byte-identical files. Every file goes to a
temporary name first and all of one grid's files are renamed into place only once all of them
are written: an error (or a full disk) leaves nothing half-written.

Frames: ``canonical`` is the dataset's canonical frame in the scans' units (the grid's
normalisation undone); ``source`` further applies the inverse of the source file's
``to_canonical`` (``dataset.json``), so a dataset grid lands on its scan in the scan's own
frame and units.

Core module: numpy, torch, plyfile and PIL only; trimesh (.obj meshes) and Open3D (outlier
removal, voxel downsampling) are imported inside the functions that need them.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, NamedTuple, Sequence

import numpy as np
import torch
from PIL import Image
from plyfile import PlyData, PlyElement, PlyParseError

from pcgan.errors import PcganError
from pcgan.fileio import atomic_path, ensure_writable_dir
from pcgan.grid import (RGB, XYZ, GridMesh, GridMeta, check_grid, grid_normals, grid_to_mesh,
                        grid_to_points, grid_to_rgb, surface_mask)

log = logging.getLogger(__name__)

# format name -> file name suffix after the stem. Order is the order files are written.
FORMATS: dict[str, str] = {
    "ply": ".ply",
    "mesh": "_mesh.ply",
    "obj": ".obj",
    "npy": ".npy",
    "png": ".png",
}
DEFAULT_FORMATS = ("ply", "mesh")
FRAMES = ("canonical", "source")

PNG_COMPRESS_LEVEL = 1            # zlib level: 1 is ~3.5x faster than PIL's default 6, files ~35% larger
EMPTY_PIXEL_RGB = (24, 24, 24)    # preview colour of pixels with no surface, in all three panels
LIGHT_DIR = np.array([-0.4, 0.5, 1.0]) / np.linalg.norm([-0.4, 0.5, 1.0])  # canonical frame, from upper left front
AMBIENT = 0.12                    # shading floor, so faces turned away from the light stay visible

# Viridis (perceptually uniform, colour-blind safe; public domain, van der Walt & Smith 2015)
# sampled at 11 evenly spaced stops and interpolated linearly: far = dark purple, near = yellow.
_VIRIDIS = np.array([
    [68, 1, 84], [72, 36, 117], [65, 68, 135], [53, 95, 141], [42, 120, 142], [33, 145, 140],
    [34, 168, 132], [68, 191, 112], [122, 209, 81], [189, 223, 38], [253, 231, 37],
], dtype=np.float64)
_VIRIDIS_LUT = np.stack([np.interp(np.linspace(0, len(_VIRIDIS) - 1, 256), np.arange(len(_VIRIDIS)), _VIRIDIS[:, k])
                         for k in range(3)], axis=1).round().astype(np.uint8)   # [256, 3]


# ---------------------------------------------------------------------------------------------
# Small helpers


def parse_formats(text: str | Iterable[str]) -> tuple[str, ...]:
    """``"ply,mesh"`` (or an iterable of names) -> validated format names in FORMATS order."""
    names = [t.strip() for t in (text.split(",") if isinstance(text, str) else text)]
    names = [n for n in names if n]
    bad = [n for n in names if n not in FORMATS]
    if bad or not names:
        raise PcganError(f"unknown export format {', '.join(map(repr, bad)) or '(none given)'}: "
                         f"choose from {', '.join(FORMATS)} (comma separated, e.g. 'ply,mesh')")
    return tuple(f for f in FORMATS if f in names)


def output_paths(out_stem: str | Path, formats: Iterable[str]) -> dict[str, Path]:
    """Where each format of ``out_stem`` is written: ``{"ply": STEM.ply, "mesh": STEM_mesh.ply, ...}``."""
    out_stem = Path(out_stem)
    return {f: out_stem.with_name(out_stem.name + FORMATS[f]) for f in parse_formats(formats)}


def _grid_array(grid) -> np.ndarray:
    """A numpy or torch grid (any float dtype, memmap fine) -> float32 numpy ``[C, H, W]``."""
    if isinstance(grid, torch.Tensor):
        grid = grid.detach().to("cpu", torch.float32).numpy()
    out = np.asarray(grid, dtype=np.float32)
    # A read-only memmap row would reach torch.from_numpy inside grid.py, which warns.
    return out if out.flags.writeable else out.copy()


def _colors_u8(colors: np.ndarray) -> np.ndarray:
    """Colour in [0, 1] ``[N, 3]`` -> uchar ``round(c * 255)``, clipped."""
    return np.rint(np.clip(colors, 0.0, 1.0) * 255.0).astype(np.uint8)


def _check_points(points, colors, normals) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    points = np.asarray(points, dtype=np.float32)
    colors = np.asarray(colors, dtype=np.float32)
    if points.ndim != 2 or points.shape[1] != 3:
        raise PcganError(f"points have shape {list(points.shape)}, expected [N, 3]")
    n = points.shape[0]
    if colors.shape != (n, 3):
        raise PcganError(f"colors have shape {list(colors.shape)}, expected [{n}, 3] to match the points")
    if normals is not None:
        normals = np.asarray(normals, dtype=np.float32)
        if normals.shape != (n, 3):
            raise PcganError(f"normals have shape {list(normals.shape)}, expected [{n}, 3] to match the points")
    return points, colors, normals


def check_transform(to_canonical, name: str = "to_canonical") -> np.ndarray:
    """Validate a 4x4 affine map (scan frame -> canonical frame); returns it as float64."""
    if to_canonical is None:
        raise PcganError(f"--frame source needs the source scan's {name} transform (from the "
                         f"dataset's dataset.json 'files' records); none is known for this grid")
    t = np.asarray(to_canonical, dtype=np.float64)
    if t.shape != (4, 4) or not np.isfinite(t).all():
        raise PcganError(f"{name} must be a finite 4x4 matrix, got shape {list(t.shape)}")
    if not np.allclose(t[3], [0, 0, 0, 1]):
        raise PcganError(f"{name} last row is {t[3].tolist()}, expected [0, 0, 0, 1] (an affine map)")
    if abs(np.linalg.det(t[:3, :3])) < 1e-12:
        raise PcganError(f"{name} is singular (its 3x3 part has determinant 0): cannot invert it")
    return t


def to_source_frame(points: np.ndarray, normals: np.ndarray | None, to_canonical) -> tuple[np.ndarray, np.ndarray | None]:
    """Map canonical-frame points ``[N, 3]`` (scan units) and normals back to the source frame.

    ``to_canonical`` is the 4x4 map ``p_canonical = A @ p_source + t``; points get its
    inverse, normals the inverse-transpose of the inverse (that is ``A.T``), renormalised.
    Computed in float64, returned float32."""
    t = check_transform(to_canonical)
    a, b = t[:3, :3], t[:3, 3]
    pts = np.linalg.solve(a, (np.asarray(points, np.float64) - b).T).T     # [N, 3]
    out_n = None
    if normals is not None:
        n = np.asarray(normals, np.float64) @ a                              # rows: (A.T @ n).T
        norm = np.linalg.norm(n, axis=1, keepdims=True)
        out_n = np.where(norm > 0, n / np.maximum(norm, 1e-300), 0.0).astype(np.float32)
    return pts.astype(np.float32), out_n


# ---------------------------------------------------------------------------------------------
# Point clouds


class PlyPoints(NamedTuple):
    points: np.ndarray               # [N, 3] float32
    colors: np.ndarray | None        # [N, 3] float32 in [0, 1] (uchar / 255), None when absent
    normals: np.ndarray | None       # [N, 3] float32, None when absent


def _vertex_array(points: np.ndarray, colors: np.ndarray, normals: np.ndarray | None) -> np.ndarray:
    """Structured ``[N]`` PLY vertex records: float32 x y z, uchar red green blue, float32 nx ny nz."""
    fields = [("x", "<f4"), ("y", "<f4"), ("z", "<f4"),
              ("red", "u1"), ("green", "u1"), ("blue", "u1")]
    if normals is not None:
        fields += [("nx", "<f4"), ("ny", "<f4"), ("nz", "<f4")]
    vertex = np.empty(points.shape[0], dtype=fields)
    for i, name in enumerate("xyz"):
        vertex[name] = points[:, i]
    c8 = _colors_u8(colors)
    for i, name in enumerate(("red", "green", "blue")):
        vertex[name] = c8[:, i]
    if normals is not None:
        for i, name in enumerate(("nx", "ny", "nz")):
            vertex[name] = normals[:, i]
    return vertex


def _point_ply(points: np.ndarray, colors: np.ndarray, normals: np.ndarray | None) -> PlyData:
    vertex = _vertex_array(points, colors, normals)
    return PlyData([PlyElement.describe(vertex, "vertex")], text=False, byte_order="<")


def write_point_ply(path: str | Path, points, colors, normals=None) -> Path:
    """Write a coloured point cloud as binary little-endian .ply, atomically.

    points: [N, 3] float (stored float32), colors: [N, 3] in [0, 1] (stored uchar
    ``round(c * 255)``), normals: [N, 3] or None (stored float32 ``nx ny nz``). The header has
    no comments, so equal inputs give byte-identical files. Returns ``path``."""
    points, colors, normals = _check_points(points, colors, normals)
    path = Path(path)
    with atomic_path(path) as tmp:
        _point_ply(points, colors, normals).write(str(tmp))
    return path


def read_point_ply(path: str | Path) -> PlyPoints:
    """Read a point cloud .ply (any PLY with a ``vertex`` element holding x y z).

    Returns float32 points, colours in [0, 1] (uchar / 255, or floats as stored) and normals,
    the last two None when the file has none."""
    path = Path(path)
    try:
        ply = PlyData.read(str(path))
    except (OSError, PlyParseError, ValueError) as exc:
        raise PcganError(f"{path}: cannot read as PLY ({exc})") from None
    if "vertex" not in ply:
        raise PcganError(f"{path}: PLY has no 'vertex' element")
    v = ply["vertex"].data
    names = v.dtype.names or ()
    if not {"x", "y", "z"} <= set(names):
        raise PcganError(f"{path}: PLY vertices have no x y z (properties: {', '.join(names)})")

    def stack(keys):
        return np.stack([np.asarray(v[k]) for k in keys], axis=1)

    points = stack("xyz").astype(np.float32)
    colors = None
    if {"red", "green", "blue"} <= set(names):
        c = stack(("red", "green", "blue"))
        colors = (c.astype(np.float32) / 255.0) if c.dtype == np.uint8 else c.astype(np.float32)
    normals = stack(("nx", "ny", "nz")).astype(np.float32) if {"nx", "ny", "nz"} <= set(names) else None
    return PlyPoints(points, colors, normals)


def filter_points(points, colors, normals=None, outlier_removal: tuple[int, float] | None = None,
                  voxel_size: float | None = None):
    """Optional clean-up of a point cloud with Open3D (imported here, not at module load).

    outlier_removal: (nb_neighbors, std_ratio) for statistical outlier removal: a point goes
        when its mean distance to its nb_neighbors nearest points exceeds the cloud's mean by
        more than std_ratio standard deviations. Kept points keep their exact values and order.
    voxel_size: grid size in the points' units; each occupied voxel becomes the mean of its
        points (colours averaged, normals averaged and renormalised). Output sorted by
        position so the result does not depend on Open3D's hash-map order.
    Returns (points [M, 3] float32, colors [M, 3] float32, normals [M, 3] float32 or None)."""
    points, colors, normals = _check_points(points, colors, normals)
    if outlier_removal is None and voxel_size is None:
        return points, colors, normals
    try:
        import open3d as o3d
    except ImportError:
        raise PcganError("outlier removal and voxel downsampling need Open3D: pip install open3d") from None

    def cloud(p, c, n):
        pcd = o3d.geometry.PointCloud()
        pcd.points = o3d.utility.Vector3dVector(p.astype(np.float64))
        pcd.colors = o3d.utility.Vector3dVector(c.astype(np.float64))
        if n is not None:
            pcd.normals = o3d.utility.Vector3dVector(n.astype(np.float64))
        return pcd

    if outlier_removal is not None:
        nb, std = outlier_removal
        if int(nb) < 1 or not float(std) > 0:
            raise PcganError(f"outlier removal NB,STD = {nb},{std}: NB must be >= 1 and STD > 0 (e.g. 20,2.0)")
        if len(points) > int(nb):
            _, keep = cloud(points, colors, None).remove_statistical_outlier(int(nb), float(std))
            keep = np.sort(np.asarray(keep, dtype=np.int64))
            points, colors = points[keep], colors[keep]
            normals = normals[keep] if normals is not None else None
    if voxel_size is not None:
        if not float(voxel_size) > 0:
            raise PcganError(f"voxel size {voxel_size}: must be positive (in the output's units, e.g. mm)")
        down = cloud(points, colors, normals).voxel_down_sample(float(voxel_size))
        p = np.asarray(down.points)
        order = np.lexsort((p[:, 2], p[:, 1], p[:, 0]))
        points = p[order].astype(np.float32)
        colors = np.asarray(down.colors)[order].astype(np.float32)
        if normals is not None:
            n = np.asarray(down.normals)[order]
            norm = np.linalg.norm(n, axis=1, keepdims=True)
            normals = np.where(norm > 0, n / np.maximum(norm, 1e-300), 0.0).astype(np.float32)
    return points, colors, normals


# ---------------------------------------------------------------------------------------------
# Meshes


def _mesh_ply_bytes(mesh: GridMesh) -> bytes:
    """A binary little-endian PLY of a triangle mesh: the point-cloud vertex layout plus
    ``element face`` with ``property list uchar int vertex_indices``.

    Written directly rather than through plyfile (which serialises list properties one face at a
    time in Python: ~0.3 s for a 256^2 grid) or trimesh (whose array hashing and RGBA colours
    cost more than the write itself); the layout is the one plyfile, Open3D, trimesh and MeshLab
    all read."""
    vertex = _vertex_array(*_check_points(mesh.vertices, mesh.colors, mesh.normals))
    faces = np.asarray(mesh.faces)
    assert faces.ndim == 2 and faces.shape[1] == 3, f"faces {faces.shape}, expected [F, 3]"
    face = np.empty(len(faces), dtype=[("n", "u1"), ("v", "<i4", (3,))])
    face["n"] = 3
    face["v"] = faces
    props = "".join(f"property {'float' if vertex.dtype[k].kind == 'f' else 'uchar'} {k}\n"
                    for k in vertex.dtype.names)
    header = ("ply\nformat binary_little_endian 1.0\n"
              f"element vertex {len(vertex)}\n{props}"
              f"element face {len(face)}\nproperty list uchar int vertex_indices\nend_header\n")
    return header.encode("ascii") + vertex.tobytes() + face.tobytes()


def _write_mesh_to(path: Path, mesh: GridMesh, suffix: str) -> None:
    if suffix == ".ply":
        path.write_bytes(_mesh_ply_bytes(mesh))
        return
    import trimesh  # lazy: OBJ only

    tm = trimesh.Trimesh(vertices=np.asarray(mesh.vertices, np.float64), faces=mesh.faces,
                         vertex_colors=_colors_u8(mesh.colors), vertex_normals=mesh.normals,
                         process=False, validate=False)
    path.write_text(trimesh.exchange.obj.export_obj(tm, include_normals=True, include_color=True,
                                                    include_texture=False, digits=8))


def write_mesh(path: str | Path, mesh: GridMesh) -> Path:
    """Write a GridMesh atomically; the format follows the suffix.

    ``.ply``: binary little-endian, vertices as in :func:`write_point_ply` (float32 x y z,
    uchar red green blue, float32 nx ny nz) and int32 triangles; read by Open3D, trimesh and
    MeshLab with colours and normals. ``.obj`` (via trimesh, imported here): text,
    ``v x y z r g b`` (colours in [0, 1]), ``vn`` normals, ``f a//a b//b c//c``.
    Faces are counter-clockwise seen from the camera. Returns ``path``."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".ply", ".obj"):
        raise PcganError(f"{path}: mesh format from the suffix must be .ply or .obj, not {path.suffix or '(none)'}")
    with atomic_path(path) as tmp:
        _write_mesh_to(tmp, mesh, suffix)
    return path


def mesh_to_source_frame(mesh: GridMesh, to_canonical) -> GridMesh:
    """A canonical-frame mesh (scan units) mapped back onto its source scan's frame.

    A mirroring transform (negative determinant) also reverses the face winding, so faces stay
    counter-clockwise seen from the (mapped) camera and agree with the normals."""
    verts, normals = to_source_frame(mesh.vertices, mesh.normals, to_canonical)
    faces = mesh.faces
    if np.linalg.det(np.asarray(to_canonical, np.float64)[:3, :3]) < 0:
        faces = faces[:, ::-1].copy()
    return GridMesh(verts, faces, mesh.colors, normals)


# ---------------------------------------------------------------------------------------------
# Previews


def depth_colormap(t: np.ndarray) -> np.ndarray:
    """Values in [0, 1] (any shape) -> uint8 RGB ``[..., 3]`` on the viridis scale (256 levels)."""
    return _VIRIDIS_LUT[np.rint(np.clip(t, 0.0, 1.0) * 255.0).astype(np.intp)]


def preview_image(grid, meta: GridMeta) -> np.ndarray:
    """Three panels side by side for one grid ``[C, H, W]``: ``uint8 [H, 3W, 3]``.

    1. RGB: the surface colour as stored (``round(c * 255)``, the same bytes as the .ply), so
       the picture shows what the point cloud will show.
    2. Depth: viridis over this grid's surface depth range, near = yellow, far = purple.
    3. Shading: Lambert with a fixed light from the upper left front on the grid normals,
       i.e. the geometry without its colour.
    Pixels with no surface are dark grey in all three."""
    g = _grid_array(grid)
    check_grid(g, meta)
    if g.ndim != 3:
        raise PcganError(f"preview_image takes one grid [C, H, W], got shape {list(g.shape)}")
    valid = surface_mask(g, meta)[..., None]                       # [H, W, 1] bool
    empty = np.array(EMPTY_PIXEL_RGB, dtype=np.uint8)

    rgb = _colors_u8(grid_to_rgb(g[RGB]).transpose(1, 2, 0))       # [H, W, 3]

    z = g[XYZ.start + 2]                                           # [H, W]; larger z = nearer the camera
    zs = z[valid[..., 0]]
    lo, hi = (float(zs.min()), float(zs.max())) if zs.size else (0.0, 0.0)
    t = (z - lo) / (hi - lo) if hi > lo else np.full_like(z, 0.5)
    depth = depth_colormap(np.where(valid[..., 0], t, 0.0))        # [H, W, 3]

    n = grid_normals(g, meta).transpose(1, 2, 0)                   # [H, W, 3], zero off the surface
    lambert = np.clip(n @ LIGHT_DIR.astype(np.float32), 0.0, 1.0)
    shade = np.rint(255.0 * (AMBIENT + (1.0 - AMBIENT) * lambert)).astype(np.uint8)
    shade = np.repeat(shade[..., None], 3, axis=-1)                # [H, W, 3]

    panels = np.concatenate([rgb, depth, shade], axis=1)           # [H, 3W, 3]
    return np.where(np.concatenate([valid] * 3, axis=1), panels, empty)


def _write_png_to(path: Path, image: np.ndarray) -> None:
    # No text chunks, no timestamp: PIL writes only what it is given.
    Image.fromarray(image).save(path, format="PNG", compress_level=PNG_COMPRESS_LEVEL)


def write_preview(path: str | Path, grid, meta: GridMeta) -> Path:
    """Write :func:`preview_image` as PNG, atomically. Returns ``path``."""
    path = Path(path)
    with atomic_path(path) as tmp:
        _write_png_to(tmp, preview_image(grid, meta))
    return path


# ---------------------------------------------------------------------------------------------
# One grid, many grids


def export_grid(grid, meta: GridMeta, out_stem: str | Path, formats: Iterable[str] | str = DEFAULT_FORMATS,
                frame: str = "canonical",
                to_canonical=None,                                  # 4x4 scan -> canonical; needed for frame="source"
                outlier_removal: tuple[int, float] | None = None,   # (nb_neighbors, std_ratio); point cloud only
                voxel_size: float | None = None,                    # output units; point cloud only
                ) -> dict[str, Path]:
    """Write the requested files for one grid ``[C, H, W]`` (numpy, memmap or torch, any float).

    Points and meshes are in the scans' units (the dataset normalisation in ``meta`` undone),
    in the canonical frame or, with ``frame="source"``, the source scan's frame via the inverse
    of ``to_canonical``. The preview and .npy are always the grid itself. The point cloud and
    the mesh share vertices: the .ply points are exactly the mesh's vertices (before any
    outlier removal / voxel downsampling, which apply to the point cloud only).
    All files are written under temporary names and renamed into place together at the end.
    Returns ``{format: path}``. Raises PcganError for a wrong shape, an empty grid, a bad frame."""
    formats = parse_formats(formats)
    if frame not in FRAMES:
        raise PcganError(f"frame {frame!r}: use one of {', '.join(FRAMES)}")
    raw = grid
    g = _grid_array(grid)                                          # [C, H, W] float32
    check_grid(g, meta)
    if g.ndim != 3:
        raise PcganError(f"export_grid takes one grid [C, H, W], got shape {list(g.shape)}; use export_grids for a batch")
    paths = output_paths(out_stem, formats)
    empty = PcganError(f"{Path(out_stem).name}: grid has no surface pixels (mask all empty); "
                       f"no point cloud or mesh to export")
    if frame == "source" and {"ply", "mesh", "obj"} & set(formats):
        check_transform(to_canonical)

    mesh = None
    if "mesh" in formats or "obj" in formats:
        mesh = grid_to_mesh(g, meta)                               # vertices in scan units, canonical frame
        if len(mesh.vertices) == 0:
            raise empty
        if frame == "source":
            mesh = mesh_to_source_frame(mesh, to_canonical)
        if len(mesh.faces) == 0:
            log.warning("%s: the grid gives no triangles (isolated pixels only); mesh has vertices only", paths.get("mesh", out_stem))
    cloud = None
    if "ply" in formats:
        if mesh is not None:
            cloud = (mesh.vertices, mesh.colors, mesh.normals)
        else:
            pts, cols, nrm = grid_to_points(g, meta, return_normals=True)
            if len(pts) == 0:
                raise empty
            if frame == "source":
                pts, nrm = to_source_frame(pts, nrm, to_canonical)
            cloud = (pts, cols, nrm)
        cloud = filter_points(*cloud, outlier_removal=outlier_removal, voxel_size=voxel_size)

    with contextlib.ExitStack() as stack:
        # Each atomic_path renames its temporary file on a clean exit and deletes it otherwise;
        # the ExitStack makes that all-or-nothing for this grid's files.
        for fmt, path in paths.items():
            tmp = stack.enter_context(atomic_path(path))
            if fmt == "ply":
                _point_ply(*_check_points(*cloud)).write(str(tmp))
            elif fmt in ("mesh", "obj"):
                _write_mesh_to(tmp, mesh, path.suffix.lower())
            elif fmt == "npy":
                # numpy keeps its dtype (a dataset's float16 stays float16); torch (maybe bf16) -> float32
                np.save(tmp, g if isinstance(raw, torch.Tensor) else np.asarray(raw))
            elif fmt == "png":
                _write_png_to(tmp, preview_image(g, meta))
    return paths


@dataclass
class ExportSummary:
    written: list[tuple[str, dict[str, Path]]] = field(default_factory=list)  # (name, {format: path}) in input order
    failed: list[tuple[str, str]] = field(default_factory=list)               # (name, error message)


def export_grids(grids, meta: GridMeta, out_dir: str | Path,
                 rows: Sequence[int] | None = None,          # which grids[row] to export; None = all
                 names: Sequence[str] | None = None,         # file stem per exported row; None = f"{row:06d}"
                 formats: Iterable[str] | str = DEFAULT_FORMATS,
                 frame: str = "canonical",
                 to_canonical: Callable[[int], np.ndarray] | Sequence | None = None,  # row -> 4x4 (callable or indexable)
                 outlier_removal: tuple[int, float] | None = None,
                 voxel_size: float | None = None,
                 workers: int = 1,                           # threads; torch, zlib and file writes release the GIL
                 progress: Callable[[int, int], None] | None = None,  # called (done, total) after each grid
                 ) -> ExportSummary:
    """Export many grids ``grids[row]`` (``[N, C, H, W]``, memmap fine: rows are read one at a
    time) into ``out_dir``. A grid that fails (PcganError: empty, no source transform) is
    skipped and reported in ``failed``; the others are written. Output bytes do not depend on
    ``workers`` or on the order of ``rows``."""
    formats = parse_formats(formats)
    out_dir = ensure_writable_dir(out_dir)
    rows = list(range(len(grids))) if rows is None else [int(r) for r in rows]
    names = [f"{r:06d}" for r in rows] if names is None else list(names)
    if len(names) != len(rows):
        raise PcganError(f"{len(names)} names for {len(rows)} grids")
    if len(set(names)) != len(names):
        raise PcganError("export names must be unique (two grids would write the same files)")

    def transform(row: int):
        if to_canonical is None or frame != "source":
            return None
        return to_canonical(row) if callable(to_canonical) else to_canonical[row]

    def one(i: int) -> tuple[str, dict[str, Path] | str]:
        row, name = rows[i], names[i]
        try:
            t = transform(row)
            return name, export_grid(grids[row], meta, out_dir / name, formats, frame, t,
                                     outlier_removal, voxel_size)
        except PcganError as exc:
            log.debug("grid %s (row %d) skipped: %s", name, row, exc)   # the caller reports `failed`
            return name, str(exc)

    summary = ExportSummary()
    total = len(rows)

    def record(result, done):
        name, res = result
        (summary.failed if isinstance(res, str) else summary.written).append((name, res))
        if progress is not None:
            progress(done, total)

    if workers <= 1 or total <= 1:
        for i in range(total):
            record(one(i), i + 1)
    else:
        with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
            for done, result in enumerate(pool.map(one, range(total)), start=1):
                record(result, done)
    return summary

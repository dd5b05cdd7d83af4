"""Point clouds -> XYZRGB grids: loading scans and z-buffer splatting with bounded hole filling.

Loading (:func:`load_point_cloud`) reads ``.ply`` (plyfile), ``.pcd`` (ASCII and binary parsed
here, ``binary_compressed`` through Open3D), ``.xyz``/``.xyzrgb``/``.xyzn``/``.txt``/``.pts``
(text, parsed strictly so a truncated or garbled line is an error rather than a silently dropped
point, which is what Open3D's text readers do), ``.npy`` and ``.npz``. Every problem with a file
is a one-line :class:`PcganError` naming the file.

Colours come back as stored in the file, scaled to [0, 1] (8-bit values / 255); no transfer
curve is applied here.

Splatting (:func:`splat_points`) takes points already in the normalised canonical frame and
fills a grid seen by ``meta.camera``:

1. z-buffer: every point lands in the pixel its projection falls in; per pixel the nearest
   surface wins (points within ``SAME_SURFACE_PX`` pixel footprints of the nearest depth), and
   of those the point nearest the pixel centre is stored *as is*, so covered pixels hold exact
   scan points (no blending at all). Occlusion reaches ``point_radius_px`` pixels (by default
   1.5 times the typical point spacing, at least 1.5): a point more than ``depth_edge_px``
   footprints behind a neighbour's nearest depth (plus ``OCCLUDER_SLOPE_PX`` footprints per
   pixel of separation, so a steep but continuous surface stays visible) is hidden, as it
   would be behind a splat of that radius.
2. See-through: where the front surface still has a gap, points of a surface behind it show
   through. A covered pixel whose point lies more than ``depth_edge_px`` footprints behind a
   nearer surface that surrounds it (the test of step 3, in a window of twice the occlusion
   radius) is emptied, and step 3 may then fill it from that nearer surface.
3. Hole filling inside the silhouette: an empty pixel is filled only when one surface (a depth
   cluster of its neighbours, split wherever sorted depths jump by more than ``depth_edge_px``
   footprints) surrounds it within ``max_hole_px``: seen from the pixel, that surface's covered
   pixels leave no angular gap wider than about 100 degrees (at most ``MAX_EMPTY_BINS`` of
   ``ANGLE_BINS`` directions in a row). A pixel outside a convex outline has a gap of at
   least 180 degrees, so the silhouette never grows (only notches narrower than that fill),
   and a pixel between a front and a back surface is surrounded by neither alone, so
   nothing bridges a depth edge. The surface is interpolated only where it is locally a plane
   (``PLANE_TOL_PX``) and not seen edge-on (``MAX_FILL_SLOPE_PX``); the filled pixel gets the
   point on its own camera ray at the depth of a weighted plane fit (exact for planes), clamped
   to the surface's depth range, and the weighted mean colour. Dense clouds (neighbouring
   points under ``DENSE_SPACING_PX`` apart) leave no sampling holes, so by default nothing is
   filled there: an empty pixel is a real gap in the scan, as it would be for a mesh.

A pixel's "footprint" is its width at a given depth (:meth:`Camera.pixel_footprint`); depth is
the distance along the viewing axis (``Camera.project``).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np

from pcgan.errors import PcganError
from pcgan.grid import MASK, RGB, XYZ, GridMeta, empty_grid, rgb_to_grid

log = logging.getLogger(__name__)

POINT_SUFFIXES = (".ply", ".pcd", ".xyz", ".xyzrgb", ".xyzn", ".txt", ".pts", ".npy", ".npz")
MIN_POINTS = 10          # fewer valid points than this after dropping non-finite ones is an error
SAME_SURFACE_PX = 2.0    # z-buffer: points this many footprints behind a pixel's nearest are the same surface
DEPTH_EDGE_PX = 6.0      # a depth jump larger than this many footprints is an edge (as grid_to_mesh's max_stretch)
AUTO_RADIUS_PX = 1.5     # least automatic occlusion disc: a 3x3 block must be empty for a back point to show
OCCLUDER_SLOPE_PX = 3.0  # occlusion: a surface may recede this many footprints per pixel and stay visible (72 deg)
DENSE_SPACING_PX = 0.5   # automatic max_hole_px: no filling when points are closer than this (pixels)
MAX_FILL_SLOPE_PX = 2.5  # hole filling: steepest surface interpolated, depth change per pixel in footprints (68 deg)
PLANE_TOL_PX = 0.5       # hole filling: largest RMS distance (footprints) of a surface's pixels from its local plane
ANGLE_BINS = 16          # hole filling: directions around a pixel, 22.5 degrees each
MAX_EMPTY_BINS = 4       # ... a surface encloses a pixel when no more than this many adjacent bins lack it
_FILL_CHUNK = 8192       # hole candidates processed per block (bounds memory on sparse clouds)


@dataclass
class PointScan:
    """A loaded scan as points. Produced by :func:`load_point_cloud` and ``rgbd.load_rgbd``."""

    points: np.ndarray                  # [N, 3] float64, scan units
    colors: np.ndarray | None = None    # [N, 3] float32 in [0, 1]; None when the source has no colour
    normals: np.ndarray | None = None   # [N, 3] float32; None when the source has no normals
    source: str = ""                    # the file (or item) it came from, for messages
    units: str = "unknown"              # units of ``points`` when the format says (RGB-D: "m")
    info: dict = field(default_factory=dict)   # loader notes: dropped points, crop box, ...

    def __len__(self) -> int:
        return len(self.points)


# ---------------------------------------------------------------------------------------------
# Loading


def load_point_cloud(path, *, min_points: int = MIN_POINTS) -> PointScan:
    """Read a point cloud file into a :class:`PointScan`.

    Formats: ``.ply`` (vertex element with x y z, optional red green blue as uchar/ushort/float
    and nx ny nz; faces, if any, are ignored), ``.pcd`` (fields x y z, optional rgb/rgba packed or
    r g b, normal_x/y/z), text ``.xyz``/``.txt`` (3 columns; 6 columns = xyz + rgb, or xyz +
    normals when the last three have unit length), ``.xyzrgb`` (xyz + rgb), ``.xyzn`` (xyz +
    normals), ``.pts`` (optional count line, then xyz [intensity] [r g b]), ``.npy`` ([N, 3] or
    [N, 6] xyz + rgb) and ``.npz`` (``points`` or ``xyz``, optional ``colors``/``rgb`` and
    ``normals``). Colours in 0-255 are detected (any value > 1) and scaled to [0, 1].

    Points with a NaN or infinite coordinate are dropped with a warning; fewer than
    ``min_points`` left is an error. Raises :class:`PcganError` (one line, naming the file) for
    a missing, empty, corrupt or truncated file and for arrays of the wrong shape.
    """
    path = Path(path)
    if not path.is_file():
        raise PcganError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise PcganError(f"{path}: empty file (0 bytes)")
    suffix = path.suffix.lower()
    readers = {".ply": _read_ply, ".pcd": _read_pcd, ".npy": _read_npy, ".npz": _read_npz}
    if suffix in (".xyz", ".xyzrgb", ".xyzn", ".txt", ".pts"):
        pts, cols, nrm = _read_text(path, suffix)
    elif suffix in readers:
        pts, cols, nrm = readers[suffix](path)
    else:
        raise PcganError(f"{path}: unknown point cloud format {suffix!r}; use one of {' '.join(POINT_SUFFIXES)}")
    return _validated(path, pts, cols, nrm, min_points)


def _validated(path: Path, pts, cols, nrm, min_points: int) -> PointScan:
    """Shape checks, colour range, and dropping of non-finite points."""
    pts = np.asarray(pts, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 3:
        raise PcganError(f"{path}: points have shape {list(pts.shape)}, expected [N, 3]")
    if len(pts) == 0:
        raise PcganError(f"{path}: the point cloud is empty (0 points)")
    n = len(pts)
    if cols is not None:
        cols = np.asarray(cols, dtype=np.float64)
        if cols.shape != (n, 3):
            raise PcganError(f"{path}: colours have shape {list(cols.shape)}, expected [{n}, 3] like the points")
        cols = _colors01(cols)
    if nrm is not None:
        nrm = np.asarray(nrm, dtype=np.float64)
        if nrm.shape != (n, 3):
            raise PcganError(f"{path}: normals have shape {list(nrm.shape)}, expected [{n}, 3] like the points")

    ok = np.isfinite(pts).all(axis=1)
    if cols is not None:
        ok &= np.isfinite(cols).all(axis=1)
    dropped = int(n - ok.sum())
    if dropped:
        if ok.sum() < min_points:
            raise PcganError(f"{path}: only {int(ok.sum())} of {n} points have finite coordinates and colours "
                             f"(NaN/Inf); at least {min_points} are needed")
        log.warning("%s: dropped %d of %d points with NaN/Inf coordinates or colours", path, dropped, n)
        pts = pts[ok]
        cols = None if cols is None else cols[ok]
        nrm = None if nrm is None else nrm[ok]
    elif n < min_points:
        raise PcganError(f"{path}: only {n} points; at least {min_points} are needed")
    if nrm is not None:
        nrm = np.where(np.isfinite(nrm), nrm, 0.0).astype(np.float32)
    return PointScan(points=pts, colors=None if cols is None else cols.astype(np.float32), normals=nrm,
                     source=str(path), info={"dropped_nonfinite": dropped, "points": len(pts)})


def _colors01(cols: np.ndarray) -> np.ndarray:
    """Colours in [0, 1] or 0-255 (detected by any finite value > 1) -> [0, 1]."""
    finite = cols[np.isfinite(cols)]
    if finite.size and finite.max() > 1.0:
        cols = cols / (65535.0 if finite.max() > 255.0 else 255.0)
    return np.clip(cols, 0.0, 1.0)


def _read_ply(path: Path):
    import plyfile
    try:
        ply = plyfile.PlyData.read(str(path))
    except Exception as exc:   # plyfile raises several types for bad headers and short data
        raise PcganError(f"{path}: not a readable PLY file ({_one_line(exc)})") from None
    names = [e.name for e in ply.elements]
    if "vertex" not in names:
        raise PcganError(f"{path}: PLY has no 'vertex' element (elements: {names})")
    v = ply["vertex"].data
    props = v.dtype.names or ()
    if not all(k in props for k in "xyz"):
        raise PcganError(f"{path}: PLY vertices lack x y z (properties: {list(props)})")
    pts = np.stack([v[k] for k in "xyz"], axis=1)
    cols = None
    for keys in (("red", "green", "blue"), ("r", "g", "b"), ("diffuse_red", "diffuse_green", "diffuse_blue")):
        if all(k in props for k in keys):
            raw = np.stack([v[k] for k in keys], axis=1)
            if np.issubdtype(raw.dtype, np.integer):
                cols = raw.astype(np.float64) / float(np.iinfo(raw.dtype).max)
            else:
                cols = raw
            break
    nrm = np.stack([v[k] for k in ("nx", "ny", "nz")], axis=1) if all(k in props for k in ("nx", "ny", "nz")) else None
    if "face" in names and len(ply["face"].data):
        log.info("%s: PLY has faces; the point path uses its vertices only", path)
    return pts, cols, nrm


def _read_text(path: Path, suffix: str):
    try:
        lines = path.read_text(errors="strict").splitlines()
    except (UnicodeDecodeError, OSError) as exc:
        raise PcganError(f"{path}: not a text point cloud ({_one_line(exc)})") from None
    rows = [(i + 1, s.split()) for i, s in enumerate(lines) if s.strip() and not s.lstrip().startswith(("#", "//"))]
    if suffix == ".pts" and rows and len(rows[0][1]) == 1:
        rows = rows[1:]   # the count line
    if not rows:
        raise PcganError(f"{path}: the point cloud is empty (no data lines)")
    ncol = len(rows[0][1])
    for lineno, parts in rows:
        if len(parts) != ncol:
            raise PcganError(f"{path}: line {lineno} has {len(parts)} values, expected {ncol} like the first "
                             f"line (truncated or corrupt file?)")
    try:
        data = np.array([p for _, p in rows], dtype=np.float64)      # [N, ncol]
    except ValueError as exc:
        raise PcganError(f"{path}: non-numeric value in a data line ({_one_line(exc)})") from None
    pts, rest = data[:, :3], data[:, 3:]
    if ncol < 3:
        raise PcganError(f"{path}: lines have {ncol} values, expected at least x y z")
    if suffix == ".pts":
        if rest.shape[1] in (0, 1):
            return pts, None, None
        if rest.shape[1] in (3, 4):
            return pts, rest[:, -3:] / 255.0, None
    elif rest.shape[1] == 0:
        return pts, None, None
    elif rest.shape[1] == 3:
        if suffix == ".xyzn":
            return pts, None, rest
        if suffix == ".xyzrgb":
            return pts, rest, None
        unit = np.abs(np.linalg.norm(rest, axis=1) - 1.0) < 1e-3
        if unit.mean() > 0.99 and (rest < 0).any():
            return pts, None, rest
        return pts, rest, None
    raise PcganError(f"{path}: {ncol} values per line is not a layout this reader knows "
                     f"(x y z, x y z r g b, x y z nx ny nz; .pts: x y z [i] [r g b])")


_PCD_TYPES = {("F", 4): "<f4", ("F", 8): "<f8", ("U", 1): "u1", ("U", 2): "<u2", ("U", 4): "<u4",
              ("U", 8): "<u8", ("I", 1): "i1", ("I", 2): "<i2", ("I", 4): "<i4", ("I", 8): "<i8"}


def _read_pcd(path: Path):
    raw = path.read_bytes()
    header: dict[str, list[str]] = {}
    pos = 0
    while True:
        end = raw.find(b"\n", pos)
        if end < 0:
            raise PcganError(f"{path}: PCD header ends before its DATA line (truncated or not a PCD file)")
        try:
            line = raw[pos:end].decode("ascii").strip()
        except UnicodeDecodeError:
            raise PcganError(f"{path}: not a PCD file (binary data in the header)") from None
        pos = end + 1
        if not line or line.startswith("#"):
            continue
        key, *vals = line.split()
        header[key.upper()] = vals
        if key.upper() == "DATA":
            break
    try:
        fields = header["FIELDS"]
        sizes = [int(s) for s in header["SIZE"]]
        types = header["TYPE"]
        counts = [int(c) for c in header.get("COUNT", ["1"] * len(fields))]
        npts = int(header["POINTS"][0]) if "POINTS" in header else int(header["WIDTH"][0]) * int(header["HEIGHT"][0])
        kind = header["DATA"][0].lower()
    except (KeyError, ValueError, IndexError) as exc:
        raise PcganError(f"{path}: PCD header is missing or garbles {exc} "
                         f"(needs FIELDS SIZE TYPE POINTS DATA)") from None
    if not (len(fields) == len(sizes) == len(types) == len(counts)):
        raise PcganError(f"{path}: PCD header FIELDS/SIZE/TYPE/COUNT have different lengths")
    if npts == 0:
        raise PcganError(f"{path}: the point cloud is empty (POINTS 0)")
    try:
        dtype = np.dtype([(f, _PCD_TYPES[(t.upper(), s)], (c,)) for f, s, t, c in zip(fields, sizes, types, counts)])
    except KeyError as exc:
        raise PcganError(f"{path}: PCD field type {exc} is not supported") from None

    if kind == "ascii":
        text = raw[pos:].decode("ascii", errors="replace").split("\n")
        rows = [s.split() for s in text if s.strip()]
        width = sum(counts)
        if len(rows) != npts or any(len(r) != width for r in rows):
            bad = next((i for i, r in enumerate(rows) if len(r) != width), len(rows))
            raise PcganError(f"{path}: PCD promises {npts} points of {width} values but data line {bad + 1} of "
                             f"{len(rows)} disagrees (truncated or corrupt file)")
        try:
            flat = np.array(rows, dtype=np.float64)                     # [N, width]
        except ValueError as exc:
            raise PcganError(f"{path}: non-numeric PCD data ({_one_line(exc)})") from None
        rec = np.zeros(npts, dtype=dtype)
        col = 0
        for f, c in zip(fields, counts):
            vals = flat[:, col:col + c]
            if dtype[f].base.kind in "ui" and f in ("rgb", "rgba"):
                rec[f] = vals.astype(np.uint64).astype(dtype[f].base)
            elif f in ("rgb", "rgba") and dtype[f].base == np.float32:
                rec[f] = vals.astype(np.float32)   # packed float: a float32 whose bits are the colour
            else:
                rec[f] = vals
            col += c
    elif kind == "binary":
        need = npts * dtype.itemsize
        if len(raw) - pos < need:
            raise PcganError(f"{path}: PCD promises {npts} points ({need} bytes) but holds {len(raw) - pos} bytes "
                             f"of data (truncated file)")
        rec = np.frombuffer(raw, dtype=dtype, count=npts, offset=pos)
    elif kind == "binary_compressed":
        return _read_pcd_open3d(path, npts)
    else:
        raise PcganError(f"{path}: unknown PCD DATA kind {kind!r} (ascii, binary, binary_compressed)")

    def take(name):
        return rec[name][:, 0].astype(np.float64)

    if not all(k in fields for k in "xyz"):
        raise PcganError(f"{path}: PCD has no x y z fields (fields: {fields})")
    pts = np.stack([take(k) for k in "xyz"], axis=1)
    cols = None
    packed = next((k for k in ("rgb", "rgba") if k in fields), None)
    if packed is not None:
        bits = np.ascontiguousarray(rec[packed][:, 0])
        bits = bits.view(np.uint32) if bits.dtype.itemsize == 4 else bits.astype(np.uint32)
        cols = np.stack([(bits >> 16) & 255, (bits >> 8) & 255, bits & 255], axis=1) / 255.0
    elif all(k in fields for k in "rgb"):
        cols = np.stack([take(k) for k in "rgb"], axis=1)
    nrm = None
    if all(k in fields for k in ("normal_x", "normal_y", "normal_z")):
        nrm = np.stack([take(k) for k in ("normal_x", "normal_y", "normal_z")], axis=1)
    return pts, cols, nrm


def _read_pcd_open3d(path: Path, npts: int):
    import open3d as o3d
    with o3d.utility.VerbosityContextManager(o3d.utility.VerbosityLevel.Error):
        pcd = o3d.io.read_point_cloud(str(path), format="pcd", remove_nan_points=False, remove_infinite_points=False)
    pts = np.asarray(pcd.points)
    if len(pts) != npts:
        raise PcganError(f"{path}: compressed PCD promises {npts} points but {len(pts)} could be read "
                         f"(truncated or corrupt file)")
    cols = np.asarray(pcd.colors) if pcd.has_colors() else None
    nrm = np.asarray(pcd.normals) if pcd.has_normals() else None
    return pts, cols, nrm


def _read_npy(path: Path):
    try:
        a = np.load(path, allow_pickle=False)
    except Exception as exc:
        raise PcganError(f"{path}: not a readable .npy array ({_one_line(exc)})") from None
    if a.ndim != 2 or a.shape[1] not in (3, 6):
        raise PcganError(f"{path}: array has shape {list(a.shape)}, expected [N, 3] (xyz) or [N, 6] (xyz rgb)")
    if not np.issubdtype(a.dtype, np.number):
        raise PcganError(f"{path}: array dtype {a.dtype} is not numeric")
    return a[:, :3], (a[:, 3:] if a.shape[1] == 6 else None), None


def _read_npz(path: Path):
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except Exception as exc:
        raise PcganError(f"{path}: not a readable .npz archive ({_one_line(exc)})") from None
    key = next((k for k in ("points", "xyz") if k in arrays), None)
    if key is None:
        raise PcganError(f"{path}: no 'points' or 'xyz' array (keys: {sorted(arrays)})")
    ckey = next((k for k in ("colors", "colours", "rgb") if k in arrays), None)
    return arrays[key], (arrays[ckey] if ckey else None), arrays.get("normals")


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


# ---------------------------------------------------------------------------------------------
# Splatting


def splat_points(
    points: np.ndarray,                      # [N, 3] normalised canonical frame
    colors: np.ndarray | None,               # [N, 3] in [0, 1], or None for default_rgb everywhere
    meta: GridMeta,                          # resolution, channels, camera, sheet, background
    *,
    default_rgb=(0.7, 0.7, 0.7),             # colour of points when ``colors`` is None
    point_radius_px: float | None = None,    # occlusion reach in pixels; None: 1.5 x point spacing, >= 1.5;
                                             # below 1: each pixel's own z-buffer only
    fill_holes: bool = True,                 # fill empty pixels enclosed by one surface
    max_hole_px: int | None = None,          # how far (pixels) filling looks for a surrounding surface; None:
                                             # 2 x point spacing (0, no filling, for dense clouds); 0: none
    depth_edge_px: float = DEPTH_EDGE_PX,    # depth jump (pixel footprints) that separates two surfaces
    name: str | None = None,                 # what the points came from, for error messages
) -> tuple[np.ndarray, dict]:
    """Project a coloured point cloud into a grid through ``meta.camera`` (see the module notes).

    Returns ``(grid [C, H, W] float32, stats)``. Covered pixels hold exact input points; filled
    pixels hold interpolated points on their own camera ray; the rest are the sheet with the
    background colour (:func:`pcgan.grid.empty_grid`). The mask channel, when present, is +1 on
    covered and filled pixels. Points behind the camera, outside the image or behind the sheet
    are ignored; if none is left, raises :class:`PcganError` ("misses the camera entirely").

    ``stats``: ``points``, ``non_finite``, ``in_view``, ``out_of_view``, ``occluded`` (points
    hidden by a nearer neighbour), ``covered_px`` (pixels holding an input point),
    ``see_through_px`` (pixels emptied because their point lay behind a surrounding nearer
    surface), ``filled_px`` (interpolated pixels), ``spacing_px`` (typical distance between
    neighbouring points, in pixels), ``point_radius_px``, ``max_hole_px`` (the values used).
    """
    what = name or "point cloud"
    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 3:
        raise PcganError(f"{what}: points have shape {list(pts.shape)}, expected [N, 3]")
    n = len(pts)
    if colors is None:
        cols = np.broadcast_to(np.asarray(default_rgb, dtype=np.float32), (n, 3))
    else:
        cols = np.asarray(colors, dtype=np.float32)
        if cols.shape != (n, 3):
            raise PcganError(f"{what}: colours have shape {list(cols.shape)}, expected [{n}, 3] like the points")
    R, cam = meta.resolution, meta.camera

    finite = np.isfinite(pts).all(axis=1) & np.isfinite(cols).all(axis=1)
    with np.errstate(invalid="ignore"):
        u, v, depth = cam.project(np.where(finite[:, None], pts, 0.0), R)     # each [N]
        inview = finite & (depth > 0) & (u >= 0) & (u < R) & (v >= 0) & (v < R) & (pts[:, 2] > meta.sheet_z)
    n_in = int(inview.sum())
    if n_in == 0:
        raise PcganError(f"{what}: none of its {n} points lands in the {R}x{R} canonical view (in front of the "
                         f"camera and the background sheet): the scan misses the camera entirely; check its "
                         f"centre, scale and orientation")
    idx = np.flatnonzero(inview)
    u, v, d = u[idx], v[idx], depth[idx]
    pix = np.floor(v).astype(np.int64) * R + np.floor(u).astype(np.int64)     # [n_in] row-major pixel index
    fp = cam.pixel_footprint(d, R)                                             # [n_in] footprint at each point

    # 1. z-buffer: nearest depth per pixel (hiding points far behind a neighbour within the
    #    disc), then per pixel the front-surface point nearest the pixel centre
    zmin = np.full(R * R, np.inf)
    np.minimum.at(zmin, pix, d)
    spacing = _point_spacing_px(pts[idx], d, cam, R)
    radius = float(point_radius_px) if point_radius_px is not None else max(AUTO_RADIUS_PX, 1.5 * spacing)
    visible = np.ones(len(d), dtype=bool)
    if radius >= 1.0:
        zocc = _occluder_depth(zmin.reshape(R, R), radius, OCCLUDER_SLOPE_PX, cam).ravel()
        visible = d <= zocc[pix] + depth_edge_px * fp
        zmin = np.full(R * R, np.inf)
        np.minimum.at(zmin, pix[visible], d[visible])
    front = visible & (d <= zmin[pix] + SAME_SURFACE_PX * fp)
    win_pix, win_pt = _nearest_to_centre(pix, u, v, front, R)

    # 2. see-through: drop pixels whose point lies behind a nearer surface that surrounds them
    #    (the window is wide: a gap the occlusion disc could not close is what this catches)
    see_window = max(int(max_hole_px or 0), math.ceil(2 * radius), 1)
    covered = np.zeros(R * R, dtype=bool)
    covered[win_pix] = True
    maps = _PixelMaps(R, win_pix, d[win_pt], u[win_pt], v[win_pt], cols[idx[win_pt]])
    seen = _fill_holes(maps, covered.reshape(R, R), meta, see_window, depth_edge_px, fill_empty=False)
    hidden = seen.pix[seen.replaced]
    if len(hidden):
        keep = ~np.isin(win_pix, hidden)
        win_pix, win_pt = win_pix[keep], win_pt[keep]
        covered[hidden] = False
        maps = _PixelMaps(R, win_pix, d[win_pt], u[win_pt], v[win_pt], cols[idx[win_pt]])

    grid = empty_grid(meta)                                                    # [C, R, R]
    xyz_flat = grid[XYZ].reshape(3, -1)                                        # views into grid
    rgb_flat = grid[RGB].reshape(3, -1)
    src = idx[win_pt]
    xyz_flat[:, win_pix] = pts[src].T
    rgb_flat[:, win_pix] = rgb_to_grid(cols[src]).T

    # 3. hole filling inside the silhouette
    if max_hole_px is None:   # dense clouds leave no sampling holes: an empty pixel there is a real gap
        max_hole_px = 0 if spacing < DENSE_SPACING_PX else int(min(16, max(1, math.ceil(2.0 * spacing))))
    filled = 0
    if fill_holes and max_hole_px > 0:
        fix = _fill_holes(maps, covered.reshape(R, R), meta, int(max_hole_px), depth_edge_px, fill_empty=True)
        put = fix.fill & ~fix.replaced                         # (see-through was handled above)
        if put.any():
            origins, dirs = cam.rays(R)                                        # [R, R, 3] each
            px = fix.pix[put]
            o, w = origins.reshape(-1, 3)[px], dirs.reshape(-1, 3)[px]
            xyz_flat[:, px] = (o + fix.depth[put][:, None] * w).T              # depth == ray parameter (dir z = -1)
            rgb_flat[:, px] = rgb_to_grid(fix.rgb[put]).T
            covered[px] = True
            filled = len(px)
    if meta.has_mask:
        grid[MASK].reshape(-1)[covered] = 1.0

    stats = {
        "points": n,
        "non_finite": int(n - finite.sum()),
        "in_view": n_in,
        "out_of_view": int(finite.sum()) - n_in,
        "occluded": int((~visible).sum()),
        "covered_px": len(win_pix),
        "see_through_px": len(hidden),
        "filled_px": filled,
        "spacing_px": float(spacing),
        "point_radius_px": radius,
        "max_hole_px": int(max_hole_px),
    }
    if n_in < 0.5 * n:
        log.warning("%s: only %d of %d points fall inside the canonical view", what, n_in, n)
    return grid, stats


def _nearest_to_centre(pix, u, v, front, R):
    """Per pixel, the index (into pix/u/v) of the ``front`` point nearest the pixel centre.
    Returns (pixels [P], point indices [P])."""
    cand = np.flatnonzero(front)
    cu = pix[cand] % R + 0.5
    cv = pix[cand] // R + 0.5
    dist2 = (u[cand] - cu) ** 2 + (v[cand] - cv) ** 2
    order = np.lexsort((dist2, pix[cand]))             # by pixel, then distance to its centre
    p_sorted = pix[cand][order]
    first = np.ones(len(order), dtype=bool)
    first[1:] = p_sorted[1:] != p_sorted[:-1]
    return p_sorted[first], cand[order[first]]


def _point_spacing_px(pts: np.ndarray, depth: np.ndarray, cam, R: int, sample: int = 20000) -> float:
    """Typical distance between neighbouring surface points, in pixels at their depth: the median
    distance to the 4th-nearest neighbour (a regular grid's spacing), estimated on a subsample
    and scaled back by sqrt(sample / N) since a surface's spacing goes as 1/sqrt(density)."""
    n = len(pts)
    if n < 8:
        return 1.0
    from scipy.spatial import cKDTree
    rng = np.random.default_rng(0)
    sub = np.arange(n) if n <= sample else rng.choice(n, sample, replace=False)
    tree = cKDTree(pts[sub])
    q = sub if len(sub) <= 2048 else rng.choice(sub, 2048, replace=False)
    dist, _ = tree.query(pts[q], k=5)
    spacing = np.median(dist[:, 4] / cam.pixel_footprint(depth[q], R)) * math.sqrt(len(sub) / n)
    return float(spacing)


def _occluder_depth(zmin: np.ndarray, radius: float, slope_px: float, cam) -> np.ndarray:
    """``[R, R]`` map of the depth each pixel's neighbours (within ``radius`` pixels) vouch for:
    min over neighbours y of zmin(y) + slope_px footprints per pixel of distance. A point deeper
    than that by more than an edge is hidden; a steep but continuous surface is not."""
    R = zmin.shape[0]
    r = int(math.floor(radius))
    pad = np.pad(zmin, r, constant_values=np.inf)
    out = zmin.copy()
    for oy in range(-r, r + 1):
        for ox in range(-r, r + 1):
            dist = math.hypot(oy, ox)
            if dist == 0 or dist > radius:
                continue
            z = pad[r + oy:r + oy + R, r + ox:r + ox + R]
            with np.errstate(invalid="ignore"):
                out = np.minimum(out, z + slope_px * dist * cam.pixel_footprint(z, R))
    return out


@dataclass
class _PixelMaps:
    """Per-pixel values of the covered pixels (one stored point each)."""

    R: int
    pix: np.ndarray     # [P] flat pixel index
    depth: np.ndarray   # [P] depth of the stored point
    u: np.ndarray       # [P] its projected column (continuous)
    v: np.ndarray       # [P] its projected row
    rgb: np.ndarray     # [P, 3] its colour in [0, 1]

    def padded(self, pad: int):
        """[R+2pad, R+2pad] maps of depth (inf where empty), u, v and rgb [.., 3]."""
        R = self.R

        def put(vals, fill, shape=()):
            m = np.full((R * R,) + shape, fill, dtype=np.float64)
            m[self.pix] = vals
            width = ((pad, pad), (pad, pad)) + ((0, 0),) * len(shape)
            return np.pad(m.reshape((R, R) + shape), width, constant_values=fill)

        return put(self.depth, np.inf), put(self.u, 0.0), put(self.v, 0.0), put(self.rgb, 0.0, (3,))


class _Fix(NamedTuple):
    pix: np.ndarray        # [M] flat pixel index of pixels enclosed by one surface
    depth: np.ndarray      # [M] interpolated depth (where ``fill``)
    rgb: np.ndarray        # [M, 3] interpolated colour (where ``fill``)
    replaced: np.ndarray   # [M] bool: the pixel held a see-through point (else it was empty)
    fill: np.ndarray       # [M] bool: the surface may be interpolated there (else: leave or empty it)


def _angle_bins(dy: np.ndarray, dx: np.ndarray) -> np.ndarray:
    """The angular bin (0..ANGLE_BINS-1, counter-clockwise from +x) of each window offset; the
    centre offset gets -1."""
    angle = np.arctan2(-dy, dx)                                               # rows grow downward
    b = np.round(angle / (2 * np.pi / ANGLE_BINS)).astype(np.int64) % ANGLE_BINS
    return np.where((dy == 0) & (dx == 0), -1, b)


def _enclosed(occupied: np.ndarray) -> np.ndarray:
    """``occupied [..., ANGLE_BINS]`` bool -> whether the longest circular run of empty bins is at
    most MAX_EMPTY_BINS: the neighbours surround the pixel with no wide angular gap."""
    empty = ~np.concatenate([occupied, occupied], axis=-1)
    run = np.zeros(occupied.shape[:-1], dtype=np.int64)
    longest = np.zeros_like(run)
    for b in range(empty.shape[-1]):
        run = (run + 1) * empty[..., b]
        longest = np.maximum(longest, run)
    return longest <= MAX_EMPTY_BINS


def _fill_holes(maps: _PixelMaps, covered: np.ndarray, meta: GridMeta, L: int, depth_edge_px: float,
                fill_empty: bool) -> _Fix:
    """Pixels enclosed by one surface within L pixels: empty ones (when ``fill_empty``) and covered
    ones whose point lies behind that surface (a back surface seen through a gap in the front).

    A "surface" is a depth cluster of the covered pixels in the pixel's round window (sorted
    depths split at jumps over ``depth_edge_px`` footprints), tried front first. It must enclose
    the pixel (:func:`_enclosed`). It is interpolated only where it is close to a plane (RMS
    residual at most ``PLANE_TOL_PX`` footprints) that is not too steep (``MAX_FILL_SLOPE_PX``):
    two objects whose depth ranges happen to overlap, a fold, or a surface seen edge-on are left
    alone (a see-through pixel there is emptied)."""
    from scipy import ndimage
    R, cam = meta.resolution, meta.camera
    none = _Fix(np.zeros(0, np.int64), np.zeros(0), np.zeros((0, 3), np.float32), np.zeros(0, bool), np.zeros(0, bool))
    dmap = np.full(R * R, np.inf)
    dmap[maps.pix] = maps.depth
    dmap = dmap.reshape(R, R)
    nearest = ndimage.minimum_filter(dmap, size=2 * L + 1, mode="constant", cval=np.inf)
    cand = covered & (dmap > nearest + depth_edge_px * cam.pixel_footprint(nearest, R))   # see-through
    if fill_empty:
        cand = cand | (ndimage.binary_dilation(covered, structure=np.ones((3, 3), bool), iterations=L) & ~covered)
    if not cand.any():
        return none

    dy, dx = np.mgrid[-L:L + 1, -L:L + 1]
    inside = dx ** 2 + dy ** 2 <= (L + 0.5) ** 2                             # a round window
    dy, dx = dy[inside], dx[inside]                                          # [K] window offsets
    centre = np.flatnonzero((dy == 0) & (dx == 0))
    gauss = np.exp(-(dx ** 2 + dy ** 2) / (2.0 * (0.5 * L + 0.5) ** 2))
    abin = _angle_bins(dy, dx)
    bin_members = [np.flatnonzero(abin == b) for b in range(ANGLE_BINS)]

    # cheap pre-test: enclosed by covered pixels of any surface (drops the outside of the silhouette)
    cov_pad = np.pad(covered, L)
    occ = np.zeros((R, R, ANGLE_BINS), dtype=bool)
    for b, members in enumerate(bin_members):
        for k in members:
            occ[:, :, b] |= cov_pad[L + dy[k]:L + dy[k] + R, L + dx[k]:L + dx[k] + R]
    cand &= _enclosed(occ)
    ci, cj = np.nonzero(cand)
    if len(ci) == 0:
        return none
    dpad, upad, vpad, cpad = maps.padded(L)
    perspective = cam.projection == "perspective"

    parts = []
    for start in range(0, len(ci), _FILL_CHUNK):
        i, j = ci[start:start + _FILL_CHUNK], cj[start:start + _FILL_CHUNK]
        M = len(i)
        own = dmap[i, j]                                                     # [M] inf when empty
        rows, cols_ = i[:, None] + L + dy, j[:, None] + L + dx               # [M, K]
        nd = dpad[rows, cols_]                                               # [M, K] neighbour depths
        nd[:, centre] = np.inf
        valid = np.isfinite(nd)

        # cluster neighbour depths: sorted depths split wherever they jump by more than the edge limit
        order = np.argsort(nd, axis=1)
        srt = np.take_along_axis(nd, order, axis=1)
        limit = depth_edge_px * cam.pixel_footprint(np.where(np.isfinite(srt[:, :1]), srt[:, :1], 1.0), R)
        with np.errstate(invalid="ignore"):
            jump = np.diff(srt, axis=1) > limit                                # inf - inf -> nan -> False
        cid_sorted = np.concatenate([np.zeros((M, 1), np.int64), np.cumsum(jump, axis=1)], axis=1)
        cid = np.empty_like(cid_sorted)
        np.put_along_axis(cid, order, cid_sorted, axis=1)
        du = upad[rows, cols_] - (j[:, None] + 0.5)                           # stored points' offsets,
        dv = vpad[rows, cols_] - (i[:, None] + 0.5)                           # in pixels from the centre
        dsafe = np.where(valid, nd, 1.0)
        y = 1.0 / dsafe if perspective else dsafe                             # affine in (u, v) on a plane

        chosen = np.full(M, -1)      # the enclosing surface's cluster
        good = np.zeros(M, bool)     # ... and it may be interpolated here
        depth = np.zeros(M)
        for c in (0, 1):   # the front surface first, then the one behind it
            inl = valid & (cid == c)
            hit = np.stack([inl[:, m].any(axis=1) for m in bin_members], axis=1)   # [M, ANGLE_BINS]
            enclosed = _enclosed(hit)
            behind = own > np.where(inl, nd, -np.inf).max(axis=1) + limit[:, 0]   # always true when empty
            t = np.flatnonzero((chosen < 0) & enclosed & behind)
            if not len(t):
                continue
            chosen[t] = c
            w = gauss[None, :] * inl[t]
            coef = _plane_fit(w, du[t], dv[t], y[t])                          # [T, 3]
            fit = coef[:, :1] + coef[:, 1:2] * du[t] + coef[:, 2:] * dv[t]    # [T, K]
            with np.errstate(divide="ignore", invalid="ignore"):
                dfit = 1.0 / fit if perspective else fit
                fp_t = cam.pixel_footprint(nd[t], R)
                resid = np.where(inl[t], (nd[t] - dfit) / fp_t, 0.0)
                rms = np.sqrt((w * resid ** 2).sum(axis=1) / w.sum(axis=1))
                d0 = 1.0 / coef[:, 0] if perspective else coef[:, 0]
                # depth change per pixel of the fitted plane, in footprints (d(1/y) = -dy / y^2)
                grad = np.hypot(coef[:, 1], coef[:, 2]) * (d0 ** 2 if perspective else 1.0)
                slope = grad / cam.pixel_footprint(d0, R)
            ok = np.isfinite(rms) & (rms <= PLANE_TOL_PX) & np.isfinite(d0) & (slope <= MAX_FILL_SLOPE_PX)
            lo = np.where(inl[t], nd[t], np.inf).min(axis=1)
            hi = np.where(inl[t], nd[t], -np.inf).max(axis=1)
            good[t] = ok
            depth[t[ok]] = np.clip(d0, lo, hi)[ok]
        keep = chosen >= 0
        if not keep.any():
            continue
        inl = valid[keep] & (cid[keep] == chosen[keep][:, None])
        w = gauss[None, :] * inl
        rgb = (w[:, :, None] * cpad[rows[keep], cols_[keep]]).sum(axis=1) / w.sum(axis=1, keepdims=True)
        parts.append((i[keep] * R + j[keep], depth[keep], rgb.astype(np.float32), np.isfinite(own[keep]), good[keep]))
    if not parts:
        return none
    return _Fix(*(np.concatenate(a) for a in zip(*parts)))


def _plane_fit(w, du, dv, y):
    """Weighted least-squares fit y = a + b du + c dv per row of [M, K] arrays -> [M, 3] (a, b, c).
    Rows whose support does not span two directions get the weighted mean and zero slopes."""
    sw = w.sum(axis=1)
    A = np.empty((len(w), 3, 3))
    basis = (np.ones_like(du), du, dv)
    for r in range(3):
        for c in range(r, 3):
            A[:, r, c] = A[:, c, r] = (w * basis[r] * basis[c]).sum(axis=1)
    b = np.stack([(w * f * y).sum(axis=1) for f in basis], axis=1)           # [M, 3]
    out = np.zeros((len(w), 3))
    out[:, 0] = b[:, 0] / np.maximum(sw, 1e-300)
    det = np.linalg.det(A)
    ok = det > 1e-6 * np.maximum(sw, 1e-12) ** 3
    if ok.any():
        out[ok] = np.linalg.solve(A[ok], b[ok][:, :, None])[:, :, 0]
    return out

"""Load triangle meshes with their colour: vertex colours, or UV textures per material.

Formats: ``.obj`` (+ ``.mtl`` + textures), ``.ply``, ``.off``, ``.stl``, ``.glb`` / ``.gltf``.
Every mesh comes back as a :class:`MeshScan`: float64 vertices in the scan's own frame and
units, triangles (polygons are fan-triangulated), and whichever colour source the file has.

Readers:
- ``.obj`` is parsed here (numpy, vectorised). Open3D 0.18-0.20's legacy OBJ reader skips
  every non-triangle polygon ("Skipping non-triangle primitive"), so a quad mesh such as the
  ICT face model loads as a handful of stray triangles, and with post-processing on it
  returns an empty mesh; its tensor reader keeps only one material. Parsing OBJ ourselves
  also lets a missing ``.mtl`` or texture be reported by name (Open3D only prints it).
- everything else goes through Open3D ``read_triangle_mesh`` (imported lazily). Open3D prints
  warnings and returns an empty mesh instead of raising on a bad file; :func:`load_mesh`
  detects that and, for PLY, compares what was read with the counts the header declares.

Colours are returned as the file stores them, scaled to [0, 1] (8-bit values / 255: sRGB
encoded, no linearisation; see ``COLOR_SPACE``). Textures stay uint8 until sampled.

A ``.ply`` with vertices but no faces is a point cloud, not a broken mesh:
:func:`ply_has_faces` lets the caller route it to the point path. An ``.obj``, ``.off`` or
``.stl`` without faces is an error ("mesh has no faces").
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pcgan.errors import PcganError

log = logging.getLogger(__name__)

MESH_EXTENSIONS = (".obj", ".ply", ".off", ".stl", ".glb", ".gltf")
COLOR_SPACE = "srgb"   # colours keep the file's 8-bit sRGB-encoded values / 255


@dataclass
class MeshScan:
    """A triangle mesh in its scan's own frame and units, with its colour sources."""

    path: Path
    vertices: np.ndarray                          # [V, 3] float64, scan frame and units
    triangles: np.ndarray                         # [F, 3] int64 indices into vertices
    vertex_colors: np.ndarray | None = None       # [V, 3] float32 in [0, 1], or None
    triangle_uvs: np.ndarray | None = None        # [F, 3, 2] float32 per-corner UVs (OBJ convention: v = 0 at
                                                  # the bottom row of the texture image)
    material_ids: np.ndarray | None = None        # [F] int64 index into textures, -1 = no material
    textures: list = field(default_factory=list)  # per material: [h, w, 3] uint8, or None (no texture)
    warnings: list = field(default_factory=list)  # one line each: problems that did not stop loading

    @property
    def has_texture(self) -> bool:
        return self.triangle_uvs is not None and any(t is not None for t in self.textures)


# ---------------------------------------------------------------------------------------------
# Entry points


def load_mesh(path: str | Path) -> MeshScan:
    """Read a mesh file into a :class:`MeshScan`, triangulated and checked.

    Raises PcganError naming the file for an empty, corrupt or truncated file, a mesh without
    faces, or one whose vertices are all NaN/Inf. Problems the mesh survives (a missing
    texture, a few NaN vertices) are listed in ``MeshScan.warnings``."""
    path = Path(path)
    _check_file(path)
    ext = path.suffix.lower()
    if ext == ".obj":
        mesh = _read_obj(path)
    elif ext in MESH_EXTENSIONS:
        mesh = _read_open3d(path)
    else:
        raise PcganError(f"{path}: unknown mesh extension {ext!r}; supported: {' '.join(MESH_EXTENSIONS)}")
    return _clean(mesh)


def ply_header(path: str | Path) -> dict:
    """Parse a PLY header: ``{"format": str, "elements": {name: count}, "properties": {name:
    [prop, ...]}, "header_bytes": int}``. Raises PcganError when the file is not a PLY."""
    path = Path(path)
    with open(path, "rb") as f:
        head = f.read(65536)
    if not head.startswith(b"ply"):
        raise PcganError(f"{path}: not a PLY file (it does not start with 'ply')")
    end = head.find(b"end_header")
    if end < 0:
        raise PcganError(f"{path}: PLY header has no 'end_header' (corrupt or truncated file)")
    elements, props, fmt, current = {}, {}, None, None
    for raw in head[:end].split(b"\n")[1:]:
        tok = raw.decode("ascii", "replace").split()
        if not tok:
            continue
        if tok[0] == "format" and len(tok) >= 2:
            fmt = tok[1]
        elif tok[0] == "element" and len(tok) >= 3:
            try:
                elements[tok[1]] = int(tok[2])
            except ValueError:
                raise PcganError(f"{path}: PLY header line {raw!r} has a bad count") from None
            current = tok[1]
            props[current] = []
        elif tok[0] == "property" and current is not None:
            props[current].append(tok[-1])
    if fmt not in ("ascii", "binary_little_endian", "binary_big_endian"):
        raise PcganError(f"{path}: PLY header has no valid 'format' line")
    nl = head.find(b"\n", end)
    return {"format": fmt, "elements": elements, "properties": props,
            "header_bytes": (nl + 1) if nl >= 0 else len(head)}


def ply_has_faces(path: str | Path) -> bool:
    """True when a PLY declares at least one face (a mesh); False for a point cloud."""
    return ply_header(path)["elements"].get("face", 0) > 0


# ---------------------------------------------------------------------------------------------
# Shared checks


def _check_file(path: Path) -> None:
    if not path.is_file():
        raise PcganError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise PcganError(f"{path}: file is empty")


def _clean(mesh: MeshScan) -> MeshScan:
    """Validate indices, drop triangles on NaN/Inf vertices, refuse a mesh with nothing left."""
    path, v, t = mesh.path, mesh.vertices, mesh.triangles
    if len(v) == 0:
        raise PcganError(f"{path}: no vertices could be read (corrupt, truncated or not a mesh file)")
    if len(t) == 0:
        raise PcganError(f"{path}: mesh has no faces (only {len(v)} vertices); "
                         f"save it as a .ply point cloud to use the point path")
    if t.min() < 0 or t.max() >= len(v):
        raise PcganError(f"{path}: faces refer to vertex {int(t.max())} but the file has {len(v)} "
                         f"vertices (corrupt or truncated)")
    finite = np.isfinite(v).all(axis=1)                                 # [V]
    if not finite.all():
        if not finite.any():
            raise PcganError(f"{path}: all {len(v)} vertices are NaN/Inf")
        keep = finite[t].all(axis=1)                                    # [F]
        if not keep.any():
            raise PcganError(f"{path}: every face touches a NaN/Inf vertex")
        mesh.warnings.append(f"{path}: {int((~finite).sum())} of {len(v)} vertices are NaN/Inf; "
                             f"dropped the {int((~keep).sum())} faces that use them")
        mesh.triangles = t[keep]
        if mesh.triangle_uvs is not None:
            mesh.triangle_uvs = mesh.triangle_uvs[keep]
        if mesh.material_ids is not None:
            mesh.material_ids = mesh.material_ids[keep]
        mesh.vertices = np.where(finite[:, None], v, 0.0)   # unused now; keeps bounds finite
    if mesh.triangle_uvs is not None and not np.isfinite(mesh.triangle_uvs).all():
        mesh.warnings.append(f"{path}: NaN/Inf texture coordinates; using vertex/default colour")
        mesh.triangle_uvs = None
    return mesh


# ---------------------------------------------------------------------------------------------
# OBJ (+ MTL)


def _floats(lines: list[bytes], path: Path, what: str) -> np.ndarray:
    """Parse 'tag a b c ...' lines with a common count of numbers into [n, k] float64."""
    if not lines:
        return np.zeros((0, 0))
    body = [ln.split(None, 1)[1] if b" " in ln or b"\t" in ln else b"" for ln in lines]
    k = len(body[0].split())
    try:
        flat = np.array(b" ".join(body).split(), dtype=np.float64)
        if k and flat.size == k * len(body):
            return flat.reshape(len(body), k)
        k = min(len(b.split()) for b in body)            # ragged lines: keep the common columns
        return np.array([b.split()[:k] for b in body], dtype=np.float64).reshape(len(body), k)
    except ValueError:
        raise PcganError(f"{path}: malformed '{what}' line (not numbers)") from None


def _read_obj(path: Path) -> MeshScan:
    data = path.read_bytes()
    if b"\0" in data[:4096]:
        raise PcganError(f"{path}: not a text OBJ file (binary content)")
    v_lines, vt_lines, f_lines = [], [], []
    f_mat, f_nv, f_nvt = [], [], []          # per face line: material, vertex / uv counts so far
    mtllibs, materials, current = [], {}, -1
    for ln in data.replace(b"\r", b"").split(b"\n"):
        head = ln[:2]
        if head == b"v " or head == b"v\t":
            v_lines.append(ln)
        elif head == b"vt":
            vt_lines.append(ln)
        elif head == b"f " or head == b"f\t":
            f_lines.append(ln)
            f_mat.append(current)
            f_nv.append(len(v_lines))
            f_nvt.append(len(vt_lines))
        elif ln.startswith(b"usemtl"):
            name = ln[6:].strip().decode("utf-8", "replace")
            current = materials.setdefault(name, len(materials))
        elif ln.startswith(b"mtllib"):
            mtllibs.append(ln[6:].strip().decode("utf-8", "replace"))

    verts = _floats(v_lines, path, "v")
    if len(verts) == 0 or verts.shape[1] < 3:
        raise PcganError(f"{path}: no vertices found (corrupt, truncated or not an OBJ file)")
    colors = None
    if verts.shape[1] >= 6:                   # 'v x y z r g b' (MeshLab, ZBrush exports)
        colors = verts[:, 3:6].astype(np.float32)
        if colors.max() > 1.0:
            colors = colors / 255.0
        colors = np.clip(colors, 0.0, 1.0)
    verts = np.ascontiguousarray(verts[:, :3])
    if not f_lines:
        return MeshScan(path, verts, np.zeros((0, 3), np.int64), vertex_colors=colors)

    # Corners: 'a', 'a/b', 'a//c' or 'a/b/c'; 1-based, negative = relative to the line.
    corners = [ln.split()[1:] for ln in f_lines]
    sizes = np.fromiter((len(c) for c in corners), dtype=np.int64, count=len(corners))   # [P]
    if sizes.min() < 3:
        raise PcganError(f"{path}: a face has fewer than 3 corners (corrupt file)")
    flat = [c for cs in corners for c in cs]
    fields = flat[0].count(b"/") + 1
    joined = b" ".join(flat).replace(b"//", b"/0/")
    try:
        if joined.count(b"/") != len(flat) * (fields - 1):
            raise ValueError("mixed corner formats")
        idx = np.array(joined.replace(b"/", b" ").split(), dtype=np.int64).reshape(len(flat), fields)
    except ValueError:
        raise PcganError(f"{path}: malformed 'f' line (corners must be v, v/vt, v//vn or v/vt/vn)") from None
    owner = np.repeat(np.arange(len(corners)), sizes)                  # [K] face line of each corner
    vi = _resolve(idx[:, 0], np.asarray(f_nv)[owner])
    ti = _resolve(idx[:, 1], np.asarray(f_nvt)[owner]) if fields >= 2 else None
    if (vi < 0).any() or (vi >= len(verts)).any():
        raise PcganError(f"{path}: a face refers to a vertex that does not exist (corrupt or truncated file)")

    # Fan-triangulate: polygon p with s corners gives (c0, ck, ck+1) for k = 1 .. s-2.
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])              # [P]
    tri_poly = np.repeat(np.arange(len(sizes)), sizes - 2)              # [F]
    first_tri = np.concatenate([[0], np.cumsum(sizes - 2)[:-1]])
    k = np.arange(len(tri_poly)) - first_tri[tri_poly] + 1
    c = np.stack([starts[tri_poly], starts[tri_poly] + k, starts[tri_poly] + k + 1], axis=1)  # [F, 3]
    mesh = MeshScan(path, verts, vi[c], vertex_colors=colors)

    uvs = _floats(vt_lines, path, "vt")
    if ti is not None and len(uvs) and (ti >= 0).all() and (ti < len(uvs)).all():
        mesh.triangle_uvs = uvs[ti[c], :2].astype(np.float32)            # [F, 3, 2]
    if materials:
        mesh.material_ids = np.asarray(f_mat, dtype=np.int64)[tri_poly]
        mesh.textures = _obj_textures(path, mtllibs, materials, mesh.warnings)
        if mesh.triangle_uvs is None and any(t is not None for t in mesh.textures):
            mesh.warnings.append(f"{path}: has a texture but no texture coordinates; using the default colour")
    return mesh


def _resolve(i: np.ndarray, count_so_far: np.ndarray) -> np.ndarray:
    """OBJ 1-based / negative-relative indices -> 0-based (-1 where the field is empty)."""
    return np.where(i > 0, i - 1, np.where(i < 0, count_so_far + i, -1))


_MAP_OPTION_ARGS = {"-blendu": 1, "-blendv": 1, "-bm": 1, "-boost": 1, "-cc": 1, "-clamp": 1,
                    "-imfchan": 1, "-mm": 2, "-o": 3, "-s": 3, "-t": 3, "-texres": 1}


def _map_filename(rest: str) -> str:
    """The file name of a 'map_Kd [options] file' line (file names may contain spaces)."""
    tok = rest.split()
    i = 0
    while i < len(tok) and tok[i] in _MAP_OPTION_ARGS:
        n = _MAP_OPTION_ARGS[tok[i]]
        i += 1
        while n and i < len(tok) and re.fullmatch(r"[-+0-9.eE]+|on|off", tok[i]):
            i, n = i + 1, n - 1
    return " ".join(tok[i:])


def _obj_textures(path: Path, mtllibs: list[str], materials: dict, warnings: list) -> list:
    """One texture (uint8 [h, w, 3]) or None per material used by the OBJ, in material order."""
    textures = [None] * len(materials)
    maps = {}
    for lib in mtllibs:
        lib_path = path.parent / lib
        if not lib_path.is_file():
            warnings.append(f"{path}: material library {lib} not found; using the default colour")
            continue
        name = None
        for raw in lib_path.read_text(errors="replace").splitlines():
            tok = raw.strip().split(None, 1)
            if len(tok) == 2 and tok[0] == "newmtl":
                name = tok[1].strip()
            elif len(tok) == 2 and tok[0] == "map_Kd" and name is not None:
                maps[name] = (lib_path, _map_filename(tok[1]))
    cache = {}
    for name, i in materials.items():
        if name not in maps:
            continue
        lib_path, fname = maps[name]
        tex_path = (lib_path.parent / fname.replace("\\", "/"))
        if tex_path not in cache:
            cache[tex_path] = _read_texture(tex_path, f"{path}: texture {fname} (from {lib_path.name})", warnings)
        textures[i] = cache[tex_path]
    return textures


def _read_texture(tex_path: Path, what: str, warnings: list):
    from PIL import Image, UnidentifiedImageError

    if not tex_path.is_file():
        warnings.append(f"{what} not found; using the default colour")
        return None
    try:
        with Image.open(tex_path) as im:
            return np.asarray(im.convert("RGB"), dtype=np.uint8)
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        warnings.append(f"{what} could not be read ({exc}); using the default colour")
        return None


# ---------------------------------------------------------------------------------------------
# Open3D formats


def _read_open3d(path: Path) -> MeshScan:
    import open3d as o3d

    ext = path.suffix.lower()
    header = ply_header(path) if ext == ".ply" else None      # raises on a non-PLY file
    if ext == ".off":
        _check_off(path)
    if ext == ".stl" and path.stat().st_size < 84:
        raise PcganError(f"{path}: too short for an STL file (corrupt or truncated)")
    # Open3D prints its own warnings for bad files; keep them off the console unless debugging.
    level = o3d.utility.VerbosityLevel.Debug if log.isEnabledFor(logging.DEBUG) else o3d.utility.VerbosityLevel.Error
    with o3d.utility.VerbosityContextManager(level):
        m = o3d.io.read_triangle_mesh(str(path), enable_post_processing=False)
    verts = np.asarray(m.vertices, dtype=np.float64)
    tris = np.asarray(m.triangles, dtype=np.int64)
    if header is not None:
        nv, nf = header["elements"].get("vertex", 0), header["elements"].get("face", 0)
        if len(verts) != nv or (nf and len(tris) < nf):
            raise PcganError(f"{path}: header declares {nv} vertices and {nf} faces but {len(verts)} "
                             f"and {len(tris)} could be read (truncated or corrupt file)")
    mesh = MeshScan(path, verts, tris)
    if m.has_vertex_colors():
        mesh.vertex_colors = np.asarray(m.vertex_colors, dtype=np.float32)
    if m.has_triangle_uvs() and len(m.triangle_uvs) == 3 * len(tris) and len(m.textures):
        mesh.triangle_uvs = np.asarray(m.triangle_uvs, dtype=np.float32).reshape(-1, 3, 2)
        ids = np.asarray(m.triangle_material_ids, dtype=np.int64)
        mesh.material_ids = ids if len(ids) == len(tris) else np.zeros(len(tris), np.int64)
        mesh.textures = [_image_rgb(t) for t in m.textures]
        if ext in (".glb", ".gltf"):   # Open3D hands glTF UVs over in OBJ convention, images upside down
            mesh.textures = [None if t is None else np.ascontiguousarray(t[::-1]) for t in mesh.textures]
        if not any(t is not None for t in mesh.textures):
            mesh.warnings.append(f"{path}: texture coordinates but no readable texture; using the default colour")
    return mesh


def _check_off(path: Path) -> None:
    """Refuse a file that is not OFF, or an OFF with no faces (Open3D returns an empty mesh)."""
    with open(path, "rb") as f:
        head = f.read(4096)
    lines = [ln.split(b"#")[0].strip() for ln in head.splitlines()]
    lines = [ln for ln in lines if ln]
    if not lines or not lines[0].startswith((b"OFF", b"COFF", b"NOFF", b"CNOFF", b"STOFF")):
        raise PcganError(f"{path}: not an OFF file (it does not start with 'OFF')")
    first = lines[0].split()
    counts = first[1:] if len(first) > 1 else (lines[1].split() if len(lines) > 1 else [])
    try:
        n_faces = int(counts[1])
    except (IndexError, ValueError):
        raise PcganError(f"{path}: OFF header has no vertex/face counts (corrupt file)") from None
    if n_faces == 0:
        raise PcganError(f"{path}: mesh has no faces")


def _image_rgb(img) -> np.ndarray | None:
    """An Open3D legacy Image -> uint8 [h, w, 3], or None when empty."""
    if img.is_empty():
        return None
    a = np.asarray(img)
    if a.dtype != np.uint8:
        a = np.clip(a.astype(np.float64) * (255.0 if a.max() <= 1.0 else 1.0), 0, 255).astype(np.uint8)
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=2)
    return np.ascontiguousarray(a[..., :3])

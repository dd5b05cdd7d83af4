"""The ICT Face Model (Light) as a second, realistic shape source for ``pcgan synth-faces``.

The model (MIT, USC ICT, https://github.com/ICT-VGL/ICT-FaceKit) is a linear morphable head:

    vertices = neutral + sum_k c_k * identity_k + sum_j w_j * expression_j

with 100 identity modes (PCA modes scaled by their standard deviation, so c_k ~ N(0, 1)) and
53 ARKit-named expression blendshapes (w_j in [0, 1]). Units are centimetres; we write mm.

Two ways to read it (:func:`load_ict_model`):

- the converted archive ``ict_facemodel.npz`` (keys ``neutral``, ``faces``, ``identity_deltas``,
  ``expression_deltas``, region ranges, ``landmarks_multipie68``; see the README beside it);
- the ``FaceXModel`` folder of a clone of ICT-FaceKit: ``generic_neutral_mesh.obj``,
  ``identity000.obj`` .. ``identity099.obj`` and one ``<expression>.obj`` per blendshape, all
  with the neutral's topology (quads and triangles, several disconnected pieces), plus
  ``vertex_indices.json`` (expression order and the 68 landmarks). Deltas are each target minus
  the neutral. Quads are split into the fan (a, b, c), (a, c, d), as in the npz.

The whole model holds the head, neck, mouth interior, eyeballs, eyelashes and helper meshes.
:func:`make_ict_face` keeps a scan-like subset (``region``): ``"head"`` = face, back of the head
and neck, the outer eyeball shells, mouth socket, gums and teeth; ``"face"`` = the model's
"full face area" plus the eyes and mouth interior. It drops the eyelashes, tear film and
occlusion helpers and the inner iris shells (hidden behind the outer eyeball shells).

Colouring reuses the procedural palette and layer order (``procedural_face.compose_colours``).
Semantic regions come from the model itself, computed on the neutral mesh and so carried along
by every identity and expression: the eyeball shells (iris and pupil by distance from the eye
axis), the outer lip contour (landmarks 48-59) for lips, the landmark brow lines (17-21,
22-26) for brows, the upper-lid landmarks (36-39, 42-45) for the lash line, the mouth socket,
gums and teeth pieces for the mouth interior, and the procedural hair boundary (azimuth and
height relative to the eye line) for the hair cap.
"""

from __future__ import annotations

import json
import logging
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pcgan.errors import PcganError

log = logging.getLogger(__name__)

# The README's "Face Model Topology" table, as half-open [start, stop) vertex and polygon ranges
# (the README writes inclusive ranges). Used for the OBJ folder, which has no ranges of its own;
# the npz stores the same numbers.
GEOMETRY_NAMES = (
    "Face", "Head and Neck", "Mouth socket", "Eye socket left", "Eye socket right",
    "Gums and tongue", "Teeth", "Eyeball left", "Eyeball right", "Lacrimal fluid left",
    "Lacrimal fluid right", "Eye blend left", "Eye blend right", "Eye occlusion left",
    "Eye occlusion right", "Eyelashes left", "Eyelashes right",
)
GEOMETRY_VERTEX_STARTS = (0, 9409, 11248, 13294, 13678, 14062, 17039, 21451, 23021, 24591, 24795,
                          24999, 25023, 25047, 25199, 25351, 26035, 26719)
GEOMETRY_POLYGON_STARTS = (0, 9230, 11144, 13226, 13630, 14034, 17006, 21496, 23094, 24692, 24855,
                           25018, 25033, 25048, 25176, 25304, 25844, 26384)
# The outer (sclera) shell of each eyeball: the first polygons of its piece ("Eyeball Details").
SCLERA_POLYGONS = {"Eyeball left": (21496, 22296), "Eyeball right": (23094, 23894)}
FULL_FACE_POLYGONS = (0, 9230)                   # "Full face area"

REGIONS = {
    "head": ("Face", "Head and Neck", "Mouth socket", "Gums and tongue", "Teeth", "Eyeball left", "Eyeball right"),
    "face": ("Face", "Mouth socket", "Gums and tongue", "Teeth", "Eyeball left", "Eyeball right"),
}

# Expressions the sampler uses: name -> (probability of use, low, high weight). Left and right
# share one draw (with a little asymmetry) where both exist.
EXPRESSION_SAMPLING = {
    "mouthSmile": (0.45, 0.2, 0.9),
    "jawOpen": (0.3, 0.1, 0.45),
    "browInnerUp": (0.3, 0.1, 0.6),
    "browDown": (0.15, 0.1, 0.5),
    "eyeBlink": (0.15, 0.05, 0.35),
    "cheekSquint": (0.25, 0.1, 0.5),
}
ICT_UNITS_TO_MM = 10.0                           # the model is in centimetres


@dataclass
class ICTModel:
    """The shape space, in the model's own units (cm). Arrays are float32 unless noted."""

    neutral: np.ndarray              # [V, 3]
    faces: np.ndarray                # [F, 3] int64 triangles (fan-split quads)
    face_to_polygon: np.ndarray      # [F] int64: the OBJ polygon of each triangle
    identity: np.ndarray             # [K, V, 3] identity modes (1 sigma each)
    expression: np.ndarray           # [E, V, 3] expression blendshapes (weight 1 each)
    expression_names: list           # [E] ARKit names with _L / _R
    landmarks68: np.ndarray          # [68] int64 Multi-PIE landmark vertex ids
    source: str                      # where it was read from
    units: str = "cm"


def _polygon_ranges() -> dict:
    return {n: (GEOMETRY_POLYGON_STARTS[i], GEOMETRY_POLYGON_STARTS[i + 1]) for i, n in enumerate(GEOMETRY_NAMES)}


def _check_shapes(model: ICTModel, where: str) -> ICTModel:
    v = model.neutral.shape
    if len(v) != 2 or v[1] != 3:
        raise PcganError(f"{where}: neutral has shape {list(v)}, expected [V, 3]")
    for name, arr in (("identity", model.identity), ("expression", model.expression)):
        if arr.ndim != 3 or arr.shape[1:] != v:
            raise PcganError(f"{where}: {name} deltas have shape {list(arr.shape)}, expected [K, {v[0]}, 3]")
    if model.faces.size and model.faces.max() >= v[0]:
        raise PcganError(f"{where}: a triangle uses vertex {int(model.faces.max())} of {v[0]}")
    if model.face_to_polygon.max(initial=0) < GEOMETRY_POLYGON_STARTS[-1] - 1 or v[0] != GEOMETRY_VERTEX_STARTS[-1]:
        raise PcganError(f"{where}: this is not the ICT Face Model Light topology "
                         f"({v[0]} vertices, expected {GEOMETRY_VERTEX_STARTS[-1]})")
    return model


def load_ict_model(path, identities: int | None = None, expressions=None, strict: bool = True) -> ICTModel:
    """Read the ICT Face Model from ``ict_facemodel.npz`` or a ``FaceXModel`` folder.

    ``identities``: keep the first K identity modes (None = all 100). ``expressions``: names to
    load (None = all); reading the OBJ folder is much faster with only the few the sampler uses
    (:data:`EXPRESSION_SAMPLING`); with ``strict=False`` names the model lacks are skipped.
    Raises PcganError naming the file on anything missing or malformed."""
    path = Path(path)
    if not path.exists():
        raise PcganError(f"ICT model {path} does not exist: pass ict_facemodel.npz or the FaceXModel folder of ICT-FaceKit")
    if path.is_dir():
        return _load_folder(path, identities, expressions, strict)
    if path.suffix != ".npz":
        raise PcganError(f"ICT model {path}: expected an .npz archive or the FaceXModel folder")
    return _load_npz(path, identities, expressions, strict)


def _load_npz(path: Path, identities, expressions, strict) -> ICTModel:
    need = ("neutral", "faces", "face_to_polygon", "identity_deltas", "expression_deltas",
            "expression_names", "landmarks_multipie68")
    try:
        data = np.load(path, allow_pickle=False)
        missing = [k for k in need if k not in data.files]
        if missing:
            raise PcganError(f"ICT model {path}: missing arrays {missing} (is this ict_facemodel.npz?)")
        names = [str(n) for n in data["expression_names"]]
        keep = _select_expressions(names, expressions, path, strict)
        ident = data["identity_deltas"]
        k = len(ident) if identities is None else min(int(identities), len(ident))
        model = ICTModel(
            neutral=data["neutral"].astype(np.float32),
            faces=data["faces"].astype(np.int64),
            face_to_polygon=data["face_to_polygon"].astype(np.int64),
            identity=ident[:k].astype(np.float32),
            expression=data["expression_deltas"][keep].astype(np.float32),
            expression_names=[names[i] for i in keep],
            landmarks68=data["landmarks_multipie68"].astype(np.int64),
            source=str(path),
        )
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        raise PcganError(f"ICT model {path}: cannot read it as an npz archive ({exc})") from None
    return _check_shapes(model, str(path))


def _select_expressions(names, wanted, where, strict: bool = True) -> list:
    if wanted is None:
        return list(range(len(names)))
    missing = [w for w in wanted if w not in names]
    wanted = [w for w in wanted if w in names]
    if missing and strict:
        raise PcganError(f"ICT model {where}: no expression(s) {missing}")
    return [names.index(w) for w in wanted]


def read_obj_vertices(path: Path) -> np.ndarray:
    """The ``v`` lines of an OBJ file: ``[V, 3]`` float32 (extra per-vertex values ignored)."""
    try:
        lines = [ln for ln in Path(path).read_bytes().splitlines() if ln.startswith(b"v ")]
    except OSError as exc:
        raise PcganError(f"cannot read {path}: {exc.strerror or exc}") from None
    if not lines:
        raise PcganError(f"{path}: no vertices ('v' lines) in this OBJ file")
    rows = [ln.split()[1:4] for ln in lines]
    return np.array(rows, dtype=np.float32)


def read_obj_polygons(path: Path) -> list:
    """The ``f`` lines of an OBJ file as lists of 0-based vertex indices (texture/normal indices dropped)."""
    polys = []
    for ln in Path(path).read_bytes().splitlines():
        if ln.startswith(b"f "):
            polys.append([int(tok.split(b"/")[0]) - 1 for tok in ln.split()[1:]])
    if not polys:
        raise PcganError(f"{path}: no faces ('f' lines) in this OBJ file")
    return polys


def triangulate(polygons) -> tuple[np.ndarray, np.ndarray]:
    """Fan-split polygons: (a, b, c, d) -> (a, b, c), (a, c, d). Returns triangles ``[F, 3]``
    int64 and, for each, the index of its polygon ``[F]`` int64."""
    tris, owner = [], []
    for i, p in enumerate(polygons):
        for k in range(1, len(p) - 1):
            tris.append((p[0], p[k], p[k + 1]))
            owner.append(i)
    return np.array(tris, dtype=np.int64), np.array(owner, dtype=np.int64)


def _load_folder(folder: Path, identities, expressions, strict) -> ICTModel:
    neutral_path = folder / "generic_neutral_mesh.obj"
    if not neutral_path.is_file():
        raise PcganError(f"ICT model folder {folder} has no generic_neutral_mesh.obj: pass ICT-FaceKit/FaceXModel")
    neutral = read_obj_vertices(neutral_path)
    faces, owner = triangulate(read_obj_polygons(neutral_path))

    id_paths = sorted(folder.glob("identity[0-9][0-9][0-9].obj"))
    if not id_paths:
        raise PcganError(f"ICT model folder {folder} has no identityNNN.obj files")
    if identities is not None:
        id_paths = id_paths[: int(identities)]

    index = folder / "vertex_indices.json"
    meta = {}
    if index.is_file():
        try:
            meta = json.loads(index.read_text())
        except (OSError, ValueError) as exc:
            raise PcganError(f"{index}: cannot read it as JSON ({exc})") from None
    names = list(meta.get("expressions") or sorted(
        p.stem for p in folder.glob("*.obj") if p.stem != "generic_neutral_mesh" and not p.stem.startswith("identity")))
    names = [n for n in names if (folder / f"{n}.obj").is_file()]
    keep = _select_expressions(names, expressions, folder, strict)
    lm = meta.get("idx_to_landmark_verts")
    if lm is None:
        raise PcganError(f"{index}: needs 'idx_to_landmark_verts' (the 68 landmarks); is this the FaceXModel folder?")

    def delta(p: Path) -> np.ndarray:
        if not p.is_file():
            raise PcganError(f"ICT model folder {folder}: missing {p.name}")
        v = read_obj_vertices(p)
        if v.shape != neutral.shape:
            raise PcganError(f"{p}: {len(v)} vertices, the neutral has {len(neutral)}")
        return v - neutral

    log.info("reading %d identity and %d expression OBJ files from %s", len(id_paths), len(keep), folder)
    model = ICTModel(
        neutral=neutral, faces=faces, face_to_polygon=owner,
        identity=np.stack([delta(p) for p in id_paths]) if id_paths else np.zeros((0,) + neutral.shape, np.float32),
        expression=np.stack([delta(folder / f"{names[i]}.obj") for i in keep]) if keep
        else np.zeros((0,) + neutral.shape, np.float32),
        expression_names=[names[i] for i in keep],
        landmarks68=np.asarray(lm, dtype=np.int64), source=str(folder),
    )
    return _check_shapes(model, str(folder))


# ---------------------------------------------------------------------------------------------
# Sampling and meshing


@dataclass
class ICTFaceParams:
    """One ICT face: identity coefficients, expression weights, colours, hair and pose."""

    identity: list = field(default_factory=list)       # [K] c_k, N(0, sigma)
    expression: dict = field(default_factory=dict)     # ARKit name -> weight in [0, 1]
    colour: object = None                              # procedural_face.ColourParams
    hair_style: str = "short"                          # as ShapeParams.hair_style
    hair_line: float = 62.0                            # mm above the eye line
    pose: object = None                                # procedural_face.Pose


def sample_ict_params(rng: np.random.Generator, model: ICTModel, sigma: float = 1.0,
                      expression_scale: float = 1.0) -> ICTFaceParams:
    """c_k ~ N(0, sigma^2) for every identity mode; a few expressions with random weights
    (:data:`EXPRESSION_SAMPLING`, times ``expression_scale``); colours, hair and pose as for
    procedural faces."""
    from data_tools import procedural_face as pf

    c = rng.normal(0.0, sigma, len(model.identity))
    weights = {}
    for base, (p, lo, hi) in EXPRESSION_SAMPLING.items():
        use, w = rng.uniform() < p, rng.uniform(lo, hi)
        asym = rng.uniform(-0.1, 0.1)
        for suffix, sgn in (("_L", 1), ("_R", -1), ("", 0)):
            name = base + suffix
            if use and name in model.expression_names:
                weights[name] = float(np.clip((w + sgn * asym) * expression_scale, 0.0, 1.0))
    style = pf.pick(rng, pf.HAIR_STYLES)
    return ICTFaceParams(identity=[float(x) for x in c], expression=weights, colour=pf.sample_colours(rng),
                         hair_style=style, hair_line=float(rng.uniform(*pf.SHAPE_RANGES["hair_line"])),
                         pose=pf.sample_pose(rng))


def ict_vertices(model: ICTModel, identity=None, expression: dict | None = None) -> np.ndarray:
    """neutral + sum_k c_k identity_k + sum_j w_j expression_j, in the model's units: ``[V, 3]`` float32."""
    v = model.neutral.astype(np.float32).copy()
    if identity is not None and len(identity):
        c = np.asarray(identity, dtype=np.float32)
        if len(c) > len(model.identity):
            raise PcganError(f"{len(c)} identity coefficients, the model has {len(model.identity)} modes")
        v += np.tensordot(c, model.identity[: len(c)], axes=1)
    for name, w in (expression or {}).items():
        if name not in model.expression_names:
            raise PcganError(f"ICT expression {name!r} is not loaded; known: {model.expression_names}")
        v += np.float32(w) * model.expression[model.expression_names.index(name)]
    return v


def _triangle_mask(model: ICTModel, region: str) -> np.ndarray:
    if region not in REGIONS:
        raise PcganError(f"ICT region {region!r}: use one of {list(REGIONS)}")
    ranges = _polygon_ranges()
    keep = np.zeros(GEOMETRY_POLYGON_STARTS[-1], bool)
    for piece in REGIONS[region]:
        a, b = SCLERA_POLYGONS.get(piece, ranges[piece])
        keep[a:b] = True
    if region == "face":
        keep[FULL_FACE_POLYGONS[1]:ranges["Face"][1]] = False
    return keep[model.face_to_polygon]


def eye_frame(model: ICTModel) -> tuple[np.ndarray, float]:
    """Offset (model units) that puts the midpoint of the eye axes at x = y = 0 and the head's
    depth centre at z = 0, and the eye spacing (half the distance between the eyes)."""
    ranges = {n: (GEOMETRY_VERTEX_STARTS[i], GEOMETRY_VERTEX_STARTS[i + 1]) for i, n in enumerate(GEOMETRY_NAMES)}
    centres = [model.neutral[slice(*ranges[n])].mean(0) for n in ("Eyeball right", "Eyeball left")]
    head = model.neutral[: ranges["Head and Neck"][1]]
    mid = (centres[0] + centres[1]) / 2
    offset = np.array([-mid[0], -mid[1], -(head[:, 2].min() + head[:, 2].max()) / 2], np.float32)
    return offset, float(abs(centres[1][0] - centres[0][0]) / 2)


def _polyline_distance(x, y, pts) -> np.ndarray:
    from data_tools.procedural_face import segment_distance
    return np.min([segment_distance(x, y, pts[i], pts[i + 1]) for i in range(len(pts) - 1)], axis=0)


def _inside_polygon(x, y, poly) -> np.ndarray:
    """Even-odd rule point-in-polygon for points (x, y) and a closed polygon [P, 2]."""
    inside = np.zeros(len(x), bool)
    px, py = poly[:, 0], poly[:, 1]
    for i in range(len(poly)):
        j = i - 1
        cross = (py[i] > y) != (py[j] > y)
        xi = px[i] + (y - py[i]) * (px[j] - px[i]) / np.where(py[j] == py[i], 1e-12, py[j] - py[i])
        inside ^= cross & (x < xi)
    return inside


def ict_regions(model: ICTModel, params: ICTFaceParams) -> tuple[dict, np.ndarray, np.ndarray]:
    """Colour regions on the model's vertices, from the neutral mesh. Returns (regions name ->
    [V] weights, material x [V] mm, material y [V] mm with the eye line at 0)."""
    from data_tools import procedural_face as pf

    s = ICT_UNITS_TO_MM
    offset, eye_half = eye_frame(model)
    p = (model.neutral + offset) * s                                     # [V, 3] mm, eyes at the origin
    x, y, z = p[:, 0], p[:, 1], p[:, 2]
    n = len(p)
    vr = {nm: (GEOMETRY_VERTEX_STARTS[i], GEOMETRY_VERTEX_STARTS[i + 1]) for i, nm in enumerate(GEOMETRY_NAMES)}
    piece = np.full(n, "", dtype=object)
    for nm, (a, b) in vr.items():
        piece[a:b] = nm
    skin = np.isin(piece, ["Face", "Head and Neck"])
    face = piece == "Face"
    lm = p[model.landmarks68]                                            # [68, 3]
    regions = {}

    # Eyes: distance from each eye's forward axis on the outer shell.
    sclera = np.zeros(n)
    iris = np.zeros(n)
    pupil = np.zeros(n)
    iris_r, iris_a = np.ones(n), np.zeros(n)
    for nm in ("Eyeball left", "Eyeball right"):
        a, b = vr[nm]
        c = p[a:b].mean(0)
        r = np.hypot(x[a:b] - c[0], y[a:b] - c[1]) / 5.8               # iris radius 5.8 mm
        front = z[a:b] > c[2]
        sclera[a:b] = 1.0
        iris[a:b] = pf.smoothstep(1.08, 0.92, r) * front
        pupil[a:b] = pf.smoothstep(0.45, 0.33, r) * front
        iris_r[a:b] = np.where(front, r, 1.0)
        iris_a[a:b] = np.arctan2(y[a:b] - c[1], x[a:b] - c[0])
    regions.update(sclera=sclera, iris=iris, pupil=pupil, iris_r=iris_r, iris_a=iris_a)

    # Lips: inside the outer lip contour, front of the face only; soft edge by distance.
    outer = lm[48:60, :2]
    closed = np.vstack([outer, outer[:1]])
    front_face = face & (z > lm[48:60, 2].min() - 8.0)
    dist = _polyline_distance(x, y, closed)
    inside = _inside_polygon(x, y, outer)
    edge = 0.5 * pf.smoothstep(0.0, 0.9, dist)
    regions["lips"] = np.where(front_face, np.where(inside, 0.5 + edge, 0.5 - edge), 0.0)
    mouth_inside = np.isin(piece, ["Mouth socket", "Gums and tongue"])
    regions["cavity"] = mouth_inside.astype(float)
    regions["teeth"] = (piece == "Teeth").astype(float)

    # Brows: bands along the landmark brow lines, thick at the inner end, thin at the outer end.
    brow = np.zeros(n)
    for ids in (range(17, 22), range(22, 27)):
        line = lm[list(ids), :2] - np.array([0.0, 1.5])
        d = _polyline_distance(x, y, line)
        inner = line[-1] if ids.start == 17 else line[0]
        t = np.clip(np.hypot(x - inner[0], y - inner[1]) / np.linalg.norm(line[0] - line[-1]), 0, 1)
        th = (6.0 - 3.5 * t) / 2
        brow = np.maximum(brow, pf.smoothstep(th + 1.2, th - 0.8, d))
    regions["brow"] = brow * face * (z > lm[17:27, 2].min() - 10.0)

    # Lash line: along the upper lids (landmarks 36-39 and 42-45), weaker along the lower lids.
    lash = np.zeros(n)
    for up, low in ((range(36, 40), [39, 40, 41, 36]), (range(42, 46), [45, 46, 47, 42])):
        du = _polyline_distance(x, y, lm[list(up), :2])
        dl = _polyline_distance(x, y, lm[low, :2])
        lash = np.maximum(lash, np.maximum(np.exp(-0.5 * (du / 0.8) ** 2), 0.35 * np.exp(-0.5 * (dl / 0.7) ** 2)))
    regions["lash"] = lash * face * (z > lm[36:48, 2].min() - 6.0)

    # Nostrils, blush, hair: procedural rules in eye-line coordinates.
    nose_tip, mouth_y = lm[30], lm[62]
    regions["nostril"] = (pf.gaussian(x, y, lm[32, 0], lm[32, 1] - 1.0, 2.6, 1.5)
                          + pf.gaussian(x, y, lm[34, 0], lm[34, 1] - 1.0, 2.6, 1.5)).clip(0, 1) * face
    regions["blush"] = (pf.gaussian(x, y, eye_half + 10, -40, 14, 11) + pf.gaussian(x, y, -eye_half - 10, -40, 14, 11)) * face
    shape = pf.ShapeParams(hair_style=params.hair_style, hair_line=params.hair_line,
                           nose_length=float(-nose_tip[1]), eye_to_chin=float(-lm[8, 1]),
                           ear_size=62.0, eye_spacing=eye_half)
    theta = np.arctan2(x, z)
    mat = pf.Material(p, np.zeros_like(p), x, y, theta, np.ones(n))
    regions["hair"] = pf.hair_mask(shape, mat, np.zeros(n)) * skin * (y > mouth_y[1])
    return regions, x, y


def make_ict_face(model: ICTModel, params: ICTFaceParams, region: str = "head"):
    """One ICT face as a :class:`procedural_face.FaceMesh` in mm: the model's eye midpoint at x = y
    = 0, then ``params.pose``. No UVs (ICT faces are written as .ply)."""
    from data_tools import procedural_face as pf

    verts = ict_vertices(model, params.identity, params.expression)
    offset, _ = eye_frame(model)
    regions, mx, my = ict_regions(model, params)
    colors = pf.compose_colours(regions, params.colour, mx, my)

    tri = model.faces[_triangle_mask(model, region)]
    used = np.unique(tri)
    remap = np.full(len(verts), -1, np.int64)
    remap[used] = np.arange(len(used))
    mm = (verts[used] + offset) * ICT_UNITS_TO_MM
    lm_ids = {"eye_right": None, "eye_left": None, "nose_tip": 30, "mouth_right": 48, "mouth_left": 54,
              "upper_lip": 51, "lower_lip": 57, "chin": 8}
    all_mm = (verts + offset) * ICT_UNITS_TO_MM
    landmarks = {}
    for name, k in lm_ids.items():
        if k is None:
            ids = [36, 39] if name == "eye_right" else [42, 45]
            pt = all_mm[model.landmarks68[ids]].mean(0)
        else:
            pt = all_mm[model.landmarks68[k]]
        landmarks[name] = pf.apply_pose(pt[None].astype(np.float64), params.pose)[0].tolist()
    mm = pf.apply_pose(mm.astype(np.float64), params.pose)
    return pf.FaceMesh(mm.astype(np.float32), remap[tri], colors[used].astype(np.float32), None, landmarks)

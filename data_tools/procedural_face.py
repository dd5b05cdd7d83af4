"""The procedural face model behind ``pcgan synth-faces``: parameters, sampling, geometry, colour.

A face is a deformed head surface over an (s, t) parameter grid: a superquadric skull whose
front carries smooth localised bumps and dents (brow ridge, eye sockets with eyeballs, nose,
cheekbones, lips, chin), whose jaw and chin taper, and whose mouth can smile and open. Every
vertex has a *material coordinate* (its place on the undeformed head, in mm), and colour is a
function of it, so vertex colours and the baked texture of the .obj variant agree, and colour
moves with the skin when the face deforms (an open mouth stretches the lip line into a dark
cavity with teeth; a smile bends the lips).

Frame and units, as a scanner would write them: millimetres, +y up, the face looks along +z,
+x to the subject's left (image right in a frontal view); the origin is near the centre of the
head at eye height, then each face gets a small random pose (a few degrees, a few mm) so that
canonicalisation has work to do.

Randomness: pass ``numpy.random.default_rng([seed, index])`` to :func:`sample_params`, so face
``index`` is the same whatever the dataset size. Files and the command line are in
:mod:`data_tools.synth_faces`.

    params = sample_params(np.random.default_rng([0, 3]))
    mesh = make_face(params)          # FaceMesh: vertices [V,3] mm, faces [F,3], colors [V,3], uvs, landmarks
    texture = face_texture(params)    # [S, S, 3] uint8 matching mesh.uvs
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, NamedTuple

import numpy as np

from pcgan.errors import PcganError


# ---------------------------------------------------------------------------------------------
# Parameters. Defaults are an average adult face; sample_params() draws from the ranges below.


@dataclass
class ShapeParams:
    """Head and feature geometry, in mm (angles in degrees)."""

    head_width: float = 150.0      # widest skull width, above the ears
    head_height: float = 222.0     # chin to crown
    head_depth: float = 192.0      # forehead to back of the head
    eye_to_chin: float = 118.0     # eye line to chin bottom: length of the lower face
    jaw_width: float = 0.80        # face width at the mouth / head width
    chin_width: float = 0.7        # chin width / jaw width
    jaw_square: float = 3.4        # superquadric exponent of the lower head: 2.6 round .. 4.2 square
    chin: float = 6.0              # chin protrusion
    forehead_slope: float = 8.0    # how far the upper forehead leans back
    brow_ridge: float = 4.0        # brow ridge protrusion
    brow_thickness: float = 7.0    # eyebrow height at its inner end (it thins outward)
    eye_spacing: float = 31.5      # half the distance between the pupils
    eye_width: float = 29.0        # eye opening, corner to corner
    eye_open: float = 10.0         # eye opening height
    eye_tilt: float = 4.0          # canthal tilt, outer corner up (deg)
    eye_socket: float = 7.0        # eye socket depth
    nose_length: float = 42.0      # eye line to nose tip, vertically
    nose_protrusion: float = 21.0  # tip height above the face
    nose_width: float = 35.0       # width across the nostril wings
    nose_bridge: float = 11.0      # bridge width
    nose_tip: float = 7.5          # tip radius
    cheekbones: float = 5.0        # cheekbone prominence
    cheeks: float = 3.0            # lower-cheek fullness
    mouth_y: float = 72.0          # eye line to mouth line, vertically
    mouth_width: float = 50.0      # corner to corner
    upper_lip: float = 7.0         # upper lip height (red part)
    lower_lip: float = 9.5         # lower lip height (red part)
    lip_protrusion: float = 3.5    # lip fullness
    ear_size: float = 62.0         # ear height
    hair_style: str = "short"      # "short", "fringe" or "bald"
    hair_line: float = 58.0        # front hairline above the eye line (at the middle)
    temples: float = 0.005         # hairline recession at the temples: rises by temples * x^2
    hair_volume: float = 6.0       # hair thickness over the skull


@dataclass
class ExpressionParams:
    """Expression, in [0, 1] or mm."""

    smile: float = 0.0             # 0 neutral .. 1 broad smile: corners up and back, cheeks raised
    mouth_open: float = 0.0        # jaw drop at the lips, mm (0 = closed)
    brow_raise: float = 0.0        # brows up (+) or down (-), mm
    gaze_x: float = 0.0            # iris offset to the subject's left, mm
    gaze_y: float = 0.0            # iris offset up, mm


@dataclass
class ColourParams:
    """Colours, sRGB in [0, 1] as scanners store them. Shared by the procedural and ICT faces."""

    skin_tone: float = 0.3         # 0 lightest .. 1 darkest along SKIN_TONES
    skin_rgb: tuple = (0.86, 0.67, 0.53)
    lip_rgb: tuple = (0.70, 0.38, 0.36)
    iris: str = "brown"            # name in IRIS_COLOURS
    iris_rgb: tuple = (0.40, 0.24, 0.12)
    hair: str = "dark brown"       # name in HAIR_COLOURS
    hair_rgb: tuple = (0.16, 0.10, 0.07)
    brow_density: float = 0.8      # how strongly brows cover the skin
    blush: float = 0.05            # cheek redness
    skin_noise: float = 0.03       # amplitude of low-frequency skin blotches
    noise_seed: int = 0            # seeds the blotch pattern


@dataclass
class Pose:
    """Rigid jitter applied last (a scan is never perfectly aligned)."""

    yaw: float = 0.0               # degrees about +y
    pitch: float = 0.0             # degrees about +x (positive looks up)
    roll: float = 0.0              # degrees about +z
    tx: float = 0.0                # mm
    ty: float = 0.0
    tz: float = 0.0


@dataclass
class FaceParams:
    """Everything that defines one procedural face; ``dataclasses.asdict`` gives its JSON."""

    shape: ShapeParams = field(default_factory=ShapeParams)
    expression: ExpressionParams = field(default_factory=ExpressionParams)
    colour: ColourParams = field(default_factory=ColourParams)
    pose: Pose = field(default_factory=Pose)

    @classmethod
    def from_dict(cls, d: dict) -> "FaceParams":
        return cls(
            shape=ShapeParams(**d.get("shape", {})),
            expression=ExpressionParams(**d.get("expression", {})),
            colour=ColourParams(**{k: tuple(v) if isinstance(v, list) else v
                                   for k, v in d.get("colour", {}).items()}),
            pose=Pose(**d.get("pose", {})),
        )


# Palettes (sRGB). Skin tones run light to dark; the others are picked with the weights given.
SKIN_TONES = np.array([
    (0.97, 0.83, 0.73), (0.93, 0.76, 0.64), (0.86, 0.66, 0.52), (0.76, 0.56, 0.41),
    (0.64, 0.45, 0.31), (0.50, 0.34, 0.23), (0.36, 0.24, 0.16), (0.27, 0.18, 0.13),
])
IRIS_COLOURS = {  # name: (rgb, weight)
    "dark brown": ((0.22, 0.13, 0.07), 0.25), "brown": ((0.40, 0.24, 0.12), 0.30),
    "hazel": ((0.46, 0.38, 0.18), 0.10), "green": ((0.30, 0.45, 0.28), 0.08),
    "blue": ((0.33, 0.50, 0.70), 0.17), "grey": ((0.50, 0.55, 0.58), 0.10),
}
HAIR_COLOURS = {
    "black": ((0.05, 0.04, 0.04), 0.25), "dark brown": ((0.15, 0.10, 0.07), 0.25),
    "brown": ((0.32, 0.21, 0.13), 0.18), "light brown": ((0.50, 0.37, 0.23), 0.10),
    "blonde": ((0.80, 0.66, 0.42), 0.09), "red": ((0.55, 0.24, 0.11), 0.05),
    "grey": ((0.60, 0.59, 0.57), 0.05), "white": ((0.85, 0.84, 0.82), 0.03),
}
HAIR_STYLES = {"short": 0.65, "fringe": 0.22, "bald": 0.13}

SCLERA = np.array([0.88, 0.85, 0.80])
PUPIL = np.array([0.03, 0.03, 0.03])
TEETH = np.array([0.93, 0.89, 0.79])
CAVITY = np.array([0.16, 0.05, 0.05])

# Sampling ranges: name -> (low, high), uniform unless sample_params says otherwise. Also the
# source of the --help text, so the documentation cannot drift from the code.
SHAPE_RANGES = {
    "head_width": (138, 160), "head_height": (205, 235), "head_depth": (180, 205),
    "jaw_width": (0.78, 0.95), "chin_width": (0.6, 0.8),
    "jaw_square": (2.8, 4.2), "chin": (4, 12), "forehead_slope": (3, 13), "brow_ridge": (2, 7), "brow_thickness": (4.5, 10),
    "eye_spacing": (29, 34), "eye_width": (26, 32), "eye_open": (8, 11.5), "eye_tilt": (-2, 9),
    "eye_socket": (5, 9), "nose_length": (38, 48), "nose_protrusion": (16, 26),
    "nose_width": (30, 42), "nose_bridge": (8, 14), "nose_tip": (6, 10), "cheekbones": (2, 8),
    "cheeks": (0, 6), "mouth_width": (44, 58), "upper_lip": (5, 9),
    "lower_lip": (7, 12), "lip_protrusion": (2, 4.5), "ear_size": (55, 68),
    "hair_line": (46, 70), "temples": (0.0, 0.009), "hair_volume": (3, 12),
}
# Vertical proportions are chained so that features never collide: name -> (the feature above
# it, gap low, gap high), e.g. the mouth line lies 24..32 mm below the nose tip.
PROPORTIONS = {"mouth_y": ("nose_length", 24, 32), "eye_to_chin": ("mouth_y", 40, 50)}
EXPRESSION_RANGES = {"smile": (0.2, 1.0), "mouth_open": (3, 18), "brow_raise": (-2, 4),
                     "gaze_x": (-2, 2), "gaze_y": (-1.5, 1.5)}
P_SMILE = 0.45       # probability of a smile (else smile = 0)
P_OPEN = 0.3         # probability of an open mouth (else mouth_open = 0)
POSE_RANGES = {"yaw": (-6, 6), "pitch": (-6, 6), "roll": (-3, 3),
               "tx": (-5, 5), "ty": (-5, 5), "tz": (-5, 5)}


def pick(rng: np.random.Generator, table: dict) -> str:
    names = list(table)
    weights = np.array([v[1] if isinstance(v, tuple) else v for v in table.values()], float)
    return names[int(rng.choice(len(names), p=weights / weights.sum()))]


def sample_colours(rng: np.random.Generator) -> ColourParams:
    """Random skin, lip, iris and hair colours (also used for ICT faces)."""
    tone = float(rng.uniform(0, 1))
    skin = np.array([np.interp(tone * (len(SKIN_TONES) - 1), np.arange(len(SKIN_TONES)), SKIN_TONES[:, c])
                     for c in range(3)])
    skin = skin * (1 + rng.uniform(-0.04, 0.04, 3))            # warm / cool / ruddy variation
    lip_red = rng.uniform(0.0, 1.0)
    lip = skin * np.array([0.86, 0.62, 0.62]) + lip_red * np.array([0.06, -0.03, -0.02]) * (1.2 - tone)
    iris = pick(rng, IRIS_COLOURS)
    hair = pick(rng, HAIR_COLOURS)
    jitter = lambda rgb, a: tuple(float(x) for x in np.clip(np.array(rgb) * (1 + rng.uniform(-a, a, 3)), 0, 1))
    return ColourParams(
        skin_tone=tone, skin_rgb=tuple(float(x) for x in np.clip(skin, 0, 1)),
        lip_rgb=tuple(float(x) for x in np.clip(lip, 0, 1)),
        iris=iris, iris_rgb=jitter(IRIS_COLOURS[iris][0], 0.12),
        hair=hair, hair_rgb=jitter(HAIR_COLOURS[hair][0], 0.12),
        brow_density=float(rng.uniform(0.55, 0.95)), blush=float(rng.uniform(0.0, 0.12)),
        skin_noise=float(rng.uniform(0.005, 0.03)), noise_seed=int(rng.integers(0, 2**31 - 1)),
    )


def sample_pose(rng: np.random.Generator) -> Pose:
    return Pose(**{k: float(rng.uniform(*r)) for k, r in POSE_RANGES.items()})


def sample_params(rng: np.random.Generator) -> FaceParams:
    """Draw one face. Use ``np.random.default_rng([seed, index])`` for reproducible datasets."""
    shape = ShapeParams(**{k: float(rng.uniform(*r)) for k, r in SHAPE_RANGES.items()})
    for name, (above, lo, hi) in PROPORTIONS.items():         # keep nose, mouth and chin in order
        setattr(shape, name, getattr(shape, above) + float(rng.uniform(lo, hi)))
    shape.hair_style = pick(rng, HAIR_STYLES)
    e = EXPRESSION_RANGES
    expression = ExpressionParams(
        smile=float(rng.uniform(*e["smile"])) if rng.uniform() < P_SMILE else 0.0,
        mouth_open=float(rng.uniform(*e["mouth_open"])) if rng.uniform() < P_OPEN else 0.0,
        brow_raise=float(rng.uniform(*e["brow_raise"])),
        gaze_x=float(rng.uniform(*e["gaze_x"])), gaze_y=float(rng.uniform(*e["gaze_y"])),
    )
    return FaceParams(shape=shape, expression=expression, colour=sample_colours(rng), pose=sample_pose(rng))


# ---------------------------------------------------------------------------------------------
# Small helpers


def smoothstep(e0: float, e1, x):
    """Smoothstep from 0 at e0 to 1 at e1 (e0 > e1 gives a falling step)."""
    t = np.clip((x - e0) / (e1 - e0), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def gaussian(x, y, cx, cy, sx, sy):
    return np.exp(-0.5 * (((x - cx) / sx) ** 2 + ((y - cy) / sy) ** 2))


def segment_distance(x, y, p0, p1):
    """Distance of points (x, y) to the 2D segment p0-p1."""
    d = np.subtract(p1, p0)
    t = np.clip(((x - p0[0]) * d[0] + (y - p0[1]) * d[1]) / (d @ d), 0.0, 1.0)
    return np.hypot(x - p0[0] - t * d[0], y - p0[1] - t * d[1])


# ---------------------------------------------------------------------------------------------
# Parameter grid. Columns run over azimuth theta (0 = straight ahead), rows over elevation phi
# (top to bottom). Samples are denser on the face than on the back of the head: u and v are
# uniform, the angles follow the inverse CDF of a density. The map is the same for every face,
# so all .obj faces share one UV layout.

THETA_MAX = math.radians(140.0)   # the back of the head stays open, like a frontal scan
PHI_MAX = math.radians(89.5)      # a tiny hole at the crown instead of a degenerate pole
PHI_MIN = math.radians(-80.0)     # and an opening under the chin


def _inverse_cdf(lo: float, hi: float, density: Callable[[np.ndarray], np.ndarray]):
    xs = np.linspace(lo, hi, 4097)
    cdf = np.concatenate([[0.0], np.cumsum(0.5 * (density(xs[1:]) + density(xs[:-1])))])
    return xs, cdf / cdf[-1]


def _plateau(x, lo, hi, soft):
    return smoothstep(lo - soft, lo, x) * smoothstep(hi + soft, hi, x)


def _theta_density(th):
    deg = np.degrees(np.abs(th))
    return 0.6 + 7.0 * smoothstep(45.0, 30.0, deg) + 1.2 * smoothstep(35.0, 50.0, deg) * smoothstep(115.0, 100.0, deg)


def _phi_density(ph):
    deg = np.degrees(ph)
    return (0.6 + 4.0 * _plateau(deg, -66.0, 26.0, 10.0)
            + 4.0 * np.exp(-0.5 * (deg / 7.0) ** 2)               # eyes
            + 5.0 * _plateau(deg, -46.0, -33.0, 4.0))             # mouth


_THETA_TABLE = _inverse_cdf(-THETA_MAX, THETA_MAX, _theta_density)
_PHI_TABLE = _inverse_cdf(PHI_MIN, PHI_MAX, _phi_density)


def grid_to_angles(s, t):
    """Parameter coordinates in [0, 1] -> (theta, phi) in radians: s runs across (subject's
    right to left), t runs down (0 = crown). The OBJ texture coordinates are (s, 1 - t)."""
    theta = np.interp(s, _THETA_TABLE[1], _THETA_TABLE[0])
    phi = np.interp(1.0 - t, _PHI_TABLE[1], _PHI_TABLE[0])
    return theta, phi


def grid_triangles(rows: int, cols: int) -> np.ndarray:
    """Two triangles per grid quad, counter-clockwise seen from outside. ``[F, 3]`` int64."""
    idx = np.arange(rows * cols).reshape(rows, cols)
    a, b = idx[:-1, :-1], idx[:-1, 1:]
    c, d = idx[1:, :-1], idx[1:, 1:]
    return np.concatenate([np.stack([a, c, b], -1).reshape(-1, 3),
                           np.stack([b, c, d], -1).reshape(-1, 3)]).astype(np.int64)


# ---------------------------------------------------------------------------------------------
# Geometry


class Material(NamedTuple):
    """Per-sample coordinates on the undeformed head (the ICT colouring builds one too)."""
    base: np.ndarray       # [N, 3] point on the undeformed (tapered) skull, mm
    radial: np.ndarray     # [N, 3] unit horizontal-ish outward direction (hair, ears)
    x: np.ndarray          # [N] material x = base x (mm)
    y: np.ndarray          # [N] material y = base y (mm); eye line at 0
    theta: np.ndarray      # [N] azimuth, radians
    front: np.ndarray      # [N] 1 on the face, fading to 0 toward the sides and back


def _ray_ellipse(sin_t, cos_t, ax: float, az: float, zc: float):
    """Distance along horizontal unit directions (sin_t, cos_t) from the origin to the ellipse
    (x/ax)^2 + ((z - zc)/az)^2 = 1, which contains the origin."""
    qa = (sin_t / ax) ** 2 + (cos_t / az) ** 2
    qb = -2.0 * cos_t * zc / az ** 2
    qc = (zc / az) ** 2 - 1.0
    return (-qb + np.sqrt(qb ** 2 - 4 * qa * qc)) / (2 * qa)


def _material(s: ShapeParams, theta, phi) -> Material:
    """The undeformed head: a superquadric skull (round cranium, squarer jaw, narrowing to the
    chin) smoothly united with an elliptic neck cut flat below. Both are star-shaped about the
    origin, so the union is the smooth maximum of their radii along each ray."""
    d = np.stack([np.sin(theta) * np.cos(phi), np.sin(phi), np.cos(theta) * np.cos(phi)], -1)
    c_front = 0.49 * s.head_depth
    c = np.where(d[:, 2] > 0, c_front, s.head_depth - c_front)
    # Vertical semi-axis and exponent blend smoothly from the cranium (up) to the jaw (down,
    # front) and the occiput (down, back), so no crease runs around the head.
    up = smoothstep(-0.12, 0.12, d[:, 1])
    fwd = smoothstep(-0.2, 0.5, d[:, 2])
    b_low = fwd * s.eye_to_chin + (1 - fwd) * 0.6 * s.eye_to_chin
    b = up * (s.head_height - s.eye_to_chin) + (1 - up) * b_low
    n1 = 2.3 + 0.4 * fwd                                        # horizontal sections: flatter face
    n2 = up * 2.4 + (1 - up) * (fwd * s.jaw_square + (1 - fwd) * 2.4)

    def radius(a):
        horiz = (np.abs(d[:, 0]) / a) ** n1 + (np.abs(d[:, 2]) / c) ** n1
        return (horiz ** (n2 / n1) + (np.abs(d[:, 1]) / b) ** n2) ** (-1.0 / n2)

    a = s.head_width / 2
    y0 = radius(a) * d[:, 1]
    taper = 1.0 - (1.0 - s.jaw_width) * smoothstep(-25.0, -90.0, y0)
    taper *= 1.0 - (1.0 - s.chin_width) * smoothstep(-75.0, -s.eye_to_chin, y0)
    r_head = radius(a * taper)
    cos_phi = np.maximum(np.cos(phi), 1e-3)
    r_neck = _ray_ellipse(np.sin(theta), np.cos(theta), 0.31 * s.head_width, 0.28 * s.head_depth,
                          -0.12 * s.head_depth) / cos_phi
    r_neck = np.where(d[:, 1] < -0.3, r_neck, 0.0)             # the neck only hangs below
    k = 16.0                                                    # polynomial smooth max: exact beyond k
    h = np.maximum(k - np.abs(r_head - r_neck), 0.0) / k
    r = np.maximum(r_head, r_neck) + h * h * k / 4
    bottom = s.eye_to_chin + 45.0                               # the neck is cut here
    r = np.minimum(r, bottom / np.maximum(-d[:, 1], 1e-6))
    p = r[:, None] * d
    radial = d * np.array([1.0, 0.35, 1.0])
    radial /= np.linalg.norm(radial, axis=1, keepdims=True)
    front = smoothstep(math.radians(100), math.radians(55), np.abs(theta))
    return Material(p, radial, p[:, 0], p[:, 1], theta, front)


def _eye_frame(s: ShapeParams, mx, my, side: int):
    """Eye-local coordinates: u along the eye (lateral +), v up, tilted by the canthal tilt."""
    cx = side * s.eye_spacing
    dx = (mx - cx) * side
    t = math.radians(s.eye_tilt)
    u = dx * math.cos(t) + my * math.sin(t)
    v = -dx * math.sin(t) + my * math.cos(t)
    return u, v


def _eye_opening(s: ShapeParams, u, v):
    """Signed distance-like value, > 0 inside the almond-shaped eye opening (mm)."""
    hw = s.eye_width / 2
    q = np.clip(1.0 - (u / hw) ** 2, 0.0, 1.0)
    upper = s.eye_open * 0.46 * q ** 0.6 * (1.0 - 0.12 * u / hw)
    lower = -s.eye_open * 0.54 * q ** 0.9
    return np.minimum(np.minimum(upper - v, v - lower), hw - np.abs(u))


class _Mouth(NamedTuple):
    mx: np.ndarray      # [N] material x / mouth half-width
    my: np.ndarray      # [N] material y above the lip line, mm
    gap: np.ndarray     # [N] half-height of the material band between the lips
    upper: np.ndarray   # [N] upper lip height here
    lower: np.ndarray   # [N] lower lip height here
    lens: np.ndarray    # [N] 1 at the mouth centre, 0 at the corners and beyond


MOUTH_BAND = 2.5        # mm: half-height of the material band between the lips (see _fields)
MOUTH_CLOSED = 0.35     # mm: half-height of that band once squeezed shut


def _mouth(s: ShapeParams, m: Material) -> _Mouth:
    hw = s.mouth_width / 2
    mx = m.x / hw
    my = m.y + s.mouth_y
    lens = np.sqrt(np.clip(1.0 - mx ** 2, 0.0, 1.0))
    ax = np.abs(m.x)
    bow = 1.0 + 0.15 * np.exp(-0.5 * ((ax - 5.5) / 2.5) ** 2) - 0.08 * np.exp(-0.5 * (ax / 2.0) ** 2)
    upper = s.upper_lip * lens ** 0.45 * bow
    lower = s.lower_lip * lens ** 0.55
    return _Mouth(mx, my, MOUTH_BAND * lens, upper, lower, lens)


def _nose(s: ShapeParams, x, y):
    """Forward displacement of the nose (mm) at material (x, y)."""
    yn, yt = 3.0, -s.nose_length
    k = np.clip((yn - y) / (yn - yt), 0.0, 1.0)
    h = 6.0 + (s.nose_protrusion - 6.0) * k ** 1.4
    h = np.where(y > yn, 6.0 * np.exp(-0.5 * ((y - yn) / 7.0) ** 2), h)
    h = np.where(y < yt, s.nose_protrusion * np.exp(-0.5 * ((y - yt) / 4.2) ** 2), h)
    width = s.nose_bridge / 2 + (s.nose_tip * 0.9 - s.nose_bridge / 2) * k ** 2
    ridge = h * np.exp(-0.5 * (x / np.maximum(width, 1.0)) ** 2)
    tip = 2.0 * gaussian(x, y, 0.0, yt, s.nose_tip, s.nose_tip * 0.85)
    ala_x = s.nose_width / 2 - 5.5
    alae = 0.42 * s.nose_protrusion * (gaussian(x, y, ala_x, yt - 5.0, 5.0, 4.5)
                                       + gaussian(x, y, -ala_x, yt - 5.0, 5.0, 4.5))
    nostrils = -2.5 * (gaussian(x, y, 5.5, yt - 8.0, 2.8, 1.6) + gaussian(x, y, -5.5, yt - 8.0, 2.8, 1.6))
    return np.maximum(ridge, 0.0) + tip + alae + nostrils


def hair_bound(s: ShapeParams, theta, x):
    """Material height (mm) above which hair grows, at azimuth ``theta`` and material ``x``: the
    front hairline (with receding temples, or a low wavy fringe), the line over the ears with
    sideburns in front of them, and the nape at the back. Blended smoothly in azimuth."""
    ath = np.degrees(np.abs(theta))
    front = s.hair_line + s.temples * x ** 2
    if s.hair_style == "fringe":
        front = min(s.hair_line, 32.0) + 2.5 * np.sin(x / 6.0) + 0.004 * x ** 2
    side = -s.nose_length * 0.4 + 0.5 * s.ear_size + 4.0              # just above the ear
    bound = front + (side - front) * smoothstep(42.0, 72.0, ath)
    bound -= 30.0 * np.exp(-0.5 * ((ath - 76.0) / 5.0) ** 2)           # sideburns
    nape = -0.55 * s.eye_to_chin
    return bound + (nape - bound) * smoothstep(100.0, 128.0, ath)


def hair_mask(s: ShapeParams, m: Material, ear, soft=2.0):
    """1 where the head is covered by hair (material coordinates). ``soft`` is the half-width
    of the edge in mm, measured across the hairline (where the hairline runs steeply down the
    side of the head, a height difference alone would give a hard edge)."""
    bound = hair_bound(s, m.theta, m.x)
    ring = np.hypot(m.base[:, 0], m.base[:, 2])                      # horizontal radius, mm
    dth = 0.01
    dx = ring * np.cos(m.theta) * dth
    slope = (hair_bound(s, m.theta + dth, m.x + dx) - hair_bound(s, m.theta - dth, m.x - dx)) \
        / np.maximum(2 * ring * dth, 1e-6)                          # mm of height per mm along the head
    across = (m.y - bound) / np.sqrt(1.0 + slope ** 2)
    mask = smoothstep(-soft, soft, across)
    if s.hair_style == "bald":
        mask *= smoothstep(math.radians(62), math.radians(80), np.abs(m.theta)) * smoothstep(40, 25, m.y)
    return mask * (1.0 - ear)


def _ear(s: ShapeParams, m: Material):
    """(mask, outward displacement) of the ears at the sides of the head."""
    cy = -s.nose_length * 0.4
    r_mm = np.linalg.norm(m.base[:, [0, 2]], axis=1)
    ev = (np.abs(m.theta) - math.radians(97)) * r_mm / (0.27 * s.ear_size)    # along the head
    eu = (m.y - cy) / (0.5 * s.ear_size)
    rr = np.sqrt(eu ** 2 + ev ** 2)
    mask = smoothstep(1.05, 0.9, rr)
    tilt = 0.55 + 0.45 * np.clip(ev + 0.2, 0, 1)                        # attached at the front
    out = 14.0 * tilt * smoothstep(1.08, 0.8, rr) - 5.0 * gaussian(eu, ev, -0.1, 0.1, 0.32, 0.3) \
        + 1.5 * np.exp(-0.5 * ((rr - 0.8) / 0.1) ** 2)                  # rim
    return mask, out


class _Fields(NamedTuple):
    disp: np.ndarray        # [N, 3] displacement from the material point, mm
    regions: dict           # name -> [N] weights for colouring


def _fields(p: FaceParams, m: Material) -> _Fields:
    """Displacements and colour regions at material points."""
    s, e = p.shape, p.expression
    x, y, f = m.x, m.y, m.front
    n = len(x)
    dz = np.zeros(n)
    dy = np.zeros(n)
    dx = np.zeros(n)

    # Forehead, brows, sockets, cheeks, muzzle, chin: broad forward bumps and dents.
    dz -= s.forehead_slope * smoothstep(22.0, 100.0, y)
    for side in (-1, 1):
        ex = side * s.eye_spacing
        dz += s.brow_ridge * gaussian(x, y, ex + side * 3, 14.0, 17.0, 6.0)
        dz -= s.eye_socket * gaussian(x, y, ex, -1.0, 14.0, 10.0)
        dz += s.cheekbones * gaussian(x, y, side * (s.eye_spacing + 12), -27.0, 15.0, 11.0)
        dx += side * 0.8 * s.cheekbones * gaussian(x, y, side * (s.eye_spacing + 30), -22.0, 14.0, 13.0)
        dz += s.cheeks * gaussian(x, y, side * 33.0, -58.0, 14.0, 14.0)
    dz += 0.7 * s.brow_ridge * gaussian(x, y, 0.0, 11.0, 9.0, 8.0)
    dz += 6.0 * gaussian(x, y, 0.0, -s.mouth_y - 4.0, 28.0, 24.0)              # teeth arch
    dz += s.chin * gaussian(x, y, 0.0, -s.eye_to_chin + 16.0, 14.0, 11.0)
    dz -= 2.0 * gaussian(x, y, 0.0, -s.mouth_y - s.lower_lip - 8.0, 13.0, 3.5)   # under the lower lip
    dz += _nose(s, x, y)

    # Mouth: lips in material coordinates, a band between them that the jaw stretches open.
    mo = _mouth(s, m)
    my, g = mo.my, mo.gap
    sub_y = -s.nose_length - 10.0
    ph = smoothstep(-s.mouth_y + g + mo.upper, -s.mouth_y + g + mo.upper + 3, y) * smoothstep(sub_y, sub_y - 3, y)
    dz -= 1.0 * ph * np.exp(-0.5 * (x / 2.2) ** 2)                              # philtrum groove
    dz += 0.5 * ph * (np.exp(-0.5 * ((x - 4.5) / 1.6) ** 2) + np.exp(-0.5 * ((x + 4.5) / 1.6) ** 2))
    tu = (my - g) / np.maximum(mo.upper, 0.5)
    tl = (-my - g) / np.maximum(mo.lower, 0.5)
    lat = mo.lens ** 0.6
    dz += s.lip_protrusion * lat * np.where(my > g, np.exp(-((tu - 0.42) / 0.42) ** 2), 0.0)
    dz += 1.15 * s.lip_protrusion * lat * np.where(my < -g, np.exp(-((tl - 0.45) / 0.45) ** 2), 0.0)
    in_band = np.abs(my) < g
    depth = 0.8 + min(0.9 * e.mouth_open, 14.0)
    dz -= np.where(in_band, depth * (1.0 - (my / np.maximum(g, 1e-6)) ** 2) * mo.lens, 0.0)

    # Squeeze the band shut (monotone per column: no folds), then drop the jaw.
    r = np.abs(my)
    closed = MOUTH_CLOSED * mo.lens
    fade = 12.0
    r_new = np.where(r < g, r * MOUTH_CLOSED / MOUTH_BAND,
                     r - (g - closed) * np.clip(1.0 - (r - g) / fade, 0.0, 1.0))
    dy += np.sign(my) * (r_new - r)
    jaw = np.exp(-0.5 * (x / 42.0) ** 2)
    below = smoothstep(-g, -g - 14.0, my)
    drop = e.mouth_open * np.where(
        my >= g, 0.0,
        np.where(my > -g, (g - my) / np.maximum(2 * g, 1e-6) * mo.lens ** 0.8,
                 (1 - below) * mo.lens ** 0.8 + below * jaw))
    dy -= drop
    dz -= 0.25 * drop * smoothstep(-g, -20.0, my)

    # Smile: corners up, out and back; cheeks up; nasolabial folds deepen.
    hw = s.mouth_width / 2
    around = gaussian(x, y, 0.0, -s.mouth_y, hw * 1.5, 16.0)
    corner = np.minimum(mo.mx ** 2, 1.3)
    dy += e.smile * 7.0 * corner * around
    dx += e.smile * 5.0 * np.clip(mo.mx, -1.3, 1.3) * around
    dz -= e.smile * 3.5 * corner * around
    for side in (-1, 1):
        cheek = gaussian(x, y, side * (s.eye_spacing + 8), -38.0, 15.0, 12.0)
        dz += e.smile * 3.5 * cheek
        dy += e.smile * 3.0 * cheek
        fold = segment_distance(x, y, (side * (s.nose_width / 2 - 1), -s.nose_length - 4),
                                 (side * (hw + 5), -s.mouth_y - 4))
        dz -= (0.6 + 2.2 * e.smile) * np.exp(-0.5 * (fold / 2.2) ** 2) * smoothstep(0, 3, side * x - 12)

    # Eyes: skin sinks into the socket; inside the opening the eyeball shows; lids rim it.
    sclera, iris, pupil, lash, corner = (np.zeros(n) for _ in range(5))
    iris_r, iris_a = np.full(n, 9.0), np.zeros(n)
    for side in (-1, 1):
        u, v = _eye_frame(s, x, y, side)
        sd = _eye_opening(s, u, v)                                      # > 0 inside the opening, mm
        inside = smoothstep(-0.5, 0.7, sd)                                  # colour edge
        opening = smoothstep(-1.2, 1.2, sd)                                 # geometry: a gentler lid edge
        ball = -3.0 - 12.0 * (1.0 - np.sqrt(np.clip(1.0 - (u / 17.0) ** 2 - (v / 13.0) ** 2, 0.02, 1.0)))
        cx, cy = side * s.eye_spacing + e.gaze_x, e.gaze_y
        rho = np.hypot(x - cx, y - cy)
        ball += 0.8 * np.exp(-0.5 * (rho / 4.5) ** 2)                   # cornea
        lid = np.exp(-0.5 * (np.maximum(-sd, 0.0) / 4.0) ** 2)          # 1 at the lid margin, fading out
        lid_surface = ball + 1.4 + 0.6 * smoothstep(-1.0, 1.0, v)          # lids wrap the eyeball
        crease = -0.8 * np.exp(-0.5 * ((-sd - 5.5) / 1.3) ** 2) * smoothstep(-1.0, 1.0, v) \
            * smoothstep(1.1, 0.7, np.abs(u) / (s.eye_width / 2))           # upper-lid fold
        skin = (1 - lid) * dz + lid * lid_surface + crease
        dz = (1 - opening) * skin + opening * ball
        sclera = np.maximum(sclera, inside)
        ri = rho / 5.8                                                  # iris radius 5.8 mm
        iris = np.maximum(iris, inside * smoothstep(1.08, 0.92, ri))
        pupil = np.maximum(pupil, inside * smoothstep(0.45, 0.33, ri))
        nearer = ri < iris_r
        iris_a = np.where(nearer, np.arctan2(y - cy, x - cx), iris_a)
        iris_r = np.minimum(iris_r, ri)
        upper_lid = smoothstep(-1.0, 1.0, v)
        lash = np.maximum(lash, np.exp(-0.5 * ((sd + 0.6) / (0.6 + 0.4 * upper_lid)) ** 2)
                          * (0.12 + 0.88 * upper_lid) * (1 - inside))
        corner = np.maximum(corner, smoothstep(0.55, 1.0, np.abs(u) / (s.eye_width / 2)))
    regions = {"sclera": sclera, "iris": iris, "pupil": pupil, "iris_r": iris_r, "iris_a": iris_a,
               "lash": lash, "eye_corner": corner}
    dy += e.brow_raise * (gaussian(x, y, s.eye_spacing, 16.0, 22.0, 10.0) + gaussian(x, y, -s.eye_spacing, 16.0, 22.0, 10.0))

    # Brows (colour only; the ridge is geometry above).
    brow = np.zeros(n)
    for side in (-1, 1):
        t = (side * x - (s.eye_spacing - 17.0)) / 36.0
        yc = 14.0 + (3.0 + 0.1 * s.brow_ridge) * np.sin(np.pi * np.clip(t, 0, 1) ** 0.8)
        th = s.brow_thickness * (1.0 - 0.55 * np.clip(t, 0, 1)) / 2
        brow = np.maximum(brow, smoothstep(th + 1.2, th - 0.8, np.abs(y - yc)) * smoothstep(-0.05, 0.04, t) * smoothstep(1.05, 0.95, t))
    regions["brow"] = brow

    # Lips, the band between them, teeth, nostrils, blush.
    lat_mask = smoothstep(1.04, 0.92, np.abs(mo.mx))
    up = np.where(my > 0, smoothstep(g + mo.upper + 1.0, g + mo.upper - 1.0, my), 0.0)
    lo = np.where(my <= 0, smoothstep(-g - mo.lower - 1.0, -g - mo.lower + 1.0, my), 0.0)
    regions["lips"] = np.maximum(up, lo) * lat_mask
    band = np.where(g > 0.05, smoothstep(g + 0.4, g - 0.4, r), 0.0) * lat_mask
    regions["line"] = band * (1.0 - smoothstep(1.0, 5.0, e.mouth_open * mo.lens))
    regions["cavity"] = band * smoothstep(1.0, 5.0, e.mouth_open * mo.lens)
    ub = my / np.maximum(g, 1e-6)
    regions["teeth"] = regions["cavity"] * (smoothstep(0.15, 0.3, ub) * smoothstep(0.97, 0.85, ub)
                                            + 0.7 * smoothstep(-0.97, -0.88, ub) * smoothstep(-0.7, -0.8, ub)) \
        * smoothstep(0.85, 0.55, np.abs(mo.mx)) * smoothstep(5.0, 9.0, e.mouth_open)
    yt = -s.nose_length
    regions["nostril"] = (gaussian(x, y, 5.5, yt - 8.0, 2.6, 1.5) + gaussian(x, y, -5.5, yt - 8.0, 2.6, 1.5)).clip(0, 1)
    regions["blush"] = gaussian(x, y, s.eye_spacing + 10, -40, 14, 11) + gaussian(x, y, -s.eye_spacing - 10, -40, 14, 11)

    # Everything so far belongs to the face: fade it out toward the sides and back.
    for k in regions:
        if k not in ("iris_r", "iris_a"):
            regions[k] = regions[k] * f
    disp = np.stack([dx, dy, dz], -1) * f[:, None]

    # Ears and hair sit on the sides and top, displaced outward.
    ear, ear_out = _ear(s, m)
    regions["hair"] = hair_mask(s, m, ear, soft=2.0 + 3.0 * (1.0 - f))   # softer where the mesh is coarse
    regions["ear"] = ear
    volume = s.hair_volume * hair_mask(s, m, ear, soft=9.0)         # geometry fades in gently
    disp += m.radial * (ear_out * ear + volume)[:, None]
    return _Fields(disp, regions)


# ---------------------------------------------------------------------------------------------
# Colour


def skin_noise(x, y, seed: int):
    """Low-frequency blotch pattern in [-1, 1] over material coordinates (mm)."""
    rng = np.random.default_rng(seed)
    out = np.zeros((len(x), 3))
    for _ in range(6):
        ang = rng.uniform(0, np.pi)
        freq = 2 * np.pi / rng.uniform(12.0, 60.0)
        phase = rng.uniform(0, 2 * np.pi)
        w = np.sin(freq * (x * np.cos(ang) + y * np.sin(ang)) + phase)
        out += w[:, None] * (1.0 + rng.uniform(-0.3, 0.3, 3))
    return out / np.sqrt(6)


def compose_colours(regions: dict, c: ColourParams, x, y) -> np.ndarray:
    """Layer skin, blush, lips, brows, hair, eyes and mouth. Returns ``[N, 3]`` float in [0, 1].

    ``regions`` maps names to ``[N]`` weights in [0, 1] (missing names count as zero):
    lips, line (closed-lip crease), cavity, teeth, nostril, blush, brow, hair, lash, sclera,
    iris, pupil, eye_corner, ear; and iris_r, iris_a: distance from the nearest iris centre /
    iris radius, and the angle about it (for the dark rim and radial fibres).
    ``x, y`` are material coordinates (mm) for the skin blotches and hair strands."""
    n = len(x)
    zero = np.zeros(n)
    get = lambda k: regions.get(k, zero)[:, None]
    skin = np.array(c.skin_rgb)[None, :] * (1.0 + c.skin_noise * skin_noise(x, y, c.noise_seed))
    redden = np.array([0.0, 0.35, 0.32])
    col = skin * (1.0 - (c.blush * get("blush") + 0.08 * get("ear")) * redden)
    lips = np.array(c.lip_rgb)[None, :] * (1.0 + 0.6 * c.skin_noise * skin_noise(x * 3, y * 3, c.noise_seed + 1))
    col = col + (lips - col) * get("lips")
    col = col * (1.0 - 0.55 * get("line"))
    col = col * (1.0 - 0.45 * get("nostril"))
    hair_rgb = np.array(c.hair_rgb)[None, :]
    strands = 1.0 + 0.07 * np.sin(x[:, None] * 1.7 + 0.3 * y[:, None]) * np.sin(y[:, None] * 0.35)
    col = col + (0.8 * hair_rgb - col) * get("brow") * c.brow_density      # brows a shade darker
    col = col + (hair_rgb * strands - col) * get("hair")
    col = col * (1.0 - 0.65 * get("lash"))
    sclera = SCLERA[None, :] * (1.0 - 0.2 * get("eye_corner") * np.array([[0.6, 1.0, 1.0]]))
    col = col + (sclera - col) * get("sclera")
    ir = np.clip(regions.get("iris_r", zero + 1.0), 0, 1)[:, None]
    streaks = 1.0 + 0.12 * np.sin(23 * get("iris_a"))                        # radial fibres
    iris = np.array(c.iris_rgb)[None, :] * (1.0 - 0.5 * smoothstep(0.75, 1.0, ir)) * streaks \
        * (1.0 + 0.35 * smoothstep(0.7, 0.4, ir))                                 # dark rim, light centre
    col = col + (iris - col) * get("iris")
    col = col + (PUPIL[None, :] - col) * get("pupil")
    col = col + (CAVITY[None, :] - col) * get("cavity")
    col = col + (TEETH[None, :] - col) * get("teeth")
    return np.clip(col, 0.0, 1.0)


# ---------------------------------------------------------------------------------------------
# The mesh


class FaceMesh(NamedTuple):
    """One face, ready to write (procedural or ICT)."""

    vertices: np.ndarray            # [V, 3] float32, mm
    faces: np.ndarray               # [F, 3] int64, counter-clockwise seen from outside
    colors: np.ndarray              # [V, 3] float32 in [0, 1] (sRGB)
    uvs: np.ndarray | None          # [V, 2] float32 texture coordinates (OBJ convention: v = 0 at the image bottom)
    landmarks: dict                 # name -> [3] float, mm, after the pose jitter
    texture: Callable | None = None  # size -> [S, S, 3] uint8 texture matching ``uvs``


def pose_matrix(pose: Pose) -> np.ndarray:
    """3x3 rotation: roll about z, then pitch about x, then yaw about y (applied to column vectors)."""
    y, p, r = (math.radians(a) for a in (pose.yaw, pose.pitch, pose.roll))
    ry = np.array([[math.cos(y), 0, math.sin(y)], [0, 1, 0], [-math.sin(y), 0, math.cos(y)]])
    rx = np.array([[1, 0, 0], [0, math.cos(p), -math.sin(p)], [0, math.sin(p), math.cos(p)]])
    rz = np.array([[math.cos(r), -math.sin(r), 0], [math.sin(r), math.cos(r), 0], [0, 0, 1]])
    return ry @ rx @ rz


def apply_pose(points: np.ndarray, pose: Pose) -> np.ndarray:
    """Rotate then translate ``[N, 3]`` points."""
    return points @ pose_matrix(pose).T + np.array([pose.tx, pose.ty, pose.tz])


LANDMARKS = ("eye_right", "eye_left", "nose_tip", "mouth_right", "mouth_left", "upper_lip", "lower_lip", "chin")


def _landmark_material(s: ShapeParams) -> dict:
    """Landmarks in material (x, y); the subject's right is -x."""
    hw = s.mouth_width / 2
    return {
        "eye_right": (-s.eye_spacing, 0.0), "eye_left": (s.eye_spacing, 0.0),
        "nose_tip": (0.0, -s.nose_length), "mouth_right": (-hw * 0.97, -s.mouth_y),
        "mouth_left": (hw * 0.97, -s.mouth_y),
        "upper_lip": (0.0, -s.mouth_y + MOUTH_BAND + 0.45 * s.upper_lip),
        "lower_lip": (0.0, -s.mouth_y - MOUTH_BAND - 0.45 * s.lower_lip),
        "chin": (0.0, -s.eye_to_chin + 12.0),
    }


def make_face(params: FaceParams, resolution: int = 112) -> FaceMesh:
    """Build one procedural face.

    ``resolution`` is the side of the (s, t) vertex grid: ``resolution**2`` vertices and
    ``2 * (resolution - 1)**2`` triangles (112 -> 24,642). Returns a FaceMesh in mm whose
    ``texture(size)`` bakes the same colours for the .obj variant."""
    if resolution < 16:
        raise PcganError(f"face resolution {resolution}: use at least 16 (default 112)")
    g = np.arange(resolution) / (resolution - 1)
    ss, tt = np.meshgrid(g, g, indexing="xy")                    # [R, R]: columns s, rows t
    theta, phi = (a.astype(np.float32) for a in grid_to_angles(ss.ravel(), tt.ravel()))
    m = _material(params.shape, theta, phi)
    fl = _fields(params, m)
    verts = m.base + fl.disp                                       # [V, 3]
    colors = compose_colours(fl.regions, params.colour, m.x, m.y)

    # Landmarks: the vertex whose material point is nearest, among front vertices.
    front = np.flatnonzero(m.front > 0.9)
    landmarks = {}
    for name, (lx, ly) in _landmark_material(params.shape).items():
        k = front[np.argmin((m.x[front] - lx) ** 2 + (m.y[front] - ly) ** 2)]
        landmarks[name] = verts[k]

    verts = apply_pose(verts, params.pose)
    landmarks = {k: apply_pose(v[None], params.pose)[0].tolist() for k, v in landmarks.items()}
    uvs = np.stack([ss.ravel(), 1.0 - tt.ravel()], -1).astype(np.float32)
    return FaceMesh(verts.astype(np.float32), grid_triangles(resolution, resolution),
                    colors.astype(np.float32), uvs, landmarks,
                    texture=lambda size: face_texture(params, size))


def face_texture(params: FaceParams, size: int = 512) -> np.ndarray:
    """The face's colour baked over the (s, t) parameter square: ``[S, S, 3]`` uint8 whose row 0
    is t = 0 (the crown), i.e. OBJ v = 1, as an image file stores it. Texel centres are sampled."""
    c = (np.arange(size) + 0.5) / size
    ss, tt = np.meshgrid(c, c, indexing="xy")                    # image row i <-> t = c[i]
    theta, phi = (a.astype(np.float32) for a in grid_to_angles(ss.ravel(), tt.ravel()))
    m = _material(params.shape, theta, phi)
    fl = _fields(params, m)
    rgb = compose_colours(fl.regions, params.colour, m.x, m.y)
    return (rgb.reshape(size, size, 3) * 255 + 0.5).astype(np.uint8)

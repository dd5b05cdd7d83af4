"""Canonicalise a scan: orientation, centre and scale, as one 4x4 ``to_canonical`` per scan.

The canonical frame (see ``pcgan/grid.py``) is right-handed with +y up and the face looking
along +z, toward the camera; +x is then the image's right, which is the subject's left.
A scan reaches it in two steps, each recorded so that every grid maps back onto its source:

1. ``to_canonical`` (4x4, per scan, stored in ``dataset.json``): scan frame and units ->
   canonical frame, a rotation about the scan's centre followed by the translation that puts
   that centre at the origin. In ``--scale per-scan`` mode it also divides by the scan's own
   half-extent, so the canonical frame is then in "per-scan units" (for mixed-unit inputs).
2. the dataset normalisation of ``GridMeta``: ``xyz_n = (xyz - center) / scale``, one center
   (the origin) and one scale for the whole dataset, chosen by :func:`dataset_scale`.

Orientation modes (``--orient``):

``auto``   PCA and three facts about faces, in this order (``auto_rotation``):
           a. *left-right symmetry*: the scan's mirror plane is found by reflecting the points
              across planes whose normals lie within 30 degrees of a principal axis, refining
              the two that reflect best by point-to-plane ICP (reflected points against the
              surface's local planes), and keeping the better. Its normal is the x axis (up
              to sign); on procedural faces it is found to ~0.02 degree.
           b. *the nose*: forward (+z) is one of the four principal directions in the mirror
              plane. For each (and views tilted up to 15 degrees from it) the high points of
              the mid-sagittal profile are scored: the seen surface around a nose tip falls
              away steeply on all four sides (left, right, up, down), while a skull, chin or
              lips fall away gently and the rim of an open scan or a cut neck has no surface
              on some side. A peak lower than the highest pays a penalty. The best score wins.
           c. *up*: the side of the tip where the profile lies deeper 2.5-6 cm away (the
              nasion and brow, not the lips and chin), with a smaller vote for the side where
              the scan is wider (forehead and temples, not jaw and neck). x = y cross z keeps
              the frame right-handed.
           Tested: the ICT mean face and 40 random ICT identities, and 40 procedural faces,
           each under a random rotation (all within 12 degrees of their own frame, which is
           what PCA's pitch leaves), and the real menpo "james" scan (tests/test_canonical.py
           runs a subset). It can fail on scans that are not roughly a whole face: give
           ``--up``/``--forward`` or per-file transforms for those. About 0.15 s per scan.
``axes``   ``--up +y --forward +z`` name the scan axes that point up and toward where the
           face looks (e.g. ``--up +z --forward -y`` for a z-up scanner).
``none``   keep the scan's orientation (it must already be y up, looking along +z).
``file``   ``--transforms T.json`` gives each file's complete 4x4 ``to_canonical`` (rotation,
           translation, optional uniform scale); it is used as is, without re-centring.

Centre: the middle of the scan's robust bounding box (0.5th-99.5th percentile of its points
per axis, in the canonical orientation), so one stray point does not move the face.

Scale (``--scale``): ``auto`` (default) takes, over the dataset, the 90th percentile of each
scan's robust half-extent in x and y (the larger of the two), so faces fill about [-1, 1] and
one oversized scan does not shrink the rest; ``per-scan`` scales each scan to its own
half-extent (mixed units); a number fixes it (scan units per normalised unit).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pcgan.errors import PcganError

log = logging.getLogger(__name__)

ORIENT_MODES = ("auto", "axes", "none", "file")
SCALE_QUANTILE = 0.9          # dataset scale: this quantile of per-scan half-extents
ROBUST_PERCENT = 0.5          # bounding boxes ignore this percentage of points at each end
MAX_ANALYSIS_POINTS = 8000   # auto orientation: points for the k-d tree and PCA (a subsample)
MIRROR_PROBE_POINTS = 1500   # auto orientation: points reflected when fitting the mirror plane
PEAK_HEIGHT_PENALTY = 3.0    # auto orientation: score cost per radius a peak lies below the highest
UP_WIDTH_WEIGHT = 0.5        # auto orientation: weight of the width cue against the profile cue
UNSURE_NOSE = 0.3            # auto orientation warns below this nose score (faces: 0.6-1.3)
UNSURE_SYMMETRY = 0.08       # ... or above this mirror residual / radius (faces: 0.015-0.06)

_AXIS_NAMES = {"x": 0, "y": 1, "z": 2}


def parse_axis(text: str) -> np.ndarray:
    """``"+y"``, ``"-z"``, ``"x"`` or ``"0,0,1"`` -> unit vector [3] float64."""
    s = text.strip().lower()
    if len(s) in (1, 2) and s[-1] in _AXIS_NAMES and (len(s) == 1 or s[0] in "+-"):
        v = np.zeros(3)
        v[_AXIS_NAMES[s[-1]]] = -1.0 if s[0] == "-" else 1.0
        return v
    try:
        v = np.array([float(t) for t in s.split(",")], dtype=np.float64)
    except ValueError:
        v = np.zeros(0)
    if v.shape != (3,) or not np.isfinite(v).all() or np.linalg.norm(v) < 1e-9:
        raise PcganError(f"axis {text!r}: use +x, -x, +y, -y, +z, -z or three numbers 'a,b,c'")
    return v / np.linalg.norm(v)


def rotation_from_axes(up: np.ndarray, forward: np.ndarray) -> np.ndarray:
    """3x3 rotation taking the scan's ``up`` to +y and ``forward`` to +z (right-handed).

    ``forward`` is made orthogonal to ``up``; they must not be parallel."""
    up = np.asarray(up, dtype=np.float64) / np.linalg.norm(up)
    fwd = np.asarray(forward, dtype=np.float64)
    fwd = fwd - (fwd @ up) * up
    if np.linalg.norm(fwd) < 1e-6:
        raise PcganError("--up and --forward are parallel: give two different axes, e.g. --up +y --forward +z")
    fwd /= np.linalg.norm(fwd)
    x = np.cross(up, fwd)
    return np.stack([x, up, fwd])                                  # rows: canonical x, y, z


def make_transform(rotation: np.ndarray, center: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """4x4 ``p -> scale * R (p - center)``."""
    T = np.eye(4)
    T[:3, :3] = scale * rotation
    T[:3, 3] = -scale * rotation @ center
    return T


def apply_transform(T: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a 4x4 transform to points ``[N, 3]``; float64 out."""
    p = np.asarray(points, dtype=np.float64)
    return p @ T[:3, :3].T + T[:3, 3]


def sample_surface(vertices: np.ndarray, triangles: np.ndarray, count: int = 20000, seed: int = 0) -> np.ndarray:
    """``count`` points spread uniformly over a mesh's area: ``[count, 3]`` float64.

    Canonicalisation works on these rather than on the vertices, whose density follows the
    mesher (a dense nose or eye region would pull the statistics). Seeded: deterministic."""
    corners = np.asarray(vertices, dtype=np.float64)[triangles]                 # [F, 3, 3]
    area = 0.5 * np.linalg.norm(np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]), axis=1)
    area = np.where(np.isfinite(area), area, 0.0)
    if not area.sum() > 0:
        raise PcganError("the mesh has no area (all faces are degenerate)")
    rng = np.random.default_rng(seed)
    cdf = np.cumsum(area)
    pick = np.minimum(np.searchsorted(cdf, rng.random(count) * cdf[-1], side="right"), len(cdf) - 1)
    r1, r2 = rng.random(count), rng.random(count)
    s1 = np.sqrt(r1)
    w = np.stack([1.0 - s1, s1 * (1.0 - r2), s1 * r2], axis=1)                 # [count, 3]
    return np.einsum("nk,nkc->nc", w, corners[pick])


def robust_bounds(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-axis (lo [3], hi [3]) ignoring ROBUST_PERCENT of the points at each end."""
    return (np.percentile(points, ROBUST_PERCENT, axis=0),
            np.percentile(points, 100 - ROBUST_PERCENT, axis=0))


def half_extent(points_canonical: np.ndarray) -> float:
    """A scan's size for scaling: the larger robust half-width in x and y (canonical frame)."""
    lo, hi = robust_bounds(points_canonical)
    return float(max(hi[0] - lo[0], hi[1] - lo[1]) / 2.0)


def dataset_scale(half_extents, quantile: float = SCALE_QUANTILE) -> float:
    """One scale for the dataset from per-scan half-extents (see the module docstring)."""
    h = np.asarray([e for e in half_extents if e > 0], dtype=np.float64)
    if h.size == 0:
        raise PcganError("no scan has a positive size: cannot choose a scale (give --scale NUMBER)")
    return float(np.quantile(h, quantile))


def load_transforms(path: str | Path) -> dict[str, np.ndarray]:
    """Per-file transforms: a JSON object ``{"file": 4x4 list, ...}`` (or ``{"file":
    {"to_canonical": 4x4}}``). Keys are matched against the scan path as given, its absolute
    path, its path relative to the JSON's folder, and its file name."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise PcganError(f"--transforms {path}: no such file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise PcganError(f"--transforms {path}: not valid JSON ({exc})") from None
    if not isinstance(raw, dict):
        raise PcganError(f"--transforms {path}: expected an object mapping file names to 4x4 matrices")
    out = {}
    for key, value in raw.items():
        if isinstance(value, dict):
            value = value.get("to_canonical")
        try:
            T = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError):
            T = np.zeros(0)
        if T.shape != (4, 4) or not np.isfinite(T).all():
            raise PcganError(f"--transforms {path}: entry {key!r} is not a 4x4 matrix of numbers")
        if abs(np.linalg.det(T[:3, :3])) < 1e-12 or not np.allclose(T[3], [0, 0, 0, 1]):
            raise PcganError(f"--transforms {path}: entry {key!r} is singular or not affine "
                             f"(last row must be 0 0 0 1)")
        out[key] = T
    out["__base__"] = path.resolve().parent        # for relative keys
    return out


def lookup_transform(transforms: dict, scan: str | Path) -> np.ndarray:
    """The transform for one scan (see :func:`load_transforms` for the matching rules)."""
    scan = Path(scan)
    base = transforms["__base__"]
    keys = [str(scan), str(scan.resolve()), scan.name]
    try:
        keys.append(str(scan.resolve().relative_to(base)))
    except ValueError:
        pass
    for k in keys:
        if k in transforms and k != "__base__":
            return transforms[k]
    raise PcganError(f"{scan}: no entry in --transforms (keys tried: {', '.join(dict.fromkeys(keys))})")


# ---------------------------------------------------------------------------------------------
# Automatic orientation


@dataclass
class AutoResult:
    rotation: np.ndarray   # [3, 3] rows = canonical x, y, z in scan coordinates
    symmetry_error: float  # median mirror residual / scan radius (0 = perfectly symmetric)
    nose_score: float      # two-sided drop at the chosen tip / scan radius
    up_margin: float       # how clearly up was decided (difference of drops / radius)


def _subsample(points: np.ndarray, n: int) -> np.ndarray:
    if len(points) <= n:
        return points
    idx = np.random.default_rng(0).choice(len(points), n, replace=False)
    return points[np.sort(idx)]


def _local_normals(X: np.ndarray, tree, k: int = 10) -> np.ndarray:
    """Unit normals ``[N, 3]`` of the points X (in ``tree``): each point's k neighbours'
    direction of least spread (sign arbitrary; point-to-plane residuals do not need it)."""
    _, idx = tree.query(X, k=k)
    nb = X[idx] - X[idx].mean(axis=1, keepdims=True)                # [N, k, 3]
    _, vecs = np.linalg.eigh(np.einsum("nki,nkj->nij", nb, nb))     # ascending eigenvalues
    return vecs[:, :, 0]


def _refine_mirror(Q: np.ndarray, tree, X: np.ndarray, normals: np.ndarray, n: np.ndarray, radius: float,
                   steps: int = 15):
    """Refine a mirror plane (unit normal n, offset o along n) of the points X (in ``tree``,
    with :func:`_local_normals` ``normals``), reflecting the probe points Q ⊂ X. Returns
    (n, o, median mirror residual / radius).

    Point-to-plane ICP: each reflected probe point is paired with its nearest point of X and
    the plane moves to shrink the pairs' distances along the surface normals there (a
    Gauss-Newton step on the plane's two tilt angles and its offset; the worst 20% of pairs
    are left out). Unlike point-to-point pairing, sliding along the surface costs nothing, so
    the plane is not held back by where the samples happen to lie: procedural faces under a
    random pose come out within 0.01-0.02 degree of their true mirror plane (point-to-point
    pairing left 0.8-6 degrees)."""
    o = float(np.median(Q @ n))
    for _ in range(steps):
        s = Q @ n - o                                               # [M] signed distance to plane
        refl = Q - 2.0 * s[:, None] * n
        _, idx = tree.query(refl, k=1)
        m = normals[idx]
        r = np.einsum("ij,ij->i", refl - X[idx], m)                 # point-to-plane residuals
        keep = np.abs(r) <= np.quantile(np.abs(r), 0.8)
        u = np.cross(n, [1.0, 0.0, 0.0] if abs(n[0]) < 0.9 else [0.0, 1.0, 0.0])
        u /= np.linalg.norm(u)
        v = np.cross(n, u)
        # d refl / d(tilt along u) = -2 (s u + (q.u) n);  d refl / d o = 2 n
        mn = m @ n
        J = np.stack([-2.0 * (s * (m @ u) + (Q @ u) * mn), -2.0 * (s * (m @ v) + (Q @ v) * mn), 2.0 * mn], 1)
        step, *_ = np.linalg.lstsq(J[keep], -r[keep], rcond=None)
        n_new = n + step[0] * u + step[1] * v
        n = n_new / np.linalg.norm(n_new)
        o = o + float(step[2])
        if np.hypot(step[0], step[1]) < 1e-5 and abs(step[2]) < 1e-5 * radius:
            break
    dist, _ = tree.query(Q - 2.0 * (Q @ n - o)[:, None] * n, k=1)
    return n, o, float(np.median(dist)) / radius


def _peaks(S: np.ndarray, d: np.ndarray, radius: float, count: int = 4) -> list[np.ndarray]:
    """Up to ``count`` separate high points of the profile ``S`` along ``d``: the highest, then
    the highest at least 0.15 radius from those already taken, within 0.3 radius of the top.
    A nose tip need not be the single highest point (lips or chin can reach as far)."""
    h = S @ d
    high = S[h >= h.max() - 0.3 * radius]
    high = high[np.argsort(-(high @ d))]                            # highest first
    taken: list[np.ndarray] = []
    while len(high) and len(taken) < count:
        taken.append(high[0])
        high = high[np.linalg.norm(high - high[0], axis=1) > 0.15 * radius]
    return taken


def _tip_score(X: np.ndarray, tree, tip: np.ndarray, d: np.ndarray, side: np.ndarray, radius: float) -> float:
    """How much ``tip`` looks like a nose tip seen from direction ``d``.

    Takes the points ``X`` at a lateral distance of 0.075-0.15 radius (about 1.2-2.5 cm on a
    head) from the tip and at most 0.3 radius below it, splits them into four sectors around d
    (toward +-``side`` and +-(side x d)), and averages each sector's median slope (height drop
    along d over lateral distance). A nose tip falls away steeply on all four sides; a skull,
    chin or lips fall away gently, and the rim of an open scan or a cut neck has no surface
    on some sides (score 0)."""
    r = 0.15 * radius
    near = X[tree.query_ball_point(tip, 0.35 * radius)]
    rel = near - tip
    height = -(rel @ d)                                              # drop below the tip
    lat = rel - np.outer(rel @ d, d)                                 # [n, 3] lateral offset
    dist = np.linalg.norm(lat, axis=1)
    outer = (dist > 0.5 * r) & (dist < r) & (height < 0.3 * radius)
    if outer.sum() < 8:
        return 0.0
    other = np.cross(side, d)
    u, v = lat[outer] @ side, lat[outer] @ other                    # [m] lateral coordinates
    # Keep the surface seen from d: the highest point per small lateral cell (hides the inside
    # of a mouth or nostrils behind the lips and the nose).
    cell = 0.02 * radius
    key = np.floor(u / cell).astype(np.int64) * 100003 + np.floor(v / cell).astype(np.int64)
    h = height[outer]
    order = np.lexsort((h, key))                                    # per cell, lowest drop first
    first = np.r_[True, key[order][1:] != key[order][:-1]]
    keep = order[first]
    u, v, h, dist_kept = u[keep], v[keep], h[keep], dist[outer][keep]
    ang = np.arctan2(v, u)                                          # [m] in (-pi, pi]
    sector = np.floor((ang + np.pi / 4) / (np.pi / 2)).astype(int) % 4
    slope = h / dist_kept
    medians = []
    for k in range(4):
        if (sector == k).sum() < 2:
            return 0.0
        medians.append(np.median(slope[sector == k]))
    return float(min(medians))


def _up_evidence(S: np.ndarray, d: np.ndarray, b: np.ndarray, tip: np.ndarray, radius: float) -> float:
    """Positive when +b is up. On the mid-sagittal profile S, compares the front-most height
    (along d) at 0.15-0.35 radius (about 2.5-6 cm on a head) above and below the tip: above
    lie the nasion and brow ridge, which sit deeper than the lips and chin below. Returns the
    mean difference / radius over a few matching bands on both sides (0 when none match)."""
    h, t = (S - tip) @ d, (S - tip) @ b
    diffs = []
    for lo in (0.15, 0.2, 0.25, 0.3):
        front = []
        for side in (1.0, -1.0):
            band = (side * t > lo * radius) & (side * t < (lo + 0.05) * radius)
            front.append(h[band].max() if band.any() else np.nan)
        if np.isfinite(front).all():
            diffs.append(front[1] - front[0])
    return float(np.mean(diffs)) / radius if diffs else 0.0


def _width_evidence(X: np.ndarray, d: np.ndarray, b: np.ndarray, tip: np.ndarray, radius: float) -> float:
    """Positive when +b is up: the scan is wider (across, along b x d) at 0.3-0.45 radius from
    the tip toward +b than toward -b, over its front half. A head is wider at the forehead and
    temples than at the jaw and neck. Returns the width difference / radius (0 if undecided)."""
    h, t = (X - tip) @ d, (X - tip) @ b
    across = X @ np.cross(b, d)
    widths = []
    for side in (1.0, -1.0):
        band = (side * t > 0.3 * radius) & (side * t < 0.45 * radius) & (h > -0.5 * radius)
        if band.sum() < 10:
            return 0.0
        widths.append(np.percentile(across[band], 97) - np.percentile(across[band], 3))
    return float(widths[0] - widths[1]) / radius


def auto_rotation(points: np.ndarray) -> AutoResult:
    """Orientation of a face scan from its points ``[N, 3]`` (scan frame), see module docstring."""
    from scipy.spatial import cKDTree

    P = _subsample(np.asarray(points, dtype=np.float64), MAX_ANALYSIS_POINTS)
    if len(P) < 20:
        raise PcganError(f"only {len(P)} points: too few to find the face's orientation "
                         f"(give --orient none or --up/--forward)")
    X = P - P.mean(axis=0)
    radius = float(np.percentile(np.linalg.norm(X, axis=1), 95))
    if radius <= 0:
        raise PcganError("all points coincide: cannot find an orientation")
    _, E = np.linalg.eigh(X.T @ X)                                  # columns: ascending variance
    tree = cKDTree(X)

    # Mirror plane: try normals in a 30-degree cone around each principal axis (hair, a neck or
    # a turned head can pull the axes that far), refine the two best, keep the better.
    probe = _subsample(X, MIRROR_PROBE_POINTS)                      # reflected; the tree has all of X
    starts = []
    for i in range(3):
        a = E[:, i]
        u = E[:, (i + 1) % 3]
        v = np.cross(a, u)
        for tilt in np.radians([0, 10, 20, 30]):
            for az in np.radians(np.arange(0, 360, 45) if tilt else [0]):
                n0 = np.cos(tilt) * a + np.sin(tilt) * (np.cos(az) * u + np.sin(az) * v)
                refl = probe - 2.0 * (probe @ n0)[:, None] * n0
                starts.append((float(np.median(tree.query(refl, k=1)[0])), i, n0))
    starts.sort(key=lambda c: c[0])
    best = None
    normals = _local_normals(X, tree)
    for _, i, n0 in starts[:2]:
        n, o, err = _refine_mirror(probe, tree, X, normals, n0, radius)
        if best is None or err < best[2]:
            best = (n, o, err, i)
    n, o, sym_err, i = best
    # In-plane principal axes: the other two eigenvectors, made orthogonal to the refined normal.
    axes = []
    for j in range(3):
        if j == i:
            continue
        a = E[:, j] - (E[:, j] @ n) * n
        for b in axes:
            a = a - (a @ b) * b
        axes.append(a / np.linalg.norm(a))

    # The mid-sagittal profile: all points (not the subsample) near the mirror plane.
    full = np.asarray(points, dtype=np.float64) - P.mean(axis=0)
    S = full[np.abs(full @ n - o) < 0.05 * radius]
    if len(S) < 20:
        S = full[np.abs(full @ n - o) < 0.15 * radius]
    if len(S) < 20:
        raise PcganError("too few points near the mirror plane to find the nose (give --up/--forward)")

    def best_view(angles):
        """The best (score, forward, perpendicular, tip, angle) over in-plane view angles."""
        best = (-np.inf, None, None, None, None)
        for theta in angles:
            d = np.cos(theta) * axes[0] + np.sin(theta) * axes[1]
            side = np.cos(theta) * axes[1] - np.sin(theta) * axes[0]
            peaks = _peaks(S, d, radius)
            for tip in peaks:
                # A lower peak (lips, chin) must be clearly sharper than the highest to win.
                lower = float((peaks[0] - tip) @ d) / radius
                score = _tip_score(X, tree, tip, d, side, radius) - PEAK_HEIGHT_PENALTY * lower
                if score > best[0]:
                    best = (score, d, side, tip, theta)
        return best

    # Forward is one of the four in-plane principal directions (they fix the pitch); each is
    # judged by its best nose-tip score over views tilted up to 15 degrees from it, since the
    # principal axes of a scan with a neck or a fringe can sit that far from the face's.
    best = (-np.inf, None, None, None, None, None)
    for k in range(4):
        theta0 = k * np.pi / 2
        score, view, view_side, tip, _ = best_view(theta0 + np.radians(np.arange(-15, 15.1, 5)))
        if score > best[0]:
            fwd = np.cos(theta0) * axes[0] + np.sin(theta0) * axes[1]
            best = (score, fwd, np.cos(theta0) * axes[1] - np.sin(theta0) * axes[0], tip, view, view_side)
    score, fwd, b, tip, view, view_side = best
    if fwd is None:
        raise PcganError("found no nose-like peak to orient the scan by (give --up/--forward)")
    # Up: the nasion lies deeper than the lips and chin, and a head is wider above its nose.
    # Both are judged from the view that saw the nose tip best.
    evidence = (_up_evidence(S, view, view_side, tip, radius)
                + UP_WIDTH_WEIGHT * _width_evidence(full, view, view_side, tip, radius))
    if view_side @ b < 0:
        evidence = -evidence
    up = b if evidence > 0 else -b
    x = np.cross(up, fwd)
    R = np.stack([x, up, fwd])                                      # rows: canonical x, y, z
    return AutoResult(rotation=R, symmetry_error=sym_err, nose_score=score, up_margin=abs(evidence))


# ---------------------------------------------------------------------------------------------
# One scan


@dataclass(frozen=True)
class CanonOptions:
    """How scans are canonicalised; part of the preprocessing options hash."""

    orient: str = "auto"                   # one of ORIENT_MODES
    up: str | None = None                  # scan axis pointing up (orient "axes")
    forward: str | None = None             # scan axis the face looks along (orient "axes")
    transforms: str | None = None          # JSON of per-file 4x4s (orient "file")
    center: str = "bbox"                   # "bbox" (robust box middle) or "none" (keep origin)
    per_scan_scale: bool = False           # fold each scan's own half-extent into to_canonical

    def __post_init__(self):
        if self.orient not in ORIENT_MODES:
            raise PcganError(f"--orient {self.orient!r}: one of {', '.join(ORIENT_MODES)}")
        if self.orient == "axes" and (self.up is None or self.forward is None):
            raise PcganError("--orient axes needs both --up and --forward (e.g. --up +y --forward +z)")
        if self.orient == "file" and not self.transforms:
            raise PcganError("--orient file needs --transforms T.json")
        if self.center not in ("bbox", "none"):
            raise PcganError(f"--center {self.center!r}: use 'bbox' or 'none'")


def canonicalise(points: np.ndarray, options: CanonOptions, scan: str | Path = "",
                 transforms: dict | None = None, keep_orientation: bool = False) -> tuple[np.ndarray, float, dict]:
    """The ``to_canonical`` 4x4 of one scan from its points ``[N, 3]`` (scan frame and units).

    ``keep_orientation`` (RGB-D scans, already in a camera frame facing the face) turns
    ``auto`` into ``none``. Returns (to_canonical [4, 4] float64, half-extent in canonical
    units, info dict for the file record)."""
    points = np.asarray(points, dtype=np.float64)
    info: dict = {"orient": options.orient}
    if options.orient == "file":
        assert transforms is not None
        T = lookup_transform(transforms, scan)
        pc = apply_transform(T, points)
        return T, half_extent(pc), info
    if options.orient == "axes":
        R = rotation_from_axes(parse_axis(options.up), parse_axis(options.forward))
    elif options.orient == "none" or keep_orientation:
        R = np.eye(3)
        info["orient"] = "none"
    else:
        res = auto_rotation(points)
        R = res.rotation
        info.update(symmetry_error=round(res.symmetry_error, 4), nose_score=round(res.nose_score, 4),
                    up_margin=round(res.up_margin, 4))
        if res.nose_score < UNSURE_NOSE or res.symmetry_error > UNSURE_SYMMETRY:
            log.warning("%s: automatic orientation is unsure (mirror residual %.3f, nose score %.2f); check "
                        "preview.png, or give --up/--forward", scan, res.symmetry_error, res.nose_score)
    rotated = points @ R.T
    if options.center == "bbox":
        lo, hi = robust_bounds(rotated)
        center_rot = (lo + hi) / 2.0
    else:
        center_rot = np.zeros(3)
    center = R.T @ center_rot                                        # back in scan coordinates
    extent = half_extent(rotated - center_rot)
    scale = 1.0
    if options.per_scan_scale:
        if extent <= 0:
            raise PcganError(f"{scan}: the scan has no extent in x and y; cannot scale it per scan")
        scale, extent = 1.0 / extent, 1.0
    return make_transform(R, center, scale), extent, info

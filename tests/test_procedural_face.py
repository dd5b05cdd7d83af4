"""The procedural face model: determinism, sizes in mm, real variation, colour regions."""

from __future__ import annotations

import dataclasses

import numpy as np

from data_tools import procedural_face as pf

RES = 32   # small meshes where only determinism matters; measurements use the default resolution


def _neutral(**expression) -> pf.FaceParams:
    p = pf.FaceParams()
    p.expression = pf.ExpressionParams(**expression)
    return p


def test_seeds_and_indices_differ():
    p00 = pf.sample_params(np.random.default_rng([0, 0]))
    p01 = pf.sample_params(np.random.default_rng([0, 1]))
    p10 = pf.sample_params(np.random.default_rng([1, 0]))
    assert p00 == pf.sample_params(np.random.default_rng([0, 0]))
    assert p00 != p01 and p00 != p10
    v00 = pf.make_face(p00, RES).vertices
    for other in (p01, p10):
        assert np.abs(pf.make_face(other, RES).vertices - v00).max() > 5.0    # mm


def test_texture_matches_vertex_colours():
    p = pf.sample_params(np.random.default_rng([0, 7]))
    mesh = pf.make_face(p, 64)
    tex = pf.face_texture(p, 256).astype(float) / 255                     # row 0 is v = 1
    col = np.clip((mesh.uvs[:, 0] * 256).astype(int), 0, 255)
    row = np.clip(((1 - mesh.uvs[:, 1]) * 256).astype(int), 0, 255)
    diff = np.abs(tex[row, col] - mesh.colors).max(1)
    assert np.median(diff) < 0.02 and np.mean(diff < 0.1) > 0.95


def test_sizes_are_in_millimetres():
    widths, heights, eyes = [], [], []
    for i in range(12):
        p = pf.sample_params(np.random.default_rng([5, i]))
        p.pose = pf.Pose()
        m = pf.make_face(p, 48)
        v, lm = m.vertices, m.landmarks
        face = v[np.abs(v[:, 1] - lm["eye_left"][1]) < 10]                  # a band at eye height
        widths.append(np.ptp(face[:, 0]))
        heights.append(v[:, 1].max() - lm["chin"][1])                      # chin to crown (with hair)
        eyes.append(lm["eye_left"][0] - lm["eye_right"][0])
    assert 130 < min(widths) and max(widths) < 200, widths                 # temples + ears
    assert 185 < min(heights) and max(heights) < 260, heights
    assert 55 < min(eyes) and max(eyes) < 72, eyes                          # pupil distance


def test_pose_jitter_is_a_rigid_motion():
    p = pf.sample_params(np.random.default_rng([2, 2]))
    still = dataclasses.replace(p, pose=pf.Pose())
    a, b = pf.make_face(still, RES).vertices, pf.make_face(p, RES).vertices
    assert np.abs(a - b).max() > 1.0
    assert np.allclose(pf.apply_pose(a.astype(np.float64), p.pose), b, atol=1e-3)
    pairs = np.random.default_rng(0).integers(0, len(a), (200, 2))
    da = np.linalg.norm(a[pairs[:, 0]] - a[pairs[:, 1]], axis=1)
    db = np.linalg.norm(b[pairs[:, 0]] - b[pairs[:, 1]], axis=1)
    assert np.allclose(da, db, atol=1e-3)


def _midline_depth(mesh, ys):
    """Depth z of the surface hit by rays along -z at x = 0, one per y (nan where missed)."""
    import open3d as o3d

    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(mesh.vertices, mesh.faces.astype(np.uint32))
    rays = np.zeros((len(ys), 6), np.float32)
    rays[:, 1], rays[:, 2], rays[:, 5] = ys, 300.0, -1.0
    t = scene.cast_rays(o3d.core.Tensor(rays))["t_hit"].numpy()
    return 300.0 - t


def _lip_gap(params) -> float:
    """Height (mm) of the opening between the lips on the midline: the longest run of rays
    passing more than 6 mm behind the front of the lips with lip surface (within 4 mm of the
    front) on both sides."""
    mesh = pf.make_face(params)
    step = 0.1
    ys = np.arange(-params.shape.mouth_y - 30, -params.shape.mouth_y + 12, step, dtype=np.float32)
    z = _midline_depth(mesh, ys)
    front = np.nanmax(z)
    deep, lip = z < front - 6.0, z > front - 4.0
    best, start = 0, None
    for i, d in enumerate(np.append(deep, False)):
        if d and start is None:
            start = i
        elif not d and start is not None:
            near = int(4.0 / step)
            if lip[max(0, start - near):start].any() and lip[i:i + near].any():
                best = max(best, i - start)
            start = None
    return best * step


def test_open_mouth_opens_a_gap_between_the_lips():
    closed = _lip_gap(_neutral())
    half = _lip_gap(_neutral(mouth_open=6.0))
    wide = _lip_gap(_neutral(mouth_open=15.0))
    assert closed < 1.0
    assert 3.0 < half < wide and wide > 10.0


def test_smile_raises_the_mouth_corners():
    def corner_lift(p):
        lm = pf.make_face(p).landmarks
        corners = (lm["mouth_left"][1] + lm["mouth_right"][1]) / 2
        centre = (lm["upper_lip"][1] + lm["lower_lip"][1]) / 2
        return corners - centre, lm["mouth_left"][0] - lm["mouth_right"][0]

    lift0, width0 = corner_lift(_neutral())
    lift1, width1 = corner_lift(_neutral(smile=1.0))
    assert lift1 - lift0 > 4.0                 # corners up relative to the lips' centre, mm
    assert width1 > width0 + 4.0               # and pulled outward


def test_face_features_protrude_and_recede():
    p = _neutral()
    mesh = pf.make_face(p)
    lm = {k: np.array(v) for k, v in mesh.landmarks.items()}
    eye_z = (lm["eye_left"][2] + lm["eye_right"][2]) / 2
    assert lm["nose_tip"][2] - eye_z > 15.0                   # the nose stands out of the face
    assert lm["nose_tip"][2] > lm["upper_lip"][2] > lm["chin"][2] - 5.0
    # The eyes sit in sockets: the brow above them is further forward.
    z = _midline_depth(mesh, np.array([0.0, 14.0], np.float32))
    assert z[1] > eye_z


def test_colours_follow_the_regions():
    p = _neutral()
    p.colour = dataclasses.replace(p.colour, iris_rgb=(0.2, 0.4, 0.8), hair_rgb=(0.1, 0.05, 0.02))
    m = pf.make_face(p)
    v, c, lm = m.vertices, m.colors, m.landmarks

    def colour_near(point, radius=2.0):
        """Mean colour of the front surface within ``radius`` mm of point, seen from the front."""
        point = np.asarray(point)
        d = np.hypot(v[:, 0] - point[0], v[:, 1] - point[1])
        near = (d < radius) & (v[:, 2] > point[2] - 6.0)
        assert near.any(), point
        return c[near].mean(0)

    skin = np.asarray(p.colour.skin_rgb)
    iris = colour_near(np.array(lm["eye_left"]) + [4.0, 0.0, 0.0])           # beside the pupil
    assert iris[2] > iris[0] + 0.2                                         # blue eyes
    assert colour_near(lm["eye_left"], radius=1.0).max() < 0.15             # black pupil
    lips = colour_near(lm["lower_lip"])
    assert lips[0] / lips[1] > 1.15 * skin[0] / skin[1]                    # redder than skin
    top = c[v[:, 1] > v[:, 1].max() - 10].mean(0)
    assert np.abs(top - p.colour.hair_rgb).max() < 0.08                    # hair on the crown

"""data_tools/canonical.py: orientation (auto, axes, file), centring and scale."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import require_realdata
from data_tools.canonical import (CanonOptions, apply_transform, auto_rotation, canonicalise, dataset_scale,
                                  load_transforms, lookup_transform, make_transform, parse_axis,
                                  rotation_from_axes, sample_surface)
from pcgan.errors import PcganError


def angle_deg(R: np.ndarray) -> float:
    """Rotation angle of a 3x3 rotation matrix."""
    return float(np.degrees(np.arccos(np.clip((np.trace(R) - 1) / 2, -1, 1))))


def random_rotation(seed: int) -> np.ndarray:
    q, r = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


def test_parse_axis_accepts_names_and_vectors():
    assert np.array_equal(parse_axis("+y"), [0, 1, 0]) and np.array_equal(parse_axis("-Z"), [0, 0, -1])
    assert np.array_equal(parse_axis("x"), [1, 0, 0])
    assert np.allclose(parse_axis("0,3,4"), [0, 0.6, 0.8])
    for bad in ("up", "+w", "1,2", "0,0,0", "nan,0,1"):
        with pytest.raises(PcganError, match="axis"):
            parse_axis(bad)


def test_rotation_from_axes_maps_up_to_y_and_forward_to_z():
    R = rotation_from_axes(parse_axis("+z"), parse_axis("-y"))     # a z-up scanner, face along -y
    assert np.allclose(R @ [0, 0, 1], [0, 1, 0]) and np.allclose(R @ [0, -1, 0], [0, 0, 1])
    assert np.isclose(np.linalg.det(R), 1.0)                       # right-handed, no mirror
    with pytest.raises(PcganError, match="parallel"):
        rotation_from_axes(parse_axis("+y"), parse_axis("-y"))


def test_make_transform_is_rotation_about_the_centre():
    R = random_rotation(0)
    c = np.array([10.0, -3.0, 2.0])
    T = make_transform(R, c, scale=0.5)
    assert np.allclose(apply_transform(T, c[None]), 0)
    p = np.random.default_rng(0).normal(size=(5, 3))
    assert np.allclose(apply_transform(T, p), 0.5 * (p - c) @ R.T)


def test_centring_and_per_scan_scale():
    rng = np.random.default_rng(0)
    pts = rng.uniform([100, 200, 300], [140, 260, 320], size=(5000, 3))   # 40 x 60 x 20 box
    T, extent, info = canonicalise(pts, CanonOptions(orient="none"))
    assert np.allclose(T[:3, :3], np.eye(3)) and info["orient"] == "none"
    assert np.allclose(T[:3, 3], [-120, -230, -310], atol=0.5)
    assert extent == pytest.approx(30, rel=0.02)                   # larger half-width of x (20) and y (30)
    T, extent, _ = canonicalise(pts, CanonOptions(orient="none", per_scan_scale=True))
    assert extent == 1.0 and np.abs(apply_transform(T, pts)[:, 1]).max() == pytest.approx(1.0, abs=0.02)


def test_dataset_scale_ignores_one_oversized_scan():
    extents = [100.0] * 19 + [1000.0]
    assert dataset_scale(extents) == pytest.approx(100.0)
    assert dataset_scale([80.0, 120.0]) == pytest.approx(116.0)
    with pytest.raises(PcganError, match="scale"):
        dataset_scale([])


def test_transforms_json_matching_and_errors(tmp_path):
    T = np.eye(4)
    T[:3, 3] = [1, 2, 3]
    (tmp_path / "t.json").write_text(json.dumps({"a.ply": T.tolist(), "sub/b.obj": {"to_canonical": T.tolist()}}))
    table = load_transforms(tmp_path / "t.json")
    assert np.array_equal(lookup_transform(table, tmp_path / "x" / "a.ply"), T)      # by file name
    assert np.array_equal(lookup_transform(table, tmp_path / "sub" / "b.obj"), T)    # relative to the JSON
    with pytest.raises(PcganError, match="no entry"):
        lookup_transform(table, tmp_path / "c.ply")
    (tmp_path / "bad.json").write_text(json.dumps({"a.ply": [[1, 0], [0, 1]]}))
    with pytest.raises(PcganError, match="not a 4x4"):
        load_transforms(tmp_path / "bad.json")
    with pytest.raises(PcganError, match="no such file"):
        load_transforms(tmp_path / "missing.json")
    T, extent, _ = canonicalise(np.zeros((10, 3)) + [5, 5, 5], CanonOptions(orient="file", transforms="t"),
                                tmp_path / "a.ply", table)
    assert np.allclose(apply_transform(T, np.array([[5.0, 5, 5]])), [[6, 7, 8]])     # used as is, no centring


def test_options_are_checked():
    with pytest.raises(PcganError, match="--up and --forward"):
        CanonOptions(orient="axes", up="+y")
    with pytest.raises(PcganError, match="--orient"):
        CanonOptions(orient="sideways")


def test_auto_orientation_finds_the_face_of_synthetic_heads():
    synth = pytest.importorskip("data_tools.synth_faces")
    from data_tools.procedural_face import pose_matrix
    for i in range(3):
        face_params = synth.sample_params(np.random.default_rng([0, i]))
        face = synth.make_face(face_params, resolution=72)
        R0 = random_rotation(i)
        pts = sample_surface(face.vertices, face.faces) @ R0.T      # the scan, turned any way
        res = auto_rotation(pts)
        # the synthetic faces look along +z with a few degrees of pose jitter
        assert angle_deg(res.rotation @ R0) < 15, f"face {i}"
        # their mirror plane is exact: the found x axis is the face's own, pose undone (point-
        # to-plane refinement; the point-to-point one it replaced was 0.8-6 degrees off here)
        residual = res.rotation @ R0 @ pose_matrix(face_params.pose)
        assert np.degrees(np.arccos(min(residual[0, 0], 1.0))) < 0.25, f"face {i}"


def test_auto_orientation_of_the_ict_mean_face_under_random_rotations():
    path = require_realdata("faces", "ict_facekit", "ict_facemodel.npz")
    model = np.load(path)
    pts = sample_surface(model["neutral"].astype(np.float64), model["faces"].astype(np.int64))
    for seed in range(4):
        R0 = random_rotation(10 + seed)
        res = auto_rotation(pts @ R0.T)
        assert angle_deg(res.rotation @ R0) < 10, f"rotation {seed}"          # ICT: y up, face along +z
        assert np.degrees(np.arccos(min((res.rotation @ R0)[0, 0], 1.0))) < 0.25    # its mirror plane is x = 0
        assert res.symmetry_error < 0.05


def test_auto_orientation_of_the_james_scan():
    from data_tools.meshes import load_mesh
    mesh = load_mesh(require_realdata("faces", "menpo3d_james", "james.obj"))
    res = auto_rotation(sample_surface(mesh.vertices, mesh.triangles))
    R = res.rotation
    # james.obj is roughly y up, looking along +z (landmarks: eyes above the mouth, nose tip at max z)
    assert R[1] @ [0, 1, 0] > 0.9 and R[2] @ [0, 0, 1] > 0.9


def test_auto_orientation_warns_when_the_scan_is_not_face_like(caplog):
    o3d = pytest.importorskip("open3d")
    s = o3d.geometry.TriangleMesh.create_sphere(radius=50.0, resolution=30)
    pts = sample_surface(np.asarray(s.vertices), np.asarray(s.triangles))
    with caplog.at_level("WARNING", logger="data_tools"):
        T, _, info = canonicalise(pts, CanonOptions(), "ball.ply")
    assert info["nose_score"] < 0.3 and "ball.ply: automatic orientation is unsure" in caplog.text
    assert np.isclose(abs(np.linalg.det(T[:3, :3])), 1.0)       # still a rotation, scan kept usable

"""The ICT Face Model shape source (npz archive and FaceXModel OBJ folder)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from data_tools import ict_model as ict
from data_tools import procedural_face as pf
from pcgan.cli import main
from pcgan.errors import PcganError

REALDATA = Path(__file__).resolve().parents[1].parent / "shared" / "realdata"
ICT_DIR = REALDATA / "faces" / "ict_facekit"
NPZ = ICT_DIR / "ict_facemodel.npz"
FLOAT16_TOL = 2e-3   # cm: the npz stores deltas as float16 (README: max error 1e-3 cm)


@pytest.fixture(scope="module")
def model():
    if not NPZ.is_file():
        pytest.skip(f"real data not available: {NPZ}")
    return ict.load_ict_model(NPZ, expressions=["jawOpen", "mouthSmile_L", "mouthSmile_R", "browInnerUp_L"])


def _zero_params(model) -> ict.ICTFaceParams:
    return ict.ICTFaceParams(identity=[0.0] * len(model.identity), expression={},
                             colour=pf.ColourParams(), hair_style="short", hair_line=60.0, pose=pf.Pose())


def test_zero_coefficients_give_the_neutral_mesh(model):
    assert np.array_equal(ict.ict_vertices(model, [0.0] * 100, {"jawOpen": 0.0}), model.neutral)
    mesh = ict.make_ict_face(model, _zero_params(model))
    offset, _ = ict.eye_frame(model)
    used = np.unique(model.faces[ict._triangle_mask(model, "head")])
    assert np.allclose(mesh.vertices, (model.neutral[used] + offset) * 10.0, atol=1e-3)   # mm
    # the same triangles, renumbered onto the kept vertices
    assert np.array_equal(used[mesh.faces], model.faces[ict._triangle_mask(model, "head")])


def test_units_and_frame(model):
    mesh = ict.make_ict_face(model, _zero_params(model))
    lm = {k: np.array(v) for k, v in mesh.landmarks.items()}
    eyes = lm["eye_left"][0] - lm["eye_right"][0]
    assert 55 < eyes < 75                                           # mm, outer-inner corner midpoints
    assert abs((lm["eye_left"][1] + lm["eye_right"][1]) / 2) < 5    # eye line near y = 0
    assert lm["nose_tip"][2] > lm["eye_left"][2] + 20               # looking along +z
    assert lm["nose_tip"][1] > lm["upper_lip"][1] > lm["lower_lip"][1] > lm["chin"][1]   # +y up
    width = np.ptp(mesh.vertices[:, 0])
    assert 200 < width < 300                                        # head and shoulders stump, mm


def test_sampled_faces_differ_and_stay_plausible(model):
    meshes = []
    for i in range(3):
        p = ict.sample_ict_params(np.random.default_rng([0, i]), model)
        assert len(p.identity) == 100 and all(0 <= w <= 1 for w in p.expression.values())
        p.pose = pf.Pose()
        meshes.append(ict.make_ict_face(model, p))
    neutral = ict.make_ict_face(model, _zero_params(model)).vertices
    for m in meshes:
        d = np.linalg.norm(m.vertices - neutral, axis=1)
        assert d.max() > 5.0 and np.median(d) < 20.0                  # mm: a new person, not a blow-up
        lm = m.landmarks
        assert 50 < lm["eye_left"][0] - lm["eye_right"][0] < 80
        assert 90 < lm["eye_left"][1] - lm["chin"][1] < 150
    assert np.abs(meshes[0].vertices - meshes[1].vertices).max() > 5.0


def test_expressions_move_the_mouth(model):
    p = _zero_params(model)
    closed = ict.make_ict_face(model, p).landmarks
    p.expression = {"jawOpen": 0.8}
    opened = ict.make_ict_face(model, p).landmarks
    gap = lambda lm: lm["upper_lip"][1] - lm["lower_lip"][1]
    assert gap(opened) - gap(closed) > 8.0                          # mm
    p.expression = {"mouthSmile_L": 1.0, "mouthSmile_R": 1.0}
    smile = ict.make_ict_face(model, p).landmarks
    assert smile["mouth_left"][0] - smile["mouth_right"][0] > closed["mouth_left"][0] - closed["mouth_right"][0] + 3


def test_colouring_regions(model):
    p = _zero_params(model)
    p.colour = pf.ColourParams(iris_rgb=(0.1, 0.3, 0.8), hair_rgb=(0.05, 0.04, 0.03))
    regions, x, y = ict.ict_regions(model, p)
    v = model.neutral
    sclera_l = slice(21451, 22221)
    assert regions["sclera"][sclera_l].min() == 1.0 and regions["iris"][sclera_l].max() > 0.99
    assert regions["lips"][model.landmarks68[62]] > 0.9             # inner upper lip point
    assert regions["lips"][model.landmarks68[30]] == 0.0            # nose tip
    crown = np.argmax(v[:11248, 1])
    assert regions["hair"][crown] > 0.99 and regions["hair"][model.landmarks68[8]] == 0.0   # chin
    mesh = ict.make_ict_face(model, p)
    assert len(np.unique(np.round(mesh.colors, 2), axis=0)) > 30


def test_face_region_is_a_subset(model):
    p = _zero_params(model)
    head = ict.make_ict_face(model, p, "head")
    face = ict.make_ict_face(model, p, "face")
    assert len(face.faces) < len(head.faces)
    assert np.ptp(face.vertices[:, 1]) < np.ptp(head.vertices[:, 1])
    with pytest.raises(PcganError, match="region"):
        ict.make_ict_face(model, p, "torso")


def _write_obj(path: Path, verts: np.ndarray, tail: bytes) -> None:
    with open(path, "wb") as f:
        np.savetxt(f, verts, fmt="v %.6f %.6f %.6f")
        f.write(tail)


def test_facexmodel_folder_matches_the_npz(model, tmp_path):
    """A FaceXModel folder built from the npz (neutral OBJ + two identity and two expression
    OBJs) reads back to the same model within float16 tolerance."""
    folder = tmp_path / "FaceXModel"
    folder.mkdir()
    src = ICT_DIR / "generic_neutral_mesh.obj"
    os.symlink(src, folder / "generic_neutral_mesh.obj")
    data = np.load(NPZ)
    tail = b"\n".join(ln for ln in src.read_bytes().splitlines() if ln.startswith(b"f ")) + b"\n"
    for k in range(2):
        _write_obj(folder / f"identity{k:03d}.obj", model.neutral + data["identity_deltas"][k].astype(np.float32), tail)
    names = [str(n) for n in data["expression_names"]]
    for name in ("jawOpen", "mouthSmile_L"):
        _write_obj(folder / f"{name}.obj", model.neutral + data["expression_deltas"][names.index(name)].astype(np.float32), tail)
    (folder / "vertex_indices.json").write_text(json.dumps({
        "expressions": names, "idx_to_landmark_verts": data["landmarks_multipie68"].tolist()}))

    m = ict.load_ict_model(folder, expressions=["jawOpen", "mouthSmile_L"])
    assert np.abs(m.neutral - model.neutral).max() < 1e-5
    assert np.array_equal(m.faces, model.faces) and np.array_equal(m.face_to_polygon, model.face_to_polygon)
    assert m.identity.shape == (2,) + model.neutral.shape
    assert np.abs(m.identity - data["identity_deltas"][:2]).max() < FLOAT16_TOL
    assert m.expression_names == ["jawOpen", "mouthSmile_L"]
    assert np.abs(m.expression[0] - model.expression[0]).max() < FLOAT16_TOL
    assert np.array_equal(m.landmarks68, model.landmarks68)
    with pytest.raises(PcganError, match="browInnerUp_L"):
        ict.load_ict_model(folder, expressions=["browInnerUp_L"])      # listed, but no OBJ file
    assert main(["synth-faces", "--n", "1", "--out", str(tmp_path / "out"), "--shape-model", "ict", str(folder)]) == 0


def test_cli_ict(tmp_path):
    if not NPZ.is_file():
        pytest.skip(f"real data not available: {NPZ}")
    out = tmp_path / "ict"
    assert main(["synth-faces", "--n", "2", "--out", str(out), "--shape-model", "ict", str(NPZ),
                 "--ict-sigma", "0.5", "--ict-identities", "20"]) == 0
    info = json.loads((out / "synth_faces.json").read_text())
    assert info["config"]["shape_model"] == "ict" and info["units"] == "mm"
    assert [r["file"] for r in info["faces"]] == ["face_000000.ply", "face_000001.ply"]
    assert len(info["faces"][0]["params"]["identity"]) == 20
    import trimesh
    t = trimesh.load(out / "face_000001.ply", process=False)
    assert len(t.faces) == info["faces"][1]["triangles"] and t.visual.vertex_colors.shape[0] == len(t.vertices)


def test_bad_model_files(tmp_path):
    with pytest.raises(PcganError, match="does not exist"):
        ict.load_ict_model(tmp_path / "nope.npz")
    (tmp_path / "empty").mkdir()
    with pytest.raises(PcganError, match="generic_neutral_mesh.obj"):
        ict.load_ict_model(tmp_path / "empty")
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, neutral=np.zeros((3, 3), np.float32))
    with pytest.raises(PcganError, match="missing arrays"):
        ict.load_ict_model(wrong)
    with pytest.raises(PcganError, match="expected an .npz"):
        ict.load_ict_model(Path(__file__))

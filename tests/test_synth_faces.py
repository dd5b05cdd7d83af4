"""pcgan synth-faces: face scans written as real mesh files, the JSON record, the command line."""

from __future__ import annotations

import json

import numpy as np
import pytest

from data_tools import synth_faces as sf
from pcgan.cli import main

RES = 32   # small meshes: these tests are about files and the command line


def test_face_i_is_the_same_whatever_n(tmp_path):
    for n in (5, 10):
        assert main(["synth-faces", "--n", str(n), "--out", str(tmp_path / f"n{n}"), "--seed", "3",
                     "--resolution", str(RES)]) == 0
    for name in ("face_000002.ply", "face_000003.obj", "face_000003.png", "face_000003.mtl"):
        assert (tmp_path / "n5" / name).read_bytes() == (tmp_path / "n10" / name).read_bytes(), name
    a = json.loads((tmp_path / "n5" / "synth_faces.json").read_text())["faces"][3]
    b = json.loads((tmp_path / "n10" / "synth_faces.json").read_text())["faces"][3]
    assert a == b


def test_files_load_in_trimesh_and_open3d_with_colour(tmp_path):
    import open3d as o3d
    import trimesh

    assert main(["synth-faces", "--n", "4", "--out", str(tmp_path), "--resolution", str(RES),
                 "--texture-size", "64"]) == 0
    ply, obj = tmp_path / "face_000000.ply", tmp_path / "face_000003.obj"
    info = json.loads((tmp_path / "synth_faces.json").read_text())
    rec = info["faces"][0]

    t = trimesh.load(ply, process=False)
    assert t.vertices.shape == (RES * RES, 3) and len(t.faces) == 2 * (RES - 1) ** 2 == rec["triangles"]
    rgb = t.visual.vertex_colors[:, :3]
    assert len(np.unique(rgb, axis=0)) > 20                                 # skin, lips, eyes, hair
    m = o3d.io.read_triangle_mesh(str(ply))
    assert m.has_vertex_colors() and len(m.triangles) == rec["triangles"]
    assert np.allclose(np.asarray(m.vertex_colors) * 255, rgb, atol=0.6)

    t = trimesh.load(obj, process=False)
    assert isinstance(t.visual, trimesh.visual.TextureVisuals)
    assert t.visual.material.image.size == (64, 64) and t.visual.uv.shape == (RES * RES, 2)
    m = o3d.io.read_triangle_mesh(str(obj))
    assert m.has_triangle_uvs() and any(np.asarray(tex).size for tex in m.textures)
    # Most faces point outward: counter-clockwise winding seen from outside.
    m.compute_triangle_normals()
    centre = np.asarray(m.vertices).mean(0)
    tri_centres = np.asarray(m.vertices)[np.asarray(m.triangles)].mean(1)
    outward = (np.asarray(m.triangle_normals) * (tri_centres - centre)).sum(1) > 0
    assert outward.mean() > 0.9


def test_ply_is_binary_and_exact(tmp_path):
    from plyfile import PlyData

    mesh = sf.make_face(sf.sample_params(np.random.default_rng([1, 1])), RES)
    sf.write_face(mesh, tmp_path / "f.ply")
    assert (tmp_path / "f.ply").read_bytes().startswith(b"ply\nformat binary_little_endian 1.0\n")
    ply = PlyData.read(str(tmp_path / "f.ply"))
    v = ply["vertex"]
    assert np.array_equal(np.stack([v["x"], v["y"], v["z"]], 1), mesh.vertices)
    assert np.array_equal(np.stack([v["red"], v["green"], v["blue"]], 1), np.rint(mesh.colors * 255))
    assert np.array_equal(np.stack(ply["face"]["vertex_indices"]), mesh.faces)
    with pytest.raises(sf.PcganError, match="ply or .obj"):
        sf.write_face(mesh, tmp_path / "f.stl")


def test_workers_give_the_same_files(tmp_path):
    cfg = sf.SynthConfig(n=3, seed=4, resolution=RES, obj_every=3, texture_size=32)
    sf.generate(cfg, tmp_path / "one")
    sf.generate(cfg, tmp_path / "two", workers=2)
    for name in ("face_000001.ply", "face_000002.obj", "face_000002.png", "synth_faces.json"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes(), name


def test_cli_writes_ply_obj_and_json(tmp_path, capsys):
    out = tmp_path / "faces"
    assert main(["synth-faces", "--n", "3", "--out", str(out), "--resolution", str(RES),
                 "--obj-every", "2", "--seed", "11"]) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == ["face_000000.ply", "face_000001.mtl", "face_000001.obj", "face_000001.png",
                     "face_000002.ply", "synth_faces.json"]
    info = json.loads((out / "synth_faces.json").read_text())
    assert info["config"]["seed"] == 11 and info["units"] == "mm" and len(info["faces"]) == 3
    rec = info["faces"][1]
    assert rec["file"] == "face_000001.obj" and rec["format"] == "obj+png"
    params = sf.FaceParams.from_dict(rec["params"])
    assert params == sf.sample_params(np.random.default_rng([11, 1]))       # the JSON reproduces the face
    assert set(rec["landmarks_mm"]) == set(sf.LANDMARKS)


def test_help_documents_the_variation(capsys):
    with pytest.raises(SystemExit):
        main(["synth-faces", "--help"])
    text = capsys.readouterr().out
    for name in list(sf.SHAPE_RANGES) + list(sf.EXPRESSION_RANGES) + ["skin_tone", "iris", "--shape-model"]:
        assert name in text, name


@pytest.mark.parametrize("argv, message", [
    (["--n", "0"], "--n 0"),
    (["--n", "-2"], "--n -2"),
    (["--n", "2", "--resolution", "4"], "--resolution"),
    (["--n", "2", "--shape-model", "banana"], "--shape-model banana"),
    (["--n", "2", "--shape-model", "ict"], "needs a PATH"),
    (["--n", "2", "--shape-model", "ict", "/no/such/ict_facemodel.npz"], "/no/such/ict_facemodel.npz"),
])
def test_bad_input_is_one_line_exit_2(tmp_path, capsys, argv, message):
    assert main(["synth-faces", "--out", str(tmp_path / "o")] + argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err


def test_unwritable_or_wrong_model_file(tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    assert main(["synth-faces", "--n", "1", "--out", str(blocker / "sub")]) == 2
    assert str(blocker) in capsys.readouterr().err
    fake = tmp_path / "model.npz"
    fake.write_text("not an archive")
    assert main(["synth-faces", "--n", "1", "--out", str(tmp_path / "o"), "--shape-model", "ict", str(fake)]) == 2
    err = capsys.readouterr().err
    assert str(fake) in err and "\n" not in err.strip()

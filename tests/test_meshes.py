"""data_tools/meshes.py: reading meshes, their UVs, textures and colours, and refusing bad files."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from PIL import Image

from conftest import require_realdata
from data_tools.meshes import load_mesh, ply_has_faces, ply_header
from pcgan.errors import PcganError


def write_ply_mesh(path, verts, faces, colors=None, binary=True):
    """A PLY mesh written by hand (vertex float xyz [+ uchar rgb], face uchar-count int list)."""
    verts = np.asarray(verts, dtype=np.float32)
    head = ["ply", f"format {'binary_little_endian' if binary else 'ascii'} 1.0",
            f"element vertex {len(verts)}", "property float x", "property float y", "property float z"]
    if colors is not None:
        head += ["property uchar red", "property uchar green", "property uchar blue"]
    head += [f"element face {len(faces)}", "property list uchar int vertex_indices", "end_header"]
    with open(path, "wb") as f:
        f.write(("\n".join(head) + "\n").encode())
        for i, v in enumerate(verts):
            if binary:
                f.write(struct.pack("<3f", *v))
                if colors is not None:
                    f.write(struct.pack("<3B", *colors[i]))
            else:
                f.write((" ".join(map(str, v)) + (" " + " ".join(map(str, colors[i])) if colors is not None else "") + "\n").encode())
        for face in faces:
            if binary:
                f.write(struct.pack(f"<B{len(face)}i", len(face), *face))
            else:
                f.write((f"{len(face)} " + " ".join(map(str, face)) + "\n").encode())


QUAD_OBJ = """\
mtllib quad.mtl
v -1 -1 0
v 1 -1 0
v 1 1 0
v -1 1 0
v 3 -1 0
v 3 1 0
vt 0 0
vt 1 0
vt 1 1
vt 0 1
usemtl red
f 1/1 2/2 3/3 4/4
usemtl blue
f -5/1 -2/2 -1/3 -4/4
"""
QUAD_MTL = "newmtl red\nKd 1 0 0\nmap_Kd red.png\nnewmtl blue\nKd 0 0 1\nmap_Kd -s 1 1 1 blue tex.png\n"


@pytest.fixture
def quad_obj(tmp_path):
    (tmp_path / "quad.obj").write_text(QUAD_OBJ)
    (tmp_path / "quad.mtl").write_text(QUAD_MTL)
    Image.fromarray(np.full((4, 4, 3), (255, 0, 0), np.uint8)).save(tmp_path / "red.png")
    Image.fromarray(np.full((2, 8, 3), (0, 0, 255), np.uint8)).save(tmp_path / "blue tex.png")
    return tmp_path / "quad.obj"


def test_obj_quads_are_fan_triangulated_with_per_corner_uvs_and_materials(quad_obj):
    m = load_mesh(quad_obj)
    assert m.vertices.shape == (6, 3) and m.triangles.shape == (4, 3)
    # quad (1 2 3 4) -> (1 2 3), (1 3 4); the second quad uses negative (relative) indices
    assert m.triangles.tolist() == [[0, 1, 2], [0, 2, 3], [1, 4, 5], [1, 5, 2]]
    assert m.triangle_uvs.shape == (4, 3, 2)
    assert np.allclose(m.triangle_uvs[1], [[0, 0], [1, 1], [0, 1]])
    assert m.material_ids.tolist() == [0, 0, 1, 1]
    assert m.textures[0].shape == (4, 4, 3) and m.textures[1].shape == (2, 8, 3)   # file name with a space
    assert tuple(m.textures[1][0, 0]) == (0, 0, 255)
    assert m.warnings == [] and m.has_texture


def test_missing_texture_is_a_warning_naming_the_file_not_an_error(quad_obj):
    (quad_obj.parent / "blue tex.png").unlink()
    m = load_mesh(quad_obj)
    assert m.textures[1] is None and m.textures[0] is not None
    assert len(m.warnings) == 1 and "blue tex.png" in m.warnings[0] and "not found" in m.warnings[0]
    (quad_obj.parent / "quad.mtl").unlink()
    m = load_mesh(quad_obj)
    assert not m.has_texture and "quad.mtl" in m.warnings[0]


def test_obj_vertex_colours_in_0_255_are_scaled(tmp_path):
    p = tmp_path / "c.obj"
    p.write_text("v 0 0 0 255 0 0\nv 1 0 0 0 255 0\nv 0 1 0 0 0 255\nf 1 2 3\n")
    m = load_mesh(p)
    assert np.allclose(m.vertex_colors, np.eye(3))


def test_ply_mesh_with_vertex_colours_and_a_quad(tmp_path):
    verts = [[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]]
    cols = [[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 255]]
    for binary in (True, False):
        p = tmp_path / f"q{binary}.ply"
        write_ply_mesh(p, verts, [[0, 1, 2, 3]], cols, binary=binary)
        assert ply_has_faces(p) and ply_header(p)["elements"] == {"vertex": 4, "face": 1}
        m = load_mesh(p)
        assert len(m.triangles) == 2 and np.allclose(m.vertices, verts)
        assert np.allclose(m.vertex_colors[2], [0, 0, 1])


def test_ply_without_faces_is_a_point_cloud(tmp_path):
    p = tmp_path / "pts.ply"
    write_ply_mesh(p, np.random.default_rng(0).random((20, 3)), [])
    assert not ply_has_faces(p)


def test_glb_texture_lookup_matches_obj_orientation(tmp_path):
    trimesh = pytest.importorskip("trimesh")
    img = np.zeros((8, 8, 3), np.uint8)
    img[:4, :, 1] = 255          # top half of the image green
    img[4:, :, 0] = 255          # bottom half red
    quad = trimesh.Trimesh([[-1, -1, 0], [1, -1, 0], [1, 1, 0], [-1, 1, 0]], [[0, 1, 2], [0, 2, 3]],
                           visual=trimesh.visual.TextureVisuals(uv=[[0, 0], [1, 0], [1, 1], [0, 1]],
                                                                image=Image.fromarray(img)), process=False)
    quad.export(tmp_path / "q.glb")
    m = load_mesh(tmp_path / "q.glb")
    assert m.has_texture
    # the corner at (1, 1) (top right of the quad) has v = 1, the top row of the image in OBJ terms
    top = np.where(np.all(m.vertices == [1, 1, 0], axis=1))[0][0]
    f, c = np.argwhere(m.triangles == top)[0]
    assert np.allclose(m.triangle_uvs[f, c], [1, 1])


@pytest.mark.parametrize("name, content, message", [
    ("empty.ply", b"", "file is empty"),
    ("noise.ply", bytes(np.random.default_rng(1).integers(0, 256, 3000, dtype=np.uint8)), "not a PLY"),
    ("noise.obj", b"\x00\x01garbage" * 50, "not a text OBJ"),
    ("words.obj", b"hello world\nthis is not a mesh\n", "no vertices"),
    ("points.obj", b"v 0 0 0\nv 1 0 0\nv 0 1 0\n", "mesh has no faces"),
    ("bad_index.obj", b"v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 7\n", "does not exist"),
    ("nan.obj", b"v nan 0 0\nv 0 nan 0\nv 0 0 nan\nf 1 2 3\n", "NaN/Inf"),
    ("points.off", b"OFF\n3 0 0\n0 0 0\n1 0 0\n0 1 0\n", "mesh has no faces"),
    ("short.stl", b"solid x\n", "STL"),
    ("mesh.xyz1", b"1 2 3\n", "unknown mesh extension"),
])
def test_bad_files_raise_one_line_naming_the_file(tmp_path, name, content, message):
    p = tmp_path / name
    p.write_bytes(content)
    with pytest.raises(PcganError, match=message) as info:
        load_mesh(p)
    assert str(p) in str(info.value) and "\n" not in str(info.value)


def test_truncated_binary_ply_is_refused(tmp_path):
    p = tmp_path / "t.ply"
    rng = np.random.default_rng(0)
    write_ply_mesh(p, rng.random((50, 3)), rng.integers(0, 50, (80, 3)).tolist())
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(PcganError, match="truncated|corrupt") as info:
        load_mesh(p)
    assert str(p) in str(info.value)


def test_a_few_nan_vertices_drop_their_faces_with_a_warning(tmp_path):
    p = tmp_path / "n.obj"
    p.write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nv nan 1 0\nf 1 2 3\nf 2 4 3\n")
    m = load_mesh(p)
    assert m.triangles.tolist() == [[0, 1, 2]]
    assert "NaN" in m.warnings[0] and np.isfinite(m.vertices).all()


def test_realdata_james_has_per_corner_uvs_and_its_texture():
    path = require_realdata("faces", "menpo3d_james", "james.obj")
    m = load_mesh(path)
    assert m.vertices.shape == (6393, 3) and m.triangles.shape == (12228, 3)
    assert m.triangle_uvs.shape == (12228, 3, 2) and m.textures[0].shape == (1600, 2400, 3)
    # per-corner UVs: some vertex is used with two different UVs (a seam)
    uv_of = {}
    seams = 0
    for (v, uv) in zip(m.triangles.ravel()[:30000], m.triangle_uvs.reshape(-1, 2)[:30000]):
        seams += v in uv_of and not np.allclose(uv_of[v], uv)
        uv_of.setdefault(v, uv)
    assert seams > 0 and m.warnings == []


def test_realdata_ict_quads_triangulate_like_the_model_archive():
    path = require_realdata("faces", "ict_facekit", "generic_neutral_mesh.obj")
    npz = require_realdata("faces", "ict_facekit", "ict_facemodel.npz")
    m = load_mesh(path)
    ref = np.load(npz)
    assert np.array_equal(m.triangles, ref["faces"])                        # 25,836 quads + 548 triangles
    assert np.abs(m.vertices - ref["neutral"]).max() < 1e-5
    assert np.array_equal(m.material_ids, ref["face_material"])
    assert np.allclose(m.triangle_uvs, ref["uvs"][ref["face_uvs"]])
    assert any("ICTFaceModelMaterial.mtl" in w for w in m.warnings)           # the .mtl is not shipped

"""pcgan/export.py and `pcgan export`: .ply point clouds, meshes, .npy, previews, frames."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import sphere_grid
from pcgan import export as export_mod
from pcgan.cli import main
from pcgan.dataset import write_dataset
from pcgan.errors import PcganError
from pcgan.export import (EMPTY_PIXEL_RGB, FORMATS, export_grid, export_grids, filter_points,
                          parse_formats, preview_image, read_point_ply, write_mesh, write_point_ply)
from pcgan.grid import (MASK, Camera, GridMeta, denormalize_xyz, empty_grid, grid_to_mesh,
                        grid_to_points, surface_mask)
from pcgan.ranges import format_index_list, parse_index_list

ALL = tuple(FORMATS)


@pytest.fixture
def meta() -> GridMeta:
    return GridMeta(resolution=32, center=(1.0, -2.0, 30.0), scale=100.0, units="mm")


def disk_grid(meta: GridMeta, radius_px: float = 11.0) -> np.ndarray:
    """A sphere cap whose mask is a disk well inside the sphere's silhouette (no grazing rim)."""
    grid = sphere_grid(meta, radius=0.8)
    r = meta.resolution
    ii, jj = np.mgrid[:r, :r] + 0.5
    outside = np.hypot(ii - r / 2, jj - r / 2) > radius_px
    grid[MASK][0, outside] = -1.0
    return grid


def camera_in_scan_units(meta: GridMeta) -> np.ndarray:
    return denormalize_xyz(np.array(meta.camera.origin, dtype=np.float64), meta)


# ---------------------------------------------------------------------------------------------
# Point clouds


def test_point_ply_round_trip_is_lossless_in_float32(meta, tmp_path):
    pts, cols, nrm = grid_to_points(sphere_grid(meta), meta, return_normals=True)
    assert pts.dtype == np.float32 and len(pts) > 100
    write_point_ply(tmp_path / "a.ply", pts, cols, nrm)
    back = read_point_ply(tmp_path / "a.ply")
    assert np.array_equal(back.points, pts)                       # bit-exact
    assert np.array_equal(back.normals, nrm)
    assert np.abs(back.colors - cols).max() <= 0.5 / 255 + 1e-7   # uchar quantisation only
    header = (tmp_path / "a.ply").read_bytes().split(b"end_header\n")[0].decode()
    assert header.splitlines() == [
        "ply", "format binary_little_endian 1.0", f"element vertex {len(pts)}",
        "property float x", "property float y", "property float z",
        "property uchar red", "property uchar green", "property uchar blue",
        "property float nx", "property float ny", "property float nz"]
    assert (tmp_path / "a.ply").stat().st_size == len(header) + len("end_header\n") + len(pts) * 27


def test_point_ply_rejects_mismatched_shapes(tmp_path):
    with pytest.raises(PcganError, match=r"colors have shape \[4, 3\], expected \[5, 3\]"):
        write_point_ply(tmp_path / "a.ply", np.zeros((5, 3)), np.zeros((4, 3)))
    with pytest.raises(PcganError, match="cannot read as PLY"):
        (tmp_path / "bad.ply").write_text("not a ply")
        read_point_ply(tmp_path / "bad.ply")
    assert not (tmp_path / "a.ply").exists()


def test_files_open_in_plyfile_open3d_and_trimesh_with_colours_and_normals(meta, tmp_path):
    o3d = pytest.importorskip("open3d")
    trimesh = pytest.importorskip("trimesh")
    grid = sphere_grid(meta)
    paths = export_grid(grid, meta, tmp_path / "face", ALL)
    pts, cols, nrm = grid_to_points(grid, meta, return_normals=True)

    pcd = o3d.io.read_point_cloud(str(paths["ply"]))
    assert pcd.has_colors() and pcd.has_normals()
    assert np.allclose(np.asarray(pcd.points), pts, atol=1e-5)
    assert np.allclose(np.asarray(pcd.colors), cols, atol=0.5 / 255 + 1e-6)
    assert np.allclose(np.asarray(pcd.normals), nrm, atol=1e-6)

    cloud = trimesh.load(paths["ply"])
    assert isinstance(cloud, trimesh.PointCloud)
    assert np.allclose(cloud.vertices, pts) and np.allclose(cloud.colors[:, :3] / 255, cols, atol=0.5 / 255 + 1e-6)

    mesh = grid_to_mesh(grid, meta)
    from plyfile import PlyData
    ply = PlyData.read(str(paths["mesh"]))
    assert np.array_equal(np.stack(ply["face"]["vertex_indices"]), mesh.faces)
    assert np.array_equal(np.stack([ply["vertex"][k] for k in ("nx", "ny", "nz")], 1), mesh.normals)
    assert ply["vertex"]["red"].dtype == np.uint8
    for key in ("mesh", "obj"):
        tm = trimesh.load(paths[key], process=False)
        assert isinstance(tm, trimesh.Trimesh), key
        assert np.array_equal(tm.faces, mesh.faces), key
        assert np.allclose(tm.vertices, mesh.vertices, atol=1e-4), key
        assert np.allclose(tm.visual.vertex_colors[:, :3] / 255, mesh.colors, atol=0.5 / 255 + 1e-6), key
        assert np.allclose(tm.vertex_normals, mesh.normals, atol=1e-5), key
        om = o3d.io.read_triangle_mesh(str(paths[key]))
        assert om.has_vertex_colors() and om.has_vertex_normals() and len(om.triangles) == len(mesh.faces), key
    assert (tmp_path / "face.obj").read_text().splitlines()[1].startswith("v ")
    assert len((tmp_path / "face.obj").read_text().splitlines()[1].split()) == 7   # v x y z r g b

    assert np.array_equal(np.load(paths["npy"]), grid)
    from PIL import Image
    assert Image.open(paths["png"]).size == (3 * meta.resolution, meta.resolution)


def test_same_grid_gives_byte_identical_files_whatever_else_is_exported(meta, tmp_path):
    grid = sphere_grid(meta)
    a = export_grid(grid, meta, tmp_path / "a", ALL)
    b = export_grid(torch.from_numpy(grid), meta, tmp_path / "b", ALL)   # torch input, same bytes
    for fmt in ALL:
        assert a[fmt].read_bytes() == b[fmt].read_bytes(), fmt
    alone = export_grid(grid, meta, tmp_path / "c", ["ply"])           # ply without the mesh path
    assert alone["ply"].read_bytes() == a["ply"].read_bytes()
    assert b"comment" not in a["ply"].read_bytes()[:400]


def test_export_grids_bytes_do_not_depend_on_workers_or_row_order(meta, tmp_path):
    grids = np.stack([sphere_grid(meta, radius=0.5 + 0.1 * i, center_x=0.05 * i) for i in range(4)])
    s1 = export_grids(grids, meta, tmp_path / "w1", formats="ply,png", workers=1)
    seen = []
    s2 = export_grids(grids, meta, tmp_path / "w2", rows=[3, 1, 2, 0], formats="ply,png", workers=2,
                      progress=lambda done, total: seen.append((done, total)))
    assert [n for n, _ in s2.written] == ["000003", "000001", "000002", "000000"]
    assert seen == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert len(s1.written) == 4 and not s1.failed
    for name, files in s1.written:
        for fmt, path in files.items():
            assert path.read_bytes() == (tmp_path / "w2" / path.name).read_bytes(), (name, fmt)


def test_empty_grid_is_skipped_and_reported_others_written(meta, tmp_path):
    grids = np.stack([sphere_grid(meta), empty_grid(meta), sphere_grid(meta, radius=0.6)])
    summary = export_grids(grids, meta, tmp_path, formats="ply,mesh")
    assert [n for n, _ in summary.written] == ["000000", "000002"]
    assert summary.failed[0][0] == "000001" and "no surface pixels" in summary.failed[0][1]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "000000.ply", "000000_mesh.ply", "000002.ply", "000002_mesh.ply"]


def test_a_failure_mid_grid_leaves_nothing_half_written(meta, tmp_path, monkeypatch):
    def boom(path, image):
        Path(path).write_bytes(b"partial")
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(export_mod, "_write_png_to", boom)
    with pytest.raises(OSError):
        export_grid(sphere_grid(meta), meta, tmp_path / "a", ["ply", "mesh", "png"])
    assert list(tmp_path.iterdir()) == []      # neither the finished .ply nor any temp file


def test_outlier_removal_drops_a_stray_point_and_voxels_merge_deterministically(meta):
    pytest.importorskip("open3d")
    pts, cols, nrm = grid_to_points(sphere_grid(meta), meta, return_normals=True)
    stray = np.r_[pts, [[5000.0, 5000.0, 5000.0]]].astype(np.float32)
    cols2, nrm2 = np.r_[cols, [[1, 0, 0]]], np.r_[nrm, [[0, 0, 1]]]
    p, c, n = filter_points(stray, cols2, nrm2, outlier_removal=(10, 2.0))
    assert 0.9 * len(pts) < len(p) <= len(pts) and not (p > 1000).any()
    assert np.array_equal(p, pts[np.isin(pts, p).all(1)])   # survivors keep exact values and order
    v1 = filter_points(pts, cols, nrm, voxel_size=20.0)
    v2 = filter_points(pts, cols, nrm, voxel_size=20.0)
    assert 10 < len(v1[0]) < len(pts) / 2
    assert all(np.array_equal(a, b) for a, b in zip(v1, v2))
    assert np.allclose(np.linalg.norm(v1[2], axis=1), 1.0, atol=1e-5)
    with pytest.raises(PcganError, match="voxel size"):
        filter_points(pts, cols, nrm, voxel_size=-1.0)


# ---------------------------------------------------------------------------------------------
# Meshes


def test_mesh_is_watertight_inside_the_mask_and_holes_only_where_the_mask_has_them(meta, tmp_path):
    trimesh = pytest.importorskip("trimesh")
    grid = disk_grid(meta)
    valid = surface_mask(grid, meta)
    border = valid & ~(np.pad(valid, 1)[:-2, 1:-1] & np.pad(valid, 1)[2:, 1:-1]
                       & np.pad(valid, 1)[1:-1, :-2] & np.pad(valid, 1)[1:-1, 2:])
    pixel = np.argwhere(valid)                                  # vertex k <- pixel pixel[k] (row-major)

    path = export_grid(grid, meta, tmp_path / "disk", ["mesh"])["mesh"]
    tm = trimesh.load(path, process=False)
    edges = np.sort(tm.edges, axis=1)
    uniq, count = np.unique(edges, axis=0, return_counts=True)
    boundary = uniq[count == 1]
    assert count.max() == 2                                     # manifold: no edge in three faces
    assert border[tuple(pixel[boundary.ravel()].T)].all()       # open edges only on the mask border
    assert tm.euler_number == 1                                 # one disk: no holes inside

    grid[MASK][0, 16, 16] = -1.0                                # punch one pixel out of the middle
    tm = trimesh.load(export_grid(grid, meta, tmp_path / "holed", ["mesh"])["mesh"], process=False)
    assert tm.euler_number == 0                                 # exactly one hole, where the mask has it


@pytest.mark.parametrize("projection", ["perspective", "orthographic"])
def test_mesh_faces_and_normals_point_toward_the_camera(meta, tmp_path, projection):
    trimesh = pytest.importorskip("trimesh")
    meta = dataclasses.replace(meta, camera=Camera(projection=projection))
    paths = export_grid(sphere_grid(meta), meta, tmp_path / "s", ["ply", "mesh"])
    tm = trimesh.load(paths["mesh"], process=False)
    cam = camera_in_scan_units(meta)

    def to_camera(p):                                           # view direction from p toward the camera
        return cam - p if projection == "perspective" else np.array([0.0, 0.0, 1.0])

    assert len(tm.faces) > 100
    assert ((tm.face_normals * to_camera(tm.triangles_center)).sum(1) > 0).all()
    assert ((tm.vertex_normals * to_camera(tm.vertices)).sum(1) > 0).all()
    cloud = read_point_ply(paths["ply"])
    assert ((cloud.normals * to_camera(cloud.points)).sum(1) > 0).all()


def test_no_faces_across_a_depth_jump(meta, tmp_path):
    trimesh = pytest.importorskip("trimesh")
    near = sphere_grid(meta, radius=0.3, center_z=1.2)
    far = sphere_grid(meta, radius=0.9, center_z=-0.5)
    grid = np.where(surface_mask(near, meta)[None], near, far)  # a small ball 85+ mm in front of a big one
    tm = trimesh.load(export_grid(grid, meta, tmp_path / "j", ["mesh"])["mesh"], process=False)
    zs = tm.vertices[:, 2][tm.faces]                            # [F, 3] scan units (mm)
    assert (zs.max(1) - zs.min(1)).max() < 60.0                 # no triangle bridges the gap
    assert tm.body_count == 2


def test_write_mesh_rejects_unknown_suffix(meta, tmp_path):
    with pytest.raises(PcganError, match=r"\.ply or \.obj"):
        write_mesh(tmp_path / "m.stl", grid_to_mesh(sphere_grid(meta), meta))


# ---------------------------------------------------------------------------------------------
# Frames


def _source_setup(mirror: bool):
    """A sphere known in a source frame (cm), a to_canonical map into mm, and its grid."""
    c_src, r_src = np.array([10.0, -5.0, 3.0]), 8.0                       # cm
    a = np.radians(30)
    rot = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
    if mirror:
        rot = rot @ np.diag([-1.0, 1.0, 1.0])
    t = np.eye(4)
    t[:3, :3] = 10.0 * rot                                               # cm -> mm, rotated
    t[:3, 3] = [40.0, -20.0, 700.0]
    c_can = t[:3, :3] @ c_src + t[:3, 3]
    meta = GridMeta(resolution=32, center=tuple(c_can), scale=100.0, units="mm")
    return c_src, r_src, t, meta, sphere_grid(meta, radius=0.8)          # 80 mm = 0.8 normalised


@pytest.mark.parametrize("mirror", [False, True], ids=["rigid", "mirroring"])
def test_frame_source_puts_points_back_on_the_source_scan(tmp_path, mirror):
    trimesh = pytest.importorskip("trimesh")
    c_src, r_src, t, meta, grid = _source_setup(mirror)
    paths = export_grid(grid, meta, tmp_path / "s", ["ply", "mesh"], frame="source", to_canonical=t)
    cloud = read_point_ply(paths["ply"])
    radial = (cloud.points - c_src) / r_src
    assert np.allclose(np.linalg.norm(radial, axis=1), 1.0, atol=1e-5)   # on the source sphere, in cm
    assert ((cloud.normals * radial).sum(1) > 0.9).all()                # normals still outward
    tm = trimesh.load(paths["mesh"], process=False)
    agree = (tm.face_normals * tm.vertex_normals[tm.faces].mean(1)).sum(1)
    assert (agree > 0).all()                                             # winding follows a mirror
    with pytest.raises(PcganError, match="to_canonical"):
        export_grid(grid, meta, tmp_path / "x", ["ply"], frame="source", to_canonical=None)


def _write_test_dataset(path: Path, mirror: bool = False) -> tuple[np.ndarray, float, np.ndarray]:
    c_src, r_src, t, meta, grid = _source_setup(mirror)
    grids = np.stack([grid, sphere_grid(meta, radius=0.5), empty_grid(meta)])
    files = [{"path": f"scans/person {i}.obj", "sha256": "0" * 64, "kind": "mesh", "status": "ok",
              "error": None, "index": i, "to_canonical": t.tolist()} for i in range(3)]
    write_dataset(path, grids, meta, {"files": files})
    return c_src, r_src, t


def test_cli_exports_a_dataset_in_the_source_frame(tmp_path, capsys):
    c_src, r_src, _ = _write_test_dataset(tmp_path / "ds")
    rc = main(["export", str(tmp_path / "ds"), "--out", str(tmp_path / "out"), "--indices", "0-1",
               "--format", "ply,mesh,npy,png", "--frame", "source", "--workers", "1"])
    assert rc == 0
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == sorted(f"00000{i}_person_{i}{s}" for i in range(2)
                           for s in (".ply", "_mesh.ply", ".npy", ".png"))
    cloud = read_point_ply(tmp_path / "out" / "000000_person_0.ply")
    # float16 grids: about 1e-3 of the 100 mm scale, i.e. ~0.01 cm
    assert np.allclose(np.linalg.norm(cloud.points - c_src, axis=1), r_src, atol=0.03)
    assert "exported 2 of 2 grids" in capsys.readouterr().out


def test_cli_skips_an_empty_grid_and_exits_1(tmp_path, capsys):
    _write_test_dataset(tmp_path / "ds")
    rc = main(["export", str(tmp_path / "ds"), "--out", str(tmp_path / "out"), "--format", "ply"])
    err = capsys.readouterr().err
    assert rc == 1 and "skipped 000002_person_2" in err and "no surface pixels" in err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["000000_person_0.ply", "000001_person_1.ply"]


def test_cli_bare_npy_with_and_without_meta(tmp_path, meta, capsys):
    grid = sphere_grid(meta)
    np.save(tmp_path / "one.npy", grid)                              # a single [C, H, W] grid
    (tmp_path / "meta.json").write_text(json.dumps(meta.to_dict()))
    assert main(["export", str(tmp_path / "one.npy"), "--out", str(tmp_path / "a"), "--format", "ply",
                 "--meta", str(tmp_path / "meta.json")]) == 0
    with_meta = read_point_ply(tmp_path / "a" / "000000.ply").points
    assert np.array_equal(with_meta, grid_to_points(grid, meta)[0])    # scan units (mm)
    assert main(["export", str(tmp_path / "one.npy"), "--out", str(tmp_path / "b"), "--format", "ply"]) == 0
    bare = read_point_ply(tmp_path / "b" / "000000.ply").points
    assert np.allclose(bare, grid_to_points(grid, meta, denormalize=False)[0])   # normalised units
    rc = main(["export", str(tmp_path / "one.npy"), "--out", str(tmp_path / "c"), "--frame", "source"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "--frame source needs" in err[0]


@pytest.mark.parametrize("bad", ["under_a_file", "read_only"])
def test_cli_unwritable_out_is_a_one_line_error(tmp_path, meta, capsys, bad):
    np.save(tmp_path / "g.npy", sphere_grid(meta)[None])
    if bad == "under_a_file":
        (tmp_path / "file").write_text("x")
        out = tmp_path / "file" / "sub"
    else:
        if os.geteuid() == 0:
            pytest.skip("root can write into a read-only directory")
        out = tmp_path / "ro"
        out.mkdir()
        out.chmod(0o500)
    rc = main(["export", str(tmp_path / "g.npy"), "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and str(out.name) in err[0]
    assert not out.exists() or list(out.iterdir()) == []


def test_cli_help_shows_examples(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["export", "--help"])
    out = capsys.readouterr().out
    assert exc.value.code == 0 and "--frame source" in out and "examples:" in out


def test_cli_bad_inputs_are_one_line_errors(tmp_path, meta, capsys):
    np.save(tmp_path / "g.npy", sphere_grid(meta)[None])
    for argv, expect in [
        (["--indices", "5-2"], "runs backwards"),
        (["--indices", "0-3"], "out of range"),
        (["--format", "ply,stl"], "unknown export format 'stl'"),
        (["--outlier-removal", "20"], "NB,STD"),
    ]:
        rc = main(["export", str(tmp_path / "g.npy"), "--out", str(tmp_path / "o")] + argv)
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and len(err) == 1 and expect in err[0], (argv, err)
    assert main(["export", str(tmp_path / "missing.npy"), "--out", str(tmp_path / "o")]) == 2
    assert not (tmp_path / "o").exists()


# ---------------------------------------------------------------------------------------------
# Previews and ranges


def test_preview_panels_show_colour_depth_and_shading(meta):
    grid = sphere_grid(meta)
    img = preview_image(grid, meta)
    r = meta.resolution
    assert img.shape == (r, 3 * r, 3) and img.dtype == np.uint8
    valid = surface_mask(grid, meta)
    assert (img[0, 0] == EMPTY_PIXEL_RGB).all() and (img[0, 2 * r] == EMPTY_PIXEL_RGB).all()
    _, cols = grid_to_points(grid, meta)
    assert np.array_equal(img[:, :r][valid], np.rint(cols * 255).astype(np.uint8))   # same bytes as the .ply
    depth = img[:, r:2 * r].astype(int)
    assert depth[r // 2, r // 2].sum() > depth[r // 2, 5].sum() + 100   # nearest (centre) is brightest
    shade = img[:, 2 * r:, 0].astype(int)
    assert shade[10, 10] > shade[r - 8, r - 8] + 50                   # lit from the upper left
    assert parse_formats("png, ply") == ("ply", "png")


def test_parse_index_list():
    assert parse_index_list("0-9,15") == list(range(10)) + [15]
    assert parse_index_list(" 7, 3-4 ,3") == [7, 3, 4]                  # typed order, repeats once
    assert parse_index_list("4-4") == [4]
    assert format_index_list([0, 1, 2, 5, 7, 8]) == "0-2,5,7-8"
    for bad, msg in [("5-2", "runs backwards"), ("", "empty"), ("a", "not a number"),
                     ("1,,2", "not a number"), ("-3", "not a number"), ("1-2-3", "not a number")]:
        with pytest.raises(PcganError, match=msg):
            parse_index_list(bad)
    with pytest.raises(PcganError, match=r"seed 12 .* out of range: there are 10 \(valid: 0-9\)"):
        parse_index_list("3,12", "seed", limit=10)

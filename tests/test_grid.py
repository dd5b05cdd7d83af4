"""pcgan/grid.py: the grid contract (camera, sheet, normalisation, mirror, points, normals, mesh)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import sphere_grid
from pcgan.errors import PcganError
from pcgan.grid import (MASK, RGB, XYZ, Camera, GridMeta, check_channels, check_grid,
                        denormalize_xyz, empty_grid, grid_normals, grid_to_mesh, grid_to_points,
                        mirror, normalize_xyz, sheet_xyz, surface_mask)

CAMERAS = [Camera(), Camera(projection="orthographic")]


def test_channel_list_is_validated():
    assert check_channels(["x", "y", "z", "r", "g", "b"]) == ("x", "y", "z", "r", "g", "b")
    with pytest.raises(PcganError, match="unsupported grid channels"):
        check_channels(["r", "g", "b", "x", "y", "z"])
    assert (XYZ.start, RGB.start, MASK.start) == (0, 3, 6)


def test_meta_round_trips_through_dict_and_rejects_bad_values():
    meta = GridMeta(resolution=64, center=(1, 2, 3), scale=90.0, units="mm",
                    camera=Camera(projection="orthographic", ortho_half_extent=1.3))
    d = meta.to_dict()
    assert d["camera"]["intrinsics"][0][2] == 32.0
    assert GridMeta.from_dict(d) == meta
    with pytest.raises(PcganError, match="power of two"):
        GridMeta(resolution=100)
    with pytest.raises(PcganError, match="scale"):
        GridMeta(resolution=64, scale=0)


@pytest.mark.parametrize("camera", CAMERAS, ids=["perspective", "orthographic"])
def test_sheet_points_project_to_their_pixel_centres(camera):
    meta = GridMeta(resolution=16, camera=camera)
    sheet = sheet_xyz(meta)                                  # [3, H, W]
    assert np.allclose(sheet[2], meta.sheet_z)
    u, v, depth = camera.project(sheet.reshape(3, -1).T, 16)
    jj, ii = np.meshgrid(np.arange(16) + 0.5, np.arange(16) + 0.5, indexing="xy")
    assert np.allclose(u, jj.ravel(), atol=1e-4) and np.allclose(v, ii.ravel(), atol=1e-4)
    assert np.allclose(depth, camera.distance - meta.sheet_z)


def test_intrinsics_and_extrinsics_agree_with_project():
    cam, res = Camera(fov_deg=30, distance=4), 32
    pts = np.random.default_rng(0).uniform(-1, 1, (50, 3))
    cam_pts = (cam.extrinsics() @ np.c_[pts, np.ones(50)].T)[:3]    # OpenCV camera frame
    uvw = cam.intrinsics(res) @ cam_pts
    u, v, depth = cam.project(pts, res)
    assert np.allclose(uvw[0] / uvw[2], u) and np.allclose(uvw[1] / uvw[2], v)
    assert np.allclose(cam_pts[2], depth)


def test_empty_grid_has_no_surface_with_or_without_mask():
    for channels in (("x", "y", "z", "r", "g", "b", "mask"), ("x", "y", "z", "r", "g", "b")):
        meta = GridMeta(resolution=8, channels=channels, background_rgb=(0.2, 0.4, 0.6))
        g = empty_grid(meta)
        assert g.shape == (len(channels), 8, 8)
        assert not surface_mask(g, meta).any()
        assert np.allclose(g[RGB, 0, 0], [-0.6, -0.2, 0.2])


@pytest.mark.parametrize("camera", CAMERAS, ids=["perspective", "orthographic"])
def test_sphere_points_lie_on_the_sphere_in_scan_units(camera):
    meta = GridMeta(resolution=32, camera=camera, center=(10.0, 20.0, 30.0), scale=50.0, units="mm")
    grid = sphere_grid(meta, radius=0.8)
    points, colors = grid_to_points(grid, meta)
    assert len(points) == surface_mask(grid, meta).sum() > 300
    r = np.linalg.norm(points - np.array(meta.center), axis=1)
    assert np.allclose(r, 0.8 * 50.0, atol=1e-3)                    # radius in mm
    assert colors.min() >= 0 and colors.max() <= 1
    # without denormalisation the same points come back in the normalised frame
    pts_n, _ = grid_to_points(grid, meta, denormalize=False)
    assert np.allclose(denormalize_xyz(pts_n, meta), points, atol=1e-4)
    assert np.allclose(normalize_xyz(points, meta), pts_n, atol=1e-5)


def test_without_mask_channel_the_sheet_marks_empty_pixels():
    with_mask = GridMeta(resolution=32)
    no_mask = GridMeta(resolution=32, channels=("x", "y", "z", "r", "g", "b"))
    grid = sphere_grid(with_mask)
    assert np.array_equal(surface_mask(grid[:6], no_mask), surface_mask(grid, with_mask))


def test_normals_face_the_camera_and_match_the_sphere():
    meta = GridMeta(resolution=32)
    grid = sphere_grid(meta, radius=0.8)
    valid = surface_mask(grid, meta)
    n = grid_normals(grid, meta)                                    # [3, H, W]
    assert np.allclose(np.linalg.norm(n[:, valid], axis=0), 1, atol=1e-5)
    assert np.all(n[:, ~valid] == 0)
    radial = grid[XYZ][:, valid] / 0.8
    cos = (n[:, valid] * radial).sum(0)
    assert np.median(cos) > 0.999 and cos.min() > 0.9
    to_cam = np.array(meta.camera.origin)[:, None] - grid[XYZ][:, valid]
    assert ((n[:, valid] * to_cam).sum(0) > 0).all()


def test_numpy_and_torch_inputs_give_the_same_answers():
    meta = GridMeta(resolution=16)
    grid = sphere_grid(meta)
    p_np, c_np, n_np = grid_to_points(grid, meta, return_normals=True)
    p_t, c_t, n_t = grid_to_points(torch.from_numpy(grid), meta, return_normals=True)
    assert isinstance(p_t, torch.Tensor) and isinstance(p_np, np.ndarray)
    for a, b in ((p_np, p_t), (c_np, c_t), (n_np, n_t)):
        assert np.array_equal(a, b.numpy())
    assert np.array_equal(mirror(grid), mirror(torch.from_numpy(grid)).numpy())


def test_mirror_negates_x_and_twice_is_identity():
    meta = GridMeta(resolution=16)
    rng = np.random.default_rng(1)
    grid = rng.standard_normal((2, 7, 16, 16)).astype(np.float32)   # batched
    assert np.array_equal(mirror(mirror(grid)), grid)
    m = mirror(grid)
    assert np.array_equal(m[:, 0], -grid[:, 0, :, ::-1])
    assert np.array_equal(m[:, 1:], grid[:, 1:, :, ::-1])
    # A mirrored sphere off the axis is the sphere at -x: its points are the x-negated points.
    off = sphere_grid(meta, radius=0.5, center_x=0.3)
    pts, _ = grid_to_points(off, meta, denormalize=False)
    pts_m, _ = grid_to_points(mirror(off), meta, denormalize=False)
    key = lambda p: np.round(p, 5)[np.lexsort(np.round(p, 5).T)]    # noqa: E731
    assert np.allclose(key(pts * [-1, 1, 1]), key(pts_m))
    # and the empty pixels of a mirrored grid are still exactly on the sheet
    assert np.allclose(mirror(empty_grid(meta)), empty_grid(meta))


def test_mesh_of_a_sphere_is_closed_inside_the_mask_and_faces_the_camera():
    meta = GridMeta(resolution=32)
    grid = sphere_grid(meta, radius=0.8)
    valid = surface_mask(grid, meta)
    mesh = grid_to_mesh(grid, meta)
    assert len(mesh.vertices) == valid.sum()
    # every 2x2 block of surface pixels gives 2 triangles, every block with 3 gives 1
    blocks = valid[:-1, :-1].astype(int) + valid[:-1, 1:] + valid[1:, :-1] + valid[1:, 1:]
    assert len(mesh.faces) == 2 * (blocks == 4).sum() + (blocks == 3).sum()
    tri = mesh.vertices[mesh.faces]
    fn = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    to_cam = np.array(meta.camera.origin) - tri.mean(1)
    assert ((fn * to_cam).sum(1) > 0).all()                          # counter-clockwise from the camera


def test_mesh_has_no_triangle_across_a_depth_jump():
    meta = GridMeta(resolution=32)
    grid = empty_grid(meta)
    origins, dirs = meta.camera.rays(32)
    z = np.where(np.arange(32)[None, :] < 16, 0.6, -0.6) * np.ones((32, 1))   # step between columns 15 | 16
    t = (origins[..., 2] - z) / -dirs[..., 2]
    grid[XYZ] = (origins + t[..., None] * dirs).transpose(2, 0, 1)
    grid[MASK] = 1.0
    mesh = grid_to_mesh(grid, meta, denormalize=False)
    zs = mesh.vertices[mesh.faces][..., 2]
    assert len(mesh.faces) == 2 * 31 * 30                            # two planes, 15 and 15 quads wide
    assert (np.ptp(zs, axis=1) < 1e-6).all()


def test_check_grid_names_the_wrong_dimension():
    meta = GridMeta(resolution=16)
    check_grid(np.zeros((2, 7, 16, 16)), meta)
    with pytest.raises(PcganError, match=r"C=6 \(expected 7\)"):
        check_grid(np.zeros((6, 16, 16)), meta)
    with pytest.raises(PcganError, match=r"H=8 \(expected 16\)"):
        check_grid(np.zeros((7, 8, 16)), meta)

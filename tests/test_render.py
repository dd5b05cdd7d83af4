"""data_tools/render.py: mesh -> grid by ray casting, with exact hit points and texture colour."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from data_tools.meshes import MeshScan, load_mesh
from data_tools.render import render_mesh, sample_texture
from pcgan.errors import PcganError
from pcgan.grid import MASK, RGB, XYZ, GridMeta, empty_grid, grid_to_rgb, surface_mask

pytest.importorskip("open3d")


def quad(z=0.0, half=0.8, colors=None, uvs=None, textures=(), material_ids=None) -> MeshScan:
    """A square facing the camera (+z), made of two triangles."""
    v = np.array([[-half, -half, z], [half, -half, z], [half, half, z], [-half, half, z]], dtype=np.float64)
    t = np.array([[0, 1, 2], [0, 2, 3]])
    return MeshScan(Path("quad"), v, t, vertex_colors=colors, triangle_uvs=uvs, textures=list(textures),
                    material_ids=material_ids)


def test_sample_texture_is_bilinear_between_texel_centres_clamps_and_wraps():
    tex = np.array([[[0, 0, 0], [255, 255, 255]],
                    [[255, 0, 0], [0, 0, 255]]], dtype=np.uint8)      # 2x2; row 0 is the top (v = 1)
    centres = np.array([[0.25, 0.75], [0.75, 0.75], [0.25, 0.25], [0.75, 0.25]])
    assert np.allclose(sample_texture(tex, centres), tex.reshape(4, 3) / 255.0)
    mid_top = sample_texture(tex, np.array([[0.5, 0.75]]))
    assert np.allclose(mid_top, [[0.5, 0.5, 0.5]])
    assert np.allclose(sample_texture(tex, centres + 1.0), sample_texture(tex, centres))   # tiles repeat
    corners = np.array([[0.0, 1.0], [1.0, 1.0], [0.0, 0.0], [1.0, 0.0]])        # edges clamp, 1 is not 0
    assert np.allclose(sample_texture(tex, corners), tex.reshape(4, 3) / 255.0)


def test_a_plane_renders_exact_points_and_interpolated_vertex_colours():
    meta = GridMeta(resolution=32)
    cols = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]], dtype=np.float32)   # r = x, g = y ramps
    grid, stats = render_mesh(quad(z=0.2, colors=cols), np.eye(4), meta)
    m = surface_mask(grid, meta)
    assert stats["hit_px"] == m.sum() > 100 and stats["vertex_px"] == m.sum()
    assert np.allclose(grid[XYZ][2][m], 0.2, atol=1e-6)                          # on the plane
    x, y = grid[XYZ][0][m], grid[XYZ][1][m]
    rgb = grid_to_rgb(grid[RGB])[:, m]
    assert np.allclose(rgb[0], (x + 0.8) / 1.6, atol=1e-4)                       # barycentric = bilinear here
    assert np.allclose(rgb[1], (y + 0.8) / 1.6, atol=1e-4)
    # each hit lies on its own pixel's camera ray
    origins, dirs = meta.camera.rays(32)
    t = (origins[..., 2] - 0.2) / -dirs[..., 2]
    on_ray = origins + t[..., None] * dirs
    assert np.abs(grid[XYZ].transpose(1, 2, 0)[m] - on_ray[m]).max() < 1e-5
    # empty pixels are exactly the empty grid
    assert np.array_equal(grid[:, ~m], empty_grid(meta)[:, ~m])
    assert (grid[MASK][0][m] == 1).all()


def test_texture_colours_follow_the_uvs_per_material():
    meta = GridMeta(resolution=32)
    red = np.zeros((4, 4, 3), np.uint8)
    red[..., 0] = 255
    ramp = np.zeros((1, 64, 3), np.uint8)
    ramp[0, :, 2] = np.arange(64) * 4                                             # blue grows with u
    uvs = np.array([[[0, 0], [1, 0], [1, 1]], [[0, 0], [1, 1], [0, 1]]], dtype=np.float32)
    mesh = quad(uvs=uvs, textures=[red, ramp], material_ids=np.array([0, 1]))
    grid, stats = render_mesh(mesh, np.eye(4), meta)
    m = surface_mask(grid, meta)
    rgb = grid_to_rgb(grid[RGB])
    x, y = grid[XYZ][0], grid[XYZ][1]
    first = m & (y < x - 0.05)                                                    # triangle (0, 1, 2)
    second = m & (y > x + 0.05)                                                   # triangle (0, 2, 3)
    assert np.allclose(rgb[:, first].T, [1, 0, 0], atol=1e-6)
    u = (x[second] + 0.8) / 1.6
    inner = (u > 1 / 64) & (u < 63 / 64)                                          # the outer half texels clamp
    expect = (u * 64 - 0.5) * 4.0 / 255.0                                        # linear between texel centres
    assert inner.sum() > 50 and np.allclose(rgb[2][second][inner], expect[inner], atol=2e-3)
    assert stats["texture_px"] == m.sum()


def test_a_sphere_mesh_renders_points_on_the_sphere():
    o3d = pytest.importorskip("open3d")
    s = o3d.geometry.TriangleMesh.create_sphere(radius=0.6, resolution=40)
    mesh = MeshScan(Path("sphere"), np.asarray(s.vertices), np.asarray(s.triangles, dtype=np.int64))
    meta = GridMeta(resolution=32)
    grid, _ = render_mesh(mesh, np.eye(4), meta, default_rgb=(0.2, 0.4, 0.6))
    m = surface_mask(grid, meta)
    r = np.linalg.norm(grid[XYZ][:, m], axis=0)
    assert np.abs(r - 0.6).max() < 0.6 * (1 - np.cos(np.pi / 40)) + 1e-4       # within the tessellation sag
    assert (grid[XYZ][2][m] > 0).all()                                          # the front half is seen
    assert np.allclose(grid_to_rgb(grid[RGB])[:, m].T, [0.2, 0.4, 0.6], atol=1e-6)


def test_the_transform_is_applied_before_casting():
    meta = GridMeta(resolution=16)
    T = np.diag([0.5, 0.5, 0.5, 1.0])
    T[:3, 3] = [0.1, 0.0, -0.3]
    grid, _ = render_mesh(quad(half=1.0), T, meta)
    m = surface_mask(grid, meta)
    assert np.allclose(grid[XYZ][2][m], -0.3, atol=1e-6)
    assert grid[XYZ][0][m].min() >= 0.1 - 0.5 - 1e-6 and grid[XYZ][0][m].max() <= 0.1 + 0.5 + 1e-6


def test_a_mesh_that_misses_the_camera_is_an_error():
    meta = GridMeta(resolution=16)
    T = np.eye(4)
    T[0, 3] = 50.0                                                               # far to the side
    with pytest.raises(PcganError, match="misses the camera"):
        render_mesh(quad(), T, meta)


def test_glb_texture_renders_the_right_way_up(tmp_path):
    trimesh = pytest.importorskip("trimesh")
    from PIL import Image
    img = np.zeros((8, 8, 3), np.uint8)
    img[:4, :, 1] = 255          # top half green
    img[4:, :, 0] = 255          # bottom half red
    tq = trimesh.Trimesh([[-0.8, -0.8, 0], [0.8, -0.8, 0], [0.8, 0.8, 0], [-0.8, 0.8, 0]], [[0, 1, 2], [0, 2, 3]],
                         visual=trimesh.visual.TextureVisuals(uv=[[0, 0], [1, 0], [1, 1], [0, 1]],
                                                              image=Image.fromarray(img)), process=False)
    tq.export(tmp_path / "q.glb")
    meta = GridMeta(resolution=16)
    grid, _ = render_mesh(load_mesh(tmp_path / "q.glb"), np.eye(4), meta)
    rgb = grid_to_rgb(grid[RGB])
    m = surface_mask(grid, meta)
    top = m & (grid[XYZ][1] > 0.2)
    bottom = m & (grid[XYZ][1] < -0.2)
    assert np.allclose(rgb[:, top].T, [0, 1, 0], atol=1e-6) and np.allclose(rgb[:, bottom].T, [1, 0, 0], atol=1e-6)

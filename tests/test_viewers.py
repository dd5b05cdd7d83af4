"""Viewers: headless pictures (all backends), contact sheets, GIFs, the window's key callbacks,
the latent explorer's model logic and GUI wiring, display and system-library checks."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pcgan import cli
from pcgan.errors import PcganError
from pcgan.export import read_point_ply, write_point_ply
from pcgan.grid import Camera, GridMeta, grid_to_points, surface_mask
from conftest import sphere_grid
from viewers import loading, render, syslibs, window
from viewers.loading import Item, grid_item, load_items, point_colors

REPO = Path(__file__).resolve().parents[1]
BG = np.array(render.BACKGROUND)


def _egl_works() -> bool:
    try:
        render.get_backend("egl", 32)
        return True
    except PcganError:
        return False


needs_egl = pytest.mark.skipif("not _egl_works()", reason="Open3D EGL offscreen rendering unavailable")


def _foreground(img: np.ndarray) -> np.ndarray:
    return (img.astype(int) != BG).any(-1)


@pytest.fixture
def meta32() -> GridMeta:
    return GridMeta(resolution=32, center=(0.0, 0.0, 600.0), scale=90.0, units="mm")


@pytest.fixture
def two_tone_ply(tmp_path) -> Path:
    """A coloured dome in scan units: red on the -x half, blue on the +x half, a green cap on
    top (+y): mirroring or flipping shows up as wrong colours on a side."""
    rng = np.random.default_rng(0)
    n = 6000
    u = rng.uniform(-1, 1, (n, 2))
    u = u[(u ** 2).sum(1) < 1]
    z = np.sqrt(1 - (u ** 2).sum(1)) * 0.5
    pts = np.column_stack([u[:, 0] * 80 + 10, u[:, 1] * 100 - 5, z * 80 + 300]).astype(np.float32)  # mm
    cols = np.where(u[:, :1] < 0, [0.9, 0.1, 0.1], [0.1, 0.2, 0.9]).astype(np.float32)
    cols[u[:, 1] > 0.6] = [0.1, 0.8, 0.2]
    return write_point_ply(tmp_path / "dome.ply", pts, cols)


# ---------------------------------------------------------------------------------------------
# Headless rendering


@pytest.mark.parametrize("backend", ["numpy", pytest.param("egl", marks=needs_egl)])
def test_grid_front_view_puts_each_point_on_its_pixel(meta32, backend):
    # drawn from its own camera at its own resolution, a grid's picture IS its RGB image
    g = sphere_grid(meta32, radius=0.7, center_x=0.2)
    pic = render.render_views(g, meta32, views="front", size=32, backend=backend, point_size=1)
    assert pic.shape == (1, 1, 32, 32, 3) and pic.dtype == np.uint8
    img = pic[0, 0]
    mask = surface_mask(g, meta32)
    assert (_foreground(img) == mask).all()
    _, cols = grid_to_points(g, meta32)
    assert np.abs(img[mask].astype(int) - np.rint(cols * 255)).max() <= 1


def test_rendered_file_is_framed_coloured_and_not_mirrored(tmp_path, two_tone_ply):
    out = tmp_path / "dome.png"
    assert cli.main(["render", str(two_tone_ply), "--out", str(out), "--size", "96", "--backend", "numpy",
                     "--no-labels"]) == 0
    img = np.asarray(Image.open(out).convert("RGB")).astype(int)
    assert img.shape == (96, 96, 3)
    fg = _foreground(img)
    assert 0.3 < fg.mean() < 0.8                                      # not blank, not flooded
    rows, cols = np.nonzero(fg)
    assert abs(rows.mean() - 48) < 6 and abs(cols.mean() - 48) < 6  # framed: centred on the cloud
    assert fg[:, :5].sum() == 0 and fg[:, -5:].sum() == 0 and fg[:5].sum() == 0  # the whole cloud fits
    red, blue, green = np.array([230, 26, 26]), np.array([26, 51, 230]), np.array([26, 204, 51])
    left = img[40:60, 15:40][fg[40:60, 15:40]]
    right = img[40:60, 56:81][fg[40:60, 56:81]]
    top = img[8:20, 40:56][fg[8:20, 40:56]]
    assert np.abs(left.mean(0) - red).max() < 12                      # -x is image left
    assert np.abs(right.mean(0) - blue).max() < 12
    assert np.abs(top.mean(0) - green).max() < 12                     # +y is image up


def test_side_views_turn_the_camera_toward_the_named_side():
    # a flat plate with a marker in front of it (+z): seen from the face's left (+x), the
    # marker shifts to the picture's left; from the right, to the right
    g = np.linspace(-1, 1, 60)
    x, y = np.meshgrid(g, g)
    plate = np.column_stack([x.ravel(), y.ravel(), np.zeros(x.size)])
    marker = np.array([[dx, dy, 0.6] for dx in np.linspace(-0.05, 0.05, 5) for dy in np.linspace(-0.05, 0.05, 5)])
    pts = np.vstack([plate, marker]).astype(np.float32)
    cols = np.vstack([np.full((len(plate), 3), 0.5), np.tile([0.0, 1.0, 0.0], (len(marker), 1))]).astype(np.float32)
    item = Item("plate", pts, cols, None, loading.Framing((0.0, 0.0, 0.0), 5.0, 40.0), 2 / 59)
    pics = render.render_item(item, [0.0, 45.0, -45.0], size=64, backend="numpy")
    centres = []
    for img in pics:
        green = (img[..., 1] > 200) & (img[..., 0] < 50)
        assert green.sum() > 0
        centres.append(np.nonzero(green)[1].mean())
    front, left, right = centres
    assert abs(front - 32) < 2 and left < front - 5 and right > front + 5
    assert render.parse_views("front,left,right,30") == [("front", 0.0), ("left", 45.0), ("right", -45.0), ("30", 30.0)]
    with pytest.raises(PcganError, match="view 'top'"):
        render.parse_views("front,top")


@needs_egl
def test_egl_and_numpy_backends_draw_the_same_picture(two_tone_ply):
    item = loading.load_path(two_tone_ply)[0]
    a = render.render_item(item, [0.0, 30.0], size=64, mode="lit", backend="numpy")
    b = render.render_item(item, [0.0, 30.0], size=64, mode="lit", backend="egl")
    differ = (np.abs(a.astype(int) - b).max(-1) > 3).mean()
    assert differ < 0.02


def test_filament_backend_in_its_own_process(tmp_path, two_tone_ply):
    # Filament cannot share a process with the legacy EGL window, so it runs in a child
    out = tmp_path / "fil.png"
    res = subprocess.run([sys.executable, "-m", "pcgan", "render", str(two_tone_ply), "--out", str(out),
                          "--size", "64", "--backend", "filament", "--no-labels", "-v"],
                         capture_output=True, text=True, timeout=120, cwd=REPO)
    if res.returncode != 0:
        assert "filament" in res.stderr and "cannot start" in res.stderr   # unavailable: said clearly
        pytest.skip(f"filament unavailable here: {res.stderr.strip().splitlines()[-1]}")
    assert "filament backend" in res.stdout
    img = np.asarray(Image.open(out).convert("RGB")).astype(int)
    ref = render.render_item(loading.load_path(two_tone_ply)[0], [0.0], size=64, backend="numpy")[0].astype(int)
    # another rasteriser (round, edge-blended point sprites), the same picture
    fg, fg_ref = _foreground(img), _foreground(ref)
    assert (fg & fg_ref).sum() / (fg | fg_ref).sum() > 0.85
    for half, stored in ((slice(0, 30), [230, 26, 26]), (slice(34, 64), [26, 51, 230])):   # red left, blue right
        assert np.abs(np.median(img[20:44, half][fg[20:44, half]], axis=0) - stored).max() <= 2


def test_render_modes_depth_and_shading(meta32):
    item = grid_item(sphere_grid(meta32, radius=0.7), meta32, "s")
    eye, target = render.camera_pose(item.framing, 0.0)
    depth = point_colors(item, "depth", eye, target)
    nearest = np.argmax(item.points[:, 2])
    assert np.abs(depth[nearest] * 255 - [253, 231, 37]).max() < 2      # near = viridis yellow
    shade = point_colors(item, "shade", eye, target)[:, 0]
    # the light is above-left: the upper-left of the ball is brighter than the lower-right
    ul = (item.points[:, 0] < -0.3) & (item.points[:, 1] > 0.3)
    lr = (item.points[:, 0] > 0.3) & (item.points[:, 1] < -0.3)
    assert shade[ul].mean() > shade[lr].mean() + 0.2
    lit = point_colors(item, "lit", eye, target)
    np.testing.assert_allclose(lit, item.colors * shade[:, None], atol=1e-5)
    bare = Item("bare", item.points, None, None, item.framing, item.spacing)   # no colours, no normals
    assert np.allclose(point_colors(bare, "color", eye, target), point_colors(bare, "shade", eye, target))
    assert bare.normals is not None and bare.normals.shape == item.points.shape   # estimated on demand


def test_grids_as_meshes_stay_closed_in_turned_views(meta32):
    g = sphere_grid(meta32, radius=0.8)

    def holes(img):   # background pixels with surface both left and right of them in their row
        fg = _foreground(img)
        left = np.maximum.accumulate(fg, axis=1)
        right = np.maximum.accumulate(fg[:, ::-1], axis=1)[:, ::-1]
        return int((~fg & left & right).sum())

    points = render.render_views(g, meta32, views=[40], size=96, backend="numpy", grid_as="points")[0, 0]
    mesh = render.render_views(g, meta32, views=[40], size=96, backend="numpy", grid_as="mesh")[0, 0]
    assert holes(points) > 20 and holes(mesh) < holes(points) / 4
    assert abs(_foreground(mesh).mean() - _foreground(points).mean()) < 0.1   # the same ball
    assert grid_item(g, meta32, "m", as_mesh=True).is_mesh


def test_render_views_takes_torch_batches(meta32):
    g = torch.from_numpy(np.stack([sphere_grid(meta32, 0.5), sphere_grid(meta32, 0.8)]))
    pics = render.render_views(g, meta32, views=["front", 30], size=48, mode="lit", backend="numpy")
    assert pics.shape == (2, 2, 48, 48, 3)
    assert _foreground(pics[1, 0]).sum() > _foreground(pics[0, 0]).sum() * 1.8   # the bigger ball is bigger
    with pytest.raises(PcganError, match="GridMeta"):
        render.render_views(g, None)


# ---------------------------------------------------------------------------------------------
# Sheets, GIFs, per-item files


def test_contact_sheet_layout():
    pics = np.zeros((3, 2, 20, 20, 3), np.uint8)
    pics[1] = 255
    sheet = render.contact_sheet(pics, labels=["a", "b", "c"])
    pad = render.SHEET_PAD
    assert sheet.shape == (3 * 20 + 2 * pad, 2 * 20, 3)          # several views: one item per row
    assert (sheet[20 + pad + 18, 30] == 255).all() and (sheet[18, 30] == 0).all()   # item 1 is the second row
    single = render.contact_sheet(np.zeros((5, 1, 10, 10, 3), np.uint8))
    assert single.shape == (2 * 10 + pad, 3 * 10 + 2 * pad, 3)    # one view: near-square, 3 x 2
    H, W, corners = render.sheet_layout(5, 10, 10, cols=2)
    assert (H, W) == (3 * 10 + 2 * pad, 2 * 10 + pad) and corners[3] == (10 + pad, 10 + pad)


def test_turntable_gif_has_the_frames_asked_for(tmp_path, meta32):
    np.save(tmp_path / "grids.npy", np.stack([sphere_grid(meta32, 0.6, center_x=0.3)] * 2).astype(np.float16))
    out = tmp_path / "turn.gif"
    assert cli.main(["render", str(tmp_path / "grids.npy"), "--turntable", "8", "--size", "40",
                     "--backend", "numpy", "--out", str(out)]) == 0
    gif = Image.open(out)
    assert gif.n_frames == 8 and gif.size == (2 * 40 + render.SHEET_PAD, 40)
    assert gif.info["loop"] == 0
    frames = []
    for k in range(gif.n_frames):
        gif.seek(k)
        frames.append(np.asarray(gif.convert("RGB")).astype(int))
    assert np.abs(frames[0] - frames[1]).mean() > 0.5              # the camera moves between frames
    assert render.turntable_yaws(4, 40) == pytest.approx([0.0, 40.0, 0.0, -40.0], abs=1e-9)
    assert render.turntable_yaws(4, 360) == [0.0, 90.0, 180.0, 270.0]


def test_one_file_per_item_and_bad_inputs_are_skipped(tmp_path, meta32, capsys):
    ds = tmp_path / "ds"
    ds.mkdir()
    np.save(ds / "grids.npy", np.stack([sphere_grid(meta32, r) for r in (0.4, 0.6, 0.8)]).astype(np.float16))
    (tmp_path / "broken.ply").write_bytes(b"ply\nnot really\n")
    out = tmp_path / "pics"
    rc = cli.main(["render", str(ds / "grids.npy"), str(tmp_path / "broken.ply"), "--index", "0,2",
                   "--views", "front,left", "--size", "32", "--backend", "numpy", "--out", f"{out}/"])
    assert rc == 1                                                  # some input skipped
    assert "skipped" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["grids_0.png", "grids_2.png"]
    assert Image.open(out / "grids_0.png").size == (64, 32)


def test_render_cli_rejects_bad_requests(tmp_path, two_tone_ply, capsys):
    args = ["render", str(two_tone_ply), "--backend", "numpy"]
    assert cli.main(args + ["--out", str(tmp_path / "x.jpg")]) == 2
    assert cli.main(args + ["--out", str(tmp_path / "x.png"), "--turntable", "4"]) == 2
    err = capsys.readouterr().err
    assert ".png (contact sheet)" in err and "write it to a .gif" in err
    assert cli.main(["render", str(tmp_path / "missing.ply"), "--out", str(tmp_path / "y.png")]) == 2
    assert "missing.ply does not exist" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# Loading


def test_npy_grids_use_the_sibling_dataset_json(tmp_path, meta32):
    cam = Camera(fov_deg=30.0, distance=4.0)
    meta = GridMeta(resolution=32, camera=cam)
    np.save(tmp_path / "fakes.npy", np.stack([sphere_grid(meta, 0.5)] * 3))
    (tmp_path / "dataset.json").write_text(json.dumps({"grid": meta.to_dict()}))
    items, failed = load_items([tmp_path / "fakes.npy"], index="1-2")
    assert [it.name for it in items] == ["fakes[1]", "fakes[2]"] and not failed
    assert items[0].framing == loading.Framing((0.0, 0.0, 0.0), 4.0, 30.0)
    with pytest.raises(PcganError, match=r"fakes.npy.*out of range"):
        load_items([tmp_path / "fakes.npy"], index="7")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(PcganError, match="cannot show .txt"):
        loading.load_path(tmp_path / "notes.txt")


def test_ply_mesh_and_point_cloud_round_trip(tmp_path, two_tone_ply):
    from data_tools.synth_faces import make_face, sample_params, write_face

    face = make_face(sample_params(np.random.default_rng([0, 1])), resolution=24)
    write_face(face, tmp_path / "face.ply")
    mesh = loading.load_path(tmp_path / "face.ply")[0]
    assert mesh.is_mesh and len(mesh.faces) == len(face.faces)
    assert np.abs(mesh.colors - face.colors).max() <= 0.5 / 255 + 1e-6
    cloud = loading.load_path(two_tone_ply)[0]
    ply = read_point_ply(two_tone_ply)
    assert not cloud.is_mesh and np.array_equal(cloud.points, ply.points)
    assert 0 < cloud.spacing < 10                                  # mm between neighbours
    pic = render.render_item(mesh, [0.0], size=48, mode="lit", backend="numpy")[0]
    assert 0.15 < _foreground(pic).mean() < 0.9


# ---------------------------------------------------------------------------------------------
# The window (no event loop)


class FakeVis:
    """The parts of Open3D's Visualizer the key callbacks touch."""

    def __init__(self, width=200, height=100):
        import open3d as o3d

        self.option = type("Opt", (), {"point_size": 5.0, "light_on": True, "mesh_show_back_face": False,
                                        "background_color": None})()
        self.updated, self.saved, self.cameras = [], [], []
        self.params = o3d.camera.PinholeCameraParameters()
        self.params.intrinsic = o3d.camera.PinholeCameraIntrinsic(width, height, 100, 100, width / 2 - 0.5, height / 2 - 0.5)
        self.keys = {}
        vis = self

        class VC:
            def convert_to_pinhole_camera_parameters(self):
                return vis.params

            def convert_from_pinhole_camera_parameters(self, p, allow_arbitrary=False):
                vis.cameras.append(np.asarray(p.extrinsic).copy())
                return True

        self.vc = VC()

    def get_render_option(self):
        return self.option

    def get_view_control(self):
        return self.vc

    def update_geometry(self, g):
        self.updated.append(g)

    def add_geometry(self, g):
        pass

    def register_key_callback(self, key, fn):
        self.keys[key] = fn

    def capture_screen_image(self, path, do_render=False):
        Image.new("RGB", (4, 4)).save(path)
        self.saved.append(path)


def test_viewer_callbacks_change_colours_points_camera(tmp_path, meta32):
    items = [grid_item(sphere_grid(meta32, r), meta32, f"s{r}") for r in (0.5, 0.8)]
    state, keys = window.build_viewer(items, layout="row", screenshot_dir=tmp_path)
    assert {ord(k) for k in "CLNDRSH"} | {ord("="), ord("-")} <= set(keys)
    vis = FakeVis()
    window.prepare(vis, state, keys)
    assert set(vis.keys) == set(keys)
    geom = state.geometries[1]
    assert np.allclose(np.asarray(geom.colors), items[1].colors)         # starts in colour
    keys[ord("D")](vis)
    depth = np.asarray(geom.colors)
    assert not np.allclose(depth, items[1].colors) and vis.option.light_on is False
    nearest = np.argmax(state.items[1].points[:, 2])
    assert np.abs(depth[nearest] * 255 - [253, 231, 37]).max() < 2
    keys[ord("N")](vis)
    assert np.allclose(np.asarray(geom.colors), window.SHADE_GREY) and vis.option.light_on is True
    size = vis.option.point_size
    keys[ord("=")](vis)
    assert vis.option.point_size > size
    for _ in range(40):
        keys[ord("-")](vis)
    assert vis.option.point_size == window.POINT_SIZE_RANGE[0]
    keys[ord("R")](vis)
    ext = vis.cameras[-1]
    np.testing.assert_allclose(ext[:3, :3], np.diag([1.0, -1.0, -1.0]), atol=1e-9)   # frontal: looking along -z
    keys[ord("S")](vis)
    keys[ord("S")](vis)
    assert [p.name for p in state.screenshots] == ["pcgan-view-000.png", "pcgan-view-001.png"]
    assert all(p.exists() for p in state.screenshots)


def test_layouts_place_items_side_by_side(meta32):
    items = [grid_item(sphere_grid(meta32, 0.6), meta32, str(k)) for k in range(4)]
    row = window.layout_items(items, "row")
    xs = [it.points[:, 0].mean() for it in row]
    assert all(b - a > 1.2 for a, b in zip(xs, xs[1:]))                # left to right, no overlap
    assert np.ptp([it.points[:, 1].mean() for it in row]) < 1e-5
    grid = window.layout_items(items, "grid")
    centres = np.array([[it.points[:, 0].mean(), it.points[:, 1].mean()] for it in grid])
    assert len(np.unique(centres[:, 0].round(3))) == 2 and len(np.unique(centres[:, 1].round(3))) == 2
    assert centres[2, 1] < centres[0, 1]                               # second row below the first
    with pytest.raises(PcganError, match="layout 'ring'"):
        window.layout_items(items, "ring")


@needs_egl
def test_viewer_scene_in_a_real_hidden_window(meta32, tmp_path):
    import open3d as o3d

    item = grid_item(sphere_grid(meta32, 0.7), meta32, "s")
    state, keys = window.build_viewer([item], window_size=96, screenshot_dir=tmp_path)
    vis = o3d.visualization.VisualizerWithKeyCallback()
    if not vis.create_window(visible=False, width=96, height=96):
        pytest.skip("no EGL window")
    try:
        window.prepare(vis, state, keys)
        colour = np.asarray(vis.capture_screen_float_buffer(True)).copy()
        keys[ord("D")](vis)
        depth = np.asarray(vis.capture_screen_float_buffer(True)).copy()
    finally:
        vis.destroy_window()
    fg = colour.sum(-1) > 0.3
    rows, cols = np.nonzero(fg)
    assert 0.2 < fg.mean() < 0.8 and abs(rows.mean() - 48) < 4 and abs(cols.mean() - 48) < 4   # frontal, centred
    centre = depth[44:52, 44:52].reshape(-1, 3).mean(0)
    assert centre[0] > 0.8 and centre[1] > 0.75 and centre[2] < 0.3    # nearest part is viridis yellow


def test_no_display_says_so_in_one_line(monkeypatch, capsys, two_tone_ply):
    with pytest.raises(PcganError, match="no display.*pcgan render a.ply --out view.png"):
        window.check_display({}, "linux", ["a.ply"])
    window.check_display({"DISPLAY": ":0"}, "linux")
    window.check_display({"WAYLAND_DISPLAY": "wayland-0"}, "linux")
    window.check_display({}, "darwin")
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    assert cli.main(["view", str(two_tone_ply)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no display" in err and "pcgan render" in err
    with pytest.raises(SystemExit) as stop:
        cli.main(["view", "--help"])
    help_text = capsys.readouterr().out
    assert stop.value.code == 0 and "depth colouring" in help_text and "screenshot" in help_text


# ---------------------------------------------------------------------------------------------
# System libraries and backend choice


def test_missing_system_libraries_map_to_apt_packages(monkeypatch):
    monkeypatch.setattr(sys, "platform", "linux")
    gone = syslibs.missing("open3d", probe=lambda lib: lib.package != "libusb-1.0-0")
    assert [lib.package for lib in gone] == ["libusb-1.0-0"]
    assert syslibs.install_hint("open3d", gone) == "Open3D needs libusb-1.0-0: sudo apt-get install -y libusb-1.0-0"
    egl = syslibs.missing("egl", probe=lambda lib: False)
    assert {lib.package for lib in egl} == {"libegl1", "libgl1", "libegl-mesa0", "libgl1-mesa-dri"}
    vk = syslibs.install_hint("filament", syslibs.missing("filament", probe=lambda lib: False))
    assert vk.endswith("sudo apt-get install -y libvulkan1 mesa-vulkan-drivers")
    assert syslibs.install_hint("egl", []) == ""
    import open3d  # noqa: F401  -- it imported, so its libraries are there and detected as such

    assert syslibs.missing("open3d") == []
    assert syslibs.is_present(syslibs.SysLib("nothing", "none", ("libpcgan-does-not-exist.so.7",))) is False


def test_auto_backend_falls_back_and_names_the_fix(monkeypatch, caplog):
    monkeypatch.setattr(render, "_LIVE", {})
    monkeypatch.setattr(render, "_UNAVAILABLE", {})

    def broken(what, hint):
        def factory(size):
            raise render.BackendUnavailable(f"{what} failed; {hint}")
        return factory

    monkeypatch.setitem(render._FACTORIES, "egl", broken("EGL", syslibs.install_hint("egl", [syslibs.LIBS["libEGL"]])))
    monkeypatch.setitem(render._FACTORIES, "filament", broken("Vulkan", "no ICD"))
    monkeypatch.setattr(render, "_probe_filament_in_child", lambda timeout=0: None)
    with caplog.at_level(logging.DEBUG, logger="viewers.render"):
        backend = render.get_backend("auto", 32)
    assert backend.name == "numpy"
    assert "sudo apt-get install -y libegl1" in caplog.text                # the fix is named
    assert any(r.levelno == logging.WARNING for r in caplog.records)
    with pytest.raises(PcganError, match="render backend egl cannot start.*libegl1"):
        render.get_backend("egl", 32)
    with pytest.raises(PcganError, match="backend 'opengl'"):
        render.get_backend("opengl", 32)


def test_without_open3d_everything_renders_with_numpy(monkeypatch, meta32):
    # a training host without Open3D: auto falls back, meshes are drawn as their vertices
    monkeypatch.setattr(render, "_LIVE", {})
    monkeypatch.setattr(render, "_UNAVAILABLE", {})
    monkeypatch.setitem(sys.modules, "open3d", None)                     # `import open3d` fails
    g = sphere_grid(meta32, 0.7)
    pics = render.render_views(g, meta32, views="front", size=32, grid_as="mesh")
    assert render._LIVE.keys() == {"numpy"} and "cannot import open3d" in render._UNAVAILABLE["egl"]
    assert (_foreground(pics[0, 0]) == surface_mask(g, meta32)).all()


# ---------------------------------------------------------------------------------------------
# Latent explorer


TINY = dict(z_dim=8, w_dim=8, resolution=16, channels=7, channel_base=64, channel_max=16, mapping_layers=1)


@pytest.fixture
def tiny_G():
    from pcgan.networks import Generator

    torch.manual_seed(0)
    G = Generator(**TINY).eval()
    with torch.no_grad():
        G.mapping.w_avg.normal_()
    return G


def test_explorer_model_logic(tiny_G, tmp_path):
    from viewers.explorer import LatentChoice, check_choice, generate_grid, generate_item, save_face

    G, L = tiny_G, tiny_G.num_ws
    a, b = generate_grid(G, LatentChoice(1, 1.0)), generate_grid(G, LatentChoice(2, 1.0))
    assert a.shape == (7, 16, 16) and not torch.equal(a, b)
    assert torch.equal(a, generate_grid(G, LatentChoice(1, 1.0)))                     # same setting, same face
    assert torch.equal(generate_grid(G, LatentChoice(1, 0.0)), generate_grid(G, LatentChoice(2, 0.0)))  # psi 0: average
    assert torch.equal(generate_grid(G, LatentChoice(1, 1.0, seed2=2, crossover=L)), a)   # all styles from seed 1
    assert torch.equal(generate_grid(G, LatentChoice(1, 1.0, seed2=2, crossover=0)), b)   # all from seed 2
    mixed = generate_grid(G, LatentChoice(1, 1.0, seed2=2, crossover=L // 2))
    assert not torch.equal(mixed, a) and not torch.equal(mixed, b)
    with pytest.raises(PcganError, match=f"use 0 to {L}"):
        check_choice(G, LatentChoice(1, 1.0, seed2=2, crossover=L + 1))
    meta = GridMeta(resolution=16, center=(0, 0, 500), scale=80.0, units="mm")
    seed = next(s for s in range(50) if surface_mask(generate_grid(G, LatentChoice(s, 1.0)), meta).sum() > 3)
    grid, item = generate_item(G, meta, LatentChoice(seed, 1.0))
    path = save_face(grid, meta, tmp_path, LatentChoice(seed, 1.0))
    assert path.name == f"seed{seed:04d}_psi1.00.ply"
    assert len(read_point_ply(path).points) == len(item.points) == int(surface_mask(grid, meta).sum())


def test_explorer_gui_builds_and_regenerates_headless(tiny_G, tmp_path):
    # Open3D's GUI falls back to a headless window system without a display; the explorer's
    # widgets, worker thread and main-thread updates run for real, without app.run().
    from pcgan.checkpoint import save_snapshot

    meta = GridMeta(resolution=16)
    snap = save_snapshot(tmp_path / "network-snapshot-000001.pt", tiny_G, meta, {}, 1000)
    code = textwrap.dedent(f"""
        import os, time
        import open3d as o3d
        from pcgan.checkpoint import load_generator
        from viewers.explorer import Explorer, LatentChoice
        G, meta, _ = load_generator({str(snap)!r})
        app = o3d.visualization.gui.Application.instance
        app.initialize()
        ex = Explorer(G, meta, LatentChoice(3, 0.7), {str(tmp_path)!r}, width=320, height=240)
        def settle():
            for _ in range(200):
                app.run_one_tick(); time.sleep(0.02)
                if ex.status.text != "generating...":
                    return
        settle(); print("FIRST", ex.status.text, flush=True)
        ex.mix.checked = True; ex.seed2.int_value = 9; ex.crossover.int_value = 2; ex._changed(); settle()
        print("MIXED", ex.choice.label(), flush=True)
        ex._save(); print("SAVED", ex.status.text, flush=True)
        os._exit(0)   # closing a headless window asks X11 for a surface; skip teardown
    """)
    env = dict(os.environ)
    env.pop("DISPLAY", None)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180, cwd=REPO, env=env)
    if "FIRST" not in res.stdout:
        pytest.skip(f"Open3D GUI cannot start headless here: {(res.stderr.strip().splitlines() or ['?'])[-1]}")
    assert res.returncode == 0, res.stderr[-2000:]
    assert "MIXED seed0003_psi0.70_mix0009at2" in res.stdout
    assert "SAVED saved" in res.stdout and (tmp_path / "seed0003_psi0.70_mix0009at2.ply").exists()

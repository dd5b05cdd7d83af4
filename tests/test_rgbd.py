"""data_tools.rgbd: finding RGB-D pairs, intrinsics, back-projection, cropping, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from data_tools.points import splat_points
from data_tools.rgbd import (RgbdCrop, RgbdInput, find_rgbd, load_intrinsics, load_rgbd, looks_like_rgbd,
                             parse_crop)
from pcgan.errors import PcganError
from pcgan.grid import GridMeta, grid_to_points, normalize_xyz

REALDATA = Path(__file__).resolve().parents[1].parent / "shared" / "realdata"
F, W, H = 60.0, 64, 48          # synthetic camera: focal length (px), image size
RED, BLUE = (200, 30, 30), (30, 30, 200)


def write_item(folder: Path, depth_m: np.ndarray, color: np.ndarray | None = None, stem="cap",
               scale=1000.0, intr: dict | None = None) -> RgbdInput:
    """Write <stem>_color.png, <stem>_depth.png (uint16, value = metres * scale) and intrinsics.json."""
    folder.mkdir(parents=True, exist_ok=True)
    h, w = depth_m.shape
    if color is None:
        color = np.full((h, w, 3), 128, np.uint8)
    Image.fromarray(color.astype(np.uint8)).save(folder / f"{stem}_color.png")
    Image.fromarray(np.round(depth_m * scale).astype(np.uint16)).save(folder / f"{stem}_depth.png")
    intr = intr or {"width": w, "height": h, "fx": F, "fy": F, "cx": (w - 1) / 2, "cy": (h - 1) / 2,
                    "depth_scale": scale}
    (folder / "intrinsics.json").write_text(json.dumps(intr))
    return RgbdInput(folder / f"{stem}_color.png", folder / f"{stem}_depth.png", folder / "intrinsics.json", stem)


def step_scene():
    """Left half a wall at 1.0 m (red), right half a wall at 1.5 m (blue)."""
    depth = np.full((H, W), 1.5)
    depth[:, : W // 2] = 1.0
    color = np.zeros((H, W, 3), np.uint8)
    color[:, : W // 2] = RED
    color[:, W // 2:] = BLUE
    return depth, color


def canonical_meta(points: np.ndarray, resolution: int) -> GridMeta:
    """Test-local canonicalisation: centre at the centroid, scale so x, y fit in [-0.95, 0.95]."""
    center = points.mean(axis=0)
    scale = float(np.abs(points - center)[:, :2].max() / 0.95)
    return GridMeta(resolution=resolution, center=tuple(center), scale=scale, units="m")


# ---------------------------------------------------------------------------------------------
# back-projection and the depth step


def test_back_projection_matches_the_pinhole_model(tmp_path):
    depth = np.full((H, W), 2.0)
    depth[10:13, 20:23] = 1.25                                       # (a lone pixel would be "flying")
    color = np.zeros((H, W, 3), np.uint8)
    color[11, 21] = (255, 128, 0)
    item = write_item(tmp_path, depth, color)
    scan = load_rgbd(item, crop="none")
    assert scan.units == "m" and scan.points.shape == (H * W, 3) and scan.colors.shape == (H * W, 3)
    assert np.isclose(scan.points[:, 2], -1.25).sum() == 9
    k = np.flatnonzero(scan.colors[:, 0] == 1.0)
    assert len(k) == 1
    # OpenCV: x = (j - cx) z / f, y = (i - cy) z / f; the scan frame negates y and z
    np.testing.assert_allclose(scan.points[k[0]], [(21 - 31.5) * 1.25 / F, -(11 - 23.5) * 1.25 / F, -1.25])
    np.testing.assert_allclose(scan.colors[k[0]], [1.0, 128 / 255, 0.0], atol=1e-6)
    assert scan.info["image_size"] == (W, H) and scan.info["depth_scale"] == 1000.0


def test_depth_step_leaves_no_point_between_the_planes(tmp_path):
    depth, color = step_scene()
    depth[:, W // 2 - 1] = 1.25                                      # flying pixels along the edge
    item = write_item(tmp_path, depth, color)
    scan = load_rgbd(item, crop="none")
    assert not np.isclose(scan.points[:, 2], -1.25).any()            # flying pixels were dropped
    meta = canonical_meta(scan.points, 32)
    for max_hole in (None, 2, 4, 8):
        for sub in (1, 7):   # dense, and every 7th pixel (sparse: holes get filled)
            pts, cols = scan.points[::sub], scan.colors[::sub]
            grid, stats = splat_points(normalize_xyz(pts, meta), cols, meta, max_hole_px=max_hole)
            gp, gc = grid_to_points(grid, meta)
            on_front = np.abs(gp[:, 2] + 1.0) < 1e-5
            on_back = np.abs(gp[:, 2] + 1.5) < 1e-5
            assert (on_front | on_back).all(), (max_hole, sub, np.unique(gp[:, 2].round(3)))
            assert on_front.sum() > 100 and on_back.sum() > 100
            # colours stay with their plane: red in front, blue behind
            np.testing.assert_allclose(gc[on_front], np.tile(np.array(RED) / 255, (on_front.sum(), 1)), atol=1e-6)
            np.testing.assert_allclose(gc[on_back], np.tile(np.array(BLUE) / 255, (on_back.sum(), 1)), atol=1e-6)
            if sub == 7 and max_hole != 0:
                assert stats["filled_px"] > 0


def test_auto_crop_keeps_the_central_foreground(tmp_path):
    # a head-sized bump at 0.6-0.7 m in front of a wall at 2 m; a nearer object in a corner
    ii, jj = np.mgrid[0:H, 0:W]
    r2 = ((jj - 32) ** 2 + (ii - 24) ** 2) / 14.0 ** 2
    depth = np.where(r2 < 1, 0.7 - 0.1 * np.sqrt(np.clip(1 - r2, 0, 1)), 2.0)
    depth[:8, :8] = 0.4                                              # not central: ignored
    depth[30:34, 40:44] = 0.0                                        # a sensor hole in the face
    item = write_item(tmp_path, depth)
    scan = load_rgbd(item)                                           # crop="auto"
    z = -scan.points[:, 2]
    assert z.min() >= 0.6 - 1e-9 and z.max() <= 0.7 + 1e-9          # only the bump
    assert len(scan) >= 0.9 * ((r2 < 1).sum() - 16 - 60)             # nearly all of it (minus rim and hole)
    x0, y0, x1, y1 = scan.info["crop_box"]
    assert 16 <= x0 < x1 <= 48 and 8 <= y0 < y1 <= 40
    # a pixel box and a depth range instead
    boxed = load_rgbd(item, crop="box=0,0,10,10+depth=0.3,0.5")
    np.testing.assert_allclose(-boxed.points[:, 2], 0.4)
    assert len(boxed) == 64 and boxed.info["crop_box"] == (0, 0, 8, 8)
    assert len(load_rgbd(item, crop="none")) == H * W - 16 - _edge_pixels(depth)


def _edge_pixels(depth):
    """Pixels the loader drops as flying: a jump of > 3 % on two opposite sides."""
    valid = depth > 0
    def jump(a, b, va, vb):
        return va & vb & (np.abs(a - b) > 0.03 * np.minimum(a, b))
    lr = np.zeros_like(valid)
    lr[:, 1:-1] = jump(depth[:, 1:-1], depth[:, :-2], valid[:, 1:-1], valid[:, :-2]) & \
        jump(depth[:, 1:-1], depth[:, 2:], valid[:, 1:-1], valid[:, 2:])
    ud = np.zeros_like(valid)
    ud[1:-1] = jump(depth[1:-1], depth[:-2], valid[1:-1], valid[:-2]) & \
        jump(depth[1:-1], depth[2:], valid[1:-1], valid[2:])
    return int((lr | ud).sum())


def test_parse_crop():
    assert parse_crop("auto") == RgbdCrop()
    assert parse_crop("none") == RgbdCrop(foreground=False)
    c = parse_crop("box=10,20,300,200+depth=0.3,1.2+auto+band=0.5")
    assert c.box == (10, 20, 300, 200) and c.depth_range == (0.3, 1.2) and c.foreground and c.band == 0.5
    for bad in ("box=1,2,3", "depth=2,1", "zoom=2", "box=5,5,1,1", "box=a,b,c,d"):
        with pytest.raises(PcganError, match="crop"):
            parse_crop(bad)


# ---------------------------------------------------------------------------------------------
# intrinsics and finding pairs


def test_intrinsics_both_formats(tmp_path):
    (tmp_path / "o3d.json").write_text(json.dumps(
        {"width": 640, "height": 480, "intrinsic_matrix": [525.0, 0, 0, 0, 520.0, 0, 319.5, 239.5, 1]}))
    (tmp_path / "plain.json").write_text(json.dumps(
        {"width": 640, "height": 480, "fx": 525.0, "fy": 520.0, "cx": 319.5, "cy": 239.5, "depth_scale": 5000}))
    K1, w1, h1, s1 = load_intrinsics(tmp_path / "o3d.json")
    K2, w2, h2, s2 = load_intrinsics(tmp_path / "plain.json")
    np.testing.assert_allclose(K1, [[525, 0, 319.5], [0, 520, 239.5], [0, 0, 1]])
    np.testing.assert_allclose(K1, K2)
    assert (w1, h1, s1) == (640, 480, None) and (w2, h2, s2) == (640, 480, 5000.0)


def test_find_rgbd_layouts(tmp_path):
    depth = np.full((H, W), 1.0)
    a = write_item(tmp_path / "flat", depth, stem="a")
    write_item(tmp_path / "flat", depth, stem="b")
    items = find_rgbd([tmp_path / "flat"])
    assert [i.name for i in items] == ["a", "b"] and items[0] == a
    # naming either file of a pair, plus its directory again: no duplicates
    assert find_rgbd([a.depth, a.color, tmp_path / "flat"]) == items
    assert looks_like_rgbd(tmp_path / "flat") and looks_like_rgbd(a.color) and not looks_like_rgbd(tmp_path)
    # Open3D/Redwood layout: color/ and depth/ folders matched by name
    seq = tmp_path / "seq"
    for sub in ("color", "depth"):
        (seq / sub).mkdir(parents=True)
    for k in range(2):
        Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(seq / "color" / f"{k:05d}.jpg")
        Image.fromarray(np.full((H, W), 1000, np.uint16)).save(seq / "depth" / f"{k:05d}.png")
    (seq / "camera_intrinsic.json").write_text(json.dumps(
        {"width": W, "height": H, "intrinsic_matrix": [F, 0, 0, 0, F, 0, 31.5, 23.5, 1]}))
    items = find_rgbd(seq)
    assert [i.color.name for i in items] == ["00000.jpg", "00001.jpg"]
    assert all(i.intrinsics.name == "camera_intrinsic.json" for i in items)
    assert len(load_rgbd(items[1], crop="none")) == H * W


def test_find_rgbd_errors_name_the_path(tmp_path):
    (tmp_path / "empty").mkdir()
    lone = tmp_path / "lone"
    lone.mkdir()
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(lone / "x_color.png")
    nointr = tmp_path / "nointr"
    nointr.mkdir()
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(nointr / "y_color.png")
    Image.fromarray(np.zeros((4, 4), np.uint16)).save(nointr / "y_depth.png")
    cases = {tmp_path / "empty": "no RGB-D pair", lone / "x_color.png": "no depth partner",
             nointr: "no intrinsics JSON", tmp_path / "missing": "no such file"}
    for path, words in cases.items():
        with pytest.raises(PcganError) as info:
            find_rgbd([path])
        assert words in str(info.value) and path.name in str(info.value), str(info.value)


# ---------------------------------------------------------------------------------------------
# bad input: each one line naming the file


def test_bad_rgbd_inputs(tmp_path):
    depth, color = step_scene()
    cases = []

    item = write_item(tmp_path / "size", depth, color)
    Image.fromarray(np.zeros((24, 32, 3), np.uint8)).save(item.color)
    cases.append((item, ["64x48", "32x24", "cap_depth.png"]))

    item = write_item(tmp_path / "intr", depth, color,
                      intr={"width": 640, "height": 480, "fx": F, "fy": F, "cx": 31.5, "cy": 23.5})
    cases.append((item, ["640x480", "64x48", "intrinsics.json"]))

    item = write_item(tmp_path / "eight", depth, color)
    Image.fromarray((depth * 100).astype(np.uint8)).save(item.depth)
    cases.append((item, ["8-bit", "cap_depth.png"]))

    item = write_item(tmp_path / "rgbdepth", depth, color)
    Image.fromarray(color).save(item.depth)
    cases.append((item, ["mode RGB", "cap_depth.png"]))

    item = write_item(tmp_path / "corrupt", depth, color)
    item.depth.write_bytes(b"\x89PNG\r\n\x1a\n this is not a png")
    cases.append((item, ["unreadable depth image", "cap_depth.png"]))

    item = write_item(tmp_path / "trunc", depth, color)
    data = item.color.read_bytes()
    item.color.write_bytes(data[: len(data) // 2])
    cases.append((item, ["unreadable colour image", "cap_color.png"]))

    item = write_item(tmp_path / "zero", np.zeros((H, W)), color)
    cases.append((item, ["no valid depth", "cap_depth.png"]))

    item = write_item(tmp_path / "json", depth, color)
    item.intrinsics.write_text("{not json")
    cases.append((item, ["not a readable intrinsics JSON", "intrinsics.json"]))

    item = write_item(tmp_path / "keys", depth, color)
    item.intrinsics.write_text(json.dumps({"width": W, "height": H, "focal": 60}))
    cases.append((item, ["fx fy cx cy", "intrinsics.json"]))

    item = write_item(tmp_path / "focal", depth, color)
    item.intrinsics.write_text(json.dumps({"fx": -1, "fy": 60, "cx": 1, "cy": 1}))
    cases.append((item, ["focal lengths must be positive", "intrinsics.json"]))

    item = write_item(tmp_path / "cropped", depth, color)
    cases.append((item, ["after cropping", "cap_depth.png"], "depth=3,4"))

    for case in cases:
        item, words = case[0], case[1]
        crop = case[2] if len(case) > 2 else "auto"
        with pytest.raises(PcganError) as info:
            load_rgbd(item, crop=crop)
        msg = str(info.value)
        assert "\n" not in msg
        for w in words:
            assert w in msg, f"{item.depth.parent.name}: {w!r} not in {msg!r}"


def test_an_rgbd_scan_that_misses_the_camera(tmp_path):
    depth, color = step_scene()
    scan = load_rgbd(write_item(tmp_path, depth, color), crop="none")
    meta = GridMeta(resolution=16, center=(0.0, 0.0, 100.0), scale=0.5)   # canonical frame far from the scan
    with pytest.raises(PcganError, match="misses the camera entirely") as info:
        splat_points(normalize_xyz(scan.points, meta), scan.colors, meta, name="cap_color.png")
    assert "cap_color.png" in str(info.value)


# ---------------------------------------------------------------------------------------------
# real data: the TUM RGB-D pair


def test_real_tum_pair_within_half_percent(record_property):
    folder = REALDATA / "rgbd" / "tum"
    if not folder.exists():
        pytest.skip(f"real data not available: {folder}")
    from scipy.spatial import cKDTree
    (item,) = find_rgbd([folder])
    K_plain = load_intrinsics(folder / "intrinsics.json")
    K_o3d = load_intrinsics(folder / "intrinsics_open3d.json")
    np.testing.assert_allclose(K_plain[0], K_o3d[0])
    assert K_plain[3] == 5000.0
    scan = load_rgbd(item)                                           # automatic foreground crop
    assert 5_000 < len(scan) < 100_000 and scan.info["depth_scale"] == 5000.0
    color = np.asarray(Image.open(item.color), dtype=np.float32) / 255.0
    tree = cKDTree(scan.points)
    diag = float(np.linalg.norm(scan.points.max(0) - scan.points.min(0)))
    for res in (64, 128):
        meta = canonical_meta(scan.points, res)
        grid, stats = splat_points(normalize_xyz(scan.points, meta), scan.colors, meta, name=item.name)
        gp, gc = grid_to_points(grid, meta)
        dist, nn = tree.query(gp)
        dist = dist / diag
        # colour check against the colour image itself, at the pixel each nearest point came from
        K = K_plain[0]
        p = scan.points[nn]
        j = np.round(K[0, 0] * p[:, 0] / -p[:, 2] + K[0, 2]).astype(int)
        i = np.round(-K[1, 1] * p[:, 1] / -p[:, 2] + K[1, 2]).astype(int)
        colour_mae = float(np.abs(gc - color[i, j]).mean())
        record_property(f"tum_{res}", dict(max_pct=100 * dist.max(), p99_pct=100 * np.percentile(dist, 99),
                                           colour_mae=colour_mae, **stats))
        print(f"TUM @{res}: {len(gp)} masked of {len(scan)} points, filled {stats['filled_px']}, max "
              f"{100 * dist.max():.3f}% p99 {100 * np.percentile(dist, 99):.3f}% of the diagonal ({diag:.3f} m), "
              f"colour MAE {colour_mae:.4f}")
        assert len(gp) > 0.2 * res * res
        assert colour_mae < 0.01
        if res == 64:   # every pixel gets several points: all masked points are scan points
            assert dist.max() <= 0.005
        else:           # some pixels fall between Kinect depth-quantisation terraces and are filled
            assert np.percentile(dist, 99) <= 0.005 and dist.max() <= 0.02

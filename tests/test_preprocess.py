"""data_tools/preprocess.py: `pcgan preprocess` end to end: bad input, resuming, parallel runs,
the dataset it writes, and real scans mapped back onto their source surfaces."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import require_realdata
from test_meshes import write_ply_mesh
from pcgan.cli import main
from pcgan.dataset import load_dataset, validate_dataset
from pcgan.grid import grid_to_points, sheet_xyz, surface_mask

o3d = pytest.importorskip("open3d")

FAST = ["--res", "16", "--workers", "1", "--preview", "0"]


def head_mesh(seed: int = 0, radius: float = 80.0, resolution: int = 16):
    """A face-sized test mesh in mm: a sphere with a nose, coloured by position."""
    s = o3d.geometry.TriangleMesh.create_sphere(radius=radius, resolution=resolution)
    v = np.asarray(s.vertices).copy()
    f = np.asarray(s.triangles)
    rng = np.random.default_rng(seed)
    v *= [0.8 + 0.1 * rng.random(), 1.0, 0.9]
    nose = np.exp(-((v[:, 0] / 20) ** 2 + (v[:, 1] / 25) ** 2)) * (v[:, 2] > 0)
    v[:, 2] += 25 * nose
    cols = np.clip((v - v.min(0)) / np.ptp(v, 0) * 255, 0, 255).astype(np.uint8)
    return v, f, cols


def write_head(path: Path, seed: int = 0, **kw) -> Path:
    v, f, cols = head_mesh(seed, **kw)
    write_ply_mesh(path, v, f.tolist(), cols)
    return path


def run_cli(capsys, *args) -> tuple[int, str, str]:
    rc = main(["preprocess", *map(str, args)])
    out, err = capsys.readouterr()
    return rc, out, err


def records(ds: Path) -> dict:
    return {Path(r["path"]).name: r for r in json.loads((ds / "dataset.json").read_text())["files"]}


# ---------------------------------------------------------------------------------------------
# Bad input: one line naming the file, the batch goes on, failures listed


def _corrupt(d: Path) -> Path:
    p = d / "corrupt.ply"
    p.write_bytes(bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8)))
    return p


def _empty(d: Path) -> Path:
    p = d / "empty.obj"
    p.write_bytes(b"")
    return p


def _truncated(d: Path) -> Path:
    p = write_head(d / "truncated.ply", seed=1)
    data = p.read_bytes()
    p.write_bytes(data[: len(data) * 2 // 3])
    return p


def _nan(d: Path) -> Path:
    p = d / "nan.ply"
    v, f, c = head_mesh(2)
    write_ply_mesh(p, np.full_like(v, np.nan), f.tolist(), c)
    return p


def _nan_points(d: Path) -> Path:
    p = d / "nan.xyz"
    p.write_text("nan nan nan\n" * 50)
    return p


def _no_faces(d: Path) -> Path:
    p = d / "nofaces.obj"
    p.write_text("".join(f"v {x} {y} 0\n" for x, y in np.random.default_rng(0).random((30, 2))))
    return p


def _unknown(d: Path) -> Path:
    p = d / "scan.foo"
    p.write_text("1 2 3\n")
    return p


def _rgbd_wrong_size(d: Path) -> Path:
    Image.fromarray(np.full((48, 64, 3), 128, np.uint8)).save(d / "cap_color.png")
    Image.fromarray(np.full((40, 60), 1000, np.uint16)).save(d / "cap_depth.png")
    (d / "intrinsics.json").write_text(json.dumps({"fx": 50, "fy": 50, "cx": 31.5, "cy": 23.5,
                                                   "width": 64, "height": 48, "depth_scale": 1000}))
    return d / "cap_color.png"


BAD = {
    "corrupt": (_corrupt, "not a PLY"),
    "empty": (_empty, "empty"),
    "truncated": (_truncated, "truncated"),
    "nan-mesh": (_nan, "NaN"),
    "nan-points": (_nan_points, "NaN"),
    "no-faces": (_no_faces, "no faces"),
    "unknown-extension": (_unknown, "unknown extension"),
    "rgbd-wrong-size": (_rgbd_wrong_size, "depth image is 60x40"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_a_bad_file_is_reported_and_the_batch_goes_on(tmp_path, capsys, case):
    make, problem = BAD[case]
    good = write_head(tmp_path / "good.ply")
    bad = make(tmp_path)
    ds = tmp_path / "ds"
    rc, out, err = run_cli(capsys, good, bad, "--out", ds, "--orient", "none", *FAST)
    assert rc == 0
    lines = [ln for ln in err.splitlines() if str(bad) in ln and problem in ln]
    assert len(lines) == 1 and lines[0].startswith("failed: ")            # one line naming the file
    recs = records(ds)
    assert recs["good.ply"]["status"] == "ok" and recs["good.ply"]["index"] == 0
    assert recs[bad.name]["status"] == "failed" and problem in recs[bad.name]["error"]
    assert recs[bad.name]["index"] is None
    assert problem in out and "1 failed" in out                           # listed in the summary
    assert load_dataset(ds).grids.shape[0] == 1 and validate_dataset(ds) == []


def test_a_scan_that_misses_the_camera_fails_alone(tmp_path, capsys):
    near, far = write_head(tmp_path / "near.ply"), write_head(tmp_path / "far.ply", seed=3)
    away = np.eye(4)
    away[0, 3] = 1e5                                                    # 100 m to the side
    (tmp_path / "t.json").write_text(json.dumps({"near.ply": np.eye(4).tolist(), "far.ply": away.tolist()}))
    rc, out, err = run_cli(capsys, near, far, "--out", tmp_path / "ds", "--transforms", tmp_path / "t.json",
                           "--scale", "100", *FAST)
    assert rc == 0 and "misses the camera" in records(tmp_path / "ds")["far.ply"]["error"]
    assert sum(str(far) in ln for ln in err.splitlines()) == 1


def test_missing_texture_and_some_nan_vertices_convert_with_warnings(tmp_path, capsys):
    v, f, _ = head_mesh(0)
    obj = tmp_path / "tex.obj"
    lines = ["mtllib tex.mtl", "usemtl skin"] + [f"v {a} {b} {c}" for a, b, c in v] + ["vt 0.5 0.5"]
    lines += [f"f {a + 1}/1 {b + 1}/1 {c + 1}/1" for a, b, c in f]
    obj.write_text("\n".join(lines) + "\n")
    (tmp_path / "tex.mtl").write_text("newmtl skin\nmap_Kd skin.jpg\n")
    v[:5] = np.nan
    partial = tmp_path / "partial.ply"
    write_ply_mesh(partial, v, f.tolist(), np.zeros_like(v, dtype=np.uint8))
    rc, out, err = run_cli(capsys, obj, partial, "--out", tmp_path / "ds", "--orient", "none",
                           "--default-rgb", "0.2,0.4,0.6", *FAST)
    recs = records(tmp_path / "ds")
    assert rc == 0 and recs["tex.obj"]["status"] == "ok" and recs["partial.ply"]["status"] == "ok"
    assert any("skin.jpg" in w for w in recs["tex.obj"]["warnings"])
    assert any("NaN" in w for w in recs["partial.ply"]["warnings"])
    assert sum("skin.jpg" in ln for ln in err.splitlines()) == 1        # printed once, not per pass
    ds = load_dataset(tmp_path / "ds")
    _, colors = grid_to_points(np.asarray(ds.grids[recs["tex.obj"]["index"]], np.float32), ds.meta)
    assert np.allclose(colors, [0.2, 0.4, 0.6], atol=2e-3)                # the default colour


def test_nothing_converted_exits_1_and_writes_no_dataset(tmp_path, capsys):
    rc, out, err = run_cli(capsys, _corrupt(tmp_path), _empty(tmp_path), "--out", tmp_path / "ds", *FAST)
    assert rc == 1 and "nothing converted" in out
    assert not (tmp_path / "ds" / "grids.npy").exists()


def test_bad_res_or_out_fail_before_any_work(tmp_path, capsys):
    good = write_head(tmp_path / "good.ply")
    rc, _, err = run_cli(capsys, good, "--out", tmp_path / "ds", "--res", "100")
    assert rc == 2 and "--res 100" in err and "power of two" in err
    assert not (tmp_path / "ds").exists()
    blocker = tmp_path / "file"
    blocker.write_text("x")
    rc, _, err = run_cli(capsys, good, "--out", blocker / "ds")
    assert rc == 2 and "cannot create output directory" in err
    rc, _, err = run_cli(capsys, good, "--out", tmp_path / "ds2", "--scale", "-3")
    assert rc == 2 and "--scale" in err and not (tmp_path / "ds2" / ".cache").exists()
    rc, _, err = run_cli(capsys, good, "--out", tmp_path / "ds2", "--orient", "auto", "--up", "+z")
    assert rc == 2 and "--orient axes" in err


# ---------------------------------------------------------------------------------------------
# Discovery, resuming, parallel runs


def test_folders_and_globs_find_scans_and_skip_companion_files(tmp_path, capsys):
    scans = tmp_path / "scans"
    (scans / "sub").mkdir(parents=True)
    write_head(scans / "a.ply")
    write_head(scans / "sub" / "b.ply", seed=1)
    (scans / "LICENSE.txt").write_text("licence")
    (scans / "sub" / "texture.png").write_bytes(b"png")
    write_head(tmp_path / "c.ply", seed=2)
    rc, out, _ = run_cli(capsys, scans, str(tmp_path / "*.ply"), scans / "a.ply", tmp_path / "missing.ply",
                         "--out", tmp_path / "ds", "--orient", "none", *FAST)
    recs = records(tmp_path / "ds")
    assert rc == 0 and sorted(recs) == ["a.ply", "b.ply", "c.ply", "missing.ply"]     # a.ply once
    assert recs["missing.ply"]["status"] == "failed" and "2 non-scan files skipped" in out


def test_rerun_resumes_from_the_cache(tmp_path, capsys):
    for i in range(3):
        write_head(tmp_path / f"s{i}.ply", seed=i)
    args = [tmp_path / "s0.ply", tmp_path / "s1.ply", tmp_path / "s2.ply", "--out", tmp_path / "ds", *FAST]
    rc, out, _ = run_cli(capsys, *args)
    assert rc == 0 and "3 converted (0 from cache)" in out
    first = np.load(tmp_path / "ds" / "grids.npy")
    (tmp_path / "ds" / "grids.npy").unlink()                              # as if interrupted before writing
    (tmp_path / "ds" / "dataset.json").unlink()
    rc, out, _ = run_cli(capsys, *args)
    assert rc == 0 and "3 converted (3 from cache)" in out
    assert np.array_equal(np.load(tmp_path / "ds" / "grids.npy"), first)
    assert not list((tmp_path / "ds" / ".cache").glob("assemble*"))         # no scratch copy left
    # a fixed scale keeps finished scans valid when a new one arrives
    fixed = [*args[:3], "--scale", "90", *args[3:]]
    run_cli(capsys, *fixed)
    write_head(tmp_path / "s3.ply", seed=3)
    rc, out, _ = run_cli(capsys, *fixed[:3], tmp_path / "s3.ply", *fixed[3:])
    assert rc == 0 and "4 converted (3 from cache)" in out
    rc, out, _ = run_cli(capsys, *fixed, "--force")
    assert "(0 from cache)" in out


def test_two_workers_write_the_same_dataset_as_one(tmp_path, capsys):
    paths = [write_head(tmp_path / f"s{i}.ply", seed=i) for i in range(3)]
    _corrupt(tmp_path)
    paths.append(tmp_path / "corrupt.ply")
    for w in ("1", "2"):
        rc, _, _ = run_cli(capsys, *paths, "--out", tmp_path / f"ds{w}", "--res", "16", "--workers", w,
                           "--preview", "2")
        assert rc == 0
    assert (tmp_path / "ds1" / "grids.npy").read_bytes() == (tmp_path / "ds2" / "grids.npy").read_bytes()
    a, b = records(tmp_path / "ds1"), records(tmp_path / "ds2")
    for name in a:
        for key in ("status", "error", "index", "to_canonical", "sha256"):
            assert a[name][key] == b[name][key], (name, key)


@pytest.mark.parametrize("no_mask", [False, True])
def test_auto_sheet_lies_just_behind_the_deepest_surface_point(tmp_path, capsys, no_mask):
    paths = [write_head(tmp_path / f"s{i}.ply", seed=i) for i in range(2)]
    flags = ["--no-mask"] if no_mask else []
    assert run_cli(capsys, *paths, "--out", tmp_path / "far", "--sheet-z", "-1.5", *FAST, *flags)[0] == 0
    assert run_cli(capsys, *paths, "--out", tmp_path / "auto", *FAST, *flags)[0] == 0     # auto: the default
    far, auto = load_dataset(tmp_path / "far"), load_dataset(tmp_path / "auto")
    g_far, g_auto = np.asarray(far.grids, np.float32), np.asarray(auto.grids, np.float32)
    surf = np.stack([surface_mask(g, far.meta) for g in g_far])                       # [N, H, W]
    deepest = g_far[:, 2][surf].min()
    assert far.meta.sheet_z == -1.5
    assert deepest - 0.07 < auto.meta.sheet_z <= deepest - 0.05                        # SHEET_MARGIN, rounded down
    assert np.array_equal(np.stack([surface_mask(g, auto.meta) for g in g_auto]), surf)  # same pixels are surface
    assert np.array_equal(g_auto.transpose(1, 0, 2, 3)[:, surf], g_far.transpose(1, 0, 2, 3)[:, surf])
    sheet = sheet_xyz(auto.meta)                                                       # empty pixels: the new sheet
    for g, m in zip(g_auto, surf):
        np.testing.assert_allclose(g[:3][:, ~m], sheet[:, ~m], atol=2e-3)              # float16 storage
    assert json.loads((tmp_path / "auto" / "dataset.json").read_text())["preprocess"]["sheet_z"] == "auto"
    rc, _, err = run_cli(capsys, *paths, "--out", tmp_path / "bad", "--sheet-z", "deep", *FAST)
    assert rc != 0 and "--sheet-z 'deep'" in err


# ---------------------------------------------------------------------------------------------
# What dataset.json says, and mapping grids back onto their scans


def to_source(grid: np.ndarray, meta, to_canonical) -> tuple[np.ndarray, np.ndarray]:
    """Surface points of a grid in its source scan's frame and units, with their colours."""
    pts, cols = grid_to_points(np.asarray(grid, np.float32), meta)          # canonical frame, scan units
    T = np.asarray(to_canonical)
    return (pts.astype(np.float64) - T[:3, 3]) @ np.linalg.inv(T[:3, :3]).T, cols


def surface_distance(vertices, triangles, pts) -> np.ndarray:
    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.core.Tensor(np.asarray(vertices, np.float32)),
                        o3d.core.Tensor(np.asarray(triangles, np.uint32)))
    return scene.compute_distance(o3d.core.Tensor(pts.astype(np.float32))).numpy()


def test_dataset_json_maps_each_grid_back_onto_its_scan(tmp_path, capsys):
    turn = np.array([[0, 0, 1], [0, 1, 0], [-1, 0, 0]], dtype=np.float64)   # face along +x, y up
    v, f, c = head_mesh(0)
    write_ply_mesh(tmp_path / "turned.ply", v @ turn.T + [500, -20, 3], f.tolist(), c)
    rc, _, _ = run_cli(capsys, tmp_path / "turned.ply", "--out", tmp_path / "ds", "--up", "+y", "--forward", "+x",
                       "--units", "mm", "--res", "32", "--workers", "1", "--val-fraction", "0")
    assert rc == 0
    info = json.loads((tmp_path / "ds" / "dataset.json").read_text())
    rec = info["files"][0]
    assert rec["sha256"] == hashlib.sha256((tmp_path / "turned.ply").read_bytes()).hexdigest()
    assert info["grid"]["units"] == "mm" and info["grid"]["camera"]["projection"] == "perspective"
    assert info["split"]["train"] == [0] and info["stats"]["empty_grids"] == 0
    assert info["preprocess"]["color_space"].startswith("srgb")
    ds = load_dataset(tmp_path / "ds")
    pts, cols = to_source(ds.grids[0], ds.meta, ds.source_transform(0))
    d = surface_distance(v @ turn.T + [500, -20, 3], f, pts)
    assert d.max() < 0.005 * np.linalg.norm(np.ptp(v, 0))
    assert pts[:, 0].mean() > 500                                         # seen from its +x side: the nose
    assert (tmp_path / "ds" / "preview.png").is_file()


# ---------------------------------------------------------------------------------------------
# Real scans (../shared/realdata): within 0.5% of the bounding-box diagonal, texture colours


def texture_oracle(obj_path: Path, pts: np.ndarray) -> np.ndarray:
    """Colour of the closest surface point, looked up in the texture independently of pcgan:
    trimesh's OBJ reader and per-vertex UVs, nearest texel."""
    trimesh = pytest.importorskip("trimesh")
    tm = trimesh.load(obj_path, process=False)
    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.core.Tensor(np.asarray(tm.vertices, np.float32)),
                        o3d.core.Tensor(np.asarray(tm.faces, np.uint32)))
    q = scene.compute_closest_points(o3d.core.Tensor(pts.astype(np.float32)))
    tri = q["primitive_ids"].numpy().astype(np.int64)
    b = q["primitive_uvs"].numpy().astype(np.float64)
    w = np.stack([1 - b[:, 0] - b[:, 1], b[:, 0], b[:, 1]], axis=1)
    uv = np.einsum("nk,nkc->nc", w, np.asarray(tm.visual.uv)[tm.faces[tri]])
    img = np.asarray(tm.visual.material.image.convert("RGB"))
    h, wd = img.shape[:2]
    col = np.clip(np.round(uv[:, 0] * wd - 0.5), 0, wd - 1).astype(int)
    row = np.clip(np.round((1 - uv[:, 1]) * h - 0.5), 0, h - 1).astype(int)
    return img[row, col] / 255.0


@pytest.fixture(scope="module")
def realdata_ds(tmp_path_factory):
    james = require_realdata("faces", "menpo3d_james", "james.obj")
    ict = require_realdata("faces", "ict_facekit", "generic_neutral_mesh.obj")
    out = tmp_path_factory.mktemp("real") / "ds"
    rc = main(["preprocess", str(james), str(ict), "--out", str(out), "--res", "128", "--workers", "1",
               "--scale", "per-scan", "--preview", "2"])
    assert rc == 0
    return out, james, ict


@pytest.mark.parametrize("name", ["james.obj", "generic_neutral_mesh.obj"])
def test_realdata_meshes_land_on_their_surface(realdata_ds, name):
    from data_tools.meshes import load_mesh
    out, james, ict = realdata_ds
    ds = load_dataset(out)
    rec = records(out)[name]
    src = james if name == "james.obj" else ict
    mesh = load_mesh(src)
    pts, _ = to_source(ds.grids[rec["index"]], ds.meta, rec["to_canonical"])
    diag = np.linalg.norm(np.ptp(mesh.vertices, axis=0))
    d = surface_distance(mesh.vertices, mesh.triangles, pts)
    assert len(pts) > 3000 and d.max() < 0.005 * diag, f"max {d.max() / diag:.2e} of the diagonal"
    assert rec["canonical"]["orient"] == "auto"


def test_realdata_james_colours_match_its_texture(realdata_ds):
    out, james, _ = realdata_ds
    ds = load_dataset(out)
    rec = records(out)["james.obj"]
    pts, cols = to_source(ds.grids[rec["index"]], ds.meta, rec["to_canonical"])
    diff = np.abs(cols - texture_oracle(james, pts)).mean(axis=1)
    assert np.median(diff) < 0.01 and diff.mean() < 0.03, (np.median(diff), diff.mean())


def test_realdata_point_cloud_sampled_from_james(tmp_path, capsys):
    from data_tools.canonical import sample_surface
    from data_tools.meshes import load_mesh
    james = require_realdata("faces", "menpo3d_james", "james.obj")
    mesh = load_mesh(james)
    pts = sample_surface(mesh.vertices, mesh.triangles, count=300000, seed=1)
    cols = (texture_oracle(james, pts) * 255).round().astype(np.uint8)
    cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(pts))
    cloud.colors = o3d.utility.Vector3dVector(cols / 255.0)
    o3d.io.write_point_cloud(str(tmp_path / "james_points.ply"), cloud)
    rc, _, _ = run_cli(capsys, tmp_path / "james_points.ply", "--out", tmp_path / "ds", "--res", "128",
                       "--workers", "1", "--preview", "0")
    assert rc == 0
    ds = load_dataset(tmp_path / "ds")
    rec = records(tmp_path / "ds")["james_points.ply"]
    assert rec["kind"] == "points"
    back, colors = to_source(ds.grids[0], ds.meta, rec["to_canonical"])
    diag = np.linalg.norm(np.ptp(mesh.vertices, axis=0))
    d = surface_distance(mesh.vertices, mesh.triangles, back)
    assert len(back) > 3000 and d.max() < 0.005 * diag, f"max {d.max() / diag:.2e} of the diagonal"
    assert np.median(np.abs(colors - texture_oracle(james, back)).mean(axis=1)) < 0.03


def depth_surface(z: np.ndarray, K: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The depth image as a mesh in the scan frame (y up, camera looking along -z): two
    triangles per 2x2 block of valid pixels whose depths agree within 3% (no depth edges)."""
    H, W = z.shape
    jj, ii = np.meshgrid(np.arange(W), np.arange(H))
    verts = np.stack([(jj - K[0, 2]) * z / K[0, 0], -(ii - K[1, 2]) * z / K[1, 1], -z], axis=-1).reshape(-1, 3)
    idx = np.arange(H * W).reshape(H, W)
    a, b, c, d = idx[:-1, :-1], idx[:-1, 1:], idx[1:, :-1], idx[1:, 1:]
    block = np.stack([z[:-1, :-1], z[:-1, 1:], z[1:, :-1], z[1:, 1:]], axis=-1)
    ok = (block > 0).all(-1) & (np.ptp(block, axis=-1) < 0.03 * block.max(-1))
    return verts, np.concatenate([np.stack([a, c, b], -1)[ok], np.stack([b, c, d], -1)[ok]])


def test_realdata_rgbd_pair(tmp_path, capsys):
    from scipy.spatial import cKDTree
    color = require_realdata("rgbd", "tum", "TUM_color.png")
    depth = require_realdata("rgbd", "tum", "TUM_depth.png")
    intr = json.loads(require_realdata("rgbd", "tum", "intrinsics_open3d.json").read_text())
    rc, _, _ = run_cli(capsys, color, "--out", tmp_path / "ds", "--res", "128", "--workers", "1", "--preview", "0")
    assert rc == 0
    ds = load_dataset(tmp_path / "ds")
    rec = records(tmp_path / "ds")["TUM_color.png"]
    assert rec["kind"] == "rgbd" and ds.meta.units == "m"
    assert np.allclose(np.asarray(rec["to_canonical"])[:3, :3], np.eye(3))          # the camera frame is kept
    back, colors = to_source(ds.grids[0], ds.meta, rec["to_canonical"])
    # the source surface, built here from the raw depth (metres = value / 5000) and intrinsics
    K = np.asarray(intr["intrinsic_matrix"], dtype=np.float64).reshape(3, 3).T     # column-major
    z = np.asarray(Image.open(depth), dtype=np.float64) / 5000.0
    verts, tris = depth_surface(z, K)
    used = np.unique(tris)
    near = used[cKDTree(back).query(verts[used], distance_upper_bound=0.02)[0] < np.inf]   # the cropped part
    diag = np.linalg.norm(np.ptp(verts[near], axis=0))
    d = surface_distance(verts, tris, back)
    assert len(back) > 1000 and d.max() < 0.005 * diag, f"max {d.max() / diag:.2e} of the diagonal"
    _, nearest = cKDTree(verts[used]).query(back)
    pix = used[nearest]
    rgb = np.asarray(Image.open(color).convert("RGB"), dtype=np.float64).reshape(-1, 3) / 255.0
    assert np.median(np.abs(colors - rgb[pix]).mean(axis=1)) < 0.03

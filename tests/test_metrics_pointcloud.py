"""Known answers for the 3D metrics (pcgan.metrics.pointcloud, .reconstruction) and the
metrics.json entry point (pcgan.metrics.compute_metrics, report)."""

import json
import math

import numpy as np
import pytest
import torch

import pcgan.metrics as M
from pcgan import grid as G
from pcgan.errors import PcganError
from pcgan.metrics import pointcloud as pc

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


# ---------------------------------------------------------------------------------------------
# Test data: clouds on surfaces, and grids of ellipsoids seen by the canonical camera


def lattice(n=(5, 5, 4), spacing=0.1) -> torch.Tensor:
    axes = [torch.arange(k, dtype=torch.float64) * spacing for k in n]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)   # [N, 3]


def ellipsoid_clouds(k, n, seed, radii=(0.5, 1.0)) -> torch.Tensor:
    """k clouds of n points on random axis-aligned ellipsoids: one distribution of shapes."""
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(k, n, 3, generator=g, dtype=torch.float64)
    v = v / v.norm(dim=-1, keepdim=True)
    r = torch.rand(k, 1, 3, generator=g, dtype=torch.float64) * (radii[1] - radii[0]) + radii[0]
    return v * r


def cube_clouds(k, n, seed, size=(0.5, 1.0)) -> torch.Tensor:
    """k clouds of n points on the surfaces of random boxes (half-sides in ``size``)."""
    g = torch.Generator().manual_seed(seed)
    p = torch.rand(k, n, 3, generator=g, dtype=torch.float64) * 2 - 1
    face = torch.randint(0, 3, (k, n), generator=g)
    sign = torch.randint(0, 2, (k, n), generator=g).double() * 2 - 1
    p.scatter_(2, face[..., None], sign[..., None])
    return p * (torch.rand(k, 1, 3, generator=g, dtype=torch.float64) * (size[1] - size[0]) + size[0])


def random_rotation(seed) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(3, 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64))
    return q * torch.sign(torch.det(q))


def ellipsoid_grids(n, res=16, seed=0, meta=None):
    """Grids ``[n, 7, res, res]`` of random ellipsoids (centre z=0) as the camera sees them."""
    meta = meta or G.GridMeta(resolution=res, units="mm", scale=100.0, center=(1.0, 2.0, 3.0))
    o, d = meta.camera.rays(res)
    rng = np.random.default_rng(seed)
    out = np.empty((n, 7, res, res), np.float32)
    for k in range(n):
        r = rng.uniform(0.6, 1.0, size=3)
        oc, dd = o / r, d / r
        a, b, c = (dd * dd).sum(-1), 2 * (oc * dd).sum(-1), (oc * oc).sum(-1) - 1
        disc = b * b - 4 * a * c
        hit = disc > 0
        t = (-b - np.sqrt(np.where(hit, disc, 0))) / (2 * a)
        p = o + t[..., None] * d
        g = G.empty_grid(meta)
        g[G.XYZ][:, hit] = p[hit].T
        g[G.RGB][:, hit] = np.clip(p[hit].T * 0.5 + 0.5, 0, 1) * 2 - 1
        g[G.MASK][0, hit] = 1.0
        out[k] = g
    return out, meta


# ---------------------------------------------------------------------------------------------
# Chamfer


def test_chamfer_identical_clouds_is_exactly_zero():
    x = ellipsoid_clouds(3, 200, seed=0)
    assert torch.all(pc.chamfer_distance(x, x) == 0)
    for backend in ("torch", "kdtree"):
        m = pc.pairwise_chamfer(x, x.clone(), backend=backend)
        assert torch.all(m.diag() == 0), backend
    assert torch.all(pc.paired_chamfer(x.float(), x.float()) == 0)


def test_chamfer_translated_copy_has_the_analytic_value():
    # Translation shorter than half the lattice spacing: every point's nearest neighbour is its
    # own copy, so CD = |t|^2 + |t|^2.
    x = lattice()
    t = torch.tensor([0.02, -0.01, 0.015], dtype=torch.float64)
    want = 2 * float(t @ t)
    assert float(pc.chamfer_distance(x, x + t)) == pytest.approx(want, rel=1e-12)
    for backend in ("torch", "kdtree"):
        got = pc.pairwise_chamfer(x[None].float(), (x + t)[None].float(), backend=backend)[0, 0]
        assert float(got) == pytest.approx(want, rel=1e-5), backend
    assert float(pc.paired_chamfer(x[None], (x + t)[None])[0]) == pytest.approx(want, rel=1e-12)
    a, b = torch.tensor([[0.0, 0, 0]]), torch.tensor([[3.0, 4, 0]])   # single points: 2 * 5^2
    assert float(pc.chamfer_distance(a, b)) == pytest.approx(50.0)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("backend", ["torch", "kdtree"])
@pytest.mark.parametrize("symmetric", [False, True])
def test_fast_pairwise_chamfer_agrees_with_brute_force(device, backend, symmetric):
    if backend == "kdtree" and device != "cpu":
        pytest.skip("the KD-tree path is CPU only")
    a = ellipsoid_clouds(7, 100, seed=1)
    b = None if symmetric else cube_clouds(5, 120, seed=2)
    ref = pc.chamfer_distance(a[:, None], (a if symmetric else b)[None])           # [A, B] float64
    # a tiny memory budget forces many chunks, so chunk edges are exercised
    got = pc.pairwise_chamfer(a.float(), None if symmetric else b.float(), device=device, backend=backend,
                              memory_budget=200_000)
    assert got.dtype == torch.float64 and got.shape == ref.shape
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-7)
    if symmetric:
        assert torch.equal(got, got.T)


def test_pairwise_chamfer_rejects_bad_shapes():
    with pytest.raises(PcganError, match=r"\[K, N, 3\]"):
        pc.pairwise_chamfer(torch.zeros(4, 10, 2))
    with pytest.raises(PcganError, match="backend"):
        pc.pairwise_chamfer(torch.zeros(2, 10, 3), backend="magic")


# ---------------------------------------------------------------------------------------------
# EMD


def test_emd_exact_known_answers():
    x = ellipsoid_clouds(1, 100, seed=3)[0]
    perm = torch.randperm(100, generator=torch.Generator().manual_seed(0))
    assert pc.emd_exact(x, x[perm]) == pytest.approx(0.0, abs=1e-12)
    # W1 between a cloud and its translate is |t| for any cloud (the mean moves by t, and the
    # identity matching costs exactly |t|)
    t = torch.tensor([0.3, -0.4, 1.2], dtype=torch.float64)
    assert pc.emd_exact(x, x + t) == pytest.approx(float(t.norm()), rel=1e-9)
    with pytest.raises(PcganError, match="one size"):
        pc.emd_exact(x, x[:50])


def test_emd_auction_stays_within_its_bound_of_exact():
    x, y = ellipsoid_clouds(3, 128, seed=4), cube_clouds(3, 128, seed=5)
    eps_frac = 1e-3
    got = pc.emd_auction(x, y, eps_frac=eps_frac)
    for k in range(3):
        exact = pc.emd_exact(x[k], y[k])
        diam = float(torch.cdist(x[k], y[k]).max())
        assert exact - 1e-9 <= float(got[k]) <= exact + eps_frac * diam + 1e-9
    t = torch.tensor([0.05, 0.0, -0.02], dtype=torch.float64)
    assert float(pc.emd_auction(x[:1], x[:1] + t)[0]) == pytest.approx(float(t.norm()), rel=1e-3)


def test_pairwise_emd_methods_agree_and_declare_themselves():
    a, b = ellipsoid_clouds(3, 48, seed=6), cube_clouds(2, 48, seed=7)
    exact, info_e = pc.pairwise_emd(a, b, method="exact")
    approx, info_a = pc.pairwise_emd(a, b, method="auction")
    assert info_e["method"] == "exact" and info_a["method"] == "auction" and "bound" in info_a
    torch.testing.assert_close(approx, exact, rtol=1e-3, atol=1e-4)
    sym, _ = pc.pairwise_emd(a)
    assert torch.equal(sym, sym.T) and torch.all(sym.diag().abs() < 1e-12)


# ---------------------------------------------------------------------------------------------
# Set metrics


def set_metrics(gen, ref, protocol="none"):
    g, r, _ = pc.normalize_sets(gen, ref, protocol)
    out = {}
    for name, fn in (("cd", lambda a, b=None: pc.pairwise_chamfer(a, b)),
                     ("emd", lambda a, b=None: pc.pairwise_emd(a, b, method="exact")[0])):
        out.update(pc.set_metrics(fn(g), fn(g, r), fn(r), name))
    return out


def test_identical_sets_give_zero_mmd_and_full_coverage():
    x = ellipsoid_clouds(20, 64, seed=8)
    m = set_metrics(x, x.clone())
    assert m["mmd_cd"] == 0 and m["mmd_emd"] == pytest.approx(0, abs=1e-12)
    assert m["cov_cd"] == 1 and m["cov_emd"] == 1


def test_split_halves_of_one_distribution_give_1nna_near_half():
    x = ellipsoid_clouds(60, 128, seed=9)
    m = set_metrics(x[:30], x[30:], protocol="global")
    assert 0.3 <= m["1nna_cd"] <= 0.7
    assert 0.3 <= m["1nna_emd"] <= 0.7
    assert m["cov_cd"] >= 0.4


def test_disjoint_distributions_give_1nna_near_one():
    # ellipsoids with radii in [0.5, 1] against boxes with half-sides in [1.2, 1.6]
    m = set_metrics(ellipsoid_clouds(20, 128, seed=10), cube_clouds(20, 128, seed=11, size=(1.2, 1.6)),
                    protocol="global")
    assert m["1nna_cd"] >= 0.95 and m["1nna_emd"] >= 0.95
    assert m["mmd_cd"] > 0.01


@pytest.mark.parametrize("protocol", ["none", "global"])
def test_rigid_motion_of_both_sets_changes_nothing(protocol):
    gen, ref = ellipsoid_clouds(8, 64, seed=12), cube_clouds(8, 64, seed=13)
    rot, shift = random_rotation(0), torch.tensor([0.5, -2.0, 3.0], dtype=torch.float64)
    before = set_metrics(gen, ref, protocol)
    after = set_metrics(gen @ rot.T + shift, ref @ rot.T + shift, protocol)
    for k, v in before.items():
        assert after[k] == pytest.approx(v, rel=1e-6, abs=1e-9), k


def test_one_nn_accuracy_on_hand_made_matrices():
    # two generated at 0 and 1, two reals at 10 and 11 (1-D distances): perfectly separable
    pts_g, pts_r = torch.tensor([0.0, 1.0]), torch.tensor([10.0, 11.0])
    d = lambda a, b: (a[:, None] - b[None]).abs()   # noqa: E731
    assert pc.one_nn_accuracy(d(pts_g, pts_g), d(pts_g, pts_r), d(pts_r, pts_r)) == 1.0
    mc = pc.mmd_cov(d(pts_g, pts_r))
    assert mc["mmd"] == pytest.approx(9.5) and mc["cov"] == 0.5   # both generated pick real 10


def test_jsd_known_answers():
    assert pc.jensen_shannon([1, 0], [0, 1]) == pytest.approx(1.0)
    # M = (.75, .25): H(M) - (H(P) + H(Q)) / 2 = 0.811278 - 0.5
    assert pc.jensen_shannon([0.5, 0.5], [1, 0]) == pytest.approx(0.8112781 - 0.5, rel=1e-6)
    x = ellipsoid_clouds(5, 200, seed=14)
    assert pc.jsd_occupancy(x, x.clone())[0] == pytest.approx(0.0, abs=1e-12)
    far = x + torch.tensor([10.0, 0, 0], dtype=torch.float64)    # no shared voxel
    value, info = pc.jsd_occupancy(x, far)
    assert value == pytest.approx(1.0) and info["resolution"] == 28


def test_normalisation_protocols():
    gen, ref = ellipsoid_clouds(4, 50, seed=15) * 3 + 1, cube_clouds(4, 50, seed=16) * 2 - 1
    g, r, info = pc.normalize_sets(gen, ref, "bbox")
    for c in torch.cat([g, r]):
        lo, hi = c.amin(0), c.amax(0)
        assert torch.allclose((lo + hi) / 2, torch.zeros(3, dtype=c.dtype), atol=1e-12)
        assert float((hi - lo).max()) == pytest.approx(1.0)          # LION norm_box: [-0.5, 0.5]
    assert info["protocol"] == "bbox" and info["bbox_half"] == 0.5
    g, r, info = pc.normalize_sets(gen, ref, "global")
    assert torch.allclose(r.reshape(-1, 3).mean(0), torch.zeros(3, dtype=r.dtype), atol=1e-12)
    assert float(r.pow(2).mean().sqrt()) == pytest.approx(1.0)
    assert info["protocol"] == "global" and len(info["center"]) == 3 and info["scale"] > 0
    g, r, info = pc.normalize_sets(gen, ref, "none")
    assert torch.equal(g, gen) and info["protocol"] == "none"
    with pytest.raises(PcganError, match="protocol"):
        pc.normalize_sets(gen, ref, "unit-sphere")


def test_lion_multipliers():
    rep = pc.lion_reported({"mmd_cd": 0.002, "mmd_emd": 0.05, "cov_cd": 0.5, "1nna_emd": 0.6, "jsd": 0.1,
                            "fid/rgb": 3.0})
    assert rep == pytest.approx({"mmd_cd": 2.0, "mmd_emd": 5.0, "cov_cd": 50.0, "1nna_emd": 60.0, "jsd": 0.1})


# ---------------------------------------------------------------------------------------------
# Per-pair metrics


def test_fscore_known_answers():
    gt = lattice()                                   # spacing 0.1
    assert pc.fscore(gt, gt, tau=0.01) == {"precision": 1.0, "recall": 1.0, "fscore": 1.0}
    n = len(gt) // 2
    pred = torch.cat([gt[:n], gt[:n] + 100.0])       # half the points right, half far away
    r = pc.fscore(pred, gt, tau=0.05)
    assert r["precision"] == 0.5 and r["recall"] == pytest.approx(n / len(gt)) and r["fscore"] > 0
    assert pc.resolve_tau(gt, tau_frac=0.5) == pytest.approx(0.5 * float((gt.amax(0) - gt.amin(0)).norm()))
    assert pc.resolve_tau(gt, tau=2.0) == 2.0


def test_normal_consistency_known_answers():
    x = lattice()
    up = torch.tensor([0.0, 0, 1]).expand_as(x)
    side = torch.tensor([1.0, 0, 0]).expand_as(x)
    assert pc.normal_consistency(x, up, x, up) == pytest.approx(1.0)
    assert pc.normal_consistency(x, up, x, -up) == pytest.approx(1.0)    # orientation-free
    assert pc.normal_consistency(x, up, x, side) == pytest.approx(0.0)


def test_open3d_reconstruction_metrics_on_a_translated_copy():
    pytest.importorskip("open3d")
    from pcgan.metrics.reconstruction import o3d_distances, reconstruction_metrics

    x = lattice()
    t = torch.tensor([0.02, -0.01, 0.015], dtype=torch.float64)
    d, _ = pc.nearest_neighbours(x + t, x)
    np.testing.assert_allclose(o3d_distances(x + t, x), d, rtol=1e-12)
    r = reconstruction_metrics(x + t, x, tau=0.05)
    n = float(t.norm())
    assert r["accuracy"] == pytest.approx(n) and r["completeness"] == pytest.approx(n)
    assert r["chamfer_l1"] == pytest.approx(n) and r["hausdorff"] == pytest.approx(n)
    assert r["chamfer_l2"] == pytest.approx(2 * n * n)
    assert r["fscore"] == 1.0
    assert reconstruction_metrics(x + t, x, tau=0.01)["fscore"] == 0.0


def test_grid_vs_scan_is_in_scan_units():
    pytest.importorskip("open3d")
    from pcgan.metrics.reconstruction import grid_vs_scan

    grids, meta = ellipsoid_grids(1)
    pts, _ = G.grid_to_points(grids[0], meta, denormalize=True)      # the scan the grid came from
    r = grid_vs_scan(grids[0], meta, pts, tau=1.0)
    assert r["accuracy"] == pytest.approx(0.0, abs=1e-9) and r["fscore"] == 1.0 and r["units"] == "mm"
    r = grid_vs_scan(grids[0], meta, pts + np.array([0, 0, 0.5], np.float32), tau=1.0)
    assert r["accuracy"] == pytest.approx(0.5, rel=1e-3)             # 0.5 mm, not 0.005 normalised


# ---------------------------------------------------------------------------------------------
# Clouds from grids, and the metrics.json entry point


def test_grids_to_clouds_sampling_is_reproducible_per_grid():
    grids, meta = ellipsoid_grids(4, res=32)
    all4 = pc.grids_to_clouds(grids, meta, num_points=300, seed=7)
    last2 = pc.grids_to_clouds(grids[2:], meta, num_points=300, seed=7, first_index=2)
    assert torch.equal(all4.points[2:], last2.points)                # same grid, same points on any split
    other = pc.grids_to_clouds(grids, meta, num_points=300, seed=8)
    assert not torch.equal(all4.points, other.points)
    mask = grids[0, G.MASK][0] > 0
    surface = {tuple(p) for p in grids[0, G.XYZ].transpose(1, 2, 0)[mask].tolist()}
    assert all(tuple(p) in surface for p in all4.points[0].tolist())  # only surface pixels
    assert all4.num_upsampled == 0 and all4.num_empty == 0
    few = pc.grids_to_clouds(grids[:1], meta, num_points=int(mask.sum()) + 10)
    assert few.num_upsampled == 1 and len(few.points[0]) == int(mask.sum()) + 10
    empty = pc.grids_to_clouds(G.empty_grid(meta)[None], meta, num_points=16)
    assert empty.num_empty == 1                                       # scored as the sheet, not a crash


def test_compute_metrics_output_declares_everything(tmp_path):
    fakes, meta = ellipsoid_grids(10, seed=1)
    reals, _ = ellipsoid_grids(12, seed=2, meta=meta)
    res = M.compute_metrics("pointflow,fscore,normal_consistency", fakes, reals, meta, num_points=96)
    json.dumps(res)                                                   # metrics.json is plain JSON
    m = res["metrics"]
    for k in ("mmd_cd", "cov_cd", "1nna_cd", "mmd_emd", "cov_emd", "1nna_emd", "jsd", "fscore/fscore",
              "normal_consistency"):
        assert isinstance(m[k], float) and math.isfinite(m[k]), k
    assert res["num_gen"] == 10 and res["num_real"] == 12
    td = res["3d"]
    assert td["num_clouds"] == 10 and td["points_per_cloud"] == 96
    assert td["normalization"]["protocol"] == "global" and td["emd"]["method"] == "exact"
    assert td["ref_subset"].startswith("seeded random subset")
    assert td["lion_units"]["mmd_cd"] == pytest.approx(m["mmd_cd"] * 1e3)
    assert td["lion_units"]["1nna_emd"] == pytest.approx(m["1nna_emd"] * 100)
    assert td["pairs"]["units"] == "mm"
    assert res["seeds"]["seed"] == 0 and res["versions"]["torch"] and res["options"]["protocol"] == "global"
    assert len(res["nearest_real"]["real_index"]) == 10
    assert set(res["timing_s"]) == {"mmd_cd", "cov_cd", "1nna_cd", "mmd_emd", "cov_emd", "1nna_emd", "jsd",
                                    "fscore", "normal_consistency"}

    same = M.compute_metrics(["mmd_cd", "cov_cd"], fakes, fakes.copy(), meta, num_points=96)["metrics"]
    assert same == {"mmd_cd": 0.0, "cov_cd": 1.0}


def test_compute_metrics_reports_user_mistakes():
    fakes, meta = ellipsoid_grids(3)
    with pytest.raises(PcganError, match="unknown metric 'fidd'"):
        M.compute_metrics(["fidd"], fakes, fakes, meta)
    with pytest.raises(PcganError, match="fid50k_full needs 50,000 generated grids, got 3.*'fid'"):
        M.compute_metrics(["fid50k_full"], fakes, fakes, meta)
    with pytest.raises(PcganError, match=r"C=6 \(expected 7\)"):
        M.compute_metrics(["mmd_cd"], fakes[:, :6], fakes, meta)
    with pytest.raises(PcganError, match="protocol"):
        M.compute_metrics(["mmd_cd"], fakes, fakes, meta, protocol="sphere")
    with pytest.raises(PcganError, match="needs a generator"):
        M.compute_metrics(["ppl3d_wend"], fakes, fakes, meta)


def test_tables_and_nearest_neighbour_png(tmp_path):
    fakes, meta = ellipsoid_grids(4, seed=3)
    reals, _ = ellipsoid_grids(4, seed=4, meta=meta)
    a = M.compute_metrics(["mmd_cd", "cov_cd", "1nna_cd"], fakes, reals, meta, num_points=64)
    b = M.compute_metrics(["mmd_cd", "cov_cd", "jsd"], fakes, reals, meta, num_points=64, protocol="bbox")
    table = M.format_table(a)
    assert "mmd_cd" in table and "protocol global" in table and "LION" in table
    cmp = M.compare_table(a, b, labels=("old", "new"))
    lines = {ln.split()[0]: ln.split() for ln in cmp.splitlines() if ln and not ln.startswith("note")}
    assert lines["metric"][1:3] == ["old", "new"]
    assert lines["1nna_cd"][2] == "-" and lines["jsd"][1] == "-"          # each run's own metrics
    assert "protocol differs: global vs bbox" in cmp
    same = M.compare_table(a, a)
    assert all(ln.split()[-1] in ("0.00000", "diff") for ln in same.splitlines())

    from PIL import Image
    out = M.save_nn_pairs_png(tmp_path / "nn.png", fakes, reals, meta, a["nearest_real"], tile=32)
    img = Image.open(out)
    assert img.size == (4 * 32, 4 * (32 + 16))
    pix = np.asarray(img)
    assert pix[16:48, :32].std() > 0                                     # a generated grid was drawn


def test_paired_metrics_through_compute_metrics():
    pytest.importorskip("open3d")
    fakes, meta = ellipsoid_grids(3, seed=5)
    res = M.compute_metrics(["fscore", "normal_consistency", "recon_o3d"], fakes, fakes.copy(), meta,
                            paired=True, num_points=64)
    m = res["metrics"]
    assert m["fscore/fscore"] == 1.0 and m["normal_consistency"] == pytest.approx(1.0)
    assert m["recon_o3d/chamfer_l2"] == pytest.approx(0.0, abs=1e-12) and m["recon_o3d/fscore"] == 1.0
    assert res["3d"]["pairs"] == {"pairing": "index", "num_pairs": 3, "units": "mm"}
    assert "normalization" not in res["3d"]                 # no set metric, no protocol to declare
    assert "3D pairs: 3 (index), units mm" in M.format_table(res)
    with pytest.raises(PcganError, match="as many generated as real"):
        M.compute_metrics(["fscore"], fakes, fakes[:2], meta, paired=True)

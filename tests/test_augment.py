"""pcgan/training/augment.py: x-flip, the grid-valid ADA transforms and the adaptive p controller."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from conftest import sphere_grid
from pcgan.config import load_config
from pcgan.errors import PcganError
from pcgan.grid import MASK, RGB, XYZ, GridMeta, empty_grid, mirror, sheet_xyz
from pcgan.training.augment import AdaptiveAugment, AugmentConfig, AugmentPipe

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
NOTHING = dict(rgb_brightness=0.0, rgb_contrast=0.0, rgb_saturation=0.0, rgb_hue=0.0,
               translate=0.0, cutout=0.0, rotate3d_deg=0.0, scale3d=0.0)   # every ADA transform off


def only(**kw) -> AugmentConfig:
    """Mode ada at p = 1, no x-flip, only the named transforms on."""
    return AugmentConfig(**{**NOTHING, "mode": "ada", "p": 1.0, "xflip": False, **kw})


@pytest.fixture
def meta() -> GridMeta:
    return GridMeta(resolution=16, background_rgb=(0.1, 0.2, 0.3))


def faces(meta: GridMeta, n: int, seed: int = 0) -> torch.Tensor:
    """``[n, 7, 16, 16]`` sphere grids of different sizes and positions (real-like: mask +-1)."""
    rng = np.random.default_rng(seed)
    grids = [sphere_grid(meta, radius=rng.uniform(0.5, 0.9), center_x=rng.uniform(-0.3, 0.3)) for _ in range(n)]
    return torch.from_numpy(np.stack(grids))


def surface_points(grid: torch.Tensor) -> torch.Tensor:
    """``[C, H, W]`` -> surface XYZ ``[N, 3]`` (float64)."""
    return grid[XYZ].permute(1, 2, 0)[grid[MASK][0] > 0].double()


# ---------------------------------------------------------------------------------------------
# x-flip and the identity / all-changed extremes


def test_xflip_mirrors_half_of_the_samples_and_leaves_the_rest(meta):
    torch.manual_seed(0)
    x = torch.randn(400, 7, 16, 16)
    out = AugmentPipe(meta, AugmentConfig(mode="off"))(x)
    mirrored = (out == mirror(x, meta.channels)).flatten(1).all(1)
    same = (out == x).flatten(1).all(1)
    assert bool((mirrored ^ same).all())                 # every sample is exactly one of the two
    assert 0.42 < mirrored.float().mean().item() < 0.58  # 400 fair coins: 4 sigma is +-0.1
    assert torch.equal(out[mirrored][:, 0], -x[mirrored][:, 0].flip(-1))   # x negated
    # xflip=False for fakes, and cfg.xflip=False, switch it off
    assert torch.equal(AugmentPipe(meta, AugmentConfig(mode="off"))(x, xflip=False), x)
    assert torch.equal(AugmentPipe(meta, AugmentConfig(mode="ada", p=0.0, xflip=False))(x), x)


def test_p0_is_exact_identity_and_p1_changes_every_sample(meta):
    x = faces(meta, 16)
    everything = dict(mode="ada", xflip=False, cutout=0.5)
    torch.manual_seed(1)
    assert torch.equal(AugmentPipe(meta, AugmentConfig(p=0.0, **everything))(x), x)
    torch.manual_seed(1)
    out = AugmentPipe(meta, AugmentConfig(p=1.0, **everything))(x)
    assert bool(((out - x).abs().flatten(1).amax(1) > 1e-3).all())
    # fixed p = 0.5: about half the samples get each transform; brightness alone shows it
    torch.manual_seed(2)
    x = faces(meta, 200)
    out = AugmentPipe(meta, dataclasses.replace(only(rgb_brightness=0.2), mode="fixed", p=0.5))(x)
    changed = (out != x).flatten(1).any(1).float().mean().item()
    assert 0.38 < changed < 0.62


# ---------------------------------------------------------------------------------------------
# each transform touches only its channels and does what it says


def test_colour_transforms_touch_rgb_only_and_act_as_described(meta):
    x = faces(meta, 32)
    rgb = x[:, RGB].double()
    for name, strength in [("rgb_brightness", 0.2), ("rgb_contrast", 0.5), ("rgb_hue", 1.0), ("rgb_saturation", 1.0)]:
        torch.manual_seed(3)
        out = AugmentPipe(meta, only(**{name: strength}))(x)
        assert torch.equal(out[:, XYZ], x[:, XYZ]) and torch.equal(out[:, MASK], x[:, MASK]), name
        new = out[:, RGB].double()
        assert bool(((new - rgb).abs().flatten(1).amax(1) > 1e-3).all()), name
        if name == "rgb_brightness":     # one offset per sample, same for r, g, b and every pixel
            d = (new - rgb).flatten(1)
            assert torch.allclose(d, d[:, :1].expand_as(d), atol=1e-5)
        if name == "rgb_contrast":       # one factor per sample about mid-grey (0)
            ratio = (new / rgb).flatten(1)
            assert torch.allclose(ratio, ratio[:, :1].expand_as(ratio), rtol=1e-4)
        if name == "rgb_hue":            # a rotation about the grey axis: grey level and chroma kept
            assert torch.allclose(new.mean(1), rgb.mean(1), atol=1e-5)
            chroma = lambda c: (c - c.mean(1, keepdim=True)).norm(dim=1)   # noqa: E731
            assert torch.allclose(chroma(new), chroma(rgb), atol=1e-5)
        if name == "rgb_saturation":     # grey level kept, chroma scaled by one factor per sample
            assert torch.allclose(new.mean(1), rgb.mean(1), atol=1e-5)
            c_new = new - new.mean(1, keepdim=True)
            c_old = rgb - rgb.mean(1, keepdim=True)
            k = (c_new * c_old).flatten(1).sum(1) / (c_old ** 2).flatten(1).sum(1)
            assert torch.allclose(c_new, k.view(-1, 1, 1, 1) * c_old, atol=1e-5)


def test_rotation_is_rigid_on_surface_points_and_keeps_rgb_mask_and_sheet(meta):
    x = faces(meta, 8)
    torch.manual_seed(4)
    out = AugmentPipe(meta, only(rotate3d_deg=30.0))(x)
    assert torch.equal(out[:, RGB], x[:, RGB]) and torch.equal(out[:, MASK], x[:, MASK])
    background = (x[:, MASK] < 0).expand(-1, 3, -1, -1)
    assert torch.equal(out[:, XYZ][background], x[:, XYZ][background])      # still on the sheet
    for a, b in zip(x, out):
        pa, pb = surface_points(a), surface_points(b)
        assert torch.allclose(torch.cdist(pb, pb), torch.cdist(pa, pa), atol=1e-5)
        assert torch.allclose(pb.norm(dim=1), pa.norm(dim=1), atol=1e-5)  # about the origin
        angle = torch.rad2deg(torch.arccos(((pa * pb).sum(1) / (pa.norm(dim=1) * pb.norm(dim=1))).clamp(-1, 1)))
        assert 0.1 < angle.max() <= 30.0 + 1e-3                           # no point turns by more than the angle


def test_scale_multiplies_distances_by_one_factor_per_sample(meta):
    x = faces(meta, 8)
    torch.manual_seed(5)
    out = AugmentPipe(meta, only(scale3d=0.2))(x)
    assert torch.equal(out[:, RGB], x[:, RGB]) and torch.equal(out[:, MASK], x[:, MASK])
    factors = []
    for a, b in zip(x, out):
        pa, pb = surface_points(a), surface_points(b)
        s = (pb.norm(dim=1) / pa.norm(dim=1))
        assert torch.allclose(s, s[:1].expand_as(s), rtol=1e-5)
        assert torch.allclose(pb, s[0] * pa, atol=1e-5)
        factors.append(s[0].item())
    assert all(abs(f - 1) > 1e-4 for f in factors) and 0.3 < min(factors) and max(factors) < 3.0


def test_translation_shifts_the_image_and_moves_xyz_with_the_sheet(meta):
    x = faces(meta, 24)
    empty = torch.from_numpy(empty_grid(meta))
    sheet = torch.from_numpy(sheet_xyz(meta))
    torch.manual_seed(6)
    out = AugmentPipe(meta, only(translate=0.125))(x)                       # up to 2 pixels at 16
    assert set(out[:, MASK].unique().tolist()) == {-1.0, 1.0}
    shifts = set()
    for a, b in zip(x, out):
        found = None
        for dy in range(-2, 3):
            for dx in range(-2, 3):
                want = empty.clone()
                src = a[:, max(0, -dy):16 - max(0, dy), max(0, -dx):16 - max(0, dx)]
                want[:, max(0, dy):16 - max(0, -dy), max(0, dx):16 - max(0, -dx)] = src
                if torch.equal(b[3:], want[3:]):                                # RGB and mask shifted exactly
                    found = (dy, dx, want)
        assert found is not None
        dy, dx, want = found
        offset = sheet[:, 8, 8] - sheet[:, 8 - dy, 8 - dx]                     # the sheet's shift
        surface = b[MASK][0] > 0
        assert torch.allclose(b[XYZ][:, surface], want[XYZ][:, surface] + offset[:, None], atol=1e-6)
        assert torch.allclose(b[XYZ][:, ~surface], sheet[:, ~surface], atol=1e-6)   # background on the sheet
        shifts.add((dy, dx))
    assert len(shifts) > 5
    # an empty grid is a fixed point of translation
    torch.manual_seed(7)
    e = empty.expand(8, -1, -1, -1).contiguous()
    assert torch.allclose(AugmentPipe(meta, only(translate=0.125))(e), e, atol=1e-6)


def test_cutout_fills_a_square_with_the_empty_grid(meta):
    torch.manual_seed(8)
    x = torch.randn(64, 7, 16, 16)
    x[:, MASK] = torch.where(x[:, MASK] > 0, 1.0, -1.0)
    empty = torch.from_numpy(empty_grid(meta))
    out = AugmentPipe(meta, only(cutout=0.5))(x)
    assert set(out[:, MASK].unique().tolist()) == {-1.0, 1.0}
    changed = (out != x).any(1)                                                 # [B, H, W]
    for b, c in zip(out, changed):
        assert torch.equal(b[:, c], empty[:, c])                                # the cut holds the empty grid
        rows, cols = c.any(1).nonzero()[:, 0], c.any(0).nonzero()[:, 0]
        h, w = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
        assert c.sum() == h * w and 4 <= h <= 8 and 4 <= w <= 8                # a square of side 8, clipped


# ---------------------------------------------------------------------------------------------
# gradients, devices, dtypes, determinism


def test_gradients_flow_through_every_transform(meta):
    torch.manual_seed(9)
    x = faces(meta, 4).requires_grad_(True)
    out = AugmentPipe(meta, AugmentConfig(mode="fixed", p=1.0, cutout=0.5))(x)
    (out * torch.randn_like(out)).sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad[:, XYZ].abs().sum() > 0 and x.grad[:, RGB].abs().sum() > 0


def test_gradients_match_finite_differences_in_float64():
    meta = GridMeta(resolution=8)
    pipe = AugmentPipe(meta, AugmentConfig(mode="fixed", p=1.0, cutout=0.5))
    x = torch.rand(2, 7, 8, 8, dtype=torch.float64) * 1.6 - 0.8          # soft mask away from the clamp at +-1

    def augment(g):
        torch.manual_seed(10)                                              # same random draws every call
        return pipe(g)

    assert torch.autograd.gradcheck(augment, (x.requires_grad_(True),), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("device", DEVICES)
def test_same_seed_same_output_on_every_device_and_under_autocast(meta, device):
    pipe = AugmentPipe(meta, AugmentConfig(mode="fixed", p=0.7, cutout=0.5)).to(device)
    x = faces(meta, 8).to(device)
    torch.manual_seed(11)
    a = pipe(x)
    torch.manual_seed(11)
    b = pipe(x)
    torch.manual_seed(12)
    c = pipe(x)
    assert torch.equal(a, b) and not torch.equal(a, c)
    gen = torch.Generator(device).manual_seed(5)
    assert torch.equal(pipe(x, generator=gen), pipe(x, generator=torch.Generator(device).manual_seed(5)))
    torch.manual_seed(11)
    with torch.autocast(device, dtype=torch.bfloat16):
        d = pipe(x)
    assert d.dtype == torch.float32 and torch.equal(a, d)                   # autocast changes nothing
    torch.manual_seed(11)
    e = pipe(x.bfloat16())
    assert e.dtype == torch.bfloat16 and torch.allclose(e.float(), a, atol=0.1)


def test_pipe_without_mask_channel_keeps_the_sheet(meta):
    meta6 = GridMeta(resolution=16, channels=("x", "y", "z", "r", "g", "b"))
    x = faces(meta, 4)[:, :6]
    torch.manual_seed(13)
    out = AugmentPipe(meta6, only(rotate3d_deg=20.0, scale3d=0.1))(x)
    bg = (x[:, 2] <= meta6.sheet_z + 1e-3).unsqueeze(1).expand(-1, 3, -1, -1)
    assert torch.equal(out[:, XYZ][bg], x[:, XYZ][bg]) and not torch.equal(out, x)
    with pytest.raises(PcganError, match="C=6"):
        AugmentPipe(meta, AugmentConfig())(x)


def test_compiles_without_graph_breaks(meta):
    pipe = AugmentPipe(meta, AugmentConfig(mode="fixed", p=0.5, cutout=0.5))
    compiled = torch.compile(pipe, backend="aot_eager", fullgraph=True)
    out = compiled(faces(meta, 4))
    assert out.shape == (4, 7, 16, 16) and torch.isfinite(out).all()


# ---------------------------------------------------------------------------------------------
# the adaptive controller and config


def controller(meta, p=0.0, mode="ada", **kw):
    cfg = AugmentConfig(mode=mode, p=p, interval=4, speed_kimg=0.32, **kw)  # 8 x 4 / 320 = 0.1 per update
    pipe = AugmentPipe(meta, cfg)
    return pipe, AdaptiveAugment(pipe, cfg, batch_size=8)


def run(ada, sign: float, minibatches: int) -> list[float]:
    ps = []
    for _ in range(minibatches):
        ada.accumulate(torch.full((8, 1), sign * 3.0))
        ada.step(8)
        ps.append(round(ada.p.item(), 6))
    return ps


def test_p_rises_while_d_is_confident_on_reals_and_falls_and_clamps_otherwise(meta):
    _, ada = controller(meta)
    assert run(ada, +1, 8) == [0.0, 0.0, 0.0, 0.1, 0.1, 0.1, 0.1, 0.2]
    assert ada.last_rt.item() == 1.0
    _, ada = controller(meta, p=0.25)
    assert run(ada, -1, 16) == [0.25] * 3 + [0.15] * 4 + [0.05] * 4 + [0.0] * 5
    _, ada = controller(meta, p=0.25, mode="fixed")                           # fixed: p never moves
    assert run(ada, +1, 8) == [0.25] * 8


def test_mean_sign_uses_all_processes_through_reduce_fn(meta):
    _, ada = controller(meta, p=0.5)
    other_rank = torch.tensor([-32.0, 32.0])                                   # its reals all scored negative
    ada.reduce_fn = lambda t: t + other_rank
    assert run(ada, +1, 4)[-1] == 0.4                                          # global mean sign 0 < 0.6
    assert ada.last_rt.item() == 0.0


def test_state_dict_round_trip_resumes_exactly(meta):
    _, ada = controller(meta, p=0.3)
    run(ada, +1, 6)                                                            # mid-interval: 2 batches pending
    state = ada.state_dict()
    assert state["p"] == pytest.approx(0.4) and state["count"] == 16 and state["images"] == 16
    torch.save(state, "/dev/null")                                             # plain data
    _, resumed = controller(meta, p=0.0)
    resumed.load_state_dict(state)
    assert [float(t) for t in resumed.pending()] == [16.0, 16.0]
    assert run(resumed, -1, 6) == run(ada, -1, 6)
    assert resumed.state_dict() == ada.state_dict()


def test_augment_is_a_config_section_with_checked_keys():
    cfg = load_config(None, ["augment.mode=fixed", "augment.p=0.3", "augment.cutout=0.5"])
    assert cfg.augment == AugmentConfig(mode="fixed", p=0.3, cutout=0.5)
    with pytest.raises(PcganError, match="augment.mode"):
        load_config(None, ["augment.mode=sometimes"])
    with pytest.raises(PcganError, match="augment.p must be in"):
        load_config(None, ["augment.p=1.5"])

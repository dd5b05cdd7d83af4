"""pcgan.networks: StyleGAN2 G and D semantics on tiny CPU configs (truncation, mixing, noise,
seeds, double backward, conditioning, presets, compile, bf16, FLOPs)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

import pcgan
from conftest import pixel_offsets
from pcgan.config import load_config
from pcgan.errors import PcganError
from pcgan.grid import Camera, GridMeta
from pcgan.networks import (Discriminator, Generator, MinibatchStd, curvature_map, flops_per_image, normal_map,
                            style_mix, truncate, z_from_seeds)
from pcgan.ops import Conv2dLayer

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
TINY = dict(resolution=16, channels=7, channel_base=256, channel_max=32)


def tiny_g(**kw) -> Generator:
    torch.manual_seed(0)
    G = Generator(z_dim=32, w_dim=32, mapping_layers=2, **{**TINY, **kw})
    with torch.no_grad():  # non-zero noise strengths and w_avg, as after some training
        for name, p in G.named_parameters():
            if name.endswith("noise_strength"):
                p.fill_(0.3)
        G.mapping.w_avg.normal_()
    return G


def tiny_d(**kw) -> Discriminator:
    torch.manual_seed(1)
    return Discriminator(**{**TINY, **kw})


def test_shapes_num_ws_and_lazy_export():
    G, D = tiny_g(), tiny_d()
    assert pcgan.Generator is Generator and pcgan.Discriminator is Discriminator
    assert (G.num_ws, G.z_dim, G.w_dim, G.c_dim, G.resolution, G.img_channels) == (6, 32, 32, 0, 16, 7)
    z = torch.randn(4, 32)
    ws = G.mapping(z)
    assert ws.shape == (4, 6, 32) and torch.equal(ws[:, 0], ws[:, 5])  # one w broadcast to all layers
    img = G.synthesis(ws, noise_mode="const")
    assert img.shape == (4, 7, 16, 16) and img.dtype == torch.float32
    assert 0.05 < img.std().item() < 20  # a sane scale at init, no tanh
    logits = D(img)
    assert logits.shape == (4, 1) and torch.isfinite(logits).all()


def test_truncation_psi_and_cutoff():
    G = tiny_g()
    z = torch.randn(3, 32)
    ws = G.mapping(z)
    w_avg = G.mapping.w_avg
    assert torch.allclose(G.mapping(z, truncation_psi=0), w_avg.expand(3, 6, 32))
    assert torch.equal(G.mapping(z, truncation_psi=1), ws)
    half = G.mapping(z, truncation_psi=0.5, truncation_cutoff=2)
    torch.testing.assert_close(half[:, :2], (ws[:, :2] + w_avg) / 2)
    assert torch.equal(half[:, 2:], ws[:, 2:])
    torch.testing.assert_close(truncate(ws, w_avg, 0.0, cutoff=6), w_avg.expand(3, 6, 32))
    # psi = 0 is the average face for every z.
    img = G(z, truncation_psi=0, noise_mode="const")
    torch.testing.assert_close(img, G.synthesis(w_avg.expand(3, 6, 32), noise_mode="const"))
    torch.testing.assert_close(img[0], img[2])


def test_update_emas_tracks_w_avg():
    G = tiny_g()
    old = G.mapping.w_avg.clone()
    z = torch.randn(8, 32)
    ws = G.mapping(z, update_emas=True)
    torch.testing.assert_close(G.mapping.w_avg, ws[:, 0].mean(0) * (1 - 0.995) + old * 0.995)
    G.mapping(z)  # no update by default
    torch.testing.assert_close(G.mapping.w_avg, ws[:, 0].mean(0) * (1 - 0.995) + old * 0.995)


def test_style_mixing():
    G = tiny_g()
    ws_a, ws_b = G.mapping(torch.randn(2, 32)), G.mapping(torch.randn(2, 32))
    out_b = G.synthesis(ws_b, noise_mode="const")
    torch.testing.assert_close(G.synthesis(style_mix(ws_a, ws_b, 0), noise_mode="const"), out_b)
    assert torch.equal(style_mix(ws_a, ws_b, G.num_ws), ws_a)
    mixed = style_mix(ws_a, ws_b, 3)
    assert torch.equal(mixed[:, :3], ws_a[:, :3]) and torch.equal(mixed[:, 3:], ws_b[:, 3:])
    per_sample = style_mix(ws_a, ws_b, torch.tensor([0, 6]))  # sample 0 all b, sample 1 all a
    assert torch.equal(per_sample[0], ws_b[0]) and torch.equal(per_sample[1], ws_a[1])
    # Three sources: coarse from a, middle from b, fine from c.
    ws_c = G.mapping(torch.randn(2, 32))
    three = style_mix(style_mix(ws_a, ws_b, 2), ws_c, 4)
    assert torch.equal(three[:, 1], ws_a[:, 1]) and torch.equal(three[:, 3], ws_b[:, 3])
    assert torch.equal(three[:, 5], ws_c[:, 5])
    img = G.synthesis(mixed, noise_mode="const")
    assert (img - out_b).abs().max() > 1e-3  # the coarse styles changed the output


def test_noise_modes():
    G = tiny_g()
    ws = G.mapping(torch.randn(2, 32))
    const1, const2 = G.synthesis(ws, noise_mode="const"), G.synthesis(ws, noise_mode="const")
    assert torch.equal(const1, const2)
    rand1, rand2 = G.synthesis(ws, noise_mode="random"), G.synthesis(ws, noise_mode="random")
    assert (rand1 - rand2).abs().max() > 1e-3
    none = G.synthesis(ws, noise_mode="none")
    assert (none - const1).abs().max() > 1e-3
    with torch.no_grad():  # at init (strength 0) noise has no effect
        for name, p in G.named_parameters():
            if name.endswith("noise_strength"):
                p.zero_()
    torch.testing.assert_close(G.synthesis(ws, noise_mode="random"), G.synthesis(ws, noise_mode="none"))
    with pytest.raises(PcganError, match="noise_mode"):
        G.synthesis(ws, noise_mode="fixed")


def test_seeds_give_the_same_face_at_any_batch_size():
    G = tiny_g()
    z = z_from_seeds([5, 42, 9], 32)
    assert torch.equal(z[1], z_from_seeds([42], 32)[0])
    assert not torch.equal(z[0], z[1])
    big = G(z, noise_mode="const")
    one = G(z_from_seeds([42], 32), noise_mode="const")
    torch.testing.assert_close(big[1:2], one, atol=1e-5, rtol=1e-5)
    # Random noise made from the seeds: reproducible too, and different from const noise.
    noise3, noise1 = G.noise_from_seeds([5, 42, 9]), G.noise_from_seeds([42])
    assert [n.shape[-1] for n in noise1] == [4, 8, 8, 16, 16]
    big_r = G(z, noise=noise3)
    torch.testing.assert_close(big_r[1:2], G(z_from_seeds([42], 32), noise=noise1), atol=1e-5, rtol=1e-5)
    assert (big_r - big).abs().max() > 1e-3
    with pytest.raises(PcganError, match="seeds"):
        z_from_seeds([-1], 32)


def test_fused_modconv_gives_the_same_generator():
    G = tiny_g()
    G_fused = Generator(**{**G.init_kwargs, "fused_modconv": True})
    G_fused.load_state_dict(G.state_dict())
    z = torch.randn(3, 32)
    torch.testing.assert_close(G_fused(z, noise_mode="const"), G(z, noise_mode="const"), atol=1e-5, rtol=1e-4)


def test_init_kwargs_rebuild_the_networks():
    G, D = tiny_g(), tiny_d()
    for net, cls in [(G, Generator), (D, Discriminator)]:
        kwargs = json.loads(json.dumps(net.init_kwargs))  # plain primitives only
        clone = cls(**kwargs)
        clone.load_state_dict(net.state_dict())
        assert clone.init_kwargs == net.init_kwargs
    z = torch.randn(2, 32)
    G2 = Generator(**G.init_kwargs)
    G2.load_state_dict(G.state_dict())
    assert torch.equal(G2(z, noise_mode="const"), G(z, noise_mode="const"))


def test_double_backward_r1_and_path_length():
    G, D = tiny_g(), tiny_d()
    # R1: gradient of the penalty ||dD/dx||^2 reaches D's weights (double backward through D).
    real = torch.randn(4, 7, 16, 16, requires_grad=True)
    (grad,) = torch.autograd.grad(D(real).sum(), real, create_graph=True)
    grad.square().sum().backward()
    d_grads = [p.grad for p in D.parameters() if p.grad is not None]
    assert len(d_grads) > 10 and all(torch.isfinite(g).all() for g in d_grads)
    assert sum(g.abs().sum() for g in d_grads) > 0
    # Through G and D: a gradient penalty on fakes backpropagates into G's weights.
    fake = G(torch.randn(4, 32))
    (grad,) = torch.autograd.grad(D(fake).sum(), fake, create_graph=True)
    grad.square().sum().backward()
    # Path length: d(img . y)/dws, then its norm, back to G.
    ws = G.mapping(torch.randn(4, 32))
    img = G.synthesis(ws)
    (pl,) = torch.autograd.grad((img * torch.randn_like(img)).sum(), ws, create_graph=True)
    pl.square().sum().backward()
    g_grads = {n: p.grad for n, p in G.named_parameters() if p.grad is not None}
    assert all(torch.isfinite(g).all() for g in g_grads.values())
    assert g_grads["synthesis.blocks.2.conv0.weight"].abs().sum() > 0


def test_minibatch_std_values():
    x = torch.zeros(4, 2, 1, 1)
    x[:, 0, 0, 0] = torch.tensor([0.0, 10.0, 2.0, 10.0])  # groups of 2: samples {0, 2} and {1, 3}
    y = MinibatchStd(group_size=2, num_channels=1)(x)
    assert y.shape == (4, 3, 1, 1)
    # Group {0, 2}: channel stds (1, 0), averaged -> 0.5; group {1, 3}: (0, 0) -> ~0.
    torch.testing.assert_close(y[:, 2, 0, 0], torch.tensor([0.5, 1e-4, 0.5, 1e-4]), atol=1e-4, rtol=0)
    with pytest.raises(PcganError, match="not divisible"):
        MinibatchStd(group_size=4)(torch.zeros(6, 2, 4, 4))


def test_conditioning():
    G, D = tiny_g(c_dim=3), tiny_d(c_dim=3)
    z, c = torch.randn(4, 32), torch.eye(3)[[0, 1, 2, 0]]
    img = G(z, c, noise_mode="const")
    logits = D(img, c)
    assert logits.shape == (4, 1) and torch.isfinite(logits).all()
    other = G(z, torch.eye(3)[[1, 1, 1, 1]], noise_mode="const")
    assert (other[0] - img[0]).abs().max() > 1e-4 and torch.allclose(other[1], img[1])
    with pytest.raises(PcganError, match="conditional"):
        G(z)


def test_bad_inputs_name_the_dimension():
    G, D = tiny_g(), tiny_d()
    with pytest.raises(PcganError, match="dim 1 must be 7"):
        D(torch.zeros(2, 6, 16, 16))
    with pytest.raises(PcganError, match="ws dim 1 must be 6"):
        G.synthesis(torch.zeros(2, 5, 32))
    with pytest.raises(PcganError, match="z dim 1 must be 32"):
        G(torch.zeros(2, 31))
    for bad in (4, 12, 2048):
        with pytest.raises(PcganError, match="power of two"):
            Generator(resolution=bad, channel_base=64, channel_max=8)


@pytest.mark.parametrize("resolution", [8, 32, 1024])
def test_resolutions(resolution):
    G = Generator(z_dim=8, w_dim=8, resolution=resolution, channels=4, channel_base=64, channel_max=8,
                  mapping_layers=1)
    D = Discriminator(resolution=resolution, channels=4, channel_base=64, channel_max=8)
    assert G.num_ws == 2 * int(math.log2(resolution)) - 2
    if resolution <= 32:
        img = G(torch.randn(2, 8))
        assert img.shape == (2, 4, resolution, resolution) and D(img).shape == (2, 1)


@pytest.mark.parametrize("preset", sorted(p.name for p in CONFIGS.glob("*.yaml")))
def test_every_preset_builds_and_trains_on_cpu(preset):
    cfg = load_config(CONFIGS / preset).model
    G = Generator(**cfg.generator_kwargs(channels=7, camera=Camera().to_dict(), background=GridMeta(8).empty_pixel()))
    D = Discriminator(**cfg.discriminator_kwargs(channels=7, camera=Camera().to_dict()))
    if preset == "faces-256.yaml":  # config F at 256: ~30.0M G and ~28.9M D parameters
        assert 29.5e6 < sum(p.numel() for p in G.parameters()) < 30.5e6
        assert 28.5e6 < sum(p.numel() for p in D.parameters()) < 29.5e6
    batch = 1 if cfg.resolution >= 256 else 2  # config F at 256 costs ~0.2 TFLOP per fwd+bwd image
    img = G(torch.randn(batch, cfg.z_dim))
    assert img.shape == (batch, 7, cfg.resolution, cfg.resolution)
    torch.nn.functional.softplus(-D(img)).mean().backward()
    for net in (G, D):
        grads = [p.grad for p in net.parameters() if p.grad is not None]
        assert len(grads) > 10 and all(torch.isfinite(g).all() for g in grads)


def test_bf16_autocast_and_channels_last():
    G, D = tiny_g(), tiny_d()
    z = torch.randn(4, 32)
    ref = G(z, noise_mode="const")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        img = G(z, noise_mode="const")
        logits = D(img)
    assert img.dtype == torch.float32 and logits.dtype == torch.float32  # grid output stays fp32
    assert (img - ref).abs().mean() / ref.abs().mean() < 0.05  # bf16 convs: close to fp32
    d_ref = D(ref)
    G, D = G.to(memory_format=torch.channels_last), D.to(memory_format=torch.channels_last)
    assert G.synthesis.blocks[1].conv0.weight.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(G(z, noise_mode="const"), ref, atol=1e-5, rtol=1e-4)
    x = ref.contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(D(x), d_ref, atol=1e-5, rtol=1e-4)


def test_compiles_without_graph_breaks():
    torch._dynamo.reset()
    G, D = tiny_g(), tiny_d()
    z = torch.randn(2, 32)
    g_compiled = torch.compile(G, fullgraph=True, backend="eager")  # raises on a graph break
    d_compiled = torch.compile(D, fullgraph=True, backend="eager")
    img = g_compiled(z, noise_mode="const")
    torch.testing.assert_close(img, G(z, noise_mode="const"))
    torch.testing.assert_close(d_compiled(img), D(img))
    assert g_compiled(z).shape == (2, 7, 16, 16)  # the training path: random noise


def test_flops_per_image():
    conv = Conv2dLayer(8, 16, 3)
    x = torch.randn(2, 8, 10, 10)
    assert flops_per_image(conv, x) == 2 * 16 * 10 * 10 * 8 * 9  # 2 FLOPs per MAC
    G = tiny_g()
    per_image = flops_per_image(G, torch.randn(1, 32))
    assert per_image == pytest.approx(flops_per_image(G, torch.randn(3, 32)), rel=1e-6)
    # Tiny G has 32 maps at 4x4 and 8x8, 16 at 16x16. Its 3x3 convs: conv1 at 4, 8, 16 plus the
    # upsampling conv0s, counted on their low-resolution inputs (transposed convs).
    convs = 2 * 9 * (16 * 32 * 32 + 64 * 32 * 32 + 256 * 16 * 16 + 16 * 32 * 32 + 64 * 32 * 16)
    assert convs <= per_image < 1.15 * convs  # the rest: FIR filters, ToXYZRGB, mapping


# ----------------------------------------------------------------------------------------------
# x, y on the camera rays (model.xyz_on_rays)


@pytest.mark.parametrize("projection", ["perspective", "orthographic"])
def test_generated_points_lie_on_their_pixel_rays(projection):
    camera = Camera(projection=projection)
    torch.manual_seed(0)
    G = Generator(z_dim=16, w_dim=16, mapping_layers=1, camera=camera.to_dict(), **TINY)
    img = G(torch.randn(3, 16))
    assert float(img[:, 2].detach().std()) > 0.01               # the depths vary
    assert pixel_offsets(img, camera).max() < 1e-3               # yet every point stays on its pixel
    free = Generator(z_dim=16, w_dim=16, mapping_layers=1, **TINY)  # without a camera x, y are free
    free.load_state_dict(G.state_dict())
    assert pixel_offsets(free(torch.randn(3, 16)), camera).max() > 0.1
    # depth is what G learns: gradients reach its weights through z, as x, y follow z
    z_only = torch.autograd.grad(img[:, 2].sum(), G.synthesis.blocks[-1].torgb.weight, retain_graph=True)[0]
    x_grad = torch.autograd.grad(img[:, 0].sum(), G.synthesis.blocks[-1].torgb.weight)[0]
    assert float(z_only.abs().sum()) > 0
    if projection == "orthographic":                               # x = the ray's x whatever z
        assert float(x_grad.abs().sum()) == 0
    else:                                                          # x moves with z, except on the axis
        assert float(x_grad.abs().sum()) > 0


def test_camera_lives_in_init_kwargs_so_snapshots_rebuild_it(tmp_path):
    from pcgan import checkpoint as ckpt
    from pcgan.grid import GridMeta

    meta = GridMeta(resolution=16, camera=Camera(fov_deg=30.0))
    G = Generator(z_dim=16, w_dim=16, mapping_layers=1, camera=meta.camera.to_dict(), **TINY).eval()
    assert G.init_kwargs["camera"]["fov_deg"] == 30.0
    assert "ray_origin" not in G.state_dict()                     # derived from the camera, not stored
    path = ckpt.save_snapshot(tmp_path / "snap.pt", G, meta, {}, 0)
    G2, _, _ = ckpt.load_generator(path)
    z = torch.randn(2, 16)
    assert torch.equal(G(z, noise_mode="const"), G2(z, noise_mode="const"))
    # a generator built without a camera (as every snapshot before the option) records none
    assert "camera" not in Generator(z_dim=16, w_dim=16, mapping_layers=1, **TINY).init_kwargs


def test_xyz_on_rays_config_needs_the_camera():
    model = load_config(None, ["model.resolution=16"]).model
    assert model.xyz_on_rays
    with pytest.raises(ValueError, match="camera"):
        model.generator_kwargs(channels=7)
    empty = GridMeta(16).empty_pixel()
    assert model.generator_kwargs(channels=7, camera=Camera().to_dict(), background=empty)["camera"]["projection"] == "perspective"
    off = load_config(None, ["model.resolution=16", "model.xyz_on_rays=false"]).model
    assert "camera" not in off.generator_kwargs(channels=7, camera=Camera().to_dict(), background=empty)


# ----------------------------------------------------------------------------------------------
# Empty pixels composited over the background (model.g_composite)


@pytest.mark.parametrize("on_rays", [True, False])
def test_generated_empty_pixels_hold_the_background_sheet_exactly(on_rays, tmp_path):
    from pcgan import checkpoint as ckpt
    from pcgan.grid import empty_grid

    meta = GridMeta(resolution=16, sheet_z=-0.4, background_rgb=(0.2, 0.4, 0.6))
    camera = meta.camera.to_dict() if on_rays else None
    torch.manual_seed(0)
    G = Generator(z_dim=16, w_dim=16, mapping_layers=1, camera=camera, background=meta.empty_pixel(), **TINY)
    plain = Generator(z_dim=16, w_dim=16, mapping_layers=1, camera=camera, **TINY)
    plain.load_state_dict(G.state_dict())
    z = torch.randn(4, 16)
    img, ref = G(z, noise_mode="const"), plain(z, noise_mode="const")
    empty = img[:, 6:7] <= 0
    assert 0.05 < float(empty.float().mean()) < 0.95                  # an untrained G leaves both kinds
    # empty pixels: exactly what preprocessing writes there (the sheet's point on each ray, the colour)
    blank = torch.from_numpy(empty_grid(meta)).float()[:6]           # [6, H, W]
    torch.testing.assert_close(torch.where(empty, img[:, :6], 0), torch.where(empty, blank.expand(4, -1, -1, -1), 0),
                               atol=1e-5, rtol=0)
    # surface pixels and the mask: the plain generator's output, untouched
    assert torch.equal(torch.where(~empty, img, 0), torch.where(~empty, ref, 0))
    # no gradient reaches G's depth through a pixel it left empty
    grad = torch.autograd.grad(img[:, 2].masked_fill(~empty[:, 0], 0).sum(), G.synthesis.blocks[-1].torgb.weight,
                               allow_unused=True)[0]
    assert grad is None or float(grad.abs().sum()) == 0
    # the background lives in init_kwargs (not the state dict): a snapshot rebuilds it
    assert "empty_pixel" not in G.state_dict() and G.init_kwargs["background"]["sheet_z"] == -0.4
    G2, _, _ = ckpt.load_generator(ckpt.save_snapshot(tmp_path / "snap.pt", G.eval(), meta, {}, 0))
    assert torch.equal(G2(z, noise_mode="const"), img)
    with pytest.raises(PcganError, match="no mask"):                 # 6 channels: nothing to composite by
        Generator(z_dim=16, w_dim=16, mapping_layers=1, background=meta.empty_pixel(), **{**TINY, "channels": 6})


def test_g_composite_config_needs_the_background_and_only_applies_with_a_mask():
    model = load_config(None, ["model.resolution=16", "model.g_composite=true"]).model
    cam = Camera().to_dict()
    with pytest.raises(ValueError, match="background"):
        model.generator_kwargs(channels=7, camera=cam)
    kwargs = model.generator_kwargs(channels=7, camera=cam, background=GridMeta(16, sheet_z=-0.5).empty_pixel())
    assert kwargs["background"] == {"camera": cam, "sheet_z": -0.5, "rgb": [0.0, 0.0, 0.0]}
    assert "background" not in model.generator_kwargs(channels=6, camera=cam)      # no mask channel
    off = load_config(None, ["model.resolution=16"]).model                         # the default
    assert not off.g_composite and "background" not in off.generator_kwargs(channels=7, camera=cam)


# ----------------------------------------------------------------------------------------------
# The mask channel squashed toward +-1 (model.g_mask_tanh)


@pytest.mark.parametrize("composite", [False, True])
def test_mask_tanh_saturates_the_mask_and_keeps_which_pixels_are_surface(composite, tmp_path):
    from pcgan import checkpoint as ckpt

    meta = GridMeta(resolution=16, sheet_z=-0.4)
    background = meta.empty_pixel() if composite else None
    torch.manual_seed(0)
    G = Generator(z_dim=16, w_dim=16, mapping_layers=1, background=background, mask_tanh=3.0, **TINY)
    plain = Generator(z_dim=16, w_dim=16, mapping_layers=1, background=background, **TINY)
    plain.load_state_dict(G.state_dict())                         # the same weights, a linear mask
    z = torch.randn(4, 16)
    img, ref = G(z, noise_mode="const"), plain(z, noise_mode="const")
    torch.testing.assert_close(img[:, 6], torch.tanh(3.0 * ref[:, 6]))
    assert float(img[:, 6].abs().max()) <= 1 and 0.05 < float((ref[:, 6] > 0).float().mean()) < 0.95
    assert torch.equal(img[:, :6], ref[:, :6])                     # the same surface pixels, the same points
    G2, _, _ = ckpt.load_generator(ckpt.save_snapshot(tmp_path / "snap.pt", G.eval(), meta, {}, 0))
    assert G2.init_kwargs["mask_tanh"] == 3.0 and torch.equal(G2(z, noise_mode="const"), img)
    assert "mask_tanh" not in plain.init_kwargs                    # off: older snapshots' kwargs unchanged
    with pytest.raises(PcganError, match="mask_tanh"):
        Generator(z_dim=16, w_dim=16, mapping_layers=1, mask_tanh=3.0, **{**TINY, "channels": 6})
    with pytest.raises(PcganError, match="mask_tanh"):
        Generator(z_dim=16, w_dim=16, mapping_layers=1, mask_tanh=-1.0, **TINY)


def test_g_mask_tanh_config_reaches_the_generator_only_with_a_mask():
    cam = Camera().to_dict()
    model = load_config(None, ["model.resolution=16", "model.g_mask_tanh=3"]).model
    assert model.generator_kwargs(channels=7, camera=cam)["mask_tanh"] == 3.0
    assert "mask_tanh" not in model.generator_kwargs(channels=6, camera=cam)          # no mask channel
    off = load_config(None, ["model.resolution=16"]).model                           # the default
    assert off.g_mask_tanh == 0 and "mask_tanh" not in off.generator_kwargs(channels=7, camera=cam)
    with pytest.raises(PcganError, match="g_mask_tanh must be >= 0"):
        load_config(None, ["model.resolution=16", "model.g_mask_tanh=-2"])


def test_normal_map_of_a_tilted_plane_and_discriminator_with_normals(tmp_path):
    camera, R, (a, b) = Camera(projection="orthographic"), 16, (0.5, -0.25)
    origins, _ = camera.rays(R)
    x, y = torch.from_numpy(origins[..., 0]).float(), torch.from_numpy(origins[..., 1]).float()
    img = torch.zeros(2, 7, R, R)
    img[:, 0], img[:, 1], img[:, 2], img[:, 6] = x, y, a * x + b * y, 1.0
    img[1, 6, :, :4] = -1.0                                       # a strip of background in the second grid
    n = normal_map(img, camera.pixel_size(R), has_mask=True)
    expected = torch.tensor([-a, -b, 1.0]) / math.sqrt(1 + a * a + b * b)
    torch.testing.assert_close(n[0].permute(1, 2, 0), expected.expand(R, R, 3), atol=1e-5, rtol=0)
    torch.testing.assert_close(n[1, :, :, 4:].permute(1, 2, 0), expected.expand(R, R - 4, 3), atol=1e-5, rtol=0)
    assert float(n[1, :, :, :4].abs().max()) == 0                 # nothing off the surface, and no step at its edge

    from pcgan import checkpoint as ckpt
    from pcgan.grid import GridMeta
    meta = GridMeta(resolution=R, camera=camera)
    cfg = load_config(None, [f"model.resolution={R}", "model.d_normals=true"]).model
    with pytest.raises(ValueError, match="camera"):
        cfg.discriminator_kwargs(channels=7)
    kw = cfg.discriminator_kwargs(channels=7, camera=camera.to_dict())
    assert kw["normals_pixel_size"] == pytest.approx(camera.pixel_size(R))
    torch.manual_seed(0)
    D = Discriminator(**{**kw, "channel_base": 256, "channel_max": 32})
    assert D.blocks[0].fromrgb.weight.shape[1] == 7 + 3             # the grid and its normals
    assert "normals_pixel_size" not in Discriminator(**TINY).init_kwargs   # off: older snapshots' kwargs
    # R1's double backward through the normals stays finite, and reaches z through the shading
    real = img.clone().requires_grad_(True)
    grad, = torch.autograd.grad(D(real).sum(), real, create_graph=True)
    grad.square().sum().backward()
    assert torch.isfinite(grad).all() and float(grad.detach()[:, 2].abs().sum()) > 0
    assert all(torch.isfinite(p.grad).all() for p in D.parameters() if p.grad is not None)
    path = tmp_path / "d.pt"
    torch.save({"D": D.state_dict(), "init_kwargs": D.init_kwargs}, path)
    state = torch.load(path)
    D2 = Discriminator(**state["init_kwargs"])
    D2.load_state_dict(state["D"])
    assert torch.equal(D2(img), D(img))


def test_curvature_of_a_sphere_cap_and_discriminator_reading_it():
    camera, R, r = Camera(projection="orthographic"), 32, 1.5
    origins, _ = camera.rays(R)
    x, y = torch.from_numpy(origins[..., 0]).float(), torch.from_numpy(origins[..., 1]).float()
    img = torch.zeros(2, 7, R, R)
    img[:, 0], img[:, 1], img[:, 6] = x, y, 1.0
    img[0, 2] = (r * r - x * x - y * y).clamp_min(0).sqrt()        # a ball bulging toward the camera
    img[1, 2] = 0.3 * x - 0.2 * y                                   # a tilted plane
    img[:, 6, :, :3] = -1.0                                         # background at the left edge
    h = camera.pixel_size(R)
    n = normal_map(img, h, has_mask=True)
    k = curvature_map(n, img[:, 6:7] > 0)
    inner = (x.abs() < 0.5) & (y.abs() < 0.5)                       # away from the rim and the edges
    # div n = 2 / r per unit length on a sphere: 2 h / r per pixel
    torch.testing.assert_close(k[0, 0][inner], torch.full_like(k[0, 0][inner], 2 * h / r), rtol=0.03, atol=0)
    assert float(k[1, 0, 1:-1, 4:-1].abs().max()) < 1e-5          # a plane does not bend
    assert float(k[:, 0, :, :3].abs().max()) == 0                  # nothing off the surface
    assert float(curvature_map(-n, img[:, 6:7] > 0)[0, 0][inner].mean()) < 0   # a hollow bends the other way

    cfg = load_config(None, [f"model.resolution={R}", "model.d_curvature=2"]).model
    kw = cfg.discriminator_kwargs(channels=7, camera=camera.to_dict())
    assert kw["curvature_gain"] == 2.0
    D = Discriminator(**{**kw, "channel_base": 256, "channel_max": 32})
    assert D.blocks[0].fromrgb.weight.shape[1] == 7 + 3 + 1 and D.init_kwargs["curvature_gain"] == 2.0
    assert "curvature_gain" not in load_config(None, [f"model.resolution={R}"]).model.discriminator_kwargs(
        channels=7, camera=camera.to_dict())                        # off by default: older snapshots' kwargs
    real = img.clone().requires_grad_(True)                         # R1 through the curvature stays finite
    grad, = torch.autograd.grad(D(real).sum(), real, create_graph=True)
    grad.square().sum().backward()
    assert torch.isfinite(grad).all() and all(torch.isfinite(p.grad).all() for p in D.parameters()
                                               if p.grad is not None)
    with pytest.raises(PcganError, match="d_curvature"):
        load_config(None, [f"model.resolution={R}", "model.d_curvature=1", "model.d_normals=false"])
    with pytest.raises(PcganError, match="curvature"):
        Discriminator(curvature_gain=1.0, **TINY)                     # no normals to bend


def test_packed_discriminator_judges_samples_together():
    torch.manual_seed(0)
    D = Discriminator(pack=2, **TINY)
    assert D.blocks[0].fromrgb.weight.shape[1] == 2 * 7 and D.init_kwargs["pack"] == 2
    x = torch.randn(6, 7, 16, 16)
    logits = D(x)
    assert logits.shape == (6, 1)
    assert torch.equal(logits[0::2], logits[1::2])               # one logit per pack, given to each sample
    swapped = x.clone()
    swapped[1] = x[2]
    assert not torch.equal(D(swapped)[0], logits[0])             # a pack's logit depends on all its samples
    with pytest.raises(PcganError, match="not a multiple of its pack 2"):
        D(torch.randn(3, 7, 16, 16))
    with pytest.raises(PcganError, match="conditional"):
        Discriminator(pack=2, c_dim=3, **TINY)
    assert "pack" not in Discriminator(**TINY).init_kwargs
    with pytest.raises(PcganError, match="d_pack must be >= 1"):
        load_config(None, ["model.d_pack=0"])


def test_r1_of_a_packed_discriminator_is_the_packs_gradient():
    from pcgan.training.loss import StyleGAN2Loss
    torch.manual_seed(0)
    G = Generator(z_dim=16, w_dim=16, mapping_layers=1, **TINY)
    D = Discriminator(pack=2, **TINY)
    real = torch.randn(4, 7, 16, 16)
    loss = StyleGAN2Loss(G, D, r1_gamma=2.0)
    stats = loss.accumulate_gradients("Dreg", real, torch.randn(4, 16), None, gain=1.0)
    x = real.clone().requires_grad_(True)
    packs = D.epilogue(*_blocks(D, x))                            # [2, 1]: one logit per pack
    (grad,) = torch.autograd.grad(packs.sum(), x)
    expected = grad.square().sum(dim=[1, 2, 3]).mean()
    torch.testing.assert_close(stats["Loss/r1_penalty"], expected, rtol=1e-4, atol=1e-6)


def _blocks(D, img):
    img = img.reshape(img.shape[0] // D.pack, -1, *img.shape[2:])
    x = None
    for block in D.blocks:
        x = block(x, img)
    return (x,)

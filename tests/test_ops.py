"""pcgan.ops: FIR resampling against scipy, fused resampling convs and the fast modulated conv
against plain references (float64, values and gradients), equalised learning rate."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.signal
import torch
import torch.nn.functional as F

from pcgan.ops import (Conv2dLayer, FullyConnected, bias_act, conv2d_resample, downsample2d, filter2d,
                       modulated_conv2d, modulated_conv2d_reference, setup_filter, upsample2d)

TAPS = [(1, 3, 3, 1), (1, 2, 4, 3)]  # the StyleGAN2 filter, and an asymmetric one to catch flips


def _upfirdn_2d(x: np.ndarray, h: np.ndarray, up: int = 1) -> np.ndarray:
    """Full separable upfirdn of every [H, W] plane with scipy (zero insertion + convolution)."""
    y = np.apply_along_axis(lambda r: scipy.signal.upfirdn(h, r, up=up), -1, x)
    return np.apply_along_axis(lambda r: scipy.signal.upfirdn(h, r, up=up), -2, y)


def _filter64(taps) -> torch.Tensor:
    """setup_filter's result computed in float64 (it works in float32, which rounds 1/100)."""
    h = torch.tensor(taps, dtype=torch.float64) / sum(taps)
    return torch.outer(h, h)


def test_setup_filter_is_normalised_outer_product():
    f = setup_filter([1, 3, 3, 1])
    assert f.shape == (4, 4)
    assert f.sum().item() == pytest.approx(1.0)
    assert torch.allclose(f, torch.outer(torch.tensor([1., 3, 3, 1]), torch.tensor([1., 3, 3, 1])) / 64)
    torch.testing.assert_close(setup_filter([1, 2, 4, 3]).double(), _filter64([1, 2, 4, 3]))


@pytest.mark.parametrize("taps", TAPS)
def test_filter2d_equals_scipy_full_convolution(taps):
    x = torch.randn(2, 3, 9, 11, dtype=torch.float64)
    f = _filter64(taps)
    got = filter2d(x, f, padding=3)  # full convolution
    want = np.stack([[scipy.signal.convolve2d(p, f.numpy(), mode="full") for p in s] for s in x.numpy()])
    assert got.shape == (2, 3, 12, 14)
    np.testing.assert_allclose(got.numpy(), want, atol=1e-12)


@pytest.mark.parametrize("taps", TAPS)
def test_upsample2d_equals_scipy_upfirdn(taps):
    x = torch.randn(2, 3, 5, 7, dtype=torch.float64)
    h = np.asarray(taps, float) / sum(taps) * 2  # per-axis gain 2 keeps a constant image
    full = _upfirdn_2d(x.numpy(), h, up=2)  # [2, 3, 2*5 - 1 + 3, 2*7 - 1 + 3]
    want = full[..., 1:1 + 10, 1:1 + 14]  # the centred window
    got = upsample2d(x, _filter64(taps))
    assert got.shape == (2, 3, 10, 14)
    np.testing.assert_allclose(got.numpy(), want, atol=1e-12)


@pytest.mark.parametrize("taps", TAPS)
def test_downsample2d_equals_scipy_upfirdn(taps):
    x = torch.randn(2, 3, 8, 12, dtype=torch.float64)
    h = np.asarray(taps, float) / sum(taps)
    full = _upfirdn_2d(x.numpy(), h)  # [2, 3, 11, 15]
    want = full[..., 2::2, 2::2][..., :4, :6]  # output j centred between input pixels 2j, 2j+1
    got = downsample2d(x, _filter64(taps))
    assert got.shape == (2, 3, 4, 6)
    np.testing.assert_allclose(got.numpy(), want, atol=1e-12)


def test_resampling_preserves_a_constant_image_away_from_the_border():
    f = setup_filter([1, 3, 3, 1])
    x = torch.full([1, 2, 8, 8], 0.7)
    up, down = upsample2d(x, f), downsample2d(x, f)
    assert torch.allclose(up[..., 2:-2, 2:-2], torch.tensor(0.7), atol=1e-6)
    assert torch.allclose(down[..., 1:-1, 1:-1], torch.tensor(0.7), atol=1e-6)
    # Zero padding darkens only the outermost pixels, by the missing outer tap (1/8, times the
    # upsampling gain 2): 1 - 1/4 per axis.
    assert up[0, 0, 0, 5].item() == pytest.approx(0.7 * 3 / 4, rel=1e-6)
    assert up[0, 0, 0, 0].item() == pytest.approx(0.7 * 9 / 16, rel=1e-6)
    # Up then down returns a smooth image unchanged in the interior.
    smooth = torch.linspace(-1, 1, 16).reshape(1, 1, 1, 16).expand(1, 1, 16, 16)
    back = downsample2d(upsample2d(smooth, f), f)
    assert torch.allclose(back[..., 2:-2, 2:-2], smooth[..., 2:-2, 2:-2], atol=1e-6)


def _upconv_reference(x, w, f):
    """Zero insertion, full FIR, full cross-correlation, centred 2H x 2W window."""
    B, I, H, W = x.shape
    k, T = w.shape[-1], f.shape[0]
    z = x.new_zeros([B, I, 2 * H - 1, 2 * W - 1])
    z[:, :, ::2, ::2] = x
    y = F.conv2d(filter2d(z, f, padding=T - 1, gain=4.0), w, padding=k - 1)
    c = (k + T - 3) // 2
    return y[:, :, c:c + 2 * H, c:c + 2 * W]


def _downconv_reference(x, w, f):
    """Full FIR, full cross-correlation, every second pixel of the centred window."""
    H, W = x.shape[2:]
    k, T = w.shape[-1], f.shape[0]
    y = F.conv2d(filter2d(x, f, padding=T - 1), w, padding=k - 1)
    c = (k + T - 1) // 2  # full index of output 0: centred between input pixels 0 and 1
    return y[:, :, c::2, c::2][:, :, :H // 2, :W // 2]


@pytest.mark.parametrize("k", [1, 3])
@pytest.mark.parametrize("taps", TAPS)
def test_conv2d_resample_equals_reference(k, taps):
    f = _filter64(taps)
    x = torch.randn(2, 4, 6, 8, dtype=torch.float64)
    w = torch.randn(5, 4, k, k, dtype=torch.float64)
    up = conv2d_resample(x, w, f, up=2)
    assert up.shape == (2, 5, 12, 16)
    torch.testing.assert_close(up, _upconv_reference(x, w, f), atol=1e-12, rtol=0)
    down = conv2d_resample(x, w, f, down=2)
    assert down.shape == (2, 5, 3, 4)
    torch.testing.assert_close(down, _downconv_reference(x, w, f), atol=1e-12, rtol=0)
    torch.testing.assert_close(conv2d_resample(x, w), F.conv2d(x, w, padding=k // 2), atol=1e-12, rtol=0)


@pytest.mark.parametrize("fused", [False, True])
@pytest.mark.parametrize("up,k,demodulate", [(1, 3, True), (2, 3, True), (1, 3, False), (1, 1, False), (2, 1, True)])
def test_modulated_conv2d_equals_per_sample_reference(fused, up, k, demodulate):
    torch.manual_seed(0)
    f = _filter64([1, 3, 3, 1])
    x = torch.randn(3, 4, 5, 5, dtype=torch.float64, requires_grad=True)
    w = torch.randn(6, 4, k, k, dtype=torch.float64, requires_grad=True)
    s = (torch.randn(3, 4, dtype=torch.float64) + 1).requires_grad_()
    args = dict(demodulate=demodulate, up=up, f=f)
    got = modulated_conv2d(x, w, s, fused=fused, **args)
    want = modulated_conv2d_reference(x, w, s, **args)
    assert got.shape == (3, 6, 5 * up, 5 * up)
    torch.testing.assert_close(got, want, atol=1e-12, rtol=1e-10)
    g = torch.randn_like(got)
    grads = torch.autograd.grad(got, [x, w, s], g)
    grads_ref = torch.autograd.grad(want, [x, w, s], g)
    for a, b in zip(grads, grads_ref):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-10)


def test_demodulated_conv_has_unit_std_for_unit_variance_input():
    torch.manual_seed(1)
    x = torch.randn(4, 64, 32, 32)
    w = torch.randn(48, 64, 3, 3) * 5  # any kernel scale
    s = torch.randn(4, 64).exp()  # very uneven styles
    y = modulated_conv2d(x, w, s, demodulate=True)[..., 1:-1, 1:-1]  # away from zero padding
    var = y.var(dim=[0, 2, 3])  # [48] per output channel
    assert var.mean().item() == pytest.approx(1.0, abs=0.05)
    assert var.min().item() > 0.7 and var.max().item() < 1.3
    # Without demodulation the same styles blow the scale up, so demodulation does the work.
    assert modulated_conv2d(x, w, s, demodulate=False).std().item() > 20


def test_equalised_lr_scales_are_one_over_sqrt_fan_in():
    torch.manual_seed(2)
    fc = FullyConnected(200, 300, lr_mul=0.01, bias_init=1.0)
    assert fc.weight_gain == pytest.approx(0.01 / math.sqrt(200))
    assert fc.weight.std().item() == pytest.approx(100.0, rel=0.05)  # stored N(0,1) / lr_mul
    assert torch.allclose(fc.bias * fc.bias_gain, torch.ones(300))  # effective bias = bias_init
    y = fc(torch.randn(1000, 200)) - 1.0
    assert y.std().item() == pytest.approx(1.0, rel=0.05)  # unit in, unit out
    conv = Conv2dLayer(16, 32, 3)
    assert conv.weight_gain == pytest.approx(1 / math.sqrt(16 * 9))
    assert conv(torch.randn(8, 16, 16, 16))[..., 1:-1, 1:-1].std().item() == pytest.approx(1.0, rel=0.05)
    # Leaky ReLU with gain sqrt(2) keeps the second moment of a unit Gaussian near 1 (1.04).
    act = Conv2dLayer(16, 32, 3, activation="lrelu")
    m2 = act(torch.randn(8, 16, 16, 16))[..., 1:-1, 1:-1].square().mean().item()
    assert m2 == pytest.approx(1.04, rel=0.06)


def test_bias_act_values():
    x = torch.tensor([[-2.0, 1.0]])
    b = torch.tensor([1.0, 1.0])
    torch.testing.assert_close(bias_act(x, b, "linear"), torch.tensor([[-1.0, 2.0]]))
    want = torch.tensor([[-0.2, 2.0]]) * math.sqrt(2) * 0.5
    torch.testing.assert_close(bias_act(x, b, "lrelu", gain=0.5), want)
    torch.testing.assert_close(bias_act(x * 10, None, "linear", clamp=3.0), torch.tensor([[-3.0, 3.0]]))

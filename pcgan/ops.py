"""Building blocks of the StyleGAN2 networks, in pure PyTorch (no custom CUDA extension).

* Equalised learning rate (Karras et al. 2018, "Progressive Growing of GANs"): weights are
  stored as N(0, 1) / lr_mul and scaled at run time by ``lr_mul / sqrt(fan_in)``, so every
  layer learns at the same speed under Adam whatever its fan-in. :class:`FullyConnected` and
  :class:`Conv2dLayer` implement it.
* FIR resampling (Zhang 2019, "Making convolutional networks shift-invariant again"; used by
  StyleGAN2): ``upsample2d`` / ``downsample2d`` / ``filter2d`` low-pass with a separable
  binomial filter such as [1, 3, 3, 1].
* ``conv2d_resample``: a "same" convolution fused with 2x FIR up- or downsampling.
* ``modulated_conv2d``: StyleGAN2's weight modulation / demodulation, with two equivalent fast
  paths (grouped conv, or scaling activations) and ``modulated_conv2d_reference``, a plain
  per-sample loop kept as the test oracle.

Resampling geometry. A pixel covers a unit square; input pixel ``i`` is centred at ``i + 0.5``.
Upsampling by 2 puts input pixel ``i`` at output position ``2i + 1`` (between output pixels
``2i`` and ``2i + 1``), downsampling puts output pixel ``j`` at input position ``2j + 1``. Every
resampling op below is "full convolution with the combined kernel, then the centred window", so
the order of FIR filter and conv kernel does not change the result, borders included. Borders
are zero-padded (as in StyleGAN2).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

# Activation name -> (function, gain). The gain sqrt(2) keeps the second moment of a
# leaky-ReLU'd unit Gaussian near 1 (He et al. 2015), as StyleGAN2 does.
ACTIVATIONS = {
    "linear": (lambda x: x, 1.0),
    "lrelu": (lambda x: F.leaky_relu(x, 0.2), math.sqrt(2.0)),
}


def setup_filter(f: Sequence[float] = (1, 3, 3, 1)) -> torch.Tensor:
    """A separable 2D low-pass filter from 1D taps, normalised to unit sum.

    Args:
        f: 1D taps (even length for 2x resampling, e.g. [1, 3, 3, 1]).
    Returns:
        [T, T] float32 tensor, the outer product of ``f`` with itself, summing to 1.
    """
    f1 = torch.as_tensor(f, dtype=torch.float32)
    assert f1.ndim == 1 and f1.numel() >= 1, f"filter taps must be 1D, got shape {tuple(f1.shape)}"
    f2 = torch.outer(f1, f1)
    return f2 / f2.sum()


def _pads(padding: int | tuple[int, int]) -> tuple[int, int]:
    return (padding, padding) if isinstance(padding, int) else tuple(padding)


def filter2d(x: torch.Tensor, f: torch.Tensor, padding: int | tuple[int, int] = 0,
             down: int = 1, gain: float = 1.0) -> torch.Tensor:
    """Convolve every channel with the 2D FIR filter ``f`` (true convolution), then subsample.

    Args:
        x: [B, C, H, W] input.
        f: [T, T] filter (see :func:`setup_filter`).
        padding: zero padding (before, after), the same on both axes; negative crops.
        down: keep every ``down``-th output pixel.
        gain: multiplies the filter (e.g. up**2 after zero insertion).
    Returns:
        [B, C, (H + p0 + p1 - T) // down + 1, same for W].
    """
    C = x.shape[1]
    p0, p1 = _pads(padding)
    weight = (f.flip([0, 1]) * gain).to(x.dtype)[None, None].expand(C, 1, *f.shape)  # [C, 1, T, T]
    x = F.pad(x, [p0, p1, p0, p1])
    return F.conv2d(x, weight, stride=down, groups=C)


def upsample2d(x: torch.Tensor, f: torch.Tensor, up: int = 2) -> torch.Tensor:
    """Upsample by ``up``: insert zeros, low-pass with ``f`` (gain up**2 keeps a constant image).

    Args:
        x: [B, C, H, W].
        f: [T, T] filter with T - up even (e.g. 4 taps for up=2).
    Returns:
        [B, C, H * up, W * up].
    """
    C, T = x.shape[1], f.shape[0]
    assert (T - up) % 2 == 0, f"filter length {T} and factor {up} must have equal parity"
    # conv_transpose2d is the full convolution of the zero-inserted input with the (unflipped)
    # filter; its padding crops the centred window of H * up pixels.
    weight = (f * up**2).to(x.dtype)[None, None].expand(C, 1, T, T)  # [C, 1, T, T]
    return F.conv_transpose2d(x, weight, stride=up, padding=(T - up) // 2, groups=C)


def downsample2d(x: torch.Tensor, f: torch.Tensor, down: int = 2) -> torch.Tensor:
    """Low-pass with ``f``, then keep every ``down``-th pixel.

    Args:
        x: [B, C, H, W] with H, W divisible by ``down``.
        f: [T, T] filter with T - down even.
    Returns:
        [B, C, H // down, W // down].
    """
    T = f.shape[0]
    assert (T - down) % 2 == 0, f"filter length {T} and factor {down} must have equal parity"
    return filter2d(x, f, padding=(T - down) // 2, down=down)


def conv2d_resample(x: torch.Tensor, weight: torch.Tensor, f: torch.Tensor | None = None,
                    up: int = 1, down: int = 1, groups: int = 1) -> torch.Tensor:
    """'Same' 2D convolution (cross-correlation, like ``F.conv2d``) fused with 2x resampling.

    ``up=2`` equals upsampling by zero insertion, convolving with ``weight`` and low-passing
    with ``f`` (any order, since the whole chain is one full convolution of which the centred
    window is kept); ``down=2`` low-passes, convolves and keeps every second pixel. The fast
    forms are a strided transposed conv (4x fewer MACs than convolving the upsampled image)
    and a strided conv.

    Args:
        x: [B, I, H, W] input (I = groups * weight.shape[1]).
        weight: [O, I // groups, k, k] kernel, k odd.
        f: [T, T] FIR filter with T even; needed when ``up`` or ``down`` is 2.
        up: 1 or 2.
        down: 1 or 2 (not both up and down).
        groups: as in ``F.conv2d``.
    Returns:
        [B, O, H * up // down, W * up // down].
    """
    O, Ig, k, _ = weight.shape
    assert k % 2 == 1 and up in (1, 2) and down in (1, 2) and not (up > 1 and down > 1)
    if up == 1 and down == 1:
        return F.conv2d(x, weight, padding=k // 2, groups=groups)
    T = f.shape[0]
    assert T % 2 == 0, f"resampling filter needs an even number of taps, got {T}"
    crop = (k + T - 3) // 2  # pixels each side beyond the centred window of the full result
    if down == 2:
        x = filter2d(x, f, padding=crop)  # [B, I, H + k - 2, W + k - 2]
        return F.conv2d(x, weight, stride=2, groups=groups)
    if k == 1:  # a 1x1 conv commutes with resampling: convolve at the low resolution
        return upsample2d(F.conv2d(x, weight, groups=groups), f)
    # Correlation with w is true convolution with w flipped; conv_transpose2d wants the
    # kernel as [in, out // groups, k, k].
    wt = weight.flip([2, 3]).reshape(groups, O // groups, Ig, k, k).transpose(1, 2)
    wt = wt.reshape(groups * Ig, O // groups, k, k)
    x = F.conv_transpose2d(x, wt, stride=2, groups=groups)  # [B, O, 2H + k - 2, 2W + k - 2]
    return filter2d(x, f, padding=T - 1 - crop, gain=4.0)  # [B, O, 2H, 2W]


def bias_act(x: torch.Tensor, b: torch.Tensor | None, act: str = "linear", gain: float = 1.0,
             clamp: float | None = None) -> torch.Tensor:
    """Add a per-channel bias, apply an activation with its gain (times ``gain``), clamp.

    Args:
        x: [B, C] or [B, C, H, W].
        b: [C] bias or None.
        act: a key of ``ACTIVATIONS``.
        gain: extra multiplier (e.g. sqrt(0.5) for residual branches).
        clamp: clamp the result to [-clamp, clamp]; None: no clamp.
    """
    fn, act_gain = ACTIVATIONS[act]
    if b is not None:
        x = x + b.to(x.dtype).reshape([1, -1] + [1] * (x.ndim - 2))
    x = fn(x)
    g = act_gain * gain
    if g != 1:
        x = x * g
    if clamp is not None:
        x = x.clamp(-clamp, clamp)
    return x


class FullyConnected(nn.Module):
    """Dense layer with equalised learning rate: y = act(x @ (W * lr_mul / sqrt(in)).T + b * lr_mul)."""

    def __init__(self,
                 in_features: int,       # input size
                 out_features: int,      # output size
                 bias: bool = True,      # learn a bias
                 activation: str = "linear",  # key of ACTIVATIONS
                 lr_mul: float = 1.0,    # learning-rate multiplier (0.01 in the mapping network)
                 bias_init: float = 0.0,  # initial bias (1 for style affines: styles start at 1)
                 ):
        super().__init__()
        assert activation in ACTIVATIONS, activation
        self.in_features, self.out_features, self.activation = in_features, out_features, activation
        self.weight = nn.Parameter(torch.randn([out_features, in_features]) / lr_mul)
        self.bias = nn.Parameter(torch.full([out_features], float(bias_init) / lr_mul)) if bias else None
        self.weight_gain = lr_mul / math.sqrt(in_features)
        self.bias_gain = lr_mul

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, in] -> [B, out]
        w = self.weight * self.weight_gain
        b = self.bias * self.bias_gain if self.bias is not None else None
        if self.activation == "linear":
            return F.linear(x, w, b)
        return bias_act(F.linear(x, w), b, self.activation)

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, act={self.activation}"


class Conv2dLayer(nn.Module):
    """'Same' conv with equalised learning rate, optional 2x FIR resampling, bias and activation."""

    def __init__(self,
                 in_channels: int,       # input feature maps
                 out_channels: int,      # output feature maps
                 kernel_size: int,       # odd kernel width
                 bias: bool = True,      # learn a bias
                 activation: str = "linear",  # key of ACTIVATIONS
                 up: int = 1,            # 2: upsample the output
                 down: int = 1,          # 2: downsample the output
                 resample_filter: Sequence[float] = (1, 3, 3, 1),  # 1D FIR taps
                 conv_clamp: float | None = None,  # clamp outputs to +-conv_clamp; None: off
                 ):
        super().__init__()
        assert activation in ACTIVATIONS, activation
        self.activation, self.up, self.down, self.conv_clamp = activation, up, down, conv_clamp
        self.register_buffer("resample_filter", setup_filter(resample_filter), persistent=False)
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, kernel_size, kernel_size]))
        self.bias = nn.Parameter(torch.zeros([out_channels])) if bias else None
        self.weight_gain = 1.0 / math.sqrt(in_channels * kernel_size * kernel_size)

    def forward(self, x: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
        # [B, I, H, W] -> [B, O, H * up // down, W * up // down]
        w = self.weight * self.weight_gain
        x = conv2d_resample(x, w.to(x.dtype), self.resample_filter, up=self.up, down=self.down)
        return bias_act(x, self.bias, self.activation, gain=gain, clamp=self.conv_clamp)

    def extra_repr(self) -> str:
        O, I, k, _ = self.weight.shape
        return f"in={I}, out={O}, k={k}, act={self.activation}, up={self.up}, down={self.down}"


def demod_coefficients(weight: torch.Tensor, styles: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """1 / ||w'||: the L2 norm over (in, kh, kw) of the modulated weight, for every sample.

    Args:
        weight: [O, I, k, k]; styles: [B, I].
    Returns:
        [B, O] in float32 or wider (also under autocast: a bf16 norm would be off by ~1%).
    """
    dtype = torch.promote_types(weight.dtype, torch.float32)
    with torch.autocast(device_type=weight.device.type, enabled=False):
        w2 = weight.to(dtype).square().sum(dim=[2, 3])  # [O, I]
        return (styles.to(dtype).square() @ w2.t() + eps).rsqrt()  # [B, O]


def modulated_conv2d(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor,
                     demodulate: bool = True, up: int = 1, f: torch.Tensor | None = None,
                     fused: bool = False, eps: float = 1e-8) -> torch.Tensor:
    """StyleGAN2 modulated convolution: per sample b, w'_b = w * s_b (scaling input channels),
    optionally demodulated w''_b = w'_b / ||w'_b|| (per output channel), then a 'same' conv.

    Two equivalent forms: ``fused=True`` builds the B kernels and runs one grouped conv;
    ``fused=False`` scales the activations by s_b, runs a normal batched conv with the shared
    kernel and scales the output by the demodulation coefficients (faster for large batches,
    and channels_last friendly).

    Args:
        x: [B, I, H, W] input.
        weight: [O, I, k, k] kernel (already scaled by any weight gain).
        styles: [B, I] per-sample input-channel scales.
        demodulate: normalise each output channel's kernel to unit L2 norm.
        up: 1 or 2 (2x upsampling fused into the conv, see :func:`conv2d_resample`).
        f: [T, T] FIR filter, needed for up=2.
        fused: grouped-conv form (see above).
        eps: added to the squared norm before the inverse square root.
    Returns:
        [B, O, H * up, W * up].
    """
    B, I, H, W = x.shape
    O, _, k, _ = weight.shape
    assert weight.shape[1] == I and styles.shape == (B, I), (
        f"modulated_conv2d: x {tuple(x.shape)}, weight {tuple(weight.shape)}, styles {tuple(styles.shape)}")
    dcoefs = demod_coefficients(weight, styles, eps) if demodulate else None  # [B, O]
    if not fused:
        x = x * styles.to(x.dtype)[:, :, None, None]
        x = conv2d_resample(x, weight.to(x.dtype), f, up=up)
        return x * dcoefs.to(x.dtype)[:, :, None, None] if demodulate else x
    w = weight[None] * styles[:, None, :, None, None]  # [B, O, I, k, k]
    if demodulate:
        w = w * dcoefs[:, :, None, None, None]
    x = x.reshape(1, B * I, H, W)
    x = conv2d_resample(x, w.reshape(B * O, I, k, k).to(x.dtype), f, up=up, groups=B)
    return x.reshape(B, O, *x.shape[2:])


def modulated_conv2d_reference(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor,
                               demodulate: bool = True, up: int = 1, f: torch.Tensor | None = None,
                               eps: float = 1e-8) -> torch.Tensor:
    """Test oracle for :func:`modulated_conv2d`: a loop over samples, written the slow obvious way.

    Upsampling is spelled out in the other order from the fast path: zero insertion, full FIR
    convolution, full cross-correlation with the sample's kernel, then the centred window.
    """
    outs = []
    for b in range(x.shape[0]):
        w = weight * styles[b][None, :, None, None]  # modulate: [O, I, k, k]
        if demodulate:
            w = w / (w.square().sum(dim=[1, 2, 3], keepdim=True) + eps).sqrt()
        xb = x[b:b + 1]  # [1, I, H, W]
        k = w.shape[-1]
        if up == 1:
            outs.append(F.conv2d(xb, w, padding=k // 2))
            continue
        H, W = xb.shape[2:]
        z = xb.new_zeros([1, xb.shape[1], 2 * H - 1, 2 * W - 1])
        z[:, :, ::2, ::2] = xb  # zero insertion
        T = f.shape[0]
        y = filter2d(z, f, padding=T - 1, gain=4.0)  # full FIR: [1, I, 2H + T - 2, ...]
        y = F.conv2d(y, w, padding=k - 1)  # full correlation: [1, O, 2H + k + T - 3, ...]
        c = (k + T - 3) // 2
        outs.append(y[:, :, c:c + 2 * H, c:c + 2 * W])
    return torch.cat(outs)

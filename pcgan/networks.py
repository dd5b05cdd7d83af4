"""StyleGAN2 (config F) generator and discriminator for XYZRGB grids, in pure PyTorch.

Written from Karras et al. 2019, "Analyzing and Improving the Image Quality of StyleGAN":

* Generator = mapping network (z -> w, 8 dense layers at lr x 0.01, tracked ``w_avg`` for
  truncation) + skip-architecture synthesis network: a learned 4x4 constant, two modulated 3x3
  convs per resolution (the first upsamples 2x with a [1, 3, 3, 1] FIR filter), per-pixel
  noise with a learned strength (initially 0), and a ``ToXYZRGB`` layer per resolution (1x1
  modulated conv without demodulation) whose outputs are upsampled and summed. The output has
  one channel per grid channel (x y z r g b [mask]); no final tanh.
* Discriminator = residual architecture: ``FromXYZRGB`` at full resolution (reading the grid and,
  with ``normals_pixel_size``, its surface normals from z), blocks of two 3x3
  convs (the second downsamples) plus a 1x1 downsampling skip, summed with gain 1/sqrt(2);
  then minibatch standard deviation, a 3x3 conv and two dense layers. Optional conditioning
  by projection (Miyato & Koyama 2018): the logit is <features, embed(c)>.

The synthesis network always takes one style per layer, ws: [B, L, w_dim] (W+), so style
mixing, per-layer truncation and inversion into W+ need no special path. Styles are indexed as
in the paper: block 4 uses ws[0] (conv) and ws[1] (ToXYZRGB); block r > 4 uses three
consecutive ws starting where the previous block's ToXYZRGB style was, so L = 2 log2(R) - 2.

Mixed precision: the convs run in whatever ``torch.autocast`` picks (bf16 is fine: no fp16
tricks), while the mapping network, the ToXYZRGB layers and the summed output grid stay in
float32, because the output's XYZ is geometry and bf16 would quantise it to ~0.4%.
"""

from __future__ import annotations

import logging
import math
from typing import Sequence

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from pcgan.errors import PcganError
from pcgan.grid import DEFAULT_CHANNELS, MASK, MASK_THRESHOLD, Camera, GridMeta, empty_grid, neighbour_difference
from pcgan.ops import (Conv2dLayer, FullyConnected, bias_act, modulated_conv2d, setup_filter,
                       upsample2d)

log = logging.getLogger(__name__)

NOISE_MODES = ("random", "const", "none")  # random: fresh N(0,1); const: fixed buffer; none: off
MIN_RESOLUTION, MAX_RESOLUTION = 8, 1024


# ----------------------------------------------------------------------------------------------
# Helpers


def channels_at(resolution: int, channel_base: int, channel_max: int) -> int:
    """Feature maps at a resolution: min(channel_base // resolution, channel_max), at least 1."""
    return max(1, min(channel_base // resolution, channel_max))


def check_resolution(resolution: int, what: str = "resolution") -> None:
    """Raise PcganError unless ``resolution`` is a power of two in [8, 1024]."""
    ok = isinstance(resolution, int) and MIN_RESOLUTION <= resolution <= MAX_RESOLUTION
    if not ok or resolution & (resolution - 1):
        raise PcganError(f"{what} must be a power of two from {MIN_RESOLUTION} to {MAX_RESOLUTION}, "
                         f"got {resolution!r}")


def check_shape(x: torch.Tensor, expected: Sequence[int | None], name: str) -> None:
    """Raise PcganError naming the first dimension of ``x`` that differs (None: any size)."""
    if x.ndim != len(expected):
        raise PcganError(f"{name} must have {len(expected)} dims {list(expected)}, got shape {list(x.shape)}")
    for i, (got, want) in enumerate(zip(x.shape, expected)):
        if want is not None and got != want:
            raise PcganError(f"{name} dim {i} must be {want}, got shape {list(x.shape)}")


def _float32(x: torch.Tensor):
    """Context that turns autocast off, so the enclosed ops run in float32."""
    return torch.autocast(device_type=x.device.type, enabled=False)


def normalize_2nd_moment(x: torch.Tensor, dim: int = 1, eps: float = 1e-8) -> torch.Tensor:
    """Scale each vector so that the mean of its squares is 1 (z and class embeddings)."""
    return x * (x.square().mean(dim=dim, keepdim=True) + eps).rsqrt()


def _seeded_generator(seed: int) -> torch.Generator:
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
        raise PcganError(f"seeds must be integers in [0, 2**63), got {seed!r}")
    return torch.Generator().manual_seed(seed)


def z_from_seeds(seeds: Sequence[int], z_dim: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """Latents from seeds, one seeded CPU generator per seed: seed s is the same z in any batch.

    Returns:
        [B, z_dim] float32 on ``device``, row b = N(0, 1) draws of seed ``seeds[b]``.
    """
    z = [torch.randn([z_dim], generator=_seeded_generator(int(s))) for s in seeds]
    return torch.stack(z).to(device)


def truncate(ws: torch.Tensor, w_avg: torch.Tensor, psi: float = 1.0, cutoff: int | None = None) -> torch.Tensor:
    """The truncation trick in W+: w_avg + psi (w - w_avg) for layers < cutoff (all if None).

    Args:
        ws: [B, L, w_dim]; w_avg: [w_dim].
    Returns:
        [B, L, w_dim]; ``ws`` itself when psi == 1.
    """
    if psi == 1:
        return ws
    w_avg = w_avg.to(ws.dtype)
    if cutoff is None:
        return w_avg + psi * (ws - w_avg)
    head = w_avg + psi * (ws[:, :cutoff] - w_avg)
    return torch.cat([head, ws[:, cutoff:]], dim=1)


def style_mix(ws_a: torch.Tensor, ws_b: torch.Tensor, crossover: int | torch.Tensor) -> torch.Tensor:
    """Style mixing: layers < crossover from ``ws_a``, layers >= crossover from ``ws_b``.

    Crossover 0 gives ``ws_b``; crossover L gives ``ws_a``. For more than two sources, chain
    calls with increasing crossovers: style_mix(style_mix(a, b, 4), c, 8).

    Args:
        ws_a, ws_b: [B, L, w_dim].
        crossover: a layer index, or [B] int tensor of per-sample crossovers (training's mixing
            regularisation draws one per sample).
    Returns:
        [B, L, w_dim].
    """
    if ws_a.shape != ws_b.shape:
        raise PcganError(f"style_mix: ws shapes differ: {list(ws_a.shape)} vs {list(ws_b.shape)}")
    layer = torch.arange(ws_a.shape[1], device=ws_a.device)  # [L]
    cross = torch.as_tensor(crossover, device=ws_a.device).reshape(-1, 1)  # [1 or B, 1]
    return torch.where((layer[None] < cross)[:, :, None], ws_a, ws_b)


def flops_per_image(module: nn.Module, *inputs, **kwargs) -> float:
    """Forward FLOPs per image of ``module(*inputs, **kwargs)``, counted by torch's FlopCounterMode.

    Counts matmuls and convolutions (2 FLOPs per multiply-add); a forward+backward costs about
    3x this. The batch size is the first dimension of the first tensor input.
    """
    batch = next(t.shape[0] for t in inputs if isinstance(t, torch.Tensor))
    # (Under no_grad the counter's module tracker rejects views of parameters passed between
    # modules, hence the const input is repeated rather than expanded.)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        module(*inputs, **kwargs)
    return counter.get_total_flops() / batch


# ----------------------------------------------------------------------------------------------
# Mapping network


class MappingNetwork(nn.Module):
    """z [B, z_dim] (+ condition c [B, c_dim]) -> w, broadcast to [B, num_ws, w_dim]."""

    def __init__(self,
                 z_dim: int,               # latent size; 0: condition only (discriminator's c map)
                 c_dim: int,               # condition size; 0: unconditional
                 w_dim: int,               # output size
                 num_ws: int | None,       # styles to broadcast to; None: return [B, w_dim]
                 num_layers: int = 8,      # dense layers
                 lr_mul: float = 0.01,     # learning-rate multiplier of those layers
                 w_avg_beta: float | None = 0.995,  # decay of the tracked w_avg; None: no w_avg
                 ):
        super().__init__()
        assert z_dim > 0 or c_dim > 0, "the mapping network needs z or c"
        self.z_dim, self.c_dim, self.w_dim, self.num_ws = z_dim, c_dim, w_dim, num_ws
        self.w_avg_beta = w_avg_beta
        self.embed = FullyConnected(c_dim, w_dim) if c_dim > 0 else None
        sizes = [z_dim + (w_dim if c_dim > 0 else 0)] + [w_dim] * num_layers
        self.layers = nn.ModuleList(FullyConnected(sizes[i], sizes[i + 1], activation="lrelu", lr_mul=lr_mul)
                                    for i in range(num_layers))
        if w_avg_beta is not None:
            self.register_buffer("w_avg", torch.zeros([w_dim]))

    def forward(self, z: torch.Tensor | None, c: torch.Tensor | None = None, truncation_psi: float = 1.0,
                truncation_cutoff: int | None = None, update_emas: bool = False) -> torch.Tensor:
        # z: [B, z_dim], c: [B, c_dim] -> ws: [B, num_ws, w_dim] (or [B, w_dim] if num_ws is None)
        parts = []
        if self.z_dim > 0:
            check_shape(z, [None, self.z_dim], "z")
            parts.append(normalize_2nd_moment(z.float()))
        if self.c_dim > 0:
            if c is None:
                raise PcganError(f"this network is conditional: pass c of shape [B, {self.c_dim}]")
            check_shape(c, [None, self.c_dim], "c")
            with _float32(c):
                parts.append(normalize_2nd_moment(self.embed(c.float())))
        with _float32(parts[0]):  # <1% of the FLOPs, and lr_mul 0.01 layers are precision-sensitive
            x = parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)
            for layer in self.layers:
                x = layer(x)  # [B, w_dim]
            if update_emas and self.w_avg_beta is not None:
                self.w_avg.copy_(x.detach().mean(dim=0).lerp(self.w_avg, self.w_avg_beta))
            if self.num_ws is None:
                return x
            ws = x.unsqueeze(1).repeat(1, self.num_ws, 1)  # [B, num_ws, w_dim]
            if truncation_psi != 1:
                assert self.w_avg_beta is not None, "truncation needs a tracked w_avg"
                ws = truncate(ws, self.w_avg, truncation_psi, truncation_cutoff)
        return ws

    def extra_repr(self) -> str:
        return f"z_dim={self.z_dim}, c_dim={self.c_dim}, w_dim={self.w_dim}, num_ws={self.num_ws}"


# ----------------------------------------------------------------------------------------------
# Synthesis network


class SynthesisLayer(nn.Module):
    """Modulated + demodulated 3x3 conv (optionally 2x upsampling), noise, bias, leaky ReLU."""

    def __init__(self,
                 in_channels: int,         # input feature maps
                 out_channels: int,        # output feature maps
                 w_dim: int,               # style vector size
                 resolution: int,          # output resolution (size of the const noise map)
                 up: int = 1,              # 2: upsample 2x inside the conv
                 kernel_size: int = 3,     # conv width
                 resample_filter: Sequence[float] = (1, 3, 3, 1),  # 1D FIR taps for upsampling
                 conv_clamp: float | None = None,  # clamp outputs to +-conv_clamp; None: off
                 fused_modconv: bool = False,      # grouped-conv form of modulated_conv2d
                 ):
        super().__init__()
        self.resolution, self.up, self.conv_clamp, self.fused_modconv = resolution, up, conv_clamp, fused_modconv
        self.affine = FullyConnected(w_dim, in_channels, bias_init=1.0)  # styles start near 1
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, kernel_size, kernel_size]))
        self.weight_gain = 1.0 / math.sqrt(in_channels * kernel_size * kernel_size)
        self.bias = nn.Parameter(torch.zeros([out_channels]))
        self.noise_strength = nn.Parameter(torch.zeros([]))  # starts with no noise
        self.register_buffer("noise_const", torch.randn([resolution, resolution]))
        self.register_buffer("resample_filter", setup_filter(resample_filter), persistent=False)

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise_mode: str = "random",
                noise: torch.Tensor | None = None) -> torch.Tensor:
        # x: [B, I, H, W], w: [B, w_dim], noise: [B, 1, H*up, W*up] or None
        # -> [B, O, H*up, W*up]
        styles = self.affine(w)  # [B, I]
        x = modulated_conv2d(x, self.weight * self.weight_gain, styles, demodulate=True, up=self.up,
                             f=self.resample_filter, fused=self.fused_modconv)
        if noise is not None:
            x = x + noise.to(x.dtype) * self.noise_strength.to(x.dtype)
        elif noise_mode == "random":
            B, _, H, W = x.shape
            x = x + torch.randn([B, 1, H, W], device=x.device, dtype=x.dtype) * self.noise_strength.to(x.dtype)
        elif noise_mode == "const":
            x = x + (self.noise_const * self.noise_strength).to(x.dtype)
        return bias_act(x, self.bias, "lrelu", clamp=self.conv_clamp)

    def extra_repr(self) -> str:
        O, I, k, _ = self.weight.shape
        return f"in={I}, out={O}, k={k}, resolution={self.resolution}, up={self.up}"


class ToXYZRGB(nn.Module):
    """1x1 modulated conv without demodulation: features -> all grid channels (in float32)."""

    def __init__(self,
                 in_channels: int,         # input feature maps
                 out_channels: int,        # grid channels (x y z r g b [mask])
                 w_dim: int,               # style vector size
                 conv_clamp: float | None = None,  # clamp outputs to +-conv_clamp; None: off
                 fused_modconv: bool = False,      # grouped-conv form of modulated_conv2d
                 ):
        super().__init__()
        self.conv_clamp, self.fused_modconv = conv_clamp, fused_modconv
        self.affine = FullyConnected(w_dim, in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, 1, 1]))
        self.bias = nn.Parameter(torch.zeros([out_channels]))
        # Without demodulation the equalised-lr gain matters; folded into the styles.
        self.weight_gain = 1.0 / math.sqrt(in_channels)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        # x: [B, I, H, W], w: [B, w_dim] -> [B, C, H, W] float32
        with _float32(x):
            styles = self.affine(w.float()) * self.weight_gain  # [B, I]
            y = modulated_conv2d(x.float(), self.weight, styles, demodulate=False, fused=self.fused_modconv)
            return bias_act(y, self.bias, "linear", clamp=self.conv_clamp)


class SynthesisBlock(nn.Module):
    """One resolution of the skip generator: [const | 2x-up conv0], conv1, ToXYZRGB, image skip."""

    def __init__(self,
                 in_channels: int,         # feature maps coming in; 0: first block (learned const)
                 out_channels: int,        # feature maps at this resolution
                 w_dim: int,               # style vector size
                 resolution: int,          # this block's output resolution
                 img_channels: int,        # grid channels
                 resample_filter: Sequence[float] = (1, 3, 3, 1),  # 1D FIR taps
                 conv_clamp: float | None = None,  # clamp conv outputs; None: off
                 fused_modconv: bool = False,      # grouped-conv form of modulated_conv2d
                 ):
        super().__init__()
        self.in_channels, self.out_channels, self.resolution = in_channels, out_channels, resolution
        self.img_channels = img_channels
        layer_kwargs = dict(w_dim=w_dim, resolution=resolution, resample_filter=resample_filter,
                            conv_clamp=conv_clamp, fused_modconv=fused_modconv)
        if in_channels == 0:
            self.const = nn.Parameter(torch.randn([out_channels, resolution, resolution]))
        else:
            self.conv0 = SynthesisLayer(in_channels, out_channels, up=2, **layer_kwargs)
        self.conv1 = SynthesisLayer(out_channels, out_channels, **layer_kwargs)
        self.torgb = ToXYZRGB(out_channels, img_channels, w_dim, conv_clamp=conv_clamp, fused_modconv=fused_modconv)
        self.register_buffer("resample_filter", setup_filter(resample_filter), persistent=False)
        self.num_conv = 1 if in_channels == 0 else 2
        self.num_torgb = 1

    def forward(self, x: torch.Tensor | None, img: torch.Tensor | None, ws: torch.Tensor,
                noise_mode: str = "random", noise: Sequence[torch.Tensor] | None = None):
        # x: [B, in, R/2, R/2] or None (first block), img: [B, C, R/2, R/2] float32 or None,
        # ws: [B, num_conv + 1, w_dim], noise: num_conv maps [B, 1, R, R] or None
        # -> x: [B, out, R, R], img: [B, C, R, R] float32
        B = ws.shape[0]
        w = ws.unbind(dim=1)
        noise = [None] * self.num_conv if noise is None else list(noise)
        if self.in_channels == 0:
            x = self.const.unsqueeze(0).repeat(B, 1, 1, 1)  # [B, out, 4, 4] (a copy, not a view: see flops_per_image)
            x = self.conv1(x, w[0], noise_mode, noise[0])
        else:
            R2 = self.resolution // 2
            assert x.shape[1:] == (self.in_channels, R2, R2), f"block {self.resolution}: x {tuple(x.shape)}"
            x = self.conv0(x, w[0], noise_mode, noise[0])
            x = self.conv1(x, w[1], noise_mode, noise[1])
        y = self.torgb(x, w[self.num_conv])  # [B, C, R, R] float32
        if img is None:
            return x, y
        with _float32(img):
            img = upsample2d(img.float(), self.resample_filter)  # [B, C, R, R]
        return x, img + y

    def extra_repr(self) -> str:
        return f"resolution={self.resolution}, in={self.in_channels}, out={self.out_channels}"


class SynthesisNetwork(nn.Module):
    """ws [B, num_ws, w_dim] -> grid [B, img_channels, resolution, resolution]."""

    def __init__(self,
                 w_dim: int,               # style vector size
                 resolution: int,          # output resolution, a power of two in [8, 1024]
                 img_channels: int,        # grid channels
                 channel_base: int = 32768,  # feature maps at resolution r: min(base // r, max)
                 channel_max: int = 512,   # cap on feature maps
                 resample_filter: Sequence[float] = (1, 3, 3, 1),  # 1D FIR taps
                 conv_clamp: float | None = None,  # clamp conv outputs; None: off
                 fused_modconv: bool = False,      # grouped-conv form of modulated_conv2d
                 camera: dict | None = None,       # the grids' camera: x, y follow from z along its rays
                 background: dict | None = None,   # composite over the empty pixels' values (see below)
                 mask_tanh: float = 0.0,           # mask channel = tanh(mask_tanh * m); 0: linear (see below)
                 ):
        super().__init__()
        check_resolution(resolution)
        self.w_dim, self.resolution, self.img_channels = w_dim, resolution, img_channels
        if not mask_tanh >= 0 or (mask_tanh > 0 and img_channels != len(DEFAULT_CHANNELS)):   # NaN fails too
            raise PcganError(f"Generator: mask_tanh={mask_tanh} must be >= 0, and 0 for grids without a mask "
                             f"channel ({img_channels} channels; a mask needs {' '.join(DEFAULT_CHANNELS)})")
        self.mask_tanh = float(mask_tanh)
        self.on_rays = camera is not None
        if self.on_rays:
            self._register_rays(camera, resolution, img_channels)
        self.composite = background is not None
        if self.composite:
            self._register_background(background, resolution, img_channels)
        self.block_resolutions = [2**i for i in range(2, int(math.log2(resolution)) + 1)]
        self.blocks = nn.ModuleList()
        self.ws_slices: list[tuple[int, int]] = []     # (first style, count) per block
        self.noise_slices: list[tuple[int, int]] = []  # (first noise map, count) per block
        self.noise_resolutions: list[int] = []         # side of each noise map, in layer order
        num_ws = num_noise = 0
        for res in self.block_resolutions:
            in_ch = 0 if res == 4 else channels_at(res // 2, channel_base, channel_max)
            block = SynthesisBlock(in_ch, channels_at(res, channel_base, channel_max), w_dim, res, img_channels,
                                   resample_filter, conv_clamp, fused_modconv)
            self.blocks.append(block)
            self.ws_slices.append((num_ws, block.num_conv + block.num_torgb))
            self.noise_slices.append((num_noise, block.num_conv))
            self.noise_resolutions += [res] * block.num_conv
            num_ws += block.num_conv  # the next block's first conv shares this block's ToXYZRGB style
            num_noise += block.num_conv
        self.num_ws = num_ws + 1

    def forward(self, ws: torch.Tensor, noise_mode: str = "random",
                noise: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
        """Synthesise grids from per-layer styles.

        Args:
            ws: [B, num_ws, w_dim] styles (W+).
            noise_mode: "random" (fresh N(0, 1) maps), "const" (fixed per-layer maps stored in
                the network), "none" (no noise).
            noise: optional explicit noise maps, one [B, 1, r, r] per layer in
                ``noise_resolutions`` order (e.g. from ``Generator.noise_from_seeds``); they
                override ``noise_mode``.
        Returns:
            [B, img_channels, resolution, resolution] float32 grid.
        """
        check_shape(ws, [None, self.num_ws, self.w_dim], "ws")
        if noise_mode not in NOISE_MODES:
            raise PcganError(f"noise_mode must be one of {', '.join(NOISE_MODES)}, got {noise_mode!r}")
        if noise is not None and len(noise) != len(self.noise_resolutions):
            raise PcganError(f"noise must hold {len(self.noise_resolutions)} maps, got {len(noise)}")
        x = img = None
        for block, (w0, nw), (n0, nn_) in zip(self.blocks, self.ws_slices, self.noise_slices):
            block_noise = None if noise is None else noise[n0:n0 + nn_]
            x, img = block(x, img, ws.narrow(1, w0, nw), noise_mode, block_noise)
        img = self.squash_mask(img) if self.mask_tanh else img
        img = self.place_on_rays(img) if self.on_rays else img
        return self.composite_background(img) if self.composite else img

    def _register_background(self, background: dict, resolution: int, img_channels: int) -> None:
        if img_channels != len(DEFAULT_CHANNELS):
            raise PcganError(f"Generator: background given, but {img_channels} channels hold no mask "
                             f"(compositing needs {' '.join(DEFAULT_CHANNELS)})")
        meta = GridMeta(resolution, camera=Camera.from_dict(background["camera"]),
                        sheet_z=float(background["sheet_z"]), background_rgb=tuple(background["rgb"]))
        empty = torch.from_numpy(empty_grid(meta)[:MASK.start])                # [6, H, W] as preprocess writes it
        self.register_buffer("empty_pixel", empty, persistent=False)

    def composite_background(self, img: torch.Tensor) -> torch.Tensor:
        """Give the pixels the generated mask leaves empty (mask <= 0) the empty pixels' point on
        the background sheet and colour, exactly as in a real grid. G then draws a surface and a
        silhouette instead of a depth field that must fall steeply to the sheet at the edge of the
        head, which a convolutional generator does only smoothly (rim points strewn between face
        and sheet). No gradient reaches G's x y z r g b where the mask says empty; the mask
        channel itself is passed through."""
        surface = img[:, MASK] > MASK_THRESHOLD                                 # [B, 1, H, W]
        body = torch.where(surface, img[:, :MASK.start], self.empty_pixel.to(img.dtype))
        return torch.cat([body, img[:, MASK]], dim=1)

    def squash_mask(self, img: torch.Tensor) -> torch.Tensor:
        """Pass the mask channel through ``tanh(mask_tanh * m)``. A real grid's mask is exactly
        +1 or -1, while a convolutional generator's is a smooth field that crosses zero through
        in-between values at the silhouette: the discriminator tells the two apart by those values
        alone, and the generator spends its early training pushing them to +-1 instead of placing
        the silhouette. Squashed, most of the mask saturates from the start. Which pixels are
        surface (m > 0) does not change."""
        return torch.cat([img[:, :MASK.start], torch.tanh(self.mask_tanh * img[:, MASK])], dim=1)

    def _register_rays(self, camera: dict, resolution: int, img_channels: int) -> None:
        if img_channels < 3:
            raise PcganError(f"Generator: camera given, but {img_channels} channels hold no x y z")
        cam = Camera.from_dict(camera)
        origins, dirs = cam.rays(resolution)                                  # [H, W, 3] each, dirs z = -1
        # a pixel's point at depth z is origin + (origin_z - z) * dir: x, y are affine in z
        self.register_buffer("ray_origin", torch.from_numpy(origins[..., :2].transpose(2, 0, 1).copy()).float(),
                             persistent=False)                                # [2, H, W]
        self.register_buffer("ray_dir", torch.from_numpy(dirs[..., :2].transpose(2, 0, 1).copy()).float(),
                             persistent=False)                                # [2, H, W]
        self.ray_z0 = float(cam.distance)

    def place_on_rays(self, img: torch.Tensor) -> torch.Tensor:
        """Replace x and y by the point of each pixel's camera ray at the generated z: every
        real grid point lies on its pixel's ray (the scan's surface seen through that pixel, or
        the background sheet), so a generated one does too, and only depth is learned."""
        z = img[:, 2:3]
        xy = self.ray_origin + (self.ray_z0 - z) * self.ray_dir                  # [B, 2, H, W]
        return torch.cat([xy.to(img.dtype), z, img[:, 3:]], dim=1)

    def extra_repr(self) -> str:
        return (f"resolution={self.resolution}, img_channels={self.img_channels}, num_ws={self.num_ws}, "
                f"xyz_on_rays={self.on_rays}, composite={self.composite}, mask_tanh={self.mask_tanh:g}")


class Generator(nn.Module):
    """StyleGAN2 generator: z [B, z_dim] (+ c) -> grid [B, channels, resolution, resolution]."""

    def __init__(self,
                 z_dim: int = 512,          # latent z size
                 w_dim: int = 512,          # intermediate latent (style) size
                 c_dim: int = 0,            # condition size (e.g. one-hot class); 0: unconditional
                 resolution: int = 256,     # output grid side, a power of two in [8, 1024]
                 channels: int = 7,         # grid channels, len(meta.channels): x y z r g b [mask]
                 channel_base: int = 32768,  # feature maps at resolution r: min(base // r, max)
                 channel_max: int = 512,    # cap on feature maps
                 mapping_layers: int = 8,   # dense layers in the mapping network
                 mapping_lr_mul: float = 0.01,  # their learning-rate multiplier
                 w_avg_beta: float = 0.995,  # decay of the tracked w_avg (per update_emas call)
                 conv_clamp: float | None = None,  # clamp conv outputs to +-conv_clamp; None: off
                 resample_filter: Sequence[float] = (1, 3, 3, 1),  # 1D FIR taps for upsampling
                 fused_modconv: bool = False,  # grouped-conv modulation (same result, other speed)
                 camera: dict | None = None,  # pcgan.grid.Camera fields: x, y follow from z along its rays
                 background: dict | None = None,  # GridMeta.empty_pixel(): composite over the empty pixels
                 mask_tanh: float = 0.0,    # mask channel = tanh(mask_tanh * m), saturating like real masks; 0: linear
                 ):
        super().__init__()
        check_resolution(resolution)
        if channels < 1 or z_dim < 1 or w_dim < 1 or c_dim < 0:
            raise PcganError(f"Generator: bad sizes channels={channels} z_dim={z_dim} w_dim={w_dim} c_dim={c_dim}")
        self.init_kwargs = dict(z_dim=z_dim, w_dim=w_dim, c_dim=c_dim, resolution=resolution, channels=channels,
                                channel_base=channel_base, channel_max=channel_max, mapping_layers=mapping_layers,
                                mapping_lr_mul=float(mapping_lr_mul), w_avg_beta=float(w_avg_beta),
                                conv_clamp=None if conv_clamp is None else float(conv_clamp),
                                resample_filter=[float(t) for t in resample_filter],
                                fused_modconv=bool(fused_modconv))
        if camera is not None:        # only when set: snapshots from before the option load unchanged
            self.init_kwargs["camera"] = dict(camera)
        if background is not None:    # the same
            self.init_kwargs["background"] = dict(background)
        if mask_tanh:                 # the same
            self.init_kwargs["mask_tanh"] = float(mask_tanh)
        self.z_dim, self.w_dim, self.c_dim = z_dim, w_dim, c_dim
        self.resolution, self.img_channels = resolution, channels
        self.synthesis = SynthesisNetwork(w_dim, resolution, channels, channel_base, channel_max,
                                          resample_filter, conv_clamp, fused_modconv, camera, background, mask_tanh)
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(z_dim, c_dim, w_dim, self.num_ws, mapping_layers, mapping_lr_mul, w_avg_beta)

    def forward(self, z: torch.Tensor, c: torch.Tensor | None = None, truncation_psi: float = 1.0,
                truncation_cutoff: int | None = None, noise_mode: str = "random", update_emas: bool = False,
                noise: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
        """z [B, z_dim], c [B, c_dim] or None -> grid [B, channels, resolution, resolution] float32.

        ``truncation_psi`` / ``truncation_cutoff``: pull the first ``cutoff`` styles (all if
        None) towards w_avg (psi 0: the average face, 1: no truncation). ``update_emas``: track
        w_avg (training). ``noise_mode`` / ``noise``: see :meth:`SynthesisNetwork.forward`.
        """
        ws = self.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff,
                          update_emas=update_emas)
        return self.synthesis(ws, noise_mode=noise_mode, noise=noise)

    def noise_from_seeds(self, seeds: Sequence[int], device: torch.device | str = "cpu") -> list[torch.Tensor]:
        """Per-layer noise maps from seeds, for a reproducible ``noise_mode="random"`` face.

        Seed s's stream (a CPU torch.Generator seeded with s) first yields z (as in
        :func:`z_from_seeds`), then the noise maps in layer order, so the pair is one stream.

        Returns:
            One [B, 1, r, r] float32 tensor per layer (``synthesis.noise_resolutions``).
        """
        per_seed = []
        for s in seeds:
            g = _seeded_generator(int(s))
            torch.randn([self.z_dim], generator=g)  # skip z
            per_seed.append([torch.randn([1, r, r], generator=g) for r in self.synthesis.noise_resolutions])
        return [torch.stack(maps).to(device) for maps in zip(*per_seed)]

    def extra_repr(self) -> str:
        return f"resolution={self.resolution}, channels={self.img_channels}, num_ws={self.num_ws}"


# ----------------------------------------------------------------------------------------------
# Discriminator


class FromXYZRGB(Conv2dLayer):
    """1x1 conv + leaky ReLU from grid channels to features (first discriminator block)."""

    def __init__(self, in_channels: int, out_channels: int, conv_clamp: float | None = None):
        super().__init__(in_channels, out_channels, kernel_size=1, activation="lrelu", conv_clamp=conv_clamp)


class DiscriminatorBlock(nn.Module):
    """Residual block: (conv 3x3, conv 3x3 with 2x down) + 1x1 downsampled skip, each x 1/sqrt(2)."""

    def __init__(self,
                 in_channels: int,         # feature maps coming in; 0: first block (reads the grid)
                 tmp_channels: int,        # feature maps at this resolution
                 out_channels: int,        # feature maps after downsampling
                 resolution: int,          # this block's input resolution
                 img_channels: int,        # grid channels
                 resample_filter: Sequence[float] = (1, 3, 3, 1),  # 1D FIR taps
                 conv_clamp: float | None = None,  # clamp conv outputs; None: off
                 ):
        super().__init__()
        self.in_channels, self.resolution, self.img_channels = in_channels, resolution, img_channels
        self.fromrgb = FromXYZRGB(img_channels, tmp_channels, conv_clamp) if in_channels == 0 else None
        conv = dict(activation="lrelu", resample_filter=resample_filter, conv_clamp=conv_clamp)
        self.conv0 = Conv2dLayer(tmp_channels, tmp_channels, 3, **conv)
        self.conv1 = Conv2dLayer(tmp_channels, out_channels, 3, down=2, **conv)
        self.skip = Conv2dLayer(tmp_channels, out_channels, 1, bias=False, down=2, resample_filter=resample_filter)

    def forward(self, x: torch.Tensor | None, img: torch.Tensor) -> torch.Tensor:
        # x: [B, in, R, R] or None (first block), img: [B, C, R, R] -> [B, out, R/2, R/2]
        if self.fromrgb is not None:
            x = self.fromrgb(img)
        gain = math.sqrt(0.5)  # keeps the sum of two unit-variance branches at unit variance
        y = self.skip(x, gain=gain)
        x = self.conv1(self.conv0(x), gain=gain)
        return x + y

    def extra_repr(self) -> str:
        return f"resolution={self.resolution}, in={self.in_channels}"


class MinibatchStd(nn.Module):
    """Append the average std of features across groups of samples (Karras et al. 2018).

    Samples b, b + B/G, b + 2B/G, ... form a group of G; for each group and each of
    ``num_channels`` channel slices, the std over the group averaged over features and pixels
    becomes one constant extra feature map.
    """

    def __init__(self,
                 group_size: int | None = 4,  # samples per group (min with the batch); None: whole batch
                 num_channels: int = 1,       # extra feature maps
                 ):
        super().__init__()
        self.group_size, self.num_channels = group_size, num_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, C, H, W] -> [B, C + F, H, W]
        B, C, H, W = x.shape
        G = B if self.group_size is None else min(self.group_size, B)
        F = self.num_channels
        if B % G:
            raise PcganError(f"minibatch std: batch size {B} is not divisible by the group size {G}; "
                             f"use a batch that is a multiple of {G} (per GPU) or change mbstd group_size")
        assert C % F == 0, f"minibatch std: {C} channels do not split into {F} groups"
        y = x.float().reshape(G, B // G, F, C // F, H, W)
        y = y - y.mean(dim=0)
        y = (y.square().mean(dim=0) + 1e-8).sqrt()  # [B/G, F, C/F, H, W]
        y = y.mean(dim=[2, 3, 4])  # [B/G, F]
        y = y.reshape(B // G, F, 1, 1).repeat(G, 1, H, W)  # [B, F, H, W]
        return torch.cat([x, y.to(x.dtype)], dim=1)

    def extra_repr(self) -> str:
        return f"group_size={self.group_size}, num_channels={self.num_channels}"


class DiscriminatorEpilogue(nn.Module):
    """4x4 head: minibatch std, 3x3 conv, dense, dense -> logit (or projection onto c)."""

    def __init__(self,
                 in_channels: int,         # feature maps at 4x4
                 cmap_dim: int,            # size of the condition embedding; 0: unconditional
                 resolution: int = 4,      # input resolution
                 mbstd_group_size: int | None = 4,  # see MinibatchStd
                 mbstd_num_channels: int = 1,       # 0: no minibatch std
                 conv_clamp: float | None = None,   # clamp conv outputs; None: off
                 ):
        super().__init__()
        self.cmap_dim, self.resolution = cmap_dim, resolution
        self.mbstd = MinibatchStd(mbstd_group_size, mbstd_num_channels) if mbstd_num_channels > 0 else None
        self.conv = Conv2dLayer(in_channels + mbstd_num_channels, in_channels, 3, activation="lrelu",
                                conv_clamp=conv_clamp)
        self.fc = FullyConnected(in_channels * resolution**2, in_channels, activation="lrelu")
        self.out = FullyConnected(in_channels, cmap_dim if cmap_dim > 0 else 1)

    def forward(self, x: torch.Tensor, cmap: torch.Tensor | None = None) -> torch.Tensor:
        # x: [B, C, 4, 4], cmap: [B, cmap_dim] or None -> [B, 1] float32
        if self.mbstd is not None:
            x = self.mbstd(x)
        x = self.conv(x)
        x = self.fc(x.flatten(1))
        x = self.out(x)  # [B, cmap_dim or 1]
        if self.cmap_dim > 0:
            x = (x * cmap.to(x.dtype)).sum(dim=1, keepdim=True) * (1 / math.sqrt(self.cmap_dim))
        return x.float()


def normal_map(img: torch.Tensor, pixel_size: float, has_mask: bool) -> torch.Tensor:
    """Unit surface normals of grids from their depth: ``[B, C, H, W]`` -> ``[B, 3, H, W]``.

    The slopes dz/dx, dz/dy come from neighbouring pixels' z (central differences inside the
    surface, one-sided at its edge; ``pixel_size``: a pixel's side at z = 0) and the normal is
    ``(-dz/dx, -dz/dy, 1)`` normalised, which has no singular point, so gradients (R1's double
    backward included) stay finite. Zero off the surface (mask <= 0) when ``has_mask``."""
    z = img[:, 2:3].float()
    valid = img[:, 6:7] > 0 if has_mask else torch.ones_like(z, dtype=torch.bool)
    sx = neighbour_difference(z, valid, axis=-1) / pixel_size
    sy = -neighbour_difference(z, valid, axis=-2) / pixel_size          # image rows run toward -y
    inv = torch.rsqrt(1 + sx.square() + sy.square())
    return torch.cat([-sx * inv, -sy * inv, inv], dim=1) * valid.to(z.dtype)


def curvature_map(normals: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """How fast the surface bends, per pixel: ``[B, 3, H, W]`` unit normals (:func:`normal_map`)
    and ``[B, 1, H, W]`` bool surface mask -> ``[B, 1, H, W]``, the divergence of the normals'
    x, y parts from pixel to pixel (twice the mean curvature times a pixel's side: positive on
    a bump toward the camera, negative in a hollow, 0 on a plane and off the surface)."""
    div = neighbour_difference(normals[:, 0:1], valid, axis=-1) - neighbour_difference(normals[:, 1:2], valid, axis=-2)
    return div * valid.to(div.dtype)                                     # image rows run toward -y


class Discriminator(nn.Module):
    """Residual StyleGAN2 discriminator: grid [B, channels, R, R] (+ c) -> logits [B, 1].

    With ``normals_pixel_size`` set, the first block also reads the grid's surface normals
    (:func:`normal_map`): shading is where a rough or folded surface shows at once, while in
    z alone it is a small fraction of the channel's range. With ``curvature_gain`` too, it
    reads how fast they turn (:func:`curvature_map`, times the gain), the fine relief of lids,
    nostrils and lips that tells a generated face from a scanned one longest. With ``pack`` > 1
    it judges that many samples at once, stacked along the channels (Lin et al. 2018, PacGAN),
    so a generator that makes the same face every time is easy to tell from real faces; every
    sample of a pack gets the pack's logit."""

    def __init__(self,
                 c_dim: int = 0,            # condition size; 0: unconditional
                 resolution: int = 256,     # input grid side, a power of two in [8, 1024]
                 channels: int = 7,         # grid channels, len(meta.channels)
                 channel_base: int = 32768,  # feature maps at resolution r: min(base // r, max)
                 channel_max: int = 512,    # cap on feature maps
                 mbstd_group_size: int | None = 4,  # minibatch-std group (min with batch); None: batch
                 mbstd_num_channels: int = 1,       # minibatch-std feature maps; 0: off
                 cmap_dim: int | None = None,       # condition embedding size; None: features at 4x4
                 mapping_layers: int = 8,   # dense layers embedding c (conditional only)
                 conv_clamp: float | None = None,   # clamp conv outputs to +-conv_clamp; None: off
                 resample_filter: Sequence[float] = (1, 3, 3, 1),  # 1D FIR taps for downsampling
                 normals_pixel_size: float | None = None,  # a pixel's side at z=0: D also reads normals; None: off
                 curvature_gain: float | None = None,      # D also reads the normals' curvature times this; None: off
                 pack: int = 1,             # samples judged together (PacGAN); each gets its pack's logit
                 ):
        super().__init__()
        check_resolution(resolution)
        if channels < 1 or c_dim < 0:
            raise PcganError(f"Discriminator: bad sizes channels={channels} c_dim={c_dim}")
        if normals_pixel_size is not None and (channels < 3 or not normals_pixel_size > 0):
            raise PcganError(f"Discriminator: normals need x y z channels and a pixel size > 0 "
                             f"(channels={channels}, normals_pixel_size={normals_pixel_size})")
        if curvature_gain is not None and (normals_pixel_size is None or not curvature_gain > 0):
            raise PcganError(f"Discriminator: curvature needs the normals (normals_pixel_size) and a gain > 0 "
                             f"(curvature_gain={curvature_gain})")
        if pack < 1 or (pack > 1 and c_dim > 0):
            raise PcganError(f"Discriminator: pack={pack} must be >= 1, and 1 for a conditional model (c_dim={c_dim})")
        ch4 = channels_at(4, channel_base, channel_max)
        cmap_dim = (ch4 if cmap_dim is None else cmap_dim) if c_dim > 0 else 0
        self.init_kwargs = dict(c_dim=c_dim, resolution=resolution, channels=channels, channel_base=channel_base,
                                channel_max=channel_max, mbstd_group_size=mbstd_group_size,
                                mbstd_num_channels=mbstd_num_channels, cmap_dim=cmap_dim or None,
                                mapping_layers=mapping_layers,
                                conv_clamp=None if conv_clamp is None else float(conv_clamp),
                                resample_filter=[float(t) for t in resample_filter])
        if normals_pixel_size is not None:   # only when on, so older snapshots' init_kwargs stay the same
            self.init_kwargs["normals_pixel_size"] = float(normals_pixel_size)
        if curvature_gain is not None:
            self.init_kwargs["curvature_gain"] = float(curvature_gain)
        if pack > 1:
            self.init_kwargs["pack"] = int(pack)
        self.pack = int(pack)
        self.c_dim, self.resolution, self.img_channels, self.cmap_dim = c_dim, resolution, channels, cmap_dim
        self.normals_pixel_size, self.curvature_gain = normals_pixel_size, curvature_gain
        extra = (3 if normals_pixel_size is not None else 0) + (1 if curvature_gain is not None else 0)
        in_channels = (channels + extra) * self.pack
        self.blocks = nn.ModuleList()
        res = resolution
        while res > 4:
            self.blocks.append(DiscriminatorBlock(
                0 if res == resolution else channels_at(res, channel_base, channel_max),
                channels_at(res, channel_base, channel_max), channels_at(res // 2, channel_base, channel_max),
                res, in_channels, resample_filter, conv_clamp))
            res //= 2
        self.mapping = (MappingNetwork(0, c_dim, cmap_dim, num_ws=None, num_layers=mapping_layers, w_avg_beta=None)
                        if c_dim > 0 else None)
        self.epilogue = DiscriminatorEpilogue(ch4, cmap_dim, 4, mbstd_group_size, mbstd_num_channels, conv_clamp)

    def forward(self, img: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        """img [B, channels, R, R], c [B, c_dim] or None -> logits [B, 1] float32 (real > fake)."""
        R = self.resolution
        check_shape(img, [None, self.img_channels, R, R], "discriminator input")
        if self.normals_pixel_size is not None:
            normals = normal_map(img, self.normals_pixel_size, self.img_channels > 6)
            extra = [normals]
            if self.curvature_gain is not None:   # normals are zero exactly off the surface (n_z > 0 on it)
                extra.append(curvature_map(normals, normals[:, 2:3] > 0) * self.curvature_gain)
            img = torch.cat([img, *(e.to(img.dtype) for e in extra)], dim=1)
        if self.pack > 1:   # samples b*pack .. b*pack+pack-1 side by side as one input
            B = img.shape[0]
            if B % self.pack:
                raise PcganError(f"discriminator: batch {B} is not a multiple of its pack {self.pack}")
            img = img.reshape(B // self.pack, self.pack * img.shape[1], R, R)
        x = None
        for block in self.blocks:
            x = block(x, img)
        cmap = self.mapping(None, c) if self.mapping is not None else None
        return self.epilogue(x, cmap).repeat_interleave(self.pack, dim=0)

    def extra_repr(self) -> str:
        return (f"resolution={self.resolution}, channels={self.img_channels}, c_dim={self.c_dim}, "
                f"normals={self.normals_pixel_size is not None}, curvature_gain={self.curvature_gain}, "
                f"pack={self.pack}")

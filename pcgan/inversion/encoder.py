"""A feature-pyramid encoder from grids to W+, and its checkpoint file.

Written from Richardson et al. 2021, "Encoding in Style: a StyleGAN Encoder for Image-to-Image
Translation" (pixel2style2pixel, pSp), for XYZRGB grids:

* a residual convolutional backbone reads the grid (every channel: XYZ, RGB, mask) and
  halves the resolution per stage down to the *coarse* level;
* a feature pyramid (lateral 1x1 convs + upsampling, top-down) gives maps at three levels:
  coarse (``max(4, R/16)``), medium (2x that) and fine (4x that), at most the grid resolution;
* one small head per style (stride-2 3x3 convs down to 1x1, then a linear layer) reads the
  level of its layer's resolution: styles of the 4x4 and 8x8 blocks from the coarse map,
  16x16 and 32x32 from the medium map, the rest from the fine map (pSp's 3 / 4 / 11 split at
  1024 is this rule);
* the heads predict offsets from the generator's ``w_avg`` (``ws = w_avg + delta``), and start
  near zero, so an untrained encoder already gives the average face.

The checkpoint (``encoder.pt``, written by ``pcgan train-encoder``) is a plain dict loaded with
``torch.load(weights_only=True)``::

    schema, schema_version   "pcgan-encoder", 1
    kimg, images_seen        training progress
    encoder                  {"class": "GridEncoder", "init_kwargs": {...}, "state_dict": {...}}
    generator                {"fingerprint", "init_kwargs", "path", "kimg"} of the frozen generator
    grid_meta                the generator checkpoint's GridMeta
    options                  the training options (plain data)
    optimizer, progress      Adam state and loop counters, for resuming

An encoder only makes sense with the generator it was trained against: :func:`check_encoder`
compares :func:`generator_fingerprint` (the generator's architecture and a hash of its
weights) and names both when they differ.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import pickle
import zipfile
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from pcgan.checkpoint import build_module
from pcgan.errors import PcganError
from pcgan.fileio import atomic_path
from pcgan.grid import GridMeta
from pcgan.networks import Generator, check_shape

log = logging.getLogger(__name__)

SCHEMA = "pcgan-encoder"
SCHEMA_VERSION = 1
ENCODER_FILE = "encoder.pt"
LEVELS = ("coarse", "medium", "fine")


def style_resolutions(num_ws: int, resolution: int) -> list[int]:
    """The block resolution each style of a generator drives: ws[0] the 4x4 conv, ws[1] the 4x4
    ToXYZRGB and the 8x8 up-conv, ... (see :mod:`pcgan.networks`); the last ToXYZRGB style is
    clamped to the output resolution."""
    return [min(4 * 2 ** math.ceil(i / 2), resolution) for i in range(num_ws)]


def style_levels(num_ws: int, resolution: int) -> list[str]:
    """Pyramid level read by each style: coarse for <= 8, medium for <= 32, fine above (pSp)."""
    return ["coarse" if r <= 8 else "medium" if r <= 32 else "fine" for r in style_resolutions(num_ws, resolution)]


def level_resolutions(resolution: int) -> dict[str, int]:
    """Feature-map side of each pyramid level for a grid of side ``resolution``."""
    coarse = max(4, resolution // 16)
    return {"coarse": coarse, "medium": min(2 * coarse, resolution), "fine": min(4 * coarse, resolution)}


class _ResDown(nn.Module):
    """Two 3x3 convs (the second with stride 2) plus a pooled 1x1 skip, summed / sqrt(2)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv0 = nn.Conv2d(in_channels, in_channels, 3, padding=1)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=2, padding=1)
        self.skip = nn.Conv2d(in_channels, out_channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:   # [B, I, R, R] -> [B, O, R/2, R/2]
        y = F.leaky_relu(self.conv1(F.leaky_relu(self.conv0(x), 0.2)), 0.2)
        return (y + self.skip(F.avg_pool2d(x, 2))) * (1 / math.sqrt(2))


class _StyleHead(nn.Module):
    """Feature map [B, C, s, s] -> one style [B, w_dim]: log2(s) stride-2 convs, then linear."""

    def __init__(self, channels: int, size: int, w_dim: int, init_gain: float):
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(channels, channels, 3, stride=2, padding=1)
                                   for _ in range(int(math.log2(size))))
        self.linear = nn.Linear(channels, w_dim)
        with torch.no_grad():
            self.linear.weight.mul_(init_gain)
            self.linear.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv in self.convs:
            x = F.leaky_relu(conv(x), 0.2)
        return self.linear(x.flatten(1))


class GridEncoder(nn.Module):
    """Grids [B, C, R, R] -> styles W+ [B, num_ws, w_dim] = w_avg + predicted offsets."""

    def __init__(self,
                 resolution: int,          # grid side R (the generator's)
                 channels: int,            # grid channels (the generator's)
                 num_ws: int,              # styles L (Generator.num_ws)
                 w_dim: int,               # style size
                 width: int = 32,          # feature maps at the full resolution; doubled per stage
                 width_max: int = 256,     # cap on feature maps (also the pyramid's width)
                 init_gain: float = 0.1,   # scale of the heads' initial linear weights (small: start near w_avg)
                 ):
        super().__init__()
        if resolution < 8 or resolution & (resolution - 1):
            raise PcganError(f"encoder resolution {resolution}: must be a power of two >= 8")
        if min(channels, num_ws, w_dim, width, width_max) < 1:
            raise PcganError(f"encoder sizes must be >= 1: channels={channels} num_ws={num_ws} "
                             f"w_dim={w_dim} width={width} width_max={width_max}")
        self.init_kwargs = dict(resolution=resolution, channels=channels, num_ws=num_ws, w_dim=w_dim,
                                width=width, width_max=width_max, init_gain=float(init_gain))
        self.resolution, self.img_channels, self.num_ws, self.w_dim = resolution, channels, num_ws, w_dim
        self.levels = level_resolutions(resolution)
        ch = lambda r: min(width * (resolution // r), width_max)  # noqa: E731 - feature maps at side r

        self.stem = nn.Conv2d(channels, ch(resolution), 3, padding=1)
        self.stages = nn.ModuleList()
        r = resolution
        while r > self.levels["coarse"]:
            self.stages.append(_ResDown(ch(r), ch(r // 2)))
            r //= 2
        fpn = ch(self.levels["coarse"])
        self.fpn_channels = fpn
        self.lateral = nn.ModuleDict({lvl: nn.Conv2d(ch(self.levels[lvl]), fpn, 1) for lvl in LEVELS})
        self.style_level = style_levels(num_ws, resolution)
        self.heads = nn.ModuleList(_StyleHead(fpn, self.levels[lvl], w_dim, init_gain) for lvl in self.style_level)
        self.register_buffer("w_avg", torch.zeros([w_dim]))

    def features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """The pyramid: {level: [B, fpn_channels, side, side]}."""
        h = F.leaky_relu(self.stem(x), 0.2)
        by_res = {h.shape[-1]: h}
        for stage in self.stages:
            h = stage(h)
            by_res[h.shape[-1]] = h
        out = {"coarse": self.lateral["coarse"](by_res[self.levels["coarse"]])}
        prev = "coarse"
        for lvl in ("medium", "fine"):
            side = self.levels[lvl]
            if side == self.levels[prev]:
                out[lvl] = out[prev]
            else:
                up = F.interpolate(out[prev], size=(side, side), mode="bilinear", align_corners=False)
                out[lvl] = up + self.lateral[lvl](by_res[side])
            prev = lvl
        return out

    def forward(self, grids: torch.Tensor) -> torch.Tensor:
        # grids: [B, C, R, R] -> ws: [B, num_ws, w_dim] float32
        R = self.resolution
        check_shape(grids, [None, self.img_channels, R, R], "encoder input")
        pyramid = self.features(grids.float())
        delta = torch.stack([head(pyramid[lvl]) for head, lvl in zip(self.heads, self.style_level)], dim=1)
        return self.w_avg + delta

    def extra_repr(self) -> str:
        return (f"resolution={self.resolution}, channels={self.img_channels}, num_ws={self.num_ws}, "
                f"levels={self.levels}")


# ---------------------------------------------------------------------------------------------
# Which generator an encoder belongs to


def generator_fingerprint(G: Generator) -> str:
    """16 hex digits of sha256 over G's ``init_kwargs`` and every tensor of its state dict."""
    h = hashlib.sha256(json.dumps(G.init_kwargs, sort_keys=True).encode())
    for name, value in sorted(G.state_dict().items()):
        h.update(name.encode())
        h.update(value.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def describe_generator(init_kwargs: Mapping) -> str:
    k = init_kwargs
    return f"{k.get('channels')}x{k.get('resolution')}^2, w_dim {k.get('w_dim')}, channel_base {k.get('channel_base')}"


def check_encoder(info: Mapping, G: Generator, encoder_path: str | Path, generator_path: str | Path) -> None:
    """Raise PcganError naming both generators unless the encoder was trained for ``G``."""
    theirs = info["generator"]
    ours = generator_fingerprint(G)
    if theirs.get("fingerprint") != ours:
        raise PcganError(
            f"encoder {encoder_path} was trained for generator {theirs.get('fingerprint')} "
            f"({describe_generator(theirs.get('init_kwargs', {}))}, {theirs.get('path')}, kimg {theirs.get('kimg')}) "
            f"but {generator_path} is generator {ours} ({describe_generator(G.init_kwargs)}): "
            f"use that generator, or train an encoder for this one with `pcgan train-encoder --ckpt {generator_path}`")


# ---------------------------------------------------------------------------------------------
# Files


def encoder_record(E: GridEncoder) -> dict:
    return {"class": "GridEncoder", "init_kwargs": dict(E.init_kwargs),
            "state_dict": {k: v.detach().cpu() for k, v in E.state_dict().items()}}


def save_encoder(path: str | Path, E: GridEncoder, generator: Mapping, meta: GridMeta, options: Mapping,
                 images_seen: int, optimizer: Mapping | None = None, progress: Mapping | None = None) -> Path:
    """Write an encoder checkpoint atomically (see the module docstring for the fields).

    generator: ``{"fingerprint", "init_kwargs", "path", "kimg"}`` of the frozen generator."""
    obj = {"schema": SCHEMA, "schema_version": SCHEMA_VERSION, "kimg": images_seen / 1000.0,
           "images_seen": int(images_seen), "encoder": encoder_record(E), "generator": dict(generator),
           "grid_meta": meta.to_dict(), "options": dict(options), "optimizer": optimizer or {},
           "progress": dict(progress or {})}
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
    return path


def read_encoder_file(path: str | Path, device: torch.device | str = "cpu") -> dict:
    """``torch.load(weights_only=True)`` an encoder checkpoint (or a directory's encoder.pt)
    and check its schema. Raises PcganError naming the file."""
    path = Path(path)
    if path.is_dir():
        path = path / ENCODER_FILE
    if not path.is_file():
        raise PcganError(f"encoder {path} does not exist (make one with `pcgan train-encoder`)")
    try:
        obj = torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError:
        raise PcganError(f"{path}: not a pcgan encoder (it holds pickled Python objects that safe loading refuses)") from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise PcganError(f"{path}: cannot read as a torch checkpoint ({first[:160]})") from None
    schema = obj.get("schema") if isinstance(obj, dict) else type(obj).__name__
    if schema != SCHEMA:
        hint = " (that is a generator checkpoint: pass it as --ckpt)" if schema in (
            "pcgan-snapshot", "pcgan-training-state") else ""
        raise PcganError(f"{path}: not a pcgan encoder (schema is {schema!r}, expected {SCHEMA!r}){hint}")
    version = obj.get("schema_version")
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise PcganError(f"{path}: encoder schema_version {version!r} is newer than this pcgan understands "
                         f"({SCHEMA_VERSION}); upgrade pcgan")
    obj["path"] = str(path)
    return obj


def build_encoder(record: Mapping, path: str | Path, device: torch.device | str = "cpu") -> GridEncoder:
    """Rebuild the encoder from its checkpoint record (errors name ``path``)."""
    return build_module(record, path, "encoder", device, classes={"GridEncoder": GridEncoder})


def load_encoder(path: str | Path, device: torch.device | str = "cpu") -> tuple[GridEncoder, dict]:
    """Load an encoder for inference: (E in eval mode without gradients, the checkpoint dict
    minus tensors-heavy parts: path, kimg, generator, grid_meta, options)."""
    obj = read_encoder_file(path, device)
    E = build_encoder(obj["encoder"], obj["path"], device).eval().requires_grad_(False)
    info: dict[str, Any] = {k: obj.get(k) for k in ("path", "kimg", "images_seen", "generator", "grid_meta", "options")}
    return E, info

"""Inversion by optimisation: find the styles (and noise) whose grid matches a target.

Written from the projector described in Karras et al. 2020 ("Analyzing and Improving the Image
Quality of StyleGAN", appendix D), with the image loss replaced by the grid losses of
:mod:`pcgan.inversion.losses`:

* start from ``w_avg`` (or from an encoder's W+ output), in W (one style for every layer) or
  W+ (one style per layer, ``[B, L, w_dim]``);
* Adam; the learning rate ramps up linearly over the first ``lr_rampup`` of the steps and down
  to zero with a cosine over the last ``lr_rampdown``;
* Gaussian noise of strength ``sigma_w * w_noise * max(0, 1 - t / w_noise_ramp)^2`` is added
  to the styles at step fraction t, where ``sigma_w^2 = E ||w - w_avg||^2`` over mapped random
  z: early steps explore, late steps settle;
* optionally the per-layer noise maps are optimised too, with the autocorrelation penalty
  and a re-normalisation after every step, so they cannot carry the face.

Targets are a batch: each sample has its own styles and noise, and the loss is summed over the
batch, so B faces invert in one run as fast as the network allows.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from typing import Callable

import torch

from pcgan.errors import PcganError
from pcgan.grid import GridMeta, check_grid
from pcgan.inversion.losses import ReconstructionLoss, normalize_noise_, noise_regularization
from pcgan.networks import Generator

log = logging.getLogger(__name__)

SPACES = ("w", "w+")


@dataclasses.dataclass(frozen=True)
class ProjectOptions:
    """How :func:`project` optimises. Defaults are the StyleGAN2 projector's schedule."""

    space: str = "w+"               # "w": one style shared by all layers; "w+": one style per layer
    steps: int = 1000               # optimiser steps
    lr: float = 0.1                 # peak Adam learning rate
    lr_rampup: float = 0.05         # fraction of the steps over which lr rises linearly from 0
    lr_rampdown: float = 0.25       # fraction of the steps over which lr falls (cosine) to 0
    betas: tuple[float, float] = (0.9, 0.999)  # Adam betas
    w_noise: float = 0.05           # initial noise on the styles, in units of sigma_w; 0: none
    w_noise_ramp: float = 0.75      # fraction of the steps over which that noise decays to 0
    optimize_noise: bool = True     # also optimise the per-layer noise maps (else the fixed "const" maps)
    noise_init: str = "random"      # optimised maps start as fresh N(0, 1) ("random") or the fixed maps ("const":
                                    # then step 0 reproduces what noise_mode="const" gives, e.g. an encoder's output)
    w_std_samples: int = 10000      # random z mapped to estimate sigma_w (and w_avg if untracked)
    seed: int = 0                   # seeds the style noise, the initial noise maps and sigma_w's z
    frame_every: int = 0            # keep the reconstruction every this many steps (progress video); 0: none

    def __post_init__(self):
        if self.space not in SPACES:
            raise PcganError(f"--space {self.space!r}: use w or w+")
        if self.steps < 0:
            raise PcganError(f"steps={self.steps}: must be >= 0")
        if not self.lr > 0:
            raise PcganError(f"lr={self.lr}: must be > 0")
        if not (0 <= self.lr_rampup <= 1 and 0 <= self.lr_rampdown <= 1 and 0 < self.w_noise_ramp <= 1):
            raise PcganError("lr_rampup and lr_rampdown must be in [0, 1], w_noise_ramp in (0, 1]")
        if self.noise_init not in ("random", "const"):
            raise PcganError(f"noise_init {self.noise_init!r}: use random or const")
        if self.w_noise < 0 or self.w_std_samples < 2 or self.frame_every < 0:
            raise PcganError("w_noise must be >= 0, w_std_samples >= 2 and frame_every >= 0")


@dataclasses.dataclass
class ProjectionResult:
    ws: torch.Tensor                      # [B, L, w_dim] final styles (W+; repeated rows for "w")
    noise: list[torch.Tensor] | None      # optimised maps [B, 1, r, r] per layer; None: const noise
    grid: torch.Tensor                    # [B, C, H, W] the reconstruction from ws and noise
    losses: list[dict]                    # per step: step, lr, total and each term (batch means)
    per_sample: torch.Tensor              # [B] final reconstruction loss of each sample (noise term left out)
    frames: list[tuple[int, torch.Tensor]]  # (step, [B, C, H, W] CPU grid) every frame_every steps
    seconds: float                        # wall time of the optimisation


def learning_rate(step: int, steps: int, options: ProjectOptions) -> float:
    """The scheduled lr at ``step`` of ``steps``: linear ramp-up, cosine ramp-down."""
    t = step / max(steps, 1)
    lr = options.lr
    if options.lr_rampup > 0:
        lr *= min(1.0, t / options.lr_rampup)
    if options.lr_rampdown > 0:
        lr *= 0.5 - 0.5 * math.cos(math.pi * min(1.0, (1.0 - t) / options.lr_rampdown))
    return lr


@torch.no_grad()
def w_statistics(G: Generator, samples: int = 10000, seed: int = 0) -> tuple[torch.Tensor, float]:
    """``(w_avg [w_dim], sigma_w)``: the generator's tracked w_avg (the mean of ``samples``
    mapped z when it was never tracked, i.e. all zeros) and ``sqrt(E ||w - w_avg||^2)``."""
    device = G.mapping.w_avg.device
    gen = torch.Generator().manual_seed(seed)
    ws = []
    for s in range(0, samples, 4096):
        z = torch.randn(min(4096, samples - s), G.z_dim, generator=gen).to(device)
        ws.append(G.mapping(z, None)[:, 0].float())                       # [b, w_dim]
    w = torch.cat(ws)
    w_avg = G.mapping.w_avg.float()
    if not bool(w_avg.abs().sum() > 0):
        log.warning("the generator's w_avg was never tracked (all zeros); using the mean of %d mapped z", samples)
        w_avg = w.mean(0)
    sigma = float(((w - w_avg) ** 2).sum(1).mean().sqrt())
    return w_avg, sigma


def const_noise(G: Generator, batch: int) -> list[torch.Tensor]:
    """The generator's fixed per-layer noise maps, ``[batch, 1, r, r]`` each, in layer order."""
    maps = []
    for block in G.synthesis.blocks:
        layers = [block.conv1] if block.in_channels == 0 else [block.conv0, block.conv1]
        maps += [layer.noise_const.detach().float()[None, None].repeat(batch, 1, 1, 1) for layer in layers]
    assert [m.shape[-1] for m in maps] == list(G.synthesis.noise_resolutions)
    return maps


def check_generator(G: Generator) -> None:
    if G.c_dim > 0:
        raise PcganError(f"inversion supports unconditional generators only; this one takes a "
                         f"{G.c_dim}-dimensional condition")


def project(G: Generator, target: torch.Tensor, meta: GridMeta, loss_fn: ReconstructionLoss,
            options: ProjectOptions = ProjectOptions(), init_ws: torch.Tensor | None = None,
            target_mask: torch.Tensor | None = None,
            callback: Callable[[int, dict], None] | None = None) -> ProjectionResult:
    """Optimise styles (and noise) so that ``G.synthesis`` reproduces ``target``.

    Args:
        G: the generator (its weights are not changed; gradients flow to the styles only).
        target: [B, C, H, W] grids in G's layout (``meta``), on G's device.
        meta: the grid metadata of G's checkpoint.
        loss_fn: the reconstruction loss; its noise regularisation weight is
            ``loss_fn.weights.noise_reg``.
        options: schedule and space, see :class:`ProjectOptions`.
        init_ws: [B, L, w_dim] (or [B, w_dim]) starting styles, e.g. from an encoder; default w_avg.
            In space "w" the mean over layers is the start.
        target_mask: [B, H, W] bool pixels that count in the masked terms (default: the
            target's surface).
        callback: called after every step with (step, that step's loss row).
    Returns:
        :class:`ProjectionResult`.
    """
    check_generator(G)
    check_grid(target, meta, "target grid")
    if target.dim() != 4:
        raise PcganError(f"target must be a batch of grids [B, C, H, W], got shape {list(target.shape)}")
    B, L, D = target.shape[0], G.num_ws, G.w_dim
    device = target.device
    start_time = time.perf_counter()
    w_avg, w_std = w_statistics(G, options.w_std_samples, options.seed)
    if init_ws is None:
        start = w_avg.to(device).expand(B, L, D)
    else:
        start = init_ws.detach().float().to(device)
        if start.dim() == 2:
            start = start[:, None].expand(B, L, D)
        if tuple(start.shape) != (B, L, D):
            raise PcganError(f"initial styles have shape {list(start.shape)}, expected [{B}, {L}, {D}]")
    base = start.mean(1, keepdim=True) if options.space == "w" else start           # [B, 1 or L, D]
    ws_param = base.clone().requires_grad_(True)

    gen = torch.Generator().manual_seed(options.seed + 1)
    noise = None
    params = [ws_param]
    if options.optimize_noise:
        if options.noise_init == "const":
            noise = [n.to(device).requires_grad_(True) for n in const_noise(G, B)]
        else:
            noise = [torch.randn(B, 1, r, r, generator=gen).to(device).requires_grad_(True)
                     for r in G.synthesis.noise_resolutions]
        params += noise
    opt = torch.optim.Adam(params, lr=options.lr, betas=options.betas)

    def synthesize(ws_in: torch.Tensor) -> torch.Tensor:
        ws_full = ws_in.expand(B, L, D)
        if noise is None:
            return G.synthesis(ws_full, noise_mode="const")
        return G.synthesis(ws_full, noise=noise)

    rows: list[dict] = []
    frames: list[tuple[int, torch.Tensor]] = []
    for step in range(options.steps):
        lr = learning_rate(step, options.steps, options)
        for group in opt.param_groups:
            group["lr"] = lr
        t = step / max(options.steps, 1)
        strength = w_std * options.w_noise * max(0.0, 1.0 - t / options.w_noise_ramp) ** 2
        ws_in = ws_param
        if strength > 0:
            ws_in = ws_param + torch.randn(ws_param.shape, generator=gen).to(device) * strength
        pred = synthesize(ws_in)
        total, parts = loss_fn(pred, target, target_mask)
        if noise is not None and loss_fn.weights.noise_reg > 0:
            parts["noise_reg"] = noise_regularization(noise)
            total = total + loss_fn.weights.noise_reg * parts["noise_reg"]
        if not torch.isfinite(total).all():
            raise PcganError(f"inversion loss became {total.tolist()} at step {step} (lr {lr:.4g}); "
                             f"try a lower --lr")
        opt.zero_grad(set_to_none=True)
        total.sum().backward()
        opt.step()
        if noise is not None:
            normalize_noise_(noise)
        row = {"step": step, "lr": lr, "w_noise": strength, "total": float(total.detach().mean())}
        row.update({k: float(v.detach().mean()) for k, v in parts.items()})
        rows.append(row)
        if callback is not None:
            callback(step, row)
        if options.frame_every and step % options.frame_every == 0:
            frames.append((step, pred.detach().float().cpu()))

    with torch.no_grad():
        grid = synthesize(ws_param)
        final, _ = loss_fn(grid, target, target_mask)
    ws = ws_param.detach().expand(B, L, D).clone()
    if options.frame_every:
        frames.append((options.steps, grid.detach().float().cpu()))
    return ProjectionResult(ws=ws, noise=None if noise is None else [n.detach() for n in noise],
                            grid=grid.detach(), losses=rows, per_sample=final.detach(), frames=frames,
                            seconds=time.perf_counter() - start_time)

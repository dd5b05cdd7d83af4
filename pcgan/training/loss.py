"""The StyleGAN2 loss, split into the four phases the training loop runs.

Written from Karras et al. 2019 (StyleGAN2, section 3) and Mescheder et al. 2018 (R1):

* ``Gmain``: non-saturating logistic loss, softplus(-D(G(z))).
* ``Greg``: path length regularisation on a half-size batch: for y ~ N(0, I) / sqrt(H W) the
  Jacobian-vector product J_w^T y of the generated grid w.r.t. the styles should have a
  constant length; its running mean ``pl_mean`` (decay ``pl_decay``) is the target.
* ``Dmain``: softplus(D(G(z))) + softplus(-D(x)).
* ``Dreg``: R1, (gamma / 2) ||grad_x D(x)||^2 on reals (gradient w.r.t. the un-augmented grid).

Style mixing regularisation: with probability ``style_mixing`` a sample takes its styles from
two latents, switching at a random layer. Regularisers are lazy: the loop runs ``Greg`` /
``Dreg`` every k-th step and passes ``gain = k`` so their expected gradient stays the same.
Forward passes run under the loop's autocast; gradient penalties are formed in float32.
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from typing import Callable

import torch
import torch.nn.functional as F
from pcgan.networks import Discriminator, Generator, style_mix
from pcgan.training.augment import AugmentPipe

PHASES = ("Gmain", "Greg", "Dmain", "Dreg")


class StyleGAN2Loss:
    """Accumulates one phase's gradients into G's or D's ``.grad``; returns detached stats."""

    def __init__(self,
                 G: Generator,                    # plain (unwrapped) generator
                 D: Discriminator,                # plain discriminator
                 augment: AugmentPipe | None = None,  # applied before D to reals and fakes; None: identity
                 r1_gamma: float = 1.0,           # R1 weight gamma; 0: no R1
                 style_mixing: float = 0.9,       # probability that a sample mixes two latents
                 pl_weight: float = 2.0,          # path length weight; 0: no path length reg
                 pl_decay: float = 0.01,          # decay of the running mean path length
                 pl_batch_shrink: int = 2,        # path length reg runs on batch // this samples
                 autocast_dtype: torch.dtype | None = None,  # e.g. torch.bfloat16; None: float32
                 synthesis_fast: Callable | None = None,  # compiled G.synthesis for Gmain/Dmain; None: eager
                 D_fast: Callable | None = None,          # compiled D for Gmain/Dmain; None: eager
                 reduce_mean: Callable[[torch.Tensor], torch.Tensor] | None = None,  # mean over ranks (DDP)
                 ):
        self.G, self.D, self.augment = G, D, augment
        self.d_pack = getattr(D, "pack", 1)           # samples per D logit (PacGAN); any D module works
        self.r1_gamma, self.style_mixing = r1_gamma, style_mixing
        self.pl_weight, self.pl_decay, self.pl_batch_shrink = pl_weight, pl_decay, pl_batch_shrink
        self.autocast_dtype = autocast_dtype
        self.synthesis_fast = synthesis_fast or G.synthesis
        self.D_fast = D_fast or D
        self.reduce_mean = reduce_mean or (lambda t: t)
        device = next(G.parameters()).device
        self.pl_mean = torch.zeros([], device=device)  # running mean path length (state for resume)

    # -- state for exact resume ----------------------------------------------------------------

    def state_dict(self) -> dict:
        return {"pl_mean": self.pl_mean.detach().cpu()}

    def load_state_dict(self, state: dict) -> None:
        self.pl_mean.copy_(state["pl_mean"])

    # -- pieces ---------------------------------------------------------------------------------

    def _autocast(self, device: torch.device):
        if self.autocast_dtype is None:
            return nullcontext()
        return torch.autocast(device_type=device.type, dtype=self.autocast_dtype)

    def _styles(self, z: torch.Tensor, c: torch.Tensor | None, update_emas: bool) -> torch.Tensor:
        # z: [B, z_dim] -> ws: [B, L, w_dim], a random fraction style-mixed
        ws = self.G.mapping(z, c, update_emas=update_emas)
        if self.style_mixing > 0:
            B, L = ws.shape[:2]
            ws2 = self.G.mapping(torch.randn_like(z), c, update_emas=False)
            crossover = torch.randint(1, L, [B], device=z.device)
            mixed = torch.rand([B], device=z.device) < self.style_mixing
            ws = style_mix(ws, ws2, torch.where(mixed, crossover, torch.full_like(crossover, L)))
        return ws

    def _D(self, img: torch.Tensor, c: torch.Tensor | None, real: bool, fast: bool) -> torch.Tensor:
        # img: [B, C, H, W] -> logits [B, 1] float32. The x-flip is a dataset augmentation:
        # reals only (fakes get the p-controlled transforms alone).
        if self.augment is not None:
            img = self.augment(img, xflip=None if real else False)
        return (self.D_fast if fast else self.D)(img, c)

    # -- phases ---------------------------------------------------------------------------------

    def accumulate_gradients(self, phase: str, real: torch.Tensor, z: torch.Tensor,
                             c: torch.Tensor | None = None, gain: float = 1.0) -> dict[str, torch.Tensor]:
        """Run one phase on one (micro)batch and add ``gain * d loss`` to the parameters' grads.

        Args:
            phase: one of PHASES.
            real: [B, C, H, W] float32 real grids (used by Dmain and Dreg).
            z: [B, z_dim] latents for the generated grids.
            c: [B, c_dim] conditions or None.
            gain: gradient multiplier (the lazy interval, divided by micro-batches per step).
        Returns:
            Detached scalar (or [B]) tensors for statistics; nothing is synchronised to the host.
        """
        assert phase in PHASES, phase
        dev = real.device
        stats: dict[str, torch.Tensor] = {}
        if phase == "Gmain":
            with self._autocast(dev):
                img = self.synthesis_fast(self._styles(z, c, update_emas=True))
                logits = self._D(img, c, real=False, fast=True)
            loss = F.softplus(-logits).mean()  # non-saturating: -log sigmoid(D(G(z)))
            (loss * gain).backward()
            stats.update({"Loss/G/loss": loss.detach(), "Loss/scores/fake": logits.detach().mean()})

        elif phase == "Greg":
            n = max(z.shape[0] // self.pl_batch_shrink, 1)
            with self._autocast(dev):
                ws = self._styles(z[:n], None if c is None else c[:n], update_emas=False)
                img = self.G.synthesis(ws)  # [n, C, H, W] float32
            H, W = img.shape[2:]
            y = torch.randn_like(img) / math.sqrt(H * W)
            (jvp,) = torch.autograd.grad((img * y).sum(), ws, create_graph=True)  # [n, L, w_dim]
            lengths = jvp.float().square().sum(dim=2).mean(dim=1).sqrt()  # [n]
            with torch.no_grad():
                self.pl_mean.copy_(self.pl_mean.lerp(self.reduce_mean(lengths.mean().detach()), self.pl_decay))
            penalty = (lengths - self.pl_mean).square()
            loss = (penalty * self.pl_weight).mean()
            (loss * gain).backward()
            stats.update({"Loss/pl_penalty": penalty.detach().mean(), "Loss/G/reg": loss.detach(),
                          "Loss/pl_mean": self.pl_mean.detach().clone()})

        elif phase == "Dmain":
            with torch.no_grad(), self._autocast(dev):
                fake = self.synthesis_fast(self._styles(z, c, update_emas=False))
            with self._autocast(dev):
                fake_logits = self._D(fake.detach(), c, real=False, fast=True)
                real_logits = self._D(real, c, real=True, fast=True)
            loss = F.softplus(fake_logits).mean() + F.softplus(-real_logits).mean()
            (loss * gain).backward()
            stats.update({"Loss/D/loss": loss.detach(), "Loss/scores/real": real_logits.detach().mean(),
                          "Loss/scores/fake": fake_logits.detach().mean(),
                          "real_logits": real_logits.detach().flatten()})

        else:  # Dreg
            real_x = real.detach().requires_grad_(True)
            with self._autocast(dev):
                logits = self._D(real_x, c, real=True, fast=False)
            (grad,) = torch.autograd.grad(logits.float().sum(), real_x, create_graph=True)  # [B, C, H, W]
            # a pack of samples shares one logit, which the sum counts once per sample
            penalty = grad.float().square().sum(dim=[1, 2, 3]) / self.d_pack ** 2  # [B]
            loss = (penalty * (self.r1_gamma / 2)).mean()
            (loss * gain).backward()
            stats.update({"Loss/r1_penalty": penalty.detach().mean(), "Loss/D/reg": loss.detach()})
        return stats

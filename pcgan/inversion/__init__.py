"""Inversion: real scans into the generator's extended latent space W+ ([L, w_dim], one style per layer).

Two ways in, one set of losses (:mod:`pcgan.inversion.losses`):

- optimisation (:func:`project`, ``pcgan invert``): StyleGAN2's projector on grids, in W or
  W+, optionally with the noise maps, started from w_avg or from an encoder's output;
- an encoder (:class:`GridEncoder`, ``pcgan train-encoder``): pSp's feature pyramid from a grid
  to W+ in one forward pass, trained with the generator frozen.

Editing (:func:`mix_styles`) splices another face's styles into chosen layers; the numbers
reported for a reconstruction are in :mod:`pcgan.inversion.evaluate`.

Everything here imports torch and pcgan's core only; LPIPS loads on request
(:func:`load_lpips_loss`), Open3D is never needed.
"""

from pcgan.inversion.edit import mix_styles, parse_layers
from pcgan.inversion.encoder import (GridEncoder, check_encoder, generator_fingerprint, load_encoder,
                                     save_encoder)
from pcgan.inversion.losses import LossWeights, ReconstructionLoss, load_lpips_loss, noise_regularization
from pcgan.inversion.optimize import ProjectionResult, ProjectOptions, project, w_statistics

__all__ = ["GridEncoder", "LossWeights", "ProjectOptions", "ProjectionResult", "ReconstructionLoss",
           "check_encoder", "generator_fingerprint", "load_encoder", "load_lpips_loss", "mix_styles",
           "noise_regularization", "parse_layers", "project", "save_encoder", "w_statistics"]

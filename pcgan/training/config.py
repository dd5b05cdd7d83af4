"""The ``train:`` config section: schedule, optimiser, losses, EMA, speed and bookkeeping.

Registered with :mod:`pcgan.config`, so ``load_config`` reads it from ``configs/*.yaml`` and
``--set train.key=value`` overrides it. Defaults are StyleGAN2 config F (Karras et al. 2019)
at batch 32; the presets in ``configs/`` adjust batch, R1 gamma and EMA for their resolution.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

from pcgan.config import register_section


@register_section("train")
@dataclasses.dataclass(frozen=True)
class TrainConfig:
    kimg: float = 25000.0           # training length: thousands of real grids shown to D
    max_minutes: float | None = None  # also stop after this many minutes of this session's loop (final snapshot); null: no limit
    batch: int = 32                 # global batch: grids per step over all processes
    batch_gpu: int | None = None    # grids per process per pass; less than batch / processes accumulates gradients; null: batch / processes
    g_lr: float = 0.0025            # generator Adam learning rate
    d_lr: float = 0.0025            # discriminator Adam learning rate
    betas: tuple[float, float] = (0.0, 0.99)  # Adam betas (before the lazy-regularisation rescaling)
    eps: float = 1e-8               # Adam epsilon
    r1_gamma: float = 1.0           # R1 weight gamma on reals; 0: off
    r1_interval: int = 16           # run R1 every this many steps (lazy regularisation)
    pl_weight: float = 2.0          # path length regularisation weight; 0: off
    pl_interval: int = 4            # run path length reg every this many steps
    pl_decay: float = 0.01          # decay of the running mean path length
    pl_batch_shrink: int = 2        # path length reg uses batch_gpu // this grids
    style_mixing: float = 0.9       # probability of mixing two latents per generated grid; 0: off
    ema_kimg: float = 10.0          # half-life of the generator EMA (G_ema), in thousands of grids
    ema_rampup: float | None = 0.05  # early on, half-life <= ema_rampup * grids seen; null: no ramp-up
    tick_kimg: float = 4.0          # one status line, stats row and TensorBoard point per this many kimg
    snapshot_ticks: int = 50        # network snapshot + training state every this many ticks; 0: at the end only
    preview_ticks: int = 50         # fakes*.png preview (and .ply) every this many ticks; 0: at start and end only
    keep_snapshots: int = 5         # keep the newest this many network snapshots; 0: keep all
    preview_grids: int = 16         # fixed seeds 0..n-1 shown in fakes*.png
    preview_ply: int = 2            # of those, the first n also written as .ply point clouds
    metrics: tuple[str, ...] = ("mmd_cd", "cov_cd", "1nna_cd")  # G_ema metrics at each snapshot (pcgan eval --list-metrics); []: off
    metrics_num: int = 64           # snapshot metrics: this many generated grids vs up to this many reals (val split)
    metrics_points: int = 512       # snapshot metrics: points per cloud for the 3D metrics
    seed: int = 0                   # run seed (process r of N draws from seed * N + r)
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # auto: bf16 autocast on CUDA, fp32 on CPU
    channels_last: bool | None = None  # channels_last memory format; null: on CUDA only
    tf32: bool = True               # allow TF32 matmuls/convs on CUDA (the fp32 parts of a bf16 run too)
    compile: bool = False           # torch.compile G synthesis and D for the main phases (eager fallback)
    data_on_device: bool | None = None  # hold the train split on the device; null: when it fits
    workers: int = 2                # DataLoader processes when the data is not on the device
    deterministic: bool = False     # torch.use_deterministic_algorithms (CPU exactness tests; slower)

    def __post_init__(self):
        if not self.kimg > 0:
            raise ValueError(f"train.kimg must be > 0, got {self.kimg}")
        if self.max_minutes is not None and not self.max_minutes > 0:
            raise ValueError(f"train.max_minutes must be > 0 or null, got {self.max_minutes}")
        if self.batch < 1 or (self.batch_gpu is not None and self.batch_gpu < 1):
            raise ValueError("train.batch and train.batch_gpu must be >= 1")
        if min(self.g_lr, self.d_lr, self.eps) <= 0:
            raise ValueError("train.g_lr, train.d_lr and train.eps must be > 0")
        if not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"train.betas must be in [0, 1), got {list(self.betas)}")
        if min(self.r1_gamma, self.pl_weight, self.pl_decay, self.ema_kimg) < 0:
            raise ValueError("train.r1_gamma, pl_weight, pl_decay and ema_kimg must be >= 0")
        if min(self.r1_interval, self.pl_interval, self.pl_batch_shrink) < 1:
            raise ValueError("train.r1_interval, pl_interval and pl_batch_shrink must be >= 1")
        if not 0 <= self.style_mixing <= 1:
            raise ValueError(f"train.style_mixing must be in [0, 1], got {self.style_mixing}")
        if self.ema_rampup is not None and self.ema_rampup <= 0:
            raise ValueError("train.ema_rampup must be > 0 or null")
        if not self.tick_kimg > 0:
            raise ValueError("train.tick_kimg must be > 0")
        if min(self.snapshot_ticks, self.preview_ticks, self.keep_snapshots, self.preview_grids,
               self.preview_ply, self.workers, self.seed) < 0:
            raise ValueError("train.snapshot_ticks, preview_ticks, keep_snapshots, preview_grids, "
                             "preview_ply, workers and seed must be >= 0")
        if self.metrics_num < 2 or self.metrics_points < 1:
            raise ValueError(f"train.metrics_num must be >= 2 and train.metrics_points >= 1, "
                             f"got {self.metrics_num} and {self.metrics_points}")
        if self.metrics:
            _check_metrics(self.metrics, self.metrics_num)


def _check_metrics(names: tuple[str, ...], num: int) -> None:
    """Unknown names, or metrics that need more generated grids than train.metrics_num, fail at load."""
    from pcgan.errors import PcganError
    from pcgan.metrics import METRICS, expand_names

    try:
        expanded = expand_names(list(names))
    except PcganError as exc:
        raise ValueError(f"train.metrics: {exc}") from None
    big = [n for n in expanded if (METRICS[n].num_gen or 0) > num]
    if big:
        raise ValueError(f"train.metrics: {', '.join(big)} need(s) more generated grids than train.metrics_num "
                         f"{num}; run them with `pcgan eval` instead")

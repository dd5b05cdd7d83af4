"""The training loop: phases G main / G reg / D main / D reg, counted in real grids seen.

One *step* shows ``train.batch`` real grids to D (split over processes and, with
``batch_gpu``, over gradient-accumulation passes) and runs each phase whose interval divides
the step number. After the phases: G_ema moves toward G, the augmentation probability adapts.
Every ``tick_kimg`` thousand grids the loop closes a *tick*: it averages the statistics over
ranks, appends a row to ``stats.jsonl``, writes TensorBoard scalars and hands a status dict to
the observer (the CLI prints it); every ``preview_ticks`` / ``snapshot_ticks`` ticks it writes
``fakesKKKKKK.png`` (+ a few .ply) and ``network-snapshot-KKKKKK.pt`` + ``training-state.pt``.
At each snapshot rank 0 also evaluates G_ema on ``train.metrics`` (small, seeded sets; see
:class:`pcgan.evaluation.SnapshotMetrics`): ``Metrics/...`` in that tick's row and TensorBoard,
one row per metric in ``metric-<name>.jsonl``.

A time budget (``train.max_minutes``) ends the session like reaching ``train.kimg`` does:
previews, a final snapshot and the training state; re-running continues from there.

Never lose work: SIGINT / SIGTERM finish the current step, save a checkpoint and return
(a second Ctrl-C quits at once); a non-finite loss stops with its step and the last good
checkpoint; a resumed run restores images seen, weights, optimiser moments, EMA, augment p,
path length mean and every RNG, so N steps equal N/2 + resume + N/2.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import math
import signal
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pcgan import checkpoint as ckpt
from pcgan.config import save_config, to_dict
from pcgan.dataset import load_dataset
from pcgan.errors import PcganError
from pcgan.evaluation import METRIC_FILE, SnapshotMetrics
from pcgan.fileio import atomic_path, ensure_writable_dir
from pcgan.grid import GridMeta
from pcgan.networks import Discriminator, Generator, z_from_seeds
from pcgan.training import distributed as dist
from pcgan.training.augment import AdaptiveAugment, AugmentPipe
from pcgan.training.data import TrainData
from pcgan.training.loss import StyleGAN2Loss

log = logging.getLogger(__name__)

STATS_FILE = "stats.jsonl"
NAN_CHECK_STEPS = 16   # on CUDA, look at the non-finite flag every this many steps (a host sync)
PREVIEW_COLUMNS = 4    # grids per row in fakes*.png (each grid is an RGB | depth | shading triple)


class TrainingDiverged(PcganError):
    """A loss became NaN or infinite; the message names the step and the last good checkpoint."""


@dataclasses.dataclass
class TrainResult:
    status: str                       # "done" (reached train.kimg), "time" (train.max_minutes) or "stopped" (signal)
    images_seen: int                  # real grids shown to D so far
    step: int                         # optimiser steps so far
    signal: int | None = None         # the signal that stopped the run
    snapshot: Path | None = None      # the last network snapshot written
    state: Path | None = None         # the training state written


class Observer:
    """What the loop reports; the CLI subclasses it to draw a progress bar and status lines."""

    def start(self, info: dict) -> None:       # run facts: device, world size, resumed kimg, ...
        pass

    def progress(self, images_seen: int, total: int) -> None:   # after every step
        pass

    def tick(self, status: dict) -> None:      # after every tick: the stats.jsonl row
        pass

    def finish(self, modules: dict) -> None:   # on every rank at the end: {"G", "D", "G_ema"} (plain modules)
        pass


# ----------------------------------------------------------------------------------------------
# Devices and checks


def resolve_device(name: str) -> torch.device:
    """"auto" | "cpu" | "cuda" -> a device type, with a clear error when CUDA is missing."""
    if name not in ("auto", "cpu", "cuda"):
        raise PcganError(f"--device {name!r}: use auto, cpu or cuda")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
        raise PcganError(f"--device cuda, but no CUDA device is available (torch {torch.__version__}, {build}); "
                         f"to train on the CPU use --device cpu (fp32; use a small config such as "
                         f"configs/demo-cpu-64.yaml)")
    return torch.device(name)


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for a ``train.precision`` setting (None: plain float32)."""
    if precision == "auto":
        return torch.bfloat16 if device.type == "cuda" else None
    return torch.bfloat16 if precision == "bf16" else None


def cpu_has_bf16() -> bool:
    """Whether this CPU has native bf16 maths (x86 avx512_bf16 or amx_bf16, from /proc/cpuinfo).
    With it, bf16 autocast trained the CPU demo model ~1.4x faster than fp32 (benchmarks/RESULTS.md);
    without it, bf16 is emulated and slower. False where /proc/cpuinfo cannot be read."""
    try:
        flags = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def check_dataset(meta: GridMeta, cfg: Any, data_path: Path, config_name: str) -> None:
    """The dataset must match the config's resolution (channels come from the data)."""
    if meta.resolution != cfg.model.resolution:
        raise PcganError(f"dataset {data_path} has resolution {meta.resolution} but the config "
                         f"({config_name}) has model.resolution {cfg.model.resolution}: use a config for "
                         f"{meta.resolution} or --set model.resolution={meta.resolution}")


def check_resume(meta: GridMeta, state: dict, data_path: Path) -> None:
    """A resumed checkpoint must have been trained on grids of the same layout."""
    old = GridMeta.from_dict(state["grid_meta"])
    where = state.get("path", "the checkpoint")
    if old.channels != meta.channels:
        raise PcganError(f"dataset {data_path} has channels {list(meta.channels)} but {where} was trained on "
                         f"channels {list(old.channels)}: resume with a dataset of the same channels")
    if old.resolution != meta.resolution:
        raise PcganError(f"dataset {data_path} has resolution {meta.resolution} but {where} was trained at "
                         f"resolution {old.resolution}: resume with a dataset of the same resolution")
    if (old.center, old.scale) != (meta.center, meta.scale):
        log.warning("dataset %s is normalised differently (center %s, scale %g) from the checkpoint's "
                    "(center %s, scale %g); snapshots will carry the new dataset's normalisation",
                    data_path, meta.center, meta.scale, old.center, old.scale)
    if old.sheet_z != meta.sheet_z:
        log.warning("dataset %s has its background sheet at z = %g but the checkpoint was trained with z = %g "
                    "(preprocess with --sheet-z %g for the same grids); training goes on with the new sheet",
                    data_path, meta.sheet_z, old.sheet_z, old.sheet_z)


def _setup_backends(t: Any, device: torch.device) -> None:
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = t.tf32
        torch.backends.cudnn.allow_tf32 = t.tf32
        torch.backends.cudnn.benchmark = not t.deterministic
    if t.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)


def _maybe_compile(fn, enabled: bool, name: str):
    """torch.compile ``fn``; on any failure (no compiler, unsupported op) fall back to eager."""
    if not enabled:
        return fn
    compiled = torch.compile(fn)
    state = {"fn": compiled}

    def call(*args, **kwargs):
        try:
            return state["fn"](*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - any compiler failure: run eager, say so once
            if state["fn"] is fn:
                raise
            log.warning("torch.compile of %s failed (%s: %s); continuing eager",
                        name, type(exc).__name__, str(exc).splitlines()[0][:200] if str(exc) else "")
            state["fn"] = fn
            return fn(*args, **kwargs)
    return call


# ----------------------------------------------------------------------------------------------
# Small helpers: statistics, non-finite watch, signals, EMA, previews


class _Stats:
    """Per-tick sums of statistics, kept on the device (no host sync until the tick ends)."""

    def __init__(self):
        self.sums: dict[str, torch.Tensor] = {}
        self.counts: dict[str, int] = {}

    def add(self, name: str, value: torch.Tensor) -> None:
        v = value.detach().float()
        self.sums[name] = self.sums[name] + v.sum() if name in self.sums else v.sum()
        self.counts[name] = self.counts.get(name, 0) + v.numel()

    def collect(self, world: int) -> dict[str, float]:
        """Means over the tick and over ranks (every rank must call this at the same tick)."""
        names = sorted(self.sums)
        out = {}
        if names:
            sums = dist.reduce_sum(torch.stack([self.sums[n] for n in names])).tolist()
            out = {n: s / (self.counts[n] * world) for n, s in zip(names, sums)}
        self.sums, self.counts = {}, {}
        return out


class _NonFiniteWatch:
    """Remembers, on the device, the first step and statistic that was NaN or infinite."""

    def __init__(self, device: torch.device, step: int):
        self.step = torch.tensor(step, device=device)  # mirrors the loop's step counter
        self.first = torch.full([2], -1, dtype=torch.long, device=device)  # (step, name index)
        self.names: list[str] = []
        self._ids: dict[str, torch.Tensor] = {}

    def observe(self, name: str, value: torch.Tensor) -> None:
        if name not in self._ids:
            self._ids[name] = torch.tensor(len(self.names), device=self.step.device)
            self.names.append(name)
        bad = (~torch.isfinite(value)).any() & (self.first[0] < 0)
        self.first = torch.where(bad, torch.stack([self.step, self._ids[name]]), self.first)

    def advance(self) -> None:
        self.step += 1

    def first_bad(self) -> tuple[int, str] | None:
        """(step, statistic) of the first non-finite value on any rank; None if all finite.

        Collective under torch.distributed, so every rank stops at the same check (a rank that
        stopped alone would leave the others waiting in the next all-reduce)."""
        found = [f.tolist() for f in dist.gather_tensors(self.first)]
        bad = [(step, idx) for step, idx in found if step >= 0]
        if not bad:
            return None
        step, idx = min(bad)
        return step, self.names[idx]  # every rank records statistics in the same order


class _StopRequest:
    """SIGINT/SIGTERM set a flag the loop reads after each step; a second Ctrl-C quits at once."""

    def __init__(self):
        self.signum: int | None = None
        self._old: dict[int, Any] = {}

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # signal handlers can only be set from the main thread (e.g. not in some test runners)
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._old[sig] = signal.signal(sig, self._handle)

    def restore(self) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old = {}

    def _handle(self, signum, frame) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # second Ctrl-C: stop now, without saving
        self.signum = signum
        log.warning("%s received: finishing this step, saving a checkpoint, then exiting "
                    "(Ctrl-C again to quit without saving)", signal.Signals(signum).name)


@torch.no_grad()
def update_ema(G_ema: torch.nn.Module, G: torch.nn.Module, batch: int, images_seen: int,
               ema_kimg: float, ema_rampup: float | None) -> float:
    """Move G_ema toward G with half-life ``ema_kimg`` thousand grids (ramped up early on).

    Returns the decay beta used: after one step of ``batch`` grids, beta = 0.5 ** (batch / half-life).
    Buffers (w_avg, const noise) are copied from G."""
    half_life = ema_kimg * 1000
    if ema_rampup is not None:
        half_life = min(half_life, images_seen * ema_rampup)
    beta = 0.5 ** (batch / max(half_life, 1e-8))
    ema_p, p = list(G_ema.parameters()), list(G.parameters())
    torch._foreach_lerp_(ema_p, p, 1.0 - beta)
    for b_ema, b in zip(G_ema.buffers(), G.buffers()):
        b_ema.copy_(b)
    return beta


def contact_sheet(images: list[np.ndarray], columns: int) -> np.ndarray:
    """Tile equally sized ``uint8 [h, w, 3]`` images into rows of ``columns`` (2-pixel gaps)."""
    h, w, _ = images[0].shape
    rows = math.ceil(len(images) / columns)
    cols = min(columns, len(images))
    gap = 2
    sheet = np.zeros((rows * (h + gap) - gap, cols * (w + gap) - gap, 3), dtype=np.uint8)
    for i, im in enumerate(images):
        r, c = divmod(i, columns)
        sheet[r * (h + gap):r * (h + gap) + h, c * (w + gap):c * (w + gap) + w] = im
    return sheet


def _write_png(path: Path, image: np.ndarray) -> None:
    from PIL import Image
    with atomic_path(path) as tmp:
        Image.fromarray(image).save(tmp, format="PNG", compress_level=3)


def write_grid_previews(grids: torch.Tensor, meta: GridMeta, png: Path, ply_dir: Path | None = None,
                        ply_stem: str = "", ply_count: int = 0) -> np.ndarray:
    """Write a contact sheet (RGB | depth | normal shading per grid) and a few .ply clouds.

    Args:
        grids: [B, C, H, W] grids (any float dtype/device).
        png: the sheet's path.
        ply_dir, ply_stem, ply_count: the first ``ply_count`` grids go to
            ``ply_dir / f"{ply_stem}-seed{i:04d}.ply"`` in the scans' units.
    Returns:
        the sheet, uint8 [h, w, 3] (for TensorBoard).
    """
    from pcgan.export import preview_image, write_point_ply
    from pcgan.grid import grid_to_points
    grids = grids.detach().float().cpu()
    sheet = contact_sheet([preview_image(g, meta) for g in grids], PREVIEW_COLUMNS)
    _write_png(png, sheet)
    if ply_dir is not None and ply_count > 0:
        ensure_writable_dir(ply_dir)
        for i, g in enumerate(grids[:ply_count]):
            pts, cols, nrm = grid_to_points(g, meta, return_normals=True)
            write_point_ply(ply_dir / f"{ply_stem}-seed{i:04d}.ply", pts.numpy(), cols.numpy(), nrm.numpy())
    return sheet


def _trim_stats(path: Path, images_seen: int) -> None:
    """Drop stats rows past ``images_seen`` (a resumed run replays them; a fresh one starts empty)."""
    if not path.exists():
        return
    keep = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            if json.loads(line)["kimg"] * 1000 <= images_seen + 0.5:
                keep.append(line)
        except (ValueError, KeyError, TypeError):
            continue  # a torn last line from a killed run
    with atomic_path(path) as tmp:
        tmp.write_text("".join(k + "\n" for k in keep), encoding="utf-8")


def _open_tensorboard(run_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as exc:  # tensorboard is a dependency, but a bare GPU host may lack it
        log.warning("TensorBoard logging off (%s); stats.jsonl still has every tick", exc)
        return None
    return SummaryWriter(str(run_dir))


def _rng_states(device: torch.device) -> dict:
    """Every rank's RNG states (lists in rank order), for an exact resume."""
    out = {"cpu": dist.gather_tensors(torch.get_rng_state())}
    if device.type == "cuda":
        out["cuda"] = dist.gather_tensors(torch.cuda.get_rng_state(device))
    return out


def _restore_rng(states: dict, env: dist.DistEnv, device: torch.device, world_then: int) -> None:
    if world_then != env.world_size:
        log.warning("resuming with %d processes instead of %d: random streams restart from the seed "
                    "(training continues, but not bit-exactly)", env.world_size, world_then)
        return
    torch.set_rng_state(states["cpu"][env.rank].cpu())
    if device.type == "cuda" and "cuda" in states:
        torch.cuda.set_rng_state(states["cuda"][env.rank].cpu(), device)


# ----------------------------------------------------------------------------------------------
# The loop


@dataclasses.dataclass
class _Phase:
    name: str
    module: torch.nn.Module
    opt: torch.optim.Optimizer
    interval: int


def _adam_hparams(lr: float, betas: tuple[float, float], eps: float, reg_interval: int | None) -> dict:
    # Lazy regularisation: the regulariser runs every k steps, so k steps take k + 1 optimiser
    # updates where the paper's take k; c = k / (k + 1) rescales lr and betas to match.
    c = reg_interval / (reg_interval + 1) if reg_interval else 1.0
    return {"lr": lr * c, "betas": (betas[0] ** c, betas[1] ** c), "eps": eps}


def _adam(module: torch.nn.Module, lr: float, betas: tuple[float, float], eps: float, reg_interval: int | None,
          device: torch.device) -> torch.optim.Optimizer:
    """Adam with the lazy-regularisation rescaling; fused on CUDA."""
    return torch.optim.Adam(module.parameters(), **_adam_hparams(lr, betas, eps, reg_interval),
                            fused=device.type == "cuda")


def train(cfg: Any, data: str | Path, run_dir: str | Path, device: str = "auto",
          resume: str | Path | None = None, observer: Observer | None = None,
          config_name: str = "the config") -> TrainResult:
    """Train G and D on a dataset until ``cfg.train.kimg`` thousand real grids have been seen.

    Args:
        cfg: the resolved config (``pcgan.config.load_config``; needs the ``model``, ``train``
            and ``augment`` sections, registered by importing ``pcgan.training``).
        data: dataset directory (``grids.npy`` + ``dataset.json``).
        run_dir: where snapshots, state, stats, previews and TensorBoard events go.
        device: "auto" | "cpu" | "cuda" (under torchrun each process takes cuda:LOCAL_RANK).
        resume: a ``training-state.pt`` (or a run dir holding one) to continue from.
        observer: receives start info, per-step progress and per-tick status.
        config_name: how error messages name the config (e.g. its file).
    Returns:
        TrainResult; raises TrainingDiverged on a non-finite loss, PcganError on bad input.
    """
    observer = observer or Observer()
    t = cfg.train
    dev = resolve_device(device)
    env = dist.init_distributed(dev.type)
    if dev.type == "cuda":
        if env.local_rank >= torch.cuda.device_count():
            raise PcganError(f"process {env.local_rank} on this node has no GPU: {torch.cuda.device_count()} "
                             f"visible; start at most that many processes per node")
        dev = torch.device("cuda", env.local_rank)
    _setup_backends(t, dev)
    run_dir = Path(run_dir)
    data = Path(data)
    world, rank = env.world_size, env.rank

    # -- data and the checks that must fail before any work
    dataset = load_dataset(data)
    meta = dataset.meta
    check_dataset(meta, cfg, data, config_name)
    state = ckpt.load_training_state(resume, device=dev) if resume is not None else None
    if state is not None:
        check_resume(meta, state, data)
    if t.batch % world:
        raise PcganError(f"train.batch {t.batch} does not split over {world} processes: use a multiple of {world}")
    batch_rank = t.batch // world
    batch_gpu = t.batch_gpu or batch_rank
    if batch_rank % batch_gpu:
        raise PcganError(f"train.batch_gpu {batch_gpu} must divide the per-process batch {batch_rank} "
                         f"(train.batch {t.batch} / {world} processes)")
    pack = cfg.model.d_pack
    if batch_gpu % pack:
        raise PcganError(f"per-process batch {batch_gpu} is not a multiple of model.d_pack {pack}")
    group, packs = cfg.model.mbstd.group_size, batch_gpu // pack
    if group is not None and cfg.model.mbstd.num_channels > 0 and packs % min(group, packs):
        raise PcganError(f"per-process batch {batch_gpu} / model.d_pack {pack} = {packs} packs is not a multiple "
                         f"of model.mbstd.group_size {group}")
    passes = batch_rank // batch_gpu
    if env.is_main:
        ensure_writable_dir(run_dir)
    dist.barrier()

    # -- networks, augmentation, optimisers
    torch.manual_seed(t.seed * world + rank)
    C = meta.num_channels
    G = Generator(**cfg.model.generator_kwargs(C, camera=meta.camera.to_dict(), background=meta.empty_pixel())).to(dev)
    D = Discriminator(**cfg.model.discriminator_kwargs(C, camera=meta.camera.to_dict())).to(dev)
    pipe = AugmentPipe(meta, cfg.augment).to(dev)
    ada = AdaptiveAugment(pipe, cfg.augment, batch_size=t.batch,
                          reduce_fn=(lambda s: dist.reduce_sum(s)) if env.distributed else None)
    opt_G = _adam(G, t.g_lr, t.betas, t.eps, t.pl_interval if t.pl_weight > 0 else None, dev)
    opt_D = _adam(D, t.d_lr, t.betas, t.eps, t.r1_interval if t.r1_gamma > 0 else None, dev)
    G_ema = copy.deepcopy(G).eval().requires_grad_(False)

    progress = {"step": 0, "tick": 0, "images_seen": 0, "draws": 0, "elapsed_s": 0.0}
    if state is not None:
        path = state["path"]
        for name, module in (("G", G), ("D", D), ("G_ema", G_ema)):
            ckpt.load_module_state(module, state["modules"][name], path, name)
        try:
            opt_G.load_state_dict(state["optimizers"]["G"])
            opt_D.load_state_dict(state["optimizers"]["D"])
        except (ValueError, KeyError) as exc:
            raise PcganError(f"{path}: optimiser state does not fit the networks ({exc})") from None
        for opt, lr, interval in ((opt_G, t.g_lr, t.pl_interval if t.pl_weight > 0 else None),
                                  (opt_D, t.d_lr, t.r1_interval if t.r1_gamma > 0 else None)):
            for group_ in opt.param_groups:  # the config's lr/betas win (equal unless changed on purpose)
                group_.update(_adam_hparams(lr, t.betas, t.eps, interval))
        progress.update({k: state["progress"][k] for k in progress if k in state["progress"]})
        ada.load_state_dict(state["extra"]["augment"])
        if int(state["extra"].get("world_size", 1)) != world:  # rows are dealt per rank: restart the deal
            progress["draws"] = progress["images_seen"] // world
        log.info("resuming from %s at kimg %.3f (step %d)", path, progress["images_seen"] / 1000, progress["step"])
    else:
        for module in (G, D, G_ema):
            dist.broadcast_module(module)  # every rank starts from rank 0's weights

    channels_last = t.channels_last if t.channels_last is not None else dev.type == "cuda"
    if channels_last:
        for module in (G, D, G_ema):
            module.to(memory_format=torch.channels_last)
        for opt in (opt_G, opt_D):  # resumed Adam moments take their parameters' layout (fused Adam wants it)
            for p, st in opt.state.items():
                for k, v in st.items():
                    if k in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"):
                        st[k] = torch.empty_like(p).copy_(v)
    amp = autocast_dtype(t.precision, dev)
    if amp is not None and dev.type == "cpu" and not cpu_has_bf16():
        log.warning("bf16 autocast on a CPU without bf16 instructions (avx512_bf16, amx_bf16) is usually "
                    "slower than fp32: consider --precision fp32")

    loss = StyleGAN2Loss(G, D, pipe, r1_gamma=t.r1_gamma, style_mixing=t.style_mixing, pl_weight=t.pl_weight,
                         pl_decay=t.pl_decay, pl_batch_shrink=t.pl_batch_shrink, autocast_dtype=amp,
                         synthesis_fast=_maybe_compile(G.synthesis, t.compile, "G.synthesis"),
                         D_fast=_maybe_compile(D, t.compile, "D"), reduce_mean=dist.reduce_mean)
    phases = [_Phase("Gmain", G, opt_G, 1)]
    if t.pl_weight > 0:
        phases.append(_Phase("Greg", G, opt_G, t.pl_interval))
    phases.append(_Phase("Dmain", D, opt_D, 1))
    if t.r1_gamma > 0:
        phases.append(_Phase("Dreg", D, opt_D, t.r1_interval))
    if state is not None:
        loss.load_state_dict(state["extra"]["loss"])
        _restore_rng(state["extra"]["rng"], env, dev, int(state["extra"].get("world_size", 1)))

    reals = TrainData(dataset, batch_rank, dev, seed=t.seed, rank=rank, world=world, start=progress["draws"],
                      on_device=t.data_on_device, workers=t.workers, channels_last=channels_last)

    # -- outputs (rank 0 writes files)
    config_dict = to_dict(cfg)
    tb = stats_file = None
    last_good: tuple[Path, float] | None = None
    if state is not None:
        last_good = (Path(state["path"]), progress["images_seen"] / 1000)
    elif (run_dir / ckpt.STATE_FILE).exists() and env.is_main:
        log.warning("%s exists but this run starts fresh: it will be overwritten at the first snapshot",
                    run_dir / ckpt.STATE_FILE)
    preview_z = z_from_seeds(range(t.preview_grids), G.z_dim, dev) if t.preview_grids else None
    snapshot_metrics = None
    if env.is_main:
        save_config(cfg, run_dir / "config.yaml")
        tb = _open_tensorboard(run_dir)
        _trim_stats(run_dir / STATS_FILE, progress["images_seen"] if state is not None else 0)
        for path in run_dir.glob(METRIC_FILE.format(name="*")):
            _trim_stats(path, progress["images_seen"] if state is not None else 0)
        if t.metrics:
            snapshot_metrics = SnapshotMetrics(t.metrics, dataset, t.metrics_num, t.metrics_points, dev, seed=t.seed)
        stats_file = open(run_dir / STATS_FILE, "a", encoding="utf-8")
    observer.start({"device": str(dev), "world_size": world, "batch": t.batch, "batch_gpu": batch_gpu,
                    "resumed_kimg": progress["images_seen"] / 1000 if state is not None else None,
                    "data_on_device": reals.on_device, "precision": "bf16" if amp else "fp32",
                    "channels_last": channels_last, "num_train": len(reals.rows),
                    "G_params": sum(p.numel() for p in G.parameters()),
                    "D_params": sum(p.numel() for p in D.parameters())})

    def save_previews(images_seen: int) -> None:
        if preview_z is None or not env.is_main:
            return
        kimg = images_seen // 1000
        with torch.no_grad():
            grids = torch.cat([G_ema(z, noise_mode="const") for z in preview_z.split(batch_gpu)])
        sheet = write_grid_previews(grids, meta, run_dir / f"fakes{kimg:06d}.png", run_dir / "fakes",
                                    f"fakes{kimg:06d}", t.preview_ply)
        if tb is not None:
            tb.add_image("fakes", sheet, global_step=images_seen, dataformats="HWC")

    def save_checkpoint(images_seen: int) -> tuple[Path, Path]:
        nonlocal last_good
        for name, module in (("G", G), ("D", D), ("G_ema", G_ema)):
            dist.check_consistency(module, name)  # collective; raises if the ranks have drifted apart
        rng = _rng_states(dev)  # collective: every rank takes part
        extra = {"loss": loss.state_dict(), "augment": ada.state_dict(), "rng": rng, "world_size": world,
                 "dataset": str(data)}
        snap, state_path = run_dir / ckpt.snapshot_name(images_seen), run_dir / ckpt.STATE_FILE
        if env.is_main:
            ckpt.save_snapshot(snap, G_ema, meta, config_dict, images_seen)
            ckpt.save_training_state(state_path, {"G": G, "D": D, "G_ema": G_ema}, {"G": opt_G, "D": opt_D},
                                     meta, config_dict, images_seen, progress, extra)
            for old in ckpt.prune_snapshots(run_dir, t.keep_snapshots):
                log.debug("removed old snapshot %s", old)
            log.info("saved %s and %s", snap.name, state_path.name)
        dist.barrier()
        last_good = (state_path, images_seen / 1000)
        return snap, state_path

    def evaluate_snapshot(images_seen: int) -> dict:
        """train.metrics of G_ema (rank 0) -> ``{"Metrics/<name>": value}`` for the tick's row.
        Runs in forked random streams, so training continues as if it had not happened."""
        if snapshot_metrics is None:
            return {}
        with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
            res = snapshot_metrics(G_ema)
        if res is None:
            return {}
        snapshot_metrics.write(run_dir, res, images_seen, ckpt.snapshot_name(images_seen))
        values = {f"Metrics/{k}": v for k, v in res["metrics"].items()}
        log.info("metrics at kimg %.3f: %s (%.1f s)", images_seen / 1000,
                 "  ".join(f"{k} {v:.5g}" if isinstance(v, float) else f"{k} {v}" for k, v in res["metrics"].items()),
                 res["eval_s"])
        return values

    def check_finite() -> None:
        bad = watch.first_bad()
        if bad is None:
            return
        step, name = bad  # steps completed before the bad one
        good = (f"the last good checkpoint is {last_good[0]} (kimg {last_good[1]:.3f}); resume from it with "
                f"--resume {last_good[0]}, e.g. after lowering train.g_lr / train.d_lr or raising train.r1_gamma"
                if last_good else "no checkpoint had been written yet")
        raise TrainingDiverged(f"{name} became NaN/Inf in step {step + 1} (from kimg {step * t.batch / 1000:.3f}); "
                               f"training stopped and nothing was saved after that step: {good}")

    # -- the loop
    total = int(round(t.kimg * 1000))
    stop = _StopRequest()
    watch = _NonFiniteWatch(dev, progress["step"])
    stats = _Stats()
    result = TrainResult("done", progress["images_seen"], progress["step"])
    if state is None and env.is_main and t.preview_grids:
        rows = reals.rows[:t.preview_grids]
        write_grid_previews(torch.from_numpy(np.asarray(dataset.grids[rows], dtype=np.float32)), meta,
                            run_dir / "reals.png")
        save_previews(0)
    if progress["images_seen"] >= total:
        log.warning("already trained on %.3f kimg >= train.kimg %g: nothing to do (raise --kimg to continue)",
                    progress["images_seen"] / 1000, t.kimg)
    stop.install()
    try:
        tick_start_images, tick_start_time = progress["images_seen"], time.perf_counter()
        maintenance = 0.0
        deadline = time.monotonic() + t.max_minutes * 60 if t.max_minutes is not None else None
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
        while progress["images_seen"] < total:
            step = progress["step"]
            real = reals.next()  # [batch_rank, C, H, W]
            for phase in phases:
                if step % phase.interval:
                    continue
                G.requires_grad_(phase.module is G)
                D.requires_grad_(phase.module is D)
                phase.opt.zero_grad(set_to_none=True)
                for r in real.split(batch_gpu):
                    z = torch.randn([r.shape[0], G.z_dim], device=dev)
                    out = loss.accumulate_gradients(phase.name, r, z, gain=phase.interval / passes)
                    for name, value in out.items():
                        if name == "real_logits":
                            ada.accumulate(value)
                        else:
                            stats.add(name, value)
                            watch.observe(name, value)
                dist.average_gradients(phase.module.parameters())
                phase.opt.step()
            G.requires_grad_(False)
            D.requires_grad_(False)
            if env.distributed:
                dist.average_buffers(G.mapping)  # w_avg is tracked from each rank's own batch
            update_ema(G_ema, G, t.batch, progress["images_seen"], t.ema_kimg, t.ema_rampup)
            progress["images_seen"] += t.batch
            progress["step"] += 1
            progress["draws"] = reals.draws
            watch.advance()
            ada.step(t.batch)
            observer.progress(progress["images_seen"], total)

            # Host syncs (the NaN flag; agreeing on a stop across ranks) only every NAN_CHECK_STEPS
            # steps on CUDA, so the CPU keeps queueing work ahead of the GPU.
            sync_now = dev.type == "cpu" or progress["step"] % NAN_CHECK_STEPS == 0
            stopping = stop.signum is not None if not env.distributed else (
                sync_now and dist.any_rank(stop.signum is not None, dev))
            out_of_time = deadline is not None and time.monotonic() >= deadline
            if deadline is not None and env.distributed:  # every rank must stop at the same step
                out_of_time = sync_now and dist.any_rank(out_of_time, dev)
            done = progress["images_seen"] >= total or out_of_time
            if sync_now:
                check_finite()
            if not (done or stopping or progress["images_seen"] >= tick_start_images + t.tick_kimg * 1000):
                continue

            # -- tick
            check_finite()
            progress["tick"] += 1
            now = time.perf_counter()
            tick_time = now - tick_start_time
            progress["elapsed_s"] += tick_time + maintenance
            images = progress["images_seen"] - tick_start_images
            row = {"tick": progress["tick"], "kimg": progress["images_seen"] / 1000, "step": progress["step"],
                   "time_s": round(progress["elapsed_s"], 3),
                   "sec_per_tick": round(tick_time, 3),
                   "sec_per_kimg": round(tick_time / max(images, 1) * 1000, 4),
                   "images_per_s": round(images / max(tick_time, 1e-9), 3),
                   "maintenance_s": round(maintenance, 3),  # previews + checkpoints after the previous tick
                   "augment_p": float(pipe.p),
                   "gpu_mem_gib": round(torch.cuda.max_memory_allocated(dev) / 2**30, 3) if dev.type == "cuda" else None}
            row.update(stats.collect(world))
            if ada.last_rt is not None:
                row["augment_rt"] = float(ada.last_rt)
            maint_start = time.perf_counter()
            tick = progress["tick"]
            snapshot_now = done or stopping or (t.snapshot_ticks and tick % t.snapshot_ticks == 0)
            if snapshot_now and not stopping:  # a signal asks to save and leave: no metrics then
                row.update(evaluate_snapshot(progress["images_seen"]))
            if env.is_main:
                stats_file.write(json.dumps(row) + "\n")
                stats_file.flush()
                if tb is not None:
                    for key, value in row.items():
                        if key not in ("tick", "step") and isinstance(value, (int, float)):
                            tb.add_scalar(key, value, global_step=progress["images_seen"])
                    tb.flush()
            observer.tick(row)

            if done or (t.preview_ticks and tick % t.preview_ticks == 0):
                save_previews(progress["images_seen"])
            if snapshot_now:
                result.snapshot, result.state = save_checkpoint(progress["images_seen"])
            if dev.type == "cuda":
                torch.cuda.reset_peak_memory_stats(dev)
            tick_start_images, tick_start_time = progress["images_seen"], time.perf_counter()
            maintenance = tick_start_time - maint_start  # kept out of the next tick's sec/kimg
            if stopping:
                result.status, result.signal = "stopped", stop.signum or signal.SIGTERM
                break
            if out_of_time and progress["images_seen"] < total:
                result.status = "time"
                log.info("time budget of %g minutes reached at kimg %.3f", t.max_minutes,
                         progress["images_seen"] / 1000)
                break
    finally:
        stop.restore()
        if tb is not None:
            tb.close()
        if stats_file is not None:
            stats_file.close()
    result.images_seen, result.step = progress["images_seen"], progress["step"]
    observer.finish({"G": G, "D": D, "G_ema": G_ema})
    return result

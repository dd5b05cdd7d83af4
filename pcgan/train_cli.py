"""``pcgan train``: train a generator on a grid dataset; the command users leave running for days."""

from __future__ import annotations

import argparse
import logging
import math
import os
import signal
import sys
import tempfile
from pathlib import Path

HELP = "train G and D on a grid dataset (CPU, one GPU, or many GPUs/nodes with torchrun)"

EPILOG = """\
examples:
  # a small model on the CPU (configs/demo-cpu-64.yaml is sized for a laptop)
  pcgan train --data demo-out/dataset --config configs/demo-cpu-64.yaml --out runs/demo --device cpu

  # one GPU at 256x256 (bf16 autocast, channels_last and TF32 are on by default on CUDA)
  pcgan train --data data/faces256 --config configs/faces-256.yaml --out runs/faces256 --kimg 10000

  # override any config key; check the resolved config and plan without training
  pcgan train --data data/faces256 --config configs/faces-256.yaml --out runs/x --set train.r1_gamma=2 --dry-run

  # train for 30 minutes of wall time (or train.kimg, whichever comes first), then a final snapshot
  pcgan train --data demo-out/dataset --config configs/demo-cpu-64.yaml --out runs/demo --minutes 30

  # continue a run: re-run into the same run dir (it holds training-state.pt), e.g. for longer
  pcgan train --data data/faces256 --out runs/faces256 --kimg 20000

  # start from another run's state (fine-tune, or after copying it elsewhere)
  pcgan train --data data/new --out runs/finetune --resume runs/faces256/training-state.pt

  # all GPUs of this machine (--batch is the global batch, split over the processes)
  pcgan train --data data/faces256 --config configs/faces-256.yaml --out runs/faces256 --gpus 8
  torchrun --standalone --nproc_per_node=8 -m pcgan train --data ... --out ...     # the same, by hand

  # two nodes with 8 GPUs each: run on both nodes
  torchrun --nnodes=2 --nproc_per_node=8 --rdzv-backend=c10d --rdzv-endpoint=HOST:29500 \\
      -m pcgan train --data data/faces256 --config configs/faces-256.yaml --out /shared/runs/faces256

run directory (--out is the run directory itself):
  config.yaml                   resolved config (model, train, augment sections) of the latest start
  network-snapshot-KKKKKK.pt    EMA generator + grid meta + config, every train.snapshot_ticks ticks
                                (KKKKKK = thousands of grids seen; the newest train.keep_snapshots are kept);
                                pcgan generate/eval/view read these (or the run dir: newest snapshot)
  training-state.pt             everything for an exact resume (G, D, G_ema, Adam moments, augment p,
                                path length mean, RNG states, images seen); rewritten at every snapshot
  stats.jsonl                   one JSON row per tick: kimg, sec/kimg, losses, R1, PL, augment p, GPU memory
  events.out.tfevents.*         TensorBoard scalars and preview images: tensorboard --logdir runs/
  reals.png, fakesKKKKKK.png    real grids / fixed-seed fakes: RGB | depth | normal shading per grid
  fakes/fakesKKKKKK-seedNNNN.ply  the first fixed seeds as point clouds (scan units)
  log.txt                       the console log

Re-running into a run dir that holds training-state.pt resumes it exactly (same config unless you
override keys; the model section must not change). Ctrl-C or SIGTERM finishes the current step,
saves a checkpoint and exits (a second Ctrl-C quits without saving). A NaN/Inf loss stops with its
step and names the last good checkpoint.
"""

log = logging.getLogger("pcgan.train")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, metavar="DIR",
                   help="dataset directory (grids.npy + dataset.json, from `pcgan preprocess`)")
    p.add_argument("--config", metavar="YAML",
                   help="config preset (configs/*.yaml); default: the run's own config when resuming, "
                        "else built-in defaults (StyleGAN2 config F at 256)")
    p.add_argument("--out", required=True, metavar="RUN_DIR",
                   help="run directory; resumes automatically when it holds training-state.pt")
    p.add_argument("--resume", metavar="PATH", help="training-state.pt (or a run dir) to continue from")
    p.add_argument("--kimg", type=float, help="training length in thousands of real grids (train.kimg)")
    p.add_argument("--minutes", type=float,
                   help="also stop after this many minutes of training, with a final snapshot (train.max_minutes)")
    p.add_argument("--batch", type=int, help="global batch over all processes (train.batch)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set train.r1_gamma=2 (repeatable)")
    p.add_argument("--dry-run", action="store_true", help="print the resolved config and plan; write nothing")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="auto: CUDA when available, else CPU (default: auto)")
    p.add_argument("--compile", action="store_true", help="torch.compile G and D (eager fallback on failure)")
    p.add_argument("--precision", choices=("auto", "fp32", "bf16"),
                   help="autocast precision (train.precision; auto: bf16 on CUDA, fp32 on CPU)")
    p.add_argument("--seed", type=int, help="run seed (train.seed)")
    p.add_argument("--gpus", type=int, metavar="N",
                   help="launch N processes on this machine through torchrun (with --device cpu: N CPU processes)")


# ----------------------------------------------------------------------------------------------
# Console: progress bar + one status line per tick


def _fmt_time(seconds: float) -> str:
    s = int(seconds)
    d, s = divmod(s, 86400)
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    return f"{d}d{h:02d}h{m:02d}m" if d else f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


def status_line(row: dict, total_kimg: float) -> str:
    """One line per tick, e.g. ``tick 12  kimg 48.0/25000  3.91 s/kimg  G 1.23  D 0.98 ...``."""
    parts = [f"tick {row['tick']:<5d}", f"kimg {row['kimg']:.3f}/{total_kimg:g}" if row["kimg"] < 10
             else f"kimg {row['kimg']:.1f}/{total_kimg:g}", f"{row['sec_per_kimg']:.2f} s/kimg"]
    named = (("G", "Loss/G/loss"), ("D", "Loss/D/loss"), ("R1", "Loss/r1_penalty"), ("PL", "Loss/pl_penalty"))
    parts += [f"{short} {row[key]:.3f}" for short, key in named if key in row]
    parts.append(f"aug {row['augment_p']:.3f}")
    if row.get("gpu_mem_gib") is not None:
        parts.append(f"mem {row['gpu_mem_gib']:.1f} GiB")
    parts.append(_fmt_time(row["time_s"]))
    return "  ".join(parts)


def _console_observer(total_kimg: float, enabled: bool):
    """The loop's Observer for the console: a progress bar (when stderr is a terminal) and one
    logged status line per tick (console and log.txt)."""
    from pcgan.training.loop import Observer

    class ConsoleObserver(Observer):
        def __init__(self):
            self.bar = None

        def start(self, info: dict) -> None:
            resumed = f", resuming at kimg {info['resumed_kimg']:.3f}" if info["resumed_kimg"] is not None else ""
            log.info("training on %s x%d (%s, batch %d, %d grids per pass; data %s; G %.2fM, D %.2fM params; "
                     "%d training grids)%s", info["device"], info["world_size"], info["precision"], info["batch"],
                     info["batch_gpu"], "on the device" if info["data_on_device"] else "streamed",
                     info["G_params"] / 1e6, info["D_params"] / 1e6, info["num_train"], resumed)
            if enabled:
                from tqdm import tqdm
                self.bar = tqdm(total=total_kimg, initial=info["resumed_kimg"] or 0.0, unit="kimg",
                                dynamic_ncols=True, leave=False,
                                bar_format="{l_bar}{bar}| {n:.1f}/{total:g} kimg [{elapsed}<{remaining}]")

        def progress(self, images_seen: int, total: int) -> None:
            if self.bar is not None:
                self.bar.update(images_seen / 1000 - self.bar.n)  # redraws at most every mininterval

        def tick(self, row: dict) -> None:
            log.info(status_line(row, total_kimg))

        def close(self) -> None:
            if self.bar is not None:
                self.bar.close()

    return ConsoleObserver()


class _TqdmHandler(logging.StreamHandler):
    """Log records printed above the progress bar rather than through it."""

    def emit(self, record: logging.LogRecord) -> None:
        from tqdm import tqdm
        try:
            tqdm.write(self.format(record), file=self.stream)
        except Exception:  # noqa: BLE001 - logging must never raise
            self.handleError(record)


def _setup_logging(run_dir: Path | None, is_main: bool) -> list[logging.Handler]:
    """Console handlers that respect the progress bar, plus ``log.txt`` on rank 0."""
    root = logging.getLogger()
    added = []
    for h in list(root.handlers):
        if type(h) is logging.StreamHandler:
            tq = _TqdmHandler(h.stream)
            tq.setFormatter(h.formatter)
            tq.setLevel(h.level)
            root.removeHandler(h)
            root.addHandler(tq)
    if not is_main:
        root.setLevel(logging.WARNING)
    elif run_dir is not None:
        from pcgan.fileio import ensure_writable_dir
        ensure_writable_dir(run_dir)
        if root.getEffectiveLevel() > logging.INFO:  # log.txt gets INFO even when the console is quieter
            root.setLevel(logging.INFO)
        fh = logging.FileHandler(run_dir / "log.txt", encoding="utf-8")
        fh.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        fh.setLevel(logging.INFO)
        root.addHandler(fh)
        added.append(fh)
    return added


# ----------------------------------------------------------------------------------------------
# Config resolution


def _overrides(args) -> list[str]:
    out = list(args.set)
    for flag, key in (("kimg", "train.kimg"), ("minutes", "train.max_minutes"), ("batch", "train.batch"),
                      ("seed", "train.seed"), ("precision", "train.precision")):
        value = getattr(args, flag)
        if value is not None:
            out.append(f"{key}={value}")
    if args.compile:
        out.append("train.compile=true")
    return out


def _state_path(args) -> Path | None:
    """The training state to continue from: --resume, else the run dir's own, else None."""
    from pcgan.checkpoint import STATE_FILE
    from pcgan.errors import PcganError
    if args.resume:
        path = Path(args.resume)
        path = path / STATE_FILE if path.is_dir() else path
        if not path.is_file():
            raise PcganError(f"--resume {args.resume}: no such training state ({path} does not exist)")
        return path
    own = Path(args.out) / STATE_FILE
    return own if own.is_file() else None


def resolve_config(args, state_path: Path | None):
    """The run's config: --config (or the checkpoint's config when resuming) + overrides.

    Returns (config, how messages name it, changes): when resuming, the model section must
    equal the checkpoint's, and ``changes`` lists changed train/augment keys (the resume is then
    no longer bit-exact, by the user's choice)."""
    import yaml

    from pcgan.checkpoint import STATE_SCHEMA, read_checkpoint
    from pcgan.config import load_config, to_dict
    from pcgan.errors import PcganError

    overrides = _overrides(args)
    stored = None
    if state_path is not None:
        stored = read_checkpoint(state_path, STATE_SCHEMA, mmap=True).get("config") or {}
        if isinstance(stored.get("model"), dict):
            for option in ("xyz_on_rays", "d_normals", "g_composite"):   # runs started before an option had it off
                stored["model"].setdefault(option, False)
    if args.config or stored is None:
        cfg = load_config(args.config, overrides)
        name = args.config or "the built-in defaults"
    else:
        with tempfile.TemporaryDirectory() as tmp:  # the stored config, re-validated like a file
            path = Path(tmp) / "config.yaml"
            path.write_text(yaml.safe_dump(stored, sort_keys=False), encoding="utf-8")
            try:
                cfg = load_config(path, overrides)
            except PcganError as exc:
                raise PcganError(str(exc).replace(str(path), f"config stored in {state_path}")) from None
        name = f"the config stored in {state_path}"
    changes = []
    if stored is not None:
        new = to_dict(cfg)
        if new["model"] != stored.get("model"):
            diff = _diff(stored.get("model", {}), new["model"], "model")
            raise PcganError(f"{state_path} was trained with a different model: {diff}; resume with the "
                             f"run's own config (leave --config out) or train into a new --out")
        for section in new:
            if section != "model" and new[section] != stored.get(section):
                changes.append(_diff(stored.get(section, {}), new[section], section))
    return cfg, name, changes


def _diff(old: dict, new: dict, prefix: str) -> str:
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            if a != b:
                out.append(_diff(a, b, f"{prefix}.{key}"))
        elif a != b:
            out.append(f"{prefix}.{key} {a!r} -> {b!r}")
    return ", ".join(out[:6])


# ----------------------------------------------------------------------------------------------


def run(args) -> int:
    from pcgan.errors import PcganError
    from pcgan.training import distributed as dist

    if args.gpus is not None:
        if args.gpus < 1:
            raise PcganError(f"--gpus {args.gpus}: need at least 1")
        if args.device != "cpu":
            import torch
            have = torch.cuda.device_count()
            if have < args.gpus:
                raise PcganError(f"--gpus {args.gpus}, but {have} CUDA device(s) are visible; use --gpus {have}"
                                 if have else f"--gpus {args.gpus}, but no CUDA device is available; for "
                                 f"{args.gpus} CPU processes add --device cpu")
        if args.gpus > 1 and not args.dry_run and not dist.env_from_launcher().distributed:
            if "train" not in sys.argv:
                raise PcganError("--gpus only works from the `pcgan train` command line; use torchrun directly")
            dist.launch(args.gpus, sys.argv[sys.argv.index("train") + 1:])  # does not return

    state_path = _state_path(args)
    run_dir = Path(args.out)
    cfg, config_name, changes = resolve_config(args, state_path)
    if args.dry_run:
        return _dry_run(args, cfg, config_name, state_path)
    from pcgan.dataset import load_dataset
    from pcgan.training.loop import check_dataset
    # a wrong --data fails here, before the run dir is created (train() checks again, for API users)
    check_dataset(load_dataset(args.data).meta, cfg, Path(args.data), config_name)

    env = dist.env_from_launcher()
    old_level = logging.getLogger().level
    handlers = _setup_logging(run_dir, env.is_main)
    for change in changes:
        log.info("resuming with changed settings: %s", change)
    observer = None
    try:
        from pcgan.training.loop import train
        observer = _console_observer(cfg.train.kimg, enabled=env.is_main and sys.stderr.isatty())
        result = train(cfg, args.data, run_dir, device=args.device, resume=state_path, observer=observer,
                       config_name=config_name)
    finally:
        if observer is not None:
            observer.close()
        dist.shutdown()
        for h in handlers:
            logging.getLogger().removeHandler(h)
            h.close()
        logging.getLogger().setLevel(old_level)
    if result.status == "stopped":
        name = signal.Signals(result.signal).name if result.signal else "signal"
        log.info("stopped by %s at kimg %.3f; saved %s. Continue with: pcgan train --data %s --out %s",
                 name, result.images_seen / 1000, result.state, args.data, args.out)
        return 128 + int(result.signal or signal.SIGTERM)
    if result.status == "time":
        log.info("time budget of %g minutes used at kimg %.3f; final snapshot %s. Continue with: "
                 "pcgan train --data %s --out %s", cfg.train.max_minutes, result.images_seen / 1000,
                 result.snapshot, args.data, args.out)
    elif result.snapshot is not None:
        log.info("done: %g kimg; final snapshot %s", result.images_seen / 1000, result.snapshot)
    return 0


def _dry_run(args, cfg, config_name: str, state_path: Path | None) -> int:
    from pcgan.config import to_yaml
    from pcgan.dataset import load_dataset
    from pcgan.training.loop import check_dataset, resolve_device

    dev = resolve_device(args.device)
    ds = load_dataset(args.data)
    check_dataset(ds.meta, cfg, Path(args.data), config_name)
    world = args.gpus or int(os.environ.get("WORLD_SIZE", 1))
    t = cfg.train
    plan = [f"# run dir:  {args.out} ({'resumes ' + str(state_path) if state_path else 'fresh start'})",
            f"# config:   {config_name}",
            f"# dataset:  {args.data}: {len(ds.split('train'))} training grids, channels {' '.join(ds.meta.channels)}, "
            f"{ds.meta.resolution}x{ds.meta.resolution}",
            f"# device:   {dev.type} x{world}, global batch {t.batch} ({t.batch // max(world, 1)} per process)",
            f"# length:   {t.kimg:g} kimg = {math.ceil(t.kimg * 1000 / t.batch)} steps, a tick every {t.tick_kimg:g} kimg"]
    print("\n".join(plan))
    print(to_yaml(cfg), end="")
    return 0

"""Speed of the full training step (G main + G reg + D main + D reg, lazy intervals amortised,
EMA, augmentation, data) as pcgan train runs it: images/s, sec/kimg and MFU, for the fp32
eager baseline and the fast paths, measured in the same run.

    python benchmarks/train_step.py --device cpu                          # demo-cpu-64, CPU paths
    python benchmarks/train_step.py --device cuda                         # faces-256, GPU paths
    python benchmarks/train_step.py --device cuda --paths bf16-cl,bf16-cl-compile --steps 64

Each path is a real ``pcgan.training.loop.train`` run on a synthetic dataset of the config's
resolution: the first tick (``--warmup`` steps: cudnn autotuning, compilation) is discarded
and sec/kimg comes from the ticks after it, from the loop's own stats.jsonl. FLOPs per image
are counted once with torch's FlopCounterMode over one pass of each phase (backward and the
double backward of R1 / path length included), weighted by 1 / interval. MFU divides achieved
FLOP/s by the device's dense peak for the path's precision (table below); on a CPU there is no
table entry, so MFU is left out unless ``--peak-tflops`` is given.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pcgan.config import load_config  # noqa: E402
from pcgan.dataset import write_dataset  # noqa: E402
from pcgan.grid import MASK, Camera, GridMeta, empty_grid  # noqa: E402
from pcgan.networks import Discriminator, Generator  # noqa: E402
from pcgan.training import loop  # noqa: E402
from pcgan.training.augment import AugmentPipe  # noqa: E402
from pcgan.training.loss import StyleGAN2Loss  # noqa: E402

# Dense peak TFLOP/s per device (vendor datasheets, no sparsity): bf16 tensor cores, TF32
# tensor cores, and plain fp32 (CUDA cores). H200 has the H100 SXM compute with more memory.
PEAK_TFLOPS = {
    "H200": {"bf16": 989.0, "tf32": 494.7, "fp32": 66.9},
    "H100 PCIe": {"bf16": 756.0, "tf32": 378.0, "fp32": 51.2},
    "H100": {"bf16": 989.0, "tf32": 494.7, "fp32": 66.9},   # SXM
    "A100": {"bf16": 312.0, "tf32": 156.0, "fp32": 19.5},
}

# path -> config overrides. "fp32" is the baseline: eager, NCHW, TF32 off.
PATHS = {
    "fp32": ["train.precision=fp32", "train.channels_last=false", "train.tf32=false", "train.compile=false"],
    "fp32-cl": ["train.precision=fp32", "train.channels_last=true", "train.tf32=false", "train.compile=false"],
    "tf32-cl": ["train.precision=fp32", "train.channels_last=true", "train.tf32=true", "train.compile=false"],
    "bf16-cl": ["train.precision=bf16", "train.channels_last=true", "train.tf32=true", "train.compile=false"],
    "bf16-cl-compile": ["train.precision=bf16", "train.channels_last=true", "train.tf32=true", "train.compile=true"],
}
DEFAULT_PATHS = {"cpu": "fp32,fp32-cl", "cuda": "fp32,bf16-cl,bf16-cl-compile"}
DEFAULT_CONFIG = {"cpu": "configs/demo-cpu-64.yaml", "cuda": "configs/faces-256.yaml"}


def peak_for(device: torch.device, path: str) -> tuple[str, float | None]:
    """(precision label, dense peak FLOP/s or None) for MFU."""
    precision = "bf16" if path.startswith("bf16") else "tf32" if path.startswith("tf32") else "fp32"
    if device.type != "cuda":
        return precision, None
    name = torch.cuda.get_device_name(device)
    for key, table in PEAK_TFLOPS.items():  # "H100 PCIe" before "H100"
        if key in name:
            return precision, table[precision] * 1e12
    return precision, None


def synthetic_dataset(path: Path, resolution: int, n: int) -> Path:
    """n grids of random smooth blobs in front of the sheet: realistic sizes, content irrelevant."""
    meta = GridMeta(resolution=resolution)
    rng = np.random.default_rng(0)
    base = empty_grid(meta)
    yy, xx = np.mgrid[0:resolution, 0:resolution] / resolution - 0.5
    grids = np.repeat(base[None], n, axis=0)
    for g in grids:
        r = 0.25 + 0.1 * rng.random()
        inside = xx**2 + yy**2 < r**2
        g[2][inside] = 0.5 * np.sqrt(np.maximum(r**2 - xx**2 - yy**2, 0))[inside] / r
        g[3:6][:, inside] = rng.uniform(-0.5, 0.5, size=(3, 1))
        g[MASK][0][inside] = 1.0
    return write_dataset(path, grids, meta, {"files": []})


class FlopCount(TorchDispatchMode):
    """Counts matmul/conv FLOPs of every aten op dispatched, backward and double backward
    included, with torch's own formulas. (FlopCounterMode's module tracker trips over
    torch.autograd.grad on a leaf, which R1 needs.)"""

    def __init__(self):
        super().__init__()
        self.flops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        formula = flop_registry.get(func._overloadpacket)
        if formula is not None:
            self.flops += formula(*args, **kwargs, out_val=out)
        return out


def step_flops(cfg, device: torch.device, batch_gpu: int, channels: int) -> float:
    """Model FLOPs per training image: every phase once, weighted by 1 / its interval."""
    t = cfg.train
    G = Generator(**cfg.model.generator_kwargs(channels, camera=Camera().to_dict(),
                                              background=GridMeta(cfg.model.resolution).empty_pixel())).to(device)
    D = Discriminator(**cfg.model.discriminator_kwargs(channels, camera=Camera().to_dict())).to(device)
    pipe = AugmentPipe(GridMeta(resolution=cfg.model.resolution), cfg.augment).to(device)
    loss = StyleGAN2Loss(G, D, pipe, r1_gamma=t.r1_gamma, style_mixing=t.style_mixing, pl_weight=t.pl_weight,
                         pl_batch_shrink=t.pl_batch_shrink)
    R = cfg.model.resolution
    real = torch.randn(batch_gpu, channels, R, R, device=device)
    z = torch.randn(batch_gpu, cfg.model.z_dim, device=device)
    phases = [("Gmain", 1), ("Dmain", 1)]
    phases += [("Greg", t.pl_interval)] if t.pl_weight > 0 else []
    phases += [("Dreg", t.r1_interval)] if t.r1_gamma > 0 else []
    total = 0.0
    for name, interval in phases:
        G.requires_grad_(name.startswith("G"))
        D.requires_grad_(name.startswith("D"))
        with FlopCount() as counter:
            loss.accumulate_gradients(name, real, z, gain=1.0)
        total += counter.flops / interval
    return total / batch_gpu


def run_path(cfg_path: str, overrides: list[str], data: Path, device: str, warmup: int, steps: int,
             batch: int | None) -> dict:
    extra = [f"train.batch={batch}"] if batch else []
    probe = load_config(cfg_path, overrides + extra)
    b = probe.train.batch
    tick = warmup * b / 1000
    measured_ticks = max(1, round(steps / warmup)) if warmup else 1
    cfg = load_config(cfg_path, overrides + extra + [
        f"train.tick_kimg={tick}", f"train.kimg={tick * (1 + measured_ticks)}", "train.snapshot_ticks=0",
        "train.preview_grids=0", "train.keep_snapshots=1"])
    with tempfile.TemporaryDirectory() as run:
        start = time.perf_counter()
        loop.train(cfg, data, run, device=device)
        wall = time.perf_counter() - start
        rows = [json.loads(line) for line in (Path(run) / "stats.jsonl").read_text().splitlines()]
    timed = rows[1:]  # the first tick held the warm-up
    images = (rows[-1]["kimg"] - rows[0]["kimg"]) * 1000
    seconds = sum(r["sec_per_tick"] for r in timed)
    return {"images_per_s": images / seconds, "sec_per_kimg": seconds / images * 1000, "wall_s": wall,
            "gpu_mem_gib": max((r["gpu_mem_gib"] or 0) for r in rows), "batch": b,
            "G_loss_last": rows[-1].get("Loss/G/loss")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--config", help="config preset (default: demo-cpu-64 on CPU, faces-256 on CUDA)")
    ap.add_argument("--set", action="append", default=[], help="config override, repeatable")
    ap.add_argument("--paths", help=f"comma list from {', '.join(PATHS)} (first = baseline)")
    ap.add_argument("--batch", type=int, help="global batch (default: the config's)")
    ap.add_argument("--warmup", type=int, default=16, help="steps in the discarded first tick")
    ap.add_argument("--steps", type=int, default=32, help="timed steps (rounded to whole ticks of --warmup)")
    ap.add_argument("--grids", type=int, default=64, help="synthetic dataset size")
    ap.add_argument("--threads", type=int, help="torch CPU threads")
    ap.add_argument("--peak-tflops", type=float, help="peak for MFU when the device is not in the table")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    cfg_path = args.config or str(REPO / DEFAULT_CONFIG[device.type])
    paths = (args.paths or DEFAULT_PATHS[device.type]).split(",")
    base_cfg = load_config(cfg_path, args.set + ([f"train.batch={args.batch}"] if args.batch else []))
    R, C = base_cfg.model.resolution, 7
    dev_name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    print(f"# {Path(cfg_path).name} at {R}x{R}, batch {base_cfg.train.batch}, device {dev_name}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads", flush=True)
    flops = step_flops(base_cfg, device, min(base_cfg.train.batch, 4), C)
    print(f"# model FLOPs per training image (all phases, lazy reg amortised): {flops / 1e9:.2f} GFLOP", flush=True)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        data = synthetic_dataset(Path(tmp) / "ds", R, args.grids)
        for path in paths:
            r = run_path(cfg_path, args.set + PATHS[path], data, args.device, args.warmup, args.steps, args.batch)
            precision, peak = peak_for(device, path)
            if peak is None and args.peak_tflops:
                peak = args.peak_tflops * 1e12
            r.update(path=path, precision=precision, tflops=flops * r["images_per_s"] / 1e12,
                     mfu=flops * r["images_per_s"] / peak if peak else None)
            results.append(r)
            print(f"  {path:16s} {r['images_per_s']:9.2f} img/s  {r['sec_per_kimg']:9.2f} sec/kimg  "
                  f"{r['tflops']:7.3f} TFLOP/s  MFU {'%.1f%%' % (100 * r['mfu']) if r['mfu'] else 'n/a'}  "
                  f"(wall {r['wall_s']:.0f} s)", flush=True)
    base = results[0]
    print("\n| path | images/s | sec/kimg | TFLOP/s | MFU | vs " + base["path"] + " |")
    print("|---|---|---|---|---|---|")
    for r in results:
        mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] else "n/a"
        print(f"| {r['path']} | {r['images_per_s']:.2f} | {r['sec_per_kimg']:.2f} | {r['tflops']:.3f} | {mfu} | "
              f"{r['images_per_s'] / base['images_per_s']:.2f}x |")
    if args.json:
        args.json.write_text(json.dumps({"device": dev_name, "config": cfg_path, "gflop_per_image": flops / 1e9,
                                         "results": results}, indent=2))


if __name__ == "__main__":
    main()

"""Throughput of the StyleGAN2 networks: G forward and G+D forward/backward, side by side in
fp32 eager (the baseline), bf16 autocast, and torch.compile variants.

    python benchmarks/networks.py --device cpu                                # demo-cpu-64
    python benchmarks/networks.py --device cuda --config configs/faces-256.yaml --batch 32

Reports images/s, achieved TFLOP/s (FLOPs counted by torch.utils.flop_counter: G forward for
the first, 3 x (G + D) forward for a forward+backward) and the ratio to fp32 eager measured in
the same run. The G+D step is a generator step: G(z) -> D -> softplus loss -> backward
through both networks (what training does for the G main phase). Variants are interleaved and
each keeps its best repeat, so a burst of load on a shared machine does not skew the ratios.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import platform
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pcgan.config import load_config  # noqa: E402
from pcgan.grid import Camera, GridMeta  # noqa: E402
from pcgan.networks import Discriminator, Generator, flops_per_image  # noqa: E402

VARIANTS = ("fp32", "bf16", "fp32-compiled", "bf16-compiled")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, iters: int, device: torch.device) -> float:
    """Seconds per call of fn(), over ``iters`` calls."""
    _sync(device)
    start = time.perf_counter()
    for _ in range(iters):
        fn()
    _sync(device)
    return (time.perf_counter() - start) / iters


def run(args) -> tuple[dict, list[dict]]:
    device = torch.device(args.device)
    cfg = load_config(args.config, args.override).model
    torch.manual_seed(0)
    G = Generator(**cfg.generator_kwargs(channels=args.channels, camera=Camera().to_dict(),
                                        background=GridMeta(cfg.resolution).empty_pixel())).to(device)
    D = Discriminator(**cfg.discriminator_kwargs(channels=args.channels, camera=Camera().to_dict())).to(device)
    if args.channels_last:
        G, D = G.to(memory_format=torch.channels_last), D.to(memory_format=torch.channels_last)
    B = args.batch
    z = torch.randn(B, cfg.z_dim, device=device)
    g_flops = flops_per_image(G, z[:1])
    d_flops = flops_per_image(D, torch.randn(1, args.channels, cfg.resolution, cfg.resolution, device=device))

    def make(variant: str):
        g, d = G, D
        if variant.endswith("compiled"):
            g, d = torch.compile(G), torch.compile(D)
        bf16 = variant.startswith("bf16")

        def autocast():
            return torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()

        def g_forward():
            with torch.no_grad(), autocast():
                g(z)

        def g_d_step():
            G.zero_grad(set_to_none=True)
            D.zero_grad(set_to_none=True)
            with autocast():
                loss = F.softplus(-d(g(z))).mean()
            loss.backward()

        return g_forward, g_d_step

    fns, setup_s = {}, {}
    for variant in args.variants:  # warm up (and compile) every variant first
        t0 = time.perf_counter()
        fns[variant] = make(variant)
        for fn in fns[variant]:
            for _ in range(args.warmup):
                fn()
        _sync(device)
        setup_s[variant] = time.perf_counter() - t0
    # Interleave the variants and keep each one's best repeat: a shared machine's bursts of
    # load then hit every variant alike instead of skewing the ratios.
    best = {v: [math.inf, math.inf] for v in args.variants}
    for _ in range(args.repeats):
        for variant, (g_forward, g_d_step) in fns.items():
            best[variant][0] = min(best[variant][0], _timed(g_forward, args.iters, device))
            best[variant][1] = min(best[variant][1], _timed(g_d_step, args.iters, device))
    rows = []
    for variant, (t_fwd, t_step) in best.items():
        rows.append(dict(variant=variant, g_fwd_img_s=B / t_fwd, g_fwd_tflops=g_flops * B / t_fwd / 1e12,
                         step_img_s=B / t_step, step_tflops=3 * (g_flops + d_flops) * B / t_step / 1e12,
                         warmup_s=setup_s[variant]))
    base = next((r for r in rows if r["variant"] == "fp32"), rows[0])
    for r in rows:
        r["g_fwd_ratio"] = r["g_fwd_img_s"] / base["g_fwd_img_s"]
        r["step_ratio"] = r["step_img_s"] / base["step_img_s"]
    meta = dict(config=str(args.config), resolution=cfg.resolution, batch=B, channels=args.channels,
                g_gflops_per_image=g_flops / 1e9, d_gflops_per_image=d_flops / 1e9,
                device=torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
                threads=torch.get_num_threads(), torch=torch.__version__, iters=args.iters, repeats=args.repeats)
    return meta, rows


def markdown(meta: dict, rows: list[dict]) -> str:
    lines = [f"{meta['config']} (resolution {meta['resolution']}, batch {meta['batch']}, "
             f"{meta['channels']} channels; G {meta['g_gflops_per_image']:.2f} GFLOP/img, "
             f"D {meta['d_gflops_per_image']:.2f} GFLOP/img fwd), {meta['device']}, "
             f"{meta['threads']} threads, torch {meta['torch']}; best of {meta['repeats']} x {meta['iters']} steps",
             "", "| variant | G fwd img/s | G fwd TFLOP/s | vs fp32 | G+D fwd/bwd img/s | TFLOP/s | vs fp32 "
             "| warm-up s |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['variant']} | {r['g_fwd_img_s']:.1f} | {r['g_fwd_tflops']:.4f} | {r['g_fwd_ratio']:.2f}x "
                     f"| {r['step_img_s']:.1f} | {r['step_tflops']:.4f} | {r['step_ratio']:.2f}x | {r['warmup_s']:.0f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cpu or cuda")
    p.add_argument("--config", type=Path, default=None,
                   help="model preset (default: configs/demo-cpu-64.yaml on CPU, configs/faces-256.yaml on GPU)")
    p.add_argument("--override", action="append", default=[], help="config override, e.g. model.channel_base=16384")
    p.add_argument("--channels", type=int, default=7, help="grid channels (x y z r g b mask)")
    p.add_argument("--batch", type=int, default=None, help="images per step (default: 8 on CPU, 32 on GPU)")
    p.add_argument("--iters", type=int, default=None, help="steps per timed repeat (default: 2 on CPU, 10 on GPU)")
    p.add_argument("--repeats", type=int, default=3, help="timed repeats per variant, interleaved; the best counts")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps first (default: 1 CPU, 5 GPU)")
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    p.add_argument("--channels-last", action="store_true", help="channels_last memory format")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's choice)")
    p.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    args = p.parse_args(argv)
    gpu = args.device.startswith("cuda")
    if args.threads:
        torch.set_num_threads(args.threads)
    args.config = args.config or REPO / "configs" / ("faces-256.yaml" if gpu else "demo-cpu-64.yaml")
    args.batch = args.batch or (32 if gpu else 8)
    args.iters = args.iters or (10 if gpu else 2)
    args.warmup = args.warmup if args.warmup is not None else (5 if gpu else 1)
    if gpu:
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False  # true fp32 baseline
    meta, rows = run(args)
    try:
        args.config = args.config.relative_to(REPO)
    except ValueError:
        pass
    meta["config"] = str(args.config)
    print(markdown(meta, rows))
    if args.json:
        args.json.write_text(json.dumps(dict(meta=meta, rows=rows), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

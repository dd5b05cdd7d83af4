"""Speed of the 1-NNA-CD distance matrices: pcgan's pairwise Chamfer against a straightforward
torch.cdist loop, measured in the same run.

    python benchmarks/metrics.py                       # CPU 500 vs 500, and GPU 2000 vs 2000 if CUDA
    python benchmarks/metrics.py --cpu-n 100 --no-gpu  # a small CPU run

1-NNA needs three matrices over clouds of 2,048 points: generated x generated, generated x
reference and reference x reference (PointFlow). The fast path is
``pcgan.metrics.pointcloud.pairwise_chamfer`` ("auto": scipy cKDTree per cloud in threads on the
CPU; blocks of pairs as one GEMM each, chunked, on a GPU; symmetric blocks computed once). The
baseline is the loop a person writes first: for every (i, j) of the three blocks,
``d = torch.cdist(x_i, y_j) ** 2`` and ``d.min(1).mean() + d.min(0).mean()``. The full baseline
would take hours, so it is timed on a random sample of pairs (``--baseline-pairs``) and
extrapolated to all 3 n^2 pairs; the sampled values also check that both paths agree.
Reports wall seconds, pairs/s and the speed-up, plus the process CPU time of each phase (all
threads; on a shared machine it moves less with other jobs' load than wall time does);
``--out`` writes the numbers as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pcgan.metrics import pointcloud as pc  # noqa: E402


def surface_clouds(k: int, n: int, seed: int) -> torch.Tensor:
    """k clouds of n points on random ellipsoids with a little noise: surface-like, as faces."""
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(k, n, 3, generator=g)
    v = v / v.norm(dim=-1, keepdim=True)
    r = torch.rand(k, 1, 3, generator=g) * 0.5 + 0.5
    return v * r + 0.005 * torch.randn(k, n, 3, generator=g)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def baseline_cd(x: torch.Tensor, y: torch.Tensor) -> float:
    d = torch.cdist(x[None], y[None])[0] ** 2
    return float(d.min(1).values.mean() + d.min(0).values.mean())


def run_one(n: int, points: int, device: torch.device, baseline_pairs: int, seed: int, backend: str) -> dict:
    gen = surface_clouds(n, points, seed)
    ref = surface_clouds(n, points, seed + 1)

    _sync(device)
    t0, c0 = time.perf_counter(), time.process_time()
    d_gg = pc.pairwise_chamfer(gen, device=device, backend=backend)
    d_gr = pc.pairwise_chamfer(gen, ref, device=device, backend=backend)
    d_rr = pc.pairwise_chamfer(ref, device=device, backend=backend)
    _sync(device)
    fast_s, fast_cpu = time.perf_counter() - t0, time.process_time() - c0
    nna = pc.one_nn_accuracy(d_gg, d_gr, d_rr)

    # baseline: a random sample of the 3 n^2 (block, i, j) pairs, in one loop
    rng = np.random.default_rng(seed)
    total_pairs = 3 * n * n
    k = min(baseline_pairs, total_pairs)
    picks = rng.choice(total_pairs, size=k, replace=False)
    blocks = [(gen, gen, d_gg), (gen, ref, d_gr), (ref, ref, d_rr)]
    gd, rd = gen.to(device), ref.to(device)
    on_dev = {id(gen): gd, id(ref): rd}
    base_vals, fast_vals = [], []
    with torch.no_grad():
        baseline_cd(gd[0], rd[0])                          # warm-up (CUDA context, kernels)
        _sync(device)
        t0, c0 = time.perf_counter(), time.process_time()
        for p in picks:
            b, rem = divmod(int(p), n * n)
            i, j = divmod(rem, n)
            a, c, _ = blocks[b]
            base_vals.append(baseline_cd(on_dev[id(a)][i], on_dev[id(c)][j]))
        _sync(device)
        base_s_sampled, base_cpu_sampled = time.perf_counter() - t0, time.process_time() - c0
    self_pair = []
    for p in picks:
        b, rem = divmod(int(p), n * n)
        i, j = divmod(rem, n)
        fast_vals.append(float(blocks[b][2][i, j]))
        self_pair.append(b != 1 and i == j)        # a cloud with itself: 0 vs cdist's rounding noise
    base_vals, fast_vals, self_pair = np.array(base_vals), np.array(fast_vals), np.array(self_pair)
    diff = np.abs(base_vals - fast_vals)
    rel = diff[~self_pair] / np.abs(base_vals[~self_pair])
    base_s = base_s_sampled / k * total_pairs
    computed_pairs = n * n + n * (n + 1)                   # the two symmetric blocks once each
    return {
        "n": n, "points": points, "device": str(device),
        "backend": backend if backend != "auto" else ("kdtree" if device.type == "cpu" else "torch"),
        "fast_s": fast_s, "fast_pairs_per_s": computed_pairs / fast_s,
        "baseline_pairs_timed": k, "baseline_s_timed": base_s_sampled,
        "baseline_s_extrapolated": base_s, "baseline_pairs_per_s": k / base_s_sampled,
        "speedup": base_s / fast_s, "one_nna_cd": nna,
        # CPU seconds of this process (all threads): steadier than wall time on a shared machine
        "fast_cpu_s": fast_cpu, "baseline_cpu_s_extrapolated": base_cpu_sampled / k * total_pairs,
        "speedup_cpu_time": (base_cpu_sampled / k * total_pairs) / max(fast_cpu, 1e-9),
        "max_rel_diff_vs_baseline": float(rel.max()) if len(rel) else None,
        "max_abs_diff_vs_baseline": float(diff.max()),
    }


def describe_cpu() -> str:
    return f"CPU ({os.cpu_count()} cores, {platform.processor() or platform.machine()})"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cpu-n", type=int, default=500, help="clouds per set on the CPU (0: skip the CPU run)")
    p.add_argument("--gpu-n", type=int, default=2000, help="clouds per set on the GPU")
    p.add_argument("--no-gpu", action="store_true", help="skip the GPU run even when CUDA is there")
    p.add_argument("--points", type=int, default=2048, help="points per cloud")
    p.add_argument("--baseline-pairs", type=int, default=300,
                   help="pairs the cdist loop is timed on (then extrapolated to all 3 n^2)")
    p.add_argument("--cpu-backend", default="auto", choices=["auto", "kdtree", "torch"],
                   help="fast path on the CPU")
    p.add_argument("--seed", type=int, default=0, help="seed for the clouds and the sampled pairs")
    p.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = p.parse_args(argv)

    runs = []
    if args.cpu_n > 0:
        runs.append((args.cpu_n, torch.device("cpu"), args.cpu_backend))
    if torch.cuda.is_available() and not args.no_gpu and args.gpu_n > 0:
        runs.append((args.gpu_n, torch.device("cuda"), "auto"))
    results = []
    for n, device, backend in runs:
        r = run_one(n, args.points, device, args.baseline_pairs, args.seed, backend)
        r["hardware"] = torch.cuda.get_device_name(device) if device.type == "cuda" else describe_cpu()
        results.append(r)
        print(f"{r['hardware']}: 1-NNA-CD matrices, {n} vs {n} clouds x {args.points} points "
              f"({r['backend']}):\n"
              f"  pcgan pairwise_chamfer  {r['fast_s']:10.1f} s   ({r['fast_pairs_per_s']:,.0f} pairs/s)\n"
              f"  torch.cdist loop        {r['baseline_s_extrapolated']:10.1f} s   "
              f"({r['baseline_pairs_per_s']:,.1f} pairs/s, timed on {r['baseline_pairs_timed']} pairs)\n"
              f"  speed-up {r['speedup']:.1f}x wall, {r['speedup_cpu_time']:.1f}x in process CPU time "
              f"({r['fast_cpu_s']:.0f} vs {r['baseline_cpu_s_extrapolated']:.0f} CPU s)\n"
              f"  1-NNA-CD {r['one_nna_cd']:.4f}   "
              f"vs baseline: max rel. diff {r['max_rel_diff_vs_baseline'] or 0:.1e} "
              f"(abs {r['max_abs_diff_vs_baseline']:.1e})", flush=True)
    if not runs:
        print("nothing to run (use --cpu-n, or a CUDA device for --gpu-n)")
    if args.out:
        args.out.write_text(json.dumps({"torch": torch.__version__, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

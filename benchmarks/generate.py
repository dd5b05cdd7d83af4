"""Generation + export on the CPU: is writing files the bottleneck, or the network?

    python benchmarks/generate.py                               # 20 faces at 256^2, config F width
    python benchmarks/generate.py --faces 40 --channel-base 32768,16384 --formats ply

Runs what ``pcgan generate`` runs, step by step (``--batch`` faces per step): the network
(``pcgan.generate.iter_generate``: one face per network call, seeded z and noise) and then the
export of the step's grids (``export_grids`` with ``--workers`` threads of one torch thread
each, as the CLI does), timing the two separately in the same run. A freshly initialised
generator has the trained one's cost (the same layers and FLOPs); its grids have ~50% surface
pixels, like a cropped face. Also, in the same run and on the same grids:

- the network with a whole step in one call (``per_face=False``), to show what computing faces
  one at a time (which keeps the bytes independent of --batch) costs on the CPU;
- export alone as grids/s for each format, 1 and ``--workers`` threads.

Prints a markdown table per channel width. Files go to a temporary directory (--tmp).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pcgan.export import export_grids, parse_formats  # noqa: E402
from pcgan.generate import iter_generate, torch_threads  # noqa: E402
from pcgan.grid import MASK, GridMeta  # noqa: E402
from pcgan.networks import Generator, flops_per_image, z_from_seeds  # noqa: E402


def clock():
    return time.perf_counter(), time.process_time()


def since(t0) -> tuple[float, float]:
    return time.perf_counter() - t0[0], time.process_time() - t0[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--res", type=int, default=256)                       # grid resolution
    ap.add_argument("--faces", type=int, default=20)                      # faces per timing
    ap.add_argument("--channel-base", default="32768")                    # comma list; 32768 = config F (configs/faces-256.yaml)
    ap.add_argument("--channel-max", type=int, default=512)
    ap.add_argument("--formats", default="ply,png")                       # what `pcgan generate` writes by default
    ap.add_argument("--batch", type=int, default=8)                       # faces per step (--batch)
    ap.add_argument("--workers", type=int, default=2)                     # export threads (--workers)
    ap.add_argument("--tmp", default=None)                                # where files are written
    args = ap.parse_args()

    formats = parse_formats(args.formats)
    meta = GridMeta(resolution=args.res, center=(0.0, 0.0, 600.0), scale=90.0, units="mm")
    threads = torch.get_num_threads()
    print(f"# generate benchmark: {args.faces} faces at {args.res}^2, formats {','.join(formats)}, batch {args.batch}, "
          f"{args.workers} export workers, {os.cpu_count()} CPUs, {threads} torch threads for the network, "
          f"torch {torch.__version__}, {platform.python_implementation()} {platform.python_version()}, "
          f"load average {os.getloadavg()[0]:.1f} at start")
    for base in (int(b) for b in args.channel_base.split(",")):
        torch.manual_seed(0)
        G = Generator(resolution=args.res, channels=meta.num_channels, channel_base=base,
                      channel_max=args.channel_max).eval().requires_grad_(False)
        gflop = flops_per_image(G, z_from_seeds([0, 1], G.z_dim), noise_mode="const") / 1e9
        list(iter_generate(G, [10**6], batch=1))                          # warm-up (allocator, kernels)

        seeds = list(range(args.faces))
        net, exp = [0.0, 0.0], [0.0, 0.0]
        grids_all, fill = [], []
        with tempfile.TemporaryDirectory(dir=args.tmp) as d:
            out = Path(d) / "gen"
            steps = iter_generate(G, seeds, 1.0, None, "const", args.batch)
            while True:
                t = clock()
                step = next(steps, None)
                w, c = since(t)
                if step is None:
                    break
                net[0] += w
                net[1] += c
                chunk, grids = step
                t = clock()
                with torch_threads(1):
                    export_grids(grids, meta, out, names=[f"seed{s:06d}" for s in chunk], formats=formats,
                                 workers=args.workers)
                w, c = since(t)
                exp[0] += w
                exp[1] += c
                grids_all.append(grids)
                fill.append(float((grids[:, MASK.start] > 0).float().mean()))
            grids = torch.cat(grids_all)

            t = clock()                                                    # batched network, same faces
            for _ in iter_generate(G, seeds, 1.0, None, "const", args.batch, per_face=False):
                pass
            batched = since(t)

            alone = {}
            for fmt in formats:
                for workers in sorted({1, args.workers}):
                    t = clock()
                    with torch_threads(1):
                        export_grids(grids, meta, Path(d) / f"{fmt}{workers}", formats=fmt, workers=workers)
                    alone[fmt, workers] = since(t)

        n = args.faces
        print(f"\n## channel_base {base}, channel_max {args.channel_max}: "
              f"{sum(p.numel() for p in G.parameters()) / 1e6:.1f}M parameters, {gflop:.1f} GFLOP per face, "
              f"{sum(fill) / len(fill):.0%} surface pixels\n")
        print("| stage | s/face (wall) | CPU s/face | share of wall time |")
        print("|---|---|---|---|")
        total = net[0] + exp[0]
        print(f"| network, one face per call (what `pcgan generate` runs) | {net[0] / n:.3f} | {net[1] / n:.3f} | {net[0] / total:.0%} |")
        print(f"| export {','.join(formats)} ({args.workers} threads) | {exp[0] / n:.3f} | {exp[1] / n:.3f} | {exp[0] / total:.0%} |")
        print(f"| **generate + export** | {total / n:.3f} | {(net[1] + exp[1]) / n:.3f} | 100% |")
        print(f"| (network, {args.batch} faces per call, same faces) | {batched[0] / n:.3f} | {batched[1] / n:.3f} | "
              f"{batched[0] / net[0]:.2f}x the per-face time |")
        print(f"\nnetwork / export time: {net[0] / exp[0]:.1f}x; 1,000 faces would take ~{1000 * total / n / 60:.1f} min, "
              f"of which export ~{1000 * exp[0] / n / 60:.1f} min\n")
        print("| export alone | threads | grids/s (wall) | CPU ms/grid |")
        print("|---|---|---|---|")
        for (fmt, workers), (w, c) in alone.items():
            print(f"| {fmt} | {workers} | {n / w:.1f} | {1000 * c / n:.1f} |")
    print(f"\n# load average {os.getloadavg()[0]:.1f} at end (above the CPU count: other jobs shared the cores)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

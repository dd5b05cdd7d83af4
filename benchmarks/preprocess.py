"""Preprocessing throughput: scans/s of `pcgan preprocess` for meshes, on CPU.

    python benchmarks/preprocess.py                      # 20k and 200k triangles, 128 and 256, 1 and 2 workers
    python benchmarks/preprocess.py --sizes 20k --res 256 --workers 2 --scans 120

Input: distinct procedural faces (``data_tools.synth_faces``) with ~20k or ~200k triangles,
written as binary .ply with vertex colours (the format `pcgan synth-faces` writes), in mm.
Generating them is not timed. Each configuration runs the whole command in this process
(``pcgan.cli.main``) into a fresh dataset directory (no cache), so the time includes hashing,
loading, canonicalisation, rendering, the cache writes, assembling grids.npy, stats,
dataset.json and preview.png, and for 2 workers the start of the worker processes (forked
from an already-running forkserver: a warm-up run first pays the imports, once per process).

Two canonicalisation modes:

    known pose   --orient none --scale 120: the scans are already y up / facing +z (the
                 scanner's frame), one pass (load, centre, render)
    default      --orient auto --scale auto: symmetry + nose search per scan, and the two
                 passes that the automatic dataset scale needs (every scan is loaded twice)

Prints scans/s (wall), CPU ms per scan (this process and its workers, all threads) and the
ratio to the baseline of the same run: 1 worker, 128x128, 20k triangles, known pose.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import platform
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pcgan.cli import main  # noqa: E402

SIZES = {"20k": 100, "200k": 320}          # synth_faces resolution -> ~19.6k / ~203k triangles
MODES = {"known pose": ["--orient", "none", "--scale", "120"], "default": []}


def make_scans(folder: Path, size: str, count: int) -> list[Path]:
    from data_tools.synth_faces import make_face, sample_params, write_face

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / f"face{i:04d}.ply"
        if not path.exists():
            write_face(make_face(sample_params(np.random.default_rng([7, i])), resolution=SIZES[size]), path)
        paths.append(path)
    return paths


def cpu_seconds() -> float:
    """CPU time of this process, its reaped children and, with psutil, its live descendants
    with what they reaped (the forkserver keeps running and reaps the workers)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    total = me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime
    try:
        import psutil
    except ImportError:
        return total
    for child in psutil.Process().children(recursive=True):
        try:
            t = child.cpu_times()
            total += t.user + t.system + t.children_user + t.children_system
        except psutil.Error:
            pass
    return total


def run_once(scans: list[Path], out: Path, res: int, workers: int, mode: str) -> tuple[float, float]:
    """Wall seconds and CPU seconds of one `pcgan preprocess` run into a fresh directory."""
    shutil.rmtree(out, ignore_errors=True)
    args = ["preprocess", *map(str, scans), "--out", str(out), "--res", str(res), "--workers", str(workers),
            *MODES[mode]]
    sink = io.StringIO()
    c0, t0 = cpu_seconds(), time.perf_counter()
    with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        rc = main(args)
    wall, cpu = time.perf_counter() - t0, cpu_seconds() - c0
    if rc != 0:
        raise SystemExit(f"preprocess failed ({rc}):\n{sink.getvalue()}")
    shutil.rmtree(out, ignore_errors=True)
    return wall, cpu


def main_bench() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="20k,200k", help="mesh sizes: 20k, 200k")
    ap.add_argument("--res", default="128,256", help="grid resolutions")
    ap.add_argument("--workers", default="1,2", help="worker counts")
    ap.add_argument("--modes", default="known pose,default", help="canonicalisation modes (see the docstring)")
    ap.add_argument("--scans", type=int, default=60, help="scans per run for 20k meshes (200k: a fifth)")
    ap.add_argument("--tmp", default=None, help="where scans and datasets go (default: system temp)")
    args = ap.parse_args()

    tmp = Path(args.tmp or tempfile.mkdtemp(prefix="pcgan-bench-"))
    sizes = args.sizes.split(",")
    ress = [int(r) for r in args.res.split(",")]
    workers = [int(w) for w in args.workers.split(",")]
    modes = args.modes.split(",")
    scans = {s: make_scans(tmp / f"scans{s}", s, args.scans if s == "20k" else max(4, args.scans // 5))
             for s in sizes}
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
          f"load average at start {os.getloadavg()[0]:.1f}")
    print("| triangles | mode | res | workers | scans | scans/s (wall) | CPU ms/scan | vs baseline (wall) |")
    print("|---|---|---|---|---|---|---|---|")
    # Warm-up, untimed: the first run in a process pays the imports (torch, Open3D) and, with
    # workers, starts the forkserver; every timed run below then measures steady-state work.
    for w in workers:
        run_once(scans[sizes[0]][:2], tmp / "ds", ress[0], w, modes[0])
    baseline = None
    for mode in modes:
        for size in sizes:
            for res in ress:
                for w in workers:
                    wall, cpu = run_once(scans[size], tmp / "ds", res, w, mode)
                    n = len(scans[size])
                    rate = n / wall
                    if baseline is None and (mode, size, res, w) == ("known pose", "20k", 128, 1):
                        baseline = rate
                    ratio = f"{rate / baseline:.2f}x" if baseline else "-"
                    print(f"| {size} | {mode} | {res} | {w} | {n} | {rate:.1f} | {1000 * cpu / n:.0f} | {ratio} |",
                          flush=True)
    print(f"# load average at end {os.getloadavg()[0]:.1f}")
    if not args.tmp:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main_bench()

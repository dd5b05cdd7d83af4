"""Headless rendering throughput: `pcgan render` of many point clouds to 512x512 PNGs, per backend.

    python benchmarks/render.py                         # 100 clouds of 65,536 points, 512 px, all backends
    python benchmarks/render.py --clouds 20 --backends numpy,egl --mode lit

Writes ``--clouds`` distinct face-sized point clouds (a bumpy, coloured sphere cap sampled on
a 256x256 grid: 65,536 points with colours and normals, in mm) as binary .ply, then times the
real command, one process per backend, exactly as a user runs it::

    pcgan render CLOUD_000.ply ... CLOUD_099.ply --out OUT/ --size 512 --backend B

(one PNG per cloud: read, frame, splat or rasterise, write). Wall time includes the process
start (Python, torch and Open3D imports, GL context). The ``egl`` backend (Open3D's legacy
renderer, what ``auto`` picks when it works) is the baseline the others are compared with in
the same run. An in-process breakdown (read / draw / PNG) of the numpy path follows.
Target (issue 6): 100 clouds in under 60 s on 2 cores.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pcgan.export import write_point_ply  # noqa: E402


def make_clouds(out: Path, n: int, side: int = 256, seed: int = 0) -> list[Path]:
    """``n`` distinct clouds of ``side**2`` points: a sphere cap of radius ~90 mm with bumps,
    colours varying over the surface, normals from the analytic surface."""
    rng = np.random.default_rng(seed)
    u = np.linspace(-1, 1, side)
    x, y = np.meshgrid(u, u, indexing="xy")
    paths = []
    for k in range(n):
        fx, fy = rng.uniform(2, 6, 2)
        r2 = np.minimum(x ** 2 + y ** 2, 1.0)
        z = np.sqrt(1.0 - 0.7 * r2) + 0.04 * np.sin(fx * x) * np.cos(fy * y)
        pts = np.stack([x * 80, y * 100, z * 60 + 500], -1).reshape(-1, 3)
        gx, gy = np.gradient(z * 60, u * 80, u * 100)[::-1]
        nrm = np.stack([-gx, -gy, np.ones_like(gx)], -1).reshape(-1, 3)
        nrm /= np.linalg.norm(nrm, axis=1, keepdims=True)
        col = np.clip(np.stack([0.6 + 0.3 * x, 0.45 + 0.2 * y, 0.35 + 0.1 * np.sin(5 * x)], -1).reshape(-1, 3)
                      + 0.03 * rng.standard_normal((side * side, 3)), 0, 1)
        paths.append(write_point_ply(out / f"cloud_{k:03d}.ply", pts, col, nrm))
    return paths


def time_cli(paths: list[Path], backend: str, size: int, mode: str, out: Path) -> dict:
    """Run ``pcgan render`` in a child process; wall and child CPU seconds."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-m", "pcgan", "render", *map(str, paths), "--out", f"{out}/",
                          "--size", str(size), "--backend", backend, "--mode", mode],
                         capture_output=True, text=True, cwd=REPO)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    ok = res.returncode == 0 and len(list(out.glob("*.png"))) == len(paths)
    return {"backend": backend, "ok": ok, "wall": wall, "cpu": cpu,
            "msg": (res.stdout + res.stderr).strip().splitlines()[-1] if not ok else res.stdout.strip()}


def breakdown(paths: list[Path], size: int, mode: str, out: Path) -> dict:
    """Seconds per stage of the numpy path, in this process."""
    from viewers import render
    from viewers.loading import load_path

    be = render.get_backend("numpy", size)
    t = {"read": 0.0, "draw": 0.0, "png": 0.0}
    for k, p in enumerate(paths):
        t0 = time.perf_counter()
        item = load_path(p)[0]
        t1 = time.perf_counter()
        pic = render.render_item(item, [0.0], size, mode, be)
        t2 = time.perf_counter()
        render.write_png(out / f"{k}.png", render.contact_sheet(pic[None], [item.name]))
        t3 = time.perf_counter()
        t["read"] += t1 - t0
        t["draw"] += t2 - t1
        t["png"] += t3 - t2
    return t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clouds", type=int, default=100)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--mode", default="color")
    ap.add_argument("--backends", default="numpy,egl,filament")
    ap.add_argument("--tmp", default=None, help="scratch directory (default: system temp)")
    args = ap.parse_args()

    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
          f"load average at start {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        tmp = Path(tmp)
        (tmp / "clouds").mkdir()
        t0 = time.perf_counter()
        paths = make_clouds(tmp / "clouds", args.clouds)
        mb = sum(p.stat().st_size for p in paths) / 2**20
        print(f"# {len(paths)} clouds x 65,536 points ({mb:.0f} MB of .ply) written in {time.perf_counter() - t0:.1f} s")
        rows = []
        for b in args.backends.split(","):
            r = time_cli(paths, b, args.size, args.mode, tmp / f"out_{b}")
            rows.append(r)
            print(f"#   {b}: {'ok' if r['ok'] else 'FAILED'} {r['wall']:.1f} s -- {r['msg']}", flush=True)
        base = next((r for r in rows if r["backend"] == "egl" and r["ok"]), None)
        print("\n| backend | clouds | size | mode | wall s | clouds/s (wall) | child CPU s | speed-up vs egl (wall) | under 60 s |")
        print("|---|---|---|---|---|---|---|---|---|")
        for r in rows:
            if not r["ok"]:
                print(f"| {r['backend']} | - | - | - | failed: {r['msg'][:80]} | | | | |")
                continue
            ratio = f"{base['wall'] / r['wall']:.2f}x" if base else "n/a"
            print(f"| {r['backend']} | {len(paths)} | {args.size} | {args.mode} | {r['wall']:.1f} | "
                  f"{len(paths) / r['wall']:.2f} | {r['cpu']:.1f} | {ratio} | {'yes' if r['wall'] < 60 else 'no'} |")
        (tmp / "inproc").mkdir()
        t = breakdown(paths, args.size, args.mode, tmp / "inproc")
        n = len(paths)
        print(f"\nnumpy path in-process, ms per cloud: read {1000 * t['read'] / n:.1f}, "
              f"draw {1000 * t['draw'] / n:.1f}, png {1000 * t['png'] / n:.1f}")
    print(f"# load average at end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()

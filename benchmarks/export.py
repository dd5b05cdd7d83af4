"""Export throughput: grids/s for writing .ply point clouds, meshes and previews, on CPU.

    python benchmarks/export.py                          # 256^2, 60 grids, 1 and 2 worker threads
    python benchmarks/export.py --res 128 --grids 200 --formats ply

Times ``pcgan.export.export_grids`` alone (no network) on face-sized synthetic grids (a
sphere cap with bumps and noisy colour filling about half the grid, like a cropped face) and,
in the same run, a plain baseline for each format on the same grids:

    ply    ASCII .ply via np.savetxt (x y z r g b nx ny nz), after the same grid_to_points
    mesh   trimesh's default path: Trimesh(..., process=True).export("x.ply")
    obj    trimesh's default path: Trimesh(..., process=True).export("x.obj")
    png    PIL at its default zlib level (6) of the same preview image

and prints grids/s, ms/grid and the ratio to the baseline (same thread count). Files go to a
temporary directory on the same disk as --tmp (default: the system temp dir).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pcgan.export import export_grids, preview_image  # noqa: E402
from pcgan.grid import MASK, RGB, XYZ, GridMeta, empty_grid, grid_to_mesh, grid_to_points, rgb_to_grid  # noqa: E402


def face_like_grids(meta: GridMeta, n: int, seed: int = 0) -> np.ndarray:
    """``n`` distinct grids ``[n, C, H, W]`` float32: bumpy sphere caps, ~50% of pixels surface."""
    rng = np.random.default_rng(seed)
    origins, dirs = meta.camera.rays(meta.resolution)                   # [H, W, 3]
    out = np.empty((n, meta.num_channels, meta.resolution, meta.resolution), dtype=np.float32)
    for k in range(n):
        g = empty_grid(meta)
        radius = 0.9 + 0.05 * rng.standard_normal()
        oc = origins
        a, b = (dirs ** 2).sum(-1), 2 * (oc * dirs).sum(-1)
        disc = b ** 2 - 4 * a * ((oc ** 2).sum(-1) - radius ** 2)
        hit = disc > 0
        t = (-b - np.sqrt(np.where(hit, disc, 0))) / (2 * a)
        pts = origins + t[..., None] * dirs
        fx, fy = rng.uniform(2, 6, 2)
        pts[..., 2] += 0.03 * np.sin(fx * pts[..., 0]) * np.cos(fy * pts[..., 1])   # bumps
        hit &= pts[..., 1] > -0.8                                        # a chin line
        col = np.clip(0.5 + 0.3 * pts + 0.05 * rng.standard_normal(pts.shape), 0, 1)
        g[XYZ][:, hit] = pts[hit].T
        g[RGB][:, hit] = rgb_to_grid(col[hit]).T
        g[MASK][:, hit] = 1.0
        out[k] = g
    return out


def baseline(fmt: str, grids: np.ndarray, meta: GridMeta, out: Path) -> None:
    for i, g in enumerate(grids):
        if fmt == "ply":
            pts, cols, nrm = grid_to_points(g, meta, return_normals=True)
            rows = np.concatenate([pts, np.rint(cols * 255), nrm], axis=1)
            header = ("ply\nformat ascii 1.0\nelement vertex %d\nproperty float x\nproperty float y\n"
                      "property float z\nproperty uchar red\nproperty uchar green\nproperty uchar blue\n"
                      "property float nx\nproperty float ny\nproperty float nz\nend_header" % len(pts))
            np.savetxt(out / f"{i}.ply", rows, fmt="%.7g %.7g %.7g %d %d %d %.7g %.7g %.7g",
                       header=header, comments="")
        elif fmt in ("mesh", "obj"):
            import trimesh
            m = grid_to_mesh(g, meta)
            tm = trimesh.Trimesh(m.vertices, m.faces, vertex_colors=m.colors, vertex_normals=m.normals)
            tm.export(out / (f"{i}.ply" if fmt == "mesh" else f"{i}.obj"))
        elif fmt == "png":
            from PIL import Image
            Image.fromarray(preview_image(g, meta)).save(out / f"{i}.png")
        elif fmt == "npy":
            np.save(out / f"{i}.npy", g)


def timed(fn, repeats: int) -> tuple[float, float]:
    """Best wall seconds and best CPU seconds (this process, all threads) over ``repeats`` calls.
    CPU time is the steadier number on a machine shared with other jobs."""
    wall, cpu = [], []
    for r in range(repeats):
        w, c = time.perf_counter(), time.process_time()
        fn(r)
        wall.append(time.perf_counter() - w)
        cpu.append(time.process_time() - c)
    return min(wall), min(cpu)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--res", type=int, default=256)                     # grid resolution
    ap.add_argument("--grids", type=int, default=60)                    # grids per timing
    ap.add_argument("--formats", default="ply,mesh,png,obj")            # each timed on its own
    ap.add_argument("--workers", default="1,2")                         # thread counts to try
    ap.add_argument("--repeats", type=int, default=3)                   # best of N (shared machines are noisy)
    ap.add_argument("--tmp", default=None)                              # where files are written
    args = ap.parse_args()

    meta = GridMeta(resolution=args.res, center=(0.0, 0.0, 600.0), scale=90.0, units="mm")
    grids = face_like_grids(meta, args.grids)
    fill = float((grids[:, MASK.start] > 0).mean())
    print(f"# export benchmark: {args.grids} grids at {args.res}^2, {fill:.0%} surface pixels, "
          f"{os.cpu_count()} CPUs, torch {torch.__version__}, {platform.python_implementation()} "
          f"{platform.python_version()}, best of {args.repeats}, load average {os.getloadavg()[0]:.1f} at start")
    print("| format | workers | grids/s (wall) | CPU ms/grid | baseline grids/s (wall) | baseline CPU ms/grid "
          "| speed-up (CPU time) | baseline |")
    print("|---|---|---|---|---|---|---|---|")
    names = {"ply": "ASCII ply, np.savetxt", "mesh": "trimesh default export (.ply)",
             "obj": "trimesh default export (.obj)", "png": "PIL PNG, default level 6", "npy": "np.save"}
    n = len(grids)
    for fmt in args.formats.split(","):
        base = None
        for workers in (int(w) for w in args.workers.split(",")):
            torch.set_num_threads(1)    # as `pcgan export` does: parallelism comes from the workers
            with tempfile.TemporaryDirectory(dir=args.tmp) as d:
                # a fresh directory per repeat: replacing existing files costs ext4 a flush each
                ours = timed(lambda r: export_grids(grids, meta, Path(d) / f"ours{r}", formats=fmt,
                                                    workers=workers), args.repeats)
                if base is None:
                    def run_base(r):
                        (Path(d) / f"base{r}").mkdir()
                        baseline(fmt, grids, meta, Path(d) / f"base{r}")
                    base = timed(run_base, args.repeats)
            print(f"| {fmt} | {workers} | {n / ours[0]:.1f} | {1000 * ours[1] / n:.1f} | {n / base[0]:.1f} | "
                  f"{1000 * base[1] / n:.1f} | {base[1] / ours[1]:.1f}x | {names[fmt]} |")
    print(f"# load average {os.getloadavg()[0]:.1f} at end (above the CPU count, other jobs shared the cores)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

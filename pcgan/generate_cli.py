"""``pcgan generate``: faces from seeds as .ply point clouds, meshes, .npy grids and previews.

Also the flags that ``pcgan mix`` and ``pcgan interpolate`` share with it (``--ckpt``,
``--trunc``, ``--cutoff``, ``--noise-mode``, ``--class``, ``--batch``, ``--device``, the
export options), declared and checked here once.
"""

from __future__ import annotations

import argparse
import logging
import sys

from pcgan.errors import PcganError
from pcgan.export import FORMATS, parse_formats
from pcgan.export_cli import add_export_arguments  # noqa: F401 - shared with mix and interpolate
from pcgan.networks import NOISE_MODES
from pcgan.ranges import format_index_list, parse_index_list

log = logging.getLogger(__name__)

HELP = "generate faces from seeds: .ply point clouds (scan units), meshes, .npy grids, PNG previews"

EPILOG = f"""\
files (OUT/seedNNNNNN + suffix, one set per seed; --format, comma separated):
  ply    seed000042.ply        point cloud of the surface pixels in the scans' units (the dataset
                               normalisation stored in the checkpoint undone): x y z, red green blue, nx ny nz
  mesh   seed000042_mesh.ply   mesh from grid connectivity
  obj    seed000042.obj        the same mesh as OBJ
  npy    seed000042.npy        the raw grid [C, H, W] (normalised units)
  png    seed000042.png        preview: RGB | depth colour map | normal shading

Seed s is always the same face: its latent and its noise come from a generator seeded with s,
and each face is computed on its own, so its files are byte-identical whatever --batch and
whatever other seeds are listed. Files are written under temporary names and renamed when
complete. Exit status: 0 all written, 1 some faces skipped (listed), 2 bad input.

examples:
  # 100 faces from a run's newest snapshot, truncated for cleaner faces
  pcgan generate --ckpt runs/faces256 --seeds 0-99 --trunc 0.7 --out out/faces

  # everything for three seeds from one snapshot file, on the CPU
  pcgan generate --ckpt runs/faces256/network-snapshot-010000.pt --seeds 1,5,42 --out out/three \\
      --format {",".join(FORMATS)} --device cpu

  # truncate only the coarse styles (pose, shape), keep fine detail; per-seed random noise
  pcgan generate --ckpt runs/faces256 --seeds 0-9 --trunc 0.5 --cutoff 4 --noise-mode random --out out/c4

  # cleaned-up clouds: statistical outlier removal (20 neighbours, 2 std), then 1.5 mm voxels
  pcgan generate --ckpt runs/faces256 --seeds 0-9 --format ply --outlier-removal 20,2.0 --voxel 1.5 --out out/clean
"""


# ---------------------------------------------------------------------------------------------
# Shared flags (generate, mix, interpolate)


def add_model_arguments(parser: argparse.ArgumentParser, ckpt_required: bool = True) -> None:
    """--ckpt, --trunc, --cutoff, --noise-mode, --class, --batch, --batched-network, --device."""
    parser.add_argument("--ckpt", required=ckpt_required, metavar="RUN_OR_FILE",
                        help="a network-snapshot-*.pt, a training-state.pt, or a run directory (its newest "
                             "snapshot by the progress stored inside); GPU-made files load on a CPU")
    parser.add_argument("--trunc", type=float, default=1.0, metavar="PSI",
                        help="truncation psi in [0, 2]: 1 none, 0.7 cleaner faces, 0 the average face (default: %(default)s)")
    parser.add_argument("--cutoff", type=int, default=None, metavar="L",
                        help="truncate only style layers < L (default: all)")
    parser.add_argument("--noise-mode", default="const", choices=NOISE_MODES,
                        help="per-pixel noise: const (the learned maps), random (seeded per face), "
                             "none (default: %(default)s)")
    parser.add_argument("--class", dest="class_index", type=int, default=None, metavar="K",
                        help="class index for a conditional generator")
    parser.add_argument("--batch", type=int, default=8, metavar="B",
                        help="faces per step (default: %(default)s)")
    parser.add_argument("--batched-network", action="store_true",
                        help="run each step's faces through the network in one call: faster (~1.5x on a CPU), "
                             "the same faces to ~1e-5, but then .ply bytes may depend on --batch")
    parser.add_argument("--device", default="auto", metavar="DEV",
                        help="cuda, cpu, cuda:1, ... (default: auto = cuda when available)")


def parse_seeds(text: str, what: str = "seed") -> list[int]:
    """``"0-99"``, ``"1,5,9"`` -> seeds; a range like ``5-2`` or a negative seed is an error."""
    seeds = parse_index_list(text, what)
    if seeds and max(seeds) >= 2**63:
        raise PcganError(f"{what} {max(seeds)} is too large: seeds must be below 2**63")
    return seeds


def check_model_arguments(args) -> None:
    """Checks that need no checkpoint, so a typo fails before the load."""
    from pcgan.generate import check_batch, check_psi

    check_psi(args.trunc)
    check_batch(args.batch)
    if args.cutoff is not None and args.cutoff < 0:
        raise PcganError(f"--cutoff {args.cutoff}: must be >= 0")


def check_export_arguments(args):
    """-> (formats, outlier_removal) after validating --format, --outlier-removal, --voxel, --workers."""
    from pcgan.export_cli import parse_outlier_removal

    formats = parse_formats(args.format)
    outlier_removal = parse_outlier_removal(args.outlier_removal)
    if args.voxel is not None and not args.voxel > 0:
        raise PcganError(f"--voxel {args.voxel}: must be positive (in the scans' units)")
    if args.workers < 1:
        raise PcganError(f"--workers {args.workers}: must be >= 1")
    return formats, outlier_removal


def load_model(args):
    """-> (G, meta, info, c): the generator on --device, its grid meta, checkpoint info, condition."""
    import torch

    from pcgan.checkpoint import load_generator
    from pcgan.generate import check_cutoff, class_vector

    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(device)
    except RuntimeError:
        raise PcganError(f"--device {args.device!r}: use cpu, cuda or cuda:N") from None
    G, meta, info = load_generator(args.ckpt, device)
    check_cutoff(args.cutoff, G.num_ws)
    c = class_vector(G, args.class_index)
    kimg = info.get("kimg")
    log.info("loaded %s (%s kimg, %dx%d, %d style layers) on %s", info["path"],
             "?" if kimg is None else f"{kimg:g}", G.resolution, G.resolution, G.num_ws, device)
    return G, meta, info, c


def export_chunk(grids, meta, out, names, formats, outlier_removal, args):
    """Export grids ``[b, C, H, W]`` as ``out/NAME + suffix`` with --workers threads of one torch
    thread each (restored afterwards for the network). Returns the ExportSummary."""
    from pcgan.export import export_grids
    from pcgan.generate import torch_threads

    with torch_threads(1):
        return export_grids(grids, meta, out, names=names, formats=formats, outlier_removal=outlier_removal,
                            voxel_size=args.voxel, workers=args.workers)


def seed_name(seed: int) -> str:
    """File stem of a seed's face: ``seed000042``."""
    return f"seed{seed:06d}"


def report_failed(command: str, failed) -> None:
    for name, error in failed:
        print(f"pcgan {command}: skipped {name}: {error}", file=sys.stderr)


def progress_bar(total: int, unit: str, desc: str):
    from tqdm import tqdm

    return tqdm(total=total, unit=unit, desc=desc, disable=None, file=sys.stderr)


# ---------------------------------------------------------------------------------------------
# pcgan generate


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    parser.add_argument("--seeds", required=True, metavar="LIST",
                        help="seeds, e.g. '0-99' or '1,5,42' (inclusive ranges)")
    parser.add_argument("--out", required=True, metavar="DIR", help="output directory (created if missing)")
    add_export_arguments(parser, "ply,png")


def run(args) -> int:
    from pcgan.fileio import ensure_writable_dir
    from pcgan.generate import iter_generate

    seeds = parse_seeds(args.seeds)
    check_model_arguments(args)
    formats, outlier_removal = check_export_arguments(args)
    out = ensure_writable_dir(args.out)          # before the (slow) load and any work
    G, meta, info, c = load_model(args)

    written, failed = 0, []
    with progress_bar(len(seeds), "face", "generate") as bar:
        for chunk, grids in iter_generate(G, seeds, args.trunc, args.cutoff, args.noise_mode, args.batch,
                                          c=c, per_face=not args.batched_network):
            summary = export_chunk(grids, meta, out, [seed_name(s) for s in chunk], formats, outlier_removal, args)
            written += len(summary.written)
            failed += summary.failed
            bar.update(len(chunk))
    report_failed("generate", failed)
    print(f"generated {written} of {len(seeds)} faces (seeds {format_index_list(sorted(seeds))}, "
          f"psi {args.trunc:g}, noise {args.noise_mode}) from {info['path']} as {', '.join(formats)} "
          f"in units {meta.units} to {out}")
    return 1 if failed else 0


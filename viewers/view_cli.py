"""``pcgan view``: look at point clouds, meshes and grids in an Open3D window, or explore a
trained generator's latent space (``--ckpt``)."""

from __future__ import annotations

import logging

from pcgan.errors import PcganError
from viewers.window import KEYS, LAYOUTS

log = logging.getLogger(__name__)

HELP = "open point clouds, meshes, grids or a generator's latent explorer in an Open3D window"

_KEY_LINES = "\n".join(f"  {k:<9} {what}" for k, what in KEYS)

EPILOG = f"""\
inputs: .ply point clouds and meshes, .obj meshes, .npy grids ([C, H, W] or [N, C, H, W]; grid
meta from a sibling dataset.json, --meta, or defaults) and dataset directories (rows picked
with --index, default the first 16). Several inputs sit side by side (--layout row) or in a
near-square grid (--layout grid). The camera starts frontal on the faces.

keys:
{_KEY_LINES}
mouse: drag to rotate, shift-drag to roll, ctrl-drag to pan, wheel to zoom.

latent explorer (--ckpt RUN_DIR or network-snapshot-*.pt): seed, truncation psi, a second
seed mixed in from a crossover layer, colour mode; every change regenerates the face; "Save
.ply" writes it to --out-dir in the scans' units.

No display (a headless server)? `pcgan view` says so; make pictures with `pcgan render`.

examples:
  pcgan view out/fakes/000001.ply out/fakes/000002.ply          # two clouds side by side
  pcgan view data/faces256 --index 0-8 --layout grid --mode lit # nine training grids
  pcgan view fakes.npy --meta data/faces256/dataset.json        # generated grids
  pcgan view --ckpt runs/00003-faces256 --seed 5 --psi 0.7      # latent explorer
  pcgan view --ckpt runs/00003-faces256 --seed 5 --seed2 12 --crossover 4
"""


def add_arguments(parser) -> None:
    from viewers.loading import COLOR_MODES, GRID_AS

    parser.add_argument("inputs", nargs="*", metavar="FILE",
                        help=".ply / .obj files, .npy grids or dataset directories")
    parser.add_argument("--index", "--indices", dest="index", metavar="LIST",
                        help="rows of datasets / grid batches, e.g. 0-9,15 (default: the first 16)")
    parser.add_argument("--grid-as", choices=GRID_AS, default="points",
                        help="draw grids as their surface points (default) or as the grid-connectivity mesh, "
                             "which stays closed in turned views")
    parser.add_argument("--meta", metavar="DATASET.json", help="grid meta for .npy inputs")
    parser.add_argument("--layout", choices=LAYOUTS, default="row", help="several inputs: one row or a grid")
    parser.add_argument("--mode", choices=COLOR_MODES, default="color", help="initial colouring (keys C/L/N/D)")
    parser.add_argument("--point-size", type=float, default=None, metavar="PX",
                        help="initial point size in pixels (default: from the point spacing)")
    parser.add_argument("--width", type=int, default=1280, help="window width (default 1280)")
    parser.add_argument("--height", type=int, default=800, help="window height (default 800)")
    parser.add_argument("--screenshot-dir", default=".", metavar="DIR", help="where key S saves pictures")
    g = parser.add_argument_group("latent explorer")
    g.add_argument("--ckpt", metavar="RUN|SNAPSHOT", help="explore this generator instead of showing files")
    g.add_argument("--seed", type=int, default=0, help="first seed (default 0)")
    g.add_argument("--psi", type=float, default=0.7, help="truncation psi (default 0.7)")
    g.add_argument("--seed2", type=int, default=None, help="second seed to mix in (with --crossover)")
    g.add_argument("--crossover", type=int, default=None,
                   help="first style layer taken from --seed2 (default: half the layers when --seed2 is given)")
    g.add_argument("--device", default="cpu", help="where the generator runs (cpu, cuda, cuda:1)")
    g.add_argument("--out-dir", default=".", metavar="DIR", help="where 'Save .ply' writes (default .)")


def run(args) -> int:
    from viewers.window import check_display

    if args.ckpt and args.inputs:
        raise PcganError("give FILEs to view, or --ckpt for the latent explorer, not both")
    if not args.ckpt and not args.inputs:
        raise PcganError("nothing to view: give FILEs (.ply, .obj, .npy, dataset dirs) or --ckpt RUN")
    check_display(inputs=args.inputs)     # before any loading: say it in one line
    if args.ckpt:
        from viewers.explorer import LatentChoice, run_explorer

        if args.crossover is not None and args.seed2 is None:
            raise PcganError("--crossover mixes in --seed2: give both")
        choice = LatentChoice(args.seed, args.psi, args.seed2, args.crossover)
        run_explorer(args.ckpt, choice, args.out_dir, args.device, args.mode, args.width, args.height)
        return 0

    import torch

    from viewers.loading import load_items, read_meta
    from viewers.window import run_viewer

    torch.set_num_threads(1)     # grid -> points is small tensor work: more threads only contend

    meta = read_meta(args.meta) if args.meta else None
    items, failed = load_items(args.inputs, args.index, meta, args.grid_as)
    for name, error in failed:
        log.warning("pcgan view: skipped %s: %s", name, error)
    run_viewer(items, args.layout, args.mode, args.point_size, args.width, args.height, args.screenshot_dir)
    return 1 if failed else 0

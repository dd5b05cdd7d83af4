"""``pcgan render``: pictures of point clouds, meshes and grids without a display.

Renders every input item from the requested views into one contact sheet (``.png``), a
turntable (``.gif``), or one file per item (``--out DIR/``). See :mod:`viewers.render`.
"""

from __future__ import annotations

import logging
import re
import sys
import time
from pathlib import Path

import numpy as np

from pcgan.errors import PcganError

log = logging.getLogger(__name__)

HELP = "render point clouds, meshes and grids to PNG contact sheets or turntable GIFs, headless"

EPILOG = """\
inputs: .ply point clouds and meshes, .obj meshes, .npy grids ([C, H, W] or [N, C, H, W]; grid
meta from a sibling dataset.json, --meta, or defaults) and dataset directories. Rows of
datasets and grid batches are picked with --index (default: the first 16).

outputs (by --out):
  OUT.png    contact sheet: one cell per item, its --views side by side, labelled
  OUT.gif    turntable: every item at once, --turntable N frames (default 36) swinging
             +-SWEEP degrees (--sweep 360: full turns)
  DIR/       one file per item: DIR/NAME.png, or DIR/NAME.gif with --turntable

views: front, left (camera 45 deg toward the face's own left, +x), right (-45 deg), or any
yaw in degrees (front,30,-30). Grids are seen from their canonical camera, files framed on
their bounding box from +z (the canonical view of pcgan exports).

colour modes (--mode): color (as stored), lit (colour x light), shade (grey, the geometry
alone), depth (viridis, near = yellow). The light sits above-left of the camera.

backends (--backend): egl (Open3D legacy renderer, EGL/OpenGL; Mesa software rendering
without a GPU), filament (Open3D OffscreenRenderer, Vulkan/lavapipe), numpy (z-buffered point
splats; meshes by Open3D's CPU ray caster), auto = the first that starts, in that order.
--verbose says which was used and why others were skipped. Missing system libraries are
named with the apt package to install.

Exit status: 0 all rendered, 1 some inputs skipped (listed), 2 bad input.

examples:
  # front, left and right views of two exported clouds, one row each
  pcgan render out/fakes/000001.ply out/fakes/000002.ply --views front,left,right --out views.png

  # contact sheet of the first 16 training grids, 256 px each, shaded
  pcgan render data/faces256 --index 0-15 --size 256 --mode lit --out sheet.png

  # turntable GIF of four generated faces, 36 frames
  pcgan render fakes.npy --index 0-3 --turntable 36 --size 256 --out turntable.gif

  # one PNG per file, pure numpy backend (no GL needed)
  pcgan render out/fakes/*.ply --out pictures/ --backend numpy
"""


def add_arguments(parser) -> None:
    from viewers.loading import COLOR_MODES, GRID_AS
    from viewers.render import BACKENDS, DEFAULT_SIZE, DEFAULT_SWEEP

    parser.add_argument("inputs", nargs="+", metavar="FILE",
                        help=".ply / .obj files, .npy grids or dataset directories")
    parser.add_argument("--out", required=True, metavar="OUT.png|OUT.gif|DIR/",
                        help="contact sheet (.png), turntable (.gif), or a directory for one file per item")
    parser.add_argument("--index", "--indices", dest="index", metavar="LIST",
                        help="rows of datasets / grid batches, e.g. 0-9,15 (default: the first 16)")
    parser.add_argument("--grid-as", choices=GRID_AS, default="points",
                        help="draw grids as their surface points (default) or as the grid-connectivity mesh, "
                             "which stays closed in turned views")
    parser.add_argument("--meta", metavar="DATASET.json",
                        help="grid meta for .npy inputs (default: a sibling dataset.json, else defaults)")
    parser.add_argument("--views", default=None, metavar="LIST",
                        help="comma-separated views: front, left, right or yaw degrees (default: front)")
    parser.add_argument("--turntable", type=int, default=None, metavar="N",
                        help="render a turntable of N frames (.gif outputs; default 36 there)")
    parser.add_argument("--sweep", type=float, default=DEFAULT_SWEEP, metavar="DEG",
                        help=f"turntable swing, +-degrees (default {DEFAULT_SWEEP:g}; 360: full turns)")
    parser.add_argument("--size", type=int, default=DEFAULT_SIZE, metavar="PX",
                        help=f"picture side per view in pixels (default {DEFAULT_SIZE})")
    parser.add_argument("--mode", choices=COLOR_MODES, default="color", help="colouring (default color)")
    parser.add_argument("--backend", choices=BACKENDS, default="auto", help="renderer (default auto)")
    parser.add_argument("--point-size", type=int, default=None, metavar="PX",
                        help="splat side in pixels (default: from the point spacing)")
    parser.add_argument("--background", default="grey", metavar="COLOUR",
                        help="white, black, grey, #rrggbb or r,g,b (default grey)")
    parser.add_argument("--cols", type=int, default=None, metavar="N",
                        help="contact sheet columns (default: 1 with several views, else nearly square)")
    parser.add_argument("--no-labels", action="store_true", help="do not write item names on the pictures")
    parser.add_argument("--fps", type=float, default=12.0, help="GIF frames per second (default 12)")


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._")[:80] or "item"


def _plan(args) -> tuple[str, list[float], list[str]]:
    """(kind "sheet" | "gif" | "dir", yaws, view labels) from the flags."""
    from viewers.render import parse_views, turntable_yaws

    out = args.out
    is_dir = out.endswith(("/", "\\")) or Path(out).is_dir()
    suffix = Path(out).suffix.lower()
    if not is_dir and suffix not in (".png", ".gif"):
        raise PcganError(f"--out {out}: end it in .png (contact sheet), .gif (turntable) or / (a directory)")
    if args.turntable is not None and args.views is not None:
        raise PcganError("give either --views (still pictures) or --turntable N (an animation), not both")
    if suffix == ".png" and not is_dir and args.turntable is not None:
        raise PcganError(f"--out {out}: a turntable is an animation; write it to a .gif")
    if suffix == ".gif" and not is_dir and args.views is not None:
        raise PcganError(f"--out {out}: a .gif is a turntable; use --turntable N (or --out a .png for --views)")
    if args.turntable is not None or (suffix == ".gif" and not is_dir):
        frames = 36 if args.turntable is None else args.turntable
        yaws = turntable_yaws(frames, args.sweep)
        return ("dir" if is_dir else "gif"), yaws, [f"{y:.0f}" for y in yaws]
    views = parse_views(args.views or "front")
    return ("dir" if is_dir else "sheet"), [y for _, y in views], [label for label, _ in views]


def run(args) -> int:
    import torch
    from tqdm import tqdm

    from viewers import render
    from viewers.loading import load_items, read_meta

    if args.size < 8 or args.size > 8192:
        raise PcganError(f"--size {args.size}: use 8 to 8192 pixels")
    if args.point_size is not None and not 1 <= args.point_size <= render.MAX_POINT_SIZE:
        raise PcganError(f"--point-size {args.point_size}: use 1 to {render.MAX_POINT_SIZE} pixels")
    if args.fps <= 0:
        raise PcganError(f"--fps {args.fps}: must be positive")
    kind, yaws, _ = _plan(args)
    torch.set_num_threads(1)     # grid -> points is small tensor work: more threads only contend (100x slower under load)
    background = render.parse_color(args.background)
    meta = read_meta(args.meta) if args.meta else None
    t0 = time.perf_counter()
    items, failed = load_items(args.inputs, args.index, meta, args.grid_as)
    for name, error in failed:
        print(f"pcgan render: skipped {name}: {error}", file=sys.stderr)
    backend = render.get_backend(args.backend, args.size)
    labels = [] if args.no_labels else [it.name for it in items]
    S = args.size
    out = Path(args.out)
    bar = tqdm(items, desc="render", unit="item", disable=None, file=sys.stderr)
    written: list[Path] = []

    if kind == "dir":
        from pcgan.fileio import ensure_writable_dir

        ensure_writable_dir(out)
        names: set[str] = set()
        for k, item in enumerate(bar):
            pics = render.render_item(item, yaws, S, args.mode, backend, args.point_size, background)
            stem = _safe_name(item.name.rsplit(".", 1)[0] if item.name.endswith((".ply", ".obj")) else item.name)
            while stem in names:
                stem += "_"
            names.add(stem)
            label = labels[k] if labels else ""
            if args.turntable is not None:
                path = render.write_gif(out / f"{stem}.gif", [render.label_image(p, label) for p in pics], args.fps)
            else:
                path = render.write_png(out / f"{stem}.png", render.contact_sheet(pics[None], [label] if label else None))
            written.append(path)
        what = f"{len(written)} files in {out}"
    elif kind == "sheet":
        pics = np.stack([render.render_item(it, yaws, S, args.mode, backend, args.point_size, background)
                         for it in bar])                                     # [B, V, S, S, 3]
        written.append(render.write_png(out, render.contact_sheet(pics, labels or None, args.cols,
                                                                   background=background)))
        what = f"{out} ({len(items)} item{'s' * (len(items) != 1)} x {len(yaws)} view{'s' * (len(yaws) != 1)})"
    else:   # gif: all items on every frame
        H, W, corners = render.sheet_layout(len(items), S, S, args.cols)
        frames = np.empty((len(yaws), H, W, 3), np.uint8)
        frames[:] = np.asarray(background, np.uint8)
        for k, (item, (top, left)) in enumerate(zip(bar, corners)):
            pics = render.render_item(item, yaws, S, args.mode, backend, args.point_size, background)
            for f in range(len(yaws)):
                frames[f, top:top + S, left:left + S] = render.label_image(pics[f], labels[k] if labels else "")
        written.append(render.write_gif(out, frames, args.fps))
        what = f"{out} ({len(yaws)} frames, {len(items)} item{'s' * (len(items) != 1)})"
    dt = time.perf_counter() - t0
    print(f"pcgan render: wrote {what}, {S} px, {backend.name} backend, {dt:.1f} s")
    return 1 if failed else 0

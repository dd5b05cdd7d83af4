"""``pcgan export``: write real dataset grids as .ply point clouds, meshes, .npy and previews.

The same files ``pcgan generate`` writes for generated faces, so what the model was trained on
can be opened and compared in the same viewers.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from pathlib import Path

from pcgan.dataset import GRIDS_FILE, INFO_FILE, load_dataset, load_grids_npy
from pcgan.errors import PcganError
from pcgan.export import DEFAULT_FORMATS, FORMATS, FRAMES, export_grids, parse_formats
from pcgan.fileio import ensure_writable_dir
from pcgan.grid import DEFAULT_CHANNELS, GridMeta, check_grid
from pcgan.ranges import parse_index_list

log = logging.getLogger(__name__)

HELP = "export dataset grids as .ply point clouds, meshes (.ply/.obj), .npy and .png previews"

EPILOG = f"""\
formats (--format, comma separated; files are OUT/NAME + suffix):
  ply    NAME.ply        point cloud: x y z (float32, the scans' units), red green blue, nx ny nz
  mesh   NAME_mesh.ply   mesh from grid connectivity, vertex colours and normals
  obj    NAME.obj        the same mesh as OBJ (v x y z r g b)
  npy    NAME.npy        the raw grid [C, H, W]
  png    NAME.png        preview: RGB | depth colour map | normal shading

NAME is the grid's row number (000015), followed by its source scan's file name when the
dataset records one (000015_james). Files are written under temporary names and renamed when
complete. Exit status: 0 all exported, 1 some grids skipped (listed), 2 bad input.

examples:
  # point clouds and meshes of the first ten training grids, in the canonical frame
  pcgan export data/faces256 --out out/real --indices 0-9

  # everything for grids 3 and 7, mapped back onto each source scan's own frame and units
  pcgan export data/faces256 --out out/real --indices 3,7 --format {",".join(FORMATS)} --frame source

  # a bare .npy of grids [N, C, H, W], read with the metadata of the dataset it belongs to
  pcgan export fakes.npy --meta data/faces256/dataset.json --out out/fakes --format ply,png

  # cleaned-up clouds: drop statistical outliers (20 neighbours, 2 std), then 1.5 mm voxels
  pcgan export data/faces256 --out out/clean --format ply --outlier-removal 20,2.0 --voxel 1.5
"""


def add_arguments(parser) -> None:
    parser.add_argument("input", metavar="GRIDS.npy|DATASET",
                        help="a dataset directory (grids.npy + dataset.json) or a .npy of grids [N, C, H, W] or [C, H, W]")
    parser.add_argument("--out", required=True, metavar="DIR",
                        help="output directory (created if missing)")
    parser.add_argument("--frame", default="canonical", choices=FRAMES,
                        help="canonical: the dataset's canonical frame in the scans' units; source: each "
                             "grid mapped back onto its source scan's frame and units (default: %(default)s)")
    parser.add_argument("--indices", default=None, metavar="LIST",
                        help="grid rows to export, e.g. '0-9,15' (inclusive ranges; default: all)")
    parser.add_argument("--meta", default=None, metavar="JSON",
                        help="dataset.json (or a grid-meta JSON) describing a bare GRIDS.npy; without it a "
                             "bare .npy uses the default camera, center 0, scale 1 and unknown units")
    add_export_arguments(parser, ",".join(DEFAULT_FORMATS))


def add_export_arguments(parser, default_formats: str) -> None:
    """--format, --outlier-removal, --voxel, --workers: shared by export, generate, mix, interpolate."""
    parser.add_argument("--format", default=default_formats, metavar="LIST",
                        help=f"comma-separated formats from {', '.join(FORMATS)} (default: %(default)s)")
    parser.add_argument("--outlier-removal", default=None, metavar="NB,STD",
                        help="statistical outlier removal on point clouds: NB neighbours, STD std ratio "
                             "(e.g. 20,2.0; needs Open3D)")
    parser.add_argument("--voxel", type=float, default=None, metavar="SIZE",
                        help="voxel-downsample point clouds to SIZE, in the output's units (needs Open3D)")
    parser.add_argument("--workers", type=int, default=2, metavar="N",
                        help="threads writing files (default: %(default)s)")


def parse_outlier_removal(text: str | None) -> tuple[int, float] | None:
    """``"20,2.0"`` -> ``(20, 2.0)``; None stays None."""
    if text is None:
        return None
    try:
        nb, std = text.split(",")
        nb, std = int(nb), float(std)
    except ValueError:
        raise PcganError(f"--outlier-removal {text!r}: expected NB,STD such as 20,2.0") from None
    if nb < 1 or not std > 0:
        raise PcganError(f"--outlier-removal {text!r}: NB must be >= 1 and STD > 0 (e.g. 20,2.0)")
    return nb, std


def _read_meta_json(path: Path) -> tuple[GridMeta, dict | None]:
    """GridMeta from a dataset.json (its 'grid' entry; the whole info is returned too) or from a
    bare GridMeta dict."""
    try:
        d = json.loads(path.read_text())
    except OSError as exc:
        raise PcganError(f"--meta {path}: cannot read ({exc.strerror or exc})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise PcganError(f"--meta {path}: not valid JSON ({exc})") from None
    if not isinstance(d, dict):
        raise PcganError(f"--meta {path}: expected a JSON object (a dataset.json or grid metadata)")
    if "grid" in d:
        return GridMeta.from_dict(d["grid"]), d
    return GridMeta.from_dict(d), None


def _default_meta(path: Path, shape: tuple[int, ...]) -> GridMeta:
    C, res = shape[-3], shape[-1]
    channels = {len(DEFAULT_CHANNELS): DEFAULT_CHANNELS, len(DEFAULT_CHANNELS) - 1: DEFAULT_CHANNELS[:-1]}.get(C)
    if channels is None:
        raise PcganError(f"{path}: {C} channels per grid; without --meta only {len(DEFAULT_CHANNELS)} "
                         f"({' '.join(DEFAULT_CHANNELS)}) or {len(DEFAULT_CHANNELS) - 1} are understood")
    log.warning("%s: no --meta given; assuming the default camera, center 0, scale 1, units unknown", path)
    return GridMeta(resolution=int(res), channels=channels)


def open_input(path: str | Path, meta_path: str | Path | None):
    """Grids ``[N, C, H, W]`` (memmap where possible), their GridMeta and the dataset info
    (None when unknown). Raises PcganError naming the file and the problem."""
    path = Path(path)
    meta_info = _read_meta_json(Path(meta_path)) if meta_path is not None else None
    if path.is_dir() or (path.name == GRIDS_FILE and (path.parent / INFO_FILE).is_file()):
        ds = load_dataset(path)
        meta, info = ds.meta, ds.info
        if meta_info is not None:
            meta, info = meta_info[0], meta_info[1] or ds.info
        grids = ds.grids
    else:
        grids = load_grids_npy(path)
        meta, info = meta_info if meta_info is not None else (_default_meta(path, grids.shape), None)
    check_grid(grids[:0] if len(grids) else grids, meta, name=str(path))
    return grids, meta, info


def _safe_stem(source_path: str) -> str:
    stem = Path(str(source_path).replace("\\", "/")).stem
    return re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("._")[:80]


def run(args) -> int:
    formats = parse_formats(args.format)
    outlier_removal = parse_outlier_removal(args.outlier_removal)
    if args.voxel is not None and not args.voxel > 0:
        raise PcganError(f"--voxel {args.voxel}: must be positive (in the output's units)")
    if args.workers < 1:
        raise PcganError(f"--workers {args.workers}: must be >= 1")
    grids, meta, info = open_input(args.input, args.meta)
    rows = parse_index_list(args.indices, "index", limit=len(grids)) if args.indices else list(range(len(grids)))

    records = {r.get("index"): r for r in (info or {}).get("files", []) if r.get("index") is not None}
    if args.frame == "source" and not records:
        raise PcganError(f"--frame source needs each grid's source transform (files[].to_canonical in a "
                         f"dataset.json): give a dataset directory, or --meta DATASET/dataset.json for {args.input}")
    out = ensure_writable_dir(args.out)    # fail before any work
    names = []
    for row in rows:
        stem = _safe_stem(records[row]["path"]) if records.get(row, {}).get("path") else ""
        names.append(f"{row:06d}_{stem}" if stem else f"{row:06d}")

    def to_canonical(row: int):
        rec = records.get(row)
        if rec is None or rec.get("to_canonical") is None:
            raise PcganError(f"no source transform recorded for grid row {row} (files[].to_canonical)")
        return rec["to_canonical"]

    if args.workers > 1:
        # Parallel threads each run small torch ops; torch's own intra-op threads on top of them
        # only contend for the same cores.
        import torch
        torch.set_num_threads(1)

    from tqdm import tqdm
    with tqdm(total=len(rows), unit="grid", desc="export", disable=None, file=sys.stderr) as bar:
        summary = export_grids(grids, meta, out, rows=rows, names=names, formats=formats,
                               frame=args.frame, to_canonical=to_canonical,
                               outlier_removal=outlier_removal, voxel_size=args.voxel,
                               workers=args.workers, progress=lambda done, total: bar.update(1))
    for name, error in summary.failed:
        print(f"pcgan export: skipped {name}: {error}", file=sys.stderr)
    print(f"exported {len(summary.written)} of {len(rows)} grids ({', '.join(formats)}, "
          f"{args.frame} frame, units {meta.units}) to {out}")
    return 1 if summary.failed else 0

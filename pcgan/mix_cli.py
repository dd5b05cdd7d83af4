"""``pcgan mix``: the StyleGAN style-mixing figure, and the mixed faces as .ply."""

from __future__ import annotations

import argparse

from pcgan.generate_cli import (add_export_arguments, add_model_arguments, check_export_arguments,
                                check_model_arguments, export_chunk, load_model, parse_seeds, report_failed)

HELP = "style mixing: row faces take column faces' styles at chosen layers (figure PNG + .ply)"

EPILOG = """\
The figure (OUT/stylemix.png) has the column seeds' faces along the top, the row seeds' faces
down the left, and at (row r, column k) row r's face with column k's styles at the --styles
layers. Every tile is RGB | normal shading. Each mixed face is also written as
OUT/rowRRRRRR_colKKKKKK + suffix (--format, default ply: a point cloud in the scans' units).

Style layers (W+ index): styles 2k and 2k+1 act at resolution 4*2^k (a 256^2 generator has 14):
  coarse  4-8^2      layers 0-3: pose, face shape
  middle  16-32^2    layers 4-7: features
  fine    64^2 up    layers 8+:  colour, skin detail
--styles takes layer numbers ('0-6', '8,9') or group names ('coarse', 'middle,fine').

examples:
  # the classic figure: rows 1-5 take the coarse-to-middle styles (0-6) of columns 6-10
  pcgan mix --ckpt runs/faces256 --rows 1-5 --cols 6-10 --styles 0-6 --out out/mix

  # only colour and fine detail from the columns, truncated faces
  pcgan mix --ckpt runs/faces256 --rows 1-3 --cols 7,8 --styles fine --trunc 0.7 --out out/mix-fine
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    parser.add_argument("--rows", required=True, metavar="LIST", help="row seeds (the base faces), e.g. '1-5'")
    parser.add_argument("--cols", required=True, metavar="LIST", help="column seeds (style donors), e.g. '6-10'")
    parser.add_argument("--styles", default="0-6", metavar="LAYERS",
                        help="style layers taken from the column faces: numbers ('0-6') or coarse, middle, "
                             "fine (default: %(default)s)")
    parser.add_argument("--out", required=True, metavar="DIR", help="output directory (created if missing)")
    add_export_arguments(parser, "ply")


def run(args) -> int:
    from pcgan.fileio import ensure_writable_dir
    from pcgan.generate import mix_figure, mix_grids, write_frame

    rows, cols = parse_seeds(args.rows, "row seed"), parse_seeds(args.cols, "column seed")
    check_model_arguments(args)
    formats, outlier_removal = check_export_arguments(args)
    out = ensure_writable_dir(args.out)
    G, meta, info, c = load_model(args)

    result = mix_grids(G, rows, cols, args.styles, args.trunc, args.cutoff, args.noise_mode, args.batch,
                       c=c, per_face=not args.batched_network)
    figure = write_frame(out / "stylemix.png", mix_figure(result, meta))
    names = [f"row{r:06d}_col{k:06d}" for r in rows for k in cols]
    summary = export_chunk(result.mixed.flatten(0, 1), meta, out, names, formats, outlier_removal, args)
    report_failed("mix", summary.failed)
    print(f"style mixing of {len(rows)} x {len(cols)} faces at style layers {args.styles} "
          f"({','.join(map(str, result.layers))} of {G.num_ws}) from {info['path']}: {figure}, "
          f"{len(summary.written)} mixed faces as {', '.join(formats)} in {out}")
    return 1 if summary.failed else 0

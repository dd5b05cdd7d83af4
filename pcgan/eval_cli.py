"""``pcgan eval``: how good is this generator, in the terms papers use, for pictures and geometry.

Generates faces from fixed seeds (or takes grids made elsewhere with ``--fakes``), compares them
with the dataset's held-out split, writes every number with its protocol to metrics.json, prints
the table and draws the generated faces beside their nearest reals. ``--compare`` sets two
results side by side. The library part is :mod:`pcgan.evaluation` and :mod:`pcgan.metrics`.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from pcgan.errors import PcganError

log = logging.getLogger(__name__)

HELP = "evaluate a generator: 3D (MMD/COV/1-NNA with CD/EMD, JSD, F-score) and 2D (FID/KID/PR/LPIPS) metrics"

EPILOG = """\
metrics (--metrics, comma separated names and groups; --list-metrics shows them all):
  3D sets   mmd_cd cov_cd 1nna_cd mmd_emd cov_emd 1nna_emd jsd   (group pointflow; cd; emd)
  3D pairs  fscore normal_consistency recon_o3d                  (group pairs; vs the nearest real)
  2D        fid kid pr3 lpips_diversity (+ fid50k_full ...)      (group 2d; on the colour and the
            shaded view; need the Inception / LPIPS weights, see --weights-dir)
  generator ppl_wend ppl3d_wend ...                              (need --ckpt)

reference reals: the dataset's held-out val split (--split auto) when it has at least
min(N, 16) rows, else all rows with a warning. 3D set metrics use min(N generated, M real)
clouds of --points points each, normalised by --protocol: global (PointFlow: one transform from
the reference set), bbox (LION's per-shape box; alias per-shape) or none.

outputs: metrics.json (every number, N, points, protocol, seeds, weights, versions; written
atomically; default RUN/metrics-KKKKKK.json for a checkpoint), the printed table (also in LION's
units: MMD-CD x1e3, MMD-EMD x1e2, COV/1-NNA in %), and a PNG of generated faces beside their
Chamfer-nearest reals (default: beside metrics.json, -nn.png). Exit status: 0 done, 2 bad input.

examples:
  # PointFlow's 3D set metrics of a run's newest snapshot against the held-out split
  pcgan eval --ckpt runs/faces256 --data data/faces256 --metrics cd,jsd

  # FID/KID on 10k faces, offline weights from a folder
  pcgan eval --ckpt runs/faces256 --data data/faces256 --metrics fid,kid --num-gen 10000 \\
      --weights-dir ~/weights --out runs/faces256/fid.json

  # grids from another model (a .npy [N, C, H, W] in the dataset's layout)
  pcgan eval --fakes other_model.npy --data data/faces256 --metrics pointflow --out other.json

  # two results side by side (files, or run dirs: their newest metrics-*.json)
  pcgan eval --compare runs/a/metrics-010000.json runs/b/metrics-010000.json
"""

PROTOCOL_ALIASES = {"per-shape": "bbox"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from pcgan.evaluation import SPLITS
    from pcgan.generate_cli import add_model_arguments
    from pcgan.metrics.pointcloud import NUM_POINTS, PROTOCOLS

    add_model_arguments(parser, ckpt_required=False)   # --fakes or --compare replace --ckpt
    parser.add_argument("--fakes", metavar="GRIDS.npy|DATASET",
                        help="evaluate these grids instead of a generator: a .npy [N, C, H, W] in the --data "
                             "layout, or a dataset directory (all its rows)")
    parser.add_argument("--data", metavar="DATASET", help="dataset directory of the real grids")
    parser.add_argument("--split", default="auto", choices=SPLITS,
                        help="reference rows: val (held out), train, all, or auto = val when it is big "
                             "enough, else all with a warning (default: %(default)s)")
    parser.add_argument("--metrics", default="cd,jsd", metavar="LIST",
                        help="metric names and groups, comma separated (default: %(default)s)")
    parser.add_argument("--list-metrics", action="store_true", help="list the metrics and groups, then exit")
    parser.add_argument("--num-gen", type=int, default=None, metavar="N",
                        help="generated grids (default: as many as the reference reals, or what a metric "
                             "such as fid50k_full needs); with --fakes: use the first N")
    parser.add_argument("--seed-start", type=int, default=0, metavar="S",
                        help="faces come from seeds S .. S+N-1 (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the metrics' own random choices: points, subsets, pairs (default: %(default)s)")
    parser.add_argument("--protocol", default="global", choices=list(PROTOCOLS) + list(PROTOCOL_ALIASES),
                        help="3D normalisation before the set metrics (default: %(default)s)")
    parser.add_argument("--points", type=int, default=NUM_POINTS, metavar="P",
                        help="points per cloud for the 3D metrics (default: %(default)s, as PointFlow and LION)")
    parser.add_argument("--ppl-samples", type=int, default=10000, metavar="K",
                        help="latent pairs for the path-length metrics (default: %(default)s)")
    parser.add_argument("--weights-dir", default=None, metavar="DIR",
                        help="folder with inception_fid.pt / alexnet_features.pth / vgg16_features.pth "
                             "(default: $PCGAN_WEIGHTS, then ~/.cache/pcgan/weights and torch's hub cache)")
    parser.add_argument("--out", default=None, metavar="JSON",
                        help="metrics.json to write (default with --ckpt: RUN/metrics-KKKKKK.json)")
    parser.add_argument("--nn-png", default=None, metavar="PNG",
                        help="nearest-neighbour pairs picture (default: beside --out, NAME-nn.png)")
    parser.add_argument("--compare", nargs=2, default=None, metavar=("A", "B"),
                        help="print two metrics.json files (or run dirs) side by side; computes nothing")


# ---------------------------------------------------------------------------------------------
# --list-metrics and --compare


def list_metrics_text() -> str:
    from pcgan.metrics import GROUPS, METRICS

    width = max(len(n) for n in METRICS)
    lines = ["metrics:"] + [f"  {n:<{width}}  {m.kind:<9}  {m.doc}" for n, m in METRICS.items()]
    lines += ["", "groups:"] + [f"  {g:<{width}}  {', '.join(names)}" for g, names in GROUPS.items()]
    return "\n".join(lines)


def _results_file(path: str) -> Path:
    """A metrics.json, or a run dir's newest metrics-*.json."""
    p = Path(path)
    if p.is_dir():
        found = sorted(p.glob("metrics-*.json"))
        if not found:
            raise PcganError(f"--compare {path}: no metrics-*.json in this directory (run pcgan eval on it first)")
        return found[-1]
    if not p.is_file():
        raise PcganError(f"--compare {path}: no such file or directory")
    return p


def read_results(path: str) -> tuple[dict, Path]:
    from pcgan.metrics import SCHEMA

    p = _results_file(path)
    try:
        d = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PcganError(f"--compare {p}: cannot read as JSON ({exc})") from None
    if not isinstance(d, dict) or d.get("schema") != SCHEMA or not isinstance(d.get("metrics"), dict):
        raise PcganError(f"--compare {p}: not a pcgan metrics.json (schema {SCHEMA})")
    return d, p


def _labels(a: Path, b: Path) -> tuple[str, str]:
    if a.name != b.name:
        return a.name, b.name
    return f"{a.parent.name}/{a.name}", f"{b.parent.name}/{b.name}"


# ---------------------------------------------------------------------------------------------
# Inputs


def _device(name: str):
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise PcganError(f"--device {name!r}: use cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise PcganError(f"--device {name}: CUDA is not available here; use --device cpu")
    return device


def open_fakes(path: str, real_meta, data_name: str):
    """--fakes: grids ``[N, C, H, W]`` (memmap where possible) and their GridMeta (the dataset's
    own for a dataset dir; the reals' for a bare .npy), checked against the reals' layout."""

    from pcgan.dataset import GRIDS_FILE, INFO_FILE, load_dataset, load_grids_npy
    from pcgan.evaluation import check_compatible

    p = Path(path)
    if p.is_dir() or (p.name == GRIDS_FILE and (p.parent / INFO_FILE).is_file()):
        ds = load_dataset(p)
        for w in check_compatible(ds.meta, f"--fakes {path}", real_meta, data_name):
            log.warning(w)
        return ds.grids, ds.meta
    grids = load_grids_npy(p, name=f"--fakes {path}")
    expect = (real_meta.num_channels, real_meta.resolution, real_meta.resolution)
    if grids.ndim != 4 or tuple(grids.shape[1:]) != expect:
        raise PcganError(f"--fakes {path} has shape {list(grids.shape)}, expected [N, {expect[0]}, {expect[1]}, "
                         f"{expect[2]}] like the real grids of {data_name} (channels "
                         f"{' '.join(real_meta.channels)}, resolution {real_meta.resolution})")
    if len(grids) == 0:
        raise PcganError(f"--fakes {path} holds no grids")
    return grids, real_meta


def _check_arguments(args) -> None:
    if args.ckpt and args.fakes:
        raise PcganError("give either --ckpt (generate faces) or --fakes (evaluate given grids), not both")
    if not args.ckpt and not args.fakes:
        raise PcganError("nothing to evaluate: give --ckpt RUN_OR_FILE or --fakes GRIDS.npy|DATASET")
    if not args.data:
        raise PcganError("--data DATASET is required: the real grids to compare with")
    if args.num_gen is not None and args.num_gen < 1:
        raise PcganError(f"--num-gen {args.num_gen}: give at least 1")
    if args.seed_start < 0 or args.seed < 0:
        raise PcganError("--seed-start and --seed must be >= 0")
    if args.points < 1:
        raise PcganError(f"--points {args.points}: give at least 1 point per cloud")
    if args.ppl_samples < 1:
        raise PcganError(f"--ppl-samples {args.ppl_samples}: give at least 1")
    if args.fakes is None:
        from pcgan.generate_cli import check_model_arguments
        check_model_arguments(args)
    if args.fakes is not None and args.seed_start:
        log.warning("--seed-start is ignored with --fakes")


def _default_num_gen(names, num_real: int) -> int:
    from pcgan.metrics import METRICS

    return max([num_real] + [METRICS[n].num_gen or 0 for n in names])


# ---------------------------------------------------------------------------------------------


def run(args) -> int:
    if args.list_metrics:
        print(list_metrics_text())
        return 0
    if args.compare:
        from pcgan.metrics import compare_table

        (a, pa), (b, pb) = read_results(args.compare[0]), read_results(args.compare[1])
        print(f"A: {pa}\nB: {pb}\n")
        print(compare_table(a, b, _labels(pa, pb)))
        return 0

    from pcgan.dataset import load_dataset
    from pcgan.evaluation import check_weights, reference_rows
    from pcgan.metrics import METRICS, expand_names

    names = expand_names(args.metrics)                      # unknown names fail here, listing the valid ones
    _check_arguments(args)
    need_generator = [n for n in names if METRICS[n].kind == "generator"]
    if args.fakes and need_generator:
        raise PcganError(f"{', '.join(need_generator)} walk the generator's latent space: they need --ckpt, "
                         f"not --fakes")
    check_weights(names, args.weights_dir)                  # missing weights fail before any work
    out = Path(args.out) if args.out else None
    if out is None and args.fakes:
        raise PcganError("--out JSON is required with --fakes (there is no run directory to write into)")
    if out is not None:
        _check_out(out)

    dataset = load_dataset(args.data)
    rows, split, warning = reference_rows(dataset, args.split, args.num_gen)
    if warning:
        log.warning(warning)
    if args.fakes:
        result, out = _eval_fakes(args, names, dataset, rows, split, out)
    else:
        result, out = _eval_checkpoint(args, names, dataset, rows, split, out)

    from pcgan.fileio import write_json
    from pcgan.metrics import format_table

    write_json(out, result)
    print(format_table(result))
    print()
    print(f"wrote {out}" + (f" and {result['nn_png']}" if result.get("nn_png") else ""))
    return 0


def _check_out(out: Path) -> None:
    from pcgan.fileio import ensure_writable_dir

    if out.is_dir():
        raise PcganError(f"--out {out} is a directory: give a file name such as {out / 'metrics.json'}")
    ensure_writable_dir(out.parent if str(out.parent) else Path("."))


def _options(args, names, device, dataset, rows):
    from pcgan.evaluation import dataset_fingerprint
    from pcgan.metrics import METRICS, EvalOptions

    reals_key = None
    if any(METRICS[n].kind == "2d" for n in names):   # cache the reals' Inception features per dataset + rows
        reals_key = (str(dataset.path), dataset_fingerprint(dataset, rows))
    return EvalOptions(seed=args.seed, device=str(device), num_points=args.points,
                       protocol=PROTOCOL_ALIASES.get(args.protocol, args.protocol), weights_dir=args.weights_dir,
                       ppl_samples=args.ppl_samples, reals_key=reals_key)


def _reals_section(args, dataset, rows, split) -> dict:
    from pcgan.ranges import format_index_list

    return {"dataset": str(dataset.path), "split": split, "split_requested": args.split, "num_rows": len(rows),
            "rows": format_index_list(rows.tolist())}


def _nn_png_path(args, out: Path) -> Path:
    return Path(args.nn_png) if args.nn_png else out.with_name(out.stem + "-nn.png")


def _eval_checkpoint(args, names, dataset, rows, split, out):
    from pcgan.evaluation import GridRows, check_compatible, evaluate_generator
    from pcgan.generate_cli import load_model

    G, meta, info, c = load_model(args)
    for w in check_compatible(meta, f"checkpoint {info['path']}", dataset.meta, f"dataset {dataset.path}"):
        log.warning(w)
    if out is None:
        images = int(info.get("images_seen") or 0)
        out = Path(info["path"]).parent / f"metrics-{images // 1000:06d}.json"
        _check_out(out)
    num_gen = args.num_gen or _default_num_gen(names, len(rows))
    seeds = range(args.seed_start, args.seed_start + num_gen)
    device = next(G.parameters()).device
    log.info("evaluating %s on %d faces (seeds %d-%d) against %d reals (%s split of %s)", ", ".join(names),
             num_gen, seeds[0], seeds[-1], len(rows), split, dataset.path)
    result = evaluate_generator(G, dataset.meta, GridRows(dataset.grids, rows), names, seeds=seeds,
                                options=_options(args, names, device, dataset, rows), psi=args.trunc,
                                cutoff=args.cutoff, noise_mode=args.noise_mode, batch=args.batch,
                                per_face=not args.batched_network, c=c, nn_png=_nn_png_path(args, out),
                                real_labels=rows)
    result["generator"].update(checkpoint=info["path"], kimg=info.get("kimg"), class_index=args.class_index)
    result["reals"] = _reals_section(args, dataset, rows, split)
    return result, out


def _eval_fakes(args, names, dataset, rows, split, out):
    from pcgan.evaluation import GridRows, evaluate_grids

    data_name = f"dataset {dataset.path}"
    grids, _ = open_fakes(args.fakes, dataset.meta, data_name)
    n = len(grids) if args.num_gen is None else min(args.num_gen, len(grids))
    if args.num_gen is not None and args.num_gen > len(grids):
        log.warning("--num-gen %d but --fakes %s holds %d grids: using all of them",
                    args.num_gen, args.fakes, len(grids))
    fakes = GridRows(grids, range(n))
    log.info("evaluating %s on %d given grids (%s) against %d reals (%s split of %s)", ", ".join(names), n,
             args.fakes, len(rows), split, dataset.path)
    device = _device(args.device)
    result = evaluate_grids(fakes, GridRows(dataset.grids, rows), dataset.meta, names,
                            _options(args, names, device, dataset, rows), _nn_png_path(args, out), real_labels=rows)
    result["fakes"] = {"path": str(args.fakes), "num_grids": int(len(grids)), "used": n}
    result["reals"] = _reals_section(args, dataset, rows, split)
    return result, out

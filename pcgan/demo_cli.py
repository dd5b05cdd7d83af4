"""``pcgan demo``: the whole job on built-in synthetic faces, in one command.

Stages, each a header and a timing on the console, every output under ``--out``:

1. ``scans/``      procedural face scans (``pcgan synth-faces``): .ply with vertex colour, .obj + texture
2. ``dataset/``    their XYZRGB grids (``pcgan preprocess``), with a held-out ``val`` split
3. ``run/``        a StyleGAN2 trained for ``--minutes`` (``pcgan train --minutes``), snapshots and previews;
                   ``untrained.pt`` is the same network before its first step (same seed)
4. ``faces/``      generated faces as .ply point clouds, .ply meshes and previews
5. ``contact_sheet.png``, ``turntable.gif``   pictures of the generated faces
6. ``metrics.json``   3D metrics of the untrained and the trained generator against the val split,
                   with as many training scans as the yardstick of a perfect generator (2D metrics
                   too when the FID Inception weights are found), ``nearest_reals.png``
7. ``demo-summary.json``   stage timings, paths, the numbers; then the ``pcgan view`` command

Re-running with the same ``--out`` reuses the scans and the dataset and continues training in
the same run directory for another ``--minutes`` (``--minutes 0``: no more training, just
re-make the faces, pictures and metrics from the newest snapshot).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from pathlib import Path

HELP = "the whole job on built-in synthetic faces: scans -> dataset -> training -> .ply/meshes -> pictures -> metrics"

EPILOG = """\
examples:
  # ~10 minutes of training on the CPU (32x32 grids), then faces, pictures and metrics in demo-out/
  pcgan demo

  # on a GPU: a 64x64 StyleGAN2 (configs/demo-gpu-64.yaml) and more faces
  pcgan demo --device cuda --minutes 20

  # train 10 more minutes into the same run (scans and dataset are reused)
  pcgan demo --out demo-out

  # no more training: re-make the faces, pictures and metrics from the newest snapshot
  pcgan demo --minutes 0 --samples 24 --trunc 0.7

  # with FID/KID as well (needs the FID Inception weights, see `pcgan eval --help`)
  pcgan demo --weights-dir ~/pcgan-weights

outputs (under --out, default demo-out):
  scans/                  procedural face scans (+ synth_faces.json with every face's parameters)
  dataset/                grids.npy, dataset.json (train/val split), preview.png
  run/                    the training run: snapshots, training-state.pt, stats.jsonl, fakes*.png, log.txt
  untrained.pt            the generator before training (the run's seed): the baseline of the metrics
  faces/                  seedNNNNNN.ply (point cloud), seedNNNNNN_mesh.ply (mesh), seedNNNNNN.png (preview)
  contact_sheet.png       generated faces: colour from the front | lit geometry turned 40 degrees
  turntable.gif           four generated faces turning
  metrics.json            untrained vs trained (vs as many training scans: the ideal): MMD-CD, COV-CD,
                          1-NNA-CD against the held-out val split; FID/KID with --weights-dir
  nearest_reals.png       generated faces beside their nearest val scans (a memorisation check)
  demo-summary.json       stage timings, paths and numbers
"""

log = logging.getLogger("pcgan.demo")

REPO = Path(__file__).resolve().parents[1]
CONFIGS = {"cpu": "demo-cpu-32.yaml", "cuda": "demo-gpu-64.yaml"}   # the preset per device
DEFAULT_FACES = {"cpu": 1000, "cuda": 2000}
VAL_FRACTION = 0.15          # held-out scans for the metrics (150 of 1000)
METRICS_3D = ("mmd_cd", "cov_cd", "1nna_cd")
METRICS_2D = ("fid", "kid")
SUMMARY_FILE = "demo-summary.json"
UNTRAINED_FILE = "untrained.pt"
TURNTABLE_FACES = 4


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="demo-out", metavar="DIR", help="where everything goes (default demo-out)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="auto: CUDA when available, else CPU (default: auto)")
    p.add_argument("--minutes", type=float, default=10.0,
                   help="training time for this run, minutes (default 10); 0: no training, re-make the outputs")
    p.add_argument("--faces", type=int, default=None,
                   help=f"synthetic scans to make (default {DEFAULT_FACES['cpu']} on CPU, {DEFAULT_FACES['cuda']} on CUDA)")
    p.add_argument("--res", type=int, default=None, help="grid resolution (default: the config's model.resolution)")
    p.add_argument("--config", metavar="YAML",
                   help=f"training preset (default configs/{CONFIGS['cpu']} on CPU, configs/{CONFIGS['cuda']} on CUDA)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key for training, e.g. --set train.batch=32 (repeatable)")
    p.add_argument("--samples", type=int, default=16, help="generated faces exported and drawn (default 16)")
    p.add_argument("--trunc", type=float, default=1.0,
                   help="truncation psi of the exported and drawn faces (default 1: none; metrics always use 1)")
    p.add_argument("--eval-num", type=int, default=None,
                   help="generated faces per metric evaluation (default: as many as the val split holds)")
    p.add_argument("--weights-dir", metavar="DIR",
                   help="folder with the FID Inception weights; with them the demo adds FID and KID")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads for torch (default: the cores not already busy, by the load average)")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic scans (default 0)")
    p.add_argument("--size", type=int, default=128, help="picture side per view in pixels (default 128)")


# ----------------------------------------------------------------------------------------------
# Console


class _Stages:
    """Numbered stage headers and timings on the console; timings kept for the summary."""

    def __init__(self, total: int):
        self.total, self.number, self.timings = total, 0, {}
        self._name, self._t0 = None, 0.0

    def start(self, name: str, what: str) -> None:
        self.number += 1
        self._name, self._t0 = name, time.perf_counter()
        print(f"\n== [{self.number}/{self.total}] {what} ==", flush=True)

    def end(self, note: str = "") -> float:
        dt = time.perf_counter() - self._t0
        self.timings[self._name] = round(dt, 1)
        print(f"   {self._name}: {_fmt_s(dt)}{'  (' + note + ')' if note else ''}", flush=True)
        return dt


def _fmt_s(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    return f"{m}m{s:02d}s" if m else f"{seconds:.1f} s"


def _run_command(name: str, argv: list[str]) -> int:
    """Run another pcgan subcommand in this process (its module's parser and run)."""
    import importlib

    from pcgan.cli import COMMANDS
    module = importlib.import_module(COMMANDS[name])
    parser = argparse.ArgumentParser(prog=f"pcgan {name}")
    module.add_arguments(parser)
    args = parser.parse_args(argv)
    args.verbose = False
    return int(module.run(args) or 0)


def load_average() -> float:
    """The 1-minute load average (0 where the OS has none)."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return 0.0


def auto_threads(busy: float) -> int:
    """Torch threads for the CPU: the cores a 1-minute load average of ``busy`` leaves idle, at
    least one. OpenMP threads that share busy cores spin against the other processes: on 2
    loaded cores one thread trained 4-6x faster than two (benchmarks/RESULTS.md, the demo section)."""
    cores = os.cpu_count() or 1
    return max(1, min(cores, int(cores - busy + 0.5)))


# ----------------------------------------------------------------------------------------------
# Stages


def make_scans(scans: Path, faces: int, seed: int) -> str:
    """Stage 1: ``faces`` procedural scans in ``scans`` (kept when an earlier run made the same)."""
    from data_tools.synth_faces import SynthConfig, generate
    from pcgan.errors import PcganError

    info = scans / "synth_faces.json"
    if info.is_file():
        old = json.loads(info.read_text(encoding="utf-8")).get("config", {})
        if (old.get("n"), old.get("seed")) == (faces, seed):
            return f"reused {faces} scans from an earlier run"
        raise PcganError(f"{scans} holds {old.get('n')} scans of seed {old.get('seed')} from an earlier demo, not "
                         f"--faces {faces} --seed {seed}: give those values, another --out, or delete {scans}")
    workers = min(os.cpu_count() or 1, 8)
    generate(SynthConfig(n=faces, seed=seed), scans, workers=workers)
    return f"{faces} scans, {workers} worker{'s' * (workers != 1)}"


def make_dataset(scans: Path, dataset: Path, res: int, faces: int) -> str:
    """Stage 2: the grid dataset (kept when it matches; ``pcgan preprocess`` caches per scan)."""
    from pcgan.dataset import load_dataset
    from pcgan.errors import PcganError

    if (dataset / "dataset.json").is_file():
        ds = load_dataset(dataset)
        if ds.meta.resolution != res:
            raise PcganError(f"{dataset} holds {ds.meta.resolution}x{ds.meta.resolution} grids from an earlier demo, "
                             f"not --res {res}: give --res {ds.meta.resolution}, another --out, or delete {dataset}")
        if len(ds.info.get("files", [])) == faces:
            return f"reused {len(ds)} grids at {res}x{res}"
    # The synthetic scans come in the canonical frame up to a few degrees of pose jitter, so
    # the automatic orientation search (~0.2 s per scan) is skipped; your own scans need it.
    code = _run_command("preprocess", [str(scans), "--out", str(dataset), "--res", str(res), "--units", "mm",
                                       "--orient", "none", "--val-fraction", str(VAL_FRACTION),
                                       "--workers", str(min(os.cpu_count() or 1, 8))])
    if code != 0:
        raise PcganError(f"pcgan preprocess could not convert the scans in {scans} (exit {code})")
    ds = load_dataset(dataset)
    return f"{len(ds)} grids at {res}x{res}, {len(ds.split('val'))} held out"


def resolve_config(config: Path, overrides: list[str]):
    from pcgan.config import load_config
    return load_config(config, overrides)


def save_untrained(path: Path, cfg, meta) -> None:
    """The generator as the run starts: the training loop seeds torch with ``train.seed`` (one
    process) and builds G first, so the same seed gives the same weights (the tests compare its
    fakes with the run's ``fakes000000.png``)."""
    import torch

    from pcgan import checkpoint as ckpt
    from pcgan.config import to_dict
    from pcgan.networks import Generator

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.train.seed)
        G = Generator(**cfg.model.generator_kwargs(meta.num_channels, camera=meta.camera.to_dict(),
                                                   background=meta.empty_pixel()))
    ckpt.save_snapshot(path, G.eval(), meta, to_dict(cfg), 0)


def train(dataset: Path, run: Path, config: Path, overrides: list[str], device: str, minutes: float) -> dict:
    """Stage 3: ``pcgan train`` for ``minutes`` into ``run`` (continues a run already there)."""
    from pcgan.errors import PcganError

    argv = ["--data", str(dataset), "--config", str(config), "--out", str(run), "--device", device,
            "--minutes", f"{minutes:g}"]
    for o in overrides:
        argv += ["--set", o]
    code = _run_command("train", argv)
    if code != 0:
        raise PcganError(f"training stopped (exit {code}); the run so far is in {run}: re-run the demo to continue")
    rows = [json.loads(line) for line in (run / "stats.jsonl").read_text(encoding="utf-8").splitlines() if line.strip()]
    last = rows[-1] if rows else {}
    return {"kimg": last.get("kimg"), "train_s": last.get("time_s"),
            "sec_per_kimg_last_tick": last.get("sec_per_kimg"), "ticks": len(rows)}


def export_faces(G, meta, faces_dir: Path, samples: int, psi: float) -> tuple:
    """Stage 4: seeds 0..samples-1 -> grids -> .ply point clouds, .ply meshes, previews."""
    from pcgan.errors import PcganError
    from pcgan.export import export_grids
    from pcgan.generate import generate_grids, torch_threads

    seeds = list(range(samples))
    grids = generate_grids(G, seeds, psi=psi)                               # [S, C, H, W] float32
    names = [f"seed{s:06d}" for s in seeds]
    with torch_threads(1):
        summary = export_grids(grids, meta, faces_dir, names=names, formats=("ply", "mesh", "png"), workers=2)
    for name, error in summary.failed:
        log.warning("face %s not exported: %s", name, error)
    if not summary.written:
        raise PcganError(f"no generated face could be exported to {faces_dir}")
    return grids, seeds, summary


def draw(grids, seeds, meta, out: Path, size: int) -> tuple[Path, Path]:
    """Stage 5: ``contact_sheet.png`` (colour from the front | lit geometry at 40 degrees, per
    face) and ``turntable.gif`` (the first faces, lit, swinging +-30 degrees)."""
    import numpy as np

    from pcgan.generate import torch_threads
    from viewers import render

    with torch_threads(1):
        colour = render.render_views(grids, meta, views="front", size=size, mode="color", grid_as="mesh")
        shape = render.render_views(grids, meta, views="40", size=size, mode="lit", grid_as="mesh")
        pictures = np.concatenate([colour, shape], axis=1)                   # [B, 2, S, S, 3]
        sheet = render.contact_sheet(pictures, [f"seed {s}" for s in seeds], cols=4)
        sheet_path = render.write_png(out / "contact_sheet.png", sheet)
        k = min(TURNTABLE_FACES, len(grids))
        yaws = render.turntable_yaws(36, 30.0)
        turns = render.render_views(grids[:k], meta, views=yaws, size=size, mode="lit", grid_as="mesh")
        frames = [render.tile([turns[b, f] for b in range(k)], cols=k) for f in range(len(yaws))]
        gif_path = render.write_gif(out / "turntable.gif", frames, fps=12)
    return sheet_path, gif_path


def evaluate(G_untrained, G_trained, meta, dataset: Path, num: int | None, device: str,
             weights_dir: str | None, nn_png: Path) -> dict:
    """Stage 6: the same metrics, seeds and reals for the untrained and the trained generator,
    and, as the yardstick of a perfect generator, as many training scans against the same reals."""
    from pcgan.dataset import load_dataset
    from pcgan.errors import PcganError
    from pcgan.evaluation import GridRows, check_weights, evaluate_generator, evaluate_grids
    from pcgan.metrics import EvalOptions

    ds = load_dataset(dataset)
    rows = ds.split("val")
    if len(rows) < 2:
        raise PcganError(f"{dataset}: its val split holds {len(rows)} grids; the metrics need at least 2 "
                         f"(make more faces with --faces)")
    reals = GridRows(ds.grids, rows)                                         # [M, C, H, W]
    num = num or len(rows)
    names = list(METRICS_3D)
    note_2d = None
    try:
        check_weights(list(METRICS_2D), weights_dir)
        names += list(METRICS_2D)
    except PcganError as exc:
        note_2d = f"2D metrics skipped: {exc}"
    # 2,048 points per cloud is PointFlow's protocol; a 32x32 face has ~500 surface pixels, so
    # small grids use 512 (same 1-NNA, a fifth of the time: 6.5 vs 35 s for 100 vs 100 here)
    points = 2048 if meta.resolution >= 64 else 512
    opts = EvalOptions(seed=0, device=device, num_points=points, weights_dir=weights_dir,
                       kid_subset_size=min(1000, num, len(rows)))
    out = {"reals": {"split": "val", "count": len(rows)}, "num_gen": num, "seeds": f"0-{num - 1}",
           "points_per_cloud": points, "note_2d": note_2d}
    for label, G, png in (("untrained", G_untrained, None), ("trained", G_trained, nn_png)):
        t0 = time.perf_counter()
        res = evaluate_generator(G, meta, reals, names, num_gen=num, options=opts, nn_png=png, real_labels=rows)
        res["eval_s"] = round(time.perf_counter() - t0, 1)
        out[label] = res
    train_rows = ds.split("train")[:num]
    if len(train_rows) >= 2:
        out["training_scans"] = evaluate_grids(GridRows(ds.grids, train_rows), reals, meta, names, opts)
    return out


# ----------------------------------------------------------------------------------------------


def _default_config(device_type: str) -> Path:
    from pcgan.errors import PcganError

    path = REPO / "configs" / CONFIGS[device_type]
    if not path.is_file():
        raise PcganError(f"the demo's preset {path} is missing (pcgan installed without its configs/ folder?): "
                         f"pass --config with a preset from the pcgan repository")
    return path


def run(args) -> int:
    import torch

    from pcgan.checkpoint import load_generator
    from pcgan.errors import PcganError
    from pcgan.fileio import ensure_writable_dir, write_json
    from pcgan.training.loop import resolve_device

    t_start = time.perf_counter()
    if args.minutes < 0:
        raise PcganError(f"--minutes {args.minutes:g}: give 0 (no training) or more")
    if args.samples < 1:
        raise PcganError(f"--samples {args.samples}: give at least 1")
    if args.threads is not None and args.threads < 1:
        raise PcganError(f"--threads {args.threads}: give at least 1")
    dev = resolve_device(args.device)
    config = Path(args.config) if args.config else _default_config(dev.type)
    overrides = list(args.set)
    res = args.res
    if res is not None:
        overrides.append(f"model.resolution={res}")
    if dev.type == "cpu" and not any(o.startswith("train.precision=") for o in overrides):
        from pcgan.training.loop import cpu_has_bf16
        if cpu_has_bf16():   # native bf16: ~1.4x the grids per second of fp32 (benchmarks/RESULTS.md)
            overrides.append("train.precision=bf16")
    cfg = resolve_config(config, overrides)                                  # fails early on a bad key
    res = cfg.model.resolution
    faces = args.faces or DEFAULT_FACES[dev.type]
    if faces < 4:
        raise PcganError(f"--faces {faces}: give at least 4 (some are held out for the metrics)")
    out = Path(args.out)
    scans, dataset, run_dir, faces_dir = out / "scans", out / "dataset", out / "run", out / "faces"
    untrained = out / UNTRAINED_FILE
    if args.minutes == 0:
        from pcgan.checkpoint import find_snapshots
        if not run_dir.is_dir() or not find_snapshots(run_dir):
            raise PcganError(f"--minutes 0 re-makes the outputs from {run_dir}, but it holds no snapshot yet: "
                             f"train first, e.g. pcgan demo --out {out} --minutes 10")
    ensure_writable_dir(out)
    load = load_average()   # before the demo's own stages add to it
    threads = args.threads or (auto_threads(load) if dev.type == "cpu" else torch.get_num_threads())

    precision = "bf16" if "train.precision=bf16" in overrides else cfg.train.precision
    print(f"pcgan demo: {faces} synthetic faces -> {res}x{res} grids -> {args.minutes:g} min of training on "
          f"{dev.type} ({config.name}, {precision}) -> faces, pictures, metrics in {out}/")
    st = _Stages(7)

    st.start("scans", f"synthetic face scans -> {scans}")
    st.end(make_scans(scans, faces, args.seed))

    st.start("dataset", f"preprocess -> XYZRGB grids {dataset}")
    st.end(make_dataset(scans, dataset, res, faces))
    from pcgan.dataset import load_dataset
    meta = load_dataset(dataset).meta

    st.start("train", f"training for {args.minutes:g} min -> {run_dir}")
    if dev.type == "cpu":
        torch.set_num_threads(threads)   # after preprocess, which runs torch on one thread
        print(f"   torch threads: {threads}" + ("" if args.threads else f" (of {os.cpu_count()} cores, "
                                                                       f"load average {load:.1f} at the start)"))
    if not untrained.is_file():
        save_untrained(untrained, cfg, meta)
    training = {"kimg": None}
    if args.minutes > 0:
        training = train(dataset, run_dir, config, overrides, args.device, args.minutes)
        st.end(f"{training['kimg']:.3f} kimg in total" if training["kimg"] is not None else "")
    else:
        st.end("skipped (--minutes 0)")

    st.start("generate", f"generate and export {args.samples} faces -> {faces_dir}")
    G, gmeta, info = load_generator(run_dir, device=dev)
    grids, seeds, exported = export_faces(G, gmeta, faces_dir, args.samples, args.trunc)
    st.end(f"snapshot {Path(info['path']).name} (kimg {info['kimg']:.3f}), psi {args.trunc:g}, "
           f"{len(exported.written)} faces x (.ply, _mesh.ply, .png)")

    st.start("pictures", "contact sheet and turntable")
    sheet, gif = draw(grids, seeds, gmeta, out, args.size)
    st.end(f"{sheet.name}, {gif.name}")

    st.start("metrics", "3D metrics of the untrained and the trained generator vs the held-out scans")
    G0, _, _ = load_generator(untrained, device=dev)
    metrics = evaluate(G0, G, gmeta, dataset, args.eval_num, dev.type, args.weights_dir, out / "nearest_reals.png")
    write_json(out / "metrics.json", metrics)
    table = _metrics_table(metrics)
    st.end()
    print(table)
    if metrics["note_2d"]:
        print("   2D metrics (FID, KID) skipped: no FID Inception weights found; --weights-dir DIR adds them "
              "(metrics.json, note_2d, says where to get the file)")

    st.start("summary", f"{SUMMARY_FILE}")
    faces_written = [paths for _, paths in exported.written]
    first = faces_written[0]
    summary = {
        "device": dev.type, "torch_threads": threads if dev.type == "cpu" else None,
        "config": str(config), "overrides": overrides, "faces": faces, "resolution": res,
        "minutes": args.minutes, "training": training,
        "snapshot": {"path": info["path"], "kimg": info["kimg"]},
        "paths": {"scans": str(scans), "dataset": str(dataset), "run": str(run_dir), "untrained": str(untrained),
                  "faces": str(faces_dir), "contact_sheet": str(sheet), "turntable": str(gif),
                  "metrics": str(out / "metrics.json"), "nearest_reals": str(out / "nearest_reals.png")},
        "metrics": {"untrained": metrics["untrained"]["metrics"], "trained": metrics["trained"]["metrics"],
                    "training_scans": (metrics.get("training_scans") or {}).get("metrics"),
                    "num_gen": metrics["num_gen"], "num_real": metrics["reals"]["count"],
                    "points_per_cloud": metrics["points_per_cloud"]},
        "stage_s": st.timings,
    }
    st.end()
    summary["stage_s"] = st.timings
    summary["total_s"] = round(time.perf_counter() - t_start, 1)
    write_json(out / SUMMARY_FILE, summary)

    view = f"pcgan view {first['ply']} {first['mesh']}"
    print(f"""
pcgan demo: done in {_fmt_s(summary['total_s'])}
  scans         {scans}/
  dataset       {dataset}/  (preview.png)
  training run  {run_dir}/  (fakes*.png, stats.jsonl; tensorboard --logdir {run_dir})
  faces         {faces_dir}/  ({len(faces_written)} x .ply point cloud, _mesh.ply mesh, .png preview)
  pictures      {sheet}  {gif}
  metrics       {out / 'metrics.json'}  (nearest val scans: {out / 'nearest_reals.png'})
  summary       {out / SUMMARY_FILE}

Look at a generated face in Open3D (on a desktop):
  {view}
Headless: pcgan render {faces_dir}/seed00000[0-3].ply --views front,left,right --mode lit --out faces.png
Train longer into the same run: pcgan demo --out {out} --minutes 30""")
    return 0


def _metrics_table(metrics: dict) -> str:
    """Untrained vs trained vs training scans (what a perfect generator would get), one line per number."""
    u, t = metrics["untrained"]["metrics"], metrics["trained"]["metrics"]
    r = (metrics.get("training_scans") or {}).get("metrics", {})
    better = {"cov_cd": "higher is better", "1nna_cd": "0.5 is ideal, 1 = told apart"}
    lines = [f"   {metrics['num_gen']} generated faces per model vs {metrics['reals']['count']} held-out scans, "
             f"{metrics['points_per_cloud']} points per cloud",
             f"   {'metric':<16}{'untrained':>11}{'trained':>11}{'train scans':>13}"]
    for k in t:
        if not isinstance(t.get(k), (int, float)) or not isinstance(u.get(k), (int, float)):
            continue
        hint = better.get(k.split("/")[0], "lower is better")
        ref = f"{r[k]:>13.4g}" if isinstance(r.get(k), (int, float)) else f"{'':>13}"
        lines.append(f"   {k:<16}{u[k]:>11.4g}{t[k]:>11.4g}{ref}   {hint}")
    return "\n".join(lines)

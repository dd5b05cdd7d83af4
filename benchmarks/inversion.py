"""Inversion quality and time per face: encoder-only, encoder + refinement, optimisation-only.

    python benchmarks/inversion.py --ckpt RUN --data DATASET --out OUT
    python benchmarks/inversion.py --ckpt RUN --data DATASET --encoder OUT/encoder   # reuse a trained encoder

Targets: ``--held-out`` faces from the dataset's val split (never seen by the generator or the
encoder) and the real scans in ``../shared/realdata`` (the menpo "james" scan, mm; the ICT Face
Model mean mesh, cm, scaled by 10), preprocessed with the checkpoint's camera and normalisation
as ``pcgan invert`` does. For each target and method, in the same run and on the same
generator:

    w_avg           no inversion: the average face (the baseline every method must beat)
    encoder         one forward pass of an encoder trained here (``--encoder-kimg``) or given
    encoder+refine  the encoder's W+ refined by ``--refine-steps`` optimisation steps
    optimization    ``--steps`` steps of the projector from w_avg (W+, with noise)

Reported per face: Chamfer-L1 (scan units, the scans' mm), F-score at 1% and 2% of the
target's bounding-box diagonal, RGB PSNR (dB) over the target's surface, LPIPS-VGG of the
masked colour images (the optimisation's loss uses LPIPS-Alex, so the reported LPIPS is not the
quantity optimised), mask IoU, and wall time per face (one face at a time, preprocessing not
included; time to train the encoder reported separately). Writes ``OUT/inversion.json`` and
prints a Markdown table of the means.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pcgan.checkpoint import load_generator  # noqa: E402
from pcgan.dataset import load_dataset  # noqa: E402
from pcgan.inversion import (LossWeights, ProjectOptions, ReconstructionLoss, check_encoder,  # noqa: E402
                             load_encoder, load_lpips_loss, project)
from pcgan.inversion.evaluate import reconstruction_metrics  # noqa: E402
from pcgan.inversion.train_encoder import EncoderTrainOptions, read_stats, train_encoder  # noqa: E402

REALDATA = REPO.parent / "shared" / "realdata"
REAL_SCANS = (("james", REALDATA / "faces/menpo3d_james/james.obj", 1.0),
              ("ict_mean", REALDATA / "faces/ict_facekit/generic_neutral_mesh.obj", 10.0))
METHODS = ("w_avg", "encoder", "encoder+refine", "optimization")
KEYS = ("chamfer_l1", "fscore", "fscore_2pct", "psnr_rgb", "lpips_rgb", "mask_iou", "seconds")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ckpt", required=True, help="generator run dir or snapshot")
    ap.add_argument("--data", required=True, help="its dataset (val split = held-out faces; train split trains the encoder)")
    ap.add_argument("--out", required=True, help="output directory (encoder run, inversion.json)")
    ap.add_argument("--encoder", default=None, help="an existing encoder.pt / run dir (else one is trained)")
    ap.add_argument("--encoder-kimg", type=float, default=4.0, help="encoder training length when training one")
    ap.add_argument("--encoder-synthetic", type=float, default=0.5, help="fraction of generated grids per encoder batch")
    ap.add_argument("--held-out", type=int, default=4, help="val-split faces to invert")
    ap.add_argument("--steps", type=int, default=300, help="optimisation-only steps")
    ap.add_argument("--refine-steps", type=int, default=50, help="encoder+refine steps")
    ap.add_argument("--weights-dir", default=str(REPO.parent / "shared" / "weights"), help="LPIPS weights")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1: steadier on a shared machine)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    G, meta, ginfo = load_generator(args.ckpt)
    ds = load_dataset(args.data)
    lpips_alex, _ = load_lpips_loss("on", "alex", args.weights_dir)
    lpips_vgg, _ = load_lpips_loss("on", "vgg", args.weights_dir)

    # -- the encoder
    t0 = time.perf_counter()
    enc_path = args.encoder
    if enc_path is None:
        opts = EncoderTrainOptions(kimg=args.encoder_kimg, batch=8, lr=1e-3, width=16, width_max=128,
                                   synthetic=args.encoder_synthetic, lpips="on", tick_kimg=0.5, snapshot_ticks=4)
        res = train_encoder(G, meta, ginfo["path"], args.data, out / "encoder", opts, weights_dir=args.weights_dir,
                            resume=False, generator_kimg=ginfo["kimg"],
                            on_tick=lambda r: print(f"  encoder kimg {r['kimg']:.2f}: train {r['train/total']:.4f} "
                                                    f"val {r['val/total']:.4f} ({r['sec_per_kimg']:.0f} s/kimg)",
                                                    file=sys.stderr))
        enc_path = res.path
    encoder_train_s = time.perf_counter() - t0 if args.encoder is None else None
    E, einfo = load_encoder(enc_path)
    check_encoder(einfo, G, enc_path, ginfo["path"])

    # -- targets
    targets = []
    val = ds.split("val")[: args.held_out]
    for row in val:
        targets.append(("held-out", f"val{int(row):04d}", np.asarray(ds.grids[int(row)], dtype=np.float32)))
    from pcgan.invert_cli import scan_to_grid
    for name, path, scale in REAL_SCANS:
        if not path.exists():
            print(f"skipping {name}: {path} not found", file=sys.stderr)
            continue
        t = time.perf_counter()
        grid, info = scan_to_grid(path, meta, scan_scale=scale)
        print(f"  preprocessed {name} in {time.perf_counter() - t:.1f} s (coverage {info['render']['coverage']:.2f})",
              file=sys.stderr)
        targets.append(("real", name, grid))

    weights = LossWeights()
    results = []
    for kind, name, grid in targets:
        target = torch.from_numpy(grid)[None]
        loss = ReconstructionLoss(meta, weights, lpips_alex)
        rows = {}
        with torch.no_grad():
            rows["w_avg"] = (G.synthesis(G.mapping.w_avg.expand(1, G.num_ws, -1), noise_mode="const"), 0.0)
            t = time.perf_counter()
            ws = E(target)
            rows["encoder"] = (G.synthesis(ws, noise_mode="const"), time.perf_counter() - t)
        t = time.perf_counter()
        ws = E(target).detach()
        ref = project(G, target, meta, loss, ProjectOptions(steps=args.refine_steps, lr=0.01, lr_rampup=0.0,
                                                            w_noise=0.0, noise_init="const"), init_ws=ws)
        rows["encoder+refine"] = (ref.grid, time.perf_counter() - t)
        t = time.perf_counter()
        opt = project(G, target, meta, loss, ProjectOptions(steps=args.steps))
        rows["optimization"] = (opt.grid, time.perf_counter() - t)
        for method, (recon, seconds) in rows.items():
            m = reconstruction_metrics(recon[0], grid, meta, lpips_model=lpips_vgg)
            m.update(kind=kind, name=name, method=method, seconds=seconds)
            results.append(m)
            print(f"  {kind:8s} {name:10s} {method:15s} CD-L1 {m['chamfer_l1']:7.3f} {meta.units}  "
                  f"F {m['fscore']:.3f}  F2 {m['fscore_2pct']:.3f}  PSNR {m['psnr_rgb']:5.2f}  "
                  f"LPIPS {m['lpips_rgb']:.3f}  IoU {m['mask_iou']:.3f}  {seconds:6.2f} s", file=sys.stderr)

    summary = {"date": time.strftime("%Y-%m-%d"), "device": f"CPU, {args.threads} torch thread(s)",
               "python": platform.python_version(), "torch": torch.__version__,
               "checkpoint": ginfo["path"], "checkpoint_kimg": ginfo["kimg"], "resolution": meta.resolution,
               "num_ws": G.num_ws, "encoder": str(enc_path), "encoder_train_s": encoder_train_s,
               "encoder_val": read_stats(Path(enc_path).parent)[-1] if args.encoder is None else None,
               "steps": args.steps, "refine_steps": args.refine_steps, "units": meta.units, "results": results}
    (out / "inversion.json").write_text(json.dumps(summary, indent=1, default=float))

    print(f"\n| targets | method | Chamfer-L1 ({meta.units}) | F-score@1% | F-score@2% | RGB PSNR (dB) | LPIPS-VGG | mask IoU | s/face |")
    print("|---|---|---|---|---|---|---|---|---|")
    for kind in ("held-out", "real"):
        for method in METHODS:
            rs = [r for r in results if r["kind"] == kind and r["method"] == method]
            if not rs:
                continue
            mean = {k: float(np.mean([r[k] for r in rs])) for k in KEYS}
            label = f"{kind} ({len(rs)})"
            print(f"| {label} | {method} | {mean['chamfer_l1']:.2f} | {mean['fscore']:.3f} | {mean['fscore_2pct']:.3f} | "
                  f"{mean['psnr_rgb']:.2f} | {mean['lpips_rgb']:.3f} | {mean['mask_iou']:.3f} | {mean['seconds']:.2f} |")
    print("\nper real scan:")
    for r in results:
        if r["kind"] == "real":
            print(f"| {r['name']} | {r['method']} | {r['chamfer_l1']:.2f} | {r['fscore']:.3f} | {r['fscore_2pct']:.3f} | "
                  f"{r['psnr_rgb']:.2f} | {r['lpips_rgb']:.3f} | {r['mask_iou']:.3f} | {r['seconds']:.2f} |")
    if encoder_train_s is not None:
        print(f"\nencoder training: {encoder_train_s:.0f} s for {args.encoder_kimg:g} kimg")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``pcgan invert``: a real scan (or a dataset grid) into the generator's W+, and back out.

The target is a raw scan file, preprocessed here exactly as ``pcgan preprocess`` would with the
checkpoint's camera and normalisation (``data_tools``, imported only for raw scans), or a row
of a dataset directory / a ``.npy`` of grids. Inversion is optimisation (StyleGAN2's
projector, :mod:`pcgan.inversion.optimize`), an encoder's single forward pass
(``--encoder``, from ``pcgan train-encoder``), or the encoder refined by a few optimisation
steps (``--refine-steps``). Style mixing with a generated face (``--mix-seed``) edits the result.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import math
import re
import sys
import time
from pathlib import Path

import numpy as np
import torch

from pcgan.errors import PcganError
from pcgan.fileio import atomic_path, ensure_writable_dir, write_json
from pcgan.grid import XYZ, GridMeta, normalize_xyz, denormalize_xyz

log = logging.getLogger(__name__)

HELP = "invert a scan or dataset grid into W+ (optimisation and/or encoder); reconstruct, mix styles"

EPILOG = """\
targets (--scan):
  a raw scan (.obj/.ply/.glb/.off/.stl mesh, .ply/.pcd/.xyz/.npy point cloud): canonicalised
      (--orient auto by default, as pcgan preprocess) and rendered with the checkpoint's camera,
      centre and scale, so it must be in the units of the training scans (--scan-scale fixes that)
  a dataset directory (grids.npy + dataset.json) or a GRIDS.npy [N, C, H, W]: row --index
  a single grid .npy [C, H, W]
  The grid must have the checkpoint's channels and resolution.

outputs (in --out, NAME = --name or the scan's file name):
  NAME_latent.npy           W+ styles [L, w_dim] float32 (np.load; feed G.synthesis(ws[None]))
  NAME_noise.npz            the optimised noise maps (when noise was optimised)
  NAME_recon.ply/.png/.npy  the reconstruction: point cloud in the scans' units, preview, grid
  NAME_target.png/.npy      the target grid as inverted
  NAME_progress.gif|.mp4    target (top) and the reconstruction as it converges (bottom)
  NAME_losses.jsonl/.csv    every step's losses and learning rate
  NAME_mix-seedS.ply/.png   with --mix-seed: the inverted face with layers --mix-layers from seed S
  NAME_summary.json         Chamfer (scan units), F-score, PSNR, LPIPS, mask IoU, timings, options

examples:
  # optimise W+ (and the noise maps) for 1000 steps on a real scan
  pcgan invert --ckpt runs/faces256 --scan scans/james.obj --out out/james

  # one forward pass of an encoder, then 100 refinement steps
  pcgan invert --ckpt runs/faces256 --encoder runs/enc256 --refine-steps 100 --scan scans/james.obj --out out/james

  # a held-out dataset face, in W instead of W+
  pcgan invert --ckpt runs/faces256 --scan data/faces256 --index 12 --space w --out out/face12

  # keep the inverted face's coarse geometry, take fine colour from generated face 7
  pcgan invert --ckpt runs/faces256 --scan scans/james.obj --mix-seed 7 --mix-layers 8-13 --out out/james

  # a scan in cm for a checkpoint trained on mm scans
  pcgan invert --ckpt runs/faces256 --scan ict_mean.obj --scan-scale 10 --out out/ict
"""

MIN_IN_VIEW = 0.5                # a raw scan needs this fraction of its points inside the camera's view
SIZE_RANGE = (0.25, 4.0)         # its half-width, in normalised units (training faces: about 1)
VIDEO_FRAMES = 50                # frames in the progress video when --frame-every is not given
VIDEO_MIN_WIDTH = 384            # frames are enlarged (nearest) to at least this width


def add_arguments(parser) -> None:
    parser.add_argument("--ckpt", required=True, metavar="RUN",
                        help="generator: a run directory (newest snapshot) or a network-snapshot-*.pt")
    parser.add_argument("--scan", required=True, metavar="SCAN_OR_GRID",
                        help="a raw scan file, a dataset directory, a GRIDS.npy [N, C, H, W] or a grid .npy [C, H, W]")
    parser.add_argument("--index", type=int, default=0, help="row of a dataset / GRIDS.npy (default 0)")
    parser.add_argument("--out", required=True, metavar="DIR", help="output directory (created if missing)")
    parser.add_argument("--name", default=None, help="output file prefix (default: the scan's name)")
    inv = parser.add_argument_group("inversion")
    inv.add_argument("--space", choices=("w", "w+"), default="w+",
                     help="optimise one style for all layers (w) or one per layer (w+, default)")
    inv.add_argument("--steps", type=int, default=1000, help="optimisation steps without --encoder (default 1000)")
    inv.add_argument("--lr", type=float, default=0.1, help="peak learning rate of those steps (default 0.1)")
    inv.add_argument("--encoder", default=None, metavar="ENC",
                     help="encoder.pt (or its run dir) from `pcgan train-encoder` for this generator: "
                          "invert in one forward pass")
    inv.add_argument("--refine-steps", type=int, default=0,
                     help="with --encoder: optimisation steps refining its output (default 0)")
    inv.add_argument("--refine-lr", type=float, default=0.01, help="peak learning rate of refinement (default 0.01)")
    inv.add_argument("--no-noise", action="store_true",
                     help="keep the generator's fixed noise maps instead of optimising them")
    inv.add_argument("--seed", type=int, default=0, help="seed of the optimisation's random draws")
    inv.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="default: auto")
    loss = parser.add_argument_group("losses (weights; 0 turns a term off)")
    for name, default, what in (("xyz", 10.0, "masked L2 on XYZ"), ("rgb", 1.0, "masked L2 on RGB"),
                                ("mask", 1.0, "L2 on the mask channel"), ("lpips", 1.0, "LPIPS on RGB"),
                                ("chamfer", 10.0, "soft-masked Chamfer"), ("noise-reg", 1e5, "noise regularisation")):
        loss.add_argument(f"--w-{name}", type=float, default=default, help=f"{what} (default {default:g})")
    loss.add_argument("--lpips", choices=("auto", "on", "off"), default="auto",
                      help="auto: LPIPS when its weights are found (else a warning); on: required; off")
    loss.add_argument("--lpips-net", choices=("alex", "vgg"), default="alex", help="LPIPS trunk (default alex)")
    loss.add_argument("--weights-dir", default=None, help="folder with the LPIPS weights (default: $PCGAN_WEIGHTS, caches)")
    loss.add_argument("--chamfer-points", type=int, default=1024, help="points per side of the Chamfer term (default 1024)")
    edit = parser.add_argument_group("editing")
    edit.add_argument("--mix-seed", type=int, default=None,
                      help="also write the inverted face with some style layers from generated face SEED")
    edit.add_argument("--mix-layers", default=None, metavar="LAYERS",
                      help="style layers taken from --mix-seed, e.g. 8-17 (default: those of the blocks above 32x32, "
                           "i.e. fine detail and colour; the upper half for smaller generators)")
    edit.add_argument("--mix-psi", type=float, default=1.0, help="truncation psi of the generated face (default 1)")
    out = parser.add_argument_group("outputs")
    out.add_argument("--video", choices=("gif", "mp4", "none"), default="gif", help="progress video format (default gif)")
    out.add_argument("--frame-every", type=int, default=None,
                     help=f"a video frame every N steps (default: about {VIDEO_FRAMES} frames)")
    scan = parser.add_argument_group("raw scans (as pcgan preprocess)")
    scan.add_argument("--orient", choices=("auto", "axes", "none"), default=None,
                      help="auto (symmetry + nose; default), axes (--up/--forward), none (already y up, facing +z)")
    scan.add_argument("--up", help="scan axis pointing up, e.g. +y (implies --orient axes)")
    scan.add_argument("--forward", help="scan axis the face looks along, e.g. +z (implies --orient axes)")
    scan.add_argument("--center", choices=("bbox", "none"), default="bbox",
                      help="bbox: centre the scan's robust bounding box (default); none: keep its origin")
    scan.add_argument("--scan-scale", type=float, default=1.0,
                      help="multiply the scan's coordinates by this first (e.g. 10: a cm scan for a mm checkpoint)")
    scan.add_argument("--default-rgb", default="0.7,0.7,0.7", help="colour of surfaces without colour, r,g,b in [0, 1]")


# ---------------------------------------------------------------------------------------------
# Targets


def _camera_half_width(meta: GridMeta) -> float:
    """Half the width the camera sees in the plane z = 0, normalised units."""
    cam = meta.camera
    if cam.projection == "perspective":
        return cam.distance * math.tan(math.radians(cam.fov_deg) / 2)
    return cam.ortho_half_extent


def check_in_view(points_n: np.ndarray, meta: GridMeta, name: str) -> float:
    """Raise PcganError unless at least MIN_IN_VIEW of ``points_n [N, 3]`` (normalised frame)
    project inside the camera's image in front of it. Returns that fraction."""
    u, v, depth = meta.camera.project(points_n, meta.resolution)
    r = meta.resolution
    inside = (depth > 0) & (u >= 0) & (u < r) & (v >= 0) & (v < r)
    frac = float(inside.mean()) if len(inside) else 0.0
    if frac < MIN_IN_VIEW:
        lo, hi = points_n.min(0), points_n.max(0)
        span = ", ".join(f"{a} [{lo[i]:.2f}, {hi[i]:.2f}]" for i, a in enumerate("xyz"))
        raise PcganError(f"{name}: the scan lies outside the checkpoint's camera: only {frac:.0%} of its points "
                         f"are in view (it spans {span} normalised units; the camera sees x and y within "
                         f"+-{_camera_half_width(meta):.2f} at z = 0, i.e. +-{_camera_half_width(meta) * meta.scale:.4g} "
                         f"{meta.units}); check its orientation and centre (--orient, --up/--forward, --center) "
                         f"and units (--scan-scale)")
    return frac


def scan_to_grid(path: Path, meta: GridMeta, orient: str = "auto", up: str | None = None,
                 forward: str | None = None, center: str = "bbox", scan_scale: float = 1.0,
                 default_rgb=(0.7, 0.7, 0.7)) -> tuple[np.ndarray, dict]:
    """Preprocess one raw scan into a grid ``[C, H, W]`` float32 with ``meta``'s camera and
    normalisation: the steps ``pcgan preprocess`` runs per scan (load, canonicalise, render or
    splat), with the dataset scale taken from the checkpoint. Returns (grid, info)."""
    from data_tools import canonical, preprocess

    if not (scan_scale > 0 and math.isfinite(scan_scale)):
        raise PcganError(f"--scan-scale {scan_scale}: must be a positive number")
    jobs, _ = preprocess.discover([str(path)])
    if len(jobs) != 1:
        raise PcganError(f"{path}: expected one scan, found {len(jobs)}")
    job = jobs[0]
    if job.error:
        raise PcganError(job.error)
    per_scan = meta.units == "per-scan"
    canon = canonical.CanonOptions(orient=orient, up=up, forward=forward, center=center, per_scan_scale=per_scan)
    settings = preprocess.Settings(cache="", meta=meta, canon=canon, default_rgb=tuple(default_rgb), fixed_scale=True)
    kind, scan, pts, warnings = preprocess.load_scan(job, settings)
    S = np.diag([scan_scale, scan_scale, scan_scale, 1.0])
    T, extent, cinfo = canonical.canonicalise(np.asarray(pts) * scan_scale, canon, job.path,
                                              keep_orientation=(kind == "rgbd"))
    to_canonical = T @ S
    pts_n = canonical.apply_transform(preprocess.normalisation_matrix(meta) @ to_canonical, pts)
    in_view = check_in_view(pts_n, meta, str(path))
    if not per_scan:
        half = extent / meta.scale
        if not SIZE_RANGE[0] <= half <= SIZE_RANGE[1]:
            scaled = f" x --scan-scale {scan_scale:g}" if scan_scale != 1 else ""
            raise PcganError(f"{path}: the scan's half-width is {extent / scan_scale:.4g} in its own units{scaled} "
                             f"= {half:.3g} normalised units, but the checkpoint's faces are about 1 normalised unit "
                             f"({meta.scale:.4g} {meta.units}): is the scan in {meta.units}? "
                             f"(--scan-scale multiplies its coordinates, e.g. 10 for cm -> mm)")
    grid, stats = preprocess.render_scan(kind, scan, to_canonical, settings, job.path)
    info = {"source": str(path), "kind": kind, "to_canonical": to_canonical.tolist(), "half_extent": extent,
            "canonical": cinfo, "render": stats, "in_view": in_view, "warnings": warnings, "scan_scale": scan_scale}
    return grid.astype(np.float32), info


def _layout_error(what: str, channels: int, resolution, meta: GridMeta, ckpt: str, names=None) -> PcganError:
    got = f"{channels} channels{f' {list(names)}' if names else ''} at {resolution}"
    return PcganError(f"{what} holds grids of {got}, but the checkpoint {ckpt} makes {meta.num_channels} channels "
                      f"{list(meta.channels)} at {meta.resolution}x{meta.resolution}: invert grids made for "
                      f"this checkpoint (or give the raw scan)")


def renormalize(grid: np.ndarray, src: GridMeta, dst: GridMeta) -> np.ndarray:
    """A grid's XYZ moved from ``src``'s normalisation to ``dst``'s (same scan units)."""
    if (src.center, src.scale) == (dst.center, dst.scale):
        return grid
    out = np.array(grid, dtype=np.float32, copy=True)
    xyz = denormalize_xyz(out[XYZ].transpose(1, 2, 0), src)
    out[XYZ] = normalize_xyz(xyz, dst).transpose(2, 0, 1)
    return out


def load_target(args, meta: GridMeta, ckpt: str) -> tuple[np.ndarray, str, dict]:
    """The target grid ``[C, H, W]`` float32 in the checkpoint's layout, a name, and its source."""
    from pcgan.dataset import GRIDS_FILE, INFO_FILE, load_dataset, open_npy

    path = Path(args.scan)
    if not path.exists():
        raise PcganError(f"--scan {path} does not exist")
    if path.is_dir() or (path.name == GRIDS_FILE and (path.parent / INFO_FILE).is_file()):
        if path.is_dir() and not (path / INFO_FILE).is_file():
            raise PcganError(f"--scan {path} is a directory without {INFO_FILE}: give a dataset directory or a scan file")
        ds = load_dataset(path)
        if ds.meta.channels != meta.channels or ds.meta.resolution != meta.resolution:
            raise _layout_error(f"dataset {ds.path}", ds.meta.num_channels,
                                f"{ds.meta.resolution}x{ds.meta.resolution}", meta, ckpt, ds.meta.channels)
        if ds.meta.camera != meta.camera:
            raise PcganError(f"dataset {ds.path} was made with camera {ds.meta.camera.to_dict()}, the checkpoint "
                             f"{ckpt} with {meta.camera.to_dict()}: grids from another camera cannot be inverted")
        if not 0 <= args.index < len(ds):
            raise PcganError(f"--index {args.index}: dataset {ds.path} has {len(ds)} grids (0-{len(ds) - 1})")
        if (ds.meta.center, ds.meta.scale) != (meta.center, meta.scale):
            log.info("dataset %s is normalised differently (center %s, scale %g) from the checkpoint (center %s, "
                     "scale %g): its grid is moved into the checkpoint's normalisation", ds.path, ds.meta.center,
                     ds.meta.scale, meta.center, meta.scale)
        grid = renormalize(np.asarray(ds.grids[args.index], dtype=np.float32), ds.meta, meta)
        rec = next((r for r in ds.info.get("files", []) if r.get("index") == args.index), {})
        split = "val" if args.index in set(ds.split("val").tolist()) else "train"
        stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(rec.get("path", "")).stem)[:60]
        name = f"{path.name if path.is_dir() else path.parent.name}_{args.index:06d}" + (f"_{stem}" if stem else "")
        return grid, name, {"source": str(ds.path), "index": args.index, "split": split, "scan": rec.get("path")}
    if path.suffix.lower() == ".npy":
        arr = open_npy(path)
        if arr.ndim == 4 and arr.shape[1:] == (meta.num_channels, meta.resolution, meta.resolution):
            if not 0 <= args.index < len(arr):
                raise PcganError(f"--index {args.index}: {path} holds {len(arr)} grids (0-{len(arr) - 1})")
            return np.asarray(arr[args.index], dtype=np.float32), f"{path.stem}_{args.index:06d}", \
                {"source": str(path), "index": args.index}
        if arr.ndim == 4 and arr.shape[-1] == arr.shape[-2] and arr.shape[1] <= 16:
            raise _layout_error(str(path), arr.shape[1], f"{arr.shape[2]}x{arr.shape[3]}", meta, ckpt)
        if arr.ndim == 2 and arr.shape[1] >= 3:
            pass   # an [N, 3+] point array: a raw point cloud, preprocessed below
        else:
            raise PcganError(f"{path}: shape {list(arr.shape)} is neither grids [N, C, H, W] / [C, H, W] nor points [N, 3]")
    orient = args.orient or ("axes" if (args.up or args.forward) else "auto")
    try:
        rgb = tuple(float(t) for t in args.default_rgb.split(","))
    except ValueError:
        rgb = ()
    if len(rgb) != 3 or not all(0 <= c <= 1 for c in rgb):
        raise PcganError(f"--default-rgb {args.default_rgb!r}: give three numbers in [0, 1], e.g. 0.7,0.7,0.7")
    grid, info = scan_to_grid(path, meta, orient, args.up, args.forward, args.center, args.scan_scale, rgb)
    return grid, re.sub(r"[^A-Za-z0-9._-]+", "_", path.stem)[:60] or "scan", info


# ---------------------------------------------------------------------------------------------
# Outputs


def _save_npy(path: Path, array: np.ndarray) -> None:
    with atomic_path(path, suffix=".npy") as tmp:
        np.save(tmp, array)


def _write_losses(stem: Path, rows: list[dict]) -> None:
    with atomic_path(stem.with_name(stem.name + "_losses.jsonl")) as tmp:
        tmp.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    keys = list(dict.fromkeys(k for r in rows for k in r))
    with atomic_path(stem.with_name(stem.name + "_losses.csv")) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=keys or ["step"])
            w.writeheader()
            w.writerows(rows)


def _video_frame(target_img: np.ndarray, grid: torch.Tensor, meta: GridMeta) -> np.ndarray:
    from pcgan.export import preview_image
    img = np.concatenate([target_img, preview_image(grid, meta)], axis=0)          # [2H, 3W, 3]
    k = max(1, math.ceil(VIDEO_MIN_WIDTH / img.shape[1]))
    return img.repeat(k, axis=0).repeat(k, axis=1)


def write_video(path: Path, frames: list[np.ndarray], fmt: str) -> Path:
    """GIF (PIL) or MP4 (imageio + ffmpeg) of ``frames`` (uint8 [h, w, 3]), atomically."""
    if fmt == "gif":
        from PIL import Image
        images = [Image.fromarray(f) for f in frames]
        with atomic_path(path) as tmp:
            images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:], duration=80, loop=0)
        return path
    try:
        import imageio.v2 as imageio
    except ImportError:
        raise PcganError("--video mp4 needs imageio and imageio-ffmpeg (pip install imageio imageio-ffmpeg); "
                         "or use --video gif") from None
    h, w = frames[0].shape[:2]
    pad = [(0, -h % 16), (0, -w % 16), (0, 0)]   # H.264 wants sizes in 16-pixel macro blocks
    with atomic_path(path) as tmp:
        try:
            with imageio.get_writer(tmp, format="FFMPEG", fps=12, macro_block_size=16) as writer:
                for f in frames:
                    writer.append_data(np.pad(f, pad))
        except (RuntimeError, ValueError, OSError) as exc:
            raise PcganError(f"--video mp4: cannot encode ({exc}); use --video gif") from None
    return path


# ---------------------------------------------------------------------------------------------
# The command


def _weights(args):
    from pcgan.inversion.losses import LossWeights
    return LossWeights(xyz=args.w_xyz, rgb=args.w_rgb, mask=args.w_mask, lpips=args.w_lpips,
                       chamfer=args.w_chamfer, noise_reg=args.w_noise_reg)


def run(args) -> int:
    from tqdm import tqdm

    from pcgan.checkpoint import load_generator
    from pcgan.export import export_grid, preview_image
    from pcgan.inversion import (ProjectOptions, ReconstructionLoss, check_encoder, load_encoder, load_lpips_loss,
                                 mix_styles, parse_layers, project)
    from pcgan.inversion.edit import default_mix_layers
    from pcgan.inversion.evaluate import reconstruction_metrics
    from pcgan.networks import z_from_seeds
    from pcgan.training.loop import resolve_device

    if args.steps < 0 or args.refine_steps < 0:
        raise PcganError("--steps and --refine-steps must be >= 0")
    if args.steps == 0 and not args.encoder:
        raise PcganError("--steps 0 without --encoder leaves nothing to invert: give steps or an encoder")
    if args.refine_steps and not args.encoder:
        raise PcganError("--refine-steps refines an encoder's output: give --encoder ENC (or use --steps)")
    if args.chamfer_points < 1:
        raise PcganError(f"--chamfer-points {args.chamfer_points}: must be >= 1")
    weights = _weights(args)
    device = resolve_device(args.device)
    G, meta, ginfo = load_generator(args.ckpt, device)
    mix_layers = None
    if args.mix_seed is not None:
        mix_layers = (parse_layers(args.mix_layers, G.num_ws) if args.mix_layers
                      else default_mix_layers(G.num_ws, G.resolution))
    elif args.mix_layers:
        raise PcganError("--mix-layers needs --mix-seed SEED (the generated face to take them from)")
    E = einfo = None
    if args.encoder:
        E, einfo = load_encoder(args.encoder, device)
        check_encoder(einfo, G, einfo["path"], ginfo["path"])
    out = ensure_writable_dir(args.out)
    target_np, name, source = load_target(args, meta, ginfo["path"])
    name = args.name or name
    stem = out / name
    target = torch.from_numpy(target_np)[None].to(device)                       # [1, C, H, W]

    lpips_model, lpips_info = load_lpips_loss(args.lpips, args.lpips_net, args.weights_dir, device)
    loss_fn = ReconstructionLoss(meta, weights, lpips_model, args.chamfer_points, seed=args.seed).to(device)
    steps = args.refine_steps if E is not None else args.steps
    frame_every = args.frame_every or max(1, steps // VIDEO_FRAMES)
    options = ProjectOptions(space=args.space, steps=steps, lr=args.refine_lr if E is not None else args.lr,
                             optimize_noise=not args.no_noise, seed=args.seed,
                             frame_every=frame_every if args.video != "none" and steps else 0,
                             **({"w_noise": 0.0, "lr_rampup": 0.0, "noise_init": "const"} if E is not None else {}))

    timings: dict[str, float] = {}
    init_ws = None
    if E is not None:
        t0 = time.perf_counter()
        with torch.no_grad():
            init_ws = E(target)                                                  # [1, L, w_dim]
        timings["encoder_s"] = time.perf_counter() - t0
    result = None
    if steps > 0:
        with tqdm(total=steps, desc="invert", unit="step", disable=None, file=sys.stderr) as bar:
            def tick(step, row):
                bar.update(1)
                if step % 10 == 0:
                    bar.set_postfix(loss=f"{row['total']:.4g}")
            result = project(G, target, meta, loss_fn, options, init_ws=init_ws, callback=tick)
        timings["optimize_s"] = result.seconds
        ws, noise, recon = result.ws, result.noise, result.grid
    else:
        ws, noise = init_ws, None
        with torch.no_grad():
            recon = G.synthesis(ws, noise_mode="const")
    timings["total_s"] = sum(timings.values())

    # -- files
    _save_npy(stem.with_name(name + "_latent.npy"), ws[0].detach().cpu().numpy().astype(np.float32))
    if noise is not None:
        with atomic_path(stem.with_name(name + "_noise.npz")) as tmp:
            np.savez(tmp, **{f"layer{i:02d}_{n.shape[-1]}": n[0, 0].cpu().numpy() for i, n in enumerate(noise)})
    recon_cpu = recon[0].detach().float().cpu()
    written = export_grid(recon_cpu, meta, stem.with_name(name + "_recon"), formats=("ply", "png", "npy"))
    export_grid(torch.from_numpy(target_np), meta, stem.with_name(name + "_target"), formats=("png", "npy"))
    if result is not None:
        _write_losses(stem, result.losses)
        if result.frames and args.video != "none":
            target_img = preview_image(target_np, meta)
            write_video(stem.with_name(f"{name}_progress.{args.video}"),
                        [_video_frame(target_img, g[0], meta) for _, g in result.frames], args.video)
    mix = None
    if mix_layers is not None:
        with torch.no_grad():
            w_gen = G.mapping(z_from_seeds([args.mix_seed], G.z_dim, device), None, truncation_psi=args.mix_psi)
            ws_mix = mix_styles(ws, w_gen, mix_layers)
            mixed = G.synthesis(ws_mix, noise=noise) if noise is not None else G.synthesis(ws_mix, noise_mode="const")
        mix_stem = stem.with_name(f"{name}_mix-seed{args.mix_seed}")
        export_grid(mixed[0].float().cpu(), meta, mix_stem, formats=("ply", "png"))
        _save_npy(mix_stem.with_name(mix_stem.name + "_latent.npy"), ws_mix[0].cpu().numpy().astype(np.float32))
        mix = {"seed": args.mix_seed, "layers": mix_layers, "psi": args.mix_psi, "files": [str(mix_stem) + s for s in (".ply", ".png")]}

    metrics = reconstruction_metrics(recon_cpu, target_np, meta, lpips_model=lpips_model)
    summary = {"name": name, "checkpoint": ginfo["path"], "checkpoint_kimg": ginfo["kimg"],
               "encoder": einfo["path"] if einfo else None, "target": source,
               "mode": ("encoder+refine" if steps else "encoder") if E is not None else "optimization",
               "options": dataclasses.asdict(options), "weights": dataclasses.asdict(weights),
               "lpips": lpips_info, "metrics": metrics, "timings": timings,
               "final_loss": (result.losses[-1] if result is not None and result.losses else None), "mix": mix}
    write_json(stem.with_name(name + "_summary.json"), json.loads(json.dumps(summary, default=str)))
    lp = f", LPIPS {metrics['lpips_rgb']:.3f}" if "lpips_rgb" in metrics else ""
    print(f"inverted {name} ({summary['mode']}, {args.space}, {steps} steps, {timings['total_s']:.1f} s): "
          f"Chamfer-L1 {metrics['chamfer_l1']:.4g} {meta.units}, F-score {metrics['fscore']:.3f} "
          f"(tau {metrics['tau']:.3g} {meta.units}), PSNR {metrics['psnr_rgb']:.2f} dB{lp} -> {written['ply'].parent}")
    return 0

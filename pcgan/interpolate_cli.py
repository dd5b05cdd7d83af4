"""``pcgan interpolate``: a walk through latent space between seeds, as frames, GIF/MP4 and .ply."""

from __future__ import annotations

import argparse

from pcgan.generate_cli import (add_export_arguments, add_model_arguments, check_export_arguments,
                                check_model_arguments, export_chunk, load_model, parse_seeds,
                                progress_bar, report_failed, seed_name)

HELP = "interpolate between seeds: frames + GIF/MP4 (RGB | shaded turntable) and a .ply per keyframe"

EPILOG = """\
files in OUT:
  frames/frame_000000.png ...   one per frame: the generated RGB | the point cloud in grey shading,
                                its camera swinging +-SWEEP degrees once over the whole animation
  interpolation.gif / .mp4      the frames at --fps (--video; mp4 needs imageio-ffmpeg)
  seedNNNNNN.ply                each keyframe (--format, default ply), the same bytes as
                                `pcgan generate` of that seed with the same --trunc/--cutoff/--noise-mode

--frames is per transition: seeds 1,5,9 with --frames 60 give 121 frames (60 + 60 + the last
key), or 180 with --loop (back to the first seed, for a seamless repeat). --space w (default)
lerps between the seeds' truncated styles; --space z slerps between their latents and maps
each frame. With --noise-mode random the noise maps are slerped between the keys' seeded maps.

examples:
  pcgan interpolate --ckpt runs/faces256 --seeds 1,5,9 --frames 60 --out out/walk
  pcgan interpolate --ckpt runs/faces256 --seeds 0-7 --frames 30 --loop --trunc 0.7 --video gif,mp4 --out out/loop
  pcgan interpolate --ckpt runs/faces256 --seeds 3,4 --frames 90 --space z --size 512 --sweep 45 --out out/z
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    parser.add_argument("--seeds", required=True, metavar="LIST",
                        help="keyframe seeds in order, e.g. '1,5,9' (a seed may come back: '1,5,1')")
    parser.add_argument("--frames", type=int, default=60, metavar="N",
                        help="frames per transition between two seeds (default: %(default)s)")
    parser.add_argument("--space", default="w", choices=("w", "z"),
                        help="w: lerp the truncated styles; z: slerp the latents (default: %(default)s)")
    parser.add_argument("--loop", action="store_true", help="go back from the last seed to the first")
    parser.add_argument("--out", required=True, metavar="DIR", help="output directory (created if missing)")
    parser.add_argument("--video", default="gif", metavar="LIST",
                        help="animations to write: gif, mp4 or gif,mp4 (default: %(default)s)")
    parser.add_argument("--fps", type=float, default=30.0, help="frames per second (default: %(default)s)")
    parser.add_argument("--size", type=int, default=None, metavar="PX",
                        help="side of each frame panel in pixels (default: the grid resolution)")
    parser.add_argument("--sweep", type=float, default=30.0, metavar="DEG",
                        help="turntable swing in degrees either side of frontal; 0: no turn (default: %(default)s)")
    add_export_arguments(parser, "ply")


def run(args) -> int:
    from pcgan.errors import PcganError
    from pcgan.fileio import ensure_writable_dir
    from pcgan.generate import (check_video_formats, frame_picture, interpolate_ws, interpolation_schedule,
                                iter_interpolate, turntable_yaws, write_animation, write_frame)

    # A keyframe may come back ("1,5,1"): parse each comma part alone so repeats are kept.
    seeds = [s for part in args.seeds.split(",") for s in parse_seeds(part)]
    check_model_arguments(args)
    formats, outlier_removal = check_export_arguments(args)
    videos = check_video_formats(args.video)
    interpolation_schedule(len(seeds), args.frames, args.loop)          # checks seeds and --frames early
    if not args.fps > 0:
        raise PcganError(f"--fps {args.fps}: must be positive")
    if args.size is not None and not 8 <= args.size <= 4096:
        raise PcganError(f"--size {args.size}: give 8-4096 pixels")
    if not 0 <= args.sweep < 360:
        raise PcganError(f"--sweep {args.sweep}: give degrees in [0, 360)")
    out = ensure_writable_dir(args.out)
    G, meta, info, c = load_model(args)

    per_face = not args.batched_network
    path = interpolate_ws(G, seeds, args.frames, args.space, args.trunc, args.cutoff, args.loop, c, per_face)
    keys = {}                                                           # frame index -> seed, first visit only
    for frame, seed in zip(path.key_frames, path.seeds):
        if seed not in keys.values():
            keys[frame] = seed
    total = len(path.schedule)
    yaws = turntable_yaws(total, args.sweep)
    frames_dir = ensure_writable_dir(out / "frames")
    pictures, failed, written = [], [], 0
    with progress_bar(total, "frame", "interpolate") as bar:
        for idx, grids in iter_interpolate(G, path, args.noise_mode, args.batch, per_face):
            for i, grid in zip(idx, grids):
                pic = frame_picture(grid, meta, yaws[i], args.size)
                pictures.append(pic)
                write_frame(frames_dir / f"frame_{i:06d}.png", pic)
            key_rows = [j for j, i in enumerate(idx) if i in keys]
            if key_rows:
                summary = export_chunk(grids[key_rows], meta, out, [seed_name(keys[idx[j]]) for j in key_rows],
                                       formats, outlier_removal, args)
                written += len(summary.written)
                failed += summary.failed
            bar.update(len(idx))
    animations = [write_animation(out / f"interpolation.{v}", pictures, args.fps) for v in videos]
    report_failed("interpolate", failed)
    print(f"{total} frames through seeds {','.join(map(str, seeds))} ({args.space} space"
          f"{', looped' if args.loop else ''}) from {info['path']}: {frames_dir}/, "
          f"{', '.join(str(a) for a in animations)}, {written} keyframes as {', '.join(formats)}")
    return 1 if failed else 0


"""Expected memory and speed of the GPU presets, worked out on any machine (no GPU needed).

    python benchmarks/gpu_estimate.py                                  # every configs/faces-*.yaml
    python benchmarks/gpu_estimate.py --configs configs/faces-256.yaml --max-batch 8

**Memory** is measured, not guessed: two real training steps of the preset
(``pcgan.training.loop.train``: every phase, G main, path length, D main and R1, then a step
with both optimisers' state in place; bf16 autocast) run on the CPU at the preset's per-GPU
batch and half of it (both capped at ``--max-batch``) under a tracker that adds up the bytes of
every live tensor storage: parameters, gradients, Adam moments, G_ema, the batch and every
activation kept for backward, at its peak. That is the CPU twin of
``torch.cuda.max_memory_allocated``. Above the cap the two batches give a fixed and a
per-grid part (networks, gradients and optimiser states are fixed, activations grow with the
batch), extrapolated to the preset's batch; the peak is the largest of the phases' and grows a
little faster than linearly at small batches (faces-64: 32 MiB a grid between batches 2 and 4,
45 between 4 and 8), so measure as close to the real batch as the CPU allows. On the GPU,
``nvidia-smi`` adds the CUDA context and the caching allocator's slack (typically 0.5-2 GiB
more), and DDP on 8 GPUs one more copy of the gradients (its buckets), listed separately.

**Speed** is an estimate: model FLOPs per training image (counted as ``benchmarks/train_step.py``
does, every phase weighted by its interval) divided by the throughput the official StyleGAN2
implementation sustains on an A100, from its published table (``--cfg=stylegan2``, config F
at 1024x1024 on 8 A100s: 14.57 s/kimg, batch 32; NVlabs/stylegan3 docs/configs.md) and
the FLOPs of that same architecture counted here with the same counter. An H100 has ~3x an
A100's bf16 peak, but StyleGAN2's many small kernels do not scale with peak (the same table
gives a V100 17.55 s/kimg: 2.5x less peak, 1.2x slower), so expect somewhere between this
figure and half of it; pcgan's resampling runs as plain convolutions, without custom CUDA
kernels. Measure on your GPU: ``python benchmarks/train_step.py --device cuda --config C``, or
``sec_per_kimg`` and ``gpu_mem_gib`` in a run's ``stats.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import weakref
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.weak import WeakIdKeyDictionary

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from pcgan.config import load_config  # noqa: E402
from pcgan.grid import Camera, GridMeta  # noqa: E402
from pcgan.networks import Discriminator, Generator  # noqa: E402
from pcgan.training import loop  # noqa: E402
from train_step import step_flops, synthetic_dataset  # noqa: E402

GIB = 2**30

# The anchor for speed: StyleGAN2 config F at 1024x1024, 8 GPUs, batch 32 (4 per GPU), as the
# official implementation measured it (NVlabs/stylegan3, docs/configs.md, "Configurations used
# in StyleGAN3 paper": 17.55 s/kimg on V100s, 14.57 on A100s).
# Counted with pcgan's grid channels (7, against RGB's 3: ToRGB and FromRGB only, well under 1%
# of the FLOPs) and without the normals pcgan's D reads by default.
ANCHOR = {"channels": 7, "gpus": 8, "sec_per_kimg_a100": 14.57,
          "overrides": ["model.resolution=1024", "model.channel_base=32768", "model.channel_max=512",
                        "model.d_normals=false", "model.d_curvature=0", "model.d_pack=1",
                        "train.batch=32", "train.r1_gamma=10", "train.pl_weight=2", "train.style_mixing=0.9"]}


class LiveTensorBytes(TorchDispatchMode):
    """Bytes of every tensor storage allocated while active and still alive; ``peak`` is the most
    at any moment. Views and in-place results share their input's storage and add nothing."""

    def __init__(self):
        super().__init__()
        self.seen = WeakIdKeyDictionary()
        self.live = 0
        self.peak = 0

    def _freed(self, nbytes: int, _ref) -> None:
        self.live -= nbytes

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {t.untyped_storage().data_ptr() for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)}
        for t in tree_leaves(out):
            if not isinstance(t, torch.Tensor):
                continue
            storage = t.untyped_storage()
            if storage in self.seen or storage.data_ptr() in inputs:   # seen, or a view / in-place result
                continue
            nbytes = storage.nbytes()
            self.seen[storage] = weakref.ref(storage, lambda ref, n=nbytes: self._freed(n, ref))
            self.live += nbytes
            self.peak = max(self.peak, self.live)
        return out


def per_gpu_batch(cfg, gpus: int) -> int:
    t = cfg.train
    return t.batch_gpu or t.batch // gpus


def gpus_of(path: Path) -> int:
    return 8 if "8gpu" in path.stem else 1


def step_peak_bytes(cfg_path: Path, batch: int, data: Path) -> int:
    """Peak live tensor bytes of the first two training steps: every phase runs at step 0, and
    in step 1 both optimisers' Adam moments exist from its start, as in every later step."""
    cfg = load_config(cfg_path, [f"train.batch={batch}", "train.batch_gpu=null", f"train.kimg={2 * batch / 1000}",
                                 f"train.tick_kimg={batch / 1000}", "train.snapshot_ticks=0", "train.preview_grids=0",
                                 "train.metrics=[]", "train.precision=bf16", "train.workers=0", "train.compile=false",
                                 "train.channels_last=false"])
    with tempfile.TemporaryDirectory() as run, LiveTensorBytes() as tracker:
        loop.train(cfg, data, run, device="cpu")
    return tracker.peak


def count_params(cfg, channels: int) -> tuple[int, int]:
    m = cfg.model
    G = Generator(**m.generator_kwargs(channels, camera=Camera().to_dict(),
                                      background=GridMeta(m.resolution).empty_pixel()))
    D = Discriminator(**m.discriminator_kwargs(channels, camera=Camera().to_dict()))
    return sum(p.numel() for p in G.parameters()), sum(p.numel() for p in D.parameters())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configs", nargs="+", type=Path, help="presets (default: configs/faces-*.yaml)")
    ap.add_argument("--max-batch", type=int, default=16,
                    help="largest batch run on the CPU (default 16); above it, memory is extrapolated")
    ap.add_argument("--threads", type=int, help="torch CPU threads")
    ap.add_argument("--skip-anchor", action="store_true", help="no speed estimate (skips counting config F at 1024)")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    paths = args.configs or sorted((REPO / "configs").glob("faces-*.yaml"))
    C = 7
    anchor_tflops = None
    if not args.skip_anchor:
        cfg = load_config(paths[0], ANCHOR["overrides"])
        flops = step_flops(cfg, torch.device("cpu"), 1, ANCHOR["channels"])
        anchor_tflops = flops * 1000 / ANCHOR["sec_per_kimg_a100"] / ANCHOR["gpus"] / 1e12
        print(f"# anchor: StyleGAN2 config F 1024x1024, {flops / 1e9:.0f} GFLOP per training image here; "
              f"{ANCHOR['sec_per_kimg_a100']} s/kimg on {ANCHOR['gpus']} A100s = {anchor_tflops:.1f} TFLOP/s per A100",
              flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        datasets: dict[int, Path] = {}
        peaks: dict[tuple[str, int], int] = {}
        for path in paths:
            cfg = load_config(path, [])
            R, gpus = cfg.model.resolution, gpus_of(path)
            if R not in datasets:
                datasets[R] = synthetic_dataset(Path(tmp) / f"ds{R}", R, 16)
            start = time.perf_counter()
            bg = per_gpu_batch(cfg, gpus)
            b2 = min(bg, args.max_batch)
            b1 = b2 // 2
            model_key = json.dumps(cfg.model.__dict__, default=str, sort_keys=True)
            for b in (b1, b2):
                if (model_key, b) not in peaks:
                    peaks[(model_key, b)] = step_peak_bytes(path, b, datasets[R])
            m1, m2 = peaks[(model_key, b1)], peaks[(model_key, b2)]
            per_grid = (m2 - m1) / (b2 - b1)
            fixed = m1 - per_grid * b1
            g_params, d_params = count_params(cfg, C)
            ddp = 4 * (g_params + d_params) if gpus > 1 else 0
            flops = step_flops(cfg, torch.device("cpu"), min(2, bg), C)
            row = {"config": path.name, "resolution": R, "gpus": gpus, "batch_per_gpu": bg,
                   "G_params": g_params, "D_params": d_params, "fixed_gib": fixed / GIB,
                   "per_grid_gib": per_grid / GIB, "tensor_gib": (fixed + per_grid * bg) / GIB,
                   "extrapolated": bg > b2,
                   "ddp_buckets_gib": ddp / GIB, "gflop_per_image": flops / 1e9,
                   "measured_batches": [b1, b2], "measured_peaks_gib": [m1 / GIB, m2 / GIB]}
            if anchor_tflops:
                row["sec_per_kimg_at_anchor"] = flops * 1000 / (anchor_tflops * 1e12) / gpus
            rows.append(row)
            how = f"from batches {b1} and {b2}" if bg > b2 else "measured"
            print(f"  {path.name:22s} {R:4d}x{R:<4d} {gpus} GPU, {bg:3d}/GPU: tensors {row['tensor_gib']:6.2f} GiB "
                  f"({how}; fixed {fixed / GIB:.2f} + {per_grid / GIB * 1024:.0f} MiB/grid)"
                  + (f" + DDP {ddp / GIB:.2f}" if ddp else "")
                  + f"; {flops / 1e9:.0f} GFLOP/img"
                  + (f"; ~{row['sec_per_kimg_at_anchor']:.1f} s/kimg at the anchor's TFLOP/s" if anchor_tflops else "")
                  + f"  ({time.perf_counter() - start:.0f} s)", flush=True)
    print("\n| preset | per-GPU batch | tensor memory per GPU | GFLOP per image | expected s/kimg |")
    print("|---|---:|---:|---:|---:|")
    for r in rows:
        mem = (f"{r['tensor_gib']:.1f} GiB" + (" (extrapolated)" if r["extrapolated"] else "")
               + (f" + {r['ddp_buckets_gib']:.2f} DDP" if r["ddp_buckets_gib"] else ""))
        spk = f"~{r['sec_per_kimg_at_anchor']:.0f}" if "sec_per_kimg_at_anchor" in r else "n/a"
        print(f"| `{r['config']}` | {r['batch_per_gpu']} | {mem} | {r['gflop_per_image']:.0f} | {spk} |")
    if args.json:
        args.json.write_text(json.dumps({"anchor_tflops_per_a100": anchor_tflops, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()

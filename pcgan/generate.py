"""Generation: seeds -> grids, style mixing, latent interpolation, and their pictures.

The library behind ``pcgan generate``, ``pcgan mix`` and ``pcgan interpolate``.

Reproducibility. Seed s is one stream of a CPU ``torch.Generator`` seeded with s: first its
latent z (:func:`pcgan.networks.z_from_seeds`), then, for ``noise_mode="random"``, its noise
maps (:meth:`pcgan.networks.Generator.noise_from_seeds`). Nothing is drawn from a shared
random state, so a seed's face does not depend on the other seeds or their order. That alone
does not make the *bytes* independent of the batch: batched matmuls and convolutions round
differently at different batch sizes (on this CPU a face computed alone and the same face in a
batch of 8 differ by ~5e-6, enough to change float32 .ply coordinates). So by default
(``per_face=True``) the network sees one face per call; ``batch`` only sets how many faces are
produced per step (and handed to the exporter together). That costs network time, since each
call redoes the layers' weight-side work (1.5x at 256^2 on a 2-core CPU, benchmarks/RESULTS.md);
``per_face=False`` runs each step in one call, faster, with the same faces to ~1e-5 but bytes
that may differ between batch sizes.

Style layers. The synthesis network takes one style per layer, ws ``[B, L, w_dim]``. As in the
StyleGAN paper, styles 2k and 2k + 1 belong to resolution 4 * 2**k: ``coarse`` = 4-8 (pose,
face shape), ``middle`` = 16-32 (features), ``fine`` = 64 and up (colour, skin detail).

Core module: torch, numpy and PIL at import. The turntable pictures use
:func:`viewers.render.render_views` (numpy backend: no GL, no Open3D) and GIFs
:func:`viewers.render.write_gif`, both imported when first needed; without ``viewers`` the
frames fall back to the frontal shading of the export preview and GIFs to imageio. MP4 needs
imageio with imageio-ffmpeg, also imported when needed.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from PIL import Image

from pcgan.errors import PcganError
from pcgan.export import EMPTY_PIXEL_RGB, preview_image
from pcgan.fileio import atomic_path
from pcgan.grid import GridMeta, surface_mask
from pcgan.networks import NOISE_MODES, Generator, z_from_seeds
from pcgan.ranges import parse_index_list

log = logging.getLogger(__name__)

PSI_RANGE = (0.0, 2.0)        # truncation psi: 0 the average face, 1 no truncation, > 1 exaggerated
STYLE_GROUPS = {              # named style-layer groups: (lowest, highest) resolution, None = up to the top
    "coarse": (4, 8),
    "middle": (16, 32),
    "fine": (64, None),
}
SPACES = ("w", "z")           # interpolation spaces: lerp in W (truncated, per layer), slerp in Z
VIDEO_FORMATS = ("gif", "mp4")
DEFAULT_SWEEP = 30.0          # turntable: the camera swings +-this many degrees about the vertical


# ---------------------------------------------------------------------------------------------
# Checks and small helpers


def check_psi(psi: float) -> float:
    """Truncation psi in [0, 2] (PcganError otherwise)."""
    lo, hi = PSI_RANGE
    try:
        psi = float(psi)
    except (TypeError, ValueError):
        raise PcganError(f"truncation psi {psi!r} is not a number") from None
    if not lo <= psi <= hi:   # also rejects NaN
        raise PcganError(f"truncation psi {psi:g} is outside [{lo:g}, {hi:g}]: 1 is no truncation, "
                         f"0.7 a common choice for cleaner faces, 0 the average face")
    return psi


def check_cutoff(cutoff: int | None, num_ws: int) -> int | None:
    """Truncation cutoff: truncate styles ``< cutoff`` (None: all); must be in [0, num_ws]."""
    if cutoff is None:
        return None
    if isinstance(cutoff, bool) or not isinstance(cutoff, int) or not 0 <= cutoff <= num_ws:
        raise PcganError(f"truncation cutoff {cutoff!r}: this generator has {num_ws} style layers, so give "
                         f"0-{num_ws} (styles below the cutoff are truncated; e.g. 8 keeps the fine styles)")
    return cutoff


def check_noise_mode(noise_mode: str) -> str:
    if noise_mode not in NOISE_MODES:
        raise PcganError(f"noise mode {noise_mode!r}: use one of {', '.join(NOISE_MODES)}")
    return noise_mode


def check_batch(batch: int) -> int:
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise PcganError(f"batch {batch!r}: give a whole number of faces >= 1")
    return batch


def _check_sampling(G: Generator, psi: float, cutoff: int | None, noise_mode: str, batch: int) -> None:
    check_psi(psi)
    check_cutoff(cutoff, G.num_ws)
    check_noise_mode(noise_mode)
    check_batch(batch)


def layer_resolution(layer: int) -> int:
    """The resolution a style layer belongs to, in the paper's convention: 4 * 2**(layer // 2)."""
    return 4 * 2 ** (layer // 2)


def style_layers(spec: str | Sequence[int], num_ws: int) -> list[int]:
    """Style layers from ``"0-6"``, ``"8,9"``, a group name (coarse, middle, fine; comma-joined
    names combine) or a list of ints; each must be in ``0 .. num_ws - 1``."""
    if not isinstance(spec, str):
        layers = [int(x) for x in spec]
        bad = [x for x in layers if not 0 <= x < num_ws]
        if bad or not layers:
            raise PcganError(f"style layers {layers}: this generator has {num_ws} (0-{num_ws - 1})")
        return sorted(set(layers))
    names = [p.strip() for p in spec.split(",")]
    if all(n in STYLE_GROUPS for n in names):
        layers = []
        for n in names:
            lo, hi = STYLE_GROUPS[n]
            layers += [k for k in range(num_ws) if layer_resolution(k) >= lo and (hi is None or layer_resolution(k) <= hi)]
        if not layers:
            raise PcganError(f"style group {spec!r} is empty for a generator with {num_ws} style layers")
        return sorted(set(layers))
    if any(n and n[0].isalpha() for n in names):
        raise PcganError(f"style layers {spec!r}: give layer numbers like '0-6' or one of "
                         f"{', '.join(STYLE_GROUPS)}")
    return sorted(parse_index_list(spec, "style layer", limit=num_ws))


def class_vector(G: Generator, class_index: int | None) -> torch.Tensor | None:
    """One-hot condition ``[c_dim]`` for a conditional generator (None for an unconditional one)."""
    if G.c_dim == 0:
        if class_index is not None:
            raise PcganError(f"class {class_index} given, but this generator is unconditional (c_dim 0)")
        return None
    if class_index is None or not 0 <= class_index < G.c_dim:
        raise PcganError(f"this generator is conditional on {G.c_dim} classes: give a class in 0-{G.c_dim - 1}")
    c = torch.zeros([G.c_dim])
    c[class_index] = 1.0
    return c


def _condition(G: Generator, c, n: int) -> torch.Tensor | None:
    """``c`` as ``[n, c_dim]`` float32 on the CPU: given as ``[c_dim]`` (one for all) or ``[n, c_dim]``."""
    if G.c_dim == 0:
        if c is not None:
            raise PcganError("a condition c was given, but this generator is unconditional (c_dim 0)")
        return None
    if c is None:
        raise PcganError(f"this generator is conditional: pass c of shape [{G.c_dim}] or [N, {G.c_dim}]")
    c = torch.as_tensor(c, dtype=torch.float32).cpu()
    if c.shape == (G.c_dim,):
        c = c.expand(n, G.c_dim)
    if c.shape != (n, G.c_dim):
        raise PcganError(f"condition c has shape {list(c.shape)}, expected [{G.c_dim}] or [{n}, {G.c_dim}]")
    return c


def _on_device(G: Generator, device) -> tuple[Generator, torch.device]:
    own = next(G.parameters()).device
    if device is None or torch.device(device) == own:
        return G, own
    return G.to(device), torch.device(device)


def _calls(n: int, per_face: bool) -> list[slice]:
    """Rows of each network call: one face at a time, or all ``n`` together."""
    return [slice(i, i + 1) for i in range(n)] if per_face else [slice(0, n)]


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block with ``n`` torch intra-op threads, then restore the previous count.

    Export runs its own worker threads over small torch ops; torch's intra-op threads on top of
    them only contend for the same cores (measured 10 ms vs 1.2 s per grid on a loaded machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# ---------------------------------------------------------------------------------------------
# Seeds -> styles -> grids


@torch.no_grad()
def map_latents(G: Generator, z: torch.Tensor, psi: float = 1.0, cutoff: int | None = None, c=None,
                per_face: bool = True) -> torch.Tensor:
    """Latents ``z [N, z_dim]`` -> truncated styles ``ws [N, L, w_dim]`` float32 on G's device.

    ``psi`` / ``cutoff``: the truncation trick (see :func:`pcgan.networks.truncate`);
    ``c``: ``[c_dim]`` or ``[N, c_dim]`` for a conditional generator."""
    psi, cutoff = check_psi(psi), check_cutoff(cutoff, G.num_ws)
    device = next(G.parameters()).device
    c = _condition(G, c, len(z))
    out = [G.mapping(z[s].to(device), None if c is None else c[s].to(device),
                     truncation_psi=psi, truncation_cutoff=cutoff) for s in _calls(len(z), per_face)]
    return torch.cat(out) if out else torch.empty([0, G.num_ws, G.w_dim], device=device)


def map_seeds(G: Generator, seeds: Sequence[int], psi: float = 1.0, cutoff: int | None = None, c=None,
              per_face: bool = True) -> torch.Tensor:
    """Seeds -> truncated styles ``ws [N, L, w_dim]`` (seed s's z from its own generator)."""
    return map_latents(G, z_from_seeds(seeds, G.z_dim), psi, cutoff, c, per_face)


@torch.no_grad()
def synthesize(G: Generator, ws: torch.Tensor, noise_mode: str = "const",
               noise: Sequence[torch.Tensor] | None = None, per_face: bool = True) -> torch.Tensor:
    """Styles ``ws [N, L, w_dim]`` -> grids ``[N, C, H, W]`` float32 on the CPU.

    ``noise``: explicit per-layer maps ``[N, 1, r, r]`` (override ``noise_mode``), e.g. from
    ``G.noise_from_seeds``; None uses ``noise_mode`` ("const": the learned maps, "none": off,
    "random": fresh draws from torch's global generator, not reproducible per seed)."""
    check_noise_mode(noise_mode)
    device = next(G.parameters()).device
    grids = []
    for s in _calls(len(ws), per_face):
        n = None if noise is None else [m[s].to(device) for m in noise]
        grids.append(G.synthesis(ws[s].to(device), noise_mode=noise_mode, noise=n).float().cpu())
    if not grids:
        return torch.empty([0, G.img_channels, G.resolution, G.resolution])
    return torch.cat(grids)


def iter_generate(G: Generator, seeds: Sequence[int], psi: float = 1.0, cutoff: int | None = None,
                  noise_mode: str = "const", batch: int = 8, device=None, c=None,
                  per_face: bool = True) -> Iterator[tuple[list[int], torch.Tensor]]:
    """:func:`generate_grids` in steps of ``batch`` faces: yields ``(seeds, grids [b, C, H, W])``,
    so a thousand faces never sit in memory at once."""
    _check_sampling(G, psi, cutoff, noise_mode, batch)
    G, device = _on_device(G, device)
    seeds = [int(s) for s in seeds]
    c = _condition(G, c, len(seeds))
    for start in range(0, len(seeds), batch):
        chunk = seeds[start:start + batch]
        ws = map_seeds(G, chunk, psi, cutoff, None if c is None else c[start:start + batch], per_face)
        # Seeded noise: a "random" face is still a function of its seed alone.
        noise = G.noise_from_seeds(chunk) if noise_mode == "random" else None
        yield chunk, synthesize(G, ws, noise_mode, noise, per_face)


def generate_grids(G: Generator, seeds: Sequence[int], psi: float = 1.0, cutoff: int | None = None,
                   noise_mode: str = "const", batch: int = 8, device=None, c=None,
                   per_face: bool = True) -> torch.Tensor:
    """Grids for seeds: ``[N, C, H, W]`` float32 on the CPU, row i = seed ``seeds[i]``.

    Args:
        G: the generator (e.g. from :func:`pcgan.checkpoint.load_generator`).
        seeds: integers in [0, 2**63); each is one face, the same for any batch and order.
        psi: truncation in [0, 2] (1: none). cutoff: truncate styles below it (None: all).
        noise_mode: "const" (the learned maps), "random" (seeded per face: seed s's noise
            follows its z in the same stream), "none".
        batch: faces per step (and per network call when ``per_face`` is False).
        device: where the network runs (None: where G is; G is moved otherwise).
        c: condition ``[c_dim]`` or ``[N, c_dim]`` for a conditional generator.
        per_face: one face per network call, so grids are bit-identical for any batch and
            order (see the module docstring); False is faster (1.5x measured on a 2-core CPU).
    """
    parts = [g for _, g in iter_generate(G, seeds, psi, cutoff, noise_mode, batch, device, c, per_face)]
    if not parts:
        return torch.empty([0, G.img_channels, G.resolution, G.resolution])
    return torch.cat(parts)


# ---------------------------------------------------------------------------------------------
# Style mixing


def mix_ws(row_ws: torch.Tensor, col_ws: torch.Tensor, layers: Sequence[int]) -> torch.Tensor:
    """The style-mixing table: ``row_ws [R, L, D]``, ``col_ws [K, L, D]`` -> ``[R, K, L, D]``.

    Entry (r, k) takes the column face's styles at ``layers`` and the row face's elsewhere, so
    coarse layers carry the column face's pose and shape onto the row face (the StyleGAN figure)."""
    if row_ws.ndim != 3 or col_ws.shape[1:] != row_ws.shape[1:]:
        raise PcganError(f"mix_ws: row ws {list(row_ws.shape)} and column ws {list(col_ws.shape)} "
                         f"must both be [N, L, w_dim] with the same L and w_dim")
    L = row_ws.shape[1]
    take = torch.zeros(L, dtype=torch.bool, device=row_ws.device)
    take[torch.as_tensor(style_layers(list(layers), L), device=row_ws.device)] = True
    return torch.where(take[None, None, :, None], col_ws[None], row_ws[:, None])


@dataclass
class MixResult:
    rows: torch.Tensor        # [R, C, H, W] the row seeds' faces
    cols: torch.Tensor        # [K, C, H, W] the column seeds' faces
    mixed: torch.Tensor       # [R, K, C, H, W] row r with column k's styles at the mixed layers
    layers: list[int]         # the mixed style layers


def mix_grids(G: Generator, row_seeds: Sequence[int], col_seeds: Sequence[int], styles: str | Sequence[int],
              psi: float = 1.0, cutoff: int | None = None, noise_mode: str = "const", batch: int = 8,
              device=None, c=None, per_face: bool = True) -> MixResult:
    """Style mixing between every row seed and every column seed (see :func:`mix_ws`).

    ``styles``: the layers taken from the column face (``"0-6"``, ``"coarse"``, a list).
    With ``noise_mode="random"`` a mixed face uses its row seed's noise, as its base face does.
    ``c``: one condition ``[c_dim]`` for all faces. Other arguments as :func:`generate_grids`."""
    _check_sampling(G, psi, cutoff, noise_mode, batch)
    G, device = _on_device(G, device)
    layers = style_layers(styles, G.num_ws)
    row_seeds, col_seeds = [int(s) for s in row_seeds], [int(s) for s in col_seeds]
    if not row_seeds or not col_seeds:
        raise PcganError("style mixing needs at least one row seed and one column seed")
    rows = generate_grids(G, row_seeds, psi, cutoff, noise_mode, batch, device, c, per_face)
    cols = generate_grids(G, col_seeds, psi, cutoff, noise_mode, batch, device, c, per_face)
    row_ws = map_seeds(G, row_seeds, psi, cutoff, _condition(G, c, len(row_seeds)), per_face)
    col_ws = map_seeds(G, col_seeds, psi, cutoff, _condition(G, c, len(col_seeds)), per_face)
    table = mix_ws(row_ws, col_ws, layers).flatten(0, 1)               # [R*K, L, D]
    base = [s for s in row_seeds for _ in col_seeds]                   # row seed of each entry
    parts = []
    for start in range(0, len(table), batch):
        noise = G.noise_from_seeds(base[start:start + batch]) if noise_mode == "random" else None
        parts.append(synthesize(G, table[start:start + batch], noise_mode, noise, per_face))
    mixed = torch.cat(parts).unflatten(0, (len(row_seeds), len(col_seeds)))
    return MixResult(rows, cols, mixed, layers)


def _panels(grid, meta: GridMeta) -> tuple[np.ndarray, np.ndarray]:
    """(RGB, normal shading) pictures of one grid, each ``uint8 [H, W, 3]`` (export preview panels)."""
    pre = preview_image(grid, meta)                                    # [H, 3W, 3]
    W = pre.shape[1] // 3
    return pre[:, :W], pre[:, 2 * W:]


def mix_figure(result: MixResult, meta: GridMeta) -> np.ndarray:
    """The style-mixing figure: ``uint8 [(R + 1) H, (K + 1) 2W, 3]``.

    Tiles of ``[RGB | shading]`` (``H x 2W``): column faces along the top, row faces down the
    left, entry (r, k) at row r + 1, column k + 1; the top-left tile is empty."""
    R, K = result.mixed.shape[:2]
    H, W = meta.resolution, meta.resolution
    fig = np.empty(((R + 1) * H, (K + 1) * 2 * W, 3), np.uint8)
    fig[:] = np.asarray(EMPTY_PIXEL_RGB, np.uint8)

    def put(r: int, k: int, grid) -> None:
        rgb, shade = _panels(grid, meta)
        fig[r * H:(r + 1) * H, k * 2 * W:(k + 1) * 2 * W] = np.concatenate([rgb, shade], axis=1)

    for k in range(K):
        put(0, k + 1, result.cols[k])
    for r in range(R):
        put(r + 1, 0, result.rows[r])
        for k in range(K):
            put(r + 1, k + 1, result.mixed[r, k])
    return fig


# ---------------------------------------------------------------------------------------------
# Interpolation


def slerp(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    """Spherical interpolation along the last axis of ``a``, ``b`` ``[..., D]`` (``t`` in [0, 1]):
    follows the great circle between their directions, for Gaussian latents whose norms are all
    about sqrt(D). Falls back to lerp where the two are (anti)parallel."""
    a64, b64 = a.double(), b.double()
    cos = (a64 * b64).sum(-1, keepdim=True) / (a64.norm(dim=-1, keepdim=True) * b64.norm(dim=-1, keepdim=True)).clamp(min=1e-30)
    omega = cos.clamp(-1.0, 1.0).acos()
    so = omega.sin()
    safe = so > 1e-6
    wa = torch.where(safe, ((1 - t) * omega).sin() / so.clamp(min=1e-6), torch.full_like(so, 1 - t))
    wb = torch.where(safe, (t * omega).sin() / so.clamp(min=1e-6), torch.full_like(so, t))
    return (wa * a64 + wb * b64).to(a.dtype)


def interpolation_schedule(num_keys: int, frames: int, loop: bool = False) -> list[tuple[int, float]]:
    """``(key k, t)`` per frame: frame i lies a fraction t of the way from key k to key k + 1.

    ``frames`` per transition; keyframe k is frame ``k * frames`` (t = 0). Without ``loop``
    the last frame is the last key: ``(num_keys - 1) * frames + 1`` frames; with ``loop`` the
    last key goes back to the first: ``num_keys * frames`` frames, and the animation repeats
    seamlessly."""
    if num_keys < 2:
        raise PcganError(f"interpolation needs at least 2 seeds, got {num_keys}")
    if isinstance(frames, bool) or not isinstance(frames, int) or frames < 1:
        raise PcganError(f"frames {frames!r}: give the number of frames per transition, >= 1 (e.g. 60)")
    segments = num_keys if loop else num_keys - 1
    out = [(k, i / frames) for k in range(segments) for i in range(frames)]
    if not loop:
        out.append((num_keys - 1, 0.0))
    return out


@dataclass
class Interpolation:
    seeds: list[int]                   # the keyframes' seeds
    schedule: list[tuple[int, float]]  # (key, t) per frame
    ws: torch.Tensor                   # [F, L, w_dim] styles per frame
    loop: bool

    @property
    def key_frames(self) -> list[int]:
        """Frame index of each key (its first appearance)."""
        return [self.schedule.index((k, 0.0)) for k in range(len(self.seeds))]

    def next_key(self, k: int) -> int:
        """The key that key k's transition heads to (the first one after the last, in a loop)."""
        return (k + 1) % len(self.seeds)


def interpolate_ws(G: Generator, seeds: Sequence[int], frames: int, space: str = "w", psi: float = 1.0,
                   cutoff: int | None = None, loop: bool = False, c=None, per_face: bool = True) -> Interpolation:
    """Styles along a path through the seeds' latents.

    ``space="w"``: lerp between the seeds' truncated styles ``ws`` (per layer); ``"z"``: slerp
    between their z, then map and truncate each frame. Keyframes are exactly the seeds' own
    styles (t = 0 takes them as they are), so a keyframe's grid equals :func:`generate_grids`
    of its seed. ``c``: one condition ``[c_dim]`` for all frames."""
    if space not in SPACES:
        raise PcganError(f"interpolation space {space!r}: use 'w' (lerp) or 'z' (slerp)")
    seeds = [int(s) for s in seeds]
    schedule = interpolation_schedule(len(seeds), frames, loop)
    cond = _condition(G, c, len(seeds))
    one_c = None if cond is None else cond[0]
    nxt = lambda k: (k + 1) % len(seeds)   # noqa: E731
    if space == "w":
        keys = map_seeds(G, seeds, psi, cutoff, cond, per_face)                   # [K, L, D]
        ws = torch.stack([keys[k] if t == 0 else torch.lerp(keys[k], keys[nxt(k)], t) for k, t in schedule])
    else:
        z = z_from_seeds(seeds, G.z_dim)                                           # [K, z_dim]
        zs = torch.stack([z[k] if t == 0 else slerp(z[k], z[nxt(k)], t) for k, t in schedule])
        ws = map_latents(G, zs, psi, cutoff, one_c, per_face)
    return Interpolation(seeds, schedule, ws, loop)


def interpolation_noise(G: Generator, path: Interpolation, frames: slice) -> list[torch.Tensor]:
    """Seeded noise maps for ``frames`` of an interpolation: keyframes get their seed's noise
    exactly; in between, each layer's map is slerped between the two keys' maps (keeping its
    unit variance), so detail flows instead of flickering. One ``[F, 1, r, r]`` per layer."""
    keys = G.noise_from_seeds(path.seeds)                                          # per layer [K, 1, r, r]
    out = []
    for m in keys:
        flat = m.flatten(1)                                                        # [K, r*r]
        rows = [flat[k] if t == 0 else slerp(flat[k], flat[path.next_key(k)], t) for k, t in path.schedule[frames]]
        out.append(torch.stack(rows).view(-1, *m.shape[1:]) if rows else m[:0])
    return out


def iter_interpolate(G: Generator, path: Interpolation, noise_mode: str = "const", batch: int = 8,
                     per_face: bool = True) -> Iterator[tuple[range, torch.Tensor]]:
    """Grids of an interpolation, ``batch`` frames at a time: ``(frame indices, [b, C, H, W])``."""
    check_noise_mode(noise_mode)
    check_batch(batch)
    F = len(path.schedule)
    for start in range(0, F, batch):
        s = slice(start, min(start + batch, F))
        noise = interpolation_noise(G, path, s) if noise_mode == "random" else None
        yield range(s.start, s.stop), synthesize(G, path.ws[s], noise_mode, noise, per_face)


# ---------------------------------------------------------------------------------------------
# Pictures and animations


def _viewers_render():
    """viewers.render, or None where the viewers package is not installed."""
    try:
        from viewers import render
    except ImportError as exc:  # a core-only install
        log.debug("viewers not importable (%s): frontal previews instead of turntables", exc)
        return None
    return render


def turntable_yaws(frames: int, sweep: float = DEFAULT_SWEEP) -> list[float]:
    """Camera yaw per frame (degrees) of a turntable that swings +-``sweep`` once over ``frames``."""
    render = _viewers_render()
    if render is not None:
        return render.turntable_yaws(frames, sweep)
    return [0.0] * frames


def _resize(img: np.ndarray, size: int) -> np.ndarray:
    if img.shape[0] == size:
        return img
    return np.asarray(Image.fromarray(img).resize((size, size), Image.Resampling.NEAREST))


def frame_picture(grid, meta: GridMeta, yaw: float = 0.0, size: int | None = None) -> np.ndarray:
    """One animation frame: ``uint8 [S, 2S, 3]``, the grid's RGB | its point cloud in grey
    Lambert shading seen from ``yaw`` degrees (``S = size``, default the grid resolution).

    The point cloud is drawn by ``viewers.render`` (numpy splats: no GL, no Open3D); without
    the viewers package, the frontal normal shading of the export preview is shown instead (as
    for a grid with no surface pixels, whose shading panel is empty)."""
    size = size or meta.resolution
    rgb, shade = _panels(grid, meta)
    render = _viewers_render()
    if render is not None and bool(np.asarray(surface_mask(np.asarray(grid, np.float32), meta)).any()):
        shade = render.render_views(np.asarray(grid, np.float32), meta, views=[float(yaw)], size=size,
                                    mode="shade", backend="numpy", background=EMPTY_PIXEL_RGB)[0, 0]
    return np.concatenate([_resize(rgb, size), _resize(shade, size)], axis=1)


def check_video_formats(formats: str | Sequence[str]) -> tuple[str, ...]:
    """``"gif,mp4"`` -> validated names; fails early when MP4 cannot be written here."""
    names = [f.strip() for f in formats.split(",")] if isinstance(formats, str) else list(formats)
    names = [n for n in names if n]
    bad = [n for n in names if n not in VIDEO_FORMATS]
    if bad or not names:
        raise PcganError(f"video format {', '.join(map(repr, bad)) or '(none given)'}: choose from "
                         f"{', '.join(VIDEO_FORMATS)} (comma separated)")
    if "mp4" in names:
        try:
            import imageio_ffmpeg  # noqa: F401
        except ImportError:
            raise PcganError("MP4 needs imageio's ffmpeg plugin: pip install imageio-ffmpeg "
                             "(or ask for gif only)") from None
    return tuple(f for f in VIDEO_FORMATS if f in names)


def write_frame(path: str | Path, image: np.ndarray) -> Path:
    """Write ``uint8 [H, W, 3]`` as PNG, atomically."""
    path = Path(path)
    with atomic_path(path) as tmp:
        Image.fromarray(np.asarray(image, np.uint8)).save(tmp, format="PNG", compress_level=1)
    return path


def write_animation(path: str | Path, frames: Sequence[np.ndarray], fps: float = 30.0) -> Path:
    """Write frames ``uint8 [H, W, 3]`` as a looping ``.gif`` or an H.264 ``.mp4``, atomically."""
    path = Path(path)
    frames = [np.asarray(f, np.uint8) for f in frames]
    if not frames:
        raise PcganError(f"{path}: no frames to write")
    suffix = path.suffix.lower()
    if suffix == ".gif":
        render = _viewers_render()
        if render is not None:
            return render.write_gif(path, frames, fps)   # one shared palette: no colour flicker
        import imageio.v3 as iio

        with atomic_path(path) as tmp:
            iio.imwrite(tmp, np.stack(frames), extension=".gif", duration=int(round(1000 / fps)), loop=0)
        return path
    if suffix == ".mp4":
        check_video_formats("mp4")
        import imageio.v2 as imageio

        # H.264 wants even sides; the ffmpeg plugin pads to its macro block (16) otherwise.
        with atomic_path(path) as tmp:
            imageio.mimwrite(tmp, frames, format="FFMPEG", fps=fps, codec="libx264", quality=8,
                             macro_block_size=16, ffmpeg_log_level="error")
        return path
    raise PcganError(f"{path}: animation suffix must be .gif or .mp4")


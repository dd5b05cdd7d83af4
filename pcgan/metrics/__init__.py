"""Metrics: how good is a generator, in the terms papers use, for pictures and geometry.

One entry point, :func:`compute_metrics`, evaluates a set of generated grids against a set of
real grids (both ``[N, C, H, W]``, numpy, memory-mapped or torch, in the grid layout of
:mod:`pcgan.grid`) and returns the dict that ``metrics.json`` holds: every number, the sample
and point counts, the normalisation protocol, seeds, weights and package versions. Metrics are
registered by name in :data:`METRICS` (``pcgan.metrics.METRICS["fid50k_full"].doc`` says what
each one is); :data:`GROUPS` names common sets. Shared work (clouds, distance matrices,
Inception features) is computed once per call, whatever the order of the names.

- 2D (``fid*``, ``kid*``, ``pr*``, ``lpips_*``, ``ppl_*``): on the colour view and on a
  normal-shaded view of the geometry (:mod:`pcgan.metrics.shading`), each reported separately as
  ``name/rgb`` and ``name/shaded``.
- 3D set metrics (``mmd_cd``, ``cov_cd``, ``1nna_cd``, the same for EMD, ``jsd``): on fixed-size
  clouds from the grids' surface points, after a declared normalisation protocol
  (:mod:`pcgan.metrics.pointcloud`).
- 3D per-pair metrics (``fscore``, ``normal_consistency``, ``recon_o3d``): each generated grid
  against its paired real (``paired=True``: same index) or its Chamfer-nearest real.
- Generator metrics (``ppl_wend``, ``ppl3d_wend`` and the ``full`` variants) need ``mapping``,
  ``synthesis`` and ``z_dim`` options.

Presenting: :func:`format_table`, :func:`compare_table`, :func:`save_nn_pairs_png`.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import logging
import math
import platform
import re
import time
from dataclasses import dataclass
from typing import Callable, Iterable

import numpy as np
import torch

from pcgan import grid as G
from pcgan.errors import PcganError
from pcgan.metrics import frechet
from pcgan.metrics import pointcloud as pc
from pcgan.metrics.report import compare_table, format_table, save_nn_pairs_png
from pcgan.metrics.shading import AMBIENT, LIGHT, VIEWS, grid_images, to_uint8

log = logging.getLogger(__name__)

SCHEMA = "pcgan-metrics/1"


@dataclass(frozen=True)
class EvalOptions:
    """Everything that changes a number. Stored in metrics.json (callables left out)."""

    seed: int = 0                                  # one seed for every random choice (points, pairs, subsets)
    device: str = "cpu"                            # where networks and torch distance blocks run
    batch_size: int = 32                           # images per network pass
    # 3D
    num_points: int = pc.NUM_POINTS                # points per cloud (PointFlow/LION: 2,048)
    num_clouds: int | None = None                  # clouds per set for set metrics; None: min(len(fakes), len(reals))
    protocol: str = "global"                       # "global" (PointFlow), "bbox" (LION norm_box) or "none"
    bbox_half: float = 0.5                         # half-size of the box in the "bbox" protocol
    cd_backend: str = "auto"                       # pairwise Chamfer: "auto", "torch" or "kdtree"
    emd_method: str = "auto"                       # "auto", "exact" or "auction"
    emd_points: int | None = None                  # points per cloud for EMD; None: num_points
    jsd_resolution: int = pc.JSD_RESOLUTION        # voxels per side for JSD
    paired: bool = False                           # per-pair metrics: fakes[i] vs reals[i] (else nearest real)
    fscore_tau: float | None = None                # F-score threshold in scan units; None: use fscore_tau_frac
    fscore_tau_frac: float = 0.01                  # ... as a fraction of the real cloud's bbox diagonal
    nearest_pairs: int = 16                        # generated grids whose closest real is recorded (PNG)
    # 2D
    views: tuple[str, ...] = VIEWS                 # "rgb" and/or "shaded"
    weights_dir: str | None = None                 # folder with the network weights (None: PCGAN_WEIGHTS, caches)
    kid_subsets: int = 100                         # KID: number of subsets
    kid_subset_size: int = 1000                    # KID: samples per subset (capped by the set sizes)
    pr_k: int = 3                                  # precision/recall: k of the k-NN radius
    lpips_net: str = "alex"                        # LPIPS for diversity and reconstruction
    lpips_backend: str = "auto"                    # "auto", "package" or "builtin"
    lpips_pairs: int = 1000                        # random pairs for LPIPS diversity
    reals_key: tuple[str, str] | None = None       # (dataset path, sha256): cache the reals' Inception features
    cache_dir: str | None = None                   # where cached features go (None: ~/.cache/pcgan/stats)
    # generator metrics
    mapping: Callable | None = None                # z [B, z_dim] -> ws
    synthesis: Callable | None = None              # ws -> grids [B, C, H, W]
    z_dim: int | None = None                       # latent width for mapping
    ppl_samples: int = 10000                       # latent pairs for PPL
    ppl_epsilon: float = 1e-4                      # PPL step in t


@dataclass(frozen=True)
class Metric:
    name: str                                      # registry key, also the prefix of its outputs
    fn: Callable[["EvalContext"], dict]            # context -> {output name: float}
    kind: str                                      # "2d", "3d", "pair" or "generator"
    doc: str                                       # one line for --help and listings
    num_gen: int | None = None                     # generated grids the name promises (fid50k: 50,000)


METRICS: dict[str, Metric] = {}
GROUPS: dict[str, tuple[str, ...]] = {
    "pointflow": ("mmd_cd", "cov_cd", "1nna_cd", "mmd_emd", "cov_emd", "1nna_emd", "jsd"),
    "cd": ("mmd_cd", "cov_cd", "1nna_cd"),
    "emd": ("mmd_emd", "cov_emd", "1nna_emd"),
    "2d": ("fid", "kid", "pr3", "lpips_diversity"),
    "pairs": ("fscore", "normal_consistency"),
}


def register(name: str, kind: str, doc: str, num_gen: int | None = None):
    """Decorator: add ``fn(ctx) -> dict`` to :data:`METRICS` under ``name``."""
    def wrap(fn):
        if name in METRICS:
            raise ValueError(f"metric {name!r} registered twice")
        METRICS[name] = Metric(name, fn, kind, doc, num_gen)
        return fn
    return wrap


def list_metrics() -> dict[str, str]:
    """name -> one-line description, for --help."""
    return {k: m.doc for k, m in METRICS.items()}


def expand_names(names: Iterable[str] | str) -> list[str]:
    """Metric names with groups expanded and duplicates dropped; unknown names raise."""
    if isinstance(names, str):
        names = [n for n in names.replace(" ", "").split(",") if n]
    out: list[str] = []
    for n in names:
        for m in GROUPS.get(n, (n,)):
            if m not in METRICS:
                raise PcganError(f"unknown metric {m!r}; known: {', '.join(METRICS)}; groups: {', '.join(GROUPS)}")
            if m not in out:
                out.append(m)
    return out


def versions() -> dict[str, str | None]:
    """Versions of Python and the packages that shape the numbers."""
    from importlib import metadata

    out: dict[str, str | None] = {"python": platform.python_version()}
    for pkg in ("pcgan", "torch", "numpy", "scipy", "lpips", "open3d"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    return out


# ---------------------------------------------------------------------------------------------
# Evaluation context: the shared, lazily computed pieces


class EvalContext:
    """Holds the inputs and caches what several metrics share. Built by compute_metrics."""

    def __init__(self, fakes, reals, meta, opts: EvalOptions, gen_count_2d: int):
        self.fakes, self.reals, self.meta, self.opts = fakes, reals, meta, opts
        self.gen_count_2d = gen_count_2d
        self.details: dict[str, dict] = {}
        self.section_2d: dict = {}
        self.section_3d: dict = {}
        self._cache: dict = {}
        self._ref_index: np.ndarray | None = None

    def once(self, key, make):
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    # -- 3D ------------------------------------------------------------------------------------
    @property
    def num_clouds(self) -> int:
        n = min(len(self.fakes), len(self.reals))
        return min(n, self.opts.num_clouds) if self.opts.num_clouds else n

    @property
    def ref_index(self) -> np.ndarray:
        """Which reals the 3D set metrics use: all of them, or a seeded subset when there are
        more reals than clouds per set (datasets are often sorted, so not the first ones)."""
        if self._ref_index is None:
            n, m = self.num_clouds, len(self.reals)
            self._ref_index = (np.arange(m) if m == n else
                               np.sort(np.random.default_rng([self.opts.seed, 1]).choice(m, n, replace=False)))
        return self._ref_index

    def clouds(self, which: str, num_points: int | None = None) -> pc.Clouds:
        """Set-metric clouds ('gen' or 'ref'), in the grid's normalised frame."""
        p = num_points or self.opts.num_points

        def make():
            if which == "gen":
                return pc.grids_to_clouds(_Rows(self.fakes, np.arange(self.num_clouds)), self.meta, p,
                                          self.opts.seed, with_normals=False)
            # same (seed, position) draws as the fakes: identical sets give identical clouds
            return pc.grids_to_clouds(_Rows(self.reals, self.ref_index), self.meta, p, self.opts.seed,
                                      with_normals=False)
        return self.once(("clouds", which, p), make)

    def normalized(self, num_points: int | None = None):
        p = num_points or self.opts.num_points

        def make():
            g, r, info = pc.normalize_sets(self.clouds("gen", p).points, self.clouds("ref", p).points,
                                           self.opts.protocol, self.opts.bbox_half)
            self.section_3d["normalization"] = info
            return g, r
        return self.once(("normalized", p), make)

    def cd(self, block: str) -> torch.Tensor:
        def make():
            g, r = self.normalized()
            a, b = {"gr": (g, r), "gg": (g, None), "rr": (r, None)}[block]
            return pc.pairwise_chamfer(a, b, device=self.opts.device, backend=self.opts.cd_backend)
        return self.once(("cd", block), make)

    def emd(self, block: str) -> torch.Tensor:
        def make():
            g, r = self.normalized(self.opts.emd_points)
            a, b = {"gr": (g, r), "gg": (g, None), "rr": (r, None)}[block]
            m, info = pc.pairwise_emd(a, b, method=self.opts.emd_method, device=self.opts.device)
            self.section_3d["emd"] = {**info, "points_per_cloud": self.opts.emd_points or self.opts.num_points}
            return m
        return self.once(("emd", block), make)

    def pairs(self) -> list[tuple[int, int]]:
        """(fake index, real index) pairs for the per-pair metrics."""
        def make():
            if self.opts.paired:
                if len(self.fakes) != len(self.reals):
                    raise PcganError(f"paired metrics need as many generated as real grids: "
                                     f"{len(self.fakes)} vs {len(self.reals)}")
                return [(i, i) for i in range(len(self.fakes))]
            nearest = self.cd("gr").argmin(dim=1)
            return [(i, int(self.ref_index[j])) for i, j in enumerate(nearest.tolist())]
        return self.once("pairs", make)

    # -- 2D ------------------------------------------------------------------------------------
    def inception(self):
        from pcgan.metrics.inception import InceptionFeatures

        def make():
            net = InceptionFeatures(self.opts.weights_dir, self.opts.device, self.opts.batch_size)
            self.section_2d["detector"] = net.info()
            return net
        return self.once("inception", make)

    def images(self, arr, idx: np.ndarray, view: str) -> torch.Tensor:
        g = torch.as_tensor(np.asarray(_Rows(arr, idx)[slice(None)], dtype=np.float32))
        return grid_images(g, self.meta, view)

    def _features(self, arr, n: int, view: str) -> np.ndarray:
        net, bs, out = self.inception(), max(self.opts.batch_size, 1), []
        for s in range(0, n, bs):
            out.append(net(to_uint8(self.images(arr, np.arange(s, min(n, s + bs)), view))).numpy())
        return np.concatenate(out)

    def features(self, which: str, view: str) -> np.ndarray:
        """Inception features ``[N, 2048]`` of the generated (first gen_count_2d) or all real grids."""
        def make():
            if which == "gen":
                return self._features(self.fakes, self.gen_count_2d, view)
            if self.opts.reals_key is None:
                return self._features(self.reals, len(self.reals), view)
            path, sha = self.opts.reals_key
            key = frechet.cache_key(path, sha, view=view, num=len(self.reals), color_space=G.COLOR_SPACE,
                                    detector=self.inception().sha256[:16],
                                    shading=[list(LIGHT), AMBIENT] if view == "shaded" else None)
            feats, hit = frechet.cached_features(key, lambda: self._features(self.reals, len(self.reals), view),
                                                 self.opts.cache_dir)
            self.section_2d.setdefault("reals_cache", {})[view] = "hit" if hit else "stored"
            return feats
        return self.once(("features", which, view), make)

    def lpips(self, net: str):
        from pcgan.metrics.perceptual import load_lpips

        def make():
            model, info = load_lpips(net, self.opts.weights_dir, self.opts.device, self.opts.lpips_backend)
            self.section_2d.setdefault("lpips", {})[net] = info
            return model
        return self.once(("lpips", net), make)


class _Rows:
    """Rows ``idx`` of an array-like ``[N, ...]`` without copying the rest (memory maps stay lazy)."""

    def __init__(self, arr, idx):
        self.arr, self.idx = arr, np.asarray(idx)

    def __len__(self):
        return len(self.idx)

    def __getitem__(self, k):
        if isinstance(k, slice):
            return np.stack([_row(self.arr, int(i)) for i in self.idx[k]])
        return _row(self.arr, int(self.idx[k]))


def _row(arr, i: int) -> np.ndarray:
    r = arr[i]
    return r.detach().cpu().float().numpy() if isinstance(r, torch.Tensor) else np.asarray(r, dtype=np.float32)


# ---------------------------------------------------------------------------------------------
# The registered metrics


def _fid_kid_pr(kind: str, name: str, num_gen: int | None):
    def fn(ctx: EvalContext) -> dict:
        out = {}
        for view in ctx.opts.views:
            fake = ctx.features("gen", view)[: num_gen or ctx.gen_count_2d]
            real = ctx.features("real", view)
            if kind == "fid":
                out[f"{name}/{view}"] = frechet.fid_from_features(fake, real)
            elif kind == "kid":
                r = frechet.kid(fake, real, ctx.opts.kid_subsets, ctx.opts.kid_subset_size, ctx.opts.seed)
                out[f"{name}/{view}"] = r["kid"]
                ctx.details.setdefault(name, {})[view] = r
            else:
                r = frechet.precision_recall(fake, real, ctx.opts.pr_k, ctx.opts.device)
                out[f"{name}/{view}/precision"] = r["precision"]
                out[f"{name}/{view}/recall"] = r["recall"]
        ctx.details.setdefault(name, {}).update(num_gen=len(fake), num_real=len(real))
        return out
    return fn


for _n, _tag in ((None, ""), (50_000, "50k"), (10_000, "10k"), (5_000, "5k")):
    _sfx = "_full" if _n else ""
    register(f"fid{_tag}{_sfx}", "2d", f"FID, {_tag or 'all'} generated vs all reals (Inception pool3)",
             _n)(_fid_kid_pr("fid", f"fid{_tag}{_sfx}", _n))
    register(f"kid{_tag}{_sfx}", "2d", f"KID (mean over subsets), {_tag or 'all'} generated vs all reals",
             _n)(_fid_kid_pr("kid", f"kid{_tag}{_sfx}", _n))
    _pr = f"pr{_tag}3{_sfx}"
    register(_pr, "2d", f"precision/recall (k=3, Inception features), {_tag or 'all'} generated vs all reals",
             _n)(_fid_kid_pr("pr", _pr, _n))


def _lpips_pairs(ctx: EvalContext, model, arr_a, idx_a, arr_b, idx_b, view) -> torch.Tensor:
    """LPIPS of images ``arr_a[idx_a[k]]`` vs ``arr_b[idx_b[k]]``, loaded one batch at a time. ``[K]``."""
    from pcgan.metrics.perceptual import lpips_distance

    bs, out = max(ctx.opts.batch_size, 1), []
    for s in range(0, len(idx_a), bs):
        a = ctx.images(arr_a, idx_a[s:s + bs], view) * 2 - 1     # [b, 3, H, W] in [-1, 1]
        b = ctx.images(arr_b, idx_b[s:s + bs], view) * 2 - 1
        out.append(lpips_distance(model, a, b, bs))
    return torch.cat(out)


@register("lpips_diversity", "2d", "mean LPIPS between random pairs of generated grids (higher: more diverse)")
def _lpips_diversity(ctx: EvalContext) -> dict:
    from pcgan.metrics.perceptual import random_pairs

    if len(ctx.fakes) < 2:
        raise PcganError(f"LPIPS diversity needs at least 2 generated grids; got {len(ctx.fakes)}")
    model, out = ctx.lpips(ctx.opts.lpips_net), {}
    i, j = random_pairs(len(ctx.fakes), ctx.opts.lpips_pairs, ctx.opts.seed)
    for view in ctx.opts.views:
        out[f"lpips_diversity/{view}"] = float(_lpips_pairs(ctx, model, ctx.fakes, i, ctx.fakes, j, view).mean())
    ctx.details["lpips_diversity"] = {"net": ctx.opts.lpips_net, "num_pairs": ctx.opts.lpips_pairs}
    return out


@register("lpips_recon", "pair", "mean LPIPS between each generated grid and its paired/nearest real")
def _lpips_recon(ctx: EvalContext) -> dict:
    model, out = ctx.lpips(ctx.opts.lpips_net), {}
    gi, ri = (np.array(v) for v in zip(*ctx.pairs()))
    for view in ctx.opts.views:
        out[f"lpips_recon/{view}"] = float(_lpips_pairs(ctx, model, ctx.fakes, gi, ctx.reals, ri, view).mean())
    ctx.details["lpips_recon"] = {"net": ctx.opts.lpips_net,
                                  "pairing": "index" if ctx.opts.paired else "nearest real by CD"}
    return out


def _set_metric(dist: str, stat: str):
    def fn(ctx: EvalContext) -> dict:
        get = ctx.cd if dist == "cd" else ctx.emd
        if stat == "1nna":
            return {f"1nna_{dist}": pc.one_nn_accuracy(get("gg"), get("gr"), get("rr"))}
        return {f"{stat}_{dist}": pc.mmd_cov(get("gr"))[stat]}
    return fn


for _d in ("cd", "emd"):
    _D = _d.upper()
    register(f"mmd_{_d}", "3d", f"MMD-{_D}: mean over reals of the {_D} to the closest generated cloud")(
        _set_metric(_d, "mmd"))
    register(f"cov_{_d}", "3d", f"COV-{_D}: fraction of reals that are some generated cloud's nearest")(
        _set_metric(_d, "cov"))
    register(f"1nna_{_d}", "3d", f"1-NNA-{_D}: leave-one-out 1-NN accuracy on gen u real (0.5 best)")(
        _set_metric(_d, "1nna"))


@register("jsd", "3d", "JSD of point occupancy on a 28^3 grid, generated vs real clouds")
def _jsd(ctx: EvalContext) -> dict:
    g, r = ctx.normalized()
    value, info = pc.jsd_occupancy(g, r, ctx.opts.jsd_resolution)
    ctx.section_3d["jsd"] = info
    return {"jsd": value}


def _pair_clouds(ctx: EvalContext):
    """Per-pair clouds in scan units (when the meta knows them), all from the same pairs."""
    def make():
        gi, ri = (np.array(v) for v in zip(*ctx.pairs()))
        denorm = isinstance(ctx.meta, G.GridMeta)
        cg = pc.grids_to_clouds(_Rows(ctx.fakes, gi), ctx.meta, ctx.opts.num_points, ctx.opts.seed, denorm)
        cr = pc.grids_to_clouds(_Rows(ctx.reals, ri), ctx.meta, ctx.opts.num_points, ctx.opts.seed, denorm)
        units = ctx.meta.units if denorm else "normalised"
        ctx.section_3d["pairs"] = {"pairing": "index" if ctx.opts.paired else "nearest real by CD",
                                   "num_pairs": len(gi), "units": units}
        return cg, cr
    return ctx.once("pair_clouds", make)


@register("fscore", "pair", "F-score at tau of each generated cloud against its paired/nearest real")
def _fscore(ctx: EvalContext) -> dict:
    cg, cr = _pair_clouds(ctx)
    res = []
    for k in range(len(cg.points)):
        tau = pc.resolve_tau(cr.points[k], ctx.opts.fscore_tau,
                             None if ctx.opts.fscore_tau is not None else ctx.opts.fscore_tau_frac)
        res.append({**pc.fscore(cg.points[k], cr.points[k], tau), "tau": tau})
    ctx.details["fscore"] = {"tau": ctx.opts.fscore_tau,
                             "tau_frac": None if ctx.opts.fscore_tau is not None else ctx.opts.fscore_tau_frac,
                             "mean_tau": float(np.mean([r["tau"] for r in res]))}
    return {f"fscore/{k}": float(np.mean([r[k] for r in res])) for k in ("fscore", "precision", "recall")}


@register("normal_consistency", "pair", "mean |cos| of nearest-neighbour normals, generated vs paired/nearest real")
def _normal_consistency(ctx: EvalContext) -> dict:
    cg, cr = _pair_clouds(ctx)
    vals = [pc.normal_consistency(cg.points[k], cg.normals[k], cr.points[k], cr.normals[k])
            for k in range(len(cg.points))]
    return {"normal_consistency": float(np.nanmean(vals))}


@register("recon_o3d", "pair", "Open3D per-pair distances (accuracy, completeness, Chamfer, Hausdorff, F-score)")
def _recon_o3d(ctx: EvalContext) -> dict:
    from pcgan.metrics.reconstruction import paired_grid_metrics

    gi, ri = (np.array(v) for v in zip(*ctx.pairs()))
    res = paired_grid_metrics(_Rows(ctx.fakes, gi), _Rows(ctx.reals, ri), ctx.meta,
                              denormalize=isinstance(ctx.meta, G.GridMeta), tau=ctx.opts.fscore_tau,
                              tau_frac=ctx.opts.fscore_tau_frac)
    ctx.details["recon_o3d"] = {"units": res["units"], "per_pair": res["per_pair"]}
    return {f"recon_o3d/{k}": v for k, v in res.items() if isinstance(v, float)}


def _ppl(space: str, sampling: str):
    def fn(ctx: EvalContext) -> dict:
        from pcgan.metrics.perceptual import perceptual_path_length

        o = ctx.opts
        if o.mapping is None or o.synthesis is None or not o.z_dim:
            raise PcganError("perceptual path length needs a generator: pass mapping, synthesis and z_dim")
        lp = ctx.lpips("vgg") if space == "2d" else None
        r = perceptual_path_length(o.mapping, o.synthesis, ctx.meta, o.z_dim, space=space,
                                   num_samples=o.ppl_samples, epsilon=o.ppl_epsilon, sampling=sampling,
                                   batch_size=o.batch_size, seed=o.seed, device=o.device, lpips_model=lp,
                                   num_points=o.num_points)
        name = f"ppl{'3d' if space == '3d' else ''}_w{sampling}"
        ctx.details[name] = r
        return {name: r["ppl"]}
    return fn


for _s in ("end", "full"):
    register(f"ppl_w{_s}", "generator", f"perceptual path length in W ({_s} sampling), LPIPS-VGG on RGB")(
        _ppl("2d", _s))
    register(f"ppl3d_w{_s}", "generator",
             f"3D path length in W ({_s} sampling): Chamfer between clouds at t and t+eps, / eps^2")(_ppl("3d", _s))


# ---------------------------------------------------------------------------------------------
# Entry point


def _check_set(arr, name: str, meta) -> None:
    shape = tuple(arr.shape)
    if len(shape) != 4:
        raise PcganError(f"{name} have shape {list(shape)}: expected grids [N, C, H, W]")
    G.check_grid(arr[0] if len(arr) else np.zeros(shape[1:]), G.as_meta(meta, shape[-1]), name)


def _jsonable(v):
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, (np.floating, float)):
        f = float(v)
        return None if math.isnan(f) or math.isinf(f) else f
    if isinstance(v, (np.integer, np.bool_)):
        return v.item()
    if isinstance(v, torch.Tensor):
        return _jsonable(v.tolist())
    return v


def compute_metrics(names, fakes, reals, meta, options: EvalOptions | None = None, **overrides) -> dict:
    """Evaluate generated grids against real grids; returns the metrics.json dict.

    names: metric names and/or groups (list or comma-separated string), see :data:`METRICS`
        and :data:`GROUPS`.
    fakes: generated grids ``[N, C, H, W]`` (numpy, np.memmap or torch; any float dtype).
    reals: real grids ``[M, C, H, W]`` in the same layout (for 3D: the held-out reference split).
    meta: a :class:`pcgan.grid.GridMeta` (scan units known) or the channel list.
    options / overrides: :class:`EvalOptions`, or its fields as keywords.
    Metrics named ``...50k_full`` etc. use the first 50,000 fakes and need that many.
    """
    opts = dataclasses.replace(options or EvalOptions(), **overrides)
    if opts.protocol not in pc.PROTOCOLS:
        raise PcganError(f"normalisation protocol {opts.protocol!r}: use one of {list(pc.PROTOCOLS)}")
    bad_views = [v for v in opts.views if v not in VIEWS]
    if bad_views:
        raise PcganError(f"image views {bad_views}: use some of {list(VIEWS)}")
    wanted = [METRICS[n] for n in expand_names(names)]
    if not wanted:
        raise PcganError("no metrics requested")
    _check_set(fakes, "generated grids", meta)
    _check_set(reals, "real grids", meta)
    if len(fakes) == 0 or len(reals) == 0:
        raise PcganError(f"need generated and real grids; got {len(fakes)} and {len(reals)}")
    for m in wanted:
        if m.num_gen and len(fakes) < m.num_gen:
            base = re.sub(r"\d+k", "", m.name).replace("_full", "")
            raise PcganError(f"{m.name} needs {m.num_gen:,} generated grids, got {len(fakes):,}; "
                             f"generate more, or use '{base}' (all given grids)")
    gen_2d = max([m.num_gen or len(fakes) for m in wanted if m.kind == "2d"] or [len(fakes)])
    ctx = EvalContext(fakes, reals, meta, opts, gen_2d)

    metrics, timing = {}, {}
    for m in wanted:
        t0 = time.perf_counter()
        metrics.update(m.fn(ctx))
        timing[m.name] = round(time.perf_counter() - t0, 3)
        log.info("%s done in %.1f s", m.name, timing[m.name])

    result: dict = {
        "schema": SCHEMA,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "metrics": metrics,
        "num_gen": len(fakes),
        "num_real": len(reals),
    }
    if any(m.kind in ("3d", "pair") for m in wanted):
        sec = {"num_clouds": ctx.num_clouds, "points_per_cloud": opts.num_points,
               "sampling": "surface pixels, numpy default_rng([seed, index]) per cloud, no repeats "
                           "unless a grid has fewer surface pixels than points",
               "ref_subset": "all" if ctx.num_clouds == len(reals) else f"seeded random subset of {len(reals)}",
               "cd": "squared distances, mean per direction, summed (PointFlow)"}
        if ("clouds", "gen", opts.num_points) in ctx._cache:
            cg = ctx.clouds("gen")
            sec.update(empty_gen_grids=cg.num_empty, upsampled_gen_grids=cg.num_upsampled,
                       upsampled_ref_grids=ctx.clouds("ref").num_upsampled)
        sec.update(ctx.section_3d)
        lion = pc.lion_reported(metrics)
        if lion:
            sec["lion_units"] = lion
            sec["lion_multipliers"] = {k: pc.LION_MULTIPLIERS[k] for k in lion}
        result["3d"] = sec
    if any(m.kind in ("2d", "generator") for m in wanted) or "lpips_recon" in [m.name for m in wanted]:
        result["2d"] = {"views": list(opts.views), "color_space": G.COLOR_SPACE,
                        "shading": {"light": list(LIGHT), "ambient": AMBIENT}, **ctx.section_2d}
    if ("cd", "gr") in ctx._cache:
        d = ctx.cd("gr")
        k = min(opts.nearest_pairs, d.shape[0])
        nn = d[:k].argmin(dim=1)
        result["nearest_real"] = {"gen_index": list(range(k)),
                                  "real_index": [int(ctx.ref_index[j]) for j in nn.tolist()],
                                  "cd": [float(d[i, j]) for i, j in enumerate(nn.tolist())],
                                  "protocol": opts.protocol}
    result["details"] = ctx.details
    result["seeds"] = {"seed": opts.seed, "ppl": opts.seed, "kid_subsets": opts.seed, "lpips_pairs": opts.seed,
                       "points": f"default_rng([{opts.seed}, index])"}
    result["options"] = {f.name: getattr(opts, f.name) for f in dataclasses.fields(opts)
                         if not callable(getattr(opts, f.name))}
    result["versions"] = versions()
    result["device"] = str(opts.device)
    result["timing_s"] = timing
    return _jsonable(result)


__all__ = ("compute_metrics", "EvalOptions", "EvalContext", "Metric", "METRICS", "GROUPS", "register",
           "list_metrics", "expand_names", "versions", "format_table", "compare_table", "save_nn_pairs_png",
           "SCHEMA")

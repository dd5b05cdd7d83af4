"""Distribution metrics on feature vectors: FID, KID, precision/recall, and a cache of the
reals' features per dataset.

- FID (Heusel et al. 2017): ``|mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2))`` in float64. The
  trace of the matrix square root is taken as ``sum sqrt(eig(S1^(1/2) S2 S1^(1/2)))`` (a
  symmetric PSD matrix with the same eigenvalues as ``S1 S2``), which needs no complex sqrtm.
- KID (Binkowski et al. 2018): unbiased MMD^2 with the cubic polynomial kernel
  ``(x.y / d + 1)^3``, averaged over random subsets (100 of up to 1,000, as StyleGAN2-ADA).
- Precision/recall (Kynkaenniemi et al. 2019) with k = 3: each set's manifold is the union of
  balls around its points with radius the distance to the k-th nearest neighbour; precision is
  the fraction of generated features inside the reals' manifold, recall the reverse. Here on
  Inception pool3 features (StyleGAN2-ADA uses a VGG16 fc embedding that has no offline copy).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from pcgan.errors import PcganError

log = logging.getLogger(__name__)


def feature_stats(features) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``[D]`` and covariance ``[D, D]`` (float64, unbiased) of features ``[N, D]``."""
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2 or len(f) < 2:
        raise PcganError(f"feature statistics need at least 2 feature vectors [N, D]; got shape {list(f.shape)}")
    return f.mean(0), np.cov(f, rowvar=False)


def _sqrt_psd(m: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((m + m.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """Frechet distance between Gaussians N(mu1, sigma1) and N(mu2, sigma2), float64."""
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    s1, s2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (len(mu1), len(mu1)):
        raise PcganError(f"Frechet distance: shapes mu {mu1.shape}/{mu2.shape}, "
                         f"sigma {s1.shape}/{s2.shape} do not match")
    root1 = _sqrt_psd(s1)
    ev = np.linalg.eigvalsh(root1 @ s2 @ root1)
    tr_sqrt = np.sqrt(np.clip(ev, 0, None)).sum()
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * tr_sqrt)


def fid_from_features(fake, real) -> float:
    """FID between two feature sets ``[N, D]`` and ``[M, D]``.

    With few samples (``N * M <= D^2``) the covariances have low rank and the same value comes
    cheaper from the centred features X, Y: ``tr((S1 S2)^(1/2))`` is the sum of the singular
    values of ``X Y^T / sqrt((N - 1)(M - 1))`` (S1 = A A^T, S2 = B B^T share their nonzero
    eigenvalues with (A^T B)(A^T B)^T). Otherwise via :func:`frechet_distance`."""
    x, y = np.asarray(fake, np.float64), np.asarray(real, np.float64)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1] or min(len(x), len(y)) < 2:
        raise PcganError(f"FID needs two feature sets [N, D] with N >= 2 and one D; "
                         f"got {list(x.shape)}, {list(y.shape)}")
    n, m, d = len(x), len(y), x.shape[1]
    if n * m > d * d:
        return frechet_distance(*feature_stats(x), *feature_stats(y))
    xc, yc = x - x.mean(0), y - y.mean(0)
    tr_sqrt = np.linalg.svd(xc @ yc.T, compute_uv=False).sum() / np.sqrt((n - 1) * (m - 1))
    diff = x.mean(0) - y.mean(0)
    return float(diff @ diff + (xc * xc).sum() / (n - 1) + (yc * yc).sum() / (m - 1) - 2 * tr_sqrt)


def kid(fake, real, num_subsets: int = 100, subset_size: int = 1000, seed: int = 0) -> dict[str, float]:
    """Kernel Inception Distance: mean and std over subsets of the unbiased MMD^2 estimate.
    fake ``[N, D]``, real ``[M, D]``; subsets of ``min(N, M, subset_size)`` drawn with ``seed``."""
    x, y = np.asarray(fake, np.float64), np.asarray(real, np.float64)
    d = x.shape[1]
    m = min(len(x), len(y), subset_size)
    if m < 2:
        raise PcganError(f"KID needs at least 2 samples per set; got {len(x)} generated, {len(y)} real")
    rng = np.random.default_rng(seed)
    vals = []
    for _ in range(num_subsets):
        a = x[rng.choice(len(x), m, replace=False)]
        b = y[rng.choice(len(y), m, replace=False)]
        k_aa = (a @ a.T / d + 1) ** 3
        k_bb = (b @ b.T / d + 1) ** 3
        k_ab = (a @ b.T / d + 1) ** 3
        off = lambda k: (k.sum() - np.trace(k)) / (m * (m - 1))   # noqa: E731 - mean off the diagonal
        vals.append(off(k_aa) + off(k_bb) - 2 * k_ab.mean())
    return {"kid": float(np.mean(vals)), "kid_std": float(np.std(vals)), "subset_size": m,
            "num_subsets": num_subsets}


def _kth_nn_radius(f: torch.Tensor, k: int, chunk: int) -> torch.Tensor:
    """Distance from each row of ``f [N, D]`` to its k-th nearest other row. ``[N]``."""
    out = []
    for s in range(0, len(f), chunk):
        d = torch.cdist(f[s:s + chunk], f)                      # [c, N], includes self at 0
        out.append(d.kthvalue(k + 1, dim=1).values)
    return torch.cat(out)


def _inside(query: torch.Tensor, ref: torch.Tensor, radii: torch.Tensor, chunk: int) -> torch.Tensor:
    """Whether each query lies within the ball of some reference point. ``[Q]`` bool."""
    out = []
    for s in range(0, len(query), chunk):
        d = torch.cdist(query[s:s + chunk], ref)                # [c, R]
        out.append((d <= radii[None]).any(dim=1))
    return torch.cat(out)


def precision_recall(fake, real, k: int = 3, device="cpu", chunk: int = 1024) -> dict[str, float]:
    """Improved precision and recall (k-NN manifolds). fake ``[N, D]``, real ``[M, D]``."""
    x = torch.as_tensor(np.asarray(fake), dtype=torch.float32, device=device)
    y = torch.as_tensor(np.asarray(real), dtype=torch.float32, device=device)
    if len(x) <= k or len(y) <= k:
        raise PcganError(f"precision/recall with k={k} needs more than {k} samples per set; "
                         f"got {len(x)} generated, {len(y)} real")
    r_real = _kth_nn_radius(y, k, chunk)
    r_fake = _kth_nn_radius(x, k, chunk)
    precision = _inside(x, y, r_real, chunk).double().mean()
    recall = _inside(y, x, r_fake, chunk).double().mean()
    return {"precision": float(precision), "recall": float(recall), "k": k}


# ---------------------------------------------------------------------------------------------
# Cache of the reals' features


def default_cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "pcgan" / "stats"


def cache_key(dataset: str, sha256: str, **options) -> dict:
    """What identifies cached real features: the dataset's path and content hash plus every
    option that changes the features (view, number of reals, detector hash, ...)."""
    return {"dataset": str(Path(dataset).resolve()) if dataset else "", "sha256": sha256,
            **{k: options[k] for k in sorted(options)}}


def cached_features(key: dict, compute: Callable[[], np.ndarray], cache_dir: str | os.PathLike | None = None,
                    ) -> tuple[np.ndarray, bool]:
    """Features for ``key`` from the cache, else ``compute()`` and store them.
    Returns ``(features [N, D] float32, was_cached)``. Writes are atomic."""
    folder = Path(cache_dir) if cache_dir else default_cache_dir()
    blob = json.dumps(key, sort_keys=True)
    path = folder / f"reals-{hashlib.sha256(blob.encode()).hexdigest()[:24]}.npz"
    if path.is_file():
        try:
            with np.load(path) as z:
                if str(z["key"]) == blob:
                    return z["features"].astype(np.float32), True
            log.warning("cache file %s holds another key; recomputing", path)
        except Exception as e:  # noqa: BLE001 - a broken cache file is recomputed, not fatal
            log.warning("unreadable cache file %s (%s); recomputing", path, e)
    feats = np.asarray(compute(), dtype=np.float32)
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, suffix=".npz.tmp")
    os.close(fd)
    try:
        with open(tmp, "wb") as fh:
            np.savez(fh, features=feats, key=np.array(blob))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return feats, False

"""LPIPS (Zhang et al. 2018), sample diversity, and perceptual path length in W, in 2D
(LPIPS-VGG on the RGB view, as the StyleGAN paper) and in 3D (Chamfer between clouds).

LPIPS v0.1: the image pair ([-1, 1] RGB) goes through an ImageNet trunk (AlexNet or VGG16
convolutions); at five ReLU taps the features are unit-normalised over channels, their squared
difference is weighted per channel by the learned linear layers, averaged over space, and the
five layers are summed. The trunk comes from a local file (``alexnet_features.pth`` /
``vgg16_features.pth`` in torchvision's key names, see :mod:`pcgan.metrics.weights`), else
torchvision's usual download into torch's hub cache; the linear layers ship inside the
``lpips`` wheel. Backends: ``"package"`` is the ``lpips`` package's own module with that trunk
loaded into it; ``"builtin"`` is the same computation written here on plain torch, for hosts
where ``lpips`` cannot import (it needs a working torchvision); ``"auto"`` tries the package
first. Both give the published numbers (tests/test_metrics_2d.py).

PPL takes a generator as two callables, so it does not depend on the networks module:
``mapping(z [B, z_dim]) -> ws`` (any shape ``[B, ...]``) and ``synthesis(ws) -> grids
[B, C, H, W]``. A sample draws z0, z1, maps both, and compares the outputs at ``lerp(w0, w1, t)``
and ``lerp(w0, w1, t + epsilon)``; ``sampling="end"`` fixes t = 0 ("w end"), ``"full"`` draws
t ~ U(0, 1). The distance divided by epsilon^2 is averaged after dropping values outside the
1st-99th percentiles (StyleGAN's outlier filter).
"""

from __future__ import annotations

import importlib.util
import logging
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from pcgan import grid as G
from pcgan.errors import PcganError
from pcgan.metrics import pointcloud as pc
from pcgan.metrics.shading import grid_images
from pcgan.metrics.weights import find_weights

log = logging.getLogger(__name__)

NETS = ("alex", "vgg")
TRUNK_FILE = {"alex": "alexnet_features.pth", "vgg": "vgg16_features.pth"}
TRUNK_URL = {   # torchvision's IMAGENET1K_V1 weights, the usual download path
    "alex": "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
    "vgg": "https://download.pytorch.org/models/vgg16-397923af.pth",
}
TAPS = {"alex": (1, 4, 7, 9, 11), "vgg": (3, 8, 15, 22, 29)}       # ReLU outputs, torchvision indices
TAP_CHANNELS = {"alex": (64, 192, 384, 256, 256), "vgg": (64, 128, 256, 512, 512)}
SHIFT = (-0.030, -0.088, -0.188)   # LPIPS input scaling layer (ImageNet statistics in [-1, 1])
SCALE = (0.458, 0.448, 0.450)
MIN_SIZE = 64                      # smaller images are upsampled: AlexNet's taps vanish below 32 px


def _alexnet_features() -> nn.Sequential:
    """torchvision's ``alexnet().features`` layout (same indices, so its weights load strictly)."""
    return nn.Sequential(
        nn.Conv2d(3, 64, 11, stride=4, padding=2), nn.ReLU(True), nn.MaxPool2d(3, 2),
        nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(True), nn.MaxPool2d(3, 2),
        nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(True),
        nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(True),
        nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(True), nn.MaxPool2d(3, 2))


def _vgg16_features() -> nn.Sequential:
    """torchvision's ``vgg16().features`` layout."""
    layers, c_in = [], 3
    for v in (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"):
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(c_in, v, 3, padding=1), nn.ReLU(True)]
            c_in = v
    return nn.Sequential(*layers)


def load_trunk(net: str, weights_dir=None, download: bool = True) -> tuple[dict, str]:
    """The trunk's state dict (keys ``features.N.*``) and where it came from."""
    if net not in NETS:
        raise PcganError(f"LPIPS net {net!r}: use one of {list(NETS)}")
    local = find_weights(TRUNK_FILE[net], weights_dir, required=False)
    if local is not None:
        sd = torch.load(local, map_location="cpu", weights_only=True)
        if not isinstance(sd, dict) or not all(k.startswith("features.") for k in sd):
            raise PcganError(f"{local}: expected a plain state dict with keys 'features.N.weight/bias'")
        return sd, str(local)
    if download:
        try:
            full = torch.hub.load_state_dict_from_url(TRUNK_URL[net], map_location="cpu", progress=False,
                                                      check_hash=True)
            return {k: v for k, v in full.items() if k.startswith("features.")}, TRUNK_URL[net]
        except Exception as e:  # noqa: BLE001 - offline: turn it into the one clear error below
            log.debug("download of %s failed: %s", TRUNK_URL[net], e)
    find_weights(TRUNK_FILE[net], weights_dir, required=True)   # raises the error naming the file
    raise AssertionError("unreachable")


def lin_weights_path(net: str) -> Path:
    """The LPIPS v0.1 linear layers inside the installed ``lpips`` wheel (found without importing it)."""
    spec = importlib.util.find_spec("lpips")
    if spec is None or not spec.submodule_search_locations:
        raise PcganError("LPIPS needs the 'lpips' package (its wheel ships the linear layers): pip install lpips")
    path = Path(list(spec.submodule_search_locations)[0]) / "weights" / "v0.1" / f"{net}.pth"
    if not path.is_file():
        raise PcganError(f"{path} missing from the installed lpips package: reinstall lpips")
    return path


class BuiltinLPIPS(nn.Module):
    """LPIPS v0.1 on plain torch: ``forward(x0, x1)`` with ``[B, 3, H, W]`` in [-1, 1] -> ``[B]``."""

    def __init__(self, net: str, trunk_state: dict, lin_state: dict):
        super().__init__()
        self.net = net
        self.features = _alexnet_features() if net == "alex" else _vgg16_features()
        self.features.load_state_dict({k.removeprefix("features."): v for k, v in trunk_state.items()})
        last = TAPS[net][-1]
        self.features = self.features[: last + 1]           # nothing after the last tap is used
        self.lins = nn.ModuleList(nn.Conv2d(c, 1, 1, bias=False) for c in TAP_CHANNELS[net])
        for k, lin in enumerate(self.lins):
            lin.weight.data.copy_(lin_state[f"lin{k}.model.1.weight"])
        self.register_buffer("shift", torch.tensor(SHIFT).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor(SCALE).view(1, 3, 1, 1))
        self.requires_grad_(False).eval()

    def _taps(self, x):
        out, h = [], (x - self.shift) / self.scale
        for i, layer in enumerate(self.features):
            h = layer(h)
            if i in TAPS[self.net]:
                out.append(h)
        return out

    def forward(self, x0, x1):
        d = 0
        for lin, a, b in zip(self.lins, self._taps(x0), self._taps(x1)):
            a = a / (a.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            b = b / (b.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            d = d + lin((a - b) ** 2).mean(dim=(2, 3))
        return d.reshape(-1)


class _PackageLPIPS(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x0, x1):
        return self.model(x0, x1).reshape(-1)


def load_lpips(net: str = "alex", weights_dir=None, device="cpu", backend: str = "auto",
               download: bool = True) -> tuple[nn.Module, dict]:
    """An LPIPS v0.1 module ``(x0, x1) -> [B]`` (inputs ``[B, 3, H, W]`` in [-1, 1]) and an info
    dict for metrics.json (net, backend, where the trunk came from).

    net: "alex" or "vgg". weights_dir: folder with the trunk files (None: PCGAN_WEIGHTS, caches).
    backend: "package", "builtin" or "auto" (package when ``import lpips`` works).
    download: allow torchvision's usual download when no local trunk file exists."""
    trunk, source = load_trunk(net, weights_dir, download)
    info = {"net": net, "version": "0.1", "trunk": source}
    if backend in ("auto", "package"):
        try:
            import lpips   # needs torchvision
            with warnings.catch_warnings():   # lpips calls torchvision with its deprecated 'pretrained'
                warnings.simplefilter("ignore", UserWarning)
                model = lpips.LPIPS(net=net, pretrained=True, pnet_rand=True, verbose=False)
            # lpips' trunk puts torchvision's features[i] into sliceK under the child name "i"
            model.net.load_state_dict({k: trunk["features." + k.split(".", 1)[1]] for k in model.net.state_dict()})
            module = _PackageLPIPS(model.eval().requires_grad_(False))
            info.update(backend="package", lpips_version=getattr(lpips, "__version__", "?"))
            return module.to(device), info
        except Exception as e:  # noqa: BLE001 - auto falls back; an explicit request reports it
            if backend == "package":
                raise PcganError(f"the lpips package cannot be used here ({type(e).__name__}: {e}); "
                                 "use backend='builtin'") from e
            log.warning("lpips package unusable (%s: %s); using pcgan's built-in LPIPS", type(e).__name__, e)
    elif backend != "builtin":
        raise PcganError(f"LPIPS backend {backend!r}: use 'auto', 'package' or 'builtin'")
    lin_path = lin_weights_path(net)
    lin = torch.load(lin_path, map_location="cpu", weights_only=True)
    info.update(backend="builtin", lin=str(lin_path))
    return BuiltinLPIPS(net, trunk, lin).to(device), info


def _prepare(images: torch.Tensor, min_size: int = MIN_SIZE, max_size: int | None = None) -> torch.Tensor:
    h, w = images.shape[-2:]
    if min(h, w) < min_size:
        s = min_size / min(h, w)
        images = F.interpolate(images, scale_factor=s, mode="bilinear", align_corners=False)
    elif max_size is not None and max(h, w) > max_size:
        images = F.interpolate(images, size=(max_size, max_size), mode="area")
    return images


@torch.no_grad()
def lpips_distance(model: nn.Module, a: torch.Tensor, b: torch.Tensor, batch_size: int = 32) -> torch.Tensor:
    """LPIPS between pairs ``a[i]``, ``b[i]`` (``[N, 3, H, W]`` in [-1, 1]). Returns ``[N]`` CPU float64."""
    if a.shape != b.shape or a.dim() != 4 or a.shape[1] != 3:
        raise PcganError(f"LPIPS needs two image batches of one shape [N, 3, H, W]; "
                         f"got {list(a.shape)}, {list(b.shape)}")
    dev = next(model.buffers(), next(model.parameters())).device
    out = []
    for s in range(0, len(a), batch_size):
        x0 = _prepare(a[s:s + batch_size].to(dev).float())
        x1 = _prepare(b[s:s + batch_size].to(dev).float())
        out.append(model(x0, x1).double().cpu())
    return torch.cat(out)


def random_pairs(n: int, num_pairs: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``num_pairs`` index pairs ``(i, j)`` of ``range(n)`` with ``i != j``, from ``seed``."""
    rng = np.random.default_rng(seed)
    i = rng.integers(0, n, num_pairs)
    return i, (i + rng.integers(1, n, num_pairs)) % n


def lpips_diversity(model: nn.Module, images: torch.Tensor, num_pairs: int = 1000, seed: int = 0,
                    batch_size: int = 32) -> dict[str, float]:
    """Mean LPIPS between random pairs of distinct images ``[N, 3, H, W]`` in [-1, 1]: higher
    is more diverse (0 for a collapsed generator)."""
    n = len(images)
    if n < 2:
        raise PcganError(f"LPIPS diversity needs at least 2 images; got {n}")
    i, j = random_pairs(n, num_pairs, seed)
    d = lpips_distance(model, images[torch.from_numpy(i)], images[torch.from_numpy(j)], batch_size)
    return {"lpips_diversity": float(d.mean()), "num_pairs": num_pairs}


# ---------------------------------------------------------------------------------------------
# Perceptual path length


def filtered_mean(values) -> float:
    """Mean of the values between their 1st and 99th percentiles (StyleGAN's PPL filter)."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if len(v) == 0:
        return float("nan")
    lo = np.percentile(v, 1, method="lower")
    hi = np.percentile(v, 99, method="higher")
    return float(v[(v >= lo) & (v <= hi)].mean())


def _endpoints(mapping, z0, z1, t, epsilon):
    w0, w1 = mapping(z0), mapping(z1)
    tt = t.to(w0.dtype).view(-1, *([1] * (w0.dim() - 1)))
    return torch.lerp(w0, w1, tt), torch.lerp(w0, w1, tt + epsilon)


@torch.no_grad()
def ppl2d_distances(mapping: Callable, synthesis: Callable, meta_or_channels, lpips_model: nn.Module,
                    z0, z1, t, epsilon: float = 1e-4) -> torch.Tensor:
    """Per-sample 2D path lengths ``LPIPS(img(t), img(t + eps)) / eps^2`` on the RGB view.
    z0, z1 ``[B, z_dim]``, t ``[B]``. Images over 256 px are area-downsampled to 256 (StyleGAN).
    Returns ``[B]`` float64."""
    wa, wb = _endpoints(mapping, z0, z1, t, epsilon)
    img_a = grid_images(synthesis(wa), meta_or_channels, "rgb") * 2 - 1
    img_b = grid_images(synthesis(wb), meta_or_channels, "rgb") * 2 - 1
    img_a, img_b = _prepare(img_a, max_size=256), _prepare(img_b, max_size=256)
    return lpips_distance(lpips_model, img_a, img_b) / epsilon ** 2


@torch.no_grad()
def ppl3d_distances(mapping: Callable, synthesis: Callable, meta_or_channels, z0, z1, t,
                    epsilon: float = 1e-4, num_points: int | None = pc.NUM_POINTS, seed: int = 0,
                    first_index: int = 0) -> torch.Tensor:
    """Per-sample 3D path lengths ``CD(cloud(t), cloud(t + eps)) / eps^2``, normalised units.

    Both clouds take the same pixels (surface in both grids), ``num_points`` of them drawn with
    ``(seed, first_index + b)``, so sampling noise does not swamp the epsilon-sized change.
    A sample with no common surface pixel gives NaN (dropped by the filter).
    Returns ``[B]`` float64."""
    wa, wb = _endpoints(mapping, z0, z1, t, epsilon)
    ga, gb = synthesis(wa).float().cpu(), synthesis(wb).float().cpu()   # [B, C, H, W]
    out = torch.full((len(ga),), float("nan"), dtype=torch.float64)
    for k in range(len(ga)):
        both = (torch.as_tensor(G.surface_mask(ga[k], meta_or_channels))
                & torch.as_tensor(G.surface_mask(gb[k], meta_or_channels))).reshape(-1)
        pix = both.nonzero()[:, 0]
        if len(pix) == 0:
            continue
        if num_points is not None:
            pix = pix[torch.from_numpy(pc.sample_indices(len(pix), num_points, seed, first_index + k))]
        xa = ga[k, G.XYZ].reshape(3, -1)[:, pix].T.double()                  # [P, 3]
        xb = gb[k, G.XYZ].reshape(3, -1)[:, pix].T.double()
        out[k] = pc.paired_chamfer(xa[None], xb[None])[0]
    return out / epsilon ** 2


def _latents(num: int, z_dim: int, sampling: str, seed: int, device):
    if sampling not in ("end", "full"):
        raise PcganError(f"PPL sampling {sampling!r}: use 'end' or 'full'")
    gen = torch.Generator().manual_seed(seed)
    z0 = torch.randn(num, z_dim, generator=gen)
    z1 = torch.randn(num, z_dim, generator=gen)
    t = torch.rand(num, generator=gen) if sampling == "full" else torch.zeros(num)
    return z0.to(device), z1.to(device), t.to(device)


def perceptual_path_length(mapping: Callable, synthesis: Callable, meta_or_channels, z_dim: int, *,
                           space: str = "2d", num_samples: int = 10000, epsilon: float = 1e-4,
                           sampling: str = "end", batch_size: int = 16, seed: int = 0, device="cpu",
                           lpips_model: nn.Module | None = None, weights_dir=None,
                           num_points: int | None = pc.NUM_POINTS) -> dict:
    """Perceptual path length in W: ``space="2d"`` (LPIPS-VGG on RGB) or ``"3d"`` (Chamfer).

    mapping, synthesis: the generator as callables (see the module docstring).
    z_dim: latent width. num_samples: latent pairs (StyleGAN uses 100,000).
    epsilon: step in t. sampling: "end" (t = 0) or "full" (t ~ U(0, 1)).
    lpips_model: an LPIPS-VGG from :func:`load_lpips` (loaded here when None; 2D only).
    Returns ``{"ppl": value, ...details}``."""
    if space not in ("2d", "3d"):
        raise PcganError(f"PPL space {space!r}: use '2d' or '3d'")
    z0, z1, t = _latents(num_samples, z_dim, sampling, seed, device)
    info = {"space": space, "num_samples": num_samples, "epsilon": epsilon, "sampling": sampling, "seed": seed}
    if space == "2d" and lpips_model is None:
        lpips_model, linfo = load_lpips("vgg", weights_dir, device)
        info["lpips"] = linfo
    dists = []
    for s in range(0, num_samples, batch_size):
        sl = slice(s, s + batch_size)
        if space == "2d":
            dists.append(ppl2d_distances(mapping, synthesis, meta_or_channels, lpips_model,
                                         z0[sl], z1[sl], t[sl], epsilon))
        else:
            dists.append(ppl3d_distances(mapping, synthesis, meta_or_channels, z0[sl], z1[sl], t[sl],
                                         epsilon, num_points, seed, first_index=s))
    d = torch.cat(dists).numpy()
    info.update(ppl=filtered_mean(d), num_finite=int(np.isfinite(d).sum()))
    if space == "3d":
        info.update(units="normalised grid units", num_points=num_points)
    return info


__all__ = ("load_lpips", "BuiltinLPIPS", "lpips_distance", "lpips_diversity", "random_pairs", "perceptual_path_length",
           "ppl2d_distances", "ppl3d_distances", "filtered_mean", "load_trunk", "lin_weights_path", "NETS")

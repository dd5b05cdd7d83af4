"""The FID Inception network: 2048-d pool3 features of images, as the reference FIDs compute them.

The network is the TensorFlow graph "inception-2015-12-05" that the original TTUR FID,
pytorch-fid, clean-fid and NVIDIA's StyleGAN code all use, loaded as TorchScript from
``inception_fid.pt`` (see :mod:`pcgan.metrics.weights` for where it is looked for). Its input
is float32 RGB exactly 299x299 in ``x_uint8 / 128 - 1``; images are first quantised to uint8
and resized with TensorFlow's legacy bilinear resize (no antialiasing, half-pixel offsets
off), as NVIDIA's FID code does, so numbers compare with published FIDs.
"""

from __future__ import annotations

import logging
import os
import warnings

import torch
import torch.nn.functional as F

from pcgan.errors import PcganError
from pcgan.metrics.weights import find_weights, sha256_file

log = logging.getLogger(__name__)

FILE = "inception_fid.pt"
SIZE = 299          # the network's input size
FEATURES = 2048     # pool3 width
_SHA_CACHE: dict[tuple, str] = {}   # (path, size, mtime) -> sha256, so repeated evaluations hash once


def tf_resize_bilinear(x: torch.Tensor, size: int = SIZE) -> torch.Tensor:
    """TensorFlow's legacy ``resize_bilinear`` (align_corners=False, no half-pixel centres).

    Output pixel i samples input coordinate ``i * in / out`` (clamped at the border). With
    ``grid_sample(align_corners=False)`` an output pixel's normalised centre ``(2i + 1)/out - 1``
    lands on input pixel ``((u + 1) * in - 1) / 2``; shifting ``u`` by ``1/in - 1/out`` makes
    that ``i * in / out``. x: ``[B, C, H, W]`` float -> ``[B, C, size, size]``."""
    n, c, h, w = x.shape
    theta = torch.zeros(n, 2, 3, dtype=x.dtype, device=x.device)
    theta[:, 0, 0] = 1.0
    theta[:, 1, 1] = 1.0
    theta[:, 0, 2] = 1.0 / w - 1.0 / size
    theta[:, 1, 2] = 1.0 / h - 1.0 / size
    grid = F.affine_grid(theta, [n, c, size, size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


class InceptionFeatures:
    """Callable: uint8 images ``[B, 3, H, W]`` -> float32 pool3 features ``[B, 2048]`` (CPU).

    weights_dir: folder with inception_fid.pt (None: PCGAN_WEIGHTS, then the caches).
    device: where the network runs.
    batch_size: images per forward pass."""

    def __init__(self, weights_dir: str | os.PathLike | None = None, device="cpu", batch_size: int = 64):
        self.path = find_weights(FILE, weights_dir)
        self.device = torch.device(device)
        self.batch_size = batch_size
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)   # torch.jit.load's deprecation notice
            try:
                self.net = torch.jit.load(str(self.path), map_location=self.device).eval()
            except Exception as e:  # noqa: BLE001 - a corrupt or foreign file is a user problem
                raise PcganError(f"{self.path}: not a loadable TorchScript Inception ({e}); "
                                 f"replace it (see pcgan.metrics.weights)") from e
        self._sha = None

    @property
    def sha256(self) -> str:
        if self._sha is None:
            st = self.path.stat()
            key = (str(self.path), st.st_size, st.st_mtime_ns)
            if key not in _SHA_CACHE:
                _SHA_CACHE[key] = sha256_file(self.path)
            self._sha = _SHA_CACHE[key]
        return self._sha

    def info(self) -> dict:
        return {"network": "inception-2015-12-05 pool3 (TorchScript)", "file": str(self.path),
                "sha256": self.sha256, "resize": "TF legacy bilinear to 299", "input": "uint8/128 - 1"}

    @torch.no_grad()
    def __call__(self, images_u8: torch.Tensor) -> torch.Tensor:
        if images_u8.dtype != torch.uint8 or images_u8.dim() != 4 or images_u8.shape[1] != 3:
            raise PcganError(f"Inception features need uint8 images [B, 3, H, W]; got {images_u8.dtype} "
                             f"{list(images_u8.shape)}")
        out = []
        for s in range(0, len(images_u8), self.batch_size):
            x = images_u8[s:s + self.batch_size].to(self.device).float()
            x = tf_resize_bilinear(x) if x.shape[-2:] != (SIZE, SIZE) else x
            out.append(self.net((x - 128.0) / 128.0).float().cpu())   # [b, 2048]
        feats = torch.cat(out) if out else torch.zeros(0, FEATURES)
        assert feats.shape[1:] == (FEATURES,), f"unexpected Inception output {list(feats.shape)}"
        return feats

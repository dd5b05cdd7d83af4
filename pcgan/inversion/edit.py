"""Editing inverted faces: splice styles of another face into chosen layers.

Low style layers (the 4x4-16x16 blocks) set the coarse geometry: head shape, pose, jaw; high
ones the fine detail and colour. Taking layers 8-17 of a generated face into an inverted one
keeps the inverted face's shape and borrows the other's fine colour, and the other way round.
"""

from __future__ import annotations

import torch

from pcgan.errors import PcganError
from pcgan.ranges import parse_index_list


def default_mix_layers(num_ws: int, resolution: int) -> list[int]:
    """The styles of the blocks above 32x32 (pSp's "fine" styles: 7-17 at 1024), else the
    upper half of the layers (small generators have no block above 32x32)."""
    from pcgan.inversion.encoder import style_levels
    fine = [i for i, lvl in enumerate(style_levels(num_ws, resolution)) if lvl == "fine"]
    return fine or list(range(num_ws // 2, num_ws))


def parse_layers(text: str, num_ws: int, flag: str = "--mix-layers") -> list[int]:
    """``"8-17"`` -> the style layers to splice; each must be in ``0 .. num_ws - 1``."""
    try:
        return parse_index_list(text, "style layer", limit=num_ws)
    except PcganError as exc:
        raise PcganError(f"{flag} {text!r}: {exc}; this generator has {num_ws} style layers "
                         f"(0-{num_ws - 1})") from None


def mix_styles(ws: torch.Tensor, ws_other: torch.Tensor, layers: list[int]) -> torch.Tensor:
    """Styles of ``ws`` with ``layers`` taken from ``ws_other``.

    Args:
        ws, ws_other: [B, L, w_dim] (``ws_other`` may have B = 1, then it is shared).
        layers: style indices in ``0 .. L - 1``.
    Returns:
        [B, L, w_dim].
    """
    if ws.dim() != 3 or ws_other.dim() != 3 or ws.shape[1:] != ws_other.shape[1:]:
        raise PcganError(f"mix_styles: ws {list(ws.shape)} and ws_other {list(ws_other.shape)} must be "
                         f"[B, L, w_dim] with the same L and w_dim")
    L = ws.shape[1]
    bad = [i for i in layers if not 0 <= i < L]
    if bad:
        raise PcganError(f"mix_styles: layers {bad} outside 0-{L - 1}")
    take = torch.zeros(L, dtype=torch.bool, device=ws.device)
    take[list(layers)] = True
    return torch.where(take[None, :, None], ws_other.to(ws.dtype).expand_as(ws), ws)

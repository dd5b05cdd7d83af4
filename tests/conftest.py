"""Shared test fixtures: analytic grids and the location of ../shared (real data, weights)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from pcgan.grid import RGB, XYZ, MASK, GridMeta, empty_grid, rgb_to_grid

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("PCGAN_SHARED", REPO.parent / "shared"))
REALDATA = SHARED / "realdata"
WEIGHTS = Path(os.environ.get("PCGAN_WEIGHTS", SHARED / "weights"))


def sphere_grid(meta: GridMeta, radius: float = 0.8, center_z: float = 0.0, center_x: float = 0.0) -> np.ndarray:
    """A grid of a sphere seen by meta.camera: exact ray-sphere hits, colour from position."""
    grid = empty_grid(meta)
    origins, dirs = meta.camera.rays(meta.resolution)                 # [H, W, 3]
    c = np.array([center_x, 0.0, center_z])
    oc = origins - c
    a = (dirs ** 2).sum(-1)
    b = 2 * (oc * dirs).sum(-1)
    cc = (oc ** 2).sum(-1) - radius ** 2
    disc = b ** 2 - 4 * a * cc
    hit = disc > 0
    t = (-b - np.sqrt(np.where(hit, disc, 0))) / (2 * a)
    pts = origins + t[..., None] * dirs                               # [H, W, 3]
    col = np.clip((pts - c) / (2 * radius) + 0.5, 0, 1)
    grid[XYZ][:, hit] = pts[hit].T
    grid[RGB][:, hit] = rgb_to_grid(col[hit]).T
    if meta.has_mask:
        grid[MASK][:, hit] = 1.0
    return grid


def pixel_offsets(grids, camera) -> np.ndarray:
    """``[B, H, W]``: how far, in pixels, each grid point projects from its own pixel centre
    (0 for points on their pixel's camera ray, as in every real grid)."""
    g = np.asarray(grids.detach() if hasattr(grids, "detach") else grids, dtype=np.float64)
    B, _, H, W = g.shape
    u, v, _ = camera.project(g[:, XYZ].transpose(0, 2, 3, 1).reshape(-1, 3), H)
    jj, ii = np.meshgrid(np.arange(W) + 0.5, np.arange(H) + 0.5)
    return np.hypot(u.reshape(B, H, W) - jj, v.reshape(B, H, W) - ii)


@pytest.fixture
def meta16() -> GridMeta:
    return GridMeta(resolution=16, center=(1.0, -2.0, 30.0), scale=100.0, units="mm")


@pytest.fixture(scope="module")
def one_thread():
    """Run a module's tests with one torch thread: on two shared cores, OpenMP threads spinning
    against other processes make tiny ops up to 100x slower."""
    import torch
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def require_realdata(*parts: str) -> Path:
    path = REALDATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real data not available: {path}")
    return path

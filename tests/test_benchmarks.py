"""The memory tracker behind benchmarks/gpu_estimate.py's per-preset memory figures."""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from gpu_estimate import LiveTensorBytes  # noqa: E402

MIB = 2**20


def test_live_tensor_bytes_follows_allocations_and_frees():
    with LiveTensorBytes() as tracker:
        a = torch.zeros(MIB // 4)              # 1 MiB of float32
        b = torch.ones(2 * MIB // 4)           # 2 MiB
        view = a[: MIB // 8]                   # a view: no new storage
        del a                                  # the view keeps its storage alive
        assert tracker.live == 3 * MIB
        del view                               # now it is freed
        c = b * 2                              # 2 MiB more
        assert tracker.live == 4 * MIB
        del b, c
    assert tracker.peak == 4 * MIB
    assert tracker.live == 0


def test_live_tensor_bytes_sees_what_backward_keeps():
    w = torch.randn(64, 64, requires_grad=True)
    x = torch.randn(256, 64)
    with LiveTensorBytes() as tracker:
        h = torch.tanh(x @ w)                  # [256, 64]: kept for tanh's backward
        kept = tracker.live
        loss = h.square().sum()
        del h
        assert tracker.live >= kept            # the graph still holds tanh's output
        loss.backward()
        del loss
    assert tracker.peak >= 256 * 64 * 4 * 2    # matmul output and tanh output, at least
    assert w.grad is not None and tracker.live == w.grad.nbytes   # only the gradient is left

"""Data-parallel training over torch.distributed: one process per GPU (or CPU), launched by torchrun.

``torchrun --nproc_per_node=N -m pcgan train ...`` sets RANK / LOCAL_RANK / WORLD_SIZE; the
same command without torchrun is a world of one. Multi-node is torchrun's business
(``--nnodes``, ``--rdzv-endpoint``); nothing here changes.

Why not ``nn.parallel.DistributedDataParallel``: the StyleGAN2 phases toggle which network
requires grad and take double-backward gradient penalties (R1, path length) through
``torch.autograd.grad``, which DDP's reducer does not support. Instead every rank starts from
rank 0's weights and, after each phase's backward, the gradients are averaged with one
all-reduce of a flat buffer (:func:`average_gradients`): the same update DDP would make, so
parameters stay bit-identical across ranks.
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass
from datetime import timedelta
from typing import Iterable, Sequence

import torch
import torch.distributed as dist
from torch import nn

from pcgan.errors import PcganError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistEnv:
    rank: int = 0          # global process index
    local_rank: int = 0    # process index on this node (its GPU)
    world_size: int = 1    # processes in total

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def env_from_launcher() -> DistEnv:
    """The ranks torchrun set in the environment; a world of one without it."""
    try:
        return DistEnv(int(os.environ.get("RANK", 0)), int(os.environ.get("LOCAL_RANK", 0)),
                       int(os.environ.get("WORLD_SIZE", 1)))
    except ValueError:
        raise PcganError("RANK / LOCAL_RANK / WORLD_SIZE must be integers (set by torchrun)") from None


def init_distributed(device_type: str, timeout_min: float = 30.0) -> DistEnv:
    """Join the process group torchrun prepared (nccl for CUDA, gloo for CPU); no-op for one process."""
    env = env_from_launcher()
    if env.distributed and not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        if device_type == "cuda":
            torch.cuda.set_device(env.local_rank)
        dist.init_process_group(backend, timeout=timedelta(minutes=timeout_min))
        log.info("process group: %s, rank %d of %d", backend, env.rank, env.world_size)
    return env


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def broadcast_module(module: nn.Module, src: int = 0) -> None:
    """Copy rank ``src``'s parameters and buffers to every rank (start from identical weights)."""
    if not _active():
        return
    tensors = list(module.parameters()) + list(module.buffers())
    with torch.no_grad():
        for dtype in sorted({t.dtype for t in tensors}, key=str):  # one broadcast per dtype, not per tensor
            group = [t for t in tensors if t.dtype == dtype]
            flat = torch.cat([t.detach().flatten() for t in group])
            dist.broadcast(flat, src=src)
            offset = 0
            for t in group:
                t.copy_(flat[offset:offset + t.numel()].view_as(t))
                offset += t.numel()


def average_gradients(params: Iterable[nn.Parameter]) -> None:
    """Average ``.grad`` over ranks with one all-reduce of a flat buffer.

    A parameter without a grad (not in this phase's graph, e.g. D's last bias under R1) keeps
    none, as in a single process, so Adam skips it there too. Every rank runs the same graph, so
    every rank has the same set of grads."""
    params = [p for p in params if p.grad is not None]
    if not _active() or not params:
        return
    flat = torch.cat([p.grad.flatten() for p in params])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    offset = 0
    for p in params:
        n = p.numel()
        p.grad.copy_(flat[offset:offset + n].view_as(p))
        offset += n


def average_buffers(module: nn.Module) -> None:
    """Average floating-point buffers (e.g. the mapping network's w_avg, tracked per rank)."""
    if not _active():
        return
    for b in module.buffers():
        if b.is_floating_point():
            dist.all_reduce(b)
            b /= dist.get_world_size()


def reduce_mean(t: torch.Tensor) -> torch.Tensor:
    """Mean of ``t`` over ranks (a copy); ``t`` itself with one process."""
    if not _active():
        return t
    t = t.detach().clone()
    dist.all_reduce(t)
    return t / dist.get_world_size()


def reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum of ``t`` over ranks (a copy); ``t`` itself with one process."""
    if not _active():
        return t
    t = t.detach().clone()
    dist.all_reduce(t)
    return t


def any_rank(flag: bool, device: torch.device) -> bool:
    """True on every rank if ``flag`` is true on any (e.g. a stop signal seen by one process)."""
    if not _active():
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def gather_tensors(t: torch.Tensor) -> list[torch.Tensor]:
    """Every rank's copy of an equally-shaped tensor (e.g. RNG states), in rank order, on CPU."""
    if not _active():
        return [t.cpu()]
    # gloo reduces CPU tensors, nccl CUDA tensors (RNG states live on the CPU whatever the backend)
    backend_dev = torch.device("cpu") if dist.get_backend() == "gloo" else torch.device("cuda", torch.cuda.current_device())
    src = t.to(backend_dev)
    out = [torch.empty_like(src) for _ in range(dist.get_world_size())]
    dist.all_gather(out, src)
    return [o.cpu() for o in out]


def check_consistency(module: nn.Module, name: str) -> None:
    """Raise if any rank's parameters differ from rank 0's (an internal invariant of data parallelism).

    Compares one float64 checksum per tensor, so it is cheap enough to run at every checkpoint."""
    if not _active():
        return
    sums = torch.stack([p.detach().double().sum() for p in module.parameters()])
    gathered = gather_tensors(sums)
    bad = [r for r, s in enumerate(gathered) if not torch.equal(s, gathered[0])]
    assert not bad, f"{name} parameters differ between rank 0 and rank(s) {bad}: data-parallel bug"


def barrier() -> None:
    if _active():
        dist.barrier()


def quiet_other_ranks(env: DistEnv) -> None:
    """Rank 0 logs; the other ranks only log warnings and errors."""
    if not env.is_main:
        logging.getLogger().setLevel(logging.WARNING)


# ----------------------------------------------------------------------------------------------
# --gpus N: launch torchrun for the user


def strip_gpus_flag(argv: Sequence[str]) -> list[str]:
    """``argv`` without ``--gpus N`` / ``--gpus=N`` (the workers must not launch again)."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        if a == "--gpus":
            skip = True
            continue
        if a.startswith("--gpus="):
            continue
        out.append(a)
    return out


def torchrun_command(nproc: int, train_argv: Sequence[str]) -> list[str]:
    """The command ``--gpus N`` runs: torchrun on this node with N processes of ``pcgan train``.

    Args:
        nproc: processes (one per GPU).
        train_argv: the ``pcgan train`` flags (``--gpus`` is removed).
    """
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
            "-m", "pcgan", "train", *strip_gpus_flag(train_argv)]


def launch(nproc: int, train_argv: Sequence[str]) -> None:
    """Replace this process with torchrun (so Ctrl-C / SIGTERM reach it and it forwards them)."""
    if env_from_launcher().distributed:
        raise PcganError("--gpus launches torchrun itself; under torchrun leave --gpus out")
    cmd = torchrun_command(nproc, train_argv)
    log.info("launching: %s", " ".join(cmd))
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(cmd[0], cmd)

"""Real grids for training: an endless, resumable stream of batches from a dataset's train split.

Which rows come next is a pure function of (seed, rank, world size, draws so far): every epoch
is a permutation of the train rows seeded by (seed, epoch), and rank r takes every world-th
row of it, so ranks see disjoint shards and a resumed run continues with exactly the rows it
would have seen. Two ways to fetch the rows, same rows either way:

* on the device: the float16 split is copied once to the GPU (or RAM for CPU training) when it
  fits, and a batch is one index op: the GPU never waits for data;
* otherwise: a ``DataLoader`` whose workers read rows from the memory-mapped ``grids.npy``
  into pinned memory, overlapped with training.

Left-right mirroring is not done here: it is the augmentation pipeline's job.
"""

from __future__ import annotations

import logging
import signal
from typing import Iterator

import numpy as np
import torch

from pcgan.dataset import Dataset
from pcgan.errors import PcganError

log = logging.getLogger(__name__)

DEVICE_MEMORY_FRACTION = 0.25  # hold the data on the GPU only if it takes at most this much of the free memory
HOST_MEMORY_FRACTION = 0.25    # ... or, training on CPU, of the available RAM


def _available_ram() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 4 << 30  # unknown: assume a small machine


def fits_on_device(nbytes: int, device: torch.device) -> bool:
    """Whether ``nbytes`` of grids can live on ``device`` with room to spare for training."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return nbytes <= DEVICE_MEMORY_FRACTION * free
    return nbytes <= HOST_MEMORY_FRACTION * _available_ram()


def row_stream(rows: np.ndarray, seed: int, rank: int, world: int, start: int = 0) -> Iterator[int]:
    """Endless dataset rows for one rank, starting after its first ``start`` draws.

    Args:
        rows: [N] train-split row indices into grids.npy.
        seed: run seed (the same on every rank: ranks share each epoch's permutation).
        rank, world: this process and the process count; rank r takes positions r, r+world, ...
        start: draws already consumed by this rank (for resuming).
    """
    n = len(rows)
    per_epoch = max(n // world, 1)  # each rank draws this many rows per epoch
    epoch, pos = divmod(start, per_epoch)
    while True:
        g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        perm = torch.randperm(n, generator=g).numpy()
        if n < world:  # tiny split: ranks wrap around it
            perm = np.resize(perm, world)
        share = perm[rank::world][:per_epoch]
        for i in range(pos, per_epoch):
            yield int(rows[share[i]])
        epoch, pos = epoch + 1, 0


class _Rows(torch.utils.data.Dataset):
    """Map-style view of grids.npy for DataLoader workers: row -> float16 tensor [C, H, W]."""

    def __init__(self, grids: np.ndarray):
        self.grids = grids

    def __len__(self) -> int:
        return self.grids.shape[0]

    def __getitem__(self, row: int) -> torch.Tensor:
        return torch.from_numpy(np.array(self.grids[row], dtype=np.float16))


def _worker_init(_: int) -> None:
    # Ctrl-C / SIGTERM are for the training process, which saves a checkpoint and then shuts
    # the workers down; a worker dying of the signal first would break that last step.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


class _StreamSampler(torch.utils.data.Sampler):
    def __init__(self, stream: Iterator[int]):
        self.stream = stream

    def __iter__(self):
        return self.stream


class TrainData:
    """Batches ``[B, C, H, W]`` float32 on ``device`` from a dataset's train split, forever.

    Call :meth:`next` for each step; ``draws`` counts rows consumed by this rank (save it,
    and pass it back as ``start`` to resume exactly)."""

    def __init__(self,
                 dataset: Dataset,          # opened with pcgan.dataset.load_dataset
                 batch: int,                # rows per call of next() on this rank
                 device: torch.device,      # where batches go
                 seed: int = 0,             # run seed
                 rank: int = 0,             # this process
                 world: int = 1,            # number of processes
                 start: int = 0,            # rows already drawn by this rank (resume)
                 on_device: bool | None = None,  # hold the split on the device; None: when it fits
                 workers: int = 2,          # DataLoader worker processes when not on the device
                 channels_last: bool = False,    # return batches in channels_last memory format
                 ):
        self.rows = dataset.split("train")
        if len(self.rows) == 0:
            raise PcganError(f"{dataset.path}: the train split is empty; nothing to train on")
        self.batch, self.device, self.draws = batch, device, start
        self.channels_last = channels_last
        C, H, W = dataset.grids.shape[1:]
        nbytes = len(self.rows) * C * H * W * 2
        self.on_device = fits_on_device(nbytes, device) if on_device is None else on_device
        self._stream = row_stream(self.rows, seed, rank, world, start)
        if self.on_device:
            # Rows are looked up by dataset index; keep only the train rows and map indices to them.
            self._slot = {int(r): i for i, r in enumerate(self.rows)}
            data = np.asarray(dataset.grids[self.rows], dtype=np.float16)
            self._data = torch.from_numpy(data).to(device)  # [N, C, H, W] float16
            log.info("holding %d training grids on %s (%.1f MiB)", len(self.rows), device, nbytes / 2**20)
            self._loader = None
        else:
            pin = device.type == "cuda"
            self._loader = iter(torch.utils.data.DataLoader(
                _Rows(dataset.grids), batch_size=batch, sampler=_StreamSampler(self._stream),
                num_workers=workers, pin_memory=pin, drop_last=True, worker_init_fn=_worker_init,
                persistent_workers=workers > 0, prefetch_factor=4 if workers > 0 else None))
            log.info("streaming training grids from %s with %d workers", dataset.path, workers)

    def next(self) -> torch.Tensor:
        """The next batch: [B, C, H, W] float32 on the device."""
        if self._loader is None:
            slots = torch.tensor([self._slot[next(self._stream)] for _ in range(self.batch)])
            x = self._data[slots.to(self.device, non_blocking=True)]
        else:
            x = next(self._loader).to(self.device, non_blocking=True)
        self.draws += self.batch
        x = x.float()
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

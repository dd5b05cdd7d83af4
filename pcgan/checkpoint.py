"""Checkpoints: plain dicts of tensors and primitives, written atomically, read with weights_only.

Two kinds of file live in a run directory (see ``pcgan train --help``):

``network-snapshot-KKKKKK.pt`` (what ``generate``, ``eval`` and ``view`` read)::

    schema, schema_version   "pcgan-snapshot", 1
    kimg, images_seen        training progress when written (the name is only a label)
    G_ema                    {"class": "Generator", "init_kwargs": {...}, "state_dict": {...}}
    grid_meta                GridMeta.to_dict(): channels, resolution, camera, normalisation
    config                   the resolved run config as plain data (model, train, ...)

``training-state.pt`` (everything for an exact resume)::

    schema, schema_version   "pcgan-training-state", 1
    kimg, images_seen        as above
    modules                  {"G": record, "D": record, "G_ema": record} (records as above)
    optimizers               {"G": Adam state_dict, "D": Adam state_dict}
    progress                 step, tick, ... (whatever the loop needs to continue)
    extra                    loss state (path-length mean), augment state, RNG states, ...
    grid_meta, config        as above

Nothing is pickled code: files load with ``torch.load(weights_only=True)``, so a checkpoint
from someone else cannot run anything on your machine. Modules are saved unwrapped (no DDP
``module.`` or torch.compile ``_orig_mod.`` prefixes) and can be loaded on any device: tensors
are mapped to the requested device on load. Writes go to a temporary file that is renamed into
place, so a crash or SIGKILL mid-write leaves the previous checkpoint intact.
"""

from __future__ import annotations

import logging
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from pcgan.errors import PcganError
from pcgan.fileio import atomic_path
from pcgan.grid import GridMeta
from pcgan.networks import Discriminator, Generator

log = logging.getLogger(__name__)

SNAPSHOT_SCHEMA = "pcgan-snapshot"
STATE_SCHEMA = "pcgan-training-state"
SCHEMA_VERSION = 1
SNAPSHOT_GLOB = "network-snapshot-*.pt"
STATE_FILE = "training-state.pt"

# Module classes a checkpoint may name: an explicit registry, never a pickled class.
MODULE_CLASSES: dict[str, type[nn.Module]] = {"Generator": Generator, "Discriminator": Discriminator}
_DDP_PREFIX, _COMPILE_PREFIX = "module.", "_orig_mod."  # DistributedDataParallel, torch.compile


def snapshot_name(images_seen: int) -> str:
    """File name of the snapshot taken after ``images_seen`` real images: kimg, 6 digits."""
    return f"network-snapshot-{images_seen // 1000:06d}.pt"


# ----------------------------------------------------------------------------------------------
# Modules <-> plain records


def unwrap(module: nn.Module) -> nn.Module:
    """The plain module inside DDP / torch.compile wrappers."""
    while True:
        if isinstance(module, nn.parallel.DistributedDataParallel):
            module = module.module
        elif hasattr(module, "_orig_mod"):
            module = module._orig_mod
        else:
            return module


def clean_state_dict(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """State dict with wrapper prefixes removed from every key (also inside nested names)."""
    out = {}
    for key, value in state.items():
        key = key.replace(_COMPILE_PREFIX, "")  # compile may wrap a submodule: "synthesis._orig_mod.x"
        while key.startswith(_DDP_PREFIX):
            key = key[len(_DDP_PREFIX):]
        out[key] = value
    return out


def module_record(module: nn.Module) -> dict:
    """``{"class", "init_kwargs", "state_dict"}`` for a pcgan network (wrappers stripped)."""
    module = unwrap(module)
    name = type(module).__name__
    assert name in MODULE_CLASSES, f"cannot checkpoint a {name}: not in MODULE_CLASSES"
    state = {k: v.detach().cpu() for k, v in clean_state_dict(module.state_dict()).items()}
    return {"class": name, "init_kwargs": dict(module.init_kwargs), "state_dict": state}


def build_module(record: Mapping, path: Path, what: str, device: torch.device | str = "cpu",
                 classes: Mapping[str, type[nn.Module]] = MODULE_CLASSES) -> nn.Module:
    """Rebuild a network from a ``{"class", "init_kwargs", "state_dict"}`` record (as written by
    :func:`module_record`); ``classes`` maps the record's class names to the classes allowed."""
    try:
        cls = classes[record["class"]]
        module = cls(**record["init_kwargs"])
        module.load_state_dict(clean_state_dict(record["state_dict"]))
    except KeyError as exc:
        raise PcganError(f"{path}: {what} record is incomplete or names an unknown class ({exc})") from None
    except (TypeError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0]
        raise PcganError(f"{path}: {what} does not match this version of pcgan's networks ({first})") from None
    return module.to(device)


# ----------------------------------------------------------------------------------------------
# Reading and writing files


def _save(obj: dict, path: str | Path) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
    return path


def _device(device: torch.device | str) -> torch.device:
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise PcganError(f"device {device} requested but CUDA is not available: use device 'cpu'")
    return device


def read_checkpoint(path: str | Path, schema: str | tuple[str, ...], map_location: Any = "cpu",
                    mmap: bool = False) -> dict:
    """``torch.load(weights_only=True)`` a pcgan checkpoint and check its schema.

    Args:
        path: the .pt file.
        schema: accepted ``schema`` value(s).
        map_location: where tensors go (files written on a GPU load on a CPU-only machine).
        mmap: map tensors lazily from disk (cheap peek at small fields of a big file).
    Raises:
        PcganError naming the file: missing, truncated, pickled code (a foreign checkpoint such
        as a StyleGAN2-ADA .pkl), another schema, or a newer schema version.
    """
    path = Path(path)
    accepted = (schema,) if isinstance(schema, str) else tuple(schema)
    if not path.is_file():
        raise PcganError(f"checkpoint {path} does not exist")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as exc:
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(exc))
        if found is None:  # not a torch.save file at all (or one written with another pickle protocol)
            raise PcganError(f"{path}: cannot read as a torch checkpoint (not written by torch.save, or corrupt)") from None
        raise PcganError(f"{path}: not a pcgan checkpoint: it holds pickled Python objects ({found.group(1)}) "
                         f"that safe (weights_only) loading refuses; pcgan checkpoints hold only tensors and "
                         f"numbers, so foreign files such as StyleGAN2-ADA .pkl cannot be loaded") from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise PcganError(f"{path}: cannot read as a torch checkpoint (truncated or not a checkpoint: {first[:160]})") from None
    if not isinstance(obj, dict) or obj.get("schema") not in accepted:
        found = obj.get("schema") if isinstance(obj, dict) else type(obj).__name__
        raise PcganError(f"{path}: not a pcgan checkpoint of kind {' or '.join(accepted)} (schema is {found!r})")
    version = obj.get("schema_version")
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise PcganError(f"{path}: schema_version {version!r} is newer than this pcgan understands "
                         f"({SCHEMA_VERSION}); upgrade pcgan")
    if version < SCHEMA_VERSION:  # no older version exists yet; a future one converts here
        raise PcganError(f"{path}: schema_version {version} is too old for this pcgan ({SCHEMA_VERSION})")
    return obj


def save_snapshot(path: str | Path, G_ema: nn.Module, meta: GridMeta, config: Mapping, images_seen: int) -> Path:
    """Write ``network-snapshot-*.pt``: the EMA generator, grid meta and config, atomically.

    Args:
        path: destination file (usually ``run_dir / snapshot_name(images_seen)``).
        G_ema: the generator to publish (may be DDP/compile-wrapped).
        meta: the dataset's grid metadata (channels, camera, normalisation).
        config: the resolved run config as plain data (``pcgan.config.to_dict(cfg)``).
        images_seen: real images shown to D so far; ``kimg`` is this / 1000.
    """
    obj = {"schema": SNAPSHOT_SCHEMA, "schema_version": SCHEMA_VERSION,
           "kimg": images_seen / 1000.0, "images_seen": int(images_seen),
           "G_ema": module_record(G_ema), "grid_meta": meta.to_dict(), "config": dict(config)}
    return _save(obj, path)


def save_training_state(path: str | Path, modules: Mapping[str, nn.Module], optimizers: Mapping[str, Any],
                        meta: GridMeta, config: Mapping, images_seen: int, progress: Mapping,
                        extra: Mapping | None = None) -> Path:
    """Write ``training-state.pt``: everything an exact resume needs, atomically.

    Args:
        modules: e.g. {"G": G, "D": D, "G_ema": G_ema}; saved unwrapped.
        optimizers: e.g. {"G": opt_G, "D": opt_D}; their ``state_dict()``.
        progress: loop counters (step, tick, ...) as primitives.
        extra: further state as plain data (loss, augmentation, RNG states).
    """
    obj = {"schema": STATE_SCHEMA, "schema_version": SCHEMA_VERSION,
           "kimg": images_seen / 1000.0, "images_seen": int(images_seen),
           "modules": {name: module_record(m) for name, m in modules.items()},
           "optimizers": {name: opt.state_dict() for name, opt in optimizers.items()},
           "progress": dict(progress), "extra": dict(extra or {}),
           "grid_meta": meta.to_dict(), "config": dict(config)}
    return _save(obj, path)


def load_training_state(path: str | Path, device: torch.device | str = "cpu") -> dict:
    """Read ``training-state.pt`` (or the one in a run directory), tensors on ``device``.

    Returns the dict described in the module docstring plus ``path``; rebuild networks with
    :func:`build_module` or load records into existing ones with :func:`load_module_state`."""
    path = Path(path)
    if path.is_dir():
        path = path / STATE_FILE
    state = read_checkpoint(path, STATE_SCHEMA, map_location=_device(device))
    state["path"] = str(path)
    return state


def load_module_state(module: nn.Module, record: Mapping, path: str | Path, what: str) -> None:
    """Load a record's weights into an existing (possibly wrapped) module, checking it fits."""
    target = unwrap(module)
    if record.get("class") != type(target).__name__:
        raise PcganError(f"{path}: {what} is a {record.get('class')}, expected a {type(target).__name__}")
    if dict(record.get("init_kwargs", {})) != dict(target.init_kwargs):
        diff = sorted(k for k in set(record["init_kwargs"]) | set(target.init_kwargs)
                      if record["init_kwargs"].get(k) != target.init_kwargs.get(k))
        shown = ", ".join(f"{k}: checkpoint {record['init_kwargs'].get(k)!r} vs config {target.init_kwargs.get(k)!r}"
                          for k in diff[:4])
        raise PcganError(f"{path}: {what} architecture differs from the config ({shown})")
    target.load_state_dict(clean_state_dict(record["state_dict"]))


# ----------------------------------------------------------------------------------------------
# Finding and loading generators


def peek(path: str | Path, schema: str | tuple[str, ...] = (SNAPSHOT_SCHEMA, STATE_SCHEMA)) -> dict:
    """The small fields of a checkpoint (kimg, schema, ...) without reading its tensors."""
    obj = read_checkpoint(path, schema, mmap=True)
    return {k: v for k, v in obj.items() if not isinstance(v, (dict, torch.Tensor))}


def find_snapshots(run_dir: str | Path) -> list[tuple[int, Path]]:
    """``(images_seen, path)`` of every readable network snapshot in ``run_dir``, oldest first.

    Progress is read from inside each file (memory-mapped, so this is cheap); a file that is
    not a readable snapshot is skipped with a warning."""
    found = []
    for path in sorted(Path(run_dir).glob(SNAPSHOT_GLOB)):
        try:
            found.append((int(peek(path, SNAPSHOT_SCHEMA)["images_seen"]), path))
        except (PcganError, KeyError) as exc:
            log.warning("skipping %s: %s", path, exc)
    return sorted(found, key=lambda item: (item[0], item[1].name))


def prune_snapshots(run_dir: str | Path, keep: int) -> list[Path]:
    """Delete all but the newest ``keep`` network snapshots (0 keeps all). Returns those deleted."""
    if keep <= 0:
        return []
    old = [p for _, p in find_snapshots(run_dir)][:-keep]
    for p in old:
        p.unlink(missing_ok=True)
    return old


def load_generator(path_or_run_dir: str | Path, device: torch.device | str = "cpu") -> tuple[Generator, GridMeta, dict]:
    """Load the EMA generator for inference.

    Args:
        path_or_run_dir: a ``network-snapshot-*.pt``, a ``training-state.pt`` (its G_ema), or
            a run directory (its newest snapshot by the progress stored inside the files).
        device: where the generator goes; files written on a GPU load on a CPU.
    Returns:
        (G in eval mode with requires_grad off, the grid meta, info) where info holds path,
        kimg, images_seen, config (plain dict) and schema_version.
    """
    path = Path(path_or_run_dir)
    if path.is_dir():
        snaps = find_snapshots(path)
        if not snaps:
            raise PcganError(f"{path}: no readable {SNAPSHOT_GLOB} in this directory (is it a pcgan "
                             f"run dir? snapshots appear after the first snapshot tick)")
        path = snaps[-1][1]
    device = _device(device)
    obj = read_checkpoint(path, (SNAPSHOT_SCHEMA, STATE_SCHEMA), map_location=device)
    record = obj["G_ema"] if obj["schema"] == SNAPSHOT_SCHEMA else obj.get("modules", {}).get("G_ema")
    if record is None:
        raise PcganError(f"{path}: holds no G_ema generator")
    G = build_module(record, path, "G_ema", device).eval().requires_grad_(False)
    try:
        meta = GridMeta.from_dict(obj["grid_meta"])
    except KeyError:
        raise PcganError(f"{path}: holds no grid_meta") from None
    if G.img_channels != meta.num_channels or G.resolution != meta.resolution:
        raise PcganError(f"{path}: generator makes {G.img_channels}x{G.resolution}^2 grids but its grid_meta "
                         f"says {meta.num_channels}x{meta.resolution}^2")
    info = {"path": str(path), "kimg": obj.get("kimg"), "images_seen": obj.get("images_seen"),
            "config": obj.get("config", {}), "schema": obj["schema"], "schema_version": obj["schema_version"]}
    log.debug("loaded %s (kimg %.1f)", path, info["kimg"] or 0.0)
    return G, meta, info

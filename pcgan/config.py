"""Run configuration: frozen dataclasses loaded from YAML, overridden from the command line.

A config file has one top-level key per *section*; each section is a frozen dataclass
registered by name with :func:`register_section` (``model`` lives here, the training code adds
``train``). Loading checks every key and type and names the file and dotted key of any mistake::

    cfg = load_config("configs/faces-256.yaml", ["model.channel_base=16384"])
    cfg.model.channel_base          # 16384
    print(to_yaml(cfg))             # the resolved config, as written to a run's config.yaml

Override values are parsed as YAML scalars/lists (``16384``, ``0.5``, ``null``, ``true``,
``[1,3,3,1]``). Sections missing from the file take their defaults.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
import sys
import types
import typing
from pathlib import Path
from typing import Any, Iterable, Literal, Union

import yaml

from pcgan.errors import PcganError

# ----------------------------------------------------------------------------------------------
# Section registry

SECTIONS: dict[str, type] = {}  # section name -> frozen dataclass (order = order in config.yaml)

# Modules whose import registers sections defined outside this file. config_class() imports
# them first, so a config file reads the same whatever the caller happened to import before.
SECTION_MODULES: tuple[str, ...] = ("pcgan.training",)  # registers "train" and "augment"


def register_section(name: str):
    """Class decorator: make a frozen dataclass the schema of top-level key ``name``."""
    def decorate(cls: type) -> type:
        params = getattr(cls, "__dataclass_params__", None)
        assert params is not None and params.frozen, f"section {name!r}: {cls.__name__} must be a frozen dataclass"
        for f in dataclasses.fields(cls):
            assert f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING, (
                f"section {name!r}: field {f.name!r} needs a default")
        SECTIONS[name] = cls
        return cls
    return decorate


@dataclasses.dataclass(frozen=True)
class _ConfigBase:
    """Base of the resolved config; its fields are the registered sections (e.g. ``cfg.model``)."""


_config_cache: dict[tuple, type] = {}


def config_class() -> type:
    """The frozen dataclass ``Config`` with one field per registered section, in registry order.

    Rebuilt (and cached) whenever the registry changes, so a section registered later, e.g.
    ``train`` by the training code, is part of every config loaded after its import.
    """
    for module in SECTION_MODULES:
        if module not in sys.modules:
            importlib.import_module(module)
    key = tuple(SECTIONS.items())
    if key not in _config_cache:
        fields = [(name, cls, dataclasses.field(default_factory=cls)) for name, cls in key]
        _config_cache[key] = dataclasses.make_dataclass("Config", fields, bases=(_ConfigBase,), frozen=True)
    return _config_cache[key]


# ----------------------------------------------------------------------------------------------
# Model section


@dataclasses.dataclass(frozen=True)
class MappingConfig:
    layers: int = 8                 # dense layers z -> w
    lr_mul: float = 0.01            # their learning-rate multiplier
    w_avg_beta: float = 0.995       # decay of the tracked w_avg used for truncation

    def __post_init__(self):
        if self.layers < 1:
            raise ValueError("mapping.layers must be >= 1")
        if not 0 < self.lr_mul <= 1 or not 0 <= self.w_avg_beta < 1:
            raise ValueError("mapping.lr_mul must be in (0, 1] and mapping.w_avg_beta in [0, 1)")


@dataclasses.dataclass(frozen=True)
class MbstdConfig:
    group_size: int | None = 4      # samples per minibatch-std group (per GPU); null: whole batch
    num_channels: int = 1           # extra feature maps; 0 turns minibatch std off

    def __post_init__(self):
        if (self.group_size is not None and self.group_size < 1) or self.num_channels < 0:
            raise ValueError("mbstd.group_size must be >= 1 (or null) and mbstd.num_channels >= 0")


@register_section("model")
@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Generator + discriminator architecture (StyleGAN2 config F by default)."""

    resolution: int = 256           # grid side in pixels, power of two in [8, 1024]; must match the dataset
    z_dim: int = 512                # latent z size
    w_dim: int = 512                # style vector size
    channel_base: int = 32768       # feature maps at resolution r: min(channel_base // r, channel_max), G and D
    channel_max: int = 512          # cap on feature maps
    conv_clamp: float | None = None  # clamp conv outputs to +-conv_clamp; null: off (bf16 needs none)
    fused_modconv: bool = False     # grouped-conv modulation in G (same maths; speed differs per device)
    resample_filter: tuple[float, ...] = (1.0, 3.0, 3.0, 1.0)  # 1D FIR taps for 2x up/down sampling
    xyz_on_rays: bool = True        # G learns depth only: x, y of each point follow from z along its pixel's camera ray
    g_composite: bool = False       # G's empty pixels (mask <= 0) get the background sheet's point and colour (exact silhouettes)
    g_mask_tanh: float = 0.0        # G's mask channel is tanh(g_mask_tanh * m), saturating to the +-1 of real masks; 0: linear
    d_normals: bool = True          # D also reads surface normals computed from z (shading shows rough geometry)
    d_curvature: float = 0.0        # D also reads how fast the normals turn (curvature) times this; 0: off; needs d_normals
    d_pack: int = 1                 # samples D judges together (PacGAN, against mode collapse); train.batch per GPU must divide
    mapping: MappingConfig = dataclasses.field(default_factory=MappingConfig)
    mbstd: MbstdConfig = dataclasses.field(default_factory=MbstdConfig)
    d_mapping_layers: int = 8       # dense layers embedding the condition in D (conditional runs only)

    def __post_init__(self):
        r = self.resolution
        if not 8 <= r <= 1024 or r & (r - 1):
            raise ValueError(f"model.resolution must be a power of two from 8 to 1024, got {r}")
        if min(self.z_dim, self.w_dim, self.channel_base, self.channel_max) < 1:
            raise ValueError("model.z_dim, w_dim, channel_base and channel_max must be >= 1")
        if self.d_pack < 1:
            raise ValueError(f"model.d_pack must be >= 1, got {self.d_pack}")
        if not self.g_mask_tanh >= 0:
            raise ValueError(f"model.g_mask_tanh must be >= 0 (0: off), got {self.g_mask_tanh}")
        if not self.d_curvature >= 0 or (self.d_curvature and not self.d_normals):
            raise ValueError(f"model.d_curvature must be >= 0 (0: off) and needs model.d_normals, "
                             f"got {self.d_curvature} with d_normals={self.d_normals}")
        if len(self.resample_filter) % 2:
            raise ValueError("model.resample_filter needs an even number of taps, e.g. [1, 3, 3, 1]")

    def generator_kwargs(self, channels: int, c_dim: int = 0, camera: dict | None = None,
                         background: dict | None = None) -> dict:
        """Keyword arguments of ``pcgan.networks.Generator`` for a dataset's channels / labels,
        camera (``GridMeta.camera.to_dict()``; needed when ``xyz_on_rays``) and empty pixels
        (``GridMeta.empty_pixel()``; needed when ``g_composite`` and the grids have a mask
        channel, the only ones with empty pixels to composite over). ``g_mask_tanh`` too applies
        only to grids with a mask channel."""
        from pcgan.grid import DEFAULT_CHANNELS

        if self.xyz_on_rays and camera is None:
            raise ValueError("model.xyz_on_rays needs the dataset's camera (generator_kwargs(..., camera=...))")
        extra = {"camera": dict(camera)} if self.xyz_on_rays else {}
        if self.g_composite and channels == len(DEFAULT_CHANNELS):
            if background is None:
                raise ValueError("model.g_composite needs the dataset's empty pixel "
                                 "(generator_kwargs(..., background=meta.empty_pixel()))")
            extra["background"] = {"camera": dict(background["camera"]), "sheet_z": float(background["sheet_z"]),
                                   "rgb": [float(c) for c in background["rgb"]]}
        if self.g_mask_tanh and channels == len(DEFAULT_CHANNELS):
            extra["mask_tanh"] = float(self.g_mask_tanh)
        return dict(**extra, z_dim=self.z_dim, w_dim=self.w_dim, c_dim=c_dim, resolution=self.resolution,
                    channels=channels, channel_base=self.channel_base, channel_max=self.channel_max,
                    mapping_layers=self.mapping.layers, mapping_lr_mul=self.mapping.lr_mul,
                    w_avg_beta=self.mapping.w_avg_beta, conv_clamp=self.conv_clamp,
                    resample_filter=list(self.resample_filter), fused_modconv=self.fused_modconv)

    def discriminator_kwargs(self, channels: int, c_dim: int = 0, camera: dict | None = None) -> dict:
        """Keyword arguments of ``pcgan.networks.Discriminator`` (the dataset's camera is
        needed when ``d_normals``; ``d_curvature`` rides on the normals)."""
        extra = {}
        if self.d_normals:
            if camera is None:
                raise ValueError("model.d_normals needs the dataset's camera (discriminator_kwargs(..., camera=...))")
            from pcgan.grid import Camera
            extra["normals_pixel_size"] = Camera.from_dict(camera).pixel_size(self.resolution)
            if self.d_curvature:
                extra["curvature_gain"] = float(self.d_curvature)
        if self.d_pack > 1:
            extra["pack"] = self.d_pack
        return dict(**extra, c_dim=c_dim, resolution=self.resolution, channels=channels, channel_base=self.channel_base,
                    channel_max=self.channel_max, mbstd_group_size=self.mbstd.group_size,
                    mbstd_num_channels=self.mbstd.num_channels, mapping_layers=self.d_mapping_layers,
                    conv_clamp=self.conv_clamp, resample_filter=list(self.resample_filter))


# ----------------------------------------------------------------------------------------------
# Typed construction from plain data


_TYPE_NAMES = {type(None): "null", bool: "true/false", int: "an integer", float: "a number", str: "a string"}


def _type_name(tp: Any) -> str:
    if tp in _TYPE_NAMES:
        return _TYPE_NAMES[tp]
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _is_union(tp: Any) -> bool:
    return typing.get_origin(tp) in (Union, types.UnionType)


def coerce(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` (plain YAML data) against the annotation ``tp``; build dataclasses.

    ``where`` names the source and dotted key for messages, e.g. "configs/x.yaml: model.z_dim".
    """
    if tp is Any:
        return value
    if _is_union(tp):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return coerce(value, arg, where)
            except PcganError:
                pass
        raise PcganError(f"{where} must be {' or '.join(_type_name(a) for a in args)}, got {value!r}")
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise PcganError(f"{where} must be a mapping of {_fields_hint(tp)}, got {value!r}")
        return build(tp, value, where)
    origin = typing.get_origin(tp)
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise PcganError(f"{where} must be one of {list(typing.get_args(tp))}, got {value!r}")
        return value
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise PcganError(f"{where} must be a list, got {value!r}")
        args = typing.get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise PcganError(f"{where} must have {len(args)} items, got {len(value)}")
            return tuple(coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        item = args[0] if args else Any
        items = [coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        key_t, val_t = typing.get_args(tp) or (Any, Any)
        if not isinstance(value, dict):
            raise PcganError(f"{where} must be a mapping, got {value!r}")
        return {coerce(k, key_t, f"{where} key"): coerce(v, val_t, f"{where}.{k}") for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise PcganError(f"{where} must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise PcganError(f"{where} must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise PcganError(f"{where} must be a finite number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise PcganError(f"{where} must be a string, got {value!r}")
        return value
    raise AssertionError(f"{where}: unsupported config annotation {tp!r}")


def _fields_hint(cls: type) -> str:
    return ", ".join(f.name for f in dataclasses.fields(cls))


def build(cls: type, data: dict, where: str) -> Any:
    """Construct the frozen dataclass ``cls`` from a mapping, checking keys and types.

    Args:
        cls: a dataclass type.
        data: its fields as plain data; missing fields take their defaults.
        where: "file: dotted.prefix" used in error messages.
    Raises:
        PcganError: unknown key, wrong type, or a value its ``__post_init__`` rejects.
    """
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    prefix = where + " " if where.endswith(":") else where + "."
    kwargs = {}
    for key, value in data.items():
        if key not in names:
            raise PcganError(f"{prefix}{key}: unknown key (known keys: {', '.join(sorted(names))})")
        kwargs[key] = coerce(value, hints[key], f"{prefix}{key}")
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as e:
        raise PcganError(f"{where}: {e}") from None


# ----------------------------------------------------------------------------------------------
# Loading, overrides, writing


def _split_override(text: str) -> tuple[list[str], Any]:
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise PcganError(f"command-line override {text!r} must look like section.key=value, "
                         f"e.g. model.channel_base=16384")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as e:
        raise PcganError(f"command-line override {text!r}: cannot parse the value ({e.__class__.__name__})") from None
    return key.strip().split("."), value


def _resolve_override(path: list[str], value: Any, text: str) -> Any:
    """Type-check an override against the schema (so errors name the command line)."""
    where = f"command-line override {text!r}:"
    cls, dotted = config_class(), []
    for i, name in enumerate(path):
        fields = {f.name: f for f in dataclasses.fields(cls)}
        if name not in fields:
            parent = ".".join(dotted) or "the config"
            raise PcganError(f"{where} unknown key {'.'.join(path[:i + 1])!r} "
                             f"(known keys in {parent}: {', '.join(sorted(fields))})")
        dotted.append(name)
        tp = typing.get_type_hints(cls)[name]
        if i == len(path) - 1:
            return coerce(value, tp, f"{where} {'.'.join(dotted)}")
        if not dataclasses.is_dataclass(tp):
            raise PcganError(f"{where} {'.'.join(dotted)} is a value, not a section")
        cls = tp


def load_config(path: str | Path | None = None, overrides: Iterable[str] = ()) -> Any:
    """Load a YAML config (or the defaults when ``path`` is None) and apply overrides.

    Args:
        path: a YAML file whose top-level keys are registered sections.
        overrides: "section.key=value" strings, applied in order after the file.
    Returns:
        The frozen config (``config_class()`` instance): ``cfg.model``, ``cfg.train``, ...
    Raises:
        PcganError: missing/unreadable file, bad YAML, unknown key, wrong type, bad override.
    """
    source = "defaults" if path is None else str(path)
    config_class()  # registers every section before the file is checked against them
    data: dict = {}
    if path is not None:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as e:
            raise PcganError(f"{path}: cannot read config ({e.strerror or e})") from None
        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            line = f" at line {mark.line + 1}" if mark is not None else ""
            problem = f": {e.problem}" if getattr(e, "problem", None) else ""
            raise PcganError(f"{path}: invalid YAML{line}{problem}") from None
        if not isinstance(data, dict):
            raise PcganError(f"{path}: a config must be a mapping of sections ({', '.join(SECTIONS)})")
        for key in data:
            if key not in SECTIONS:
                raise PcganError(f"{path}: unknown section {key!r} (known sections: {', '.join(SECTIONS)})")
    for text in overrides:
        keys, value = _split_override(text)
        value = _resolve_override(keys, value, text)
        node = data
        for k in keys[:-1]:
            child = node.get(k)
            if dataclasses.is_dataclass(child):  # an earlier override set the whole section
                child = to_dict(child)
            if not isinstance(child, dict):
                child = {}
            node[k] = child
            node = child
        node[keys[-1]] = value
    return build(config_class(), data, f"{source}:")


def to_dict(obj: Any) -> Any:
    """A config (or section) as plain YAML-able data: dicts, lists, numbers, strings, None."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


class _Dumper(yaml.SafeDumper):
    """Block-style mappings, one-line lists (``resample_filter: [1.0, 3.0, 3.0, 1.0]``)."""


_Dumper.add_representer(list, lambda d, v: d.represent_sequence("tag:yaml.org,2002:seq", v, flow_style=True))


def to_yaml(cfg: Any) -> str:
    """The resolved config as YAML text (what ``--dry-run`` prints and runs save)."""
    return yaml.dump(to_dict(cfg), Dumper=_Dumper, sort_keys=False, default_flow_style=False)


def save_config(cfg: Any, path: str | Path) -> None:
    """Write the resolved config atomically (temp file + rename); load_config reads it back."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(to_yaml(cfg), encoding="utf-8")
    tmp.replace(path)

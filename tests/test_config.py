"""pcgan.config: YAML -> frozen dataclasses, errors that name the file and key, overrides,
round trip through the written config.yaml, and the sections registry."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from pcgan import config as config_mod
from pcgan.config import (ModelConfig, SECTIONS, load_config, register_section, save_config, to_dict,
                          to_yaml)
from pcgan.errors import PcganError
from pcgan.grid import Camera

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(text)
    return path


def test_presets_load_with_their_values():
    cfg = load_config(CONFIGS / "faces-256.yaml")
    assert (cfg.model.resolution, cfg.model.channel_base, cfg.model.channel_max) == (256, 32768, 512)
    assert cfg.model.mapping.layers == 8 and cfg.model.mapping.lr_mul == 0.01
    assert cfg.model.resample_filter == (1.0, 3.0, 3.0, 1.0)
    demo = load_config(CONFIGS / "demo-cpu-64.yaml").model
    assert (demo.resolution, demo.z_dim, demo.channel_base, demo.mapping.layers) == (64, 128, 2048, 2)
    assert load_config(CONFIGS / "faces-128.yaml").model.resolution == 128
    # The defaults are config F at 256, like the preset.
    assert load_config(None).model == cfg.model


def test_unknown_keys_name_the_key_and_the_file(tmp_path):
    path = write(tmp_path, "model:\n  resolution: 64\n  channel_bse: 1024\n")
    with pytest.raises(PcganError, match=r"run\.yaml: model\.channel_bse: unknown key \(known keys: .*channel_base"):
        load_config(path)
    path = write(tmp_path, "model:\n  mapping:\n    layer: 2\n")
    with pytest.raises(PcganError, match=r"run\.yaml: model\.mapping\.layer: unknown key"):
        load_config(path)
    path = write(tmp_path, "modle:\n  resolution: 64\n")
    with pytest.raises(PcganError, match=r"run\.yaml: unknown section 'modle'"):
        load_config(path)


@pytest.mark.parametrize("line,msg", [
    ("resolution: '256'", r"model\.resolution must be an integer, got '256'"),
    ("resolution: 100", r"model\.resolution must be a power of two"),
    ("fused_modconv: 1", r"model\.fused_modconv must be true or false"),
    ("conv_clamp: big", r"model\.conv_clamp must be a number or null"),
    ("resample_filter: 3", r"model\.resample_filter must be a list"),
    ("mapping: 8", r"model\.mapping must be a mapping of layers, lr_mul, w_avg_beta"),
])
def test_types_and_values_are_checked(tmp_path, line, msg):
    path = write(tmp_path, f"model:\n  {line}\n")
    with pytest.raises(PcganError, match=msg) as info:
        load_config(path)
    assert str(path) in str(info.value)


def test_numbers_and_nulls_are_coerced(tmp_path):
    path = write(tmp_path, "model:\n  conv_clamp: 256\n  mbstd:\n    group_size: null\n")
    model = load_config(path).model
    assert model.conv_clamp == 256.0 and isinstance(model.conv_clamp, float)
    assert model.mbstd.group_size is None and model.mbstd.num_channels == 1


def test_command_line_overrides(tmp_path):
    cfg = load_config(CONFIGS / "faces-128.yaml", ["model.channel_base=8192", "model.mapping.layers=4",
                                                    "model.conv_clamp=null", "model.resample_filter=[1,2,1,1]"])
    assert cfg.model.channel_base == 8192 and cfg.model.mapping.layers == 4
    assert cfg.model.mapping.lr_mul == 0.01  # untouched siblings keep the file's values
    assert cfg.model.conv_clamp is None and cfg.model.resample_filter == (1.0, 2.0, 1.0, 1.0)
    assert cfg.model.resolution == 128
    with pytest.raises(PcganError, match=r"override 'model\.chanel_base=1'.*unknown key 'model\.chanel_base'"):
        load_config(None, ["model.chanel_base=1"])
    with pytest.raises(PcganError, match=r"override 'model\.z_dim=big'.*model\.z_dim must be an integer"):
        load_config(None, ["model.z_dim=big"])
    with pytest.raises(PcganError, match="must look like section.key=value"):
        load_config(None, ["model.z_dim"])
    with pytest.raises(PcganError, match="is a value, not a section"):
        load_config(None, ["model.z_dim.x=1"])


def test_resolved_config_round_trips_through_yaml(tmp_path):
    cfg = load_config(CONFIGS / "demo-cpu-64.yaml", ["model.mbstd.group_size=2"])
    data = to_dict(cfg)
    json.dumps(data)  # plain data only
    assert data["model"]["resample_filter"] == [1.0, 3.0, 3.0, 1.0]
    out = tmp_path / "config.yaml"
    save_config(cfg, out)
    assert load_config(out) == cfg
    assert "channel_base: 2048" in to_yaml(cfg)


def test_config_is_frozen():
    cfg = load_config(None)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.model.z_dim = 3
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.model = ModelConfig()


def test_a_registered_section_is_loaded(tmp_path, monkeypatch):
    config_mod.config_class()  # import the real section modules before the registry is swapped
    assert {"model", "train"} <= set(SECTIONS)  # the training package registers its section
    monkeypatch.setattr(config_mod, "SECTIONS", dict(SECTIONS))  # leave the real registry alone

    @register_section("extra")
    @dataclasses.dataclass(frozen=True)
    class ExtraLike:
        batch: int = 32
        lr: float = 0.002

    path = write(tmp_path, "model:\n  resolution: 64\nextra:\n  batch: 8\n")
    cfg = load_config(path, ["extra.lr=0.001"])
    assert cfg.extra == ExtraLike(batch=8, lr=0.001) and cfg.model.resolution == 64
    assert load_config(None).extra == ExtraLike()
    assert list(to_dict(cfg))[0] == "model" and list(to_dict(cfg))[-1] == "extra"
    with pytest.raises(PcganError, match=r"run\.yaml: extra\.batch must be an integer"):
        load_config(write(tmp_path, "extra:\n  batch: 1.5\n"))


def test_model_config_builds_the_networks():
    from pcgan.networks import Discriminator, Generator

    model = load_config(CONFIGS / "demo-cpu-64.yaml", ["model.resolution=16"]).model
    G = Generator(**model.generator_kwargs(channels=6, camera=Camera().to_dict()))
    D = Discriminator(**model.discriminator_kwargs(channels=6, c_dim=0, camera=Camera().to_dict()))
    assert (G.resolution, G.img_channels, G.z_dim, G.num_ws) == (16, 6, 128, 6)
    assert G.init_kwargs["channel_base"] == 2048 and D.init_kwargs["mbstd_group_size"] == 4


def test_file_errors(tmp_path):
    with pytest.raises(PcganError, match=r"nope\.yaml: cannot read config"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(PcganError, match=r"run\.yaml: invalid YAML at line 2: mapping values are not allowed"):
        load_config(write(tmp_path, "model:\n  resolution: 64: 3\n"))
    with pytest.raises(PcganError, match="must be a mapping of sections"):
        load_config(write(tmp_path, "- 1\n- 2\n"))

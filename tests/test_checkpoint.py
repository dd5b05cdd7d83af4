"""Checkpoints: plain dicts, weights_only loading, newest-by-content, clear errors on foreign files."""

from __future__ import annotations

import pickle

import pytest
import torch

from pcgan import checkpoint as ckpt
from pcgan.errors import PcganError
from pcgan.grid import GridMeta
from pcgan.networks import Discriminator, Generator, z_from_seeds

TINY = dict(z_dim=8, w_dim=8, resolution=8, channels=7, channel_base=64, channel_max=16, mapping_layers=1)


@pytest.fixture
def meta() -> GridMeta:
    return GridMeta(resolution=8, center=(1.0, 2.0, 3.0), scale=90.0, units="mm")


@pytest.fixture
def G() -> Generator:
    torch.manual_seed(0)
    return Generator(**TINY)


def test_snapshot_round_trip_same_faces_and_meta(tmp_path, G, meta):
    with torch.no_grad():
        G.mapping.w_avg.normal_()  # buffers travel too (truncation uses w_avg)
    path = ckpt.save_snapshot(tmp_path / "network-snapshot-000012.pt", G, meta, {"model": {"z_dim": 8}}, 12345)
    G2, meta2, info = ckpt.load_generator(path)
    z = z_from_seeds([1, 2], 8)
    assert torch.equal(G(z, noise_mode="const", truncation_psi=0.7), G2(z, noise_mode="const", truncation_psi=0.7))
    assert meta2 == meta
    assert info["kimg"] == pytest.approx(12.345) and info["images_seen"] == 12345
    assert info["config"] == {"model": {"z_dim": 8}}
    assert not G2.training and not any(p.requires_grad for p in G2.parameters())
    # the file is plain data: the strictest loader accepts it
    raw = torch.load(path, weights_only=True)
    assert raw["schema"] == "pcgan-snapshot" and raw["schema_version"] == ckpt.SCHEMA_VERSION


def test_run_dir_picks_newest_by_content_not_name(tmp_path, G, meta):
    # names lie on purpose: progress must come from inside the files
    ckpt.save_snapshot(tmp_path / "network-snapshot-000900.pt", G, meta, {}, 1000)
    with torch.no_grad():
        for p in G.parameters():
            p.add_(1.0)
    ckpt.save_snapshot(tmp_path / "network-snapshot-000001.pt", G, meta, {}, 5000)
    (tmp_path / "network-snapshot-999999.pt").write_bytes(b"garbage")  # unreadable: skipped
    G2, _, info = ckpt.load_generator(tmp_path)
    assert info["images_seen"] == 5000 and info["path"].endswith("000001.pt")
    assert torch.equal(G2.synthesis.blocks[0].const, G.synthesis.blocks[0].const)


def test_prune_keeps_the_newest(tmp_path, G, meta):
    for i in (3, 1, 2):
        ckpt.save_snapshot(tmp_path / ckpt.snapshot_name(i * 1000), G, meta, {}, i * 1000)
    removed = ckpt.prune_snapshots(tmp_path, keep=2)
    assert [p.name for p in removed] == ["network-snapshot-000001.pt"]
    assert [n for n, _ in ckpt.find_snapshots(tmp_path)] == [2000, 3000]


def test_wrapper_prefixes_are_stripped(G):
    sd = G.state_dict()
    wrapped = {f"module._orig_mod.{k}": v for k, v in sd.items()}
    nested = {k.replace("synthesis.", "synthesis._orig_mod."): v for k, v in sd.items()}
    assert ckpt.clean_state_dict(wrapped).keys() == sd.keys()
    assert ckpt.clean_state_dict(nested).keys() == sd.keys()
    compiled = torch.compile(G)  # wrapping only; nothing is compiled until called
    record = ckpt.module_record(compiled)
    assert record["class"] == "Generator" and record["state_dict"].keys() == sd.keys()


def test_training_state_round_trip(tmp_path, G, meta):
    D = Discriminator(resolution=8, channels=7, channel_base=64, channel_max=16)
    opt = torch.optim.Adam(G.parameters(), lr=1e-3, betas=(0.0, 0.99))
    G(torch.randn(2, 8)).square().mean().backward()
    opt.step()
    path = ckpt.save_training_state(tmp_path / ckpt.STATE_FILE, {"G": G, "D": D, "G_ema": G}, {"G": opt}, meta,
                                    {"train": {"batch": 4}}, 4000, {"step": 1000},
                                    {"rng": {"cpu": [torch.get_rng_state()]}, "loss": {"pl_mean": torch.tensor(0.5)}})
    state = ckpt.load_training_state(tmp_path)  # a run dir works too
    assert state["images_seen"] == 4000 and state["progress"] == {"step": 1000}
    assert torch.equal(state["extra"]["rng"]["cpu"][0], torch.get_rng_state())
    opt2 = torch.optim.Adam(Generator(**TINY).parameters(), lr=1e-3)
    opt2.load_state_dict(state["optimizers"]["G"])
    moments = [s["exp_avg_sq"] for s in opt.state.values()]
    assert all(torch.equal(a, b["exp_avg_sq"]) for a, b in zip(moments, opt2.state.values()))
    D2 = ckpt.build_module(state["modules"]["D"], path, "D")
    x = torch.randn(4, 7, 8, 8)
    assert torch.equal(D(x), D2(x))


def test_record_for_another_architecture_names_the_difference(tmp_path, G, meta):
    ckpt.save_snapshot(tmp_path / "s.pt", G, meta, {}, 0)
    other = Generator(**{**TINY, "w_dim": 16})
    record = torch.load(tmp_path / "s.pt", weights_only=True)["G_ema"]
    with pytest.raises(PcganError, match=r"w_dim: checkpoint 8 vs config 16"):
        ckpt.load_module_state(other, record, tmp_path / "s.pt", "G_ema")


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_foreign_pickle_is_refused_with_the_file_named(tmp_path, G):
    path = tmp_path / "stylegan2-ffhq.pkl"
    torch.save({"G_ema": G}, path)  # a pickled module, as foreign checkpoints are
    with pytest.raises(PcganError, match=r"stylegan2-ffhq\.pkl: not a pcgan checkpoint.*Generator"):
        ckpt.load_generator(path)
    plain = tmp_path / "plain.pkl"
    plain.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(PcganError, match=r"plain\.pkl: cannot read"):
        ckpt.load_generator(plain)


def test_other_schema_newer_version_and_garbage(tmp_path, G, meta):
    torch.save({"schema": "something-else", "weights": torch.zeros(1)}, tmp_path / "a.pt")
    with pytest.raises(PcganError, match=r"a\.pt: not a pcgan checkpoint.*something-else"):
        ckpt.load_generator(tmp_path / "a.pt")
    path = ckpt.save_snapshot(tmp_path / "b.pt", G, meta, {}, 0)
    obj = torch.load(path, weights_only=True)
    torch.save({**obj, "schema_version": ckpt.SCHEMA_VERSION + 1}, tmp_path / "b.pt")
    with pytest.raises(PcganError, match=r"b\.pt: schema_version 2 is newer.*upgrade pcgan"):
        ckpt.load_generator(tmp_path / "b.pt")
    (tmp_path / "c.pt").write_bytes(b"\x00not a zip")
    with pytest.raises(PcganError, match=r"c\.pt: cannot read"):
        ckpt.load_generator(tmp_path / "c.pt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(PcganError, match=r"empty: no readable network-snapshot"):
        ckpt.load_generator(tmp_path / "empty")
    with pytest.raises(PcganError, match="does not exist"):
        ckpt.load_generator(tmp_path / "missing.pt")


def test_training_state_g_ema_loads_as_generator(tmp_path, G, meta):
    ckpt.save_training_state(tmp_path / ckpt.STATE_FILE, {"G": G, "D": G, "G_ema": G}, {}, meta, {}, 0, {})
    G2, meta2, info = ckpt.load_generator(tmp_path / ckpt.STATE_FILE)
    assert info["schema"] == "pcgan-training-state" and meta2 == meta
    z = torch.randn(1, 8)
    assert torch.equal(G(z, noise_mode="const"), G2(z, noise_mode="const"))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_snapshot_loads_on_cpu(tmp_path, G, meta):
    ckpt.save_snapshot(tmp_path / "g.pt", G.cuda(), meta, {}, 0)
    G2, _, _ = ckpt.load_generator(tmp_path / "g.pt", device="cpu")
    assert next(G2.parameters()).device.type == "cpu"

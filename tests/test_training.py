"""pcgan train: loss pieces, data stream, exact resume, NaN stop, SIGTERM, mismatch messages, CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import REPO, pixel_offsets, sphere_grid
from pcgan import checkpoint as ckpt
from pcgan.cli import main
from pcgan.config import load_config
from pcgan.dataset import load_dataset, write_dataset
from pcgan.errors import PcganError
from pcgan.grid import GridMeta
from pcgan.networks import Generator
from pcgan.training import loop
from pcgan.training.data import TrainData, row_stream
from pcgan.training.loss import StyleGAN2Loss

# A 16x16 StyleGAN2 with ~0.1M parameters: a step takes milliseconds on one CPU thread.
TINY = ["model.resolution=16", "model.z_dim=16", "model.w_dim=16", "model.channel_base=256",
        "model.channel_max=32", "model.mapping.layers=2", "model.d_mapping_layers=1",
        "train.batch=4", "train.tick_kimg=0.004", "train.snapshot_ticks=0", "train.preview_ticks=0",
        "train.preview_grids=4", "train.preview_ply=1", "train.ema_kimg=0.01", "train.workers=0",
        "train.pl_interval=2", "train.r1_interval=3",
        "augment.mode=ada", "augment.p=0.3", "augment.interval=1", "augment.speed_kimg=0.05"]
LOSS_KEYS = ("Loss/G/loss", "Loss/D/loss", "Loss/r1_penalty", "Loss/pl_penalty", "Loss/pl_mean",
             "Loss/scores/real", "Loss/scores/fake", "augment_p")


pytestmark = pytest.mark.usefixtures("one_thread")


def make_dataset(path: Path, n: int = 12, resolution: int = 16, channels=None) -> Path:
    kw = {} if channels is None else {"channels": channels}
    meta = GridMeta(resolution=resolution, center=(0.0, 0.0, 500.0), scale=100.0, units="mm", **kw)
    rng = np.random.default_rng(0)
    grids = np.stack([sphere_grid(meta, radius=0.5 + 0.3 * rng.random(), center_x=0.2 * rng.standard_normal())
                      for _ in range(n)])
    return write_dataset(path, grids, meta, {"files": []})


@pytest.fixture(scope="module")
def data16(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("data") / "ds16")


def tiny_cfg(*extra: str):
    return load_config(None, TINY + list(extra))


def stats(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "stats.jsonl").read_text().splitlines()]


# ----------------------------------------------------------------------------------------------
# Pieces


def test_row_stream_shards_ranks_and_resumes_mid_epoch():
    rows = np.arange(100, 110)
    full = [next(s) for s in [row_stream(rows, seed=3, rank=0, world=1)] for _ in range(25)]
    assert sorted(full[:10]) == list(rows) and sorted(full[10:20]) == list(rows)  # epochs are permutations
    tail = row_stream(rows, seed=3, rank=0, world=1, start=13)
    assert [next(tail) for _ in range(12)] == full[13:]
    r0, r1 = row_stream(rows, 3, 0, 2), row_stream(rows, 3, 1, 2)
    a, b = [next(r0) for _ in range(5)], [next(r1) for _ in range(5)]
    assert not set(a) & set(b) and sorted(a + b) == list(rows)  # one epoch split over two ranks


def test_device_and_dataloader_paths_give_the_same_batches(data16):
    ds = load_dataset(data16)
    on = TrainData(ds, 4, torch.device("cpu"), seed=1, on_device=True)
    off = TrainData(ds, 4, torch.device("cpu"), seed=1, on_device=False, workers=1)
    for _ in range(4):  # 16 draws: crosses an epoch of 11 train rows
        a, b = on.next(), off.next()
        assert a.dtype == torch.float32 and a.shape == (4, 7, 16, 16)
        assert torch.equal(a, b)
    resumed = TrainData(ds, 4, torch.device("cpu"), seed=1, start=on.draws)
    assert torch.equal(resumed.next(), on.next())


def test_ema_half_life_and_lazy_adam_rescaling():
    torch.manual_seed(0)
    G = Generator(z_dim=8, w_dim=8, resolution=8, channels=7, channel_base=64, channel_max=16, mapping_layers=1)
    G_ema = Generator(**G.init_kwargs)
    before = G_ema.mapping.layers[0].weight.clone()
    beta = loop.update_ema(G_ema, G, batch=1000, images_seen=10**9, ema_kimg=1.0, ema_rampup=None)
    assert beta == pytest.approx(0.5)  # one half-life of grids moves G_ema halfway to G
    # mapping weights are stored x 1 / lr_mul (~100s): compare to float32 rounding at that size
    assert torch.allclose(G_ema.mapping.layers[0].weight, (before + G.mapping.layers[0].weight) / 2, atol=1e-4)
    beta = loop.update_ema(G_ema, G, batch=10, images_seen=1000, ema_kimg=10.0, ema_rampup=0.05)
    assert beta == pytest.approx(0.5 ** (10 / 50))  # ramp-up: half-life 0.05 x 1000 grids seen
    opt = loop._adam(G, 0.002, (0.0, 0.99), 1e-8, reg_interval=4, device=torch.device("cpu"))
    assert opt.param_groups[0]["lr"] == pytest.approx(0.002 * 4 / 5)
    assert opt.param_groups[0]["betas"][1] == pytest.approx(0.99 ** 0.8)


class _LinearD(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.randn(7, 8, 8))

    def forward(self, img, c=None):
        return (img * self.w).sum(dim=[1, 2, 3])[:, None]


def test_r1_penalty_of_a_linear_discriminator_is_its_squared_norm():
    G = Generator(z_dim=8, w_dim=8, resolution=8, channels=7, channel_base=64, channel_max=16, mapping_layers=1)
    D = _LinearD()
    loss = StyleGAN2Loss(G, D, augment=None, r1_gamma=4.0)
    out = loss.accumulate_gradients("Dreg", torch.randn(3, 7, 8, 8), torch.randn(3, 8), gain=1.0)
    assert out["Loss/r1_penalty"].item() == pytest.approx(D.w.square().sum().item(), rel=1e-5)
    # d/dw of gamma/2 ||w||^2 is gamma * w
    assert torch.allclose(D.w.grad, 4.0 * D.w.detach(), rtol=1e-5)


def test_style_mixing_switches_latents_at_one_layer():
    G = Generator(z_dim=8, w_dim=8, resolution=16, channels=7, channel_base=64, channel_max=16, mapping_layers=1)
    z = torch.randn(64, 8)
    none = StyleGAN2Loss(G, _LinearD(), style_mixing=0.0)._styles(z, None, update_emas=False)
    assert torch.equal(none, none[:, :1].expand_as(none))  # no mixing: one w per sample
    torch.manual_seed(0)
    mixed = StyleGAN2Loss(G, _LinearD(), style_mixing=1.0)._styles(z, None, update_emas=False)
    changes = (mixed[:, 1:] != mixed[:, :-1]).any(dim=2).sum(dim=1)  # [B] layer boundaries where w changes
    assert torch.equal(changes, torch.ones(64, dtype=torch.long))
    assert torch.equal(mixed[:, 0], none[:, 0])  # the first layers keep the first latent


# ----------------------------------------------------------------------------------------------
# The loop


def test_resume_continues_exactly(data16, tmp_path, capsys):
    straight = tmp_path / "straight"
    loop.train(tiny_cfg("train.kimg=0.032"), data16, straight, device="cpu")  # 8 steps
    # the same, in two halves through the CLI: the second re-runs into the run dir (auto-resume)
    split = tmp_path / "split"
    flags = [f"--set={s}" for s in TINY]
    assert main(["train", "--data", str(data16), "--out", str(split), "--kimg", "0.016", "--device", "cpu"] + flags) == 0
    with open(split / "stats.jsonl", "a") as f:  # a tick logged after the last checkpoint, then a crash
        f.write(json.dumps({"tick": 5, "kimg": 0.02, "step": 5}) + "\n")
    assert main(["train", "--data", str(data16), "--out", str(split), "--kimg", "0.032", "--device", "cpu"]) == 0
    a, b = stats(straight), stats(split)
    assert [r["step"] for r in a] == [r["step"] for r in b] == list(range(1, 9))
    for ra, rb in zip(a, b):
        for key in LOSS_KEYS:
            assert (key in ra) == (key in rb), key
            if key in ra:
                assert abs(ra[key] - rb[key]) <= 1e-6, (ra["step"], key, ra[key], rb[key])
    assert len({r["augment_p"] for r in a}) > 2  # ADA moved p, so its state was part of the resume
    Ga, _, ia = ckpt.load_generator(straight)
    Gb, _, ib = ckpt.load_generator(split)
    assert ia["images_seen"] == ib["images_seen"] == 32
    for (name, pa), pb in zip(Ga.state_dict().items(), Gb.state_dict().values()):
        assert torch.allclose(pa, pb, atol=1e-6, rtol=0), name
    sa, sb = ckpt.load_training_state(straight), ckpt.load_training_state(split)
    for ma, mb in zip(sa["optimizers"]["D"]["state"].values(), sb["optimizers"]["D"]["state"].values()):
        assert torch.allclose(ma["exp_avg_sq"], mb["exp_avg_sq"], atol=1e-9)
    # what a run leaves behind
    files = {p.name for p in straight.iterdir()}
    assert {"config.yaml", "stats.jsonl", "training-state.pt", "network-snapshot-000000.pt",
            "reals.png", "fakes000000.png"} <= files
    assert any(n.startswith("events.out.tfevents") for n in files)
    assert (straight / "fakes" / "fakes000000-seed0000.ply").stat().st_size > 0
    assert "resuming with changed settings: train.kimg 0.016 -> 0.032" in (split / "log.txt").read_text()
    assert load_config(straight / "config.yaml").train.kimg == 0.032


def test_nan_loss_stops_with_step_and_last_good_checkpoint(data16, tmp_path, monkeypatch):
    original = StyleGAN2Loss.accumulate_gradients
    seen = {"Dmain": 0}

    def poisoned(self, phase, *args, **kwargs):
        out = original(self, phase, *args, **kwargs)
        if phase == "Dmain":
            seen["Dmain"] += 1
            if seen["Dmain"] == 4:  # the 4th step goes bad
                out["Loss/D/loss"] = out["Loss/D/loss"] * float("nan")
        return out

    monkeypatch.setattr(StyleGAN2Loss, "accumulate_gradients", poisoned)
    run = tmp_path / "run"
    with pytest.raises(loop.TrainingDiverged) as err:
        loop.train(tiny_cfg("train.kimg=0.04", "train.snapshot_ticks=1"), data16, run, device="cpu")
    msg = str(err.value)
    assert "Loss/D/loss became NaN/Inf in step 4" in msg
    assert f"last good checkpoint is {run / 'training-state.pt'} (kimg 0.012)" in msg
    assert ckpt.load_training_state(run)["images_seen"] == 12  # nothing written after the bad step


def test_dataset_config_and_checkpoint_mismatches_name_both_values(data16, tmp_path):
    with pytest.raises(PcganError, match=r"has resolution 16 but the config .* model.resolution 32"):
        loop.train(tiny_cfg("model.resolution=32"), data16, tmp_path / "r", device="cpu")
    run = tmp_path / "run"
    loop.train(tiny_cfg("train.kimg=0.004", "train.preview_grids=0"), data16, run, device="cpu")
    six = make_dataset(tmp_path / "six", channels=("x", "y", "z", "r", "g", "b"))
    with pytest.raises(PcganError, match=r"channels \['x', 'y', 'z', 'r', 'g', 'b'\] but .*training-state.pt was "
                                         r"trained on channels \['x', 'y', 'z', 'r', 'g', 'b', 'mask'\]"):
        loop.train(tiny_cfg("train.kimg=0.008"), six, run, device="cpu", resume=run / "training-state.pt")
    with pytest.raises(PcganError, match="per-process batch 4 is not a multiple of model.d_pack 3"):
        loop.train(tiny_cfg("model.d_pack=3"), data16, tmp_path / "p3", device="cpu")
    with pytest.raises(PcganError, match=r"12 / model.d_pack 2 = 6 packs is not a multiple of model.mbstd.group_size 4"):
        loop.train(tiny_cfg("model.d_pack=2", "train.batch=12", "model.mbstd.group_size=4"), data16, tmp_path / "p2",
                   device="cpu")
    # a changed model on resume is refused by the CLI with the key named
    assert main(["train", "--data", str(data16), "--out", str(run), "--set", "model.channel_max=64"]) == 2


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown without CUDA")
def test_missing_cuda_says_how_to_run_on_cpu(data16, tmp_path, capsys):
    assert main(["train", "--data", str(data16), "--out", str(tmp_path / "r"), "--device", "cuda"]
                + [f"--set={s}" for s in TINY]) == 2
    err = capsys.readouterr().err
    assert "no CUDA device is available" in err and "--device cpu" in err
    with pytest.raises(PcganError, match="--device cpu"):
        loop.resolve_device("cuda")


def test_dry_run_prints_the_resolved_config_and_writes_nothing(data16, tmp_path, capsys):
    out = tmp_path / "never"
    code = main(["train", "--data", str(data16), "--config", str(REPO / "configs" / "demo-cpu-64.yaml"),
                 "--out", str(out), "--set", "model.resolution=16", "--kimg", "7", "--dry-run"])
    printed = capsys.readouterr().out
    assert code == 0 and not out.exists()
    cfg = load_config(None)  # the YAML part parses back into a config with our values
    assert "# run dir:" in printed and "fresh start" in printed
    body = "\n".join(line for line in printed.splitlines() if not line.startswith("#"))
    import yaml
    data = yaml.safe_load(body)
    assert data["train"]["kimg"] == 7.0 and data["model"]["resolution"] == 16 and data["model"]["z_dim"] == 128
    assert set(data) == {"model", "train", "augment"} and cfg.train.kimg != 7.0
    assert main(["train", "--data", str(data16), "--out", str(out), "--set", "train.nope=1", "--dry-run"]) == 2
    assert "train.nope" in capsys.readouterr().err


def test_sigterm_saves_a_checkpoint_and_exits(data16, tmp_path):
    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "pcgan", "train", "--data", str(data16), "--out", str(run), "--device", "cpu",
           "--kimg", "1000"] + [f"--set={s}" for s in TINY]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (run / "stats.jsonl").exists() or not (run / "stats.jsonl").read_text().strip():
            assert proc.poll() is None, proc.stdout.read()
            assert time.monotonic() < deadline, "training did not start"
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, out
    assert "SIGTERM received" in out and "Continue with: pcgan train" in out
    state = ckpt.load_training_state(run)
    assert state["images_seen"] == round(stats(run)[-1]["kimg"] * 1000) > 0
    assert ckpt.find_snapshots(run)[-1][0] == state["images_seen"]


def test_training_needs_no_open3d_trimesh_or_lpips(data16, tmp_path):
    # A GPU host may have only torch (+ numpy, plyfile, PIL, yaml, tqdm): block the rest.
    script = (
        "import sys\n"
        "for m in ('open3d', 'trimesh', 'lpips', 'scipy', 'imageio'):\n"
        "    sys.modules[m] = None\n"
        "from pcgan.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n")
    cmd = [sys.executable, "-c", script, "train", "--data", str(data16), "--out", str(tmp_path / "run"),
           "--device", "cpu", "--kimg", "0.008"] + [f"--set={s}" for s in TINY]
    proc = subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "run" / "fakes000000.png").is_file() and ckpt.find_snapshots(tmp_path / "run")


def test_a_run_from_before_xyz_on_rays_d_normals_and_g_composite_resumes_with_them_off(data16, tmp_path):
    run = tmp_path / "old"
    options = ("xyz_on_rays", "d_normals", "g_composite")
    flags = [f"--set={s}" for s in TINY + [f"model.{o}=false" for o in options]]
    assert main(["train", "--data", str(data16), "--out", str(run), "--kimg", "0.008", "--device", "cpu"] + flags) == 0
    state = torch.load(run / "training-state.pt", weights_only=False)
    for option in options:
        del state["config"]["model"][option]                                              # as saved before
    torch.save(state, run / "training-state.pt")
    assert main(["train", "--data", str(data16), "--out", str(run), "--kimg", "0.016", "--device", "cpu"]) == 0
    G, _, info = ckpt.load_generator(run)
    assert info["images_seen"] == 16 and "camera" not in G.init_kwargs and "background" not in G.init_kwargs
    resumed = load_config(run / "config.yaml").model
    assert resumed.xyz_on_rays is False and resumed.d_normals is False and resumed.g_composite is False
    assert "normals_pixel_size" not in ckpt.load_training_state(run)["modules"]["D"]["init_kwargs"]


def test_new_runs_generate_points_on_the_dataset_camera_rays(data16, tmp_path):
    run = tmp_path / "rays"
    loop.train(tiny_cfg("train.kimg=0.008", "model.g_composite=true", "model.g_mask_tanh=3"), data16, run, device="cpu")
    G, meta, _ = ckpt.load_generator(run)
    assert G.init_kwargs["camera"] == meta.camera.to_dict()
    assert G.init_kwargs["mask_tanh"] == 3.0                       # and its mask stays within +-1
    img = G(torch.randn(2, G.z_dim))
    assert pixel_offsets(img, meta.camera).max() < 1e-3
    # with model.g_composite their empty pixels hold the dataset's own background
    assert G.init_kwargs["background"]["sheet_z"] == meta.sheet_z
    empty = img[:, 6] <= 0
    assert bool(empty.any()) and bool((img[:, 2][empty] == meta.sheet_z).all())
    assert float(img[:, 6].abs().max()) <= 1


def test_resume_on_a_dataset_with_another_sheet_warns(caplog):
    old, new = GridMeta(resolution=16), GridMeta(resolution=16, sheet_z=-0.5)
    with caplog.at_level("WARNING", logger="pcgan"):
        loop.check_resume(new, {"grid_meta": old.to_dict(), "path": "run/training-state.pt"}, Path("ds"))
    assert "sheet at z = -0.5 but the checkpoint was trained with z = -1.5" in caplog.text
    assert "--sheet-z -1.5" in caplog.text

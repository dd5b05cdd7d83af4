"""pcgan demo: a tiny end-to-end run (16x16 grids, a dozen faces, seconds of training) leaves
every artefact a user is told about, readable, and a re-run continues instead of starting over."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from plyfile import PlyData

from pcgan import checkpoint as ckpt
from pcgan.cli import main

FACES = 12
TINY = """\
model:
  resolution: 16
  z_dim: 16
  w_dim: 16
  channel_base: 256
  channel_max: 32
  mapping:
    layers: 2
  d_mapping_layers: 1
train:
  kimg: 1000
  batch: 4
  tick_kimg: 0.02
  snapshot_ticks: 2
  preview_ticks: 2
  preview_grids: 4
  preview_ply: 1
  pl_weight: 0.0
  ema_kimg: 0.01
  workers: 0
  metrics: []
augment:
  mode: "off"
"""


def run_demo(out: Path, config: Path, *extra: str) -> tuple[int, str, str]:
    stdout, stderr = io.StringIO(), io.StringIO()
    argv = ["demo", "--out", str(out), "--config", str(config), "--faces", str(FACES), "--samples", "3",
            "--size", "48", "--threads", "1", *extra]
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = main(argv)
    return code, stdout.getvalue(), stderr.getvalue()


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    config = root / "tiny.yaml"
    config.write_text(TINY)
    old = torch.get_num_threads()
    code, out, err = run_demo(root / "out", config, "--minutes", "0.05")
    torch.set_num_threads(old)
    assert code == 0, err[-2000:]
    return {"out": root / "out", "config": config, "stdout": out}


def test_every_artefact_exists_and_reads_back(demo):
    out = demo["out"]
    assert len(list((out / "scans").glob("face_*.ply"))) + len(list((out / "scans").glob("face_*.obj"))) == FACES
    grids = np.load(out / "dataset" / "grids.npy", mmap_mode="r")
    assert grids.shape == (FACES, 7, 16, 16)
    info = json.loads((out / "dataset" / "dataset.json").read_text())
    assert len(info["split"]["val"]) >= 2

    run = out / "run"
    assert ckpt.find_snapshots(run) and (run / "training-state.pt").is_file()
    assert (run / "fakes000000.png").is_file() and (run / "stats.jsonl").is_file()

    from pcgan.export import read_point_ply
    import trimesh
    for s in range(3):
        cloud = read_point_ply(out / "faces" / f"seed{s:06d}.ply")
        assert len(cloud.points) > 0 and cloud.colors.shape == (len(cloud.points), 3)
        # back in the scans' millimetres, not the normalised [-1, 1] frame
        assert np.ptp(cloud.points[:, 1]) > 10
        # the mesh shares the cloud's vertices; a barely trained 16x16 model may give no triangles
        mesh = trimesh.load(out / "faces" / f"seed{s:06d}_mesh.ply", process=False)
        assert len(mesh.vertices) == len(cloud.points)
        assert "face" in [e.name for e in PlyData.read(str(out / "faces" / f"seed{s:06d}_mesh.ply")).elements]
        assert (out / "faces" / f"seed{s:06d}.png").is_file()

    sheet = Image.open(out / "contact_sheet.png")
    assert sheet.format == "PNG" and sheet.width >= 2 * 48 and sheet.height >= 48
    gif = Image.open(out / "turntable.gif")
    assert gif.format == "GIF" and gif.n_frames == 36


def test_metrics_compare_untrained_and_trained_on_the_same_seeds(demo):
    out = demo["out"]
    metrics = json.loads((out / "metrics.json").read_text())
    val = json.loads((out / "dataset" / "dataset.json").read_text())["split"]["val"]
    for which in ("untrained", "trained"):
        m = metrics[which]
        assert 0.0 <= m["metrics"]["1nna_cd"] <= 1.0
        assert m["num_gen"] == len(val) and m["num_real"] == len(val)
        assert m["generator"]["seeds"] == f"0-{len(val) - 1}"
    summary = json.loads((out / "demo-summary.json").read_text())
    assert summary["metrics"]["untrained"]["1nna_cd"] == metrics["untrained"]["metrics"]["1nna_cd"]
    assert summary["metrics"]["trained"]["1nna_cd"] == metrics["trained"]["metrics"]["1nna_cd"]
    assert set(summary["stage_s"]) == {"scans", "dataset", "train", "generate", "pictures", "metrics", "summary"}
    assert summary["training"]["kimg"] > 0


def test_summary_ends_with_the_view_command_for_a_written_file(demo):
    text = demo["stdout"]
    for k in range(1, 8):
        assert f"== [{k}/7]" in text
    line = next(ln for ln in text.splitlines() if ln.strip().startswith("pcgan view "))
    for path in line.split()[2:]:
        assert Path(path).is_file(), path


def test_untrained_baseline_is_the_runs_own_starting_point(demo, tmp_path, monkeypatch):
    """untrained.pt, rebuilt from the run's seed, is the G_ema that a fresh run starts from: its
    faces equal the kimg-0 preview grids of a new run with the same config."""
    from pcgan.config import load_config
    from pcgan.networks import z_from_seeds
    from pcgan.training import loop

    first = []
    write = loop.write_grid_previews

    def spy(grids, meta, png, *args, **kwargs):
        if Path(png).name.startswith("fakes") and not first:
            first.append(grids.detach().clone())                    # [4, C, 16, 16] at kimg 0
        return write(grids, meta, png, *args, **kwargs)

    monkeypatch.setattr(loop, "write_grid_previews", spy)
    loop.train(load_config(demo["config"], ["train.kimg=0.004"]), demo["out"] / "dataset", tmp_path / "run",
               device="cpu")
    G, meta, info = ckpt.load_generator(demo["out"] / "untrained.pt")
    assert info["kimg"] == 0
    with torch.no_grad():
        ours = G(z_from_seeds(range(4), G.z_dim), noise_mode="const")
    assert first and torch.allclose(ours, first[0], atol=1e-5)


def test_rerun_reuses_scans_and_dataset_and_continues_training(demo):
    out = demo["out"]
    before = json.loads((out / "demo-summary.json").read_text())["training"]["kimg"]
    grids_mtime = (out / "dataset" / "grids.npy").stat().st_mtime_ns
    code, text, err = run_demo(out, demo["config"], "--minutes", "0.02")
    assert code == 0, err[-2000:]
    assert "reused 12 scans" in text and "reused 12 grids" in text
    assert (out / "dataset" / "grids.npy").stat().st_mtime_ns == grids_mtime
    assert "resuming from" in (out / "run" / "log.txt").read_text()
    after = json.loads((out / "demo-summary.json").read_text())["training"]["kimg"]
    assert after > before


def test_a_different_face_count_is_refused_before_any_work(demo, capsys):
    code = main(["demo", "--out", str(demo["out"]), "--config", str(demo["config"]), "--faces", "20",
                 "--minutes", "0"])
    assert code == 2
    assert "--faces 20" in capsys.readouterr().err


def test_minutes_zero_remakes_the_outputs_without_training(demo):
    out = demo["out"]
    before = json.loads((out / "demo-summary.json").read_text())["snapshot"]
    (out / "contact_sheet.png").unlink()
    code, text, err = run_demo(out, demo["config"], "--minutes", "0")
    assert code == 0, err[-2000:]
    summary = json.loads((out / "demo-summary.json").read_text())
    assert summary["snapshot"] == before and "skipped (--minutes 0)" in text
    assert (out / "contact_sheet.png").is_file()


def test_auto_threads_leaves_busy_cores_to_their_processes(monkeypatch):
    from pcgan import demo_cli

    monkeypatch.setattr(demo_cli.os, "cpu_count", lambda: 2)
    assert demo_cli.auto_threads(0.0) == 2            # an idle machine: both cores
    assert demo_cli.auto_threads(0.4) == 2
    assert demo_cli.auto_threads(0.6) == 1            # one core mostly busy elsewhere
    assert demo_cli.auto_threads(5.0) == 1            # never fewer than one
    monkeypatch.setattr(demo_cli.os, "getloadavg", lambda: (1.7, 1.0, 1.0))
    assert demo_cli.load_average() == 1.7
    assert demo_cli.auto_threads(demo_cli.load_average()) == 1

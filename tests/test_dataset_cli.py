"""data_tools/dataset_cli.py: `pcgan dataset info|validate|preview`."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from conftest import sphere_grid
from data_tools.dataset_cli import contact_sheet
from pcgan.cli import main
from pcgan.dataset import make_split, write_dataset
from pcgan.grid import GridMeta, empty_grid


@pytest.fixture
def dataset(tmp_path):
    meta = GridMeta(resolution=16, scale=120.0, units="mm")
    grids = np.stack([sphere_grid(meta, radius=0.4 + 0.1 * i) for i in range(3)])
    files = [{"path": f"s{i}.ply", "status": "ok", "index": i, "to_canonical": np.eye(4).tolist(),
              "warnings": []} for i in range(3)]
    files.append({"path": "bad.ply", "status": "failed", "index": None, "error": "bad.ply: not a PLY file",
                  "to_canonical": None, "warnings": []})
    write_dataset(tmp_path / "ds", grids, meta, {"files": files, "split": make_split(3, 0.34)})
    return tmp_path / "ds"


def dataset_cli(capsys, *args):
    rc = main(["dataset", *map(str, args)])
    out, err = capsys.readouterr()
    return rc, out, err


def test_info_prints_shape_channels_stats_and_failures(dataset, capsys):
    rc, out, _ = dataset_cli(capsys, "info", dataset)
    assert rc == 0
    assert "[3, 7, 16, 16] float16" in out and "x y z r g b mask" in out
    assert "NaN/Inf values 0" in out and "empty grids 0" in out
    assert "3 ok, 1 failed" in out and "bad.ply: not a PLY file" in out
    assert "2 train, 1 val" in out and "/ 120" in out
    rc, out, _ = dataset_cli(capsys, "info", dataset, "--json")
    report = json.loads(out)
    assert report["shape"] == [3, 7, 16, 16] and report["stats"]["mean"][6] == 1.0     # mask on surface
    assert report["files"] == {"total": 4, "ok": 3, "failed": 1, "warnings": 0}


def test_validate_exits_0_on_a_good_dataset_and_1_with_reasons(dataset, capsys):
    rc, out, _ = dataset_cli(capsys, "validate", dataset)
    assert rc == 0 and out.startswith("ok")
    grids = np.load(dataset / "grids.npy")
    grids[1] = empty_grid(GridMeta(resolution=16))
    grids[2, 0, 3, 3] = np.nan
    np.save(dataset / "grids.npy", grids)
    rc, out, _ = dataset_cli(capsys, "validate", dataset)
    assert rc == 1 and "NaN" in out and "no surface pixel" in out
    (dataset / "dataset.json").write_text("{broken")
    rc, out, _ = dataset_cli(capsys, "validate", dataset)
    assert rc == 1 and "not valid JSON" in out


def test_info_on_something_that_is_not_a_dataset_is_a_clear_error(tmp_path, capsys):
    rc, _, err = dataset_cli(capsys, "info", tmp_path / "nothing")
    assert rc == 2 and "does not exist" in err


def test_preview_writes_a_contact_sheet(dataset, capsys, tmp_path):
    rc, out, _ = dataset_cli(capsys, "preview", dataset, "--count", "2", "--out", tmp_path / "p.png")
    assert rc == 0 and "2 grids" in out
    img = np.asarray(Image.open(tmp_path / "p.png"))
    assert img.shape == (2 * 16 + 4, 3 * 16 + 2 * 4, 3)                  # 2 rows of colour | depth | normals
    # depth tile: the sphere's nearest point (its centre) is the brightest
    depth = img[:16, 16 + 4:2 * 16 + 4, 0]
    assert np.unravel_index(depth.argmax(), depth.shape) in [(7, 7), (7, 8), (8, 7), (8, 8)]
    assert depth[0, 0] == 0                                               # background is black


def test_contact_sheet_uses_blocks_of_four_rows():
    meta = GridMeta(resolution=8)
    grids = np.stack([sphere_grid(meta)] * 6)
    sheet = contact_sheet(grids, meta, count=6)
    assert sheet.shape == (4 * 8 + 3 * 4, 2 * (3 * 8 + 3 * 4) - 4, 3)

"""pcgan/dataset.py: writing, reading and validating a dataset directory."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import sphere_grid
from pcgan.dataset import (GRIDS_FILE, INFO_FILE, channel_stats, load_dataset, make_split,
                           validate_dataset, write_dataset)
from pcgan.errors import PcganError
from pcgan.grid import empty_grid


def _grids(meta, n=4):
    return np.stack([sphere_grid(meta, radius=0.3 + 0.1 * i) for i in range(n)])


def test_write_then_load_round_trips_as_float16_memmap(tmp_path, meta16):
    grids = _grids(meta16)
    files = [{"path": f"s{i}.ply", "status": "ok", "index": i, "to_canonical": np.eye(4).tolist()}
             for i in range(4)]
    write_dataset(tmp_path / "ds", grids, meta16, {"files": files, "split": make_split(4, 0.25)})
    ds = load_dataset(tmp_path / "ds")
    assert isinstance(ds.grids, np.memmap) and ds.grids.dtype == np.float16
    assert ds.meta == meta16 and len(ds) == 4
    assert np.allclose(ds.grids, grids, atol=2e-3)
    assert len(ds.split("val")) == 1 and len(ds.split("train")) == 3
    assert np.array_equal(ds.source_transform(2), np.eye(4))
    assert validate_dataset(tmp_path / "ds") == []
    assert not list((tmp_path / "ds").glob(".*"))              # no temporary files left behind


def test_stats_cover_surface_pixels_only(meta16):
    grids = np.stack([sphere_grid(meta16), empty_grid(meta16)])
    stats = channel_stats(grids, meta16)
    assert stats["empty_grids"] == 1 and stats["nan_values"] == 0
    assert stats["mean"][6] == 1.0                              # mask is +1 on every surface pixel
    assert 0 < stats["surface_fraction"] < 0.5


def test_validate_reports_nan_and_empty_grids(tmp_path, meta16):
    grids = _grids(meta16, 3)
    grids[1] = empty_grid(meta16)
    grids[2, 0, 8, 8] = np.nan
    write_dataset(tmp_path / "bad", grids, meta16, {})
    problems = validate_dataset(tmp_path / "bad")
    assert any("NaN" in p for p in problems) and any("no surface" in p for p in problems)


def test_loading_a_broken_dataset_names_the_file(tmp_path, meta16):
    with pytest.raises(PcganError, match="does not exist"):
        load_dataset(tmp_path / "missing")
    write_dataset(tmp_path / "ds", _grids(meta16, 2), meta16, {})
    info = json.loads((tmp_path / "ds" / INFO_FILE).read_text())
    info["num_grids"] = 5
    (tmp_path / "ds" / INFO_FILE).write_text(json.dumps(info))
    with pytest.raises(PcganError, match="grids.npy: shape"):
        load_dataset(tmp_path / "ds")
    (tmp_path / "ds" / GRIDS_FILE).write_bytes(b"not numpy")
    with pytest.raises(PcganError, match="cannot read"):
        load_dataset(tmp_path / "ds")


def test_split_is_deterministic_and_disjoint():
    a, b = make_split(50, 0.2, seed=3), make_split(50, 0.2, seed=3)
    assert a == b and len(a["val"]) == 10
    assert not set(a["train"]) & set(a["val"]) and len(a["train"]) + len(a["val"]) == 50


def test_atomic_writes_get_normal_file_permissions(tmp_path):
    import os
    from pcgan.fileio import write_json
    write_json(tmp_path / "a.json", {"k": 1})
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o666 & ~umask


def test_npy_files_open_memory_mapped_and_bad_ones_fail_in_one_line(tmp_path):
    from pcgan.dataset import load_grids_npy, open_npy

    np.save(tmp_path / "one.npy", np.zeros((7, 8, 8), np.float16))
    np.save(tmp_path / "pts.npy", np.zeros((5, 3), np.float32))
    assert open_npy(tmp_path / "one.npy").shape == (1, 7, 8, 8)                 # one grid gets a batch axis
    assert isinstance(open_npy(tmp_path / "one.npy").base, np.memmap)
    assert open_npy(tmp_path / "pts.npy").shape == (5, 3)                      # other shapes as stored
    (tmp_path / "cut.npy").write_bytes((tmp_path / "one.npy").read_bytes()[:90])
    with pytest.raises(PcganError, match=r"^--fakes cut: cannot read as \.npy \("):
        load_grids_npy(tmp_path / "cut.npy", "--fakes cut")
    with pytest.raises(PcganError, match=r"cut\.npy: cannot read as \.npy"):
        open_npy(tmp_path / "cut.npy")
    with pytest.raises(PcganError, match=r"shape \[5, 3\], expected grids"):
        load_grids_npy(tmp_path / "pts.npy")


"""Snapshot metrics in the training loop (train.metrics): written at each snapshot, off with [],
never a change to training itself, never a crash for a metric this host cannot run."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from pcgan.cli import main
from pcgan.training import loop
from test_training import LOSS_KEYS, TINY, make_dataset, stats, tiny_cfg


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data16(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("data") / "ds16")


def jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_metrics_at_each_snapshot_and_none_with_an_empty_list(data16, tmp_path):
    on, off = tmp_path / "on", tmp_path / "off"
    loop.train(tiny_cfg("train.kimg=0.008", "train.snapshot_ticks=1", "train.metrics=[mmd_cd,cov_cd,1nna_cd]",
                        "train.metrics_points=64"), data16, on, device="cpu")
    assert main(["train", "--data", str(data16), "--out", str(off), "--device", "cpu", "--kimg", "0.008",
                 "--set", "train.snapshot_ticks=1", "--set", "train.metrics=[]"] + [f"--set={s}" for s in TINY]) == 0
    # one row per snapshot (ticks at 4 and 8 grids) in metric-<name>.jsonl
    for name in ("mmd_cd", "cov_cd", "1nna_cd"):
        rows = jsonl(on / f"metric-{name}.jsonl")
        assert [r["kimg"] for r in rows] == [0.004, 0.008] and all(r["metric"] == name for r in rows)
        assert rows[0]["points"] == 64 and rows[0]["num_gen"] == rows[0]["num_real"] == 12   # all 12 rows: val has 1
        assert rows[0]["protocol"] == "global" and rows[0]["snapshot"] == "network-snapshot-000000.pt"
    cov = jsonl(on / "metric-cov_cd.jsonl")[-1]["results"]["cov_cd"]
    assert 0 < cov <= 1
    # the tick rows (and so TensorBoard) carry them under Metrics/
    a, b = stats(on), stats(off)
    assert [r["Metrics/cov_cd"] for r in a] == [r["results"]["cov_cd"] for r in jsonl(on / "metric-cov_cd.jsonl")]
    assert not list(off.glob("metric-*.jsonl")) and not any(k.startswith("Metrics/") for r in b for k in r)
    # evaluating drew nothing from the training random streams: the losses are the same
    for ra, rb in zip(a, b, strict=True):
        for key in LOSS_KEYS:
            assert ra.get(key) == rb.get(key), (ra["step"], key)


def test_a_metric_this_host_cannot_run_is_dropped_with_one_warning(data16, tmp_path, monkeypatch, caplog):
    empty = tmp_path / "empty"
    empty.mkdir()
    for var in ("PCGAN_WEIGHTS", "XDG_CACHE_HOME", "TORCH_HOME"):   # no Inception weights anywhere
        monkeypatch.setenv(var, str(empty))
    run = tmp_path / "run"
    with caplog.at_level(logging.WARNING, logger="pcgan.evaluation"):
        result = loop.train(tiny_cfg("train.kimg=0.012", "train.snapshot_ticks=1", "train.metrics=[fid,mmd_cd]",
                                     "train.metrics_points=32"), data16, run, device="cpu")
    assert result.status == "done"
    dropped = [r.getMessage() for r in caplog.records if "fid cannot run here" in r.getMessage()]
    assert len(dropped) == 1 and "inception_fid.pt" in dropped[0]          # once, not at every snapshot
    assert len(jsonl(run / "metric-mmd_cd.jsonl")) == 3 and not (run / "metric-fid.jsonl").exists()


def test_unknown_or_too_big_metrics_fail_at_config_load(data16, tmp_path, capsys):
    assert main(["train", "--data", str(data16), "--out", str(tmp_path / "r"), "--set", "train.metrics=[mmd_cdd]",
                 "--dry-run"]) == 2
    assert "train.metrics: unknown metric 'mmd_cdd'" in capsys.readouterr().err
    assert main(["train", "--data", str(data16), "--out", str(tmp_path / "r"), "--set", "train.metrics=[fid50k_full]",
                 "--dry-run"]) == 2
    assert "more generated grids than train.metrics_num 64" in capsys.readouterr().err

"""Data-parallel training on CPU: 2 processes over gloo (as torchrun would start them)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import torch
import torch.multiprocessing as mp

from test_training import TINY, make_dataset

from pcgan.training.distributed import strip_gpus_flag, torchrun_command


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, tmp: str, data: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    from pcgan.config import load_config
    from pcgan.training import distributed as dist
    from pcgan.training import loop

    env = dist.init_distributed("cpu")
    out = {"env": (env.rank, env.world_size)}
    # gradient averaging: grads rank + 1 average to 1.5; a missing grad stays missing
    a, b = torch.nn.Parameter(torch.zeros(3)), torch.nn.Parameter(torch.zeros(2))
    a.grad = torch.full([3], rank + 1.0)
    dist.average_gradients([a, b])
    out["avg"], out["none_stays_none"] = a.grad.tolist(), b.grad is None
    m = torch.nn.Linear(2, 2)
    torch.nn.init.constant_(m.weight, float(rank))
    dist.broadcast_module(m)
    out["broadcast"] = m.weight.flatten().tolist()
    out["any"] = dist.any_rank(rank == 1, torch.device("cpu"))
    out["gather"] = [t.item() for t in dist.gather_tensors(torch.tensor([rank * 10]))]

    class Capture(loop.Observer):
        def start(self, info):
            out["info"] = info

        def finish(self, modules):
            out["params"] = {k: torch.cat([p.detach().flatten() for p in v.parameters()]) for k, v in modules.items()}
            out["w_avg"] = modules["G"].mapping.w_avg.clone()

    cfg = load_config(None, TINY + ["train.kimg=0.024", "train.snapshot_ticks=3"])  # 6 steps of 4 = 2 per rank
    result = loop.train(cfg, data, Path(tmp) / "run", device="cpu", observer=Capture())
    out["images_seen"] = result.images_seen
    torch.save(out, Path(tmp) / f"rank{rank}.pt")
    dist.shutdown()


def test_two_cpu_processes_stay_identical(tmp_path):
    data = make_dataset(tmp_path / "ds")
    mp.start_processes(_worker, args=(2, _free_port(), str(tmp_path), str(data)), nprocs=2, start_method="spawn")
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert r0["env"] == (0, 2) and r1["env"] == (1, 2)
    assert r0["avg"] == r1["avg"] == [1.5] * 3 and r0["none_stays_none"]
    assert r0["broadcast"] == r1["broadcast"] == [0.0] * 4  # rank 0's weights everywhere
    assert r0["any"] and r1["any"] and r0["gather"] == r1["gather"] == [0, 10]
    # the global batch of 4 is split 2 + 2, and after 6 steps every rank holds the same networks
    assert r0["info"]["batch_gpu"] == r1["info"]["batch_gpu"] == 2 and r0["info"]["world_size"] == 2
    assert r0["images_seen"] == r1["images_seen"] == 24
    for name in ("G", "D", "G_ema"):
        assert torch.equal(r0["params"][name], r1["params"][name]), name
    assert torch.equal(r0["w_avg"], r1["w_avg"])
    # ...which are the ones rank 0 saved; only rank 0 wrote files
    from pcgan import checkpoint as ckpt
    state = ckpt.load_training_state(tmp_path / "run")
    G = torch.cat([t.flatten() for k, t in state["modules"]["G"]["state_dict"].items()
                   if not k.endswith(("noise_const", "w_avg"))])
    assert torch.equal(G, r0["params"]["G"])
    assert len(state["extra"]["rng"]["cpu"]) == 2  # each rank's RNG, for an exact resume
    rows = [json.loads(line) for line in (tmp_path / "run" / "stats.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 7))


def test_gpus_flag_launches_torchrun_without_itself():
    argv = ["--data", "d", "--gpus", "2", "--out", "r", "--gpus=3"]
    assert strip_gpus_flag(argv) == ["--data", "d", "--out", "r"]
    cmd = torchrun_command(2, argv)
    assert cmd[:6] == [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m"]
    assert cmd[6:] == ["pcgan", "train", "--data", "d", "--out", "r"]


def test_cli_gpus_2_on_cpu_runs_two_gloo_processes(tmp_path):
    data = make_dataset(tmp_path / "ds")
    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "pcgan", "train", "--data", str(data), "--out", str(run), "--device", "cpu",
           "--gpus", "2", "--kimg", "0.008"] + [f"--set={s}" for s in TINY]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = (run / "log.txt").read_text()
    assert "training on cpu x2" in log and log.count("tick 2") == 1  # rank 0 logs, once
    assert (run / "training-state.pt").is_file()

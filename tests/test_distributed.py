"""DDP on CPU over gloo: spawn and torchrun give the predictions of one process; ranks stay in step;
a failing rank stops the whole job."""
from __future__ import annotations

import csv
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel

from conftest import ROOT
from PromptIQA.commands import score as score_cli
from PromptIQA.commands import train
from PromptIQA.commands.common import run_main
from PromptIQA.data.loader import train_loader
from PromptIQA.distributed import all_gather_objects, cleanup, init_distributed, sync_buffers
from PromptIQA.engine import train_one_epoch
from PromptIQA.models import ModelConfig, PromptIQA
from PromptIQA.runlog import RunLog
from PromptIQA.training import open_datasets, read_datasets
from training_fixtures import free_port, training_args, write_training_data


TIMEOUT = 300


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_training_data(tmp_path_factory.mktemp("data"))


def predictions(path) -> dict[str, float]:
    with open(path) as f:
        return {row["path"]: float(row["prediction"]) for row in csv.DictReader(f)}


def assert_matches_single_process_evaluation(run, data, tmp_path):
    argv = ["--checkpoint", str(run / "last.pth.tar"), "--dataset-info", str(data), "--dataset", "set_a", "set_b",
            "--device", "cpu", "--cache-dir", "none", "--save-dir", str(tmp_path / "single")]
    assert run_main(score_cli.main, argv) == 0
    for name in ("set_a", "set_b"):
        ddp = predictions(run / f"predictions_{name}.csv")
        single = predictions(tmp_path / "single" / f"predictions_{name}.csv")
        assert list(ddp) == list(single)  # every test image once, in order
        np.testing.assert_allclose(list(ddp.values()), list(single.values()), atol=1e-5)


def run_command(command, tmp_path):
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_spawned_gloo_processes(data, tmp_path):
    run = tmp_path / "spawn"
    url = f"tcp://127.0.0.1:{free_port()}"
    run_command([sys.executable, "train.py", *training_args(data, run, "--epochs", "1"),
                 "--multiprocessing-distributed", "--nproc-per-node", "2", "--dist-url", url], tmp_path)
    assert '"world_size": 2' in (run / "environment.json").read_text()
    assert_matches_single_process_evaluation(run, data, tmp_path)


def test_torchrun(data, tmp_path):
    run = tmp_path / "torchrun"
    run_command([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port",
                 str(free_port()), "train.py", *training_args(data, run, "--epochs", "1")], tmp_path)
    assert '"world_size": 2' in (run / "environment.json").read_text()
    assert_matches_single_process_evaluation(run, data, tmp_path)


def _train_and_compare(rank: int, port: int, info: str, out: str) -> None:
    ctx = init_distributed(rank, 2, 0, 2, torch.device("cpu"), f"tcp://127.0.0.1:{port}", None, 120)
    torch.manual_seed(rank)  # different initial weights: DDP must start both from rank 0's
    model = PromptIQA(ModelConfig("vit_tiny_patch16_224", 32))
    records = read_datasets(["set_a", "set_b"], info)
    datasets = open_datasets(records, 32, 7, None, 0, "fail", ctx, rank, RunLog(out, False))
    ddp = DistributedDataParallel(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loader = train_loader(datasets, 2, 7, 0, rank, 2, 0)
    first_batch = next(iter(loader))[0]
    train_one_epoch(ddp, loader, optimizer, 0, datasets, ctx, 0.5, 0.1, torch.Generator().manual_seed(rank))
    sync_buffers(model, ctx)
    weights = torch.cat([p.detach().flatten() for p in model.state_dict().values() if p.is_floating_point()])
    gathered = all_gather_objects((weights, first_batch), ctx)
    cleanup(ctx)
    assert torch.equal(gathered[0][0], gathered[1][0]), "ranks diverged"
    assert not torch.equal(gathered[0][1], gathered[1][1]), "ranks saw the same images"


def test_parameters_are_identical_on_all_ranks_after_training(data, tmp_path):
    mp.spawn(_train_and_compare, nprocs=2, args=(free_port(), str(data), str(tmp_path)))


def test_a_failing_rank_stops_the_job(data, tmp_path):
    broken = tmp_path / "data"
    shutil.copytree(data.parent, broken, ignore=shutil.ignore_patterns("cache"))
    (broken / "set_a" / "img05.png").write_bytes(b"\x89PNG garbage, not an image")
    info = broken / "dataset_info.json"
    info.write_text(info.read_text().replace(str(data.parent), str(broken)))
    command = [sys.executable, "train.py", *training_args(info, tmp_path / "run", "--epochs", "1"),
               "--cache-dir", "none", "--multiprocessing-distributed", "--nproc-per-node", "2",
               "--dist-url", f"tcp://127.0.0.1:{free_port()}", "--dist-timeout", "60"]
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode != 0
    assert "dataset set_a" in proc.stderr and "img05.png" in proc.stderr

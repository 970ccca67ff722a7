"""DDP on CPU over gloo: spawn and torchrun record the same topology and give the predictions of one
process; ranks stay in step; a failing rank stops the whole job with the worker's own error."""
from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from conftest import ROOT
from torch.nn.parallel import DistributedDataParallel
from training_fixtures import free_port, training_args, write_training_data

from PromptIQA.commands import score as score_cli
from PromptIQA.commands.common import run_main
from PromptIQA.data.prepare import read_datasets
from PromptIQA.training.config import TrainConfig
from PromptIQA.training.launch import Topology, init_distributed
from PromptIQA.training.loop import train_one_epoch
from PromptIQA.training.run import start_run
from PromptIQA.training.run_folder import RunLog
from PromptIQA.utils.distributed import all_gather_objects, cleanup, sync_buffers

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


def assert_records_two_processes(run, launcher):
    topology = {"launcher": launcher, "nodes": 1, "procs_per_node": 2, "world_size": 2, "backend": "gloo"}
    saved = json.loads((run / "args.json").read_text())
    assert saved["topology"] == topology and saved["model"]["prompt_num"] == 1  # groups of 4 / 2 images
    assert json.loads((run / "environment.json").read_text())["topology"] == topology
    assert torch.load(run / "last.pth.tar", weights_only=True)["topology"] == topology


def run_command(command, tmp_path):
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.mark.slow
def test_spawned_gloo_processes(data, tmp_path):
    run = tmp_path / "spawn"
    url = f"tcp://127.0.0.1:{free_port()}"
    run_command([sys.executable, "train.py", *training_args(data, run, "--epochs", "1"),
                 "--multiprocessing-distributed", "--cpu-processes", "2", "--dist-url", url], tmp_path)
    assert_records_two_processes(run, "spawn")
    assert_matches_single_process_evaluation(run, data, tmp_path)


@pytest.mark.slow
def test_torchrun(data, tmp_path):
    run = tmp_path / "torchrun"
    run_command([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port",
                 str(free_port()), "train.py", *training_args(data, run, "--epochs", "1")], tmp_path)
    assert_records_two_processes(run, "torchrun")
    assert_matches_single_process_evaluation(run, data, tmp_path)


def _train_and_compare(rank: int, port: int, info: str, out: str) -> None:
    config = TrainConfig.from_flat({
        "data.datasets": ("set_a", "set_b"), "data.dataset_info": info, "data.cache_dir": "none", "data.workers": 0,
        "model.backbone": "vit_tiny_patch16_224", "model.img_size": 32, "pretrained": "none", "optim.batch_size": 4,
        "optim.lr": 1e-3, "launch.dist_url": f"tcp://127.0.0.1:{port}", "launch.dist_timeout": 120, "seed": 7,
    }).with_world_size(2)
    topology = Topology("spawn", nodes=1, procs_per_node=2, backend="gloo")
    ctx = init_distributed(rank, topology, config.launch, torch.device("cpu"))
    torch.manual_seed(rank)  # different initial weights: DDP must start both from rank 0's
    records = read_datasets(["set_a", "set_b"], info)
    run = start_run(config, topology, ctx, records, RunLog(out, False))
    assert isinstance(run.network, DistributedDataParallel)
    first_batch = next(iter(run.train_batches))[0]
    train_one_epoch(run, 0)
    sync_buffers(run.model, ctx)
    weights = torch.cat([p.detach().flatten() for p in run.model.state_dict().values() if p.is_floating_point()])
    gathered = all_gather_objects((weights, first_batch), ctx)
    cleanup(ctx)
    assert torch.equal(gathered[0][0], gathered[1][0]), "ranks diverged"
    assert not torch.equal(gathered[0][1], gathered[1][1]), "ranks saw the same images"


@pytest.mark.slow
def test_parameters_are_identical_on_all_ranks_after_training(data, tmp_path):
    mp.spawn(_train_and_compare, nprocs=2, args=(free_port(), str(data), str(tmp_path)))


@pytest.mark.slow
def test_a_failing_rank_stops_the_job(data, tmp_path):
    broken = tmp_path / "data"
    shutil.copytree(data.parent, broken, ignore=shutil.ignore_patterns("cache"))
    (broken / "set_a" / "img05.png").write_bytes(b"\x89PNG garbage, not an image")
    info = broken / "dataset_info.json"
    info.write_text(info.read_text().replace(str(data.parent), str(broken)))
    command = [sys.executable, "train.py", *training_args(info, tmp_path / "run", "--epochs", "1"),
               "--cache-dir", "none", "--multiprocessing-distributed", "--cpu-processes", "2",
               "--dist-url", f"tcp://127.0.0.1:{free_port()}", "--dist-timeout", "60"]
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode != 0
    assert f"error: dataset set_a: {broken / 'set_a' / 'img05.png'}: " in proc.stderr

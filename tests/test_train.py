"""train.py in one process: what a run leaves behind, resume, a crash between checkpoint and metrics,
the configuration from the command line, and failures caught before any work."""
from __future__ import annotations

import csv
import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import ROOT
from training_fixtures import training_args, write_training_data

from PromptIQA.commands import score as score_cli
from PromptIQA.commands import train
from PromptIQA.commands.common import run_main
from PromptIQA.data import demo as demo_data
from PromptIQA.data.prepare import open_datasets, read_datasets
from PromptIQA.models import ModelConfig
from PromptIQA.training import run as network_module
from PromptIQA.training.config import DEMO_PRESET, PUBLISHED_DATASETS, TrainConfig
from PromptIQA.training.run import NETWORK_FLAGS
from PromptIQA.training.run_folder import RunLog
from PromptIQA.utils.distributed import DistContext
from PromptIQA.utils.errors import UserError

ONE_PROCESS = {"launcher": "single", "nodes": 1, "procs_per_node": 1, "world_size": 1, "backend": None}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_training_data(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def two_epochs(data, tmp_path_factory):
    """One uninterrupted 2-epoch run, shared by the tests that read its outputs."""
    run = tmp_path_factory.mktemp("runs") / "full"
    assert run_main(train.main, training_args(data, run, "--epochs", "2")) == 0
    return run


def read_predictions(path):
    with open(path) as f:
        return {row["path"]: float(row["prediction"]) for row in csv.DictReader(f)}


def metric_keys(run):
    """(epoch, split, dataset) of every metrics.csv row."""
    with open(run / "metrics.csv") as f:
        return [(row["epoch"], row["split"], row["dataset"]) for row in csv.DictReader(f)]


def history(run):
    """metrics.jsonl without the epochs' wall times."""
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    for record in records:
        record["train"].pop("seconds")
    return records


def same_weights(run_a, run_b):
    ours = torch.load(run_a / "last.pth.tar", weights_only=True)["model"]
    theirs = torch.load(run_b / "last.pth.tar", weights_only=True)["model"]
    return ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in theirs)


EPOCH_ROWS = [("train", "all"), ("test", "set_a"), ("test", "set_b")]


def test_run_folder_holds_everything(two_epochs, data):
    names = {p.name for p in two_epochs.iterdir()}
    assert {"last.pth.tar", "best.pth.tar", "args.json", "environment.json", "train.log", "metrics.csv",
            "metrics.jsonl", "scatter_set_a.png", "predictions_set_b.csv"} <= names
    saved = json.loads((two_epochs / "args.json").read_text())
    assert saved.pop("topology") == ONE_PROCESS
    asked = train.parse_config(training_args(data, two_epochs, "--epochs", "2"))
    assert TrainConfig.from_dict(saved) == asked.with_world_size(1)
    assert saved["model"]["prompt_num"] == 3  # groups of --batch_size 4 in one process
    assert metric_keys(two_epochs) == [(str(e), *row) for e in (0, 1) for row in EPOCH_ROWS]
    records = history(two_epochs)
    assert [r["epoch"] for r in records] == [0, 1] and set(records[0]["test"]) == {"set_a", "set_b"}
    assert records[1]["lr"] == pytest.approx(1e-4 * 0.5 * (1 + np.cos(np.pi / 2)))  # half-cosine, epoch 1
    assert json.loads((two_epochs / "environment.json").read_text())["topology"] == ONE_PROCESS
    assert "set_a" in (two_epochs / "train.log").read_text()


def test_checkpoints_hold_the_run(two_epochs):
    last = torch.load(two_epochs / "last.pth.tar", map_location="cpu", weights_only=True)
    assert last["epoch"] == 2 and last["prompt_num"] == 3 and not any(k.startswith("module.") for k in last["model"])
    assert last["model_config"] == {"backbone": "vit_tiny_patch16_224", "img_size": 32, "prompt_num": 3, "cnn_dim": 384}
    assert last["topology"] == ONE_PROCESS and last["config"]["optim"]["epochs"] == 2
    for record in last["history"]:
        record["train"].pop("seconds")
    assert last["history"] == history(two_epochs)
    best = torch.load(two_epochs / "best.pth.tar", map_location="cpu", weights_only=True)
    assert best["epoch"] == last["best"]["epoch"] + 1 and best["best"] == last["best"]


def test_the_saved_model_scores_with_test_py(two_epochs, capsys):
    code = run_main(score_cli.main, ["--checkpoint", str(two_epochs / "best.pth.tar"), "--device", "cpu",
                                     "--prompts", str(ROOT / "Examples/Example1/prompts.json"),
                                     "--images", str(ROOT / "Examples/Example1/cactus.png")])
    line = capsys.readouterr().out.strip()
    assert code == 0 and line.startswith(str(ROOT / "Examples/Example1/cactus.png") + "\t")
    assert 0 <= float(line.split("\t")[1]) <= 1


def test_evaluation_mode_reproduces_the_training_evaluation(two_epochs, data, tmp_path, capsys):
    argv = ["--checkpoint", str(two_epochs / "last.pth.tar"), "--dataset-info", str(data), "--dataset", "set_a",
            "set_b", "--device", "cpu", "--cache-dir", "none", "--save-dir", str(tmp_path)]
    assert run_main(score_cli.main, argv) == 0
    assert "SRCC" in capsys.readouterr().out
    for name in ("set_a", "set_b"):
        ours = read_predictions(tmp_path / f"predictions_{name}.csv")
        theirs = read_predictions(two_epochs / f"predictions_{name}.csv")
        assert ours.keys() == theirs.keys() and np.allclose(list(ours.values()), list(theirs.values()), atol=1e-6)
    assert run_main(score_cli.main, argv + ["--reverse-prompts", "--save-dir", str(tmp_path / "rev")]) == 0
    assert run_main(score_cli.main, argv + ["--random-prompts", "--prompt-select", "random", "--prompt-num", "2"]) == 0
    assert run_main(score_cli.main, argv + ["--precision", "bf16", "--save-dir", str(tmp_path / "bf16")]) == 0
    fp32, bf16 = (read_predictions(folder / "predictions_set_a.csv") for folder in (tmp_path, tmp_path / "bf16"))
    differences = [abs(fp32[path] - bf16[path]) for path in fp32]
    assert 0 < max(differences) < 0.05  # bf16 autocast is in effect, and stays close to fp32


@pytest.mark.slow
def test_resume_continues_exactly(two_epochs, data, tmp_path):
    run = tmp_path / "resumed"
    assert run_main(train.main, training_args(data, run, "--epochs", "2", "--stop-after-epoch", "1")) == 0
    assert metric_keys(run) == [("0", *row) for row in EPOCH_ROWS]
    assert run_main(train.main, training_args(data, run, "--epochs", "2", "--resume", "auto")) == 0
    assert history(run) == history(two_epochs)
    assert same_weights(run, two_epochs)


class Crash(Exception):
    """Stands for the process dying (power cut, full disk) at a chosen point."""


def test_a_crash_between_checkpoint_and_metrics_loses_no_row_and_repeats_none(two_epochs, data, tmp_path, monkeypatch):
    write_metrics = RunLog.write_metrics
    calls = []

    def crash_the_first_time(self, records):
        calls.append(len(records))
        if len(calls) == 1:
            raise Crash
        write_metrics(self, records)

    monkeypatch.setattr(RunLog, "write_metrics", crash_the_first_time)
    run = tmp_path / "crashed"
    with pytest.raises(Crash):
        run_main(train.main, training_args(data, run, "--epochs", "2"))
    assert torch.load(run / "last.pth.tar", weights_only=True)["epoch"] == 1 and not (run / "metrics.csv").exists()
    assert run_main(train.main, training_args(data, run, "--epochs", "2", "--resume", "auto")) == 0
    assert metric_keys(run) == [(str(e), *row) for e in (0, 1) for row in EPOCH_ROWS]
    assert history(run) == history(two_epochs) and same_weights(run, two_epochs)


def test_bf16_with_gradient_checkpointing_trains_on_cpu(data, tmp_path):
    run = tmp_path / "bf16"
    argv = training_args(data, run, "--epochs", "1", "--precision", "bf16", "--grad-checkpointing")
    assert run_main(train.main, argv) == 0
    saved = json.loads((run / "args.json").read_text())["execution"]
    assert (saved["precision"], saved["grad_checkpointing"]) == ("bf16", True)
    assert "bf16 on cpu" in (run / "train.log").read_text()
    weights = torch.load(run / "last.pth.tar", weights_only=True)["model"]
    floats = [w for w in weights.values() if w.is_floating_point()]
    assert all(w.dtype == torch.float32 and torch.isfinite(w).all() for w in floats)  # fp32 weights under autocast


@pytest.mark.slow
def test_demo_runs_and_prints_the_scoring_command(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PROMPTIQA_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(demo_data, "CROPS_PER_PHOTO", 2)  # the run, not the data's size, is under test
    argv = ["--demo", "--epochs", "1", "--img-size", "32", "--batch_size", "8", "--save_path", str(tmp_path / "demo")]
    assert run_main(train.main, argv) == 0
    out = capsys.readouterr().out
    assert "demo_kadid" in out and "python test.py --checkpoint" in out
    assert (tmp_path / "demo" / "best.pth.tar").is_file()


def test_demo_is_a_preset_that_explicit_flags_override():
    demo = train.parse_config(["--demo", "--img-size", "96", "--save_path", "elsewhere"])
    assert (demo.model.img_size, demo.run.save_path) == (96, "elsewhere")
    assert demo.data.datasets == ("demo_kadid",) and demo.pretrained == "none" and demo.data.demo
    assert (demo.optim.epochs, demo.optim.batch_size, demo.execution.device) == (9, 12, "cpu")
    assert (demo.optim.lr, demo.optim.random_flipping_rate) == (1e-4, 0.3)
    assert (demo.model.backbone, demo.model.cnn_dim) == ("resnet10t", 192)
    flipped = train.parse_config(["--demo", "--random_flipping_rate", "0.5", "--dataset", "demo_csiq"])
    assert (flipped.optim.random_flipping_rate, flipped.data.datasets) == (0.5, ("demo_csiq",))
    published = train.parse_config([])
    assert published.data.datasets == PUBLISHED_DATASETS and not published.data.demo
    assert (published.model.img_size, published.optim.batch_size, published.optim.epochs) == (224, 44, 50)
    optim = published.optim
    assert (optim.lr, optim.weight_decay, optim.random_scale_rate, optim.random_flipping_rate) == (1e-5, 1e-5, 0.5, 0.1)
    assert set(DEMO_PRESET) <= {f"{section}.{name}" for section, part in published.to_dict().items()
                                if isinstance(part, dict) for name in part} | {"pretrained"}


def test_every_flag_takes_both_spellings():
    underscores = ["--batch_size", "8", "--weight_decay", "0", "--random_flipping_rate", "0.2", "--random_scale_rate",
                   "0", "--save_path", "x", "--img_size", "64", "--eval_batch_size", "3", "--stop_after_epoch", "2",
                   "--dataset_info", "info.json", "--cache_dir", "none", "--on_bad_image", "skip", "--cpu_processes",
                   "2", "--dist_timeout", "5", "--grad_checkpointing", "--multiprocessing_distributed", "--dist_url",
                   "tcp://1.2.3.4:5", "--world_size", "2", "--node_rank", "1"]
    dashes = [a.replace("_", "-") if a.startswith("--") else a for a in underscores]
    config = train.parse_config(dashes)
    assert train.parse_config(underscores) == config
    assert (config.optim.batch_size, config.optim.weight_decay, config.model.img_size) == (8, 0, 64)
    assert (config.data.cache_dir, config.data.on_bad_image, config.data.eval_batch_size) == ("none", "skip", 3)
    assert (config.launch.cpu_processes, config.launch.nodes, config.launch.node_rank) == (2, 2, 1)
    assert config.execution.grad_checkpointing and config.run.stop_after_epoch == 2


def published_command_line() -> list[str]:
    """The flags train.sh passes to train.py, with its variables filled in."""
    script = (ROOT / "train.sh").read_text()
    datasets = re.search(r'^DATASETS="(.*)"', script, re.M).group(1)
    command = re.search(r"python train.py \\\n((?:.*\\\n)*.*)", script).group(1)
    return command.replace("\\\n", " ").replace("$DATASETS", datasets).split()


def test_the_published_command_line_is_accepted():
    config = train.parse_config(published_command_line())
    assert config.data.datasets == PUBLISHED_DATASETS and config.optim.batch_size == 44
    assert (config.launch.multiprocessing_distributed, config.launch.nodes, config.launch.node_rank) == (True, 1, 0)
    assert (config.launch.dist_backend, config.run.resume) == ("nccl", "auto")
    assert train.parse_config(["--gpu", "1"]).execution.device == "cuda:1"


@pytest.mark.parametrize("argv", [["--model", "promptiqa"], ["--nproc-per-node", "2"], ["--epochz", "3"]],
                         ids=["model-is-gone", "no-torchrun-lookalike", "typo"])
def test_unknown_flags_fail(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        train.main(argv)
    assert exit_info.value.code == 2 and f"unrecognized arguments: {argv[0]}" in capsys.readouterr().err


BAD_VALUES = [
    (["--eval-batch-size", "0"], "--eval-batch-size 0"),
    (["--workers", "-1"], "--workers -1"),
    (["--img-size", "8"], "--img-size 8"),
    (["--cnn-dim", "0"], "--cnn-dim 0"),
    (["--lr", "nan"], "--lr nan"),
    (["--lr", "0"], "--lr 0"),
    (["--weight_decay", "inf"], "--weight_decay inf"),
    (["--random_scale_rate", "1.5"], "--random_scale_rate 1.5"),
    (["--random_flipping_rate", "-0.1"], "--random_flipping_rate -0.1"),
    (["--epochs", "0"], "--epochs 0"),
    (["--batch_size", "1"], "--batch_size 1"),
    (["--batch_size", "6", "--multiprocessing-distributed", "--cpu-processes", "4"], "--batch_size 6 must split"),
    (["--stop-after-epoch", "0"], "--stop-after-epoch 0"),
    (["--cpu-processes", "0"], "--cpu-processes 0"),
    (["--world-size", "2"], "--world-size 2"),
    (["--world-size", "2", "--rank", "2", "--multiprocessing-distributed"], "--rank 2"),
    (["--dist-timeout", "0"], "--dist-timeout 0"),
    (["--seed", "-1"], "--seed -1"),
    (["--resume", "auto", "--overwrite"], "--overwrite"),
    (["--precision", "tf32"], "--precision tf32"),
    (["--backbone", "no_such_net"], "--backbone no_such_net"),
]


@pytest.mark.parametrize("extra, flag", BAD_VALUES, ids=[" ".join(extra) for extra, _ in BAD_VALUES])
def test_bad_values_are_refused_before_any_work(data, tmp_path, capsys, extra, flag):
    run, cache = tmp_path / "run", tmp_path / "cache"
    assert run_main(train.main, training_args(data, run, "--cache-dir", str(cache), *extra)) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {flag}") and "Traceback" not in err
    assert not run.exists() and not cache.exists()


class RunsCode:
    """A pickle that would create a file if unpickled by a trusting loader."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_hostile_pretrained_file_is_refused_before_caching(data, tmp_path, capsys):
    weights, marker, cache = tmp_path / "weights.pth", tmp_path / "pwned", tmp_path / "cache"
    torch.save({"state_dict": RunsCode(marker)}, weights)
    argv = training_args(data, tmp_path / "run", "--pretrained", str(weights), "--cache-dir", str(cache))
    assert run_main(train.main, argv) == 2
    err = capsys.readouterr().err
    assert f"--pretrained {weights}" in err and "weights_only=False" not in err
    assert not marker.exists() and not cache.exists()


def test_resuming_with_another_image_size_is_refused_before_caching(two_epochs, data, tmp_path, capsys):
    cache = tmp_path / "cache"
    argv = training_args(data, tmp_path / "run", "--resume", str(two_epochs / "last.pth.tar"), "--img-size", "64",
                         "--cache-dir", str(cache))
    assert run_main(train.main, argv) == 2
    err = capsys.readouterr().err
    assert "trained with --img-size 32, this one asks for --img-size 64" in err and "pass --img-size 32" in err
    assert not cache.exists()


def test_skip_without_the_cache_leaves_unreadable_images_out(data, tmp_path, capsys):
    copy = tmp_path / "data"
    shutil.copytree(data.parent, copy, ignore=shutil.ignore_patterns("cache"))
    (copy / "set_a" / "img05.png").write_bytes(b"\x89PNG not an image")
    info = copy / "dataset_info.json"
    info.write_text(info.read_text().replace(str(data.parent), str(copy)))
    records = read_datasets(["set_a", "set_b"], info)
    datasets = open_datasets(records, 32, 7, DistContext(), cache_dir="none", workers=2, on_bad_image="skip",
                             log=RunLog(tmp_path / "run", True).info)
    broken = next(i for i, r in enumerate(records["set_a"]) if r.path.endswith("img05.png"))
    assert broken not in datasets[0].train + datasets[0].test
    assert sorted(datasets[0].train + datasets[0].test) == [i for i in range(16) if i != broken]
    assert len(datasets[1].train + datasets[1].test) == 16
    out = capsys.readouterr().out
    assert "set_a: skipping 1 unreadable image(s)" in out and "img05.png" in out


def test_check_data_prints_a_summary(data, capsys):
    assert run_main(train.main, ["--dataset-info", str(data), "--dataset", "set_a", "set_b", "--check-data"]) == 0
    out = capsys.readouterr().out
    assert "set_a" in out and "16" in out and "label min" in out


def test_check_data_reports_all_problems_at_once(data, tmp_path, capsys):
    info = json.loads(data.read_text())
    info["set_b"]["root"] = str(tmp_path / "nowhere")
    bad = tmp_path / "info.json"
    bad.write_text(json.dumps(info))
    missing = data.parent / "set_a" / "img03.png"
    kept = missing.read_bytes()
    missing.unlink()
    try:
        assert run_main(train.main, ["--dataset-info", str(bad), "--dataset", "set_a", "set_b", "--check-data"]) == 2
    finally:
        missing.write_bytes(kept)
    err = capsys.readouterr().err
    assert "img03.png" in err and "nowhere" in err


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--lr", "1e30"], "the loss became nan at epoch 0, step"),
        (["--pretrained", "/no/such/weights.pth"], "file not found"),
        (["--resume", "/no/such/last.pth.tar"], "--resume /no/such/last.pth.tar: file not found"),
    ],
    ids=["non-finite-loss", "missing-weights-file", "missing-resume"],
)
def test_training_errors_are_clear(data, tmp_path, capsys, extra, message):
    assert run_main(train.main, training_args(data, tmp_path / "run", "--epochs", "1", *extra)) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_a_refused_resume_leaves_the_run_record_as_it_was(two_epochs, data, tmp_path):
    """A resume that asks for another network shape is refused before args.json or train.log change."""
    run = tmp_path / "run"
    shutil.copytree(two_epochs, run)
    before = {name: (run / name).read_bytes() for name in ("args.json", "train.log", "metrics.csv")}
    for extra, said in ((["--cnn-dim", "128"], "pass --cnn-dim 384"), (["--batch_size", "6"], "groups of 4 images")):
        argv = training_args(data, run, "--epochs", "3", "--resume", "auto", *extra)
        done = subprocess.run([sys.executable, str(ROOT / "train.py"), *argv], capture_output=True, text=True,
                              cwd=tmp_path, timeout=120)
        assert done.returncode == 2 and said in done.stderr and "Traceback" not in done.stderr, done.stderr
        assert {name: (run / name).read_bytes() for name in before} == before


def test_every_network_setting_is_compared_on_resume():
    assert set(NETWORK_FLAGS) == {f.name for f in dataclasses.fields(ModelConfig)}


@pytest.mark.parametrize("device", ["tpu", "meta", "mps"])
def test_unsupported_devices_are_refused_when_parsed(device, capsys):
    with pytest.raises(SystemExit) as exit_info:
        train.parse_args(["--device", device])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and f"--device: '{device}': use auto, cpu, cuda or cuda:INDEX" in err


@pytest.mark.parametrize("raised, becomes_user_error", [(RuntimeError("shape mismatch"), True), (KeyError("bug"), False)])
def test_the_network_check_turns_only_size_refusals_into_user_errors(monkeypatch, raised, becomes_user_error):
    """A backbone refusing the input size is the user's to fix; any other exception is a bug and keeps its type."""
    def refuse(self, images):
        raise raised

    monkeypatch.setattr(network_module.PromptIQA, "image_features", refuse)
    config = TrainConfig(model=ModelConfig(backbone="resnet10t", img_size=32), pretrained="none")
    with pytest.raises(UserError if becomes_user_error else KeyError) as err:
        network_module.check_network(config)
    if becomes_user_error:
        assert "does not run at --img-size 32 (RuntimeError: shape mismatch)" in str(err.value)
        assert err.value.__cause__ is raised

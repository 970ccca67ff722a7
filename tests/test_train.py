"""train.py in one process: run folder, checkpoints, resume, evaluation, demo and failures."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from conftest import ROOT
from PromptIQA.commands import score as score_cli
from PromptIQA.commands import train
from PromptIQA.commands.common import run_main
from training_fixtures import training_args, write_training_data


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


def test_run_folder_holds_everything(two_epochs, capsys):
    names = {p.name for p in two_epochs.iterdir()}
    assert {"last.pth.tar", "best.pth.tar", "args.json", "environment.json", "train.log", "metrics.csv",
            "metrics.jsonl", "scatter_set_a.png", "predictions_set_b.csv"} <= names
    epochs = [json.loads(line) for line in (two_epochs / "metrics.jsonl").read_text().splitlines()]
    assert [e["epoch"] for e in epochs] == [0, 1] and set(epochs[0]["test"]) == {"set_a", "set_b"}
    assert epochs[1]["lr"] == pytest.approx(1e-4 * 0.5 * (1 + np.cos(np.pi / 2)))  # half-cosine, epoch 1
    assert json.loads((two_epochs / "args.json").read_text())["epochs"] == 2
    assert "world_size" in json.loads((two_epochs / "environment.json").read_text())
    assert "set_a" in (two_epochs / "train.log").read_text()


def test_checkpoint_loads_weights_only_and_scores_with_test_py(two_epochs, capsys):
    ckpt = torch.load(two_epochs / "last.pth.tar", map_location="cpu", weights_only=True)
    assert ckpt["epoch"] == 2 and ckpt["prompt_num"] == 3 and not any(k.startswith("module.") for k in ckpt["model"])
    assert ckpt["model_config"] == {"backbone": "vit_tiny_patch16_224", "img_size": 32}
    code = run_main(score_cli.main, ["--checkpoint", str(two_epochs / "best.pth.tar"), "--device", "cpu",
                                     "--prompts", str(ROOT / "Examples/Example1/prompts.json"),
                                     "--images", str(ROOT / "Examples/Example1/cactus.png")])
    assert code == 0 and "cactus.png\t" in capsys.readouterr().out


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


def test_resume_continues_exactly(two_epochs, data, tmp_path):
    run = tmp_path / "resumed"
    assert run_main(train.main, training_args(data, run, "--epochs", "2", "--stop-after-epoch", "1")) == 0
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 1
    assert run_main(train.main, training_args(data, run, "--epochs", "2", "--resume", "auto")) == 0
    full = [json.loads(line) for line in (two_epochs / "metrics.jsonl").read_text().splitlines()]
    resumed = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    for a, b in zip(full, resumed):
        a["train"].pop("seconds"), b["train"].pop("seconds")
    assert resumed == full
    ours = torch.load(run / "last.pth.tar", weights_only=True)["model"]
    theirs = torch.load(two_epochs / "last.pth.tar", weights_only=True)["model"]
    assert all(torch.equal(ours[k], theirs[k]) for k in theirs)


def test_demo_runs_and_prints_the_scoring_command(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PROMPTIQA_CACHE", str(tmp_path / "cache"))
    argv = ["--demo", "--epochs", "1", "--img-size", "32", "--batch_size", "8", "--save_path", str(tmp_path / "demo")]
    assert run_main(train.main, argv) == 0
    out = capsys.readouterr().out
    assert "demo_kadid" in out and "demo_csiq" in out and "python test.py --checkpoint" in out
    assert (tmp_path / "demo" / "best.pth.tar").is_file()


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
        (["--pretrained", "imagenet"], "no ImageNet weights for vit_tiny_patch16_224"),
        (["--pretrained", "/no/such/weights.pth"], "file not found"),
        (["--batch_size", "1"], "--batch_size 1 must split into equal groups of at least 2 images"),
        (["--resume", "/no/such/last.pth.tar"], "--resume /no/such/last.pth.tar: file not found"),
    ],
    ids=["non-finite-loss", "no-imagenet-weights", "missing-weights-file", "batch-too-small", "missing-resume"],
)
def test_training_errors_are_clear(data, tmp_path, capsys, extra, message):
    assert run_main(train.main, training_args(data, tmp_path / "run", "--epochs", "1", *extra)) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_unknown_flag_fails(capsys):
    with pytest.raises(SystemExit) as exit_info:
        train.main(["--epochz", "3"])
    assert exit_info.value.code == 2 and "unrecognized arguments: --epochz" in capsys.readouterr().err


def test_published_flags_are_accepted():
    args = train.parse_args(["--dataset", "live", "--batch_size", "44", "--random_flipping_rate", "0.1",
                             "--random_scale_rate", "0.5", "--weight_decay", "1e-5", "--model", "promptiqa",
                             "--multiprocessing-distributed", "--dist-url", "tcp://1.2.3.4:5", "--dist-backend", "nccl",
                             "--world-size", "2", "--rank", "1", "--gpu", "0", "-j", "2"])
    assert (args.batch_size, args.world_size, args.rank, args.device) == (44, 2, 1, "cuda:0")

"""The prompt experiment: its conditions on a model that follows prompts exactly, and test.py --prompt-experiment."""
from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from training_fixtures import write_training_data

from PromptIQA.commands import score
from PromptIQA.commands.common import run_main
from PromptIQA.data.cache import DirectImages
from PromptIQA.data.loader import EvalSet, SplitDataset
from PromptIQA.data.records import Record
from PromptIQA.evaluation.prompt_experiment import OWN, RANDOM, REVERSED, run_prompt_experiment, transfer_condition
from PromptIQA.models import ModelConfig, PromptIQA
from PromptIQA.models.checkpoint import save_checkpoint


class NearestPromptModel(torch.nn.Module):
    """Scores a query with the score of the prompt whose image is closest in mean brightness."""

    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        return images.mean(dim=(1, 2, 3)).unsqueeze(1)

    def prompt_vectors(self, features: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        return torch.cat([features, scores.view(-1, 1)], dim=1)

    def score_features(self, features: torch.Tensor, prompts: torch.Tensor) -> torch.Tensor:
        nearest = (features - prompts[:, 0]).abs().argmin(dim=1)
        return prompts[nearest, 1]

    def parameters(self, recurse: bool = True):
        yield torch.zeros(1)


def grey_dataset(folder: Path, name: str, levels: np.ndarray, labels: np.ndarray) -> SplitDataset:
    """Flat grey images of the given grey levels; the first half trains, the second half tests."""
    records = []
    for i, (level, label) in enumerate(zip(levels, labels)):
        path = folder / name / f"{i:02d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), np.full((8, 8, 3), int(level), np.uint8))
        records.append(Record(str(path), float(label), i))
    half = len(records) // 2
    return SplitDataset(name, records, DirectImages([r.path for r in records], 8), list(range(half)),
                        list(range(half, len(records))))


def eval_set(position: int, dataset: SplitDataset) -> EvalSet:
    return EvalSet(position, dataset.name, dataset.train, dataset.labels(dataset.train), dataset.test,
                   dataset.labels(dataset.test))


@pytest.fixture
def grey_experiment(tmp_path):
    """`bright` labels grow with the grey level, `dark` fall with it: opposite requirements."""
    levels = np.concatenate([np.linspace(10, 240, 12), np.linspace(15, 235, 12)]).round()
    datasets = [grey_dataset(tmp_path, "bright", levels, levels / 255),
                grey_dataset(tmp_path, "dark", levels, 1 - levels / 255)]
    sets = [eval_set(i, d) for i, d in enumerate(datasets)]
    return run_prompt_experiment(NearestPromptModel(), datasets, sets, batch_size=5, seed=3)


def test_conditions_follow_and_oppose_the_prompts(grey_experiment):
    for dataset in ("bright", "dark"):
        assert grey_experiment.value(dataset, OWN) == pytest.approx(1.0)
        assert grey_experiment.value(dataset, REVERSED) == pytest.approx(-1.0)
        assert abs(grey_experiment.value(dataset, RANDOM)) < 0.9
    # the other dataset's prompts ask for the opposite ranking
    assert grey_experiment.value("bright", transfer_condition("dark")) == pytest.approx(-1.0)
    assert grey_experiment.value("dark", transfer_condition("bright")) == pytest.approx(-1.0)
    assert np.isnan(grey_experiment.value("bright", transfer_condition("bright")))


def test_table_csv_and_figure(grey_experiment, tmp_path):
    assert grey_experiment.conditions == [OWN, REVERSED, RANDOM, "from dark", "from bright"]
    table = grey_experiment.table().splitlines()
    assert table[0].split()[:4] == ["dataset", OWN, REVERSED, RANDOM]
    assert table[2].startswith("bright") and "1.000 / " in table[2] and "-1.000 / " in table[2]
    csv_path, figure_path = grey_experiment.save(tmp_path / "out")
    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 * 4
    assert {(r["dataset"], r["prompts"]) for r in rows} == {(r.dataset, r.prompts) for r in grey_experiment.rows}
    assert all(r["images"] == "12" for r in rows)
    figure = cv2.imread(str(figure_path))
    assert figure is not None and figure.shape[0] > 100 and figure.std() > 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["prompt_experiment.csv", "prompt_experiment.png"]


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    """A random 32 px model's checkpoint and two csv datasets of 16 images."""
    root = tmp_path_factory.mktemp("experiment")
    info = write_training_data(root)
    torch.manual_seed(0)
    config = ModelConfig("vit_tiny_patch16_224", 32, prompt_num=4)
    checkpoint = root / "small.pth.tar"
    save_checkpoint({"model": PromptIQA(config).state_dict(), "model_config": config.to_dict(), "prompt_num": 4},
                    checkpoint)
    return ["--checkpoint", str(checkpoint), "--dataset-info", str(info), "--dataset", "set_a", "set_b",
            "--cache-dir", "none", "--workers", "0", "--device", "cpu"]


def read_rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_cli_writes_the_experiment_and_agrees_with_plain_evaluation(small_run, tmp_path, capsys):
    assert run_main(score.main, small_run + ["--save-dir", str(tmp_path / "plain")]) == 0
    assert run_main(score.main, small_run + ["--prompt-experiment", "--save-dir", str(tmp_path / "exp")]) == 0
    out = capsys.readouterr().out
    assert "from set_b" in out and "reversed" in out and "prompt_experiment.png" in out
    plain = {r["dataset"]: r for r in read_rows(tmp_path / "plain" / "results.csv")}
    experiment = read_rows(tmp_path / "exp" / "prompt_experiment.csv")
    assert {(r["dataset"], r["prompts"]) for r in experiment} == {
        (d, p) for d, other in (("set_a", "set_b"), ("set_b", "set_a"))
        for p in (OWN, REVERSED, RANDOM, transfer_condition(other))}
    for row in experiment:
        if row["prompts"] == OWN:  # the same prompts as plain evaluation: the same correlations
            assert float(row["srcc"]) == pytest.approx(float(plain[row["dataset"]]["srcc"]), abs=1e-4)
            assert float(row["plcc"]) == pytest.approx(float(plain[row["dataset"]]["plcc"]), abs=1e-4)
    assert cv2.imread(str(tmp_path / "exp" / "prompt_experiment.png")) is not None


def test_cli_reversed_condition_matches_reverse_prompts(small_run, tmp_path, capsys):
    assert run_main(score.main, small_run + ["--reverse-prompts", "--save-dir", str(tmp_path / "rev")]) == 0
    assert run_main(score.main, small_run + ["--prompt-experiment", "--save-dir", str(tmp_path / "exp")]) == 0
    reversed_plain = {r["dataset"]: float(r["srcc"]) for r in read_rows(tmp_path / "rev" / "results.csv")}
    for row in read_rows(tmp_path / "exp" / "prompt_experiment.csv"):
        if row["prompts"] == REVERSED:
            assert float(row["srcc"]) == pytest.approx(reversed_plain[row["dataset"]], abs=1e-4)


def test_cli_refuses_reverse_and_random_with_the_experiment(small_run, capsys):
    assert run_main(score.main, small_run + ["--prompt-experiment", "--random-prompts"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --prompt-experiment") and "drop --reverse-prompts" in err

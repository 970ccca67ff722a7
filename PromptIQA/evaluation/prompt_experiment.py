"""The prompt experiment: does a model follow its prompts?

Each dataset's test images are scored under several prompt sets, and SRCC/PLCC against the
dataset's own labels say how well the ranking follows that dataset's requirement:

- ``own``: the dataset's evaluation prompts (as in training);
- ``reversed``: the same images with every score s turned into 1 - s (the opposite requirement);
- ``from <other>``: another dataset's prompts, images and scores (requirement transfer);
- ``random``: the dataset's prompt images with uniformly random scores.

A model that follows its prompts is high with ``own``, as negative with ``reversed``, near zero
with ``random``, and with another dataset's prompts as high or low as the two requirements agree.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from ..data.loader import EvalSet, SplitDataset  # noqa: E402
from ..models import PromptIQA  # noqa: E402
from ..utils.atomic import atomic_open, write_csv_atomic  # noqa: E402
from ..utils.stats import correlations  # noqa: E402
from .evaluate import dataset_features  # noqa: E402

OWN, REVERSED, RANDOM = "own", "reversed", "random"
CSV_NAME, FIGURE_NAME = "prompt_experiment.csv", "prompt_experiment.png"


def transfer_condition(source: str) -> str:
    return f"from {source}"


@dataclass(frozen=True)
class ExperimentRow:
    dataset: str  # whose test images are scored, against whose labels
    prompts: str  # OWN, REVERSED, RANDOM or transfer_condition(other dataset)
    srcc: float
    plcc: float
    images: int


@dataclass(frozen=True)
class PromptExperiment:
    rows: list[ExperimentRow]

    @property
    def datasets(self) -> list[str]:
        return list(dict.fromkeys(row.dataset for row in self.rows))

    @property
    def conditions(self) -> list[str]:
        """Column order: own, reversed, random, then the other datasets' prompts."""
        found = list(dict.fromkeys(row.prompts for row in self.rows))
        fixed = [c for c in (OWN, REVERSED, RANDOM) if c in found]
        return fixed + [c for c in found if c not in fixed]

    def value(self, dataset: str, prompts: str, metric: str = "srcc") -> float:
        """The metric of one cell; NaN where the condition does not apply (own dataset as 'other')."""
        for row in self.rows:
            if row.dataset == dataset and row.prompts == prompts:
                return getattr(row, metric)
        return float("nan")

    def table(self) -> str:
        """SRCC / PLCC per dataset (rows) and prompt condition (columns)."""
        conditions = self.conditions
        width = max(len("dataset"), *(len(d) for d in self.datasets))
        cell = max(15, *(len(c) for c in conditions))
        lines = [f"{'dataset':<{width}}  " + "  ".join(f"{c:>{cell}}" for c in conditions)]
        lines.append(f"{'':<{width}}  " + "  ".join(f"{'SRCC / PLCC':>{cell}}" for _ in conditions))
        for dataset in self.datasets:
            cells = []
            for c in conditions:
                srcc, plcc = self.value(dataset, c, "srcc"), self.value(dataset, c, "plcc")
                cells.append(f"{'-':>{cell}}" if np.isnan(srcc) else f"{f'{srcc:.3f} / {plcc:.3f}':>{cell}}")
            lines.append(f"{dataset:<{width}}  " + "  ".join(cells))
        return "\n".join(lines)

    def save(self, folder: str | os.PathLike) -> tuple[Path, Path]:
        """Write prompt_experiment.csv and prompt_experiment.png into `folder` (atomically)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        csv_path, figure_path = folder / CSV_NAME, folder / FIGURE_NAME
        write_csv_atomic(
            csv_path, ["dataset", "prompts", "srcc", "plcc", "images"],
            ((r.dataset, r.prompts, f"{r.srcc:.6f}", f"{r.plcc:.6f}", r.images) for r in self.rows),
        )
        save_heatmap(self, figure_path)
        return csv_path, figure_path


def save_heatmap(experiment: PromptExperiment, path: str | os.PathLike) -> None:
    """SRCC heat map, datasets as rows and prompt conditions as columns, red negative, blue positive."""
    datasets, conditions = experiment.datasets, experiment.conditions
    values = np.array([[experiment.value(d, c) for c in conditions] for d in datasets])
    fig, ax = plt.subplots(figsize=(1.6 + 1.5 * len(conditions), 1.2 + 0.7 * len(datasets)), dpi=120)
    image = ax.imshow(np.ma.masked_invalid(values), cmap="RdBu", vmin=-1, vmax=1, aspect="auto")
    ax.set_xticks(range(len(conditions)), [c.replace("from ", "from\n") for c in conditions])
    ax.set_yticks(range(len(datasets)), datasets)
    ax.set_xlabel("prompts")
    ax.set_ylabel("test images and labels of")
    for (i, j), value in np.ndenumerate(values):
        if not np.isnan(value):
            ax.text(j, i, f"{value:.2f}", ha="center", va="center", color="white" if abs(value) > 0.6 else "black")
    fig.colorbar(image, ax=ax, label="SRCC")
    ax.set_title("SRCC of the test split under each prompt set")
    fig.tight_layout()
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png")
    plt.close(fig)


@torch.no_grad()
def _correlations(
    model: PromptIQA, queries: torch.Tensor, prompt_features: torch.Tensor, scores: Sequence[float],
    labels: np.ndarray,
) -> tuple[float, float]:
    prompts = model.prompt_vectors(prompt_features, torch.tensor(list(scores), dtype=torch.float32))
    predictions = model.score_features(queries, prompts).float().cpu().numpy()
    return correlations(predictions, labels)


def run_prompt_experiment(
    model: PromptIQA,
    datasets: Sequence[SplitDataset],
    sets: Sequence[EvalSet],
    batch_size: int = 16,
    workers: int = 0,
    seed: int = 2024,
) -> PromptExperiment:
    """Score every set's test images under its own, reversed and random prompts and every other
    set's prompts; image features are computed once per image."""
    was_training = model.training
    model.eval()
    prompt_features = [dataset_features(model, datasets, s.dataset_id, s.prompts, batch_size, workers) for s in sets]
    generator = np.random.default_rng(seed)
    rows = []
    for position, target in enumerate(sets):
        queries = dataset_features(model, datasets, target.dataset_id, target.test, batch_size, workers)
        labels = np.asarray(target.test_labels, dtype=np.float64)
        own = prompt_features[position]
        conditions = [
            (OWN, own, target.prompt_labels),
            (REVERSED, own, [1 - y for y in target.prompt_labels]),
            (RANDOM, own, generator.random(len(target.prompts)).tolist()),
        ]
        conditions += [
            (transfer_condition(source.name), features, source.prompt_labels)
            for source, features in zip(sets, prompt_features) if source is not target
        ]
        for name, features, scores in conditions:
            srcc, plcc = _correlations(model, queries, features, scores, labels)
            rows.append(ExperimentRow(target.name, name, srcc, plcc, len(labels)))
    model.train(was_training)
    return PromptExperiment(rows)

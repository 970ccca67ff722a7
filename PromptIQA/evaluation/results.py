"""What training and evaluation report: SRCC/PLCC, the statistics of a training epoch, the result of
scoring a test split, the table they are printed as and the predictions files they are saved as."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..utils.atomic import write_csv_atomic
from ..utils.plots import save_scatter


@dataclass
class EpochStats:
    loss: float
    srcc: float
    plcc: float
    images: int
    seconds: float


@dataclass
class EvalResult:
    name: str
    srcc: float
    plcc: float
    paths: list[str]
    predictions: np.ndarray  # in the order of the dataset's test list
    labels: np.ndarray


def epoch_score(results: Sequence[EvalResult]) -> float:
    """Sum of SRCC + PLCC over datasets (the best epoch has the highest); undefined counts as 0."""
    return float(sum(np.nan_to_num(r.srcc) + np.nan_to_num(r.plcc) for r in results))


def format_results(results: Sequence[EvalResult]) -> str:
    """Per-dataset table: SRCC, PLCC and number of test images."""
    width = max([len("dataset")] + [len(r.name) for r in results])
    lines = [f"{'dataset':<{width}}  {'SRCC':>7}  {'PLCC':>7}  {'images':>6}"]
    lines += [f"{r.name:<{width}}  {r.srcc:7.4f}  {r.plcc:7.4f}  {len(r.labels):6d}" for r in results]
    return "\n".join(lines)



def save_predictions(results: list[EvalResult], folder: Path) -> None:
    """predictions_<dataset>.csv (path, label, prediction) and scatter_<dataset>.png per dataset."""
    for r in results:
        rows = ((p, f"{y:.6f}", f"{x:.8f}") for p, y, x in zip(r.paths, r.labels, r.predictions))
        write_csv_atomic(folder / f"predictions_{r.name}.csv", ["path", "label", "prediction"], rows)
        save_scatter(r.predictions, r.labels, r.name, r.srcc, r.plcc, folder / f"scatter_{r.name}.png")


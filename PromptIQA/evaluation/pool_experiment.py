"""The prompt-pool experiment (docs/prompt-pools.md): what a pool of N labelled images is worth.

For each dataset and each of D pools of N ISPs drawn from its training split (where the published
prompts come from), the test split is scored under:

- ``one set``: prompt-num ISPs of the pool, evenly spaced by score (the published choice);
- ``random set``: prompt-num ISPs of the pool drawn at random;
- ``ensemble``: K stratified sets of prompt-num (the mean; its spread, and with a level its interval);
- ``all N``: the whole pool as one long set;
- ``selected``: the K ISPs chosen by `select_prompts` (when asked).

Reported per dataset, as the mean over the draws: SRCC/PLCC of each, the interval's coverage and
mean width, Spearman between the ensemble's spread and its absolute error, and SRCC on the most
confident half (lowest spread) against SRCC on all. Image features are computed once per image.
"""
from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from scipy import stats  # noqa: E402

from ..data.groups import select_prompts as published_choice  # noqa: E402
from ..data.loader import SplitDataset  # noqa: E402
from ..models import PromptIQA  # noqa: E402
from ..models.prompt_pool import build_ensemble, score_sets, select_prompts  # noqa: E402
from ..utils.atomic import atomic_open, write_csv_atomic  # noqa: E402
from ..utils.errors import UserError  # noqa: E402
from ..utils.stats import correlations  # noqa: E402
from .evaluate import dataset_features  # noqa: E402

CSV_NAME, FIGURE_NAME = "prompt_pool.csv", "prompt_pool_coverage.png"
COVERAGE_LEVELS = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95)  # the coverage figure's nominal levels
SET_NAMES = ("one set", "random set", "ensemble", "all N", "selected")


@dataclass(frozen=True)
class PoolDraw:
    """The results of one pool drawn for one dataset."""

    dataset: str
    draw: int
    srcc: dict[str, float]  # per SET_NAMES entry present
    plcc: dict[str, float]
    coverage: float | None  # of the interval at the asked level
    width: float | None  # its mean width, on the labels' scale
    spread_error: float  # Spearman(spread, |error|) of the ensemble
    confident_srcc: float  # ensemble SRCC on the half with the lowest spread
    coverage_curve: dict[float, float] | None  # empirical coverage at COVERAGE_LEVELS


@dataclass(frozen=True)
class PoolExperiment:
    draws: list[PoolDraw]
    pool_size: int
    ensemble: int
    level: float | None

    @property
    def datasets(self) -> list[str]:
        return list(dict.fromkeys(d.dataset for d in self.draws))

    def mean(self, dataset: str, value) -> float:
        """The mean over the dataset's draws of value(draw) (NaN where a draw has none)."""
        found = [value(d) for d in self.draws if d.dataset == dataset]
        found = [v for v in found if v is not None and not math.isnan(v)]
        return float(np.mean(found)) if found else float("nan")

    def names(self) -> list[str]:
        return [n for n in SET_NAMES if n in self.draws[0].srcc]

    def table(self) -> str:
        """SRCC / PLCC per prompt use, then the ensemble's reliability, per dataset (mean over draws)."""
        draws = len({d.draw for d in self.draws})
        names = self.names()
        lines = [f"prompt pool of {self.pool_size} ISPs from the training split, ensemble of {self.ensemble}, "
                 f"mean over {draws} pool draw{'s' if draws > 1 else ''}"]
        width = max(len("dataset"), *(len(d) for d in self.datasets))
        lines.append(f"{'dataset':<{width}}  " + "  ".join(f"{n.replace('N', str(self.pool_size)):>15}" for n in names))
        for dataset in self.datasets:
            cells = [f"{self.mean(dataset, lambda d, n=n: d.srcc[n]):.3f} / "
                     f"{self.mean(dataset, lambda d, n=n: d.plcc[n]):.3f}" for n in names]
            lines.append(f"{dataset:<{width}}  " + "  ".join(f"{c:>15}" for c in cells))
        lines.append("(SRCC / PLCC on the test split)")
        header = ["Spearman(spread, |error|)", "SRCC confident half", "SRCC all"]
        if self.level is not None:
            header = [f"{self.level:g} coverage", "mean width", *header]
        lines.append(f"{'dataset':<{width}}  " + "  ".join(f"{h:>25}" for h in header))
        for dataset in self.datasets:
            cells = [self.mean(dataset, lambda d: d.spread_error), self.mean(dataset, lambda d: d.confident_srcc),
                     self.mean(dataset, lambda d: d.srcc["ensemble"])]
            if self.level is not None:
                cells = [self.mean(dataset, lambda d: d.coverage), self.mean(dataset, lambda d: d.width), *cells]
            lines.append(f"{dataset:<{width}}  " + "  ".join(f"{c:>25.3f}" for c in cells))
        return "\n".join(lines)

    def save(self, folder: str | os.PathLike) -> list[Path]:
        """prompt_pool.csv (a row per dataset and draw) and, with intervals, the coverage figure."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        names = self.names()
        header = ["dataset", "draw", *(f"srcc_{n.replace(' ', '_')}" for n in names),
                  *(f"plcc_{n.replace(' ', '_')}" for n in names), "coverage", "width", "spread_error_spearman",
                  "srcc_confident_half"]
        rows = ([d.dataset, d.draw, *(f"{d.srcc[n]:.6f}" for n in names), *(f"{d.plcc[n]:.6f}" for n in names),
                 "" if d.coverage is None else f"{d.coverage:.6f}", "" if d.width is None else f"{d.width:.6f}",
                 f"{d.spread_error:.6f}", f"{d.confident_srcc:.6f}"] for d in self.draws)
        write_csv_atomic(folder / CSV_NAME, header, rows)
        written = [folder / CSV_NAME]
        if self.level is not None:
            save_coverage_figure(self, folder / FIGURE_NAME)
            written.append(folder / FIGURE_NAME)
        return written


def save_coverage_figure(experiment: PoolExperiment, path: str | os.PathLike) -> None:
    """Empirical coverage of the conformal interval against its nominal level, per dataset (mean over draws)."""
    fig, ax = plt.subplots(figsize=(4.8, 4.5), dpi=120)
    ax.plot([0, 1], [0, 1], color="grey", linewidth=0.8, linestyle="--", label="nominal")
    for dataset in experiment.datasets:
        curve = [experiment.mean(dataset, lambda d, lv=lv: d.coverage_curve[lv]) for lv in COVERAGE_LEVELS]
        ax.plot(COVERAGE_LEVELS, curve, marker="o", label=dataset)
    ax.set(xlim=(0.4, 1), ylim=(0.4, 1), xlabel="interval level (nominal coverage)", ylabel="test coverage")
    ax.set_title(f"conformal intervals, pool of {experiment.pool_size}")
    ax.legend()
    fig.tight_layout()
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png")
    plt.close(fig)


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    if len(a) < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(stats.spearmanr(a, b)[0])


@torch.no_grad()
def _one_draw(model: PromptIQA, dataset: SplitDataset, test: torch.Tensor, test_labels: np.ndarray,
              pool_features: torch.Tensor, pool_labels: list[float], draw: int, seed: int, set_size: int,
              ensemble: int, level: float | None, select: int | None) -> PoolDraw:
    vectors = model.prompt_vectors(pool_features, torch.tensor(pool_labels, dtype=torch.float32))
    rng = np.random.default_rng([seed, draw, 1])  # the pool itself was drawn from [seed, draw]
    sets = {
        "one set": published_choice(pool_labels, set_size, "fixed"),
        "random set": rng.choice(len(pool_labels), size=set_size, replace=False).tolist(),
        "all N": list(range(len(pool_labels))),
    }
    if select:
        start = published_choice(pool_labels, select, "fixed")
        sets["selected"] = select_prompts(model, pool_features, vectors, pool_labels, start)
    predictions = {name: score_sets(model, test, vectors, torch.tensor([chosen]))[0].float().numpy()
                   for name, chosen in sets.items()}
    built = build_ensemble(model, pool_features, vectors, pool_labels, set_size, ensemble, seed + draw, level)
    scores = built.score(model, test)
    predictions["ensemble"] = scores.mean.numpy()
    spread = scores.spread.numpy()
    names = [n for n in SET_NAMES if n in predictions]
    measured = {n: correlations(predictions[n], test_labels) for n in names}
    error = np.abs(predictions["ensemble"] - test_labels)
    confident = np.argsort(spread, kind="stable")[: len(spread) // 2]
    coverage = width = curve = None
    if level is not None:
        coverage = float(np.mean((scores.low.numpy() <= test_labels) & (test_labels <= scores.high.numpy())))
        width = float(np.mean(scores.high.numpy() - scores.low.numpy()))
        calibration = built.calibration
        curve = {}
        for nominal in COVERAGE_LEVELS:
            if not calibration.supports(nominal):
                curve[nominal] = float("nan")  # beyond what this pool can calibrate
                continue
            low, high = (bound.numpy() for bound in calibration.bounds(scores.mean, scores.spread, nominal))
            curve[nominal] = float(np.mean((low <= test_labels) & (test_labels <= high)))
    return PoolDraw(dataset.name, draw, {n: m[0] for n, m in measured.items()}, {n: m[1] for n, m in measured.items()},
                    coverage, width, _spearman(spread, error), correlations(predictions["ensemble"][confident],
                                                                             test_labels[confident])[0], curve)


def run_pool_experiment(model: PromptIQA, datasets: Sequence[SplitDataset], pool_size: int, draws: int = 5,
                        ensemble: int = 5, level: float | None = None, select: int | None = None, seed: int = 2024,
                        batch_size: int = 16, workers: int = 0, set_size: int | None = None) -> PoolExperiment:
    """Run the experiment of the module docstring on every dataset (one process); sets hold `set_size`
    ISPs (default: the network's prompt number)."""
    set_size = set_size or model.prompt_num
    was_training = model.training
    model.eval()
    results = []
    for dataset_id, dataset in enumerate(datasets):
        if pool_size > len(dataset.train):
            raise UserError(f"{dataset.name}: a pool of {pool_size} ISPs asked, but its training split has "
                            f"{len(dataset.train)} images; give a smaller pool")
        if pool_size <= max(set_size, select or 0):
            raise UserError(f"a pool of {pool_size} ISPs: give more than the {max(set_size, select or 0)} "
                            "ISPs of one set, so that sets can differ and a selection has a rest to be judged on")
        test = dataset_features(model, datasets, dataset_id, dataset.test, batch_size, workers)
        test_labels = np.asarray(dataset.labels(dataset.test), dtype=np.float64)
        for draw in range(draws):
            pool = np.random.default_rng([seed, draw]).choice(dataset.train, size=pool_size, replace=False).tolist()
            pool_features = dataset_features(model, datasets, dataset_id, pool, batch_size, workers)
            results.append(_one_draw(model, dataset, test, test_labels, pool_features, dataset.labels(pool), draw,
                                     seed, set_size, ensemble, level, select))
    model.train(was_training)
    return PoolExperiment(results, pool_size, ensemble, level)

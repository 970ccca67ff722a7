"""The run folder: resolved arguments, environment, a log of what was printed, metrics per epoch.

Only the main process writes; the others get a RunLog that does nothing.
"""
from __future__ import annotations

import csv
import json
import os
import platform
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import timm
import torch

from .atomic import atomic_open, write_csv_atomic
from .engine import EpochStats, EvalResult, epoch_score, format_results
from .plots import save_scatter

METRIC_FIELDS = ["epoch", "split", "dataset", "srcc", "plcc", "images", "loss", "lr"]


def environment(world_size: int) -> dict:
    """Versions and hardware a run used, and the commit of this repository if it is a git checkout."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=10
        ).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        commit = None
    cuda = torch.cuda.is_available()
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "timm": timm.__version__,
        "cuda": torch.version.cuda if cuda else None,
        "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if cuda else [],
        "world_size": world_size,
        "git_commit": commit,
        "command": sys.argv,
    }


def save_predictions(results: list[EvalResult], folder: Path) -> None:
    """predictions_<dataset>.csv (path, label, prediction) and scatter_<dataset>.png per dataset."""
    for r in results:
        rows = ((p, f"{y:.6f}", f"{x:.8f}") for p, y, x in zip(r.paths, r.labels, r.predictions))
        write_csv_atomic(folder / f"predictions_{r.name}.csv", ["path", "label", "prediction"], rows)
        save_scatter(r.predictions, r.labels, r.name, r.srcc, r.plcc, folder / f"scatter_{r.name}.png")


class RunLog:
    def __init__(self, save_path: str | os.PathLike, enabled: bool):
        self.path = Path(save_path)
        self.enabled = enabled
        if enabled:
            self.path.mkdir(parents=True, exist_ok=True)

    def info(self, message: str) -> None:
        if self.enabled:
            print(message, flush=True)
            with open(self.path / "train.log", "a") as f:
                f.write(message + "\n")

    def write_json(self, name: str, obj) -> None:
        if self.enabled:
            with atomic_open(self.path / name) as f:
                json.dump(obj, f, indent=2, default=str)

    def predictions(self, results: list[EvalResult]) -> None:
        if self.enabled:
            save_predictions(results, self.path)

    def epoch(self, epoch: int, lr: float, train: EpochStats, results: list[EvalResult], best: dict) -> None:
        """Print the epoch's table and append it to metrics.jsonl (one line) and metrics.csv (a row per set)."""
        if not self.enabled:
            return
        improved = best["epoch"] == epoch
        self.info(
            f"epoch {epoch}: lr {lr:.3g}, train loss {train.loss:.4f}, SRCC {train.srcc:.4f}, PLCC {train.plcc:.4f}, "
            f"{train.images / train.seconds:.1f} img/s\n{format_results(results)}\n"
            f"score (sum of SRCC + PLCC) {epoch_score(results):.4f}{' (best)' if improved else ''}"
        )
        summary = {
            "epoch": epoch, "lr": lr, "train": asdict(train), "score": epoch_score(results),
            "best_epoch": best["epoch"],
            "test": {r.name: {"srcc": r.srcc, "plcc": r.plcc, "images": len(r.labels)} for r in results},
        }
        rows = [{"epoch": epoch, "split": "train", "dataset": "all", "srcc": train.srcc, "plcc": train.plcc,
                 "images": train.images, "loss": train.loss, "lr": lr}]
        rows += [{"epoch": epoch, "split": "test", "dataset": r.name, "srcc": r.srcc, "plcc": r.plcc,
                  "images": len(r.labels), "lr": lr} for r in results]
        with open(self.path / "metrics.jsonl", "a") as f:
            f.write(json.dumps(summary) + "\n")
        csv_path = self.path / "metrics.csv"
        new = not csv_path.exists()
        with open(csv_path, "a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=METRIC_FIELDS)
            if new:
                writer.writeheader()
            writer.writerows(rows)

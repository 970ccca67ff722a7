"""Scatter plots of predictions against labels (headless)."""
from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def save_scatter(
    predictions: np.ndarray, labels: np.ndarray, name: str, srcc: float, plcc: float, path: str | os.PathLike
) -> None:
    fig, ax = plt.subplots(figsize=(4.5, 4.5), dpi=120)
    ax.scatter(labels, predictions, s=10, alpha=0.6, edgecolors="none")
    ax.plot([0, 1], [0, 1], color="grey", linewidth=0.8, linestyle="--")
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="label", ylabel="prediction")
    ax.set_title(f"{name}: SRCC {srcc:.3f}, PLCC {plcc:.3f}")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)

"""SRCC and PLCC: the correlations every part of the project reports and selects by."""
from __future__ import annotations

import numpy as np
from scipy import stats


def correlations(predictions: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """(SRCC, PLCC); NaN where undefined (fewer than two items, or a constant input)."""
    predictions, labels = np.asarray(predictions, dtype=np.float64), np.asarray(labels, dtype=np.float64)
    if len(predictions) < 2 or np.ptp(predictions) == 0 or np.ptp(labels) == 0:
        return float("nan"), float("nan")
    return float(stats.spearmanr(predictions, labels)[0]), float(stats.pearsonr(predictions, labels)[0])

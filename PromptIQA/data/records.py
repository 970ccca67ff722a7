"""The unit of every dataset: one labelled image."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Record:
    """One image of a dataset.

    path:  absolute path of the image file.
    label: the score mapped to [0, 1] with the dataset's published constant (no direction flip).
    unit:  index of the split unit the image belongs to (the image itself, or its reference image
           for the synthetic datasets); the train/test split is drawn over units.
    """

    path: str
    label: float
    unit: int

"""The published train/test split: a seeded shuffle of split units (docs/datasets.md, "The split")."""
from __future__ import annotations

import random
from collections.abc import Sequence

from ..utils.errors import UserError
from .records import Record


def split_records(records: Sequence[Record], seed: int,
                  train_ratio: float = 0.8) -> tuple[list[Record], list[Record]]:
    """(train, test) records: the first round(train_ratio * U) units of a seeded shuffle train.

    Units 0..U-1 are shuffled exactly as the published `idx = list(range(U)); random.seed(seed);
    random.shuffle(idx)`; every record follows its unit and keeps its file order on its side.
    """
    if not 0 <= train_ratio <= 1:
        raise UserError(f"train_ratio is {train_ratio}; it must lie between 0 and 1")
    units = sorted({record.unit for record in records})
    order = list(range(len(units)))
    # a private generator draws the same permutation as random.seed + random.shuffle,
    # without resetting the global one
    random.Random(seed).shuffle(order)
    train_units = {units[i] for i in order[:round(train_ratio * len(units))]}
    train = [record for record in records if record.unit in train_units]
    test = [record for record in records if record.unit not in train_units]
    return train, test

"""Datasets prepared for training: splits, image stores, per-epoch group loaders, evaluation sets."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from .cache import DirectImages, ImageCache
from .groups import form_groups, select_prompts, shard_groups
from .image import ImageError, to_tensor
from .records import Record
from .split import split_records

ImageStore = ImageCache | DirectImages
Item = tuple[int, int, bool]  # (dataset id, index into its records, horizontal flip)


@dataclass
class SplitDataset:
    """One dataset: all its records, one image store over them, and its train/test indices."""

    name: str
    records: list[Record]
    store: ImageStore
    train: list[int]
    test: list[int]

    @classmethod
    def from_records(cls, name: str, records: list[Record], store: ImageStore, seed: int) -> "SplitDataset":
        """Split by the published recipe, then leave out images the store could not decode."""
        train_units = {r.unit for r in split_records(records, seed)[0]}
        bad = {b.index for b in store.bad}
        usable = [i for i in range(len(records)) if i not in bad]
        train = [i for i in usable if records[i].unit in train_units]
        test = [i for i in usable if records[i].unit not in train_units]
        return cls(name, records, store, train, test)

    def labels(self, indices: Sequence[int]) -> list[float]:
        return [self.records[i].label for i in indices]


class GroupedImages(Dataset):
    """Items (dataset id, index, flip) -> (normalised image, label, dataset id)."""

    def __init__(self, datasets: Sequence[SplitDataset]):
        self.datasets = list(datasets)

    def __len__(self) -> int:
        return sum(len(d.records) for d in self.datasets)

    def __getitem__(self, item: Item) -> tuple[torch.Tensor, torch.Tensor, int]:
        dataset_id, index, flip = item
        dataset = self.datasets[dataset_id]
        try:
            image = dataset.store[index]
        except ImageError as err:
            raise ImageError(f"dataset {dataset.name}: {err}") from None
        if flip:
            # Horizontal: the published code flipped the rows, i.e. vertically (model.md 5).
            image = np.ascontiguousarray(image[:, ::-1])
        return to_tensor(image), torch.tensor(dataset.records[index].label, dtype=torch.float32), dataset_id


def epoch_batches(
    datasets: Sequence[SplitDataset], group_size: int, seed: int, epoch: int, rank: int, world_size: int
) -> list[list[Item]]:
    """This process's groups for `epoch`: a function of (seed, epoch) alone, so resume re-forms them."""
    sizes = {i: len(d.train) for i, d in enumerate(datasets)}
    groups = form_groups(sizes, group_size, np.random.default_rng([seed, epoch]))
    groups = shard_groups(groups, rank, world_size, {d.name: len(d.train) for d in datasets})
    flips = np.random.default_rng([seed, epoch, rank, 1]).random((len(groups), group_size)) < 0.5
    return [
        [(d, datasets[d].train[i], bool(f)) for i, f in zip(indices, row)]
        for (d, indices), row in zip(groups, flips)
    ]


def train_loader(
    datasets: Sequence[SplitDataset], group_size: int, seed: int, epoch: int, rank: int, world_size: int, workers: int
) -> DataLoader:
    batches = epoch_batches(datasets, group_size, seed, epoch, rank, world_size)
    return DataLoader(
        GroupedImages(datasets), batch_sampler=batches, num_workers=workers, persistent_workers=False,
        pin_memory=torch.cuda.is_available(),
    )


@dataclass
class EvalSet:
    """A dataset's test images and the fixed prompt set that scores them (training.md, Evaluation)."""

    dataset_id: int
    name: str
    prompts: list[int]  # indices into the dataset's records (training images)
    prompt_labels: list[float]
    test: list[int]
    test_labels: list[float]


def eval_sets(
    datasets: Sequence[SplitDataset], prompt_num: int, select: str = "fixed", seed: int | None = None
) -> list[EvalSet]:
    sets = []
    for i, d in enumerate(datasets):
        chosen = [d.train[k] for k in select_prompts(d.labels(d.train), prompt_num, select, seed)]
        sets.append(EvalSet(i, d.name, chosen, d.labels(chosen), list(d.test), d.labels(d.test)))
    return sets


def image_batches(
    datasets: Sequence[SplitDataset], dataset_id: int, indices: Sequence[int], batch_size: int, workers: int
) -> DataLoader:
    """Unflipped images of one dataset, in the given order, in batches."""
    items = [(dataset_id, i, False) for i in indices]
    batches = [items[s : s + batch_size] for s in range(0, len(items), batch_size)]
    return DataLoader(GroupedImages(datasets), batch_sampler=batches, num_workers=workers)

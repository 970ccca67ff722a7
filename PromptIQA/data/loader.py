"""Datasets prepared for training: splits, image stores, group batches, evaluation sets, loaders.

The loaders hand out uint8 images (B, 3, H, W); `normalise` turns them into the network's input
on the device, so a host-to-GPU copy moves a quarter of the bytes and the workers do no float work.
Loaders are made once per run and kept (with their worker processes) across epochs: the batches
of a pass come from a sampler that is told the epoch, or given the batches, before the pass.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, default_collate

from ..utils.errors import UserError
from .cache import BadImage, DirectImages, ImageCache
from .groups import form_groups, select_prompts, shard_groups
from .records import Record
from .split import split_records

ImageStore = ImageCache | DirectImages
Item = tuple[int, int, bool]  # (dataset id, index into its records, horizontal flip)
Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # uint8 images, labels, dataset ids


@dataclass
class SplitDataset:
    """One dataset: all its records, one image store over them, and its train/test indices."""

    name: str
    records: list[Record]
    store: ImageStore
    train: list[int]
    test: list[int]

    @classmethod
    def from_records(
        cls, name: str, records: list[Record], store: ImageStore, seed: int, bad: Sequence[BadImage] | None = None
    ) -> "SplitDataset":
        """Split by the published recipe, then leave out the unreadable images (`bad`, by default the
        ones the store found)."""
        train_units = {r.unit for r in split_records(records, seed)[0]}
        unusable = {b.index for b in (store.bad if bad is None else bad)}
        usable = [i for i in range(len(records)) if i not in unusable]
        train = [i for i in usable if records[i].unit in train_units]
        test = [i for i in usable if records[i].unit not in train_units]
        return cls(name, records, store, train, test)

    def labels(self, indices: Sequence[int]) -> list[float]:
        return [self.records[i].label for i in indices]


def normalise(images: torch.Tensor) -> torch.Tensor:
    """uint8 RGB (..., 3, H, W) -> float32 in [-1, 1]: the arithmetic of `data.image.to_tensor`,
    step for step, so the result is bit for bit the same."""
    return (images.float() / 255 - 0.5) / 0.5


@dataclass
class FailedItem:
    """An item a loader worker could not produce, carrying the user's error to the main process."""

    error: UserError


class GroupedImages(Dataset):
    """Items (dataset id, index, flip) -> (uint8 image (3, H, W), label, dataset id)."""

    def __init__(self, datasets: Sequence[SplitDataset]):
        self.datasets = list(datasets)

    def __len__(self) -> int:
        return sum(len(d.records) for d in self.datasets)

    def __getitem__(self, item: Item) -> tuple[torch.Tensor, torch.Tensor, int] | FailedItem:
        dataset_id, index, flip = item
        dataset = self.datasets[dataset_id]
        try:
            image = dataset.store[index]  # (H, W, 3)
        except UserError as error:
            error.args = (f"dataset {dataset.name}: {error}", *error.args[1:])
            return FailedItem(error)
        if flip:
            # Horizontal, along the width: the published code flipped the rows, i.e. vertically (docs/model.md 5).
            image = np.ascontiguousarray(image[:, ::-1])
        label = torch.tensor(dataset.records[index].label, dtype=torch.float32)
        return torch.from_numpy(image).movedim(-1, -3), label, dataset_id


def collate(items: list) -> Batch | FailedItem:
    """Stack the items of a batch, or pass on the first item that failed."""
    failed = next((item for item in items if isinstance(item, FailedItem)), None)
    return failed if failed is not None else default_collate(items)


class EpochGroups(Sampler[list[Item]]):
    """This process's training groups, one per step, re-formed by `set_epoch`."""

    def __init__(self, datasets: Sequence[SplitDataset], group_size: int, seed: int, rank: int, world_size: int):
        self.datasets, self.group_size, self.seed = list(datasets), group_size, seed
        self.rank, self.world_size = rank, world_size
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        self.batches = epoch_batches(self.datasets, self.group_size, self.seed, epoch, self.rank, self.world_size)

    def __iter__(self) -> Iterator[list[Item]]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


class GivenBatches(Sampler[list[Item]]):
    """Whatever batches were last given to `set_batches` (evaluation passes)."""

    def __init__(self) -> None:
        self.batches: list[list[Item]] = []

    def set_batches(self, batches: list[list[Item]]) -> None:
        self.batches = batches

    def __iter__(self) -> Iterator[list[Item]]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


class ImageLoader(DataLoader):
    """A DataLoader over GroupedImages that re-raises a worker's UserError as itself, and draws from
    the global torch generator once per pass whatever the number of workers.

    The draw: a new DataLoader iterator takes its workers' base seed from the global generator (the
    one dropout uses), and a loader with persistent workers makes its iterator only once. This
    loader takes that seed from its own generator instead and draws the one number itself on every
    pass, so the network's random stream is what it was with a fresh loader per pass, for any number
    of workers, and a resumed run (whose loaders are new) stays in step with an uninterrupted one.
    """

    def __init__(self, datasets: Sequence[SplitDataset], batches: EpochGroups | GivenBatches, workers: int,
                 pin_memory: bool = False):
        super().__init__(
            GroupedImages(datasets), batch_sampler=batches, num_workers=workers, collate_fn=collate,
            pin_memory=pin_memory, persistent_workers=workers > 0, generator=torch.Generator(),
        )

    def __iter__(self) -> Iterator[Batch]:
        torch.empty((), dtype=torch.int64).random_()
        for batch in super().__iter__():
            if isinstance(batch, FailedItem):
                raise batch.error
            yield batch


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


@dataclass
class EvalSet:
    """A dataset's test images and the fixed prompt set that scores them (docs/training.md 4)."""

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


def unflipped_batches(dataset_id: int, indices: Sequence[int], batch_size: int) -> list[list[Item]]:
    """Unflipped images of one dataset, in the given order, in batches."""
    items = [(dataset_id, i, False) for i in indices]
    return [items[s : s + batch_size] for s in range(0, len(items), batch_size)]


def image_batches(
    datasets: Sequence[SplitDataset], dataset_id: int, indices: Sequence[int], batch_size: int, workers: int = 0
) -> Iterator[Batch]:
    """One pass, with a loader of its own, over unflipped images of one dataset in the given order:
    normalised float images (B, 3, H, W), labels and dataset ids."""
    batches = GivenBatches()
    batches.set_batches(unflipped_batches(dataset_id, indices, batch_size))
    for images, labels, dataset_ids in ImageLoader(datasets, batches, workers):
        yield normalise(images), labels, dataset_ids

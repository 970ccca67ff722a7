"""Training data plumbing: splits without unreadable images, per-epoch groups, flips, prompt sets, and
the loaders: uint8 images normalised as the published pre-processing, workers kept across epochs,
errors of a worker re-raised as themselves."""
from __future__ import annotations

import multiprocessing
import pickle

import numpy as np
import pytest
import torch
from conftest import write_image
from torch.utils.data import DataLoader

from PromptIQA.data.cache import BadImage, DirectImages
from PromptIQA.data.image import ImageError, load_images
from PromptIQA.data.loader import (
    EpochGroups,
    GivenBatches,
    GroupedImages,
    ImageLoader,
    SplitDataset,
    epoch_batches,
    eval_sets,
    normalise,
    unflipped_batches,
)
from PromptIQA.data.records import Record
from PromptIQA.data.split import split_records
from PromptIQA.utils.errors import UserError


@pytest.fixture
def datasets(tmp_path):
    made = []
    for d, count in enumerate([10, 7]):
        paths = [str(write_image(tmp_path / f"d{d}" / f"{i}.png", seed=d * 50 + i)) for i in range(count)]
        records = [Record(p, (i + 1) / (count + 1), i) for i, p in enumerate(paths)]
        made.append(SplitDataset.from_records(f"d{d}", records, DirectImages(paths, 16), seed=3))
    return made


def test_split_is_the_published_one_minus_unreadable_images(tmp_path):
    paths = [str(write_image(tmp_path / f"{i}.png", seed=i)) for i in range(10)]
    records = [Record(p, 0.5, i) for i, p in enumerate(paths)]
    store = DirectImages(paths, 16)
    store.bad = [BadImage(2, paths[2], "broken"), BadImage(7, paths[7], "broken")]
    dataset = SplitDataset.from_records("x", records, store, seed=5)
    train, test = split_records(records, 5)
    assert [records[i] for i in dataset.train] == [r for r in train if r.unit not in (2, 7)]
    assert [records[i] for i in dataset.test] == [r for r in test if r.unit not in (2, 7)]


def test_epoch_batches_depend_on_seed_and_epoch_only(datasets):
    first = epoch_batches(datasets, 2, seed=1, epoch=0, rank=0, world_size=1)
    assert first == epoch_batches(datasets, 2, seed=1, epoch=0, rank=0, world_size=1)
    assert first != epoch_batches(datasets, 2, seed=1, epoch=1, rank=0, world_size=1)
    for group in first:
        assert len(group) == 2 and len({d for d, _, _ in group}) == 1
        assert all(i in datasets[d].train for d, i, _ in group)


def test_every_rank_gets_the_same_number_of_groups(datasets):
    shards = [epoch_batches(datasets, 2, seed=1, epoch=0, rank=r, world_size=3) for r in range(3)]
    assert len({len(s) for s in shards}) == 1
    items = [tuple(sorted((d, i) for d, i, _ in g)) for s in shards for g in s]
    assert len(items) == len(set(items))


def test_flip_is_horizontal(datasets):
    images = GroupedImages(datasets)
    index = datasets[0].train[0]
    plain, label, dataset_id = images[(0, index, False)]
    flipped, _, _ = images[(0, index, True)]
    assert plain.shape == (3, 16, 16) and plain.dtype == torch.uint8
    assert np.array_equal(flipped.numpy(), plain.numpy()[:, :, ::-1]) and dataset_id == 0  # along the width
    assert label.item() == pytest.approx(datasets[0].records[index].label)


def test_uint8_batches_normalised_on_the_device_equal_the_published_preprocessing(datasets):
    dataset = datasets[0]
    batches = GivenBatches()
    batches.set_batches(unflipped_batches(0, dataset.train, batch_size=4))
    loader = ImageLoader(datasets, batches, workers=0)
    images = torch.cat([normalise(x) for x, _, _ in loader])
    expected = load_images([dataset.records[i].path for i in dataset.train], 16)  # read_image + to_tensor
    assert images.dtype == torch.float32 and torch.equal(images, expected)


def test_eval_sets_take_prompts_from_training_images(datasets):
    for eval_set, dataset in zip(eval_sets(datasets, 3), datasets):
        labels = dataset.labels(dataset.train)
        assert set(eval_set.prompts) <= set(dataset.train) and len(eval_set.prompts) == 3
        assert min(eval_set.prompt_labels) == min(labels) and max(eval_set.prompt_labels) == max(labels)
        assert eval_set.test == dataset.test


def labels_of(batches, datasets):
    return [[datasets[d].records[i].label for d, i, _ in group] for group in batches]


def test_a_kept_loader_follows_the_epochs_with_the_same_workers(datasets):
    groups = EpochGroups(datasets, 2, seed=1, rank=0, world_size=1)
    loader = ImageLoader(datasets, groups, workers=2)
    workers = []
    for epoch in range(3):
        groups.set_epoch(epoch)
        seen = [labels.tolist() for _, labels, _ in loader]
        expected = labels_of(epoch_batches(datasets, 2, seed=1, epoch=epoch, rank=0, world_size=1), datasets)
        assert np.allclose(seen, expected)
        workers.append(sorted(p.pid for p in multiprocessing.active_children()))
    assert len(workers[0]) >= 2 and workers[0] == workers[1] == workers[2]


def rng_after_passes(make_loader, passes: int) -> torch.Tensor:
    torch.manual_seed(0)
    loader = make_loader()
    for _ in range(passes):
        list(loader)
    return torch.get_rng_state()


@pytest.mark.parametrize("workers", [0, 2])
def test_each_pass_draws_once_from_the_global_generator_as_a_fresh_loader_does(datasets, workers):
    batches = GivenBatches()
    batches.set_batches(unflipped_batches(0, datasets[0].test, batch_size=2))
    kept = rng_after_passes(lambda: ImageLoader(datasets, batches, workers), passes=3)
    fresh = rng_after_passes(lambda: DataLoader(GroupedImages(datasets), batch_sampler=batches.batches), passes=3)
    assert torch.equal(kept, fresh)


class ImageUnusable(UserError):
    """An error type whose constructor does not take its message."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = path, reason


def test_user_errors_pickle_as_themselves():
    error = pickle.loads(pickle.dumps(ImageUnusable("a.png", "truncated")))
    assert type(error) is ImageUnusable and str(error) == "a.png: truncated"
    assert (error.path, error.reason) == ("a.png", "truncated")


@pytest.mark.parametrize("workers", [0, 2])
def test_a_worker_error_reaches_the_main_process_as_itself(datasets, tmp_path, workers):
    broken = datasets[1].records[datasets[1].test[0]].path
    with open(broken, "wb") as f:
        f.write(b"\x89PNG not an image")
    batches = GivenBatches()
    batches.set_batches(unflipped_batches(1, datasets[1].test, batch_size=2))
    with pytest.raises(ImageError) as caught:
        list(ImageLoader(datasets, batches, workers))
    assert type(caught.value) is ImageError
    assert str(caught.value).startswith(f"dataset d1: {broken}: ") and "Traceback" not in str(caught.value)

"""Training data plumbing: splits without unreadable images, per-epoch groups, flips, prompt sets."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import write_image
from PromptIQA.data.cache import BadImage, DirectImages
from PromptIQA.data.loader import GroupedImages, SplitDataset, epoch_batches, eval_sets
from PromptIQA.data.records import Record
from PromptIQA.data.split import split_records


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
    assert np.array_equal(flipped.numpy(), plain.numpy()[:, :, ::-1]) and dataset_id == 0
    assert label.item() == pytest.approx(datasets[0].records[index].label)


def test_eval_sets_take_prompts_from_training_images(datasets):
    for eval_set, dataset in zip(eval_sets(datasets, 3), datasets):
        labels = dataset.labels(dataset.train)
        assert set(eval_set.prompts) <= set(dataset.train) and len(eval_set.prompts) == 3
        assert min(eval_set.prompt_labels) == min(labels) and max(eval_set.prompt_labels) == max(labels)
        assert eval_set.test == dataset.test

"""Training groups, their distribution over processes, and the choice of prompts.

A group is `group_size` training images of one dataset (docs/training.md, Batches); every process
takes one group per step. Prompts for evaluation come from a dataset's training images (spec
docs/training.md, Evaluation).
"""
from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np

from ..utils.errors import UserError

Group = tuple[Hashable, list[int]]


def _as_mapping(dataset_sizes: Sequence[int] | Mapping[Hashable, int]) -> Mapping[Hashable, int]:
    return dataset_sizes if isinstance(dataset_sizes, Mapping) else dict(enumerate(dataset_sizes))


def _describe_sizes(sizes: Mapping[Hashable, int]) -> str:
    return ", ".join(f"{name}: {size}" for name, size in sizes.items())


def form_groups(
    dataset_sizes: Sequence[int] | Mapping[Hashable, int],
    group_size: int,
    rng: np.random.Generator | int | Sequence[int],
) -> list[Group]:
    """Cut every dataset's training indices into shuffled groups and shuffle the pooled groups.

    dataset_sizes: number of training images per dataset; a list identifies datasets by position,
        a mapping by its keys (e.g. names).
    rng: a numpy Generator, or a seed for one. Pass `np.random.default_rng([seed, epoch])` so that
        the groups of an epoch depend only on (seed, epoch) and a resumed run re-forms them exactly.
        Draws, in order: one permutation per dataset (in the order of `dataset_sizes`), then one
        permutation of the pool.

    Returns (dataset id, indices into that dataset's training list) per group. Datasets mix across
    groups, never inside one; each dataset's incomplete last group is dropped.
    """
    if group_size < 1:
        raise UserError(f"the per-process batch size must be at least 1, got {group_size}")
    sizes = _as_mapping(dataset_sizes)
    too_small = {name: size for name, size in sizes.items() if size < group_size}
    if too_small:
        raise UserError(
            f"per-process batch size {group_size} is larger than the training set of {_describe_sizes(too_small)} "
            "images, which would never be trained on; lower the batch size or leave those datasets out"
        )
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    pool: list[Group] = []
    for dataset_id, size in sizes.items():
        order = rng.permutation(size)
        # docs/training.md, Batches: the incomplete last group is dropped in training.
        for start in range(0, size - group_size + 1, group_size):
            pool.append((dataset_id, order[start : start + group_size].tolist()))
    return [pool[i] for i in rng.permutation(len(pool))]


def shard_groups(
    groups: Sequence[Group],
    rank: int,
    world_size: int,
    dataset_sizes: Sequence[int] | Mapping[Hashable, int] | None = None,
) -> list[Group]:
    """The groups of process `rank`: groups rank, rank + world_size, ... of the truncated pool.

    The pool is cut to a multiple of `world_size` so that every process runs the same number of
    steps: a collective call (gradient all-reduce) would hang if one process had a step more.
    `dataset_sizes` only serves the error message.
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is outside [0, {world_size})")
    if len(groups) < world_size:
        sizes = "" if dataset_sizes is None else f" ({_describe_sizes(_as_mapping(dataset_sizes))} training images)"
        raise UserError(
            f"the batch size is too large for the datasets{sizes}: they give {len(groups)} groups per "
            f"epoch for {world_size} processes; lower the batch size or use fewer processes"
        )
    usable = len(groups) - len(groups) % world_size
    return list(groups[rank:usable:world_size])


def select_prompts(labels: Sequence[float], n: int, mode: str = "fixed", seed: int | None = None) -> list[int]:
    """Indices (into `labels`, a dataset's training list) of the n images used as prompts.

    "fixed" is the published rule over the images sorted by label (docs/training.md, Evaluation):
    the lowest, then step = (U - 2) // (n - 2) and the images at step, 2*step, ... until n - 1 are
    taken, then the highest. n = 2 gives the lowest and the highest; n = 1, which the rule does
    not cover, gives the median (the lower one for even U).
    "random" draws n distinct images with a generator seeded by `seed`.
    """
    count = len(labels)
    if n < 1:
        raise UserError(f"the number of prompts must be at least 1, got {n}; raise the batch size")
    if n > count:
        raise UserError(
            f"{n} prompts requested but the dataset has only {count} training images; lower the batch size"
        )
    if mode == "random":
        return np.random.default_rng(seed).choice(count, size=n, replace=False).tolist()
    if mode != "fixed":
        raise UserError(f"unknown prompt selection mode {mode!r}; use 'fixed' or 'random'")
    by_label = sorted(range(count), key=labels.__getitem__)
    if n == 1:
        return [by_label[(count - 1) // 2]]
    if n == 2:
        return [by_label[0], by_label[-1]]
    step = (count - 2) // (n - 2)
    return [by_label[0]] + [by_label[k * step] for k in range(1, n - 1)] + [by_label[-1]]

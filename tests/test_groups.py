import numpy as np
import pytest

from PromptIQA.data.groups import form_groups, select_prompts, shard_groups
from PromptIQA.utils.errors import UserError


def epoch_rng(epoch: int, seed: int = 2024) -> np.random.Generator:
    return np.random.default_rng([seed, epoch])


def test_groups_cover_each_dataset_once_in_complete_groups():
    sizes = [23, 10, 7]
    groups = form_groups(sizes, 5, epoch_rng(0))
    assert all(len(indices) == 5 for _, indices in groups)
    for dataset, size in enumerate(sizes):
        used = [i for d, indices in groups if d == dataset for i in indices]
        assert len(used) == size // 5 * 5  # incomplete last group dropped
        assert len(set(used)) == len(used)
        assert all(0 <= i < size for i in used)


def test_mapping_keys_identify_datasets():
    groups = form_groups({"livec": 8, "koniq10k": 12}, 4, epoch_rng(0))
    assert sorted(d for d, _ in groups) == ["koniq10k"] * 3 + ["livec"] * 2


def test_groups_never_mix_datasets_but_the_pool_does():
    groups = form_groups([40, 40], 4, epoch_rng(0))
    datasets = [d for d, _ in groups]
    assert datasets != sorted(datasets)  # pooled groups are shuffled across datasets
    assert sorted(datasets) == [0] * 10 + [1] * 10


def test_groups_depend_only_on_seed_and_epoch():
    assert form_groups([30, 17], 4, epoch_rng(3)) == form_groups([30, 17], 4, epoch_rng(3))
    assert form_groups([30, 17], 4, epoch_rng(3)) != form_groups([30, 17], 4, epoch_rng(4))
    assert form_groups([30, 17], 4, [2024, 3]) == form_groups([30, 17], 4, epoch_rng(3))


def test_dataset_smaller_than_a_group_is_an_error():
    with pytest.raises(UserError, match="tiny: 3"):
        form_groups({"big": 100, "tiny": 3}, 4, epoch_rng(0))


@pytest.mark.parametrize("world_size", [1, 2, 3, 4, 7])
@pytest.mark.parametrize("pool_size", [7, 8, 13, 29])
def test_shards_are_equal_disjoint_and_cover_the_truncated_pool(world_size, pool_size):
    groups = [(k % 3, [k]) for k in range(pool_size)]
    shards = [shard_groups(groups, rank, world_size) for rank in range(world_size)]
    assert len({len(shard) for shard in shards}) == 1
    taken = [indices[0] for shard in shards for _, indices in shard]
    assert len(set(taken)) == len(taken)
    assert sorted(taken) == list(range(pool_size - pool_size % world_size))
    assert shards[1 % world_size][0] == groups[1 % world_size]


def test_fewer_groups_than_processes_is_an_error_naming_the_sizes():
    groups = form_groups({"csiq": 10}, 4, epoch_rng(0))
    with pytest.raises(UserError, match=r"batch size is too large.*csiq: 10"):
        shard_groups(groups, 0, 4, dataset_sizes={"csiq": 10})


def test_fixed_prompts_follow_the_published_rule():
    labels = [0.9, 0.1, 0.5, 0.3, 0.7, 0.2, 0.8, 0.4, 0.6, 0.05, 0.95]
    # Sorted by label, positions of the input: 9, 1, 5, 3, 7, 2, 8, 4, 6, 0, 10.
    # U = 11, n = 5: step = 9 // 3 = 3, so sorted positions 0, 3, 6, 9 and the last (10).
    assert select_prompts(labels, 5) == [9, 3, 8, 0, 10]
    # n = 4: step = 9 // 2 = 4 -> sorted positions 0, 4, 8, 10.
    assert select_prompts(labels, 4) == [9, 7, 6, 10]
    assert select_prompts(labels, 11) == [9, 1, 5, 3, 7, 2, 8, 4, 6, 0, 10]


def published_fixed_prompts(labels, n):
    """The published loop, over positions in the label-sorted list."""
    order = sorted(range(len(labels)), key=labels.__getitem__)
    positions = [0]
    step = (len(labels) - 2) // (n - 2)
    for position in range(step, len(labels), step):
        if len(positions) == n - 1:
            break
        positions.append(position)
    positions.append(len(labels) - 1)
    return [order[p] for p in positions]


def test_fixed_prompts_match_the_published_loop():
    rng = np.random.default_rng(0)
    for count in (3, 4, 10, 57, 200):
        labels = rng.random(count).tolist()
        for n in range(3, count + 1, max(1, count // 9)):
            assert select_prompts(labels, n) == published_fixed_prompts(labels, n), (count, n)


def test_ties_keep_the_input_order():
    assert select_prompts([0.5, 0.5, 0.5, 0.5], 3) == [0, 2, 3]


def test_one_and_two_prompts():
    labels = [0.9, 0.1, 0.5, 0.3, 0.7]
    assert select_prompts(labels, 2) == [1, 0]
    assert select_prompts(labels, 1) == [2]  # the median
    assert select_prompts([0.4, 0.1, 0.3, 0.2], 1) == [3]  # the lower median


def test_more_prompts_than_images_is_an_error():
    with pytest.raises(UserError, match="only 3 training images"):
        select_prompts([0.1, 0.2, 0.3], 4)
    with pytest.raises(UserError):
        select_prompts([0.1, 0.2, 0.3], 2, mode="best")


def test_random_prompts_are_distinct_and_reproducible():
    labels = np.linspace(0, 1, 50).tolist()
    chosen = select_prompts(labels, 9, mode="random", seed=7)
    assert len(set(chosen)) == 9 and all(0 <= i < 50 for i in chosen)
    assert chosen == select_prompts(labels, 9, mode="random", seed=7)
    assert chosen != select_prompts(labels, 9, mode="random", seed=8)

import pytest
import torch

from PromptIQA.data.augment import LabelTransform, augment_labels, draw_label_transform


def group_labels() -> torch.Tensor:
    return torch.tensor([0.2, 0.65, 0.1, 0.4, 0.3])


def generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_rates_zero_leave_labels_alone():
    for seed in range(20):
        labels, transform = augment_labels(group_labels(), 0.0, 0.0, generator(seed))
        assert transform == LabelTransform()
        assert torch.equal(labels, group_labels())


def test_scaling_keeps_order_and_stays_within_one():
    for seed in range(50):
        labels, transform = augment_labels(group_labels(), 1.0, 0.0, generator(seed))
        assert 0.65 <= transform.scale <= 1 and not transform.flipped
        assert torch.equal(labels.argsort(), group_labels().argsort())
        assert labels.max() <= 1 and torch.all(labels >= group_labels())
        assert torch.allclose(labels, group_labels() / transform.scale)


def test_scaling_draws_t_uniformly_between_max_label_and_one():
    scales = torch.tensor([draw_label_transform(group_labels(), 1.0, 0.0, generator(s)).scale for s in range(400)])
    assert scales.min() >= 0.65 and scales.max() <= 1
    assert scales.mean() == pytest.approx((0.65 + 1) / 2, abs=0.02)


def test_flipping_at_rate_one():
    labels, transform = augment_labels(group_labels(), 0.0, 1.0, generator())
    assert transform == LabelTransform(scale=1.0, flipped=True)
    assert torch.allclose(labels, 1 - group_labels())


def test_scaling_comes_before_flipping():
    labels, transform = augment_labels(group_labels(), 1.0, 1.0, generator(3))
    assert transform.flipped and transform.scale < 1
    assert torch.allclose(labels, 1 - group_labels() / transform.scale)


@pytest.mark.parametrize("scale_rate, flip_rate", [(0.5, 0.1), (1.0, 1.0), (1.0, 0.0), (0.0, 1.0)])
def test_invert_recovers_labels(scale_rate, flip_rate):
    for seed in range(30):
        labels, transform = augment_labels(group_labels(), scale_rate, flip_rate, generator(seed))
        assert torch.allclose(transform.invert(labels), group_labels(), atol=1e-6)


def test_rates_are_respected_on_average():
    g = generator(1)
    transforms = [draw_label_transform(group_labels(), 0.5, 0.1, g) for _ in range(2000)]
    assert sum(t.scale != 1 for t in transforms) / 2000 == pytest.approx(0.5, abs=0.04)
    assert sum(t.flipped for t in transforms) / 2000 == pytest.approx(0.1, abs=0.02)


def test_same_generator_state_gives_same_draws_whatever_the_outcome():
    first, second = generator(5), generator(5)
    augment_labels(group_labels(), 0.0, 0.0, first)
    augment_labels(group_labels(), 1.0, 1.0, second)
    assert torch.equal(torch.rand(4, generator=first), torch.rand(4, generator=second))
    (labels_a, transform_a), (labels_b, transform_b) = (
        augment_labels(group_labels(), 0.5, 0.5, generator(9)) for _ in range(2)
    )
    assert transform_a == transform_b and torch.equal(labels_a, labels_b)

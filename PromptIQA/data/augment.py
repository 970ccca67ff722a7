"""Label augmentations of one group (docs/training.md, Label augmentations)."""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class LabelTransform:
    """labels -> (labels / scale), then 1 - that if flipped; `invert` undoes it."""

    scale: float = 1.0
    flipped: bool = False

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        x = x / self.scale
        return 1 - x if self.flipped else x

    def invert(self, x: torch.Tensor) -> torch.Tensor:
        """Map predictions or augmented labels back to the dataset's label scale."""
        x = 1 - x if self.flipped else x
        return x * self.scale


def draw_label_transform(
    labels: torch.Tensor, scale_rate: float, flip_rate: float, generator: torch.Generator | None = None
) -> LabelTransform:
    """Draw the random scaling and flipping of a group with labels in [0, 1].

    Three numbers are drawn from `generator` on every call, whatever the outcome, so the stream stays
    aligned across groups: u_scale, u_t, u_flip = torch.rand(3). Scaling happens if
    u_scale < scale_rate, with t = max(labels) + (1 - max(labels)) * u_t, i.e. t ~ U[max label, 1];
    flipping happens if u_flip < flip_rate.
    """
    u_scale, u_t, u_flip = torch.rand(3, generator=generator, dtype=torch.float64).tolist()
    top = float(labels.max())
    scale = 1.0
    # An all-zero group cannot be stretched, and t = 0 would divide by zero.
    if u_scale < scale_rate and top > 0:
        scale = top + (1 - top) * u_t
    return LabelTransform(scale=scale, flipped=u_flip < flip_rate)


def augment_labels(
    labels: torch.Tensor, scale_rate: float, flip_rate: float, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, LabelTransform]:
    """Randomly scale, then randomly flip, the labels of one group; returns them and the transform."""
    transform = draw_label_transform(labels, scale_rate, flip_rate, generator)
    return transform.apply(labels), transform

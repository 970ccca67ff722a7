"""Scoring the test split of each dataset under its prompt set, shared out over the processes."""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..data.loader import EvalSet, GivenBatches, ImageLoader, SplitDataset, image_batches, normalise, unflipped_batches
from ..models import PromptIQA
from ..utils.device import autocast
from ..utils.distributed import DistContext, all_gather_objects
from ..utils.stats import correlations
from .results import EvalResult


@dataclass
class Evaluation:
    """What every evaluation pass of a run shares: datasets, prompt sets, and one image loader kept
    (with its workers) from pass to pass."""

    datasets: Sequence[SplitDataset]
    sets: Sequence[EvalSet]
    dist: DistContext
    batch_size: int
    loader: ImageLoader
    precision: str = "fp32"

    @classmethod
    def open(
        cls,
        datasets: Sequence[SplitDataset],
        sets: Sequence[EvalSet],
        dist: DistContext,
        batch_size: int,
        workers: int = 0,
        precision: str = "fp32",
    ) -> "Evaluation":
        loader = ImageLoader(datasets, GivenBatches(), workers, pin_memory=dist.device.type == "cuda")
        return cls(datasets, sets, dist, batch_size, loader, precision)

    def images(self, dataset_id: int, indices: Sequence[int]) -> Iterator[torch.Tensor]:
        """Normalised images of one dataset on the device, in the given order, in batches."""
        self.loader.batch_sampler.set_batches(unflipped_batches(dataset_id, indices, self.batch_size))
        for images, _, _ in self.loader:
            yield normalise(images.to(self.dist.device, non_blocking=True))


@torch.no_grad()
def evaluate(model: PromptIQA, evaluation: Evaluation) -> list[EvalResult]:
    """Score each dataset's test images against its prompt set, shared out over the processes.

    Process r scores test images r, r + world, ...; the predictions of all processes are gathered
    and put back in order, so every image is counted exactly once (no padded repeats).
    """
    ctx, datasets = evaluation.dist, evaluation.datasets
    was_training = model.training
    model.eval()
    results = []
    for eval_set in evaluation.sets:
        mine = list(range(ctx.rank, len(eval_set.test), ctx.world_size))
        with autocast(ctx.device, evaluation.precision):
            prompt_images = torch.cat(list(evaluation.images(eval_set.dataset_id, eval_set.prompts)))
            prompts = model.encode_prompts(prompt_images, torch.tensor(eval_set.prompt_labels))
            scores = [
                model.score_images(images, prompts).float()
                for images in evaluation.images(eval_set.dataset_id, [eval_set.test[i] for i in mine])
            ]
        local = (mine, torch.cat(scores).cpu().numpy() if scores else np.zeros(0, dtype=np.float32))
        predictions = np.zeros(len(eval_set.test), dtype=np.float32)
        for positions, values in all_gather_objects(local, ctx):
            predictions[positions] = values
        labels = np.asarray(eval_set.test_labels, dtype=np.float32)
        paths = [datasets[eval_set.dataset_id].records[i].path for i in eval_set.test]
        results.append(EvalResult(eval_set.name, *correlations(predictions, labels), paths, predictions, labels))
    model.train(was_training)
    return results



@torch.no_grad()
def dataset_features(
    model: PromptIQA, datasets: Sequence[SplitDataset], dataset_id: int, indices: Sequence[int],
    batch_size: int, workers: int,
) -> torch.Tensor:
    """Image features (n, 128) of one dataset's images, in the given order (one process)."""
    device = next(model.parameters()).device
    batches = image_batches(datasets, dataset_id, indices, batch_size, workers)
    return torch.cat([model.image_features(x.to(device)) for x, _, _ in batches])

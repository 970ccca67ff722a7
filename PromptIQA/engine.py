"""One training epoch and one evaluation pass, as the published recipe runs them (docs/training.md).

Neither waits on the device step by step: losses, predictions and scores stay on the device and
are read in one go at logging intervals and at the end of the pass.
"""
from __future__ import annotations

import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from .data.augment import augment_labels
from .data.loader import EvalSet, GivenBatches, ImageLoader, SplitDataset, normalise, unflipped_batches
from .distributed import DistContext, all_gather_objects
from .errors import UserError
from .metrics import correlations
from .models import PromptIQA
from .runtime import autocast

if TYPE_CHECKING:
    from .training import Run

# Steps between two reads of the losses from the device (progress display and finiteness check).
LOG_EVERY = 20


class NonFiniteLoss(UserError):
    """Training diverged; the message names the epoch, step and dataset."""


def cosine_lr(base_lr: float, epoch: int, epochs: int) -> float:
    """Half-cosine over the epochs, set once per epoch (docs/training.md 1)."""
    return base_lr * 0.5 * (1 + math.cos(math.pi * epoch / epochs))


@dataclass
class EpochStats:
    loss: float
    srcc: float
    plcc: float
    images: int
    seconds: float


def check_losses(losses: list[torch.Tensor], first: int, epoch: int, dataset_names: list[str]) -> torch.Tensor:
    """The losses of steps first.. on the host; NonFiniteLoss naming the first step that diverged."""
    window = torch.stack(losses[first:]).cpu()
    bad = torch.nonzero(~torch.isfinite(window))
    if len(bad):
        step = first + int(bad[0])
        raise NonFiniteLoss(
            f"the loss became {window[step - first].item()} at epoch {epoch}, step {step} (dataset "
            f"{dataset_names[step]}; found when reading steps {first}-{len(losses) - 1}); lower --lr or check "
            "that dataset's labels"
        )
    return window


def train_one_epoch(run: Run, epoch: int) -> EpochStats:
    """Each step: one group per process, labels augmented per group, L1 loss, Adam step.

    Training SRCC/PLCC are computed on predictions and labels mapped back through the group's
    augmentation, gathered from all processes.
    """
    ctx, optim = run.dist, run.config.optim
    run.network.train()
    run.train_batches.batch_sampler.set_epoch(epoch)
    label_rng = torch.Generator().manual_seed(run.config.seed * 100_003 + epoch * 1009 + ctx.rank)
    losses: list[torch.Tensor] = []
    predictions: list[torch.Tensor] = []
    labels: list[torch.Tensor] = []
    dataset_names: list[str] = []
    checked, data_wait = 0, 0.0
    start = last = time.perf_counter()
    bar = tqdm(run.train_batches, desc=f"epoch {epoch}", unit="step", disable=not ctx.is_main, leave=False)
    for step, (images, targets, dataset_ids) in enumerate(bar):
        data_wait += time.perf_counter() - last
        targets, transform = augment_labels(targets, optim.random_scale_rate, optim.random_flipping_rate, label_rng)
        images = normalise(images.to(ctx.device, non_blocking=True))
        device_targets = targets.to(ctx.device, non_blocking=True)
        with autocast(ctx.device, run.precision):
            output = run.network(images, device_targets)
        loss = F.l1_loss(output.float(), device_targets)  # in fp32 whatever the forward ran in
        run.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        run.optimizer.step()

        losses.append(loss.detach())
        predictions.append(transform.invert(output.detach().float()))
        labels.append(transform.invert(targets))
        dataset_names.append(run.datasets[int(dataset_ids[0])].name)
        last = time.perf_counter()
        if len(losses) - checked >= LOG_EVERY:
            window = check_losses(losses, checked, epoch, dataset_names)
            checked = len(losses)
            elapsed = last - start
            bar.set_postfix(
                loss=f"{window.mean().item():.4f}",
                img_s=f"{len(losses) * len(targets) * ctx.world_size / elapsed:.1f}",
                data_wait=f"{data_wait / elapsed:.0%}",
            )
    if len(losses) > checked:
        check_losses(losses, checked, epoch, dataset_names)
    local = (np.zeros(0, dtype=np.float32), np.zeros(0, dtype=np.float32), np.zeros(0))
    if losses:
        local = (
            torch.cat(predictions).cpu().numpy(),
            torch.cat(labels).numpy(),
            torch.stack(losses).cpu().numpy().astype(np.float64),
        )
    gathered = all_gather_objects(local, ctx)
    all_predictions = np.concatenate([g[0] for g in gathered])
    srcc, plcc = correlations(all_predictions, np.concatenate([g[1] for g in gathered]))
    loss = float(np.mean(np.concatenate([g[2] for g in gathered])))
    return EpochStats(loss, srcc, plcc, len(all_predictions), time.perf_counter() - start)


@dataclass
class EvalResult:
    name: str
    srcc: float
    plcc: float
    paths: list[str]
    predictions: np.ndarray  # in the order of the dataset's test list
    labels: np.ndarray


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


def epoch_score(results: Sequence[EvalResult]) -> float:
    """Sum of SRCC + PLCC over datasets (the best epoch has the highest); undefined counts as 0."""
    return float(sum(np.nan_to_num(r.srcc) + np.nan_to_num(r.plcc) for r in results))


def format_results(results: Sequence[EvalResult]) -> str:
    """Per-dataset table: SRCC, PLCC and number of test images."""
    width = max([len("dataset")] + [len(r.name) for r in results])
    lines = [f"{'dataset':<{width}}  {'SRCC':>7}  {'PLCC':>7}  {'images':>6}"]
    lines += [f"{r.name:<{width}}  {r.srcc:7.4f}  {r.plcc:7.4f}  {len(r.labels):6d}" for r in results]
    return "\n".join(lines)

"""One training epoch and one evaluation pass, as the published recipe runs them (training.md)."""
from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from .data.augment import augment_labels
from .data.loader import EvalSet, SplitDataset, image_batches
from .distributed import DistContext, all_gather_objects
from .errors import UserError
from .metrics import correlations
from .models import PromptIQA


class NonFiniteLoss(UserError):
    """Training diverged; the message names the epoch, step and dataset."""


def cosine_lr(base_lr: float, epoch: int, epochs: int) -> float:
    """Half-cosine over the epochs, set once per epoch (training.md)."""
    return base_lr * 0.5 * (1 + math.cos(math.pi * epoch / epochs))


@dataclass
class EpochStats:
    loss: float
    srcc: float
    plcc: float
    images: int
    seconds: float


def train_one_epoch(
    model: nn.Module,
    loader: torch.utils.data.DataLoader,
    optimizer: torch.optim.Optimizer,
    epoch: int,
    datasets: Sequence[SplitDataset],
    ctx: DistContext,
    scale_rate: float,
    flip_rate: float,
    label_generator: torch.Generator,
) -> EpochStats:
    """Each step: one group per process, labels augmented per group, L1 loss, Adam step.

    Training SRCC/PLCC are computed on predictions and labels mapped back through the group's
    augmentation, gathered from all processes.
    """
    model.train()
    predictions, labels, losses = [], [], []
    start = last = time.perf_counter()
    data_wait = 0.0
    bar = tqdm(loader, desc=f"epoch {epoch}", unit="step", disable=not ctx.is_main, leave=False)
    for step, (images, targets, dataset_ids) in enumerate(bar):
        data_wait += time.perf_counter() - last
        targets, transform = augment_labels(targets, scale_rate, flip_rate, label_generator)
        images, targets = images.to(ctx.device, non_blocking=True), targets.to(ctx.device)
        output = model(images, targets)
        loss = F.l1_loss(output, targets)
        if not torch.isfinite(loss):
            raise NonFiniteLoss(
                f"the loss became {loss.item()} at epoch {epoch}, step {step} (dataset "
                f"{datasets[int(dataset_ids[0])].name}); lower --lr or check that dataset's labels"
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

        losses.append(loss.item())
        predictions.append(transform.invert(output.detach().float().cpu()))
        labels.append(transform.invert(targets.cpu()))
        last = time.perf_counter()
        elapsed = last - start
        bar.set_postfix(
            loss=f"{losses[-1]:.4f}",
            img_s=f"{len(losses) * len(targets) * ctx.world_size / elapsed:.1f}",
            data_wait=f"{data_wait / elapsed:.0%}",
        )
    local = (np.concatenate(predictions), np.concatenate(labels), losses) if losses else (np.zeros(0), np.zeros(0), [])
    gathered = all_gather_objects(local, ctx)
    all_predictions = np.concatenate([g[0] for g in gathered])
    all_losses = [x for g in gathered for x in g[2]]
    srcc, plcc = correlations(all_predictions, np.concatenate([g[1] for g in gathered]))
    return EpochStats(float(np.mean(all_losses)), srcc, plcc, len(all_predictions), time.perf_counter() - start)


@dataclass
class EvalResult:
    name: str
    srcc: float
    plcc: float
    paths: list[str]
    predictions: np.ndarray  # in the order of the dataset's test list
    labels: np.ndarray


@torch.no_grad()
def evaluate(
    model: PromptIQA,
    datasets: Sequence[SplitDataset],
    sets: Sequence[EvalSet],
    ctx: DistContext,
    batch_size: int,
    workers: int = 0,
) -> list[EvalResult]:
    """Score each dataset's test images against its prompt set, shared out over the processes.

    Process r scores test images r, r + world, ...; the predictions of all processes are gathered
    and put back in order, so every image is counted exactly once (no padded repeats).
    """
    was_training = model.training
    model.eval()
    results = []
    for eval_set in sets:
        prompt_images = torch.cat(
            [x for x, _, _ in image_batches(datasets, eval_set.dataset_id, eval_set.prompts, batch_size, workers)]
        )
        prompts = model.encode_prompts(prompt_images.to(ctx.device), torch.tensor(eval_set.prompt_labels))
        mine = list(range(ctx.rank, len(eval_set.test), ctx.world_size))
        scores = [
            model.score_images(x.to(ctx.device), prompts).float().cpu()
            for x, _, _ in image_batches(
                datasets, eval_set.dataset_id, [eval_set.test[i] for i in mine], batch_size, workers
            )
        ]
        local = (mine, torch.cat(scores).numpy() if scores else np.zeros(0, dtype=np.float32))
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

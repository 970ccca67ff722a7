"""One training epoch as the published recipe runs it (docs/training.md).

It does not wait on the device step by step: losses and predictions stay on the device and are
read in one go at logging intervals and at the end of the epoch.
"""
from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..data.augment import augment_labels
from ..data.loader import normalise
from ..evaluation.results import EpochStats
from ..utils.device import autocast
from ..utils.distributed import all_gather_objects
from ..utils.errors import UserError
from ..utils.stats import correlations

if TYPE_CHECKING:
    from .run import Run

# Steps between two reads of the losses from the device (progress display and finiteness check).
LOG_EVERY = 20


class NonFiniteLoss(UserError):
    """Training diverged; the message names the epoch, step and dataset."""


def cosine_lr(base_lr: float, epoch: int, epochs: int) -> float:
    """Half-cosine over the epochs, set once per epoch (docs/training.md 1)."""
    return base_lr * 0.5 * (1 + math.cos(math.pi * epoch / epochs))


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
        if len(losses) - checked >= LOG_EVERY:
            window = check_losses(losses, checked, epoch, dataset_names)  # waits for the device
            checked = len(losses)
            elapsed = time.perf_counter() - start
            bar.set_postfix(
                loss=f"{window.mean().item():.4f}",
                img_s=f"{len(losses) * len(targets) * ctx.world_size / elapsed:.1f}",
                data_wait=f"{data_wait / elapsed:.0%}",
            )
        last = time.perf_counter()  # after the sync above, so waiting for the device is not data wait
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



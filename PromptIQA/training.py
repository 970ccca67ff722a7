"""Setting up a training run: datasets and image stores, seeding, checkpoint contents and resume."""
from __future__ import annotations

import argparse
import random
from pathlib import Path

import numpy as np
import torch

from .checkpoint import read_checkpoint
from .data.cache import cache_root, open_images
from .data.dataset_info import DatasetEntry, check_datasets, load_dataset_info
from .data.demo import demo_dataset_info
from .data.loader import SplitDataset
from .data.records import Record
from .distributed import DistContext, all_gather_objects, barrier
from .errors import UserError
from .models import PromptIQA
from .runlog import RunLog


def read_datasets(names: list[str], dataset_info: str | Path, demo: bool = False) -> dict[str, list[Record]]:
    """The pre-flight check: every requested dataset read, all problems reported together."""
    info = load_dataset_info(dataset_info)
    if demo:
        for name, entry in demo_dataset_info().items():
            info[name] = DatasetEntry(name, entry["root"], reader=entry["reader"], source="built-in demo")
    return check_datasets(names, info)


def image_cache_dir(cache_dir: str | None) -> Path | None:
    """`none` turns the cache off; the default lives under $PROMPTIQA_CACHE (or ~/.cache/promptiqa)."""
    if cache_dir == "none":
        return None
    return Path(cache_dir) if cache_dir else cache_root() / "images"


def open_datasets(
    records: dict[str, list[Record]],
    img_size: int,
    seed: int,
    cache_dir: Path | None,
    workers: int,
    on_bad_image: str,
    ctx: DistContext,
    local_index: int,
    log: RunLog,
) -> list[SplitDataset]:
    """Split each dataset and open its image store; one process per node builds missing caches first."""

    def open_stores() -> list:
        return [
            open_images([r.path for r in recs], img_size, cache_dir, max(workers, 1), on_bad_image, ctx.is_main)
            for recs in records.values()
        ]

    if local_index != 0:
        barrier(ctx)
    stores = open_stores()
    if local_index == 0:
        barrier(ctx)
    datasets = []
    for (name, recs), store in zip(records.items(), stores):
        if store.bad:
            log.info(f"{name}: skipping {len(store.bad)} unreadable image(s), e.g. {store.bad[0].path}")
        datasets.append(SplitDataset.from_records(name, recs, store, seed))
    return datasets


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def rng_state() -> dict[str, torch.Tensor | list[torch.Tensor]]:
    """This process's torch RNG (dropout); groups, flips and label augmentations derive from the epoch."""
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []
    return {"cpu": torch.get_rng_state(), "cuda": cuda}


def checkpoint_state(
    model: PromptIQA,
    optimizer: torch.optim.Optimizer,
    epoch: int,
    best: dict,
    args: argparse.Namespace,
    prompt_num: int,
    ctx: DistContext,
) -> dict:
    """Everything `--resume` needs; called on every process (it gathers each one's RNG state)."""
    return {
        "model": model.state_dict(),
        "model_config": model.config.to_dict(),
        "prompt_num": prompt_num,
        "optimizer": optimizer.state_dict(),
        "epoch": epoch + 1,  # epochs completed
        "best": best,
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "rng": all_gather_objects(rng_state(), ctx),
    }


def resume_path(args: argparse.Namespace) -> Path | None:
    """`--resume auto` continues from save_path/last.pth.tar when there is one, else starts afresh."""
    if args.resume == "auto":
        last = Path(args.save_path) / "last.pth.tar"
        return last if last.exists() else None
    return Path(args.resume) if args.resume else None


def resume(
    path: Path, model: PromptIQA, optimizer: torch.optim.Optimizer, ctx: DistContext, log: RunLog
) -> tuple[int, dict]:
    """Load a `last.pth.tar`; returns (first epoch to run, best-so-far record)."""
    ckpt = read_checkpoint(path, flag="--resume")
    missing = {"model", "optimizer", "epoch", "best"} - set(ckpt)
    if missing:
        raise UserError(f"--resume {path}: not a training checkpoint of this project (no {', '.join(sorted(missing))})")
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    states = ckpt.get("rng", [])
    if len(states) == ctx.world_size:
        torch.set_rng_state(states[ctx.rank]["cpu"])
        if states[ctx.rank]["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(states[ctx.rank]["cuda"])
    else:
        log.info(f"resume: saved with {len(states)} process(es), now {ctx.world_size}: RNG streams start afresh")
    log.info(f"resumed from {path} after epoch {ckpt['epoch'] - 1}")
    return ckpt["epoch"], ckpt["best"]

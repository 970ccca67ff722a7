"""Setting up a training run: the pre-flight checks, datasets and image stores, seeding, the run
context every epoch shares, checkpoint contents, resume and the end-of-epoch saves."""
from __future__ import annotations

import random
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ..data.loader import EpochGroups, ImageLoader, SplitDataset, eval_sets
from ..data.prepare import open_datasets
from ..data.records import Record
from ..evaluation.evaluate import Evaluation
from ..evaluation.results import EpochStats, EvalResult, epoch_score
from ..models import ModelConfig, PromptIQA
from ..models.backbone import resolve_pretrained
from ..models.checkpoint import read_checkpoint, save_checkpoint
from ..utils.device import compile_model, resolve_precision, set_matmul_precision
from ..utils.distributed import DistContext, all_gather_objects
from ..utils.errors import UserError, naming
from .config import RunConfig, TrainConfig
from .launch import Topology
from .run_folder import RunLog, epoch_record

LAST, BEST = "last.pth.tar", "best.pth.tar"
TRAINING_KEYS = {"model", "model_config", "optimizer", "epoch", "best"}


def check_network(config: TrainConfig) -> None:
    """The pre-flight check of the network: the --pretrained file is read (a damaged file, or a pickle
    that would run code, is refused), then the network is built with those weights on the meta
    device (no memory, no arithmetic) and a batch is passed through its image path, so that a
    backbone that does not fit, or does not run at --img-size, fails before any image is cached."""
    weights = resolve_pretrained(config.pretrained, config.model.backbone)
    if weights is not None and weights.suffix != ".safetensors":
        with naming("--pretrained"):
            read_checkpoint(weights)
    size = config.model.img_size
    try:
        with torch.device("meta"), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "copying into a meta parameter is a no-op": as intended here
            model = PromptIQA(config.model, weights).eval()
            model.image_features(torch.empty(2, 3, size, size))  # the rest of the network does not depend on the size
    except (RuntimeError, ValueError, AssertionError) as error:  # how timm's backbones refuse an input size
        raise UserError(
            f"--backbone {config.model.backbone} does not run at --img-size {size} "
            f"({type(error).__name__}: {str(error).strip().splitlines()[0] if str(error).strip() else ''}); "
            "try the backbone's own image size or a multiple of its patch size, or another backbone"
        ) from error


def resume_path(run: RunConfig) -> Path | None:
    """`--resume auto` continues from save_path/last.pth.tar when there is one, else starts afresh."""
    if run.resume == "auto":
        last = Path(run.save_path) / LAST
        return last if last.exists() else None
    return Path(run.resume) if run.resume else None


# the flag that sets each ModelConfig field (prompt_num is the group size - 1: --batch_size / processes - 1)
NETWORK_FLAGS = {"backbone": "--backbone", "img_size": "--img-size", "cnn_dim": "--cnn-dim",
                  "prompt_num": "--batch_size"}


def check_same_network(saved: ModelConfig, asked: ModelConfig, path: Path) -> None:
    """Refuse to resume a run whose network had another shape, naming the setting and the fix; called
    before anything is written to the run folder."""
    for name, flag in NETWORK_FLAGS.items():
        was, now = getattr(saved, name), getattr(asked, name)
        if was == now:
            continue
        if name == "prompt_num":
            raise UserError(f"--resume {path}: that run trained in groups of {was + 1} images per process, this one "
                            f"asks for groups of {now + 1}; pass the --batch_size (and number of processes) it was "
                            "trained with to continue it, or start a new run in another --save_path")
        raise UserError(f"--resume {path}: that run trained with {flag} {was}, this one asks for {flag} {now}; "
                        f"pass {flag} {was} to continue it, or start a new run in another --save_path")


def read_training_checkpoint(path: Path, config: TrainConfig) -> dict:
    """A `last.pth.tar` this project wrote for the network `config` asks for."""
    with naming("--resume"):
        ckpt = read_checkpoint(path)
    missing = TRAINING_KEYS - set(ckpt)
    if missing:
        raise UserError(f"--resume {path}: not a training checkpoint of this project (no {', '.join(sorted(missing))})")
    check_same_network(ModelConfig.from_dict(ckpt["model_config"]), config.model, path)
    return ckpt


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def rng_state() -> dict[str, torch.Tensor | list[torch.Tensor]]:
    """This process's torch RNG (dropout); groups, flips and label augmentations derive from the epoch."""
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []
    return {"cpu": torch.get_rng_state(), "cuda": cuda}


@dataclass
class Run:
    """What the epochs of one training run share, on one process."""

    config: TrainConfig
    topology: Topology
    dist: DistContext
    log: RunLog
    datasets: list[SplitDataset]
    model: PromptIQA  # unwrapped and uncompiled: what is evaluated and saved
    network: nn.Module  # what the training step calls: the model, compiled and/or DDP-wrapped
    optimizer: torch.optim.Optimizer
    train_batches: ImageLoader
    evaluation: Evaluation
    precision: str
    start_epoch: int = 0
    best: dict = field(default_factory=lambda: {"score": -float("inf"), "epoch": None})
    history: list[dict] = field(default_factory=list)  # one epoch_record per finished epoch


def start_run(
    config: TrainConfig, topology: Topology, ctx: DistContext, records: dict[str, list[Record]], log: RunLog
) -> Run:
    """Datasets, network, optimiser and loaders of a run, resumed from `--resume` if given."""
    precision = resolve_precision(config.execution.precision, ctx.device)
    set_matmul_precision(precision)
    datasets = open_datasets(
        records, config.model.img_size, config.seed, ctx, cache_dir=config.data.cache_dir,
        workers=config.data.workers, on_bad_image=config.data.on_bad_image, log=log.info,
    )
    model = PromptIQA(config.model, config.pretrained).to(ctx.device)
    if config.execution.grad_checkpointing:
        model.set_grad_checkpointing(True)
    cuda = ctx.device.type == "cuda"
    optimizer = torch.optim.Adam(
        model.parameters(), lr=config.optim.lr, weight_decay=config.optim.weight_decay, fused=True if cuda else None
    )
    group_size = config.model.prompt_num + 1
    train_batches = ImageLoader(
        datasets, EpochGroups(datasets, group_size, config.seed, ctx.rank, ctx.world_size), config.data.workers, cuda
    )
    sets = eval_sets(datasets, config.model.prompt_num)
    evaluation = Evaluation.open(datasets, sets, ctx, config.data.eval_batch_size, config.data.workers, precision)
    run = Run(config, topology, ctx, log, datasets, model, model, optimizer, train_batches, evaluation, precision)
    checkpoint = resume_path(config.run)
    if checkpoint:
        resume(run, checkpoint)
    network = compile_model(model, config.execution.compile)  # compiled first, then wrapped
    if ctx.distributed:
        network = DistributedDataParallel(network, device_ids=[ctx.device.index] if cuda else None)
    run.network = network
    return run


def resume(run: Run, path: Path) -> None:
    """Continue from a `last.pth.tar`: weights, optimiser, epoch, best record, history and RNG state."""
    ckpt = read_training_checkpoint(path, run.config)
    run.model.load_state_dict(ckpt["model"])
    fused = [group["fused"] for group in run.optimizer.param_groups]
    run.optimizer.load_state_dict(ckpt["optimizer"])
    for group, own in zip(run.optimizer.param_groups, fused):
        group["fused"] = own  # the saved run's device may have been another
    states = ckpt.get("rng", [])
    ctx = run.dist
    if len(states) == ctx.world_size:
        torch.set_rng_state(states[ctx.rank]["cpu"])
        if states[ctx.rank]["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(states[ctx.rank]["cuda"])
    else:
        run.log.info(f"resume: saved with {len(states)} process(es), now {ctx.world_size}: RNG streams start afresh")
    run.start_epoch, run.best = ckpt["epoch"], ckpt["best"]
    run.history = list(ckpt.get("history", []))
    if ckpt["epoch"] and not run.history:
        run.log.info(f"resume: {path} holds no metrics history; metrics.csv starts at epoch {ckpt['epoch']}")
    run.log.info(f"resumed from {path} after epoch {ckpt['epoch'] - 1}")


def record_epoch(run: Run, epoch: int, lr: float, stats: EpochStats, results: list[EvalResult]) -> None:
    """Update the best record and the history with a finished epoch, and print its table."""
    if epoch_score(results) > run.best["score"]:
        run.best = {"score": epoch_score(results), "epoch": epoch}
    record = epoch_record(epoch, lr, stats, results, run.best)
    run.history.append(record)
    run.log.report_epoch(record, results)


def checkpoint_state(run: Run, epoch: int) -> dict:
    """Everything `--resume` needs; called on every process (it gathers each one's RNG state)."""
    return {
        "model": run.model.state_dict(),
        "model_config": run.model.config.to_dict(),
        "prompt_num": run.model.prompt_num,
        "optimizer": run.optimizer.state_dict(),
        "epoch": epoch + 1,  # epochs completed
        "best": run.best,
        "history": run.history,
        "config": run.config.to_dict(),
        "topology": run.topology.to_dict(),
        "rng": all_gather_objects(rng_state(), run.dist),
    }


def save_epoch(run: Run, epoch: int, results: list[EvalResult]) -> None:
    """Checkpoints, then metrics, then predictions.

    best.pth.tar comes before last.pth.tar, so a saved state never names a best file that is not on
    disk; the metrics are rewritten from the history the checkpoint now holds, so however a run
    stops, the resumed one lists each epoch once.
    """
    state = checkpoint_state(run, epoch)
    if run.dist.is_main:
        folder = Path(run.config.run.save_path)
        if run.best["epoch"] == epoch:
            save_checkpoint(state, folder / BEST)
        save_checkpoint(state, folder / LAST)
    run.log.write_metrics(run.history)
    run.log.predictions(results)

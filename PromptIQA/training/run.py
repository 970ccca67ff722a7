"""Setting up a training run: the pre-flight checks, datasets and image stores, seeding, the run
context every epoch shares, checkpoint contents, resume and the end-of-epoch saves."""
from __future__ import annotations

import os
import random
import shutil
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
from ..utils.device import compile_model, resolve_precision
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
    if weights is not None and weights.path.suffix != ".safetensors":
        with naming("--pretrained"):
            read_checkpoint(weights.path)
    size = config.model.img_size
    try:
        with torch.device("meta"), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "copying into a meta parameter is a no-op": as intended here
            model = PromptIQA(config.model, weights.path if weights else None).eval()
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


def rng_state(device: torch.device) -> dict[str, torch.Tensor | None]:
    """This process's torch RNG (dropout): the CPU's and its own GPU's, not every visible GPU's
    (under SLURM each process may see one GPU only). Groups, flips and label augmentations derive
    from the epoch."""
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    return {"cpu": torch.get_rng_state(), "cuda": cuda}


def saved_cuda_rng(saved: dict, device: torch.device) -> torch.Tensor | None:
    """The CUDA RNG state in `saved` (one process's rng_state) that belongs to `device`; None where
    there is none to restore (saved or resumed on the CPU). Older checkpoints hold a list of every
    visible GPU's state: the entry of this device's index is taken when the list has one."""
    cuda = saved.get("cuda")
    if device.type != "cuda" or cuda is None or (isinstance(cuda, list) and not cuda):
        return None
    if isinstance(cuda, torch.Tensor):
        return cuda
    index = device.index or 0
    return cuda[index] if index < len(cuda) else None


def restore_rng(saved: dict, device: torch.device) -> None:
    """Set this process's RNG to `saved` (written by rng_state, possibly with another device count)."""
    torch.set_rng_state(saved["cpu"])
    cuda = saved_cuda_rng(saved, device)
    if cuda is not None:
        torch.cuda.set_rng_state(cuda, device)


def place_optimizer_steps(optimizer: torch.optim.Optimizer) -> None:
    """Put each `step` count where this optimiser's own settings want it (docs/training.md 5).

    `Optimizer.load_state_dict` places `step` by the *saved* group's `fused`/`capturable` flags, so a
    state saved by non-fused Adam (or on another device) leaves fused Adam on CUDA with CPU steps,
    and the reverse leaves non-fused Adam with device steps. As torch's Adam creates them: fused or
    capturable, a float32 tensor on the parameter's device; otherwise a CPU tensor of the default dtype.
    """
    for group in optimizer.param_groups:
        on_device = bool(group.get("fused") or group.get("capturable"))
        for param in group["params"]:
            state = optimizer.state.get(param, {})
            step = state.get("step")
            if isinstance(step, torch.Tensor):
                device = param.device if on_device else torch.device("cpu")
                dtype = torch.float32 if on_device else torch.get_default_dtype()
                state["step"] = step.to(device=device, dtype=dtype)


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
    datasets = open_datasets(
        records, config.model.img_size, config.seed, ctx, cache_dir=config.data.cache_dir,
        workers=config.data.workers, on_bad_image=config.data.on_bad_image, log=log.info,
    )
    model = PromptIQA(config.model, config.pretrained).to(ctx.device)
    if config.execution.grad_checkpointing:
        model.set_grad_checkpointing(True)
    cuda = ctx.device.type == "cuda"
    # Fused Adam, on the CPU too: the same update in one kernel per step instead of one chain of small
    # ops per tensor (a quarter of a demo step on a 2-core CPU).
    optimizer = torch.optim.Adam(
        model.parameters(), lr=config.optim.lr, weight_decay=config.optim.weight_decay, fused=True
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
    network: nn.Module = model
    if ctx.distributed:
        network = DistributedDataParallel(model, device_ids=[ctx.device.index] if cuda else None)
    run.network = compile_model(network, config.execution.compile)  # wrapped first, then compiled
    return run


def resume(run: Run, path: Path) -> None:
    """Continue from a `last.pth.tar`: weights, optimiser, epoch, best record, history and RNG state."""
    ckpt = read_training_checkpoint(path, run.config)
    run.model.load_state_dict(ckpt["model"])
    own = [{key: group[key] for key in ("fused", "capturable")} for group in run.optimizer.param_groups]
    run.optimizer.load_state_dict(ckpt["optimizer"])
    for group, settings in zip(run.optimizer.param_groups, own):
        group.update(settings)  # the saved run's device may have been another
    place_optimizer_steps(run.optimizer)
    states = ckpt.get("rng", [])
    ctx = run.dist
    if len(states) == ctx.world_size:
        restore_rng(states[ctx.rank], ctx.device)
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
        "rng": all_gather_objects(rng_state(run.dist.device), run.dist),
    }


def link_or_copy(source: Path, target: Path) -> None:
    """Make `target` a hard link to `source` (a copy where the file system has no hard links),
    replacing any old `target` atomically: a link to a temp name, then a rename over it."""
    temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    temporary.unlink(missing_ok=True)
    try:
        os.link(source, temporary)
    except OSError:  # no hard links here (some network and FAT file systems, other devices)
        shutil.copyfile(source, temporary)
    os.replace(temporary, target)


def save_checkpoints(state: dict, folder: Path, best: bool) -> None:
    """last.pth.tar, written once (atomically); after a best epoch best.pth.tar becomes a hard link to
    it, so the best epoch costs no second file. The next epoch's last.pth.tar is a new file (written
    beside, then renamed), so the link keeps the best epoch's weights."""
    save_checkpoint(state, folder / LAST)
    if best:
        link_or_copy(folder / LAST, folder / BEST)


def save_epoch(run: Run, epoch: int, results: list[EvalResult]) -> None:
    """Checkpoints, then metrics, then predictions.

    The metrics are rewritten from the history the checkpoint now holds, so however a run stops, the
    resumed one lists each epoch once.
    """
    state = checkpoint_state(run, epoch)
    if run.dist.is_main:
        save_checkpoints(state, Path(run.config.run.save_path), best=run.best["epoch"] == epoch)
    run.log.write_metrics(run.history)
    run.log.predictions(results)

"""Train PromptIQA on a mix of IQA datasets: one process, `--multiprocessing-distributed`, or torchrun.

    python train.py --demo                                   # a first run on the built-in demo data
    python train.py --dataset spaq csiq livec koniq10k kadid live --batch_size 44 \
        --multiprocessing-distributed --dist-url tcp://127.0.0.1:23456 --world-size 1 --rank 0
    torchrun --nproc-per-node 4 train.py --dataset ... --batch_size 44
"""
from __future__ import annotations

import argparse
import sys
from contextlib import nullcontext
from typing import Any

import torch.multiprocessing as mp

from ..data.dataset_info import format_summary, summarize
from ..data.prepare import read_datasets
from ..data.records import Record
from ..evaluation.evaluate import evaluate
from ..models.backbone import resolve_pretrained
from ..training.config import BACKEND_CHOICES, BAD_IMAGE_CHOICES, DEMO_PRESET, TrainConfig
from ..training.launch import Topology, init_distributed, owns_run_folder, resolve_topology
from ..training.loop import cosine_lr, train_one_epoch
from ..training.run import (
    BEST,
    check_network,
    read_training_checkpoint,
    record_epoch,
    resume_path,
    save_epoch,
    seed_everything,
    start_run,
)
from ..training.run_folder import RunLog, claim_run_folder, environment
from ..utils.device import (
    PRECISION_CHOICES,
    check_compile_support,
    compile_errors,
    configure_backends,
    resolve_device,
    resolve_precision,
)
from ..utils.distributed import cleanup, sync_buffers
from ..utils.errors import UserError
from .common import both_spellings, device_name, run_main

_DEFAULTS = TrainConfig()


def _default(key: str) -> Any:
    """The configuration's default for a dotted key such as "optim.lr"."""
    value: Any = _DEFAULTS
    for name in key.split("."):
        value = getattr(value, name)
    return " ".join(value) if isinstance(value, tuple) else value


def build_parser() -> argparse.ArgumentParser:
    """Flags whose destination is a configuration key; only flags given on the command line end up in
    the namespace (the defaults live in TrainConfig, the --demo preset sits between the two)."""
    p = argparse.ArgumentParser(description="Train PromptIQA.", argument_default=argparse.SUPPRESS)

    def option(group: argparse._ActionsContainer, *flags: str, key: str, help: str, **kwargs: Any) -> None:
        if kwargs.get("action") != "store_true" and "choices" not in kwargs:
            kwargs["metavar"] = key.rpartition(".")[2].upper()
        default = _default(key)
        shown = "" if default is None or default is False else f" (default: {default})"
        group.add_argument(*flags, dest=key, help=help + shown, **kwargs)

    data = p.add_argument_group("data")
    option(data, "--dataset", key="data.datasets", nargs="+", help="dataset names in --dataset-info")
    option(data, "--dataset-info", key="data.dataset_info", help="dataset_info.json: name -> root")
    option(data, "--demo", key="data.demo", action="store_true",
           help="train a small model on the built-in demo datasets (a preset; flags given with it win)")
    option(data, "--cache-dir", key="data.cache_dir",
           help="image cache folder; none turns it off; unset means $PROMPTIQA_CACHE/images")
    option(data, "--on-bad-image", key="data.on_bad_image", choices=BAD_IMAGE_CHOICES,
           help="unreadable images: stop with a list of them, or leave them out and say how many")
    option(data, "-j", "--workers", key="data.workers", type=int, help="data loading workers per process")
    option(data, "--eval-batch-size", key="data.eval_batch_size", type=int, help="images per evaluation batch")
    data.add_argument("--check-data", action="store_true", default=False,
                      help="only check the datasets and print a summary")

    model = p.add_argument_group("network")
    option(model, "--backbone", key="model.backbone", help="timm ViT (or CNN) name")
    option(model, "--img-size", key="model.img_size", type=int, help="images are resized to this square size")
    option(model, "--cnn-dim", key="model.cnn_dim", type=int,
           help="channels a CNN backbone's feature levels are projected to (ViTs keep their own width)")
    option(model, "--pretrained", key="pretrained",
           help="imagenet (PromptIQA/checkpoints/BACKBONE.pth if there, else timm's Hub weights, downloaded once), "
           "PATH of a weights file, or none")

    optim = p.add_argument_group("optimisation")
    option(optim, "--epochs", key="optim.epochs", type=int, help="epochs of the half-cosine schedule")
    option(optim, "--batch_size", key="optim.batch_size", type=int,
           help="global batch: one group of batch_size / processes images per process and step")
    option(optim, "--lr", key="optim.lr", type=float, help="Adam learning rate at epoch 0")
    option(optim, "--weight_decay", key="optim.weight_decay", type=float, help="Adam weight decay")
    option(optim, "--random_scale_rate", key="optim.random_scale_rate", type=float,
           help="probability of stretching a group's labels")
    option(optim, "--random_flipping_rate", key="optim.random_flipping_rate", type=float,
           help="probability of flipping a group's labels (1 - label)")
    option(optim, "--seed", key="seed", type=int, help="splits, groups, flips, augmentations and initial weights")

    execution = p.add_argument_group("execution")
    option(execution, "--device", key="execution.device", type=device_name, help="auto | cpu | cuda | cuda:INDEX")
    execution.add_argument("--gpu", type=int, default=None, help="the one GPU to use: the same as --device cuda:GPU")
    option(execution, "--precision", key="execution.precision", choices=PRECISION_CHOICES,
           help="auto: bf16 autocast on CUDA, fp32 on CPU; tf32: TF32 matmuls on CUDA")
    option(execution, "--compile", key="execution.compile", action="store_true",
           help="torch.compile the network for training")
    option(execution, "--grad-checkpointing", key="execution.grad_checkpointing", action="store_true",
           help="recompute the backbone's activations in the backward pass (less memory, more time)")

    launch = p.add_argument_group("processes (torchrun's own settings take precedence)")
    option(launch, "--multiprocessing-distributed", key="launch.multiprocessing_distributed", action="store_true",
           help="spawn one process per GPU (or --cpu-processes without CUDA) on this node")
    option(launch, "--world-size", "--nodes", key="launch.nodes", type=int, help="number of nodes (spawn mode)")
    option(launch, "--rank", "--node-rank", key="launch.node_rank", type=int, help="this node's rank (spawn mode)")
    option(launch, "--cpu-processes", key="launch.cpu_processes", type=int,
           help="processes per node when there is no CUDA (spawn mode)")
    option(launch, "--dist-url", key="launch.dist_url", help="address of rank 0 (spawn mode)")
    option(launch, "--dist-backend", key="launch.dist_backend", choices=BACKEND_CHOICES,
           help="unset means nccl on CUDA, gloo on CPU")
    option(launch, "--dist-timeout", key="launch.dist_timeout", type=float,
           help="seconds before a stuck collective fails")

    run = p.add_argument_group("run folder")
    option(run, "--save_path", key="run.save_path", help="run folder: checkpoints, logs, metrics, plots")
    option(run, "--resume", key="run.resume",
           help="PATH of a last.pth.tar, or auto (save_path/last.pth.tar if there is one)")
    option(run, "--overwrite", key="run.overwrite", action="store_true",
           help="start afresh in a --save_path that holds a run, deleting that run's files")
    option(run, "--stop-after-epoch", key="run.stop_after_epoch", type=int,
           help="end after this many epochs (job time limits); go on with --resume")
    return both_spellings(p)


def parse_args(argv: list[str]) -> argparse.Namespace:
    """The flags given on the command line (configuration keys), plus --check-data and --gpu."""
    return build_parser().parse_args(argv)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """Defaults, then the --demo preset, then the explicit flags; every value is checked."""
    flags = {k: v for k, v in vars(args).items() if k not in ("check_data", "gpu")}
    if args.gpu is not None:
        flags["execution.device"] = f"cuda:{args.gpu}"
    return TrainConfig.from_flat({**(DEMO_PRESET if flags.get("data.demo") else {}), **flags})


def parse_config(argv: list[str]) -> TrainConfig:
    return config_from_args(parse_args(argv))


def main(argv: list[str] | None = None) -> int:
    """Check everything that can be checked (flags, datasets, network, resume file, run folder),
    then train in this process, in spawned processes, or as one of torchrun's."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    config = config_from_args(args)
    device = resolve_device(config.execution.device)
    topology = resolve_topology(config.launch, device)
    config = config.with_world_size(topology.world_size)
    if not args.check_data:  # the network and its weights (fetched if need be) before any dataset is read or built
        resolve_precision(config.execution.precision, device)
        if config.execution.compile:
            check_compile_support(device)
        check_network(config)
    records = read_datasets(list(config.data.datasets), config.data.dataset_info, config.data.demo)
    if args.check_data:
        print(format_summary(summarize(records, config.seed)))
        return 0
    resume_from = resume_path(config.run)
    if resume_from:
        read_training_checkpoint(resume_from, config)
    with claim_run_folder(config.run) if owns_run_folder(topology, config.launch) else nullcontext():
        launch(topology, config, records)
    return 0


def launch(topology: Topology, config: TrainConfig, records: dict[str, list[Record]]) -> None:
    """Start this node's training processes: spawned, or this process itself (alone or under torchrun)."""
    if topology.launcher == "spawn":
        try:
            mp.spawn(worker_entry, nprocs=topology.procs_per_node, args=(topology, config, records))
        except mp.ProcessExitedException as err:
            raise UserError(f"training process {err.error_index} exited with code {err.exit_code}; see above") from None
    else:  # one process, or this one of torchrun's
        main_worker(0, topology, config, records)


def worker_entry(local_index: int, topology: Topology, config: TrainConfig, records: dict) -> None:
    """Spawned process: user errors print cleanly and exit 2, so the parent stops the others."""
    code = run_main(lambda _: main_worker(local_index, topology, config, records))
    if code:
        sys.exit(code)


def main_worker(local_index: int, topology: Topology, config: TrainConfig, records: dict[str, list[Record]]) -> None:
    """One training process, whatever launched it."""
    ctx = init_distributed(local_index, topology, config.launch, resolve_device(config.execution.device))
    seed_everything(config.seed + ctx.rank)
    log = RunLog(config.run.save_path, ctx.is_main)
    log.write_json("args.json", {**config.to_dict(), "topology": topology.to_dict()})
    weights = resolve_pretrained(config.pretrained, config.model.backbone)
    log.write_json("environment.json", {**environment(topology), "pretrained_weights": weights and weights.source})
    log.info(f"backbone weights: {weights.source}" if weights else "backbone: random initialisation (--pretrained none)")
    run = start_run(config, topology, ctx, records, log)
    configure_backends(ctx.device, run.precision)  # once for the run: the loops never switch them
    log.info(f"{topology.world_size} process(es) ({topology.nodes} node(s) x {topology.procs_per_node}, "
             f"{topology.launcher}), groups of {config.model.prompt_num + 1} images, {run.precision} on {ctx.device}")
    if run.start_epoch >= config.end_epoch:
        log.info(f"nothing to do: the run has finished {run.start_epoch} of {config.optim.epochs} epochs")

    for epoch in range(run.start_epoch, config.end_epoch):
        lr = cosine_lr(config.optim.lr, epoch, config.optim.epochs)
        for group in run.optimizer.param_groups:
            group["lr"] = lr
        with compile_errors() if config.execution.compile else nullcontext():  # compilation happens at the first step
            stats = train_one_epoch(run, epoch)
        sync_buffers(run.model, ctx)
        results = evaluate(run.model, run.evaluation)
        record_epoch(run, epoch, lr, stats, results)
        save_epoch(run, epoch, results)

    best = run.best
    if best["epoch"] is not None:
        path = f"{config.run.save_path}/{BEST}"
        log.info(f"best epoch {best['epoch']} (score {best['score']:.4f}): {path}")
        if config.data.demo:
            log.info(
                f"score the examples with it:\n  python test.py --checkpoint {path} "
                "--prompts Examples/Example1/prompts.json --images Examples/Example1/cactus.png"
            )
    cleanup(ctx)


def cli() -> None:
    """Console-script entry point."""
    sys.exit(run_main(main))


if __name__ == "__main__":
    cli()

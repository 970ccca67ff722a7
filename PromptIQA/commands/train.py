"""Train PromptIQA on a mix of IQA datasets: one process, `--multiprocessing-distributed`, or torchrun.

    python train.py --demo                                   # a first run on the built-in demo data
    python train.py --dataset spaq csiq livec koniq10k kadid live --batch_size 44 \
        --multiprocessing-distributed --dist-url tcp://127.0.0.1:23456 --world-size 1 --rank 0
    torchrun --nproc-per-node 4 train.py --dataset ... --batch_size 44
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel

from ..checkpoint import save_checkpoint
from ..runtime import resolve_device
from .common import run_main
from ..data.dataset_info import DEFAULT_DATASET_INFO, format_summary, summarize
from ..data.loader import eval_sets, train_loader
from ..distributed import cleanup, init_distributed, launched_by_torchrun, sync_buffers
from ..engine import cosine_lr, epoch_score, evaluate, train_one_epoch
from ..errors import UserError
from ..models import DEFAULT_BACKBONE, ModelConfig, PromptIQA
from ..models.backbone import resolve_pretrained
from ..runlog import RunLog, environment
from ..training import (
    checkpoint_state, image_cache_dir, open_datasets, read_datasets, resume, resume_path, seed_everything,
)

PUBLISHED_DATASETS = ["spaq", "csiq", "livec", "koniq10k", "kadid", "live"]
# A run that finishes in minutes on a 2-core CPU: small ViT, random init (no weights can be fetched).
DEMO_DEFAULTS = dict(
    dataset=["demo_kadid", "demo_csiq"], backbone="vit_tiny_patch16_224", pretrained="none", img_size=128,
    epochs=12, batch_size=12, lr=1e-4, save_path="runs/demo", device="cpu", workers=0,
)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Train PromptIQA.", formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--dataset", nargs="+", default=PUBLISHED_DATASETS, help="dataset names in --dataset-info")
    p.add_argument("--dataset-info", default=str(DEFAULT_DATASET_INFO), help="dataset_info.json: name -> root")
    p.add_argument("--batch_size", type=int, default=44, help="global batch, split over the processes")
    p.add_argument("--epochs", type=int, default=50)
    p.add_argument("--seed", type=int, default=2024)
    p.add_argument("--lr", type=float, default=1e-5)
    p.add_argument("--weight_decay", type=float, default=1e-5)
    p.add_argument("--random_flipping_rate", type=float, default=0.1)
    p.add_argument("--random_scale_rate", type=float, default=0.5)
    p.add_argument("--model", default="promptiqa", choices=["promptiqa"])
    p.add_argument("--save_path", default="runs/promptiqa", help="run folder: checkpoints, logs, metrics, plots")
    p.add_argument("-j", "--workers", type=int, default=4, help="data loading workers per process")
    p.add_argument("--backbone", default=DEFAULT_BACKBONE, help="timm ViT (or CNN) name")
    p.add_argument(
        "--pretrained", default="imagenet", help="imagenet (a local file in PromptIQA/checkpoints), PATH or none"
    )
    p.add_argument("--img-size", type=int, default=224)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--resume", help="PATH of a last.pth.tar, or auto (save_path/last.pth.tar if present)")
    p.add_argument("--stop-after-epoch", type=int, help="end after this epoch (job time limits); go on with --resume")
    p.add_argument("--demo", action="store_true", help="train a small model on the built-in demo datasets")
    p.add_argument("--check-data", action="store_true", help="only check the datasets and print a summary")
    p.add_argument("--on-bad-image", default="fail", choices=["fail", "skip"], help="unreadable images at caching")
    p.add_argument("--cache-dir", help="image cache folder (default $PROMPTIQA_CACHE/images); none turns it off")
    p.add_argument("--eval-batch-size", type=int, default=32)
    p.add_argument("--multiprocessing-distributed", action="store_true", help="one process per GPU on this node")
    p.add_argument("--nproc-per-node", type=int, default=1, help="CPU processes per node when there is no CUDA")
    p.add_argument("--world-size", type=int, default=1, help="number of nodes (spawn mode)")
    p.add_argument("--rank", type=int, default=0, help="node rank (spawn mode)")
    p.add_argument("--dist-url", default="tcp://127.0.0.1:23456")
    p.add_argument("--dist-backend", choices=["nccl", "gloo"], help="default: nccl on CUDA, gloo on CPU")
    p.add_argument("--dist-timeout", type=float, default=1800, help="seconds before a stuck collective fails")
    p.add_argument("--gpu", type=int, help="the one GPU to use without distributed training")
    return p


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = build_parser()
    if "--demo" in argv:
        parser.set_defaults(**DEMO_DEFAULTS)
    args = parser.parse_args(argv)
    if args.gpu is not None:
        args.device = f"cuda:{args.gpu}"
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    device = resolve_device(args.device)
    records = read_datasets(args.dataset, args.dataset_info, args.demo)
    if args.check_data:
        print(format_summary(summarize(records, args.seed)))
        return 0
    resolve_pretrained(args.pretrained, args.backbone)  # fail before any process starts
    if launched_by_torchrun():
        main_worker(int(os.environ["LOCAL_RANK"]), int(os.environ["LOCAL_WORLD_SIZE"]), args, records)
    elif args.multiprocessing_distributed:
        procs = torch.cuda.device_count() if device.type == "cuda" else args.nproc_per_node
        args.world_size = procs * args.world_size
        try:
            mp.spawn(worker_entry, nprocs=procs, args=(procs, args, records))
        except mp.ProcessExitedException as err:
            raise UserError(f"training process {err.error_index} exited with code {err.exit_code}; see above") from None
    else:
        args.world_size = 1
        main_worker(0, 1, args, records)
    return 0


def worker_entry(local_index: int, procs: int, args: argparse.Namespace, records: dict) -> None:
    """Spawned process: user errors print cleanly and exit 2, so the parent stops the others."""
    code = run_main(lambda _: main_worker(local_index, procs, args, records))
    if code:
        sys.exit(code)


def main_worker(local_index: int, procs: int, args: argparse.Namespace, records: dict) -> None:
    ctx = init_distributed(
        local_index, procs, args.rank, args.world_size, resolve_device(args.device),
        args.dist_url, args.dist_backend, args.dist_timeout,
    )
    if args.batch_size % ctx.world_size or args.batch_size // ctx.world_size < 2:
        raise UserError(
            f"--batch_size {args.batch_size} must split into equal groups of at least 2 images over "
            f"{ctx.world_size} process(es); use a multiple of {ctx.world_size} of at least {2 * ctx.world_size}"
        )
    group_size = args.batch_size // ctx.world_size
    prompt_num = group_size - 1  # model.md 4: a query's prompts are the rest of its group
    seed_everything(args.seed + ctx.rank)
    log = RunLog(args.save_path, ctx.is_main)
    log.write_json("args.json", vars(args))
    log.write_json("environment.json", environment(ctx.world_size))
    if args.pretrained == "none":
        log.info("backbone: random initialisation (--pretrained none)")

    datasets = open_datasets(
        records, args.img_size, args.seed, image_cache_dir(args.cache_dir), args.workers, args.on_bad_image,
        ctx, local_index, log,
    )
    tests = eval_sets(datasets, prompt_num)
    model = PromptIQA(ModelConfig(args.backbone, args.img_size), args.pretrained).to(ctx.device)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    save_path = Path(args.save_path)
    start_epoch, best = 0, {"score": -float("inf"), "epoch": None}
    checkpoint = resume_path(args)
    if checkpoint:
        start_epoch, best = resume(checkpoint, model, optimizer, ctx, log)
    ddp = model
    if ctx.distributed:
        ddp = DistributedDataParallel(model, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None)

    for epoch in range(start_epoch, min(args.epochs, args.stop_after_epoch or args.epochs)):
        lr = cosine_lr(args.lr, epoch, args.epochs)
        for group in optimizer.param_groups:
            group["lr"] = lr
        loader = train_loader(datasets, group_size, args.seed, epoch, ctx.rank, ctx.world_size, args.workers)
        label_rng = torch.Generator().manual_seed(args.seed * 100_003 + epoch * 1009 + ctx.rank)
        stats = train_one_epoch(
            ddp, loader, optimizer, epoch, datasets, ctx, args.random_scale_rate, args.random_flipping_rate, label_rng
        )
        sync_buffers(model, ctx)
        results = evaluate(model, datasets, tests, ctx, args.eval_batch_size, args.workers)
        if epoch_score(results) > best["score"]:
            best = {"score": epoch_score(results), "epoch": epoch}
        log.epoch(epoch, lr, stats, results, best)
        log.predictions(results)

        state = checkpoint_state(model, optimizer, epoch, best, args, prompt_num, ctx)
        if ctx.is_main:
            save_checkpoint(state, save_path / "last.pth.tar")
            if best["epoch"] == epoch:
                save_checkpoint(state, save_path / "best.pth.tar")

    if best["epoch"] is not None:
        log.info(f"best epoch {best['epoch']} (score {best['score']:.4f}): {save_path / 'best.pth.tar'}")
        if args.demo:
            log.info(
                f"score the examples with it:\n  python test.py --checkpoint {save_path / 'best.pth.tar'} "
                "--prompts Examples/Example1/prompts.json --images Examples/Example1/cactus.png"
            )
    cleanup(ctx)


def cli() -> None:
    """Console-script entry point."""
    sys.exit(run_main(main))


if __name__ == "__main__":
    cli()

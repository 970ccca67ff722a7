"""Score images with PromptIQA under a requirement given by image-score pairs (ISPs), or evaluate a
checkpoint on the test split of datasets.

    python test.py --checkpoint CKPT --prompts PROMPTS --images IMG_OR_DIR ... [--output out.csv]
    python test.py --checkpoint CKPT --dataset NAME ... [--dataset-info JSON] [--save-dir DIR]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from ..checkpoint import DEFAULT_CHECKPOINT, load_model, model_from_checkpoint, read_checkpoint
from ..atomic import write_csv_atomic
from ..runtime import resolve_device
from .common import collect_images, run_main
from ..data.dataset_info import DEFAULT_DATASET_INFO
from ..data.loader import eval_sets
from ..data.prompts import read_prompt_file
from ..config import DataConfig
from ..distributed import DistContext
from ..engine import Evaluation, evaluate, format_results
from ..errors import UserError
from ..inference import Scorer
from ..prompt_experiment import run_prompt_experiment
from ..runlog import save_predictions
from ..training import open_datasets, read_datasets

EXAMPLE = (
    "examples:\n  python test.py --checkpoint PromptIQA/checkpoints/best_model.pth.tar \\\n"
    "      --prompts Examples/Example1/prompts.json --images Examples/Example1/cactus.png\n"
    "  python test.py --checkpoint runs/demo/best.pth.tar --demo --dataset demo_kadid demo_csiq"
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Score images with PromptIQA against a prompt set (image-score pairs).",
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT), help="published or project checkpoint")
    parser.add_argument("--prompts", help='JSON {"isp": [[image, score], ...]} or CSV path,score')
    parser.add_argument("--images", nargs="+", help="images or folders of images to score")
    parser.add_argument("--output", help="also write the scores as CSV (path,score)")
    parser.add_argument("--reverse-prompts", action="store_true", help="use 1 - score for every ISP")
    evaluation = parser.add_argument_group("evaluation on datasets (instead of --prompts/--images)")
    evaluation.add_argument("--dataset", nargs="+", help="evaluate on the test split of these datasets")
    evaluation.add_argument("--dataset-info", default=str(DEFAULT_DATASET_INFO))
    evaluation.add_argument("--demo", action="store_true", help="make the built-in demo datasets available")
    evaluation.add_argument("--seed", type=int, help="split seed (default: the checkpoint's, else 2024)")
    evaluation.add_argument("--prompt-num", type=int, help="prompts per dataset (default: the checkpoint's)")
    evaluation.add_argument("--prompt-select", choices=["fixed", "random"], default="fixed")
    evaluation.add_argument("--random-prompts", action="store_true", help="give the prompts random scores")
    evaluation.add_argument("--cache-dir", help="image cache folder; none turns it off")
    evaluation.add_argument("--save-dir", help="write results.csv, predictions and scatter plots here")
    evaluation.add_argument(
        "--prompt-experiment", action="store_true",
        help="score each test split under its own, reversed, random and the other datasets' prompts",
    )
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:INDEX")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("-j", "--workers", type=int, default=4, help="image decoding threads")
    parser.add_argument("--backbone", help="override the backbone recorded in the checkpoint")
    parser.add_argument("--img-size", type=int, help="override the image size recorded in the checkpoint")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    if not argv:
        parser.print_help(sys.stderr)
        return 2
    args = parser.parse_args(argv)
    if args.dataset:
        return evaluate_datasets(args)
    if not (args.prompts and args.images):
        parser.error("give --prompts and --images to score images, or --dataset to evaluate")
    prompt_set = read_prompt_file(args.prompts)
    if args.reverse_prompts:
        prompt_set = prompt_set.reversed()
    images = collect_images(args.images)
    model = load_model(args.checkpoint, args.backbone, args.img_size, resolve_device(args.device))
    scorer = Scorer(model, batch_size=args.batch_size, workers=args.workers)
    prompts = scorer.encode_prompt_set(prompt_set)
    scores = scorer.score_images(images, prompts, progress=len(images) > 1)
    if args.output:
        write_csv_atomic(args.output, ["path", "score"], ((p, f"{s:.8f}") for p, s in zip(images, scores)))
    for path, score in zip(images, scores):
        print(f"{path}\t{score:.8f}")
    return 0


def evaluate_datasets(args: argparse.Namespace) -> int:
    """SRCC/PLCC per dataset on the test split, prompts chosen from the training split as in training."""
    ckpt = read_checkpoint(args.checkpoint)
    seed = args.seed if args.seed is not None else ckpt.get("config", ckpt.get("args", {})).get("seed", 2024)
    records = read_datasets(args.dataset, args.dataset_info, args.demo)
    model = model_from_checkpoint(ckpt, args.checkpoint, args.backbone, args.img_size, resolve_device(args.device))
    ctx = DistContext(device=next(model.parameters()).device)
    data = DataConfig(datasets=args.dataset, dataset_info=args.dataset_info, demo=args.demo, cache_dir=args.cache_dir,
                      workers=args.workers)
    datasets = open_datasets(records, data, model.config.img_size, seed, ctx)
    sets = eval_sets(datasets, args.prompt_num or model.prompt_num, args.prompt_select, seed)
    if args.prompt_experiment:
        return report_prompt_experiment(args, model, datasets, sets, seed)
    generator = np.random.default_rng(seed)
    for eval_set in sets:
        if args.random_prompts:
            eval_set.prompt_labels = generator.random(len(eval_set.prompts)).tolist()
        if args.reverse_prompts:
            eval_set.prompt_labels = [1 - y for y in eval_set.prompt_labels]
    results = evaluate(model, Evaluation.open(datasets, sets, ctx, args.batch_size))
    print(format_results(results))
    if args.save_dir:
        folder = Path(args.save_dir)
        folder.mkdir(parents=True, exist_ok=True)
        rows = ((r.name, f"{r.srcc:.6f}", f"{r.plcc:.6f}", len(r.labels)) for r in results)
        write_csv_atomic(folder / "results.csv", ["dataset", "srcc", "plcc", "images"], rows)
        save_predictions(results, folder)
    return 0


def report_prompt_experiment(args: argparse.Namespace, model, datasets: list, sets: list, seed: int) -> int:
    if args.reverse_prompts or args.random_prompts:
        raise UserError("--prompt-experiment already scores reversed and random prompts; "
                        "drop --reverse-prompts / --random-prompts")
    experiment = run_prompt_experiment(model, datasets, sets, args.batch_size, args.workers, seed)
    print(experiment.table())
    if args.save_dir:
        for path in experiment.save(args.save_dir):
            print(f"wrote {path}")
    return 0


def cli() -> None:
    """Console-script entry point."""
    sys.exit(run_main(main))


if __name__ == "__main__":
    cli()

"""Score images with PromptIQA under a requirement given by image-score pairs (ISPs), or evaluate a
checkpoint on the test split of datasets.

    python test.py                      # Example1's query under Example1's prompts, default checkpoint
    python test.py --checkpoint CKPT --prompts PROMPTS --images IMG_OR_DIR ... [--output out.csv]
    python test.py --checkpoint CKPT --prompts PROMPTS.json --save-prompts SET.pt
    python test.py --checkpoint CKPT --prompts SET.pt --images IMG_OR_DIR ...
    torchrun --nproc-per-node N test.py --prompts SET.pt --images 'shards/{00000..00099}.tar' --output scores.parquet
    python test.py --checkpoint CKPT --dataset NAME ... [--dataset-info JSON] [--save-dir DIR]
"""
from __future__ import annotations

import argparse
import os
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

from ..data.dataset_info import DEFAULT_DATASET_INFO
from ..data.loader import eval_sets
from ..data.prepare import open_datasets, read_datasets
from ..data.prompts import PromptSet, read_prompt_file, unit_range_to_scores
from ..evaluation.evaluate import Evaluation, evaluate
from ..evaluation.prompt_experiment import run_prompt_experiment
from ..evaluation.results import format_results, save_predictions
from ..models.checkpoint import DEFAULT_CHECKPOINT, load_model, model_from_checkpoint, read_checkpoint
from ..scoring.collection import Collection
from ..scoring.job import CollectionJob
from ..scoring.outputs import output_format
from ..scoring.saved_prompts import (
    SAVED_PROMPTS_SUFFIX,
    SavedPrompts,
    check_save_path,
    checkpoint_identity,
    is_saved_prompts,
    prepare_prompts,
    read_saved_prompts,
    save_prompts,
)
from ..scoring.scorer import ScoredImage, Scorer
from ..utils.atomic import write_csv_atomic
from ..utils.constants import EXAMPLES_DIR
from ..utils.device import PRECISION_CHOICES, precision_scope, resolve_device, resolve_precision
from ..utils.distributed import DistContext, cleanup, join_torchrun, launched_by_torchrun
from ..utils.errors import UserError
from .common import both_spellings, collect_images, run_main

# what the published test.py scores when run without arguments (present in a source checkout)
EXAMPLE1 = EXAMPLES_DIR / "Example1"
EXAMPLE = (
    "examples:\n  python test.py            # Examples/Example1: cactus.png under prompts.json\n"
    "  python test.py --checkpoint hf:Zevin2023/PromptIQA \\\n"
    "      --prompts Examples/Example1/prompts.json --images Examples/Example1/cactus.png\n"
    "  python test.py --prompts Examples/Example1/prompts.json --save-prompts example1.pt\n"
    "  python test.py --prompts example1.pt --images photos/\n"
    "  python test.py --prompts mos.csv --score-range 1 5 --images photos/\n"
    "  python test.py --checkpoint runs/demo/best.pth.tar --demo --dataset demo_kadid demo_csiq"
)


def whole_number(text: str, minimum: int) -> int:
    """A count given on the command line, refused with its fix when below `minimum`."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number; give {minimum} or more") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"{value} is too small; give {minimum} or more")
    return value


def positive_int(text: str) -> int:
    """argparse type for counts that must be at least 1."""
    return whole_number(text, 1)


def non_negative_int(text: str) -> int:
    """argparse type for counts where 0 means none (e.g. decoding threads)."""
    return whole_number(text, 0)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Score images with PromptIQA against a prompt set (image-score pairs).",
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT),
                        help="checkpoint file, or hf:OWNER/REPO[/FILE] from the Hugging Face Hub "
                             "(default file best_model.pth.tar; the published weights: hf:Zevin2023/PromptIQA)")
    parser.add_argument("--prompts", help='JSON {"isp": [[image, score], ...]}, CSV path,score, or a prompt set '
                                          f"saved with --save-prompts (*{SAVED_PROMPTS_SUFFIX})")
    parser.add_argument("--images", nargs="+", help="images, folders of images, WebDataset tar shards "
                                                    "(brace ranges such as 'shards/{00000..00099}.tar') to score")
    parser.add_argument("--output", help="also write the scores (path,score,error) as .csv, .jsonl or .parquet")
    collection = parser.add_argument_group("scoring a collection (see the README: Scoring a collection)")
    collection.add_argument("--image-list", nargs="+", default=[], metavar="FILE",
                            help="files with one image path per line, relative to the file's folder")
    collection.add_argument("--recursive", action="store_true", help="also score the images in sub-folders")
    collection.add_argument("--on-bad-image", choices=["fail", "skip"], default="fail",
                            help="fail: stop with the list (default); skip: record the error in the output, go on")
    collection.add_argument("--resume", action="store_true",
                            help="continue an interrupted run of the same command: score only what --output lacks")
    parser.add_argument("--save-prompts", metavar=f"FILE{SAVED_PROMPTS_SUFFIX}",
                        help="save the encoded prompts for this checkpoint; reuse them with --prompts FILE")
    parser.add_argument("--reverse-prompts", action="store_true", help="use 1 - score for every ISP")
    parser.add_argument("--score-range", nargs=2, type=float, metavar=("MIN", "MAX"),
                        help="the ISP scores are on [MIN, MAX] (mapped to [0, 1]); scores are printed on it too")
    parser.add_argument("--lower-is-better", action="store_true",
                        help="the ISP scores are lower-is-better (e.g. DMOS): labels the output, flips nothing")
    evaluation = parser.add_argument_group("evaluation on datasets (instead of --prompts/--images)")
    evaluation.add_argument("--dataset", nargs="+", help="evaluate on the test split of these datasets")
    evaluation.add_argument("--dataset-info", default=str(DEFAULT_DATASET_INFO))
    evaluation.add_argument("--demo", action="store_true", help="make the built-in demo datasets available")
    evaluation.add_argument("--seed", type=int, help="split seed (default: the checkpoint's, else 2024)")
    evaluation.add_argument("--prompt-num", type=positive_int, help="prompts per dataset (default: the checkpoint's)")
    evaluation.add_argument("--prompt-select", choices=["fixed", "random"], default="fixed")
    evaluation.add_argument("--random-prompts", action="store_true", help="give the prompts random scores")
    evaluation.add_argument("--cache-dir", help="image cache folder; none turns it off")
    evaluation.add_argument("--save-dir", help="write results.csv, predictions and scatter plots here")
    evaluation.add_argument(
        "--prompt-experiment", action="store_true",
        help="score each test split under its own, reversed, random and the other datasets' prompts",
    )
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:INDEX")
    parser.add_argument("--batch-size", type=positive_int, default=16)
    parser.add_argument("--precision", choices=PRECISION_CHOICES, default="auto",
                        help="auto: bf16 autocast on a GPU that has it, fp32 elsewhere")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile the network for scoring images (the first batch waits for compilation)")
    parser.add_argument("-j", "--workers", type=non_negative_int, default=min(4, os.cpu_count() or 1),
                        help="image decoding processes (0: decode in the main process)")
    parser.add_argument("--backbone", help="override the backbone recorded in the checkpoint")
    parser.add_argument("--img-size", type=int, help="override the image size recorded in the checkpoint")
    return both_spellings(parser)


def example_arguments() -> list[str]:
    """The published test.py's run: Example1's query under Example1's prompts, default checkpoint."""
    if not EXAMPLE1.is_dir():
        raise UserError(f"no arguments given and {EXAMPLE1} is not here (it comes with a source checkout); "
                        "give --prompts PROMPTS --images IMAGES (see --help)")
    return ["--prompts", str(EXAMPLE1 / "prompts.json"), "--images", str(EXAMPLE1 / "cactus.png")]


def check_output(path: str) -> None:
    """Refuse an --output the CSV cannot be written to, before any work is done."""
    target = Path(path)
    if target.is_dir():
        raise UserError(f"--output {path}: is a folder; give a file name such as {target / 'scores.csv'}")
    if not target.parent.is_dir():
        raise UserError(f"--output {path}: folder {target.parent} does not exist; create it or write elsewhere")
    if not os.access(target.parent, os.W_OK) or (target.exists() and not os.access(target, os.W_OK)):
        raise UserError(f"--output {path}: not writable by this user; choose another location")


def check_scoring_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if not args.prompts or not (args.images or args.image_list or args.save_prompts):
        parser.error("give --prompts and --images to score images (or --prompts and --save-prompts to save them), "
                     "or --dataset to evaluate")
    if is_saved_prompts(args.prompts) and (args.score_range or args.reverse_prompts or args.save_prompts):
        raise UserError(f"--prompts {args.prompts}: a saved prompt set already holds its scores; --score-range, "
                        "--reverse-prompts and --save-prompts apply when saving it from the prompt file")
    if args.output:
        check_output(args.output)
    check_collection_args(args)
    if args.save_prompts:
        check_save_path(args.save_prompts)


def score_range_of(args: argparse.Namespace) -> tuple[float, float] | None:
    return tuple(args.score_range) if args.score_range else None


def read_prompts(args: argparse.Namespace) -> PromptSet | SavedPrompts:
    """The prompt file or saved set, read and checked before the model loads."""
    if is_saved_prompts(args.prompts):
        return read_saved_prompts(args.prompts)
    prompt_set = read_prompt_file(args.prompts, score_range_of(args))
    return prompt_set.reversed() if args.reverse_prompts else prompt_set


def encode_prompts(args: argparse.Namespace, given: PromptSet | SavedPrompts, scorer: Scorer) -> SavedPrompts:
    """The prompts ready for the network, saved with its identity if --save-prompts asks."""
    prompts = prepare_prompts(scorer, given, score_range_of(args), args.lower_is_better, args.prompts)
    if args.save_prompts:
        save_prompts(args.save_prompts, replace(prompts, checkpoint=checkpoint_identity(scorer.model)))
        print(f"saved the encoded prompts to {args.save_prompts}; reuse them with --prompts {args.save_prompts}",
              file=sys.stderr)
    return prompts


def describe_scale(prompts: SavedPrompts) -> str:
    low, high = prompts.score_range or (0.0, 1.0)
    direction = ", lower is better (as the prompts' scores)" if prompts.lower_better else ""
    return f"scores on [{low:g}, {high:g}]{direction}"


def check_collection_args(args: argparse.Namespace) -> None:
    """Refuse collection flags that cannot work together, before any work is done."""
    if args.output:
        try:
            output_format(args.output)
        except UserError as error:
            raise UserError(f"--output {error}") from None
    if args.resume and not args.output:
        raise UserError("--resume continues the run that writes --output FILE; give the same --output")
    if launched_by_torchrun() and int(os.environ["WORLD_SIZE"]) > 1 and not args.output:
        raise UserError("under torchrun give --output FILE: each process writes its part beside it, "
                        "merged into FILE at the end")


def print_rows(rows: list[ScoredImage]) -> None:
    """Each score as soon as its batch is scored (`path\tscore`); skipped images on stderr."""
    for row in rows:
        if row.error:
            print(f"skipped: {row.error}", file=sys.stderr)
        else:
            print(f"{row.id}\t{row.score:.8f}", flush=True)


def score_collection(args: argparse.Namespace, scorer: Scorer, collection: Collection, prompts: SavedPrompts,
                     ctx: DistContext, store) -> None:
    low, high = prompts.score_range or (0.0, 1.0)
    job = CollectionJob(
        scorer, collection, prompts.vectors, Path(args.output) if args.output else None, ctx, store,
        resume=args.resume, skip_bad=args.on_bad_image == "skip",
        scale=lambda score: unit_range_to_scores([score], low, high)[0], echo=print_rows,
        advice="; fix or remove them, or pass --on-bad-image skip to record them in the output and go on",
    )
    summary = job.run()
    if ctx.is_main:
        print(summary.text(), file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    args = parser.parse_args(argv or example_arguments())
    if args.dataset:
        return evaluate_datasets(args)
    check_scoring_args(parser, args)
    given = read_prompts(args)
    collection = collect_images(args.images or [], args.image_list, args.recursive)
    ctx, store = join_torchrun(resolve_device(args.device))
    try:
        model = load_model(args.checkpoint, args.backbone, args.img_size, ctx.device)
        scorer = Scorer(model, batch_size=args.batch_size, workers=args.workers, precision=args.precision,
                        compile=args.compile)
        prompts = encode_prompts(args, given, scorer)
        if not collection.units_total:
            return 0
        if (prompts.score_range or prompts.lower_better) and ctx.is_main:
            print(describe_scale(prompts), file=sys.stderr)
        score_collection(args, scorer, collection, prompts, ctx, store)
    finally:
        cleanup(ctx)
    return 0


def evaluate_datasets(args: argparse.Namespace) -> int:
    """SRCC/PLCC per dataset on the test split, prompts chosen from the training split as in training."""
    if args.compile:
        raise UserError("--compile applies to scoring images (--prompts/--images); drop it for --dataset")
    ckpt = read_checkpoint(args.checkpoint)
    seed = args.seed if args.seed is not None else ckpt.get("config", ckpt.get("args", {})).get("seed", 2024)
    records = read_datasets(args.dataset, args.dataset_info, args.demo)
    model = model_from_checkpoint(ckpt, args.checkpoint, args.backbone, args.img_size, resolve_device(args.device))
    ctx = DistContext(device=next(model.parameters()).device)
    precision = resolve_precision(args.precision, ctx.device)
    datasets = open_datasets(records, model.config.img_size, seed, ctx, cache_dir=args.cache_dir, workers=args.workers)
    sets = eval_sets(datasets, args.prompt_num or model.prompt_num, args.prompt_select, seed)
    if args.prompt_experiment:
        with precision_scope(ctx.device, precision):
            return report_prompt_experiment(args, model, datasets, sets, seed)
    generator = np.random.default_rng(seed)
    for eval_set in sets:
        if args.random_prompts:
            eval_set.prompt_labels = generator.random(len(eval_set.prompts)).tolist()
        if args.reverse_prompts:
            eval_set.prompt_labels = [1 - y for y in eval_set.prompt_labels]
    with precision_scope(ctx.device, precision):
        results = evaluate(model, Evaluation.open(datasets, sets, ctx, args.batch_size, precision=precision))
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

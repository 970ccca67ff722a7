"""Score images with PromptIQA under a requirement given by image-score pairs (ISPs), or evaluate a
checkpoint on the test split of datasets.

    python test.py                      # Example1's query under Example1's prompts, default checkpoint
    python test.py --checkpoint CKPT --prompts PROMPTS --images IMG_OR_DIR ... [--output out.csv]
    python test.py --checkpoint CKPT --prompts PROMPTS.json --save-prompts SET.pt
    python test.py --checkpoint CKPT --prompts SET.pt --images IMG_OR_DIR ...
    torchrun --nproc-per-node N test.py --prompts SET.pt --images 'shards/{00000..00099}.tar' --output scores.parquet
    python test.py --checkpoint CKPT --dataset NAME ... [--dataset-info JSON] [--save-dir DIR]
    python test.py --runtime onnx --onnx DIR [--prompts PROMPTS] --images IMG_OR_DIR ...   (promptiqa-export)
    python test.py --prompts POOL.csv --images IMG_OR_DIR ... --interval 0.9 [--ensemble K] [--output out.csv]
    python test.py --prompts POOL.csv --select-prompts 10 --save-prompts SET.pt
    python test.py --checkpoint CKPT --dataset NAME --prompt-pool 50 [--interval 0.9] [--select-prompts K]
"""
from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from ..data.dataset_info import DEFAULT_DATASET_INFO
from ..data.loader import eval_sets
from ..data.prepare import open_datasets, read_datasets
from ..data.prompts import PromptSet, check_score_range, read_prompt_file, unit_range_to_scores
from ..evaluation.evaluate import Evaluation, evaluate
from ..evaluation.pool_experiment import run_pool_experiment
from ..evaluation.prompt_experiment import run_prompt_experiment
from ..evaluation.results import format_results, save_predictions
from ..export.runtime import OnnxScorer, check_exported_checkpoint
from ..models.checkpoint import (
    DEFAULT_CHECKPOINT,
    CheckpointNotFound,
    load_model,
    model_from_checkpoint,
    read_checkpoint,
)
from ..models.prompt_pool import ENSEMBLE_SETS, MIN_CALIBRATION_POOL
from ..scoring.collection import Collection
from ..scoring.job import CollectionJob
from ..scoring.outputs import COLUMNS, output_columns, output_format, row_record, write_rows
from ..scoring.pools import pool_prompts, select_from_pool
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
from ..scoring.scorer import Prompts, ScoredImage, Scorer
from ..utils.atomic import is_stream, write_csv_atomic
from ..utils.constants import CHECKPOINT_DIR, DEFAULT_SEED, EXAMPLES_DIR, MIN_IMG_SIZE
from ..utils.device import PRECISION_CHOICES, configure_backends, precision_scope, resolve_device, resolve_precision
from ..utils.distributed import DistContext, cleanup, join_torchrun, launched_by_torchrun
from ..utils.errors import UserError, naming
from ..utils.hub import how_to_get_checkpoint
from .common import (
    accept_negative_numbers,
    both_spellings,
    collect_images,
    device_name,
    finite_number,
    run_main,
    whole_number,
)

# what the published test.py scores when run without arguments (present in a source checkout)
EXAMPLE1 = EXAMPLES_DIR / "Example1"
EXAMPLE = (
    "examples:\n  python test.py            # Examples/Example1: cactus.png under prompts.json\n"
    "  python test.py --checkpoint hf:Zevin2023/PromptIQA \\\n"
    "      --prompts Examples/Example1/prompts.json --images Examples/Example1/cactus.png\n"
    "  python test.py --prompts Examples/Example1/prompts.json --save-prompts example1.pt\n"
    "  python test.py --prompts example1.pt --images photos/\n"
    "  python test.py --prompts mos.csv --score-range 1 5 --images photos/\n"
    "  python test.py --checkpoint runs/demo/best.pth.tar --demo --dataset demo_kadid demo_csiq\n"
    "  python test.py --prompts pool.csv --images photos/ --interval 0.9 --output scores.csv\n"
    "  python test.py --checkpoint runs/demo/best.pth.tar --demo --dataset demo_kadid --prompt-pool 50 --interval 0.9"
)


def positive_int(text: str) -> int:
    """argparse type for counts that must be at least 1."""
    return whole_number(text, 1)


def non_negative_int(text: str) -> int:
    """argparse type for counts where 0 means none (e.g. decoding threads)."""
    return whole_number(text, 0)


def interval_level(text: str) -> float:
    """argparse type for --interval: a coverage strictly between 0 and 1."""
    value = finite_number(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give the coverage as a fraction between 0 and 1, e.g. 0.9")
    return value


def image_size(text: str) -> int:
    """argparse type for --img-size: the smallest size every backbone runs at, or more."""
    return whole_number(text, MIN_IMG_SIZE)


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
    parser.add_argument("--output", help="also write the scores (path,score,error) as .csv, .jsonl or .parquet; "
                                         "- writes CSV to stdout")
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
    parser.add_argument("--score-range", nargs=2, type=finite_number, metavar=("MIN", "MAX"),
                        help="the ISP scores are on [MIN, MAX] (mapped to [0, 1]); scores are printed on it too")
    parser.add_argument("--lower-is-better", action="store_true",
                        help="the ISP scores are lower-is-better (e.g. DMOS): labels the output, flips nothing "
                             "(with --reverse-prompts the output is higher-is-better)")
    pools = parser.add_argument_group("prompt pools (see the README: Prompt pools, intervals, selection)")
    pools.add_argument("--ensemble", type=positive_int, metavar="K",
                       help="score under K sets of prompt-num ISPs drawn from the prompts (stratified by score; "
                            f"the image path runs once): the mean, with a spread column. 1: one set of all the ISPs "
                            f"(default: 1, or {ENSEMBLE_SETS} with --interval)")
    pools.add_argument("--interval", type=interval_level, metavar="LEVEL",
                       help="add low/high columns: a split-conformal interval of this coverage (e.g. 0.9) "
                            f"calibrated on the prompts themselves (at least {MIN_CALIBRATION_POOL} ISPs)")
    pools.add_argument("--select-prompts", type=positive_int, metavar="K",
                       help="keep the K ISPs that best predict the rest of the prompts; prints them and saves "
                            "them with --save-prompts")
    pools.add_argument("--pool-seed", type=int, default=DEFAULT_SEED,
                       help=f"seed of the ensemble's draw (default {DEFAULT_SEED})")
    pools.add_argument("--prompt-pool", type=positive_int, metavar="N",
                       help="with --dataset: draw a pool of N ISPs from each training split and compare one set, "
                            "the ensemble, all N as one set, selected and random sets, with intervals")
    pools.add_argument("--pool-draws", type=positive_int, default=5,
                       help="with --prompt-pool: pools drawn per dataset, results averaged (default 5)")
    evaluation = parser.add_argument_group("evaluation on datasets (instead of --prompts/--images)")
    evaluation.add_argument("--dataset", nargs="+", help="evaluate on the test split of these datasets")
    evaluation.add_argument("--dataset-info", default=str(DEFAULT_DATASET_INFO))
    evaluation.add_argument("--demo", action="store_true", help="make the built-in demo datasets available")
    evaluation.add_argument("--seed", type=int, help=f"split seed (default: the checkpoint's, else {DEFAULT_SEED})")
    evaluation.add_argument("--prompt-num", type=positive_int, help="prompts per dataset (default: the checkpoint's)")
    evaluation.add_argument("--prompt-select", choices=["fixed", "random"], default="fixed")
    evaluation.add_argument("--random-prompts", action="store_true", help="give the prompts random scores")
    evaluation.add_argument("--cache-dir", help="image cache folder; none turns it off")
    evaluation.add_argument("--save-dir", help="write results.csv, predictions and scatter plots here")
    evaluation.add_argument(
        "--prompt-experiment", action="store_true",
        help="score each test split under its own, reversed, random and the other datasets' prompts",
    )
    parser.add_argument("--device", default="auto", type=device_name, help="auto | cpu | cuda | cuda:INDEX")
    parser.add_argument("--batch-size", type=positive_int, default=16)
    parser.add_argument("--precision", choices=PRECISION_CHOICES, default="auto",
                        help="auto: bf16 autocast on a GPU that has it, fp32 elsewhere")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile the network for scoring images (the first batch waits for compilation)")
    parser.add_argument("-j", "--workers", type=non_negative_int, default=min(4, os.cpu_count() or 1),
                        help="image decoding processes (0: decode in the main process)")
    parser.add_argument("--backbone", help="override the backbone recorded in the checkpoint")
    parser.add_argument("--img-size", type=image_size, help="override the image size recorded in the checkpoint")
    deploy = parser.add_argument_group('ONNX Runtime (pip install ".[onnx]"; graphs written by promptiqa-export)')
    deploy.add_argument("--runtime", choices=["torch", "onnx"], default="torch",
                        help="onnx: score with the exported graphs of --onnx; prompt files go through its prompt "
                             "graph; without --prompts, its baked prompt set")
    deploy.add_argument("--onnx", metavar="DIR", help="folder written by promptiqa-export (implies --runtime onnx)")
    return accept_negative_numbers(both_spellings(parser))


def example_arguments() -> list[str]:
    """The published test.py's run: Example1's query under Example1's prompts, default checkpoint."""
    if not EXAMPLE1.is_dir():
        raise UserError(f"no arguments given and {EXAMPLE1} is not here (it comes with a source checkout); "
                        "give --prompts PROMPTS --images IMAGES (see --help)")
    return ["--prompts", str(EXAMPLE1 / "prompts.json"), "--images", str(EXAMPLE1 / "cactus.png")]


# pseudo-filesystems: a file there is not a file (writes fail or act on the kernel)
_PSEUDO_FILESYSTEMS = (Path("/proc"), Path("/sys"))


def check_output(path: str) -> None:
    """Refuse an --output the CSV cannot be written to, before any work is done. `-` is stdout; a
    symlink is checked at its target; a FIFO or a character device is written to as it is."""
    if path == "-" or is_stream(path):
        return
    target = Path(path).resolve()
    if any(target.is_relative_to(root) for root in _PSEUDO_FILESYSTEMS):
        raise UserError(f"--output {path}: is under {target.parts[0]}{target.parts[1]}, a kernel pseudo-filesystem, "
                        "not a place for files; write elsewhere")
    if target.is_dir():
        raise UserError(f"--output {path}: is a folder; give a file name such as {Path(path) / 'scores.csv'}")
    if not target.parent.is_dir():
        raise UserError(f"--output {path}: folder {target.parent} does not exist; create it or write elsewhere")
    if not os.access(target.parent, os.W_OK) or (target.exists() and not os.access(target, os.W_OK)):
        raise UserError(f"--output {path}: not writable by this user; choose another location")


def check_output_is_not_an_input(output: str, inputs: Sequence[str]) -> None:
    """Refuse an --output that would overwrite the prompt file, an ISP image or an image being scored."""
    if output == "-" or not Path(output).exists():
        return
    target = Path(output).resolve()
    for given in inputs:
        if Path(given).resolve() == target:
            raise UserError(f"--output {output}: is also an input ({given}); writing the scores there would replace "
                            "it; give another file name")


def check_scoring_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.prompt_pool:
        raise UserError("--prompt-pool applies with --dataset (a pool drawn from its training split); to score "
                        "with a pool of your own, give it as --prompts")
    if not (args.prompts or args.runtime == "onnx") or not (args.images or args.image_list or args.save_prompts
                                                           or args.select_prompts):
        parser.error("give --prompts and --images to score images (or --prompts and --save-prompts to save them), "
                     "or --dataset to evaluate")
    if args.prompts and is_saved_prompts(args.prompts) and (args.score_range or args.reverse_prompts or args.save_prompts):
        raise UserError(f"--prompts {args.prompts}: a saved prompt set already holds its scores; --score-range, "
                        "--reverse-prompts and --save-prompts apply when saving it from the prompt file")
    if args.score_range:
        with naming("--score-range"):
            check_score_range(*args.score_range)
    if args.output:
        check_output(args.output)
    check_collection_args(args)
    if args.save_prompts:
        with naming("--save-prompts"):
            check_save_path(args.save_prompts)


def given_score_range(args: argparse.Namespace) -> tuple[float, float] | None:
    """--score-range as (MIN, MAX), or None when not given."""
    return tuple(args.score_range) if args.score_range else None


def read_prompts(args: argparse.Namespace) -> PromptSet | SavedPrompts:
    """The prompt file or saved set, read and checked before the model loads."""
    with naming("--prompts"):
        if is_saved_prompts(args.prompts):
            return read_saved_prompts(args.prompts)
        prompt_set = read_prompt_file(args.prompts, given_score_range(args))
    return prompt_set.reversed() if args.reverse_prompts else prompt_set


def load_scoring_model(args: argparse.Namespace, device: torch.device):
    """The network of --checkpoint (with --backbone/--img-size overrides) on `device`."""
    try:
        with naming("--checkpoint"):
            return load_model(args.checkpoint, args.backbone, args.img_size, device)
    except UserError as error:
        if isinstance(error.__cause__, CheckpointNotFound):
            raise UserError(f"{error} {how_to_get_checkpoint(CHECKPOINT_DIR)}") from error
        raise


def prompts_lower_better(args: argparse.Namespace) -> bool:
    """--lower-is-better as the prompts mean it: reversing them reverses the requirement."""
    return args.lower_is_better != args.reverse_prompts


def prepare_and_save_prompts(args: argparse.Namespace, given: PromptSet | SavedPrompts, scorer: Scorer) -> SavedPrompts:
    """The prompts ready for the network, saved with its identity if --save-prompts asks.

    Reversing the prompts reverses the requirement, so --lower-is-better --reverse-prompts scores
    higher-is-better (as the web app labels it)."""
    lower_better = prompts_lower_better(args)
    with naming("--prompts"):
        prompts = prepare_prompts(scorer, given, given_score_range(args), lower_better, args.prompts)
    if args.select_prompts:
        with naming(f"--select-prompts {args.select_prompts}:"):
            prompts = select_from_pool(scorer.model, prompts, args.select_prompts)
        low, high = prompts.score_range or (0.0, 1.0)
        chosen = zip(prompts.prompt_set.paths, unit_range_to_scores(prompts.prompt_set.scores, low, high))
        print("selected prompts:\n" + "\n".join(f"  {path}\t{score:g}" for path, score in chosen), file=sys.stderr)
    if args.save_prompts:
        with naming("--save-prompts"):
            save_prompts(args.save_prompts, replace(prompts, checkpoint=checkpoint_identity(scorer.model)))
        print(f"saved the encoded prompts to {args.save_prompts}; reuse them with --prompts {args.save_prompts}",
              file=sys.stderr)
    return prompts


def scoring_prompts(args: argparse.Namespace, model, prompts: SavedPrompts) -> Prompts:
    """The prompts as --ensemble and --interval use them: one set, or an ensemble (calibrated)."""
    with naming(f"--interval {args.interval:g}:" if args.interval else f"--ensemble {args.ensemble}:"):
        return pool_prompts(model, prompts, args.ensemble, level=args.interval, seed=args.pool_seed)


def describe_scale(prompts: SavedPrompts) -> str:
    low, high = prompts.score_range or (0.0, 1.0)
    direction = ", lower is better (as the prompts' scores)" if prompts.lower_better else ", higher is better"
    return f"scores on [{low:g}, {high:g}]{direction}"


def check_collection_args(args: argparse.Namespace) -> None:
    """Refuse collection flags that cannot work together, before any work is done."""
    if args.resume and not writes_parts(args):
        raise UserError("--resume continues the run that writes --output FILE; give the same --output (a file, "
                        "not a stream)")
    if launched_by_torchrun() and int(os.environ["WORLD_SIZE"]) > 1 and not writes_parts(args):
        raise UserError("under torchrun give --output FILE (a file, not a stream): each process writes its part "
                        "beside it, merged into FILE at the end")


def writes_parts(args: argparse.Namespace) -> bool:
    """Whether --output is a file that parts can stand beside (stdout, FIFOs and devices are streamed once)."""
    return bool(args.output) and args.output != "-" and not is_stream(args.output)


def print_rows(rows: list[ScoredImage]) -> None:
    """Each score as soon as its batch is scored (`path\tscore`, then spread, low and high where the
    prompts give them); skipped images on stderr."""
    for row in rows:
        if row.error:
            print(f"skipped: {row.error}", file=sys.stderr)
        else:
            values = "\t".join(f"{v:.8f}" for v in row.values().values() if v is not None)
            print(f"{row.id}\t{values}", flush=True)


def score_collection(args: argparse.Namespace, scorer: Scorer, collection: Collection, prompts: SavedPrompts,
                     used: Prompts, ctx: DistContext, store) -> None:
    """The collection scored under `used` (the prompts' vectors or their ensemble) by every process of the
    job; --output written as parts and merged, or, for a stream (stdout, a FIFO, a device), written once
    at the end with no `path\tscore` lines on stdout."""
    streamed: list[ScoredImage] = []
    stream = bool(args.output) and not writes_parts(args)
    job = CollectionJob(
        scorer, collection, used, Path(args.output) if writes_parts(args) else None, ctx, store,
        resume=args.resume, skip_bad=args.on_bad_image == "skip", score_range=prompts.score_range or (0.0, 1.0),
        echo=streamed.extend if stream else print_rows,
        advice="; fix or remove them, or pass --on-bad-image skip to record them in the output and go on",
    )
    summary = job.run()
    if stream:
        write_output(args.output, streamed, output_columns(used))
    if ctx.is_main:
        print(summary.text(), file=sys.stderr)


def write_output(output: str, rows: list[ScoredImage], columns: tuple[str, ...] = COLUMNS) -> None:
    """--output written in one go (a stream, or the ONNX runtime's single process)."""
    with naming("--output"):
        write_rows(output, (row_record(r) for r in rows), columns)


def score_files_on_onnx(args: argparse.Namespace, scorer: OnnxScorer, collection: Collection,
                        prompts: SavedPrompts) -> None:
    """--runtime onnx scores image files (not tar shards) in one process, printing each score."""
    if collection.shards_total or args.resume or launched_by_torchrun():
        raise UserError("--runtime onnx scores image files in one process; tar shards, --resume and torchrun "
                        "need the PyTorch runtime")
    paths = [unit.path for unit in collection.units()]
    low, high = prompts.score_range or (0.0, 1.0)
    batches = scorer.iter_scores(paths, prompts.vectors, progress=len(paths) > 1)
    rows = [ScoredImage(path, score, None, (order, 0)) for order, (path, score) in
            enumerate(zip(paths, (s for batch in batches for s in unit_range_to_scores(batch, low, high))))]
    if args.output != "-":
        print_rows(rows)
    if args.output:
        write_output(args.output, rows)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    args = parser.parse_args(argv or example_arguments())
    args.runtime = "onnx" if args.onnx else args.runtime
    if args.dataset:
        return evaluate_datasets(args)
    check_scoring_args(parser, args)
    given = read_prompts(args) if args.prompts else None
    collection = collect_images(args.images or [], args.image_list, args.recursive)
    if args.output:
        isp_images = list(given.paths) if isinstance(given, PromptSet) else []
        check_output_is_not_an_input(args.output, [args.prompts, *(args.images or []), *args.image_list, *isp_images])
        with naming("--output"):
            output_format(args.output)
    if args.runtime == "onnx":
        scorer, prompts = onnx_scoring(args, given)
        if collection.units_total:
            score_files_on_onnx(args, scorer, collection, prompts)
        return 0
    ctx, store = join_torchrun(resolve_device(args.device))
    try:
        model = load_scoring_model(args, ctx.device)
        scorer = Scorer(model, batch_size=args.batch_size, workers=args.workers, precision=args.precision,
                        compile=args.compile)
        configure_backends(scorer.device, scorer.precision)  # once, before the first batch
        prompts = prepare_and_save_prompts(args, given, scorer)
        if not collection.units_total:
            return 0
        used = scoring_prompts(args, model, prompts)
        if (prompts.score_range or prompts.lower_better or args.lower_is_better) and ctx.is_main:
            print(describe_scale(prompts), file=sys.stderr)
        score_collection(args, scorer, collection, prompts, used, ctx, store)
    finally:
        cleanup(ctx)
    return 0


def onnx_scoring(args: argparse.Namespace, given: PromptSet | SavedPrompts | None) -> tuple[OnnxScorer, SavedPrompts]:
    """--runtime onnx: the graphs exported to --onnx and the prompts for them (PromptIQA/export)."""
    pytorch_only = {"--compile": args.compile, "--backbone": args.backbone, "--img-size": args.img_size,
                    "--save-prompts": args.save_prompts, "--precision": args.precision not in ("auto", "fp32"),
                    "--device": args.device not in ("auto", "cpu"), "--ensemble": (args.ensemble or 1) > 1,
                    "--interval": args.interval, "--select-prompts": args.select_prompts}
    if not args.onnx or any(pytorch_only.values()):
        raise UserError("--runtime onnx: give --onnx DIR (a folder written by promptiqa-export)" if not args.onnx else
                        f"{', '.join(f for f, used in pytorch_only.items() if used)}: options of the PyTorch runtime; "
                        "drop them with --runtime onnx (ONNX Runtime scores on the CPU with the exported graphs)")
    with naming("--onnx"):
        scorer = OnnxScorer(args.onnx, batch_size=args.batch_size, workers=args.workers)
    if args.checkpoint != str(DEFAULT_CHECKPOINT):
        with naming("--checkpoint"):
            check_exported_checkpoint(scorer, args.checkpoint)
    if given is not None:
        with naming("--prompts"):
            prompts = scorer.prepare_prompts(given, given_score_range(args), prompts_lower_better(args), args.prompts)
        return scorer, prompts
    if scorer.baked_prompts is None:
        raise UserError(f"--onnx {args.onnx}: this export has no baked prompt set; give --prompts, or export "
                        "with promptiqa-export --prompts")
    return scorer, scorer.baked_prompts


def evaluate_datasets(args: argparse.Namespace) -> int:
    """SRCC/PLCC per dataset on the test split, prompts chosen from the training split as in training."""
    if args.compile or args.runtime == "onnx":
        raise UserError(f"{'--compile' if args.compile else '--runtime onnx'} applies to scoring images "
                        "(--prompts/--images); drop it for --dataset")
    pool_flags = [flag for flag, used in (("--ensemble", args.ensemble), ("--interval", args.interval),
                                          ("--select-prompts", args.select_prompts)) if used]
    if pool_flags and not args.prompt_pool:
        raise UserError(f"{', '.join(pool_flags)} with --dataset: give --prompt-pool N too (the pool the "
                        "ensemble, the interval and the selection come from)")
    with naming("--checkpoint"):
        ckpt = read_checkpoint(args.checkpoint)
    seed = args.seed if args.seed is not None else ckpt.get("config", ckpt.get("args", {})).get("seed", DEFAULT_SEED)
    records = read_datasets(args.dataset, args.dataset_info, args.demo)
    device = resolve_device(args.device)
    with naming("--checkpoint"):
        model = model_from_checkpoint(ckpt, args.checkpoint, args.backbone, args.img_size, device)
    ctx = DistContext(device=next(model.parameters()).device)
    precision = resolve_precision(args.precision, ctx.device)
    datasets = open_datasets(records, model.config.img_size, seed, ctx, cache_dir=args.cache_dir, workers=args.workers)
    if args.prompt_pool:
        with precision_scope(ctx.device, precision):
            return report_pool_experiment(args, model, datasets, seed)
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


def report_pool_experiment(args: argparse.Namespace, model, datasets: list, seed: int) -> int:
    if args.prompt_experiment or args.reverse_prompts or args.random_prompts:
        raise UserError("--prompt-pool is an experiment of its own; drop --prompt-experiment, --reverse-prompts "
                        "and --random-prompts")
    with naming("--prompt-pool"):
        experiment = run_pool_experiment(model, datasets, args.prompt_pool, args.pool_draws,
                                         args.ensemble or ENSEMBLE_SETS, args.interval, args.select_prompts,
                                         args.pool_seed, args.batch_size, args.workers, args.prompt_num)
    print(experiment.table())
    if args.save_dir:
        for path in experiment.save(args.save_dir):
            print(f"wrote {path}")
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

"""Score images with PromptIQA under a requirement given by image-score pairs (ISPs).

    python test.py --checkpoint CKPT --prompts PROMPTS --images IMG_OR_DIR ... [--output out.csv]
"""
from __future__ import annotations

import argparse
import sys

from PromptIQA.checkpoint import DEFAULT_CHECKPOINT, load_model
from PromptIQA.cli import collect_images, resolve_device, run_main, write_csv_atomic
from PromptIQA.data.prompts import read_prompt_file
from PromptIQA.inference import Scorer

EXAMPLE = (
    "example:\n  python test.py --checkpoint PromptIQA/checkpoints/best_model.pth.tar \\\n"
    "      --prompts Examples/Example1/prompts.json --images Examples/Example1/cactus.png"
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Score images with PromptIQA against a prompt set (image-score pairs).",
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT), help="published or project checkpoint")
    parser.add_argument("--prompts", required=True, help='JSON {"isp": [[image, score], ...]} or CSV path,score')
    parser.add_argument("--images", nargs="+", required=True, help="images or folders of images to score")
    parser.add_argument("--output", help="also write the scores as CSV (path,score)")
    parser.add_argument("--reverse-prompts", action="store_true", help="use 1 - score for every ISP")
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


if __name__ == "__main__":
    sys.exit(run_main(main))

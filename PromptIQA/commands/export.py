"""Export the scoring path of a checkpoint to ONNX graphs for ONNX Runtime (PromptIQA/export).

    promptiqa-export --checkpoint CKPT --output DIR [--prompts PROMPTS] [--quantize int8] [--opset N]
    python -m PromptIQA.commands.export ...   (the same)
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..export.exporter import DEFAULT_OPSET, MAX_OPSET, QUANTIZE_CHOICES, check_output_folder, export_onnx
from ..export.extra import require
from ..export.manifest import INPUT_FORMS, MANIFEST_NAME
from ..models.checkpoint import DEFAULT_CHECKPOINT, load_model
from ..scoring.saved_prompts import SAVED_PROMPTS_SUFFIX, is_saved_prompts, prepare_prompts
from ..scoring.scorer import Scorer
from ..utils.errors import UserError, naming
from .common import both_spellings, run_main
from .score import given_score_range, read_prompts

EXAMPLE = (
    "examples:\n  promptiqa-export --checkpoint runs/demo/best.pth.tar --output exported/\n"
    "  promptiqa-export --checkpoint best_model.pth.tar --output example1/ --prompts Examples/Example1/prompts.json\n"
    "  promptiqa-export --checkpoint best_model.pth.tar --output int8/ --quantize int8\n"
    "  python test.py --runtime onnx --onnx exported/ --prompts prompts.json --images photos/"
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Export PromptIQA's scoring path to ONNX: query.onnx (images + prompt vectors -> scores), "
                    "prompt.onnx (ISP images + scores -> prompt vectors), optionally baked.onnx (images -> scores "
                    f"under one prompt set), and {MANIFEST_NAME}. Needs the extra: pip install \".[onnx]\".",
        epilog=EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT),
                        help="checkpoint file, or hf:OWNER/REPO[/FILE] (default file best_model.pth.tar)")
    parser.add_argument("--output", required=True, metavar="DIR",
                        help="folder to write (an earlier export there is replaced; written whole or not at all)")
    parser.add_argument("--prompts", help="also bake this prompt set into baked.onnx: JSON, CSV, or a set saved "
                                          f"with test.py --save-prompts (*{SAVED_PROMPTS_SUFFIX}) by this checkpoint")
    parser.add_argument("--score-range", nargs=2, type=float, metavar=("MIN", "MAX"),
                        help="the ISP scores of --prompts are on [MIN, MAX] (mapped to [0, 1])")
    parser.add_argument("--reverse-prompts", action="store_true", help="use 1 - score for every ISP of --prompts")
    parser.add_argument("--lower-is-better", action="store_true",
                        help="the ISP scores of --prompts are lower-is-better (recorded with the baked set)")
    parser.add_argument("--quantize", choices=QUANTIZE_CHOICES,
                        help="int8: ONNX Runtime's dynamic quantisation of every graph (smaller, faster on CPUs)")
    parser.add_argument("--opset", type=int, choices=range(DEFAULT_OPSET, MAX_OPSET + 1), default=DEFAULT_OPSET,
                        metavar="N", help=f"ONNX opset, {DEFAULT_OPSET} to {MAX_OPSET} (default {DEFAULT_OPSET})")
    parser.add_argument("--input", choices=INPUT_FORMS, default="uint8",
                        help="uint8: (B, S, S, 3) RGB as decoded, normalised in the graph (default); "
                             "float: (B, 3, S, S) already normalised")
    return both_spellings(parser)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    require("onnx")
    require("onnxruntime")
    with naming("--output"):
        check_output_folder(Path(args.output))
    if args.prompts and is_saved_prompts(args.prompts) and (args.score_range or args.reverse_prompts):
        raise UserError(f"--prompts {args.prompts}: a saved prompt set already holds its scores; --score-range and "
                        "--reverse-prompts apply to prompt files (JSON, CSV)")
    given = read_prompts(args) if args.prompts else None
    with naming("--checkpoint"):
        model = load_model(args.checkpoint)
    prompts = None
    if given is not None:  # a saved set made by another checkpoint is refused here
        with naming("--prompts"):
            prompts = prepare_prompts(Scorer(model, precision="fp32"), given, given_score_range(args),
                                      args.lower_is_better, args.prompts)
    with naming("--output"):
        manifest = export_onnx(model, args.output, prompts, quantize=args.quantize, opset=args.opset,
                               input_form=args.input)
    diffs = manifest.check[f"{manifest.weights}_max_abs_diff"]
    print(f"wrote {args.output}: {', '.join(manifest.graphs.values())}, {MANIFEST_NAME} ({manifest.weights}, "
          f"opset {manifest.opset}, {manifest.input} input at {manifest.image_size} px)")
    print("largest |ONNX Runtime - PyTorch| score on the check inputs: "
          + ", ".join(f"{graph} {diff:.2g}" for graph, diff in diffs.items())
          + f" (tolerance {manifest.check['tolerance']:g})")
    return 0


def cli() -> None:
    """Console-script entry point."""
    sys.exit(run_main(main))


if __name__ == "__main__":
    cli()

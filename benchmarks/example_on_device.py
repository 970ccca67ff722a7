"""Example1 scored on a device with the made-up published-layout checkpoint (tools/make_parity_checkpoint.py),
against the CPU fp32 score recorded there (tests/test_parity.py): fp32 must agree within 1e-3; bf16
is shown beside it on GPUs that have it.

    python -m benchmarks.example_on_device --device cuda
    python -m benchmarks.example_on_device --device cpu      (fp32 only; the full network: minutes)
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from PromptIQA.data.prompts import read_prompt_file
from PromptIQA.models.checkpoint import load_model
from PromptIQA.scoring.scorer import Scorer
from PromptIQA.utils.device import bf16_supported, resolve_device
from tools.make_parity_checkpoint import PUBLISHED_SCORE, build_checkpoint

EXAMPLE = Path(__file__).resolve().parents[1] / "Examples" / "Example1"
TOLERANCE = 1e-3


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:INDEX")
    device = resolve_device(parser.parse_args(argv).device)
    with tempfile.TemporaryDirectory() as folder:
        model = load_model(build_checkpoint(Path(folder) / "best_model.pth.tar"), device=device)
    results = []
    for precision in ("fp32", "bf16") if device.type == "cuda" and bf16_supported(device) else ("fp32",):
        scorer = Scorer(model, batch_size=10, workers=0, precision=precision)
        prompts = scorer.encode_prompt_set(read_prompt_file(EXAMPLE / "prompts.json"))
        score = float(scorer.score_images([str(EXAMPLE / "cactus.png")], prompts)[0])
        results.append((precision, score, abs(score - PUBLISHED_SCORE)))
        print(f"Example1 on {device}, {precision}: {score:.6f}; CPU fp32 {PUBLISHED_SCORE:.6f}; "
              f"|diff| {abs(score - PUBLISHED_SCORE):.2e}")
    fp32_ok = results[0][2] <= TOLERANCE
    cells = ", ".join(f"{p} {s:.6f} (|diff| {d:.1e})" for p, s, d in results)
    print(f"SUMMARY example_on_device: {cells}; fp32 {'within' if fp32_ok else 'OUTSIDE'} {TOLERANCE:g}")
    return 0 if fp32_ok else 1


if __name__ == "__main__":
    sys.exit(main())

"""Seconds to score one image with `test.py`: the first run (reads and encodes the 10 ISPs of
Examples/Example1) versus a run that reuses the prompts saved with `--save-prompts`.

The full-size network (vit_base_patch8_224 at 224 px) with random weights stands in for the
published checkpoint (same size, same work). Each run is a separate `test.py` process, timed from
start to exit, so both include starting Python and loading the checkpoint.

    python -m benchmarks.saved_prompts_speed --repeats 2 --device cpu   (from the repository root)
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from PromptIQA.models import ModelConfig, PromptIQA
from PromptIQA.models.checkpoint import save_checkpoint

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE1 = ROOT / "Examples" / "Example1"


def seconds(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, str(ROOT / "test.py"), *argv], check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        checkpoint, saved = Path(folder) / "full.pth.tar", Path(folder) / "example1.pt"
        torch.manual_seed(0)
        model = PromptIQA(ModelConfig())
        save_checkpoint({"model": model.state_dict(), "model_config": model.config.to_dict()}, checkpoint)
        del model
        common = ["--checkpoint", str(checkpoint), "--device", args.device, "--images", str(EXAMPLE1 / "cactus.png")]
        seconds(common + ["--prompts", str(EXAMPLE1 / "prompts.json"), "--save-prompts", str(saved)])
        first = [seconds(common + ["--prompts", str(EXAMPLE1 / "prompts.json")]) for _ in range(args.repeats)]
        reused = [seconds(common + ["--prompts", str(saved)]) for _ in range(args.repeats)]
    first_s, reused_s = statistics.median(first), statistics.median(reused)
    print(f"first run (encode 10 ISPs + score 1 image): {first_s:.1f} s  (runs: {', '.join(f'{s:.1f}' for s in first)})")
    print(f"with saved prompts (score 1 image):         {reused_s:.1f} s  (runs: {', '.join(f'{s:.1f}' for s in reused)})")
    print(f"speed-up: {first_s / reused_s:.1f}x")


if __name__ == "__main__":
    main()

"""ONNX Runtime against PyTorch on the CPU: equal scores, images/s (fp32 and int8), int8 accuracy, cold start.

1. Exports the checkpoint twice (fp32 and int8, Example1's prompts baked in) with promptiqa-export's code.
2. Largest |ONNX Runtime - PyTorch fp32| score on Example1 and Example7 (their query images under
   their prompts, the prompts encoded by each runtime's own prompt path).
3. Scoring images/s at each --batches size, prompts encoded once, images already decoded (the
   network only): PyTorch fp32 eager (Scorer), ONNX Runtime fp32 and int8 (OnnxScorer); ratios to PyTorch.
4. With --demo: SRCC on the demo test splits under PyTorch fp32, ONNX Runtime fp32 and int8 (give
   the demo checkpoint with --checkpoint; other weights make these numbers meaningless).
5. Cold start: a new `test.py` process scoring cactus.png with the baked prompt set on ONNX Runtime,
   against `test.py` with a prompt set saved by --save-prompts on PyTorch; start to exit, median of --repeats.

Without --checkpoint the full-size network gets the made-up weights of tools/make_parity_checkpoint.py
(1.3 GB, several seconds per image on a 2-core CPU); a smaller --backbone/--img-size gets random weights.

    python -m benchmarks.export_speed                                                  (full size: slow)
    python -m benchmarks.export_speed --backbone vit_tiny_patch16_224 --img-size 64    (a quick run)
    python -m benchmarks.export_speed --checkpoint runs/demo/best.pth.tar --demo
"""
from __future__ import annotations

import argparse
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from unittest import mock

import numpy as np
import torch

from PromptIQA.data.dataset_info import DEFAULT_DATASET_INFO
from PromptIQA.data.image import to_tensor
from PromptIQA.data.loader import eval_sets
from PromptIQA.data.prepare import open_datasets, read_datasets
from PromptIQA.data.prompts import read_prompt_file
from PromptIQA.export import OnnxScorer, export_onnx, exporter
from PromptIQA.export.exporter import synthetic_images
from PromptIQA.models import ModelConfig, PromptIQA
from PromptIQA.models.backbone import DEFAULT_BACKBONE
from PromptIQA.models.checkpoint import load_model, save_checkpoint
from PromptIQA.scoring.saved_prompts import SavedPrompts
from PromptIQA.scoring.scorer import Scorer
from PromptIQA.utils.distributed import DistContext
from PromptIQA.utils.errors import UserError
from PromptIQA.utils.stats import correlations
from tools.make_parity_checkpoint import build_checkpoint

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = {"Example1": ("cactus.png",), "Example7": ("198.bmp",)}
DEMO_DATASETS = ["demo_kadid", "demo_csiq"]
DEMO_SEED = 2024


def make_checkpoint(args: argparse.Namespace, folder: Path) -> Path:
    if args.checkpoint:
        return Path(args.checkpoint)
    path = folder / "benchmark.pth.tar"
    if args.backbone == DEFAULT_BACKBONE and args.img_size == 224:
        return build_checkpoint(path)
    torch.manual_seed(0)
    config = ModelConfig(backbone=args.backbone, img_size=args.img_size)
    save_checkpoint({"model": PromptIQA(config).state_dict(), "model_config": config.to_dict()}, path)
    return path


def example_differences(scorer: Scorer, runtimes: dict[str, OnnxScorer]) -> dict[str, dict[str, float]]:
    """name -> runtime -> largest |ONNX Runtime - PyTorch| score over the example's query images."""
    found = {}
    for name, queries in EXAMPLES.items():
        folder = ROOT / "Examples" / name
        prompt_set = read_prompt_file(folder / "prompts.json")
        images = [str(folder / q) for q in queries]
        expected = scorer.score_images(images, scorer.encode_prompt_set(prompt_set))
        found[name] = {label: float(np.abs(onnx.score_images(images, onnx.encode_prompt_set(prompt_set))
                                           - expected).max()) for label, onnx in runtimes.items()}
    return found


def images_per_second(score: Callable[[], object], batch: int, repeats: int) -> float:
    score()  # warm-up: first-run allocations and, for ONNX Runtime, its kernel choices
    start = time.perf_counter()
    for _ in range(repeats):
        score()
    return batch * repeats / (time.perf_counter() - start)


def speed_table(scorer: Scorer, runtimes: dict[str, OnnxScorer], batches: list[int], repeats: int) -> list[str]:
    size = scorer.model.config.img_size
    prompt_set = read_prompt_file(ROOT / "Examples" / "Example1" / "prompts.json")
    vectors = scorer.encode_prompt_set(prompt_set)
    lines = [f"{'runtime':<22}{'batch':>6}{'img/s':>10}{'x PyTorch':>11}"]
    for batch in batches:
        uint8 = synthetic_images(batch, size, seed=batch)
        normalised = to_tensor(uint8)
        base = images_per_second(lambda: scorer.score_images(normalised, vectors), batch, repeats)
        lines.append(f"{'PyTorch fp32 eager':<22}{batch:>6}{base:>10.2f}{1.0:>11.2f}")
        for label, onnx in runtimes.items():
            rate = images_per_second(lambda: onnx.score_images(uint8, vectors.numpy()), batch, repeats)
            lines.append(f"{'ONNX Runtime ' + label:<22}{batch:>6}{rate:>10.2f}{rate / base:>11.2f}")
    return lines


def demo_srcc(model: PromptIQA, runtimes: dict[str, OnnxScorer]) -> list[str]:
    """SRCC per demo test split under each runtime, the prompts chosen as test.py --dataset chooses them,
    and the largest |runtime - PyTorch fp32| score over the split."""
    records = read_datasets(DEMO_DATASETS, DEFAULT_DATASET_INFO, demo=True)
    datasets = open_datasets(records, model.config.img_size, DEMO_SEED, DistContext(), cache_dir="none")
    scorer = Scorer(model, precision="fp32", workers=0)
    lines = [f"{'dataset':<14}{'PyTorch fp32':>14}" + "".join(f"{'ORT ' + label:>20}" for label in runtimes)
             + "   (SRCC; largest |score - PyTorch|)"]
    for eval_set in eval_sets(datasets, model.prompt_num, "fixed", DEMO_SEED):
        records_of = datasets[eval_set.dataset_id].records
        prompts = [str(records_of[i].path) for i in eval_set.prompts]
        tests = [str(records_of[i].path) for i in eval_set.test]
        labels = np.asarray(eval_set.test_labels)
        expected = scorer.score_images(tests, scorer.encode_prompts(prompts, eval_set.prompt_labels))
        cells = []
        for onnx in runtimes.values():
            scores = onnx.score_images(tests, onnx.encode_prompts(prompts, eval_set.prompt_labels))
            cells.append(f"{correlations(scores, labels)[0]:.4f}; {np.abs(scores - expected).max():.1e}")
        lines.append(f"{eval_set.name:<14}{correlations(expected, labels)[0]:>14.4f}"
                     + "".join(f"{c:>20}" for c in cells))
    return lines


def process_seconds(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, str(ROOT / "test.py"), *argv], check=True, cwd=ROOT, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def cold_start(checkpoint: Path, exported: Path, saved: Path, repeats: int) -> list[str]:
    cactus = str(ROOT / "Examples" / "Example1" / "cactus.png")
    onnx = [process_seconds(["--runtime", "onnx", "--onnx", str(exported), "--images", cactus])
            for _ in range(repeats)]
    pytorch = [process_seconds(["--checkpoint", str(checkpoint), "--device", "cpu", "--prompts", str(saved),
                                "--images", cactus]) for _ in range(repeats)]
    runs = lambda seconds: ", ".join(f"{s:.1f}" for s in seconds)  # noqa: E731
    return [f"ONNX Runtime, baked prompt set:      {statistics.median(onnx):.1f} s  (runs: {runs(onnx)})",
            f"PyTorch test.py, saved prompt set:   {statistics.median(pytorch):.1f} s  (runs: {runs(pytorch)})"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", help="checkpoint to export (default: made-up or random weights, see above)")
    parser.add_argument("--backbone", default=DEFAULT_BACKBONE)
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--batches", default="1,8", help="batch sizes to time, comma-separated")
    parser.add_argument("--repeats", type=int, default=3, help="timed batches per row, and cold-start runs")
    parser.add_argument("--demo", action="store_true", help="also SRCC on the demo test splits (demo checkpoint)")
    args = parser.parse_args()
    batches = [int(b) for b in args.batches.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        checkpoint = make_checkpoint(args, folder)
        model = load_model(checkpoint)
        scorer = Scorer(model, batch_size=max(batches), workers=0, precision="fp32")
        example1 = read_prompt_file(ROOT / "Examples" / "Example1" / "prompts.json")
        baked = SavedPrompts(scorer.encode_prompt_set(example1), example1, None, False, "")
        runtimes = {}
        for weights in ("fp32", "int8"):
            start = time.perf_counter()
            try:
                export_onnx(model, folder / weights, baked, quantize=None if weights == "fp32" else weights)
            except UserError as refused:
                if weights == "fp32":
                    raise
                # promptiqa-export would stop here; the benchmark measures what int8 would cost anyway
                print(f"export int8 refused by its check ({refused}); measured below with the check lifted")
                with mock.patch.dict(exporter.TOLERANCE, {"int8": math.inf}):
                    export_onnx(model, folder / weights, baked, quantize=weights)
                weights = "int8 (refused)"
                os.replace(folder / "int8", folder / weights)
            print(f"export {weights}: {time.perf_counter() - start:.1f} s", flush=True)
            runtimes[weights] = OnnxScorer(folder / weights, batch_size=max(batches), workers=0)
        print(f"\n{model.config.backbone} at {model.config.img_size} px; torch threads {torch.get_num_threads()}")
        print("\nlargest |ONNX Runtime - PyTorch fp32| score:")
        for name, diffs in example_differences(scorer, runtimes).items():
            print(f"  {name}: " + ", ".join(f"{label} {diff:.2e}" for label, diff in diffs.items()))
        print("\nscoring speed (decoded images, prompts encoded once):")
        print("\n".join("  " + line for line in speed_table(scorer, runtimes, batches, args.repeats)))
        if args.demo:
            print("\nSRCC on the demo test splits:")
            print("\n".join("  " + line for line in demo_srcc(model, runtimes)))
        else:
            print("\nint8 SRCC change: not measured (give the demo checkpoint with --checkpoint ... --demo)")
        saved = folder / "example1.pt"
        subprocess.run([sys.executable, str(ROOT / "test.py"), "--checkpoint", str(checkpoint), "--device", "cpu",
                        "--prompts", str(ROOT / "Examples" / "Example1" / "prompts.json"), "--save-prompts",
                        str(saved)], check=True, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        print("\ncold start (new process -> Example1's cactus.png scored):")
        print("\n".join("  " + line for line in cold_start(checkpoint, folder / "fp32", saved, args.repeats)))


if __name__ == "__main__":
    main()

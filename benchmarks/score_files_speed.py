"""Scoring speed from JPEG files on disk, decoding included: the figure a user of test.py sees.

Writes --images JPEG files (--width x --height, smooth colour plus noise) to a temporary folder,
encodes a prompt set of 10 of them once, then times Scorer.score_images over all the files (after one
untimed warm-up batch, which includes any compilation). Random weights.

    python -m benchmarks.score_files_speed --device cuda --images 2048                       (full network)
    python -m benchmarks.score_files_speed --device cpu --backbone vit_tiny_patch16_224 --images 64
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from benchmarks.model_speed import CPU_BACKBONE, PROMPTS, synchronize
from PromptIQA.models import ModelConfig, PromptIQA
from PromptIQA.models.backbone import DEFAULT_BACKBONE
from PromptIQA.scoring.scorer import Scorer
from PromptIQA.utils.device import PRECISION_CHOICES, configure_backends, resolve_device, resolve_precision


def write_jpegs(folder: Path, count: int, width: int, height: int) -> list[str]:
    """`count` distinct photo-sized JPEG files (quality 90)."""
    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 255, width, dtype=np.float32)[None, :, None]
    paths = []
    for i in range(count):
        image = ramp * rng.uniform(0.3, 1.0, size=(1, 1, 3)) + rng.normal(0, 20, size=(height, width, 3))
        path = folder / f"img{i:05d}.jpg"
        cv2.imwrite(str(path), np.clip(image, 0, 255).astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, 90])
        paths.append(str(path))
    return paths


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:INDEX")
    parser.add_argument("--backbone", help=f"default {DEFAULT_BACKBONE} on CUDA, {CPU_BACKBONE} on CPU")
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--images", type=int, default=1024, help="JPEG files to score")
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--height", type=int, default=384)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=8, help="decoding threads")
    parser.add_argument("--precision", choices=PRECISION_CHOICES, default="auto")
    parser.add_argument("--compile", action="store_true")
    args = parser.parse_args(argv)
    args.device = resolve_device(args.device)
    args.backbone = args.backbone or (DEFAULT_BACKBONE if args.device.type == "cuda" else CPU_BACKBONE)
    args.precision = resolve_precision(args.precision, args.device)
    if args.images <= args.batch_size:
        parser.error("--images: give more than --batch-size (one batch is the untimed warm-up)")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.manual_seed(0)
    model = PromptIQA(ModelConfig(backbone=args.backbone, img_size=args.img_size)).to(args.device).eval()
    configure_backends(args.device, args.precision)
    scorer = Scorer(model, batch_size=args.batch_size, workers=args.workers, precision=args.precision,
                    compile=args.compile)
    with tempfile.TemporaryDirectory() as folder:
        paths = write_jpegs(Path(folder), args.images, args.width, args.height)
        prompts = scorer.encode_prompts(paths[:PROMPTS], np.linspace(0.1, 0.9, PROMPTS).tolist())
        start = time.perf_counter()
        scorer.score_images(paths[: args.batch_size], prompts)  # warm-up, compilation included
        synchronize(args.device)
        warmup = time.perf_counter() - start
        timed = paths[args.batch_size:]
        start = time.perf_counter()
        scores = scorer.score_images(timed, prompts)
        synchronize(args.device)
        seconds = time.perf_counter() - start
    assert len(scores) == len(timed) and np.isfinite(scores).all()
    name = torch.cuda.get_device_name(args.device) if args.device.type == "cuda" else "CPU"
    label = f"{args.precision}{' + compile' if args.compile else ''}"
    print(f"{name}; torch {torch.__version__}; {args.backbone} at {args.img_size} px; {len(timed)} JPEG files "
          f"of {args.width}x{args.height}; batches of {args.batch_size}; {args.workers} decoding threads; {label}")
    print(f"warm-up {warmup:.1f} s; scoring from files: {len(timed) / seconds:.1f} img/s")
    print(f"SUMMARY score_files_speed ({label}): {len(timed) / seconds:.1f} img/s from JPEG files")


if __name__ == "__main__":
    main()

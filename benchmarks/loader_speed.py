"""Images per second of the training input pipeline, decoding every epoch versus the image cache.

Writes synthetic 1024x768 photo-like JPEGs (smooth gradients, shapes and sensor-like noise, so the
files are the size of real photos) to a temporary folder, then feeds them through a DataLoader:
(a) DirectImages: decode + resize on every access, every epoch;
(b) ImageCache: one build (decode + resize once, in threads), then epochs read from the memmap.
Both paths end in the same normalised tensors (to_tensor).

    python -m benchmarks.loader_speed --images 200 --epochs 3 --workers 2   (from the repository root)
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from PromptIQA.data.cache import DirectImages, ImageCache
from PromptIQA.data.image import IMAGE_SIZE, to_tensor


class Frames(Dataset):
    def __init__(self, store: DirectImages | ImageCache):
        self.store = store

    def __len__(self) -> int:
        return len(self.store)

    def __getitem__(self, index: int) -> torch.Tensor:
        return to_tensor(self.store[index])


def synthetic_photo(rng: np.random.Generator, width: int = 1024, height: int = 768) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    image = np.empty((height, width, 3), np.float32)
    for channel in range(3):
        fx, fy, phase = rng.uniform(0.002, 0.02), rng.uniform(0.002, 0.02), rng.uniform(0, 2 * np.pi)
        image[..., channel] = 128 + 90 * np.sin(fx * x + phase) * np.cos(fy * y)
    for _ in range(12):
        centre = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        colour = rng.integers(0, 256, 3).tolist()
        cv2.circle(image, centre, int(rng.integers(10, 150)), colour, thickness=-1)
    image += rng.normal(0, 6, image.shape).astype(np.float32)
    return np.clip(image, 0, 255).astype(np.uint8)


def write_photos(folder: Path, count: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        path = folder / f"{i:05d}.jpg"
        cv2.imwrite(str(path), synthetic_photo(rng), [cv2.IMWRITE_JPEG_QUALITY, 90])
        paths.append(str(path))
    return paths


def epoch_seconds(store: DirectImages | ImageCache, args: argparse.Namespace) -> list[float]:
    loader = DataLoader(
        Frames(store),
        batch_size=args.batch_size,
        shuffle=True,
        num_workers=args.workers,
        persistent_workers=args.workers > 0,
    )
    seconds = []
    for _ in range(args.epochs):
        start = time.perf_counter()
        for batch in loader:
            assert batch.dtype == torch.float32
        seconds.append(time.perf_counter() - start)
    return seconds


def row(name: str, count: int, seconds: list[float]) -> str:
    per_epoch = " ".join(f"{s:6.2f}" for s in seconds)
    return f"{name:<24} {per_epoch:<28} {count / statistics.median(seconds):10.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200, help="number of synthetic 1024x768 JPEGs")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers, and cache build threads")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--size", type=int, default=IMAGE_SIZE)
    args = parser.parse_args()
    torch.set_num_threads(1)

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        paths = write_photos(folder, args.images)
        mean_kib = sum(os.path.getsize(p) for p in paths) / len(paths) / 1024
        print(f"{args.images} JPEGs 1024x768, mean {mean_kib:.0f} KiB; {args.workers} workers, "
              f"batch {args.batch_size}, {args.size}x{args.size}, {os.cpu_count()} CPUs")

        direct = epoch_seconds(DirectImages(paths, args.size), args)
        start = time.perf_counter()
        cache = ImageCache(paths, folder / "cache", args.size, workers=max(1, args.workers))
        build = time.perf_counter() - start
        cached = epoch_seconds(cache, args)

    print(f"\n{'pipeline':<24} {'seconds per epoch':<28} {'images/s':>10}")
    print(row("decode every epoch", args.images, direct))
    print(row("cache build (once)", args.images, [build]))
    print(row("cache epochs", args.images, cached))
    print("(images/s uses the median epoch)")


if __name__ == "__main__":
    main()

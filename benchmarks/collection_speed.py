"""Images per second of scoring a collection, and its peak memory as the collection grows.

Writes synthetic 320x240 JPEGs (and, for the memory rows, tiny 32x32 PNGs) to a temporary folder
and uses a model of the demo's size with random weights (resnet10t at 64 px, cnn_dim 192: the
architecture `python train.py --demo` trains; scores are meaningless, speed is not). Rows:
(a) decoding alone: the collection stream (files -> uint8 batches) by DataLoader worker count;
(b) the model alone: uint8 batches already in memory -> scores;
(c) end to end: `test.py` on the folder with --output, one process and torchrun with 2 processes
    (the images/s of the job's own summary, so Python start-up and model loading are left out);
(d) peak memory (PSS summed over the process and its decoding workers) of one process scoring
    2,000 and 20,000 small images.

    python -m benchmarks.collection_speed                     (from the repository root)
    python -m benchmarks.collection_speed --images 200 --workers 0,2 --memory 200,2000   (reduced)
    python -m benchmarks.collection_speed --images 0 --memory 2000,20000                 (memory rows only)
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader

from PromptIQA.models import ModelConfig, PromptIQA
from PromptIQA.models.checkpoint import save_checkpoint
from PromptIQA.scoring.collection import Collection, DecodedStream, SampleSource
from PromptIQA.scoring.scorer import Scorer

ROOT = Path(__file__).resolve().parents[1]
DEMO_SIZED = ModelConfig("resnet10t", 64, prompt_num=10, cnn_dim=192)


def write_images(folder: Path, count: int, size: tuple[int, int], extension: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    base = cv2.GaussianBlur(rng.integers(0, 256, (*size, 3), dtype=np.uint8), (9, 9), 0)
    for i in range(count):
        image = np.roll(base, i, axis=1)
        cv2.imwrite(str(folder / f"{i:06d}{extension}"), image)


def write_checkpoint(folder: Path) -> tuple[Path, Path]:
    torch.manual_seed(0)
    model = PromptIQA(DEMO_SIZED).eval()
    checkpoint = folder / "demo_sized.pth.tar"
    save_checkpoint({"model": model.state_dict(), "model_config": DEMO_SIZED.to_dict(), "prompt_num": 10}, checkpoint)
    write_images(folder / "isp", 10, (64, 64), ".png")
    rows = ",".join(f'["isp/{i:06d}.png", {i / 10:.1f}]' for i in range(10))
    (folder / "prompts.json").write_text(f'{{"isp": [{rows}]}}')
    return checkpoint, folder / "prompts.json"


def decoding_rate(folder: Path, workers: int, batch_size: int) -> float:
    stream = DecodedStream(SampleSource(Collection([str(folder)])), DEMO_SIZED.img_size, batch_size)
    start, count = time.perf_counter(), 0
    for batch in DataLoader(stream, batch_size=None, num_workers=workers):
        count += len(batch.pixels)
    return count / (time.perf_counter() - start)


def model_rate(batch_size: int, batches: int, device: torch.device) -> float:
    torch.manual_seed(0)
    scorer = Scorer(PromptIQA(DEMO_SIZED).eval().to(device), batch_size=batch_size, workers=0)
    prompts = scorer.encode_prompts(torch.rand(10, 3, 64, 64, device=device) * 2 - 1, torch.rand(10))
    pixels = torch.randint(0, 256, (batch_size, 64, 64, 3), dtype=torch.uint8)
    scorer._score(scorer._on_device(pixels), prompts)  # warm-up
    start = time.perf_counter()
    for _ in range(batches):
        scores = scorer._score(scorer._on_device(pixels), prompts).float().cpu()
    assert scores.shape == (batch_size,)
    return batch_size * batches / (time.perf_counter() - start)


def tree_pss(pid: int) -> int:
    """Proportional set size of `pid` and all its descendants: resident bytes with the pages the
    forked decoding workers share with their parent counted once, not once per process."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        todo += children.get(current, [])
        try:
            rollup = Path(f"/proc/{current}/smaps_rollup").read_text()
            total += int(re.search(r"^Pss:\s+(\d+) kB", rollup, re.M).group(1)) * 1024
        except (OSError, AttributeError):
            pass
    return total


def run_job(command: list[str], env: dict | None = None) -> tuple[float, int]:
    """(images/s from the job's summary, peak PSS of the process tree in bytes)."""
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               env=env)
    peak = [0]

    def watch() -> None:
        while process.poll() is None:
            peak[0] = max(peak[0], tree_pss(process.pid))
            time.sleep(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    _, err = process.communicate()
    watcher.join()
    if process.returncode:
        raise SystemExit(f"{' '.join(command)} failed:\n{err}")
    rate = re.search(r"\(([\d.]+) images/s\)", err)
    return float(rate.group(1)), peak[0]


def score_command(checkpoint: Path, prompts: Path, folder: Path, output: Path, args: argparse.Namespace,
                  processes: int) -> list[str]:
    launcher = [sys.executable]
    if processes > 1:
        launcher += ["-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}"]
    return launcher + [str(ROOT / "test.py"), "--checkpoint", str(checkpoint), "--prompts", str(prompts),
                       "--images", str(folder), "--output", str(output), "--device", args.device,
                       "--batch-size", str(args.batch_size), "-j", str(args.job_workers)]


def counts(text: str) -> list[int]:
    """'0,1,2' -> [0, 1, 2]; '' -> [] (leaves those rows out)."""
    return [int(x) for x in text.split(",") if x]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=1000, help="320x240 JPEGs for the speed rows")
    parser.add_argument("--workers", type=counts, default=[0, 1, 2, 4], help="decoding worker counts to measure")
    parser.add_argument("--processes", type=counts, default=[1, 2], help="process counts for end to end")
    parser.add_argument("--memory", type=counts, default=[2000, 20000], help="collection sizes for peak memory")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("-j", "--job-workers", type=int, default=2, help="decoding workers per process end to end")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    print(f"model: {DEMO_SIZED.backbone} at {DEMO_SIZED.img_size} px, cnn_dim {DEMO_SIZED.cnn_dim} (random weights), "
          f"batch {args.batch_size}, device {device}, {os.cpu_count()} CPU cores")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        photos = tmp / "photos"
        write_images(photos, args.images, (240, 320), ".jpg")
        checkpoint, prompts = write_checkpoint(tmp)
        print("| measurement | images/s |\n|---|---:|")
        if not args.images:
            args.workers, args.processes = [], []
        for workers in args.workers:
            print(f"| decoding alone, {workers} workers | {decoding_rate(photos, workers, args.batch_size):.0f} |")
        if args.images:
            batches = max(1, args.images // args.batch_size)
            print(f"| model alone | {model_rate(args.batch_size, batches, device):.1f} |")
        for processes in args.processes:
            rate, _ = run_job(score_command(checkpoint, prompts, photos, tmp / f"e2e{processes}.csv", args, processes))
            print(f"| end to end, {processes} process{'es' if processes > 1 else ''}, -j {args.job_workers} "
                  f"| {rate:.0f} |")
        print("\n| small images (32x32 PNG) | peak PSS, MB | images/s |\n|---:|---:|---:|")
        for count in args.memory:
            folder = tmp / f"small{count}"
            write_images(folder, count, (32, 32), ".png")
            rate, peak = run_job(score_command(checkpoint, prompts, folder, tmp / f"mem{count}.csv", args, 1))
            print(f"| {count:,} | {peak / 2**20:.0f} | {rate:.0f} |")


if __name__ == "__main__":
    main()

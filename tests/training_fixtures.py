"""Two small user datasets (the `csv` reader) and the command line that trains a tiny model on them."""
from __future__ import annotations

import json
import socket
from pathlib import Path

import cv2
import numpy as np
from conftest import write_image

TINY_TRAINING = [
    "--backbone", "vit_tiny_patch16_224", "--pretrained", "none", "--img-size", "32", "--batch_size", "4",
    "--workers", "0", "--device", "cpu", "--lr", "1e-4", "--eval-batch-size", "8", "--seed", "7",
]


def write_csv_dataset(folder: Path, count: int, seed: int) -> None:
    """`count` images whose label is their mean brightness, listed in labels.csv (path,score)."""
    rows = []
    for i in range(count):
        path = write_image(folder / f"img{i:02d}.png", seed=seed * 100 + i, size=(24, 24))
        rows.append(f"{path.name},{float(np.mean(cv2.imread(str(path)))) / 255:.6f}")
    (folder / "labels.csv").write_text("path,score\n" + "\n".join(rows) + "\n")


def write_training_data(root: Path, count: int = 16) -> Path:
    """Datasets `set_a` and `set_b` and the dataset_info.json that lists them; returns its path."""
    info = {}
    for seed, name in enumerate(["set_a", "set_b"]):
        write_csv_dataset(root / name, count, seed)
        info[name] = {"root": str(root / name), "reader": "csv"}
    path = root / "dataset_info.json"
    path.write_text(json.dumps(info))
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def training_args(info: Path, run: Path, *extra: str) -> list[str]:
    return ["--dataset-info", str(info), "--dataset", "set_a", "set_b", "--cache-dir", str(info.parent / "cache"),
            "--save_path", str(run), *TINY_TRAINING, *extra]

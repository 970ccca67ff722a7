"""Glue shared by the command-line entry points: user errors, devices, image lists, outputs."""
from __future__ import annotations

import csv
import os
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

import torch

from .atomic import atomic_open
from .data.image import IMAGE_EXTENSIONS, is_image_file
from .errors import UserError


def run_main(main: Callable[[list[str] | None], int | None], argv: list[str] | None = None) -> int:
    """Run a CLI main: a UserError prints `error: ...` (no traceback) and exits 2; Ctrl-C exits 130."""
    try:
        return main(argv) or 0
    except UserError as err:
        message = str(err)
        if "Original Traceback" in message:  # re-raised from a DataLoader worker: keep the user's part
            message = message.strip().splitlines()[-1].split(": ", 1)[-1]
        print(f"error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def resolve_device(name: str) -> torch.device:
    """`auto` (CUDA when available), `cpu`, `cuda` or `cuda:i`."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"--device {name}: use auto, cpu, cuda or cuda:INDEX") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"--device {name}: CUDA is not available on this machine; use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UserError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) here")
    return device


def collect_images(arguments: Iterable[str]) -> list[str]:
    """Image files named on the command line; a folder stands for the images directly in it."""
    images: list[str] = []
    for arg in arguments:
        path = Path(arg)
        if path.is_dir():
            found = sorted(str(p) for p in path.iterdir() if p.is_file() and is_image_file(p))
            if not found:
                raise UserError(f"--images {arg}: no images in this folder ({', '.join(sorted(IMAGE_EXTENSIONS))})")
            images += found
        elif path.is_file():
            images.append(str(path))
        else:
            raise UserError(f"--images {arg}: no such file or folder")
    return images


def write_csv_atomic(path: str | os.PathLike, header: list[str], rows: Iterable[Iterable]) -> None:
    """Write a CSV through a temp file and a rename, so a failure leaves no partial file."""
    path = Path(path)
    if not path.parent.is_dir():
        raise UserError(f"{path}: folder {path.parent} does not exist")
    with atomic_open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)

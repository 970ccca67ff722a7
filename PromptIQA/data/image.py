"""Image decoding and the published pre-processing (spec: model.md, section 5).

OpenCV decode (8-bit BGR; grey, alpha, palette and 16-bit images become 8-bit BGR), resize of the
whole image to size x size with INTER_CUBIC, RGB, then (x / 255 - 0.5) / 0.5. The resized uint8
image is what the cache stores, so decoding and normalising are separate steps.
"""
from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import torch

from ..errors import UserError

IMAGE_SIZE = 224
IMAGE_EXTENSIONS = frozenset({".bmp", ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".webp", ".ppm", ".pgm"})

# OpenCV decodes a truncated JPEG or PNG without complaint (grey bottom rows), so look for the
# end marker ourselves: JPEG ends with EOI (FF D9), PNG with an IEND chunk.
_END_MARKERS = {b"\xff\xd8\xff": b"\xff\xd9", b"\x89PNG": b"IEND"}


class ImageError(UserError):
    """An image file that cannot be used: missing, empty, truncated or not an image."""


def is_image_file(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def _check_complete(path: Path) -> None:
    size = path.stat().st_size
    if size == 0:
        raise ImageError(f"{path}: the file is empty (0 bytes); replace it with a valid image")
    with open(path, "rb") as f:
        head = f.read(8)
        f.seek(max(0, size - 4096))
        tail = f.read()
    for magic, end in _END_MARKERS.items():
        if head.startswith(magic) and end not in tail:
            raise ImageError(f"{path}: the image is truncated (no end marker); re-copy or re-download it")


def read_image(path: str | os.PathLike, size: int = IMAGE_SIZE) -> np.ndarray:
    """Decode `path` and resize it as the published code does: uint8 RGB array (size, size, 3)."""
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"{path}: no such image file")
    _check_complete(path)
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ImageError(f"{path}: not a readable image (OpenCV cannot decode it)")
    bgr = cv2.resize(bgr, (size, size), interpolation=cv2.INTER_CUBIC)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def to_tensor(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 RGB (..., H, W, 3) -> normalised float32 (..., 3, H, W) in [-1, 1]."""
    x = torch.as_tensor(images).movedim(-1, -3).float() / 255
    return (x - 0.5) / 0.5


def load_images(paths: list[str | os.PathLike], size: int = IMAGE_SIZE) -> torch.Tensor:
    """Read and normalise several images into one (len(paths), 3, size, size) batch."""
    return to_tensor(np.stack([read_image(p, size) for p in paths]))

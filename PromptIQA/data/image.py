"""Image decoding and the published pre-processing (docs/model.md, section 5).

OpenCV decode (8-bit BGR; grey, alpha, palette and 16-bit images become 8-bit BGR), resize of the
whole image to size x size with INTER_CUBIC, RGB, then (x / 255 - 0.5) / 0.5. The resized uint8
image is what the cache stores, so decoding and normalising are separate steps.

Before decoding, the width and height in the file's header are checked against a pixel limit
(PROMPTIQA_MAX_IMAGE_PIXELS): a small file can declare a huge image that takes gigabytes to decode.
"""
from __future__ import annotations

import io
import os
import threading
import warnings
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from ..utils.errors import UserError

IMAGE_SIZE = 224
IMAGE_EXTENSIONS = frozenset({".bmp", ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".webp", ".ppm", ".pgm"})

# OpenCV decodes a truncated JPEG or PNG without complaint (grey bottom rows), so look for the
# end marker ourselves: JPEG ends with EOI (FF D9), PNG with an IEND chunk.
_END_MARKERS = {b"\xff\xd8\xff": b"\xff\xd9", b"\x89PNG": b"IEND"}

MAX_PIXELS_VARIABLE = "PROMPTIQA_MAX_IMAGE_PIXELS"
DEFAULT_MAX_PIXELS = 100_000_000
# Pillow refuses to read even the header of an image past its own limit; header reads switch that
# limit off for their duration, one at a time, so that PROMPTIQA_MAX_IMAGE_PIXELS alone decides
_PILLOW_LIMIT_LOCK = threading.Lock()


class ImageError(UserError):
    """An image file that cannot be used: missing, empty, truncated or not an image."""


def is_image_file(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def max_image_pixels() -> int:
    """The largest width x height read_image decodes: $PROMPTIQA_MAX_IMAGE_PIXELS, else 100 megapixels."""
    value = os.environ.get(MAX_PIXELS_VARIABLE, "").strip()
    if not value:
        return DEFAULT_MAX_PIXELS
    try:
        limit = int(value)
    except ValueError:
        limit = 0
    if limit <= 0:
        raise UserError(f"{MAX_PIXELS_VARIABLE}={value!r}: give a whole number of pixels above 0, "
                        f"e.g. {MAX_PIXELS_VARIABLE}={2 * DEFAULT_MAX_PIXELS}")
    return limit


def header_size(path: Path, data: bytes | None = None) -> tuple[int, int]:
    """(width, height) from the header of the file (or of its bytes `data`), without decoding the pixels."""
    with _PILLOW_LIMIT_LOCK, warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        pillow_limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
        try:
            with Image.open(path if data is None else io.BytesIO(data)) as image:
                return image.size
        except (UnidentifiedImageError, SyntaxError, ValueError):
            raise ImageError(f"{path}: not a readable image (not a known image format, or a damaged header)") from None
        finally:
            Image.MAX_IMAGE_PIXELS = pillow_limit


def _check_pixel_count(path: Path, data: bytes | None = None) -> None:
    limit = max_image_pixels()
    width, height = header_size(path, data)
    if width * height > limit:
        raise ImageError(
            f"{path}: the image is {width}x{height} = {width * height:,} pixels, more than the limit of "
            f"{limit:,} pixels that guards against decompression bombs (small files that "
            f"decode to gigabytes); if the image is genuine, raise the limit with the environment variable "
            f"{MAX_PIXELS_VARIABLE}, e.g. {MAX_PIXELS_VARIABLE}={width * height}")


def _check_complete(path: Path) -> None:
    size = path.stat().st_size
    if size == 0:
        raise ImageError(f"{path}: the file is empty (0 bytes); replace it with a valid image")
    with open(path, "rb") as f:
        head = f.read(8)
        f.seek(max(0, size - 4096))
        tail = f.read()
    _check_end_marker(path, head, tail)


def _check_end_marker(path: Path, head: bytes, tail: bytes) -> None:
    for magic, end in _END_MARKERS.items():
        if head.startswith(magic) and end not in tail:
            raise ImageError(f"{path}: the image is truncated (no end marker); re-copy or re-download it")


def read_image(path: str | os.PathLike, size: int = IMAGE_SIZE) -> np.ndarray:
    """Decode `path` and resize it as the published code does: uint8 RGB array (size, size, 3)."""
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"{path}: no such image file")
    try:
        _check_complete(path)
        _check_pixel_count(path)
    except PermissionError:
        raise ImageError(f"{path}: permission denied: this user may not read the file; ask its owner to "
                         f"make it readable (chmod a+r) or leave it out") from None
    except OSError as error:
        raise ImageError(f"{path}: cannot be read ({error.strerror or error}); check the disk or re-copy it") from None
    try:
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    except cv2.error as error:  # e.g. a header OpenCV's own checks refuse
        raise ImageError(f"{path}: not a readable image (OpenCV: {str(error).strip().splitlines()[-1]})") from None
    return _resized_rgb(path, bgr, size)


def decode_image(data: bytes, name: str, size: int = IMAGE_SIZE) -> np.ndarray:
    """`read_image` for an image held in memory (e.g. a tar member named `name`): the same checks,
    OpenCV's same decoder (imdecode) and the same resize."""
    path = Path(name)
    if not data:
        raise ImageError(f"{path}: the image is empty (0 bytes); replace it with a valid image")
    _check_end_marker(path, data[:8], data[-4096:])
    _check_pixel_count(path, data)
    try:
        bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    except cv2.error as error:
        raise ImageError(f"{path}: not a readable image (OpenCV: {str(error).strip().splitlines()[-1]})") from None
    return _resized_rgb(path, bgr, size)


def _resized_rgb(path: Path, bgr: np.ndarray | None, size: int) -> np.ndarray:
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

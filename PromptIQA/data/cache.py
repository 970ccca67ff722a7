"""Decoded-and-resized images of one dataset, read from disk every time or from a memory-mapped cache.

Decoding a 1024x768 JPEG and resizing it costs far more than the rest of a training step's data work,
and the result (docs/model.md, section 5: up to normalisation) does not change between epochs, so it can
be stored once as uint8 (size, size, 3) frames in one .npy file per dataset and memory-mapped.
Both stores have the same interface: `len`, `store[i] -> uint8 RGB (size, size, 3)`, `.bad`.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from ..utils.errors import UserError
from .image import IMAGE_SIZE, ImageError, max_image_pixels, read_image

# Part of the key: a change of the stored layout, or of OpenCV (whose resize may change between
# versions), must not reuse frames decoded the old way.
CACHE_FORMAT = 1
BAD_IMAGE_CHOICES = ("fail", "skip")
_LISTED_BAD_IMAGES = 10


def cache_root() -> Path:
    """Where PromptIQA keeps built data: $PROMPTIQA_CACHE, else ~/.cache/promptiqa."""
    cache = os.environ.get("PROMPTIQA_CACHE")
    return Path(cache) if cache else Path.home() / ".cache" / "promptiqa"


@dataclass(frozen=True)
class BadImage:
    """An image that could not be decoded: its index in the store, its path and why."""

    index: int
    path: str
    reason: str


class DirectImages:
    """Reads (decodes and resizes) the image on every access; `bad` stays empty because an
    unreadable image raises ImageError, naming the file, when it is read."""

    def __init__(self, paths: Sequence[str | os.PathLike], size: int = IMAGE_SIZE):
        self.paths = [str(p) for p in paths]
        self.size = size
        self.bad: list[BadImage] = []

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> np.ndarray:
        return read_image(self.paths[index], self.size)


def cache_key(paths: Sequence[str], size: int) -> str:
    """Hash of everything the frames depend on: each file's path, byte size and mtime, the size, and the
    pixel limit (an image over it is stored as bad, and raising the limit must decode it)."""
    files = []
    for path in paths:
        try:
            stat = os.stat(path)
            files.append((path, stat.st_size, stat.st_mtime_ns))
        except OSError:
            files.append((path, None, None))  # a missing file becomes a bad image at build time
    content = json.dumps([CACHE_FORMAT, cv2.__version__, size, max_image_pixels(), files])
    return hashlib.sha256(content.encode()).hexdigest()


class ImageCache:
    """Frames of `paths` in `cache_dir`, decoded once (with `workers` threads) and memory-mapped.

    The cache is a folder `images-<size>px-<count>-<key>` holding `images.npy` and `bad.json`; a
    construction with the same key (same files, unchanged, same size) opens it without decoding.
    The folder is built under a temporary name and renamed when complete, so an interrupted build
    never looks valid; if several processes build the same cache at once, the first rename wins.

    Images that cannot be decoded are stored as black frames and listed in `bad`. With
    on_bad_image="fail" the construction raises one UserError listing them; with "skip" the caller
    drops those indices (and logs the count).
    """

    def __init__(
        self,
        paths: Sequence[str | os.PathLike],
        cache_dir: str | os.PathLike,
        size: int = IMAGE_SIZE,
        workers: int = 2,
        on_bad_image: str = "fail",
        progress: bool = False,
    ):
        if on_bad_image not in BAD_IMAGE_CHOICES:
            raise UserError(f"on_bad_image must be one of {BAD_IMAGE_CHOICES}, got {on_bad_image!r}")
        self.paths = [str(p) for p in paths]
        self.size = size
        key = cache_key(self.paths, size)
        self.directory = Path(cache_dir) / f"images-{size}px-{len(self.paths)}-{key[:16]}"
        if not self.directory.is_dir():
            self._build(max(1, workers), progress)
        self.bad = [BadImage(**entry) for entry in json.loads((self.directory / "bad.json").read_text())]
        self._images: np.ndarray | None = None
        if self.bad and on_bad_image == "fail":
            raise UserError(_describe_bad_images(self.bad, len(self.paths)))

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> np.ndarray:
        if self._images is None:
            self._images = self._open()
        return np.array(self._images[index])

    def __getstate__(self) -> dict:
        # Pickling a memmap copies the whole array; DataLoader workers reopen the file instead.
        return {**self.__dict__, "_images": None}

    def _open(self) -> np.ndarray:
        file = self.directory / "images.npy"
        try:
            images = np.load(file, mmap_mode="r")
        except (OSError, ValueError) as error:
            raise UserError(f"{file}: the image cache is unreadable ({error}); delete {self.directory}") from error
        if images.dtype != np.uint8 or images.shape != (len(self.paths), self.size, self.size, 3):
            raise UserError(
                f"{file}: holds {images.dtype} {images.shape}, expected uint8 "
                f"{(len(self.paths), self.size, self.size, 3)}; delete {self.directory}"
            )
        return images

    def _build(self, workers: int, progress: bool) -> None:
        parent = self.directory.parent
        try:
            parent.mkdir(parents=True, exist_ok=True)
            free = shutil.disk_usage(parent).free
        except OSError as error:
            raise UserError(f"cannot use {parent} as the image cache folder ({error}); choose another") from error
        needed = len(self.paths) * self.size * self.size * 3
        if needed > free:
            raise UserError(
                f"the image cache needs {needed / 2**30:.1f} GiB in {parent} but only {free / 2**30:.1f} GiB "
                "are free; free space, choose another cache folder or turn the cache off"
            )
        staging = Path(tempfile.mkdtemp(prefix=f".{self.directory.name}.", suffix=".partial", dir=parent))
        try:
            try:
                report_as = self.directory.name if progress else None
                bad = _decode_into(staging / "images.npy", self.paths, self.size, workers, report_as)
                (staging / "bad.json").write_text(json.dumps([asdict(b) for b in bad]))
            except OSError as error:
                raise UserError(
                    f"cannot write the image cache in {parent} ({error}); free space or choose another folder"
                ) from error
            try:
                os.rename(staging, self.directory)
            except OSError:
                if not self.directory.is_dir():
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)


def open_images(
    paths: Sequence[str | os.PathLike],
    size: int = IMAGE_SIZE,
    cache_dir: str | os.PathLike | None = None,
    workers: int = 2,
    on_bad_image: str = "fail",
    progress: bool = False,
) -> ImageCache | DirectImages:
    """The image store of one dataset: cached in `cache_dir`, or read directly if it is None."""
    if cache_dir is None:
        return DirectImages(paths, size)
    return ImageCache(paths, cache_dir, size, workers, on_bad_image, progress)


def _describe_bad_images(bad: list[BadImage], total: int) -> str:
    lines = [f"{len(bad)} of {total} images cannot be read:"]
    lines += [f"  {b.path}: {b.reason}" for b in bad[:_LISTED_BAD_IMAGES]]
    if len(bad) > _LISTED_BAD_IMAGES:
        lines.append(f"  ... and {len(bad) - _LISTED_BAD_IMAGES} more")
    lines.append("replace or remove these files, or skip unreadable images (on_bad_image='skip')")
    return "\n".join(lines)


def _decode_into(
    file: Path, paths: list[str], size: int, workers: int, report_as: str | None
) -> list[BadImage]:
    """Write the frames of `paths` into the .npy `file`; returns the images that failed to decode.

    Frames go in with pwrite rather than through a writable memmap: a full disk then raises OSError
    (ENOSPC) instead of killing the process with SIGBUS. Progress is printed under `report_as`.
    """
    shape = (len(paths), size, size, 3)
    frame_bytes = size * size * 3
    with open(file, "wb") as f:
        header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.uint8)), "fortran_order": False, "shape": shape}
        np.lib.format.write_array_header_1_0(f, header)
        offset = f.tell()
    fd = os.open(file, os.O_WRONLY)

    def decode(index: int) -> BadImage | None:
        try:
            frame = read_image(paths[index], size)
        except (ImageError, OSError, cv2.error) as error:
            return BadImage(index, paths[index], str(error).removeprefix(f"{paths[index]}: "))
        _write_at(fd, memoryview(np.ascontiguousarray(frame)).cast("B"), offset + index * frame_bytes)
        return None

    bad = []
    report_every = max(1, len(paths) // 20)
    try:
        os.ftruncate(fd, offset + len(paths) * frame_bytes)  # bad images stay black (zero) frames
        with ThreadPoolExecutor(workers) as pool:
            try:
                for done, result in enumerate(pool.map(decode, range(len(paths))), 1):
                    if result is not None:
                        bad.append(result)
                    if report_as and (done % report_every == 0 or done == len(paths)):
                        print(f"caching {report_as}: {done}/{len(paths)} images", file=sys.stderr, flush=True)
            except BaseException:
                pool.shutdown(cancel_futures=True)
                raise
        os.fsync(fd)
    finally:
        os.close(fd)
    return bad


def _write_at(fd: int, data: memoryview, offset: int) -> None:
    while data:
        written = os.pwrite(fd, data, offset)
        data, offset = data[written:], offset + written

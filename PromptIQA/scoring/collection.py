"""An image collection to score, read as a stream: image files, folders (optionally recursive), list
files, and WebDataset tar shards as img2dataset writes them.

The collection is an ordered sequence of units (an image file, or a tar shard of samples); unit i
belongs to process i % world_size. Within a process the samples still to score are dealt to the
decoding workers in chunks of one batch, round-robin, which is the order in which a DataLoader
collects them, so every process sees its samples in collection order whatever the worker count.

Tar shards are read with the standard `tarfile` streaming reader: members are consumed in file
order, a sample is the run of members sharing a key (the member's path up to the first dot of its
file name, as WebDataset defines it), and its image is the first `jpg`, `jpeg`, `png` or `webp`
member; other members (`json`, `txt`, ...) are skipped without being read.
"""
from __future__ import annotations

import hashlib
import os
import re
import tarfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from ..data.image import IMAGE_EXTENSIONS, ImageError, decode_image, is_image_file, read_image
from ..utils.errors import UserError

TAR_IMAGE_MEMBERS = ("jpg", "jpeg", "png", "webp")  # in order of preference within a sample
_BRACE = re.compile(r"\{([^{}]*)\}")
_RANGE = re.compile(r"^(-?\d+)\.\.(-?\d+)$")


def expand_braces(pattern: str) -> list[str]:
    """`shards/{00000..00002}.tar` -> the three names, zero-padded as written; `{a,b}` -> both.
    Groups expand left to right; a brace group that is neither form is kept as it is."""
    for match in _BRACE.finditer(pattern):
        body, head, tail = match.group(1), pattern[: match.start()], pattern[match.end() :]
        numbers = _RANGE.match(body)
        if numbers:
            first, last = numbers.groups()
            width = max(len(first), len(last)) if first.startswith("0") or last.startswith("0") else 0
            step = 1 if int(last) >= int(first) else -1
            choices = [str(n).zfill(width) for n in range(int(first), int(last) + step, step)]
        elif "," in body:
            choices = body.split(",")
        else:
            continue
        return [name for choice in choices for name in expand_braces(head + choice + tail)]
    return [pattern]


def is_shard(path: str | os.PathLike) -> bool:
    return str(path).lower().endswith(".tar")


def id_digest(sample_id: str) -> bytes:
    """16 bytes standing for a sample id (collisions are negligible at any collection size)."""
    return hashlib.blake2b(sample_id.encode("utf-8", "surrogateescape"), digest_size=16).digest()


class DoneIds:
    """The ids already scored, as a sorted array of 16-byte digests: 16 bytes per image."""

    def __init__(self, digests: Sequence[bytes] | np.ndarray = ()):
        self.digests = np.sort(np.asarray(digests, dtype="S16")) if len(digests) else np.empty(0, "S16")

    def __len__(self) -> int:
        return len(self.digests)

    def __contains__(self, sample_id: str) -> bool:
        if not len(self.digests):
            return False
        digest = np.asarray(id_digest(sample_id), dtype="S16")
        at = int(np.searchsorted(self.digests, digest))
        return at < len(self.digests) and self.digests[at] == digest


@dataclass(frozen=True)
class Unit:
    """One input: an image file, or a tar shard. `index` is its position in the collection."""

    index: int
    path: str
    shard: bool


@dataclass
class Sample:
    """One image of the collection, identified by `id` (the file path, or SHARD/KEY for a tar sample)
    and placed by `order` (unit index, sample index within the unit)."""

    id: str
    order: tuple[int, int]
    path: str | None = None  # an image file to read
    data: bytes | None = None  # or the image's bytes from a shard
    error: str | None = None  # or why there is no image


@dataclass
class Collection:
    """Images named by `images` (files, folders, tar shards, brace patterns such as
    `shards/{00000..00099}.tar`) and `image_lists` (files with one path per line, relative to the
    list's folder; `#` comments and blank lines ignored). Folders hold the images and tar shards
    directly in them, or anywhere below them with `recursive`.

    Construction checks every input and counts the units; an image reached twice (say, in a list
    and in a folder) is scored once, where it first appears. `images_label` and `lists_label` name
    the inputs in error messages (the command line passes its flags).
    """

    images: Sequence[str] = ()
    image_lists: Sequence[str] = ()
    recursive: bool = False
    images_label: str = "image input"
    lists_label: str = "image list"
    units_total: int = field(init=False, default=0)
    shards_total: int = field(init=False, default=0)
    _duplicates: frozenset[int] = field(init=False, repr=False, default=frozenset())

    def __post_init__(self) -> None:
        for arg in self.images:
            for name in expand_braces(str(arg)):
                self._check_input(name)
        for listed in self.image_lists:
            if not Path(listed).is_file():
                raise UserError(f"{self.lists_label} {listed}: no such file; give a text file with one image path "
                                "per line")
        seen: set[bytes] = set()  # freed after the scan: only the positions of duplicates are kept
        duplicates = []
        for unit in self._all_units():
            key = id_digest(os.path.abspath(unit.path))
            if key in seen:
                duplicates.append(unit.index)
            seen.add(key)
            self.units_total += 1
            self.shards_total += unit.shard
        self._duplicates = frozenset(duplicates)

    def _check_input(self, name: str) -> None:
        path = Path(name)
        if path.is_dir():
            if next(_folder_files(path, self.recursive), None) is None:
                where = "folder or below it" if self.recursive else "folder"
                raise UserError(f"{self.images_label} {name}: no images in this {where} "
                                f"({', '.join(sorted(IMAGE_EXTENSIONS))} or .tar shards)"
                                + ("" if self.recursive else "; add --recursive to descend into sub-folders"))
        elif not path.is_file():
            raise UserError(f"{self.images_label} {name}: no such file or folder")

    def _all_units(self) -> Iterator[Unit]:
        index = 0
        for path in self._paths():
            yield Unit(index, path, is_shard(path))
            index += 1

    def _paths(self) -> Iterator[str]:
        for arg in self.images:
            for name in expand_braces(str(arg)):
                path = Path(name)
                if path.is_dir():
                    yield from _folder_files(path, self.recursive)
                else:
                    yield str(path)
        for listed in self.image_lists:
            yield from _list_entries(Path(listed), self.lists_label)

    def units(self, rank: int = 0, world_size: int = 1) -> Iterator[Unit]:
        """The units of process `rank` of `world_size`, in collection order, duplicates left out."""
        for unit in self._all_units():
            if unit.index % world_size == rank and unit.index not in self._duplicates:
                yield unit

    def count_images(self) -> int:
        """Images in the whole collection: files plus the samples of every shard (a header scan)."""
        count = 0
        for unit in self.units():
            count += _count_samples(unit.path) if unit.shard else 1
        return count


def _folder_files(folder: Path, recursive: bool) -> Iterator[str]:
    """Image files and tar shards in `folder` in sorted path order (sub-folders in their place by name)."""
    try:
        entries = sorted(os.scandir(folder), key=lambda entry: entry.name)
    except PermissionError:
        raise UserError(f"{folder}: permission denied: this user may not list the folder") from None
    for entry in entries:
        if entry.is_dir():
            if recursive:
                yield from _folder_files(Path(entry.path), recursive)
        elif entry.is_file() and (is_image_file(entry.name) or is_shard(entry.name)):
            yield str(folder / entry.name)


def _list_entries(listed: Path, label: str) -> Iterator[str]:
    """The paths in a list file, relative to its folder."""
    try:
        with open(listed, encoding="utf-8", errors="surrogateescape") as lines:
            for line in lines:
                line = line.strip()
                if line and not line.startswith("#"):
                    yield os.path.normpath(listed.parent / line)  # the id: lists/../a.jpg -> a.jpg
    except OSError as error:
        raise UserError(f"{label} {listed}: cannot be read ({error.strerror or error})") from None


def _sample_key(member_name: str) -> tuple[str, str]:
    """(key, extension) of a tar member: WebDataset's split at the first dot of the file name."""
    folder, _, name = member_name.rpartition("/")
    stem, _, extension = name.partition(".")
    return (f"{folder}/{stem}" if folder else stem), extension.lower()


def _count_samples(shard: str) -> int:
    try:
        with tarfile.open(shard) as tar:
            keys = [_sample_key(m.name)[0] for m in tar if m.isfile()]
    except (OSError, tarfile.TarError):
        return 1  # read as one bad sample by the stream
    return sum(1 for i, key in enumerate(keys) if i == 0 or key != keys[i - 1])


Claim = Callable[[str], bool]  # whether this reader decodes the sample with this id


def file_sample(unit: Unit) -> Sample:
    return Sample(unit.path, (unit.index, 0), path=unit.path)


def shard_samples(unit: Unit, claim: Claim) -> Iterator[Sample]:
    """The claimed samples of a shard, in member order, with the bytes of their image member only.

    A shard that cannot be opened or breaks off is reported as one more sample, with the shard's path as
    its id and the reason as its error.
    """
    index, key, sample = 0, None, None
    try:
        with tarfile.open(unit.path, mode="r|*") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                member_key, extension = _sample_key(member.name)
                if member_key != key:
                    if sample is not None:
                        yield _with_image_or_error(sample)
                    key, sample_id = member_key, f"{unit.path}/{member_key}"
                    sample = Sample(sample_id, (unit.index, index)) if claim(sample_id) else None
                    index += 1
                if sample is not None and extension in TAR_IMAGE_MEMBERS and sample.data is None:
                    sample.data = tar.extractfile(member).read()
        if sample is not None:
            yield _with_image_or_error(sample)
    except (OSError, tarfile.TarError, EOFError) as error:
        if claim(unit.path):
            reason = getattr(error, "strerror", None) or error
            yield Sample(unit.path, (unit.index, index), error=f"{unit.path}: not a readable tar shard ({reason})")


def _with_image_or_error(sample: Sample) -> Sample:
    if sample.data is None:
        return replace(sample, error=f"{sample.id}: the sample has no {'/'.join(TAR_IMAGE_MEMBERS)} member")
    return sample


def collection_samples(units: Iterator[Unit], claim: Claim) -> Iterator[Sample]:
    for unit in units:
        if unit.shard:
            yield from shard_samples(unit, claim)
        elif claim(unit.path):
            yield file_sample(unit)


@dataclass
class DecodedBatch:
    """Samples decoded to uint8 RGB (n_good, size, size, 3); `errors[i]` is None for a good sample."""

    ids: list[str]
    orders: list[tuple[int, int]]
    errors: list[str | None]
    pixels: torch.Tensor

    def pin_memory(self) -> "DecodedBatch":  # called by DataLoader(pin_memory=True)
        return replace(self, pixels=self.pixels.pin_memory())

    def raise_first_error(self) -> None:
        first = next((error for error in self.errors if error), None)
        if first:
            raise ImageError(first)


def decode_sample(sample: Sample, size: int) -> np.ndarray | str:
    """The image as `read_image` gives it, or the reason it cannot be used."""
    if sample.error:
        return sample.error
    try:
        if sample.path is not None:
            return read_image(sample.path, size)
        return decode_image(sample.data, sample.id, size)
    except ImageError as error:
        return str(error)


def collate(samples: list[Sample], decoded: list[np.ndarray | str], size: int) -> DecodedBatch:
    good = [image for image in decoded if not isinstance(image, str)]
    pixels = torch.from_numpy(np.stack(good)) if good else torch.empty((0, size, size, 3), dtype=torch.uint8)
    errors = [image if isinstance(image, str) else None for image in decoded]
    return DecodedBatch([s.id for s in samples], [s.order for s in samples], errors, pixels)


class _WorkerClaim:
    """Claims the samples not in `done`, counted in collection order, in chunks of one batch dealt
    round-robin to the workers."""

    def __init__(self, done: DoneIds, batch_size: int, worker: int, workers: int):
        self.done, self.batch_size, self.worker, self.workers = done, batch_size, worker, workers
        self.position = 0

    def __call__(self, sample_id: str) -> bool:
        if sample_id in self.done:
            return False
        mine = (self.position // self.batch_size) % self.workers == self.worker
        self.position += 1
        return mine


class SampleSource:
    """The samples of one process, as a picklable callable of a claim."""

    def __init__(self, collection: Collection | None = None, rank: int = 0, world_size: int = 1,
                 paths: Sequence[str] | None = None):
        self.collection, self.rank, self.world_size, self.paths = collection, rank, world_size, paths

    def __call__(self, claim: Claim) -> Iterator[Sample]:
        if self.paths is not None:
            units = (Unit(i, str(p), False) for i, p in enumerate(self.paths))
            return (file_sample(u) for u in units if claim(u.path))
        return collection_samples(self.collection.units(self.rank, self.world_size), claim)


class DecodedStream(IterableDataset):
    """Batches of decoded samples, each worker decoding its chunks (see the module's docstring)."""

    def __init__(self, source: SampleSource, size: int, batch_size: int, done: DoneIds | None = None):
        self.source, self.size, self.batch_size, self.done = source, size, batch_size, done or DoneIds()

    def __iter__(self) -> Iterator[DecodedBatch]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        samples: list[Sample] = []
        for sample in self.source(_WorkerClaim(self.done, self.batch_size, worker, workers)):
            samples.append(sample)
            if len(samples) == self.batch_size:
                yield collate(samples, [decode_sample(s, self.size) for s in samples], self.size)
                samples = []
        if samples:
            yield collate(samples, [decode_sample(s, self.size) for s in samples], self.size)

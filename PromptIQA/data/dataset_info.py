"""Where the datasets live (dataset_info.json) and a check of all requested datasets at once.

dataset_info.json maps a name to the published form `["root", number_of_split_units]` or to
`{"root": ..., "units": ..., "reader": ..., "options": {...}}`; "reader" lets a new name read
its folder with a known reader (e.g. "csv" for the user's own data).
"""
from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from ..utils.errors import UserError
from .datasets import DATASET_NAMES, DATASETS, canonical_name, did_you_mean, read_dataset_as
from .image import IMAGE_EXTENSIONS, is_image_file
from .records import Record
from .split import split_records

DEFAULT_DATASET_INFO = Path(__file__).resolve().parents[1] / "utils" / "dataset" / "dataset_info.json"
_ENTRY_KEYS = ("root", "units", "reader", "options")
# missing images listed per dataset before the rest are only counted
_LISTED_IMAGES = 5


@dataclass(frozen=True)
class DatasetEntry:
    """One dataset_info.json entry; `reader` None means the entry's name is the reader."""

    name: str
    root: str
    units: int | None = None
    reader: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    source: str = ""


def _is_positive_count(value: Any) -> bool:
    """An int of 1 or more (bool, an int subclass, is not one)."""
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _valid_object(value: dict) -> bool:
    return (set(value) <= set(_ENTRY_KEYS) and isinstance(value.get("root"), str)
            and (value.get("units") is None or _is_positive_count(value["units"]))
            and isinstance(value.get("reader", ""), str) and isinstance(value.get("options", {}), dict))


def _entry(source: Path, name: str, value: Any) -> DatasetEntry:
    if isinstance(value, list) and len(value) == 2 and isinstance(value[0], str) and _is_positive_count(value[1]):
        return DatasetEntry(name, value[0], value[1], source=str(source))
    if not (isinstance(value, dict) and _valid_object(value)):
        raise UserError(f'{source}: entry "{name}" is {json.dumps(value)}; expected ["/path/to/root", '
                        f'number_of_split_units] or {{"root": "/path/to/root", "units": n, "reader": "csv", '
                        f'"options": {{...}}}} (all but "root" optional)')
    reader = value.get("reader")
    if reader is not None and reader not in DATASET_NAMES:
        raise UserError(f'{source}: entry "{name}" names reader "{reader}", which does not exist'
                        f'{did_you_mean(reader, DATASET_NAMES)}; readers: {", ".join(DATASET_NAMES)}')
    return DatasetEntry(name, value["root"], value.get("units"), reader, value.get("options", {}), str(source))


def load_dataset_info(path: str | os.PathLike = DEFAULT_DATASET_INFO) -> dict[str, DatasetEntry]:
    """Read a dataset_info.json; UserError naming the file (and key) for anything malformed."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: dataset info file not found; give the path of a dataset_info.json "
                        f"(the shipped one is {DEFAULT_DATASET_INFO})")
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except UnicodeDecodeError as error:
        raise UserError(f"{path}: not UTF-8 text (byte {error.start} cannot be decoded); save it as UTF-8 "
                        f"and rerun") from None
    except json.JSONDecodeError as error:
        raise UserError(f"{path}: not valid JSON (line {error.lineno}, column {error.colno}: {error.msg}); "
                        f"fix the syntax") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a JSON object mapping dataset names to entries, "
                        f"like {{\"live\": [\"/path/to/LIVE\", 29]}}")
    return {name: _entry(path, name, value) for name, value in data.items()}


def _known(name: str) -> str | None:
    try:
        return canonical_name(name)
    except UserError:
        return None


def _resolve(name: str, info: Mapping[str, DatasetEntry]) -> tuple[DatasetEntry, str]:
    """The entry giving `name`'s folder, and the reader that reads it."""
    source = next(iter(info.values())).source if info else "the dataset info file"
    if name in info:
        entry = info[name]
        reader = entry.reader or name
        if _known(reader) is None:
            raise UserError(f"{name}: {source} entry '{name}' is not a known dataset"
                            f"{did_you_mean(name, DATASET_NAMES)}; for your own data add \"reader\": \"csv\"")
        return entry, reader
    reader = _known(name)
    if reader is None:
        raise UserError(f"{name}: unknown dataset{did_you_mean(name, [*info, *DATASET_NAMES])}; "
                        f"known: {', '.join(sorted({*info, *DATASET_NAMES}))}")
    # an alias, or an extra criterion read from its base dataset's folder
    base = DATASETS[reader].base if reader in DATASETS else None
    folders = {reader, base} - {None}
    for key, entry in info.items():
        if entry.reader is None and _known(key) in folders:
            return entry, reader
    raise UserError(f"{name}: no entry in {source}; add \"{name}\": [\"/path/to/{name}\", number_of_split_units]")


def _listed(name: str, paths: list[str], problem: str, total: str) -> list[str]:
    """One line per path for the first few, then a count."""
    lines = [f"{name}: {path} {problem}" for path in paths[:_LISTED_IMAGES]]
    if len(paths) > _LISTED_IMAGES:
        lines.append(f"{name}: ... {len(paths)} {total}")
    return lines


def _image_problems(name: str, records: Sequence[Record]) -> list[str]:
    missing = [r.path for r in records if not os.path.isfile(r.path)]
    foreign = [r.path for r in records if not is_image_file(r.path)]
    extensions = ", ".join(sorted(IMAGE_EXTENSIONS))
    return (_listed(name, missing, "not found",
                    f"of {len(records)} images not found in all; is the root right and the dataset complete?")
            + _listed(name, foreign, f"is not an image file (extensions: {extensions})",
                      "paths without an image extension in all"))


def _split_problems(name: str, records: Sequence[Record], units: int) -> list[str]:
    """The split trains on round(0.8 U) of U units: with 1 or 2 units no image is left to test on."""
    if split_records(records, seed=0)[1]:  # the sizes of the two sides do not depend on the seed
        return []
    return [f"{name}: only {units} split unit(s), so the train/test split leaves no test images and the best "
            f"epoch could not be chosen; give it at least 3 units (more images, or more distinct references; "
            f"for the csv reader, more distinct values in the unit column)"]


def check_datasets(names: Sequence[str], info: Mapping[str, DatasetEntry],
                   check_images: bool = True) -> dict[str, list[Record]]:
    """Read every requested dataset; one UserError listing all problems of all of them, if any.

    Checks the name, root, label files, labels, the entry's number of split units, that the split
    leaves test images, and (with `check_images`) that every image file exists.
    """
    problems: list[str] = []
    records: dict[str, list[Record]] = {}
    for name in dict.fromkeys(names):
        try:
            entry, reader = _resolve(name, info)
            found = read_dataset_as(name, reader, entry.root, entry.options)
        except UserError as error:
            problems.extend(str(error).splitlines())
            continue
        units = len({r.unit for r in found})
        if entry.units is not None and entry.units != units:
            problems.append(f"{name}: {entry.source} gives {entry.units} split units, but the label files in "
                            f"{entry.root} give {units}; correct the count (the published split is drawn over it)")
        problems.extend(_split_problems(name, found, units))
        if check_images:
            problems.extend(_image_problems(name, found))
        records[name] = found
    if problems:
        raise UserError(f"{len(problems)} dataset problem(s); fix them and rerun:\n" + "\n".join(problems))
    return records


class SummaryRow(NamedTuple):
    name: str
    images: int
    train: int
    test: int
    label_min: float
    label_max: float


def summarize(records_by_name: Mapping[str, Sequence[Record]], seed: int,
              train_ratio: float = 0.8) -> list[SummaryRow]:
    """Per dataset: image count, split sizes for `seed`, and the label range."""
    rows = []
    for name, records in records_by_name.items():
        train, test = split_records(records, seed, train_ratio)
        labels = [r.label for r in records]
        rows.append(SummaryRow(name, len(records), len(train), len(test), min(labels), max(labels)))
    return rows


def format_summary(rows: Sequence[SummaryRow]) -> str:
    """The summary rows as an aligned text table."""
    header = ("dataset", "images", "train", "test", "label min", "label max")
    cells = [header] + [(r.name, str(r.images), str(r.train), str(r.test), f"{r.label_min:.3f}",
                         f"{r.label_max:.3f}") for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths)))
        for row in cells)

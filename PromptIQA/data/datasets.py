"""The twelve IQA datasets of PromptIQA, and CSV files of the user's own, read into Records.

One mechanism (`_read`) reads them all; each dataset is a `DatasetSpec` that only declares its
label columns, how a row names its image, the published score -> label constant and its split
unit (docs/datasets.md). Labels are never turned around for lower-is-better scores: the prompts
say which way a dataset runs.
"""
from __future__ import annotations

import difflib
import math
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ..utils.errors import UserError
from .labels import ColumnKey, csv_header, read_label_file
from .records import Record

# a label within this distance of 0 or 1 is float rounding of (score - min) / (max - min)
_LABEL_TOLERANCE = 1e-9
# row problems listed per dataset before the rest are only counted
_LISTED_PROBLEMS = 10


@dataclass(frozen=True)
class Column:
    """A column of a label file (path relative to the dataset root): a csv column name, an xlsx
    column letter, a whitespace field index (.txt, from 0) or a variable name (.mat)."""

    file: str
    key: ColumnKey


@dataclass(frozen=True)
class DatasetSpec:
    """Where one dataset keeps its labels and images; label = (score - offset) / scale."""

    title: str  # the name it is published under, for messages
    score: Column
    # image path relative to the root: a format string of {name} (the `image` column) and {index}
    # (the row number from 0), or a function of the row number
    image_path: str | Callable[[int], str]
    image: Column | None = None
    offset: float = 0.0
    scale: float = 1.0
    flip: bool = False  # label = 1 - label; only user CSVs with lower-is-better scores
    # split unit: the reference image, read from a column or derived from the image name;
    # None: every image is its own unit
    reference: Column | Callable[[str], str] | None = None
    skip: Column | None = None  # rows with a 1 here are not dataset images
    skip_first: int = 0
    rows: int | None = None  # the exact row count a positional layout needs
    base: str | None = None  # the dataset whose folder this extra criterion is read from
    range_fix: str = "fix the score, or check that this is the right label file"

    @property
    def columns(self) -> list[Column]:
        return [c for c in (self.image, self.score, self.reference, self.skip) if isinstance(c, Column)]


# docs/datasets.md: LIVE's entries are jp2k/img1..227, jpeg/img1..233, then 174 each of the rest
_LIVE_PATHS = tuple(
    f"{folder}/img{i}.bmp"
    for folder, count in (("jp2k", 227), ("jpeg", 233), ("wn", 174), ("gblur", 174), ("fastfading", 174))
    for i in range(1, count + 1)
)


def _csiq_reference(name: str) -> str:
    return name.split(".")[0]


def _tid2013_reference(name: str) -> str:
    # docs/datasets.md: the two digits after the first letter; i25 is lower-case on disk
    match = re.match(r"[a-z](\d\d)", name, re.IGNORECASE)
    if match is None:
        raise ValueError(f"image name '{name}' does not start with a letter and two digits like i01_01_1.bmp")
    return match.group(1)


def _kadid_reference(name: str) -> str:
    return name.split("_")[0]


_SPAQ_LABELS = "Annotations/MOS_and_Image_attribute_scores.xlsx"

DATASETS: dict[str, DatasetSpec] = {
    "live": DatasetSpec(
        "LIVE", score=Column("dmos_realigned.mat", "dmos"), image_path=_LIVE_PATHS.__getitem__,
        offset=1, scale=100, reference=Column("refnames_all.mat", "refnames_all"),
        skip=Column("dmos_realigned.mat", "orgs"), rows=len(_LIVE_PATHS)),
    "csiq": DatasetSpec(
        "CSIQ", score=Column("csiq_label.txt", 1), image=Column("csiq_label.txt", 0),
        image_path="dst_imgs_all/{name}", reference=_csiq_reference),
    "tid2013": DatasetSpec(
        "TID2013", score=Column("mos_with_names.txt", 0), image=Column("mos_with_names.txt", 1),
        image_path="distorted_images/{name}", scale=9, reference=_tid2013_reference),
    "kadid": DatasetSpec(
        "KADID-10k", score=Column("dmos.csv", "dmos"), image=Column("dmos.csv", "dist_img"),
        image_path="images/{name}", offset=1, scale=5, reference=_kadid_reference),
    "bid": DatasetSpec(
        "BID", score=Column("DatabaseGrades.xlsx", "B"), image=Column("DatabaseGrades.xlsx", "A"),
        image_path="DatabaseImage{name:04d}.JPG", scale=9),
    "spaq": DatasetSpec(
        "SPAQ", score=Column(_SPAQ_LABELS, "B"), image=Column(_SPAQ_LABELS, "A"),
        image_path="img_resize/{name}", scale=100),
    "livec": DatasetSpec(
        "LIVE Challenge", score=Column("Data/AllMOS_release.mat", "AllMOS_release"),
        image=Column("Data/AllImages_release.mat", "AllImages_release"), image_path="Images/{name}",
        offset=1, scale=100, skip_first=7),  # docs/datasets.md: the first 7 are practice images
    "koniq10k": DatasetSpec(
        "KonIQ-10k", score=Column("koniq10k_distributions_sets.csv", "MOS"),
        image=Column("koniq10k_distributions_sets.csv", "image_name"), image_path="1024x768/{name}", scale=100),
    "gfiqa_20k": DatasetSpec(
        "GFIQA-20k", score=Column("mos.csv", "mos"), image=Column("mos.csv", "img_name"), image_path="image/{name}"),
    "agiqa_3k": DatasetSpec(
        "AGIQA-3k", score=Column("data.csv", "mos_quality"), image=Column("data.csv", "name"),
        image_path="img/{name}", scale=5),
    "aigciqa2023": DatasetSpec(
        "AIGCIQA2023", score=Column("DATA/MOS/mosz1.mat", "MOSz"), image_path="Image/allimg/{index}.png", scale=100),
    "uwiqa": DatasetSpec(
        "UWIQA", score=Column("IQA_Value.xlsx", "B"), image=Column("IQA_Value.xlsx", "A"),
        image_path="img/{name:04d}.png"),
}


def _criterion(base: str, score: Column, scale: float) -> DatasetSpec:
    """Another assessment criterion of the same images, read from another label column."""
    return replace(DATASETS[base], score=score, scale=scale, base=base)


# docs/datasets.md 2.1, "Other criteria in the same files"
DATASETS.update({
    "spaq_brightness": _criterion("spaq", Column(_SPAQ_LABELS, "C"), scale=100),
    "spaq_colorfulness": _criterion("spaq", Column(_SPAQ_LABELS, "D"), scale=100),
    "spaq_contrast": _criterion("spaq", Column(_SPAQ_LABELS, "E"), scale=100),
    "spaq_noisiness": _criterion("spaq", Column(_SPAQ_LABELS, "F"), scale=100),
    "spaq_sharpness": _criterion("spaq", Column(_SPAQ_LABELS, "G"), scale=100),
    "agiqa_3k_align": _criterion("agiqa_3k", Column("data.csv", "mos_align"), scale=5),
    "aigciqa2023_mosz2": _criterion("aigciqa2023", Column("DATA/MOS/mosz2.mat", "MOSz"), scale=100),
    "aigciqa2023_mosz3": _criterion("aigciqa2023", Column("DATA/MOS/mosz3.mat", "MOSz"), scale=100),
})

# docs/datasets.md: the published dataset_info.json spells the underwater set uqiqa
ALIASES = {"uqiqa": "uwiqa"}
CSV_READER = "csv"
_CSV_OPTIONS = ("score_min", "score_max", "higher_is_better")
DATASET_NAMES: tuple[str, ...] = tuple(sorted({*DATASETS, *ALIASES, CSV_READER}))


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    """" (did you mean 'x'?)" for the closest candidate, or "" when none is close."""
    match = difflib.get_close_matches(name, sorted(set(candidates)), n=1)
    return f" (did you mean '{match[0]}'?)" if match else ""


def canonical_name(name: str) -> str:
    """The reader name for `name` (aliases resolved); UserError for an unknown name."""
    name = ALIASES.get(name, name)
    if name not in DATASETS and name != CSV_READER:
        raise UserError(f"unknown dataset '{name}'{did_you_mean(name, DATASET_NAMES)}; "
                        f"known datasets: {', '.join(DATASET_NAMES)}")
    return name


def _score_label(spec: DatasetSpec, raw: Any) -> float:
    try:
        score = float(raw)
    except (TypeError, ValueError):
        raise ValueError(f"score {raw!r} is not a number; give every image a numeric score") from None
    if not math.isfinite(score):
        raise ValueError(f"score is {raw!r}; give every image a finite score or remove the row")
    label = (score - spec.offset) / spec.scale
    if spec.flip:
        label = 1 - label
    if not -_LABEL_TOLERANCE <= label <= 1 + _LABEL_TOLERANCE:
        raise ValueError(f"score {score:g} gives label {label:.4g}, outside [0, 1] "
                         f"(label = (score - {spec.offset:g}) / {spec.scale:g}); {spec.range_fix}")
    return min(max(label, 0.0), 1.0)


def _image_path(spec: DatasetSpec, name: Any, index: int) -> str:
    if callable(spec.image_path):
        return spec.image_path(index)
    if spec.image is not None and (name is None or str(name).strip() == ""):
        raise ValueError("the image name is empty")
    if isinstance(name, float) and name.is_integer():
        name = int(name)
    try:
        return spec.image_path.format(name=name.strip() if isinstance(name, str) else name, index=index)
    except (ValueError, TypeError):
        raise ValueError(f"image number {name!r} is not a whole number") from None


class _RowProblem(Exception):
    def __init__(self, column: Column, message: str):
        super().__init__(message)
        self.column = column


def _cell(column: Column, convert: Callable[[Any], Any], value: Any) -> Any:
    """convert(value), with a failure blamed on `column`."""
    try:
        return convert(value)
    except ValueError as error:
        raise _RowProblem(column, str(error)) from None


def _reference_name(value: Any) -> str:
    if value is None or str(value).strip() == "":
        raise ValueError("the reference (split unit) is empty")
    return str(value).strip()


def _read_row(spec: DatasetSpec, row: Mapping[Column, Any], index: int) -> tuple[str, float, str | None]:
    """(image path relative to the root, label, reference or None) of one label row."""
    label = _cell(spec.score, lambda raw: _score_label(spec, raw), row[spec.score])
    name = row[spec.image] if spec.image is not None else None
    path = _cell(spec.image or spec.score, lambda value: _image_path(spec, value, index), name)
    if isinstance(spec.reference, Column):
        reference = _cell(spec.reference, _reference_name, row[spec.reference])
    elif spec.reference is not None:
        reference = _cell(spec.image, lambda value: spec.reference(str(value).strip()), name)
    else:
        reference = None
    return path, label, reference


def _problem_report(dataset: str, problems: list[str]) -> str:
    lines = problems[:_LISTED_PROBLEMS]
    if len(problems) > _LISTED_PROBLEMS:
        lines.append(f"{dataset}: ... and {len(problems) - _LISTED_PROBLEMS} more rows with problems "
                     f"in its label files")
    return "\n".join(lines)


def _read(dataset: str, spec: DatasetSpec, root: Path) -> list[Record]:
    if not root.is_dir():
        raise UserError(f"{dataset}: dataset root {root} is not an existing folder; point it at the "
                        f"{spec.title} folder (the one holding {spec.score.file})")
    table: dict[Column, list[Any]] = {}
    where: dict[str, list[str]] = {}
    for file in dict.fromkeys(c.file for c in spec.columns):
        keys = list(dict.fromkeys(c.key for c in spec.columns if c.file == file))
        rows = read_label_file(root / file, keys, dataset, f"the {spec.title} {file}")
        where[file] = [r.where for r in rows]
        for k, key in enumerate(keys):
            table[Column(file, key)] = [r.values[k] for r in rows]
    counts = {file: len(places) for file, places in where.items()}
    if len(set(counts.values())) > 1:
        sizes = ", ".join(f"{root / file} has {n}" for file, n in counts.items())
        raise UserError(f"{dataset}: the {spec.title} label files disagree on the number of images ({sizes}); "
                        f"they must list the same images in the same order")
    count = counts[spec.score.file]
    if spec.rows is not None and count != spec.rows:
        raise UserError(f"{dataset}: {root / spec.score.file} has {count} entries; the {spec.title} layout "
                        f"has exactly {spec.rows}, matched to image folders by position")

    items: dict[int, tuple[str, float, str | None]] = {}  # row index -> (path, label, reference)
    problems = []
    for index in range(spec.skip_first, count):
        row = {column: values[index] for column, values in table.items()}
        if spec.skip is not None and row[spec.skip] == 1:
            continue
        try:
            items[index] = _read_row(spec, row, index)
        except _RowProblem as problem:
            file = problem.column.file
            problems.append(f"{dataset}: {root / file} {where[file][index]}: {problem}")
    if problems:
        raise UserError(_problem_report(dataset, problems))
    if not items:
        raise UserError(f"{dataset}: {root / spec.score.file} lists no images; expected the {spec.title} labels")

    base = os.path.abspath(root)
    paths = {index: os.path.normpath(os.path.join(base, path)) for index, (path, _, _) in items.items()}
    image_file = (spec.image or spec.score).file
    problems = _duplicate_images(dataset, root / image_file, where[image_file], paths)
    if problems:
        raise UserError(_problem_report(dataset, problems))
    if spec.reference is None:
        units = list(range(len(items)))
    else:
        # docs/datasets.md: references numbered in sorted name order, not directory-listing order
        numbers = {name: u for u, name in enumerate(sorted({reference for _, _, reference in items.values()}))}
        units = [numbers[reference] for _, _, reference in items.values()]
    return [Record(paths[index], label, unit) for (index, (_, label, _)), unit in zip(items.items(), units)]


def _duplicate_images(dataset: str, file: Path, where: list[str], paths: Mapping[int, str]) -> list[str]:
    """One problem per image path that more than one row names: it would have two labels, and could
    fall on both sides of the train/test split."""
    rows_of: dict[str, list[int]] = {}
    for index, path in paths.items():
        rows_of.setdefault(path, []).append(index)
    return [f"{dataset}: {file} lists the image {path} {len(rows)} times ({', '.join(where[i] for i in rows)}); "
            f"list each image once, with one score"
            for path, rows in rows_of.items() if len(rows) > 1]


def _option(dataset: str, options: Mapping[str, Any], name: str, default: Any, kind: type) -> Any:
    value = options.get(name, default)
    if kind is bool:
        valid = isinstance(value, bool)
    else:  # JSON's NaN and Infinity parse as floats, but no score scale ends there
        valid = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not valid:
        raise UserError(f"{dataset}: option {name}={value!r} must be "
                        f"{'true or false' if kind is bool else 'a finite number'}; fix it in the entry's \"options\"")
    return value


def _csv_spec(dataset: str, root: Path, options: Mapping[str, Any]) -> tuple[DatasetSpec, Path]:
    """The spec of a user CSV with columns path,score[,unit]; `root` is the CSV or a folder with labels.csv."""
    unknown = sorted(set(options) - set(_CSV_OPTIONS))
    if unknown:
        raise UserError(f"{dataset}: unknown csv option(s) {', '.join(unknown)}; accepted: {', '.join(_CSV_OPTIONS)}")
    low = _option(dataset, options, "score_min", 0.0, float)
    high = _option(dataset, options, "score_max", 1.0, float)
    higher_is_better = _option(dataset, options, "higher_is_better", True, bool)
    if high <= low:
        raise UserError(f"{dataset}: score_max ({high}) must be larger than score_min ({low})")
    label_file = root / "labels.csv" if root.is_dir() else root
    if not label_file.parent.is_dir():
        raise UserError(f"{dataset}: {label_file.parent} is not an existing folder; give the path of the CSV "
                        f"file (or of a folder holding labels.csv)")
    expected = "a CSV with columns path,score (and optionally unit), paths relative to its folder"
    header = csv_header(label_file, dataset, expected)
    spec = DatasetSpec(
        "CSV", score=Column(label_file.name, "score"), image=Column(label_file.name, "path"), image_path="{name}",
        offset=low, scale=high - low, flip=not higher_is_better,
        reference=Column(label_file.name, "unit") if "unit" in header else None,
        range_fix="fix the score, or the options score_min/score_max")
    return spec, label_file.parent


def read_dataset_as(dataset: str, reader: str, root: str | os.PathLike,
                    options: Mapping[str, Any] | None = None) -> list[Record]:
    """Read the dataset at `root` with the reader `reader`, naming it `dataset` in messages."""
    reader = canonical_name(reader)
    options = options or {}
    root = Path(root).expanduser()
    if reader == CSV_READER:
        spec, root = _csv_spec(dataset, root, options)
    elif options:
        raise UserError(f"{dataset}: the {reader} reader takes no options (got {', '.join(sorted(options))}); "
                        f"remove them")
    else:
        spec = DATASETS[reader]
    return _read(dataset, spec, root)


def read_dataset(name: str, root: str | os.PathLike, **options: Any) -> list[Record]:
    """Records of dataset `name` at `root`: absolute image paths, labels in [0, 1], split units.

    Images are not opened or checked for existence here (see dataset_info.check_datasets).
    Only the `csv` reader takes options: score_min, score_max (default 0, 1), higher_is_better.
    """
    return read_dataset_as(name, name, root, options)

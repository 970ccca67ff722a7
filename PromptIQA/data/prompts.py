"""Prompt files: the image-score pairs (ISPs) that express a requirement.

JSON: `{"isp": [[image_path, score], ...], ...}` (other keys allowed), or CSV with columns
`path,score`. Image paths are relative to the prompt file; scores must lie in [0, 1], or on a
range given as `score_range=(low, high)`, which maps them linearly to [0, 1]: `(s - low) / (high - low)`.
The direction is kept as it is: a lower-is-better scale (DMOS) stays lower-is-better after the
mapping, as in the published training data, where the prompts alone say which way quality runs.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

from ..utils.errors import UserError
from ..utils.text import read_utf8_text


@dataclass(frozen=True)
class PromptSet:
    paths: tuple[str, ...]  # absolute image paths
    scores: tuple[float, ...]

    def reversed(self) -> "PromptSet":
        """The opposite requirement: every score s becomes 1 - s (the published reversal test)."""
        return PromptSet(self.paths, tuple(1.0 - s for s in self.scores))


def scores_to_unit_range(scores, low: float, high: float) -> tuple[float, ...]:
    """Map scores on [low, high] to [0, 1]; the direction is kept (see the module docstring)."""
    check_score_range(low, high)
    return tuple((float(s) - low) / (high - low) for s in scores)


def unit_range_to_scores(values, low: float, high: float) -> tuple[float, ...]:
    """The inverse of `scores_to_unit_range`: predictions in [0, 1] back on [low, high]."""
    check_score_range(low, high)
    return tuple(low + float(v) * (high - low) for v in values)


def check_score_range(low: float, high: float) -> None:
    """Two finite numbers low < high whose span is finite too (1e308 - (-1e308) is not)."""
    finite = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high))
    if not (finite and math.isfinite(low) and math.isfinite(high) and low < high and math.isfinite(high - low)):
        raise UserError(f"score range {low} {high}: give two finite numbers MIN < MAX whose difference is finite "
                        "too, e.g. 0 100")


def _json_rows(path: Path) -> list:
    try:
        data = json.loads(read_utf8_text(path))
    except json.JSONDecodeError as err:
        raise UserError(f"{path}: not valid JSON (line {err.lineno}: {err.msg})") from None
    except ValueError as err:  # a number too long to convert (Python's 4,300-digit limit on integers)
        raise UserError(f"{path}: holds a number too long to read ({str(err).split(';')[0]}); scores are "
                        "numbers such as 0.5 or 73.2") from None
    except RecursionError:
        raise UserError(f"{path}: nested too deeply to read; a prompt file is {{\"isp\": [[path, score], ...]}}") \
            from None
    rows = data.get("isp") if isinstance(data, dict) else None
    if not isinstance(rows, list):
        raise UserError(f'{path}: expected an object with an "isp" list: {{"isp": [["img.png", 0.5], ...]}}')
    return rows


def _csv_rows(path: Path) -> list:
    reader = csv.DictReader(io.StringIO(read_utf8_text(path), newline=""))
    try:
        if not reader.fieldnames or not {"path", "score"} <= set(reader.fieldnames):
            raise UserError(f"{path}: a prompt CSV needs the header 'path,score' (found: {reader.fieldnames})")
        return [[row["path"], row["score"]] for row in reader]
    except csv.Error as err:  # e.g. a field over the csv module's size limit (131,072 characters)
        raise UserError(f"{path}: line {reader.line_num + 1}: not a readable CSV row ({err}); a prompt CSV has "
                        "the columns path,score") from None


def prompt_file_rows(path: str | os.PathLike) -> list:
    """The raw `[image_path, score]` rows of a JSON or CSV prompt file, unchecked."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path}: is a folder, not a prompt file; give the .json or .csv file in it")
    if not path.is_file():
        raise UserError(f"{path}: file not found")
    readers = {".json": _json_rows, ".csv": _csv_rows}
    if path.suffix.lower() not in readers:
        raise UserError(f'{path}: use a .json file ({{"isp": [[path, score], ...]}}) or a .csv (path,score)')
    return readers[path.suffix.lower()](path)


def is_blank(value: object) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or str(value).strip() == ""


def _shown(raw: object, limit: int = 40) -> str:
    """A score as a message shows it, cut short: a 5,000-digit integer has no str() (Python's digit limit)."""
    try:
        text = repr(raw)
    except ValueError:
        return "a number of over 4,300 digits"
    return text if len(text) <= limit else text[:limit] + "..."


def parse_score(raw: object, low: float, high: float, where: str) -> float:
    """An ISP's score: a number (or, from a CSV or a table, the text of one) on [low, high].

    The one check of a prompt score, for prompt files and the web app alike; `where` names the file
    and row. true/false are not scores (bool is an int subclass: float(True) would be 1.0).
    """
    if is_blank(raw):
        raise UserError(f"{where}: no score; give the image's score on [{low:g}, {high:g}]")
    score = None
    if not isinstance(raw, bool):
        try:
            score = float(raw)
        except (TypeError, ValueError, OverflowError):
            pass
    if score is None:
        raise UserError(f"{where}: score {_shown(raw)} is not a number")
    if not (math.isfinite(score) and low <= score <= high):
        raise UserError(f"{where}: score {_shown(raw)} is outside the score range [{low:g}, {high:g}]; fix the "
                        "score, or give the scale of your scores (its MIN and MAX)")
    return score


def read_prompt_file(path: str | os.PathLike, score_range: tuple[float, float] | None = None) -> PromptSet:
    """Read and check a prompt file; each problem names the file and the row (1-based).

    With `score_range=(low, high)` the scores are on that range and are mapped to [0, 1].
    """
    path = Path(path)
    rows = prompt_file_rows(path)
    low, high = score_range if score_range is not None else (0.0, 1.0)
    check_score_range(low, high)
    if not rows:
        raise UserError(f"{path}: no image-score pairs; give at least one")
    paths, scores = [], []
    for number, row in enumerate(rows, start=1):
        if not (isinstance(row, (list, tuple)) and len(row) == 2 and isinstance(row[0], str)):
            raise UserError(f"{path}: ISP row {number} is {row!r}; expected [image_path, score]")
        score = parse_score(row[1], low, high, f"{path}: ISP row {number}")
        image = (path.parent / row[0]).resolve()
        if not image.is_file():
            raise UserError(f"{path}: ISP row {number}: image {row[0]} not found (looked for {image})")
        paths.append(str(image))
        scores.append(score)
    if score_range is not None:
        scores = list(scores_to_unit_range(scores, low, high))
    return PromptSet(tuple(paths), tuple(scores))

"""What a page or `/score` request carries, parsed and checked: ISP rows matched to uploads, prompt
files, queries, the score range, the interval level and the request's size. No Gradio here: every rule
is testable alone.

Uploads lose their folders, so ISP images are matched to table or prompt-file rows by file name.
Every message names uploads by their own names, never by the server's temporary paths.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..data.image import header_size
from ..data.prompts import PromptSet, check_score_range, is_blank, parse_score, prompt_file_rows, scores_to_unit_range
from ..utils.errors import UserError
from ..utils.lru import file_digest

PROMPT_FILE_SUFFIXES = (".json", ".csv")


@dataclass(frozen=True)
class RequestLimits:
    """What one request may ask of the server: images, and pixels summed over its images (decoding
    memory and time grow with them; the header is read, not the pixels, to check)."""

    max_images: int = 200
    max_pixels: int = 200_000_000

    def check(self, paths: Sequence[str]) -> None:
        if len(paths) > self.max_images:
            raise UserError(f"this request has {len(paths)} images, more than the {self.max_images} one request "
                            "may have on this server; send fewer images per request")
        total = 0
        for path in paths:
            width, height = header_size(Path(path))
            total += width * height
            if total > self.max_pixels:
                raise UserError(f"this request's images hold more than {self.max_pixels / 1e6:g} megapixels "
                                f"(the server's limit per request, reached at {Path(path).name}); send fewer or "
                                "smaller images per request")


def file_name(path: str) -> str:
    """The last component of a path with / or \\ separators: uploads keep only names."""
    return str(path).replace("\\", "/").rsplit("/", 1)[-1].strip()


def with_upload_names(message: str, paths: Sequence[str]) -> str:
    """Show uploaded files under their own names instead of the server's temporary paths."""
    for path in sorted(map(str, paths), key=len, reverse=True):
        message = message.replace(path, Path(path).name)
    return message


def uploads_by_name(files: Sequence[str], what: str) -> dict[str, str]:
    """Uploaded files keyed by file name (uploads lose their folders, so names must be unique)."""
    by_name: dict[str, str] = {}
    for path in files:
        name = Path(path).name
        if not Path(path).is_file():
            raise UserError(f"{what}: the upload of {name} is no longer on the server (uploads are removed after "
                            "a while); upload it again")
        if name in by_name and file_digest(by_name[name]) != file_digest(path):
            raise UserError(f"{what}: two different files are named {name}; rename one of them")
        by_name[name] = path
    return by_name


def isp_pairs(rows: Sequence, source: str) -> list[tuple[str, object]]:
    """(image, raw score) of each non-blank [image, score] row of a table or prompt file."""
    pairs = []
    for number, row in enumerate(rows, start=1):
        if not isinstance(row, (list, tuple)) or len(row) != 2 or not isinstance(row[0], (str, type(None))):
            raise UserError(f"{source}: ISP row {number} is {row!r}; expected [image, score]")
        if not all(is_blank(cell) for cell in row):
            pairs.append((row[0] or "", row[1]))
    return pairs


def prompt_set_from_pairs(
    pairs: Sequence[tuple[str, object]], isp_files: Sequence[str] | None, score_range: tuple[float, float],
    source: str,
) -> PromptSet:
    """The prompt set of (image, score) pairs, each matched to the uploaded file of the image's file name;
    scores are checked by `data.prompts.parse_score`, as prompt files are."""
    low, high = score_range
    check_score_range(low, high)
    if not pairs:
        raise UserError(f"{source}: no image-score pairs; upload ISP images and give each a score")
    by_name = uploads_by_name(isp_files or [], "ISP images")
    paths, scores = [], []
    for number, (image, raw) in enumerate(pairs, start=1):
        name = file_name(image)
        where = f"{source}, ISP row {number} ({name or 'no image name'})"
        if name not in by_name:
            uploaded = ", ".join(sorted(by_name)) or "none"
            raise UserError(f"{where}: no uploaded ISP image has this name; upload it (uploaded: {uploaded})")
        if by_name[name] in paths:
            raise UserError(f"{where}: this image is already in an earlier row; give each image one row")
        paths.append(by_name[name])
        scores.append(parse_score(raw, low, high, where))
    unused = sorted(set(by_name) - {Path(p).name for p in paths})
    if unused:
        raise UserError(f"{source}: ISP image(s) {', '.join(unused)} uploaded but not in any row; "
                        "give each a row with its score, or remove it")
    return PromptSet(tuple(paths), scores_to_unit_range(scores, low, high))


def read_uploaded_prompt_file(path: str | None) -> list[tuple[str, object]]:
    """The (image, raw score) pairs of an uploaded JSON or CSV prompt file."""
    if not path:
        raise UserError("no prompt file: give a .json or .csv prompt file")
    name = Path(path).name
    if Path(path).suffix.lower() not in PROMPT_FILE_SUFFIXES:
        raise UserError(f'prompt file {name}: use a .json file ({{"isp": [[image, score], ...]}}) '
                        "or a .csv file with the header path,score")
    try:
        return isp_pairs(prompt_file_rows(path), f"prompt file {name}")
    except UserError as err:
        raise UserError(with_upload_names(str(err), [path])) from None


def require_queries(queries: Sequence[str] | None) -> list[str]:
    if not queries:
        raise UserError("no query image: upload one or more images to score")
    for query in queries:
        if not Path(query).is_file():
            raise UserError(f"query image {Path(query).name}: the upload is no longer on the server (uploads are "
                            "removed after a while); upload it again")
    return list(queries)


def score_range_of(low: float | None, high: float | None) -> tuple[float, float]:
    """The page's score range boxes as (low, high)."""
    if low is None or high is None:
        raise UserError("score range: give both low and high, e.g. 0 and 100")
    check_score_range(float(low), float(high))
    return float(low), float(high)


def interval_level_of(interval: bool, level: float | None) -> float | None:
    """The page's interval boxes as a coverage level, or None when the interval is off."""
    if not interval:
        return None
    if level is None or not 0 < float(level) < 1:
        raise UserError(f"interval level {'(empty)' if level is None else f'{level:g}'}: give a coverage between "
                        "0 and 1, e.g. 0.9")
    return float(level)


def table_after_upload(isp_files: Sequence[str] | None, rows: Sequence | None) -> list[list]:
    """The ISP table after images are uploaded: rows with a score stay; each uploaded image without
    a row gets one with an empty score; empty rows of images no longer uploaded go."""
    names = [Path(p).name for p in isp_files or []]
    kept = [list(r) for r in rows or [] if len(r) == 2 and (not is_blank(r[1]) or file_name(r[0] or "") in names)]
    listed = {file_name(r[0] or "") for r in kept}
    return kept + [[name, None] for name in dict.fromkeys(names) if name not in listed] or [["", None]]

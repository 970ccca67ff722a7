"""Score files of a collection job: per-process parts, appended a batch at a time, merged into one
CSV, JSON Lines or Parquet file.

Each process appends its rows to `OUTPUT.part-RANK-of-WORLD.jsonl` beside the output, one write per
batch, so a killed process leaves whole rows (at most a torn last line, which readers ignore and the
owner cuts off before appending again). A part's rows are in collection order and carry it (`unit`,
`sample`), so the parts of any number of processes, from any number of runs, merge into collection
order with one pass that holds one row per part. The merged file has the columns `path` (the file,
or SHARD/KEY for a tar sample), `score` and `error`; under an ensemble of prompt sets also `spread`,
and with an interval `low` and `high`.
"""
from __future__ import annotations

import csv
import heapq
import json
import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from ..models.prompt_pool import PromptEnsemble
from ..utils.atomic import atomic_open, is_stream
from ..utils.errors import UserError
from .collection import DoneIds, id_digest
from .scorer import Prompts, ScoredImage

FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".parquet": "parquet"}
COLUMNS = ("path", "score", "error")
ENSEMBLE_COLUMNS = ("spread",)
INTERVAL_COLUMNS = ("low", "high")
_NUMBERS = ("score", *ENSEMBLE_COLUMNS, *INTERVAL_COLUMNS)
PARQUET_ROW_GROUP = 65536
_PART = re.compile(r"\.part-(\d+)-of-(\d+)\.jsonl$")


def output_format(path: str | os.PathLike) -> str:
    """csv, jsonl or parquet, from the file's extension; `-` (stdout), and a FIFO or device whose name
    has none of these extensions, is CSV."""
    suffix = Path(path).suffix.lower()
    if os.fspath(path) == "-" or (suffix not in FORMATS and is_stream(path)):
        return "csv"
    if suffix not in FORMATS:
        raise UserError(f"{path}: unknown output format {suffix or '(no extension)'}; "
                        f"end the name with {', '.join(FORMATS)}")
    if FORMATS[suffix] == "parquet":
        parquet_module(path)
    return FORMATS[suffix]


def parquet_module(path: str | os.PathLike):
    """pyarrow.parquet, or a UserError saying how to install it."""
    try:
        import pyarrow.parquet
    except ImportError:
        raise UserError(f"{path}: Parquet files need pyarrow, which is not installed: pip install pyarrow "
                        "(or pip install 'PromptIQA[parquet]')") from None
    return pyarrow.parquet


def part_path(output: str | os.PathLike, rank: int, world_size: int) -> Path:
    output = Path(output)
    return output.with_name(f"{output.name}.part-{rank:05d}-of-{world_size:05d}.jsonl")


def part_paths(output: str | os.PathLike) -> list[Path]:
    """Every part of `output` in its folder, whatever number of processes wrote it."""
    output = Path(output)
    prefix = output.name + ".part-"
    return sorted(p for p in output.parent.glob(glob_escape(prefix) + "*") if _PART.search(p.name[len(output.name):]))


def glob_escape(text: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", text)


def output_columns(prompts: Prompts) -> tuple[str, ...]:
    """The output's columns for these prompts: an ensemble adds its spread, a calibrated one the interval."""
    if not isinstance(prompts, PromptEnsemble):
        return COLUMNS
    return COLUMNS + ENSEMBLE_COLUMNS + (INTERVAL_COLUMNS if prompts.level is not None else ())


def row_record(row: ScoredImage) -> dict:
    """A scored row as the output's columns name its values (unused columns hold None)."""
    return {"path": row.id, **row.values(), "error": row.error}


def _part_line(row: ScoredImage) -> str:
    unit, sample = row.order
    return json.dumps({**row_record(row), "unit": unit, "sample": sample}) + "\n"


class PartWriter:
    """Appends this process's rows to its part, one write of whole rows per batch."""

    def __init__(self, output: str | os.PathLike, rank: int, world_size: int):
        self.path = part_path(output, rank, world_size)
        self._fd: int | None = None

    def append(self, rows: Iterable[ScoredImage]) -> None:
        data = "".join(_part_line(row) for row in rows).encode()
        if not data:
            return
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o666)
            _cut_torn_tail(self._fd)
        view = memoryview(data)
        while view:  # a regular file takes it in one write; loop for the rare short write
            view = view[os.write(self._fd, view) :]

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _cut_torn_tail(fd: int) -> None:
    """Drop an incomplete last line that a killed process left (the row is scored again)."""
    size = os.fstat(fd).st_size
    if not size:
        return
    tail = os.pread(fd, min(size, 1 << 20), max(0, size - (1 << 20)))
    if tail.endswith(b"\n"):
        return
    os.ftruncate(fd, size - len(tail) + tail.rfind(b"\n") + 1)


def read_part(path: Path) -> Iterator[dict]:
    """A part's complete rows (a torn last line is left out)."""
    with open(path, "rb") as lines:
        for number, line in enumerate(lines, 1):
            if not line.endswith(b"\n"):
                return
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                raise UserError(f"{path}, line {number}: not a row this program wrote; "
                                f"delete {path} to score its images again") from None


def done_ids(output: str | os.PathLike) -> DoneIds:
    """The ids in every part of `output`: the images an earlier run already wrote."""
    chunks, chunk = [], []
    for part in part_paths(output):
        for row in read_part(part):
            chunk.append(id_digest(row["path"]))
            if len(chunk) == 1 << 16:
                chunks.append(np.asarray(chunk, dtype="S16"))
                chunk = []
    chunks.append(np.asarray(chunk, dtype="S16"))
    return DoneIds(np.concatenate(chunks))


def merged_rows(parts: list[Path]) -> Iterator[dict]:
    """The rows of all parts in collection order (each part is in that order already)."""
    return heapq.merge(*(read_part(p) for p in parts), key=lambda r: (r["unit"], r["sample"]))


def write_rows(path: str | os.PathLike, rows: Iterable[dict], columns: tuple[str, ...] = COLUMNS) -> int:
    """Write rows (`columns` of each dict) as the extension of `path` says, atomically; returns the row count."""
    kind = output_format(path)
    count = 0
    if kind == "parquet":
        pq = parquet_module(path)
        import pyarrow

        schema = pyarrow.schema([(c, pyarrow.float64() if c in _NUMBERS else pyarrow.string()) for c in columns])
        with atomic_open(path, "wb") as f, pq.ParquetWriter(f, schema) as writer:
            batch: list[dict] = []
            for row in rows:
                batch.append(row)
                count += 1
                if len(batch) == PARQUET_ROW_GROUP:
                    writer.write_table(pyarrow.Table.from_pylist(batch, schema))
                    batch = []
            writer.write_table(pyarrow.Table.from_pylist(batch, schema))
        return count
    with atomic_open(path, "w", newline="", encoding="utf-8", errors="surrogateescape") as f:
        if kind == "csv":
            writer = csv.writer(f)
            writer.writerow(columns)
        for row in rows:
            count += 1
            if kind == "csv":
                writer.writerow([_csv_cell(c, row[c]) for c in columns])
            else:
                f.write(json.dumps({c: row[c] for c in columns}) + "\n")
    return count


def _csv_cell(column: str, value: object) -> str:
    if value is None:
        return ""
    return f"{value:.8f}" if column in _NUMBERS else str(value)


def merge_parts(output: str | os.PathLike, columns: tuple[str, ...] = COLUMNS) -> int:
    """Merge every part of `output` into `output`, then delete the parts; returns the row count."""
    parts = part_paths(output)
    count = write_rows(output, merged_rows(parts), columns)
    for part in parts:
        part.unlink()
    return count


def read_scores(path: str | os.PathLike) -> Iterator[dict]:
    """The rows of a merged score file, any of the three formats: {path, score, error[, spread, low, high]}."""
    kind = output_format(path)
    if kind == "parquet":
        for batch in parquet_module(path).ParquetFile(path).iter_batches():
            yield from batch.to_pylist()
        return
    with open(path, newline="", encoding="utf-8", errors="surrogateescape") as f:
        if kind == "jsonl":
            yield from (json.loads(line) for line in f)
            return
        for row in csv.DictReader(f):
            yield {c: (float(v) if v else None) if c in _NUMBERS else (v or None if c == "error" else v)
                   for c, v in row.items()}

"""Readers for the label files the IQA datasets ship: .mat, .xlsx, .csv and whitespace .txt.

Every reader takes the columns to read and returns one `LabelRow` per data row, in file order.
A missing file or column raises UserError naming the dataset, the file and what was expected
(`expected` is a phrase such as "the KADID-10k dmos.csv").
"""
from __future__ import annotations

import csv
import io
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.io
from openpyxl import load_workbook
from openpyxl.utils import column_index_from_string, get_column_letter

from ..utils.errors import UserError
from ..utils.text import read_utf8_text

ColumnKey = str | int


@dataclass(frozen=True)
class LabelRow:
    """One data row: `where` is how a user finds it in the file ("line 12", "row 3", "entry 7")."""

    where: str
    values: tuple[Any, ...]


def _require_file(path: Path, dataset: str, expected: str) -> None:
    if not path.is_file():
        raise UserError(f"{dataset}: {path} not found; expected {expected} there (is the dataset root right?)")


def _mat_value(value: Any) -> Any:
    """A .mat cell or element as a Python str/float; None for an empty cell."""
    while isinstance(value, np.ndarray):
        if value.size == 0:
            return None
        if value.dtype.kind == "U":
            return "".join(value.reshape(-1))
        value = value.reshape(-1)[0]
    return value.item() if isinstance(value, np.generic) else value


def read_mat(path: str | os.PathLike, variables: Sequence[str], dataset: str, expected: str) -> list[LabelRow]:
    """Read 1xN or Nx1 variables (numbers or cell arrays of strings) of a MATLAB file, element-wise."""
    path = Path(path)
    _require_file(path, dataset, expected)
    try:
        contents = scipy.io.loadmat(str(path))
    except NotImplementedError:  # scipy's answer to MATLAB v7.3 (HDF5) files
        raise UserError(f"{dataset}: {path} is a MATLAB v7.3 file, which scipy cannot read; "
                        f"re-save it with save(..., '-v7'); expected {expected}") from None
    except (ValueError, TypeError, OSError) as error:
        raise UserError(f"{dataset}: {path} is not a readable .mat file ({error}); expected {expected}") from None
    columns = []
    for variable in variables:
        if variable not in contents:
            found = ", ".join(sorted(k for k in contents if not k.startswith("__")))
            raise UserError(f"{dataset}: {path} has no variable '{variable}' (variables: {found}); expected {expected}")
        array = np.asarray(contents[variable])
        if array.ndim > 2 or (array.ndim == 2 and min(array.shape) > 1):
            raise UserError(f"{dataset}: {path} variable '{variable}' has shape {'x'.join(map(str, array.shape))}; "
                            f"expected a 1xN or Nx1 array ({expected})")
        columns.append([_mat_value(v) for v in array.reshape(-1)])
    lengths = {variable: len(column) for variable, column in zip(variables, columns)}
    if len(set(lengths.values())) > 1:
        sizes = ", ".join(f"'{v}' has {n}" for v, n in lengths.items())
        raise UserError(f"{dataset}: {path} variables differ in length ({sizes}); expected {expected}")
    return [LabelRow(f"entry {i + 1}", values) for i, values in enumerate(zip(*columns))]


def _column_index(key: ColumnKey) -> int:
    return key if isinstance(key, int) else column_index_from_string(key.upper()) - 1


def read_xlsx(path: str | os.PathLike, columns: Sequence[ColumnKey], dataset: str, expected: str) -> list[LabelRow]:
    """Read columns (letters like "B", or 0-based indices) of the first sheet, skipping its header row."""
    path = Path(path)
    _require_file(path, dataset, expected)
    try:
        workbook = load_workbook(path, data_only=True)
    except Exception as error:  # openpyxl has no common base class for unreadable workbooks
        raise UserError(f"{dataset}: {path} is not a readable .xlsx workbook ({error}); expected {expected}") from None
    rows = list(workbook.worksheets[0].iter_rows(values_only=True))
    workbook.close()
    width = max((len(row) for row in rows), default=0)
    indices = [_column_index(key) for key in columns]
    for index in indices:
        if index >= width:
            header = rows[0] if rows else ()
            found = ", ".join(f"{get_column_letter(i + 1)} '{name}'" for i, name in enumerate(header)) or "none"
            raise UserError(f"{dataset}: {path} has no column {get_column_letter(index + 1)} in its first sheet "
                            f"(columns: {found}); expected {expected}")
    return [
        LabelRow(f"row {number}", tuple(row[i] if i < len(row) else None for i in indices))
        for number, row in enumerate(rows[1:], start=2)
        if any(value is not None for value in row)
    ]


def _read_text(path: Path, dataset: str, expected: str) -> str:
    """The whole text file (see read_utf8_text), named with its dataset and what it should hold."""
    _require_file(path, dataset, expected)
    try:
        return read_utf8_text(path)
    except UserError as error:
        raise UserError(f"{dataset}: {error}; expected {expected}") from None


def _csv_reader(path: Path, dataset: str, expected: str) -> csv.DictReader:
    return csv.DictReader(io.StringIO(_read_text(path, dataset, expected), newline=""))


def csv_header(path: str | os.PathLike, dataset: str, expected: str) -> list[str]:
    """The column names of a CSV file."""
    return _csv_reader(Path(path), dataset, expected).fieldnames or []


def read_csv(path: str | os.PathLike, columns: Sequence[str], dataset: str, expected: str) -> list[LabelRow]:
    """Read named columns of a CSV file with a header line."""
    path = Path(path)
    reader = _csv_reader(path, dataset, expected)
    header = reader.fieldnames or []
    missing = [c for c in columns if c not in header]
    if missing:
        names = ", ".join(f"'{c}'" for c in missing)
        raise UserError(f"{dataset}: {path} has no column {names} (columns: {', '.join(header)}); "
                        f"expected {expected}")
    return [LabelRow(f"line {reader.line_num}", tuple(row[c] for c in columns)) for row in reader]


def read_txt(path: str | os.PathLike, fields: Sequence[int], dataset: str, expected: str) -> list[LabelRow]:
    """Read whitespace-separated fields (0-based) of every non-blank line."""
    path = Path(path)
    needed = max(fields) + 1
    rows = []
    text = io.StringIO(_read_text(path, dataset, expected), newline="")  # the line breaks open() knows
    for number, line in enumerate(text, start=1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) < needed:
            raise UserError(f"{dataset}: {path} line {number} has {len(parts)} field(s), not {needed}; "
                            f"expected {expected}")
        rows.append(LabelRow(f"line {number}", tuple(parts[i] for i in fields)))
    return rows


_READERS = {".mat": read_mat, ".xlsx": read_xlsx, ".csv": read_csv, ".txt": read_txt}


def read_label_file(path: str | os.PathLike, columns: Sequence[ColumnKey], dataset: str,
                    expected: str) -> list[LabelRow]:
    """Read `columns` of a label file with the reader its extension calls for."""
    suffix = Path(path).suffix.lower()
    if suffix not in _READERS:
        raise UserError(f"{dataset}: {path} is a '{suffix}' file; label files must be one of "
                        f"{', '.join(_READERS)} ({expected})")
    return _READERS[suffix](path, columns, dataset, expected)

"""Reading the text files users write (prompt files, label files)."""
from __future__ import annotations

import os

from .errors import UserError


def read_utf8_text(path: str | os.PathLike) -> str:
    """The whole file: UTF-8, with or without the byte-order mark some editors write; line breaks are kept
    as written (the csv module reads them itself)."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as file:
            return file.read()
    except UnicodeDecodeError as error:
        raise UserError(f"{path} is not UTF-8 text (byte {error.start} cannot be decoded); save it as UTF-8 "
                        "and rerun") from None

"""Glue shared by the command-line programs: exit codes for user errors, image lists, flag spellings."""
from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

from ..data.image import IMAGE_EXTENSIONS, is_image_file
from ..utils.errors import UserError


def run_main(main: Callable[[list[str] | None], int | None], argv: list[str] | None = None) -> int:
    """Run a CLI main: a UserError prints `error: ...` (no traceback) and exits 2; Ctrl-C exits 130."""
    try:
        return main(argv) or 0
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def collect_images(arguments: Iterable[str]) -> list[str]:
    """Image files named on the command line; a folder stands for the images directly in it."""
    images: list[str] = []
    for arg in arguments:
        path = Path(arg)
        if path.is_dir():
            found = sorted(str(p) for p in path.iterdir() if p.is_file() and is_image_file(p))
            if not found:
                raise UserError(f"--images {arg}: no images in this folder ({', '.join(sorted(IMAGE_EXTENSIONS))})")
            images += found
        elif path.is_file():
            images.append(str(path))
        else:
            raise UserError(f"--images {arg}: no such file or folder")
    return images


def both_spellings(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Accept every long flag as `--a_b` and `--a-b` (the published scripts mix the two)."""
    for action in parser._actions:
        extra = []
        for flag in action.option_strings:
            if flag.startswith("--"):
                for other in (flag.replace("_", "-"), "--" + flag[2:].replace("-", "_")):
                    if other not in action.option_strings and other not in extra:
                        extra.append(other)
        for other in extra:
            parser._option_string_actions.setdefault(other, action)
    return parser


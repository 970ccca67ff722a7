"""Glue shared by the command-line programs: exit codes for user errors, image lists, flag spellings."""
from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from ..scoring.collection import Collection
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


def collect_images(images: Sequence[str], image_lists: Sequence[str] = (), recursive: bool = False) -> Collection:
    """The images named on the command line (--images, --image-list, --recursive), checked."""
    return Collection(images, image_lists, recursive, images_label="--images", lists_label="--image-list")


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


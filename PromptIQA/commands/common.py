"""Glue shared by the command-line programs: exit codes for user errors, image lists, flag spellings."""
from __future__ import annotations

import argparse
import math
import os
import re
import sys
import traceback
from collections.abc import Callable, Sequence

from ..scoring.collection import Collection
from ..utils.errors import UserError

DEBUG_VARIABLE = "PROMPTIQA_DEBUG"  # set to 1 to see the traceback behind a user error


def run_main(main: Callable[[list[str] | None], int | None], argv: list[str] | None = None) -> int:
    """Run a CLI main: a UserError prints `error: ...` (no traceback unless PROMPTIQA_DEBUG=1) and exits 2;
    Ctrl-C exits 130."""
    try:
        return main(argv) or 0
    except UserError as err:
        if os.environ.get(DEBUG_VARIABLE) == "1":
            traceback.print_exception(err, file=sys.stderr)  # with the exceptions it was raised from
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



def whole_number(text: str, minimum: int) -> int:
    """A count given on the command line, refused with its fix when below `minimum`."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number; give {minimum} or more") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"{value} is too small; give {minimum} or more")
    return value


def finite_number(text: str) -> float:
    """argparse type for a number that must be finite (1e400 reads as infinity)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text[:40]!r} is not a finite number (beyond +-1.8e308, or nan)")
    return value


# devices these programs run on: a CPU, or a CUDA GPU (the network is never tested elsewhere)
_DEVICE_SPELLING = re.compile(r"auto|cpu|cuda(:\d+)?")


def device_name(text: str) -> str:
    """argparse type for --device: auto, cpu, cuda or cuda:INDEX (whether CUDA is there is checked later)."""
    if not _DEVICE_SPELLING.fullmatch(text):
        raise argparse.ArgumentTypeError(f"{text!r}: use auto, cpu, cuda or cuda:INDEX (meta, mps and other "
                                         "devices are not supported)")
    return text


# argparse takes "-1e3" for a flag (its own pattern knows only -1 and -1.5): negative numbers in every
# notation float() reads are values, as no flag of these programs looks like a number
_NEGATIVE_NUMBER = re.compile(r"^-(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")


def accept_negative_numbers(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Let `parser` read -1e3 as a value (e.g. --score-range -1e3 5)."""
    parser._negative_number_matcher = _NEGATIVE_NUMBER
    return parser

"""The one exception type for mistakes a user can fix (bad flags, files, data).

Command-line entry points catch it and print its message without a traceback; everything else
is a bug and keeps its traceback.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


def _rebuild(cls: type[UserError], args: tuple, state: dict[str, Any]) -> UserError:
    error = cls.__new__(cls, *args)
    error.args = args
    error.__dict__.update(state)
    return error


class UserError(Exception):
    """A problem with the user's input; the message names the file/row/flag and the fix.

    It pickles without calling `__init__` again, so a subclass whose constructor takes other
    arguments than its message (a path and a reason, say) still crosses a process boundary (a
    DataLoader worker, a spawned training process) as itself.
    """

    def __reduce__(self) -> tuple:
        return _rebuild, (type(self), self.args, dict(self.__dict__))


@contextmanager
def naming(flag: str) -> Iterator[None]:
    """Prefix a UserError raised in the block with the command-line flag that gave the input: library
    messages say what is wrong (path, row, reason), the command line says which flag it came from."""
    try:
        yield
    except UserError as error:
        raise UserError(f"{flag} {error}") from error

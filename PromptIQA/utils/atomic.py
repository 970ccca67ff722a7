"""Writing files so that readers only ever see the old version or the complete new one."""
from __future__ import annotations

import csv
import errno
import os
import stat
import sys
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from .errors import UserError

# "no space left on device" and "disk quota exceeded": both mean the write cannot fit
_DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})


def _umask() -> int:
    """The process umask; read from /proc where possible, since setting it to read it is not thread-safe."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _plain_open_mode(path: Path) -> int:
    """The permissions open(path, "w") would leave: an existing file's own, else 0o666 less the umask."""
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        return 0o666 & ~_umask()


def _disk_full(error: BaseException) -> bool:
    """Whether `error`, or an error it was raised from, is a full disk: torch.save, for one, reports a
    failed write as a RuntimeError ("unexpected pos ...") raised while handling the OSError."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, OSError) and error.errno in _DISK_FULL:
            return True
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return False


STDOUT = "-"


@contextmanager
def _stdout(mode: str) -> Iterator[IO]:
    """sys.stdout (its bytes for a binary mode), flushed and left open."""
    stream = sys.stdout.buffer if "b" in mode else sys.stdout
    yield stream
    stream.flush()


@contextmanager
def _replace_atomically(path: Path, mode: str, **kwargs) -> Iterator[IO]:
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        try:
            with os.fdopen(fd, mode, **kwargs) as f:
                os.fchmod(fd, _plain_open_mode(path))  # mkstemp creates 0600, unreadable to anyone else
                yield f
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except BaseException as error:
        if _disk_full(error):
            raise UserError(f"{path}: the disk is full (no space left in {path.parent.resolve()}); "
                            "free some space or write to another disk, then rerun") from None
        raise


@contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", **kwargs) -> Iterator[IO]:
    """Open `path` for writing so that no reader ever sees a partial regular file.

    A regular file (or a new one) is written to a temp file beside it, then fsynced and renamed over
    it: if the block raises (or the process is interrupted), the temp file is removed and the file
    keeps its previous content. The new file gets the permissions a plain open() would give it; a full
    disk raises UserError naming the file. A symlink is followed: its target is replaced atomically
    and the link stays. A FIFO or a device (/dev/stdout, a pipe a reader waits on) cannot be replaced
    and is written to directly, as is stdout for `-`.
    """
    if os.fspath(path) == STDOUT:
        with _stdout(mode) as stream:
            yield stream
        return
    if is_stream(path):
        with open(path, mode, **kwargs) as f:
            yield f
        return
    with _replace_atomically(Path(os.path.realpath(path)), mode, **kwargs) as f:  # through any symlinks
        yield f


def is_stream(path: str | os.PathLike) -> bool:
    """Whether `path` is (or a symlink leads to) something other than a regular file or a folder: a FIFO,
    a character device such as /dev/stdout or /dev/null, a socket. Those are written to, never replaced."""
    try:
        mode = os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return False
    return not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))


def write_csv_atomic(path: str | os.PathLike, header: list[str], rows: Iterable[Iterable]) -> None:
    """Write a CSV through a temp file and a rename, so a failure leaves no partial file."""
    if os.fspath(path) != STDOUT and not Path(os.path.realpath(path)).parent.is_dir():
        raise UserError(f"{path}: folder {Path(path).parent} does not exist")
    with atomic_open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)

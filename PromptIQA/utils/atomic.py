"""Writing files so that readers only ever see the old version or the complete new one."""
from __future__ import annotations

import csv
import errno
import os
import stat
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


@contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", **kwargs) -> Iterator[IO]:
    """Write to a temp file beside `path`, then fsync and rename it over `path`.

    If the block raises (or the process is interrupted), the temp file is removed and `path` keeps
    its previous content. The new file gets the permissions a plain open() would give it; a full
    disk raises UserError naming the file.
    """
    path = Path(path)
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


def write_csv_atomic(path: str | os.PathLike, header: list[str], rows: Iterable[Iterable]) -> None:
    """Write a CSV through a temp file and a rename, so a failure leaves no partial file."""
    path = Path(path)
    if not path.parent.is_dir():
        raise UserError(f"{path}: folder {path.parent} does not exist")
    with atomic_open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)

"""Atomic writes under a full disk and a umask: the error names the file, the mode is a plain open()'s."""
from __future__ import annotations

import errno
import io
import os
import stat
import tempfile
import threading

import pytest
import torch

from PromptIQA.models.checkpoint import save_checkpoint
from PromptIQA.utils.atomic import atomic_open, write_csv_atomic
from PromptIQA.utils.errors import UserError


class _FullDisk(io.FileIO):
    """A file on a disk with no space left: every write fails as the kernel reports it."""

    def write(self, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _fdopen_on_full_disk(fd, mode="r", **kwargs):
    buffered = io.BufferedWriter(_FullDisk(fd, "w"))
    return buffered if "b" in mode else io.TextIOWrapper(buffered, **kwargs)


@pytest.fixture
def full_disk(monkeypatch):
    monkeypatch.setattr(os, "fdopen", _fdopen_on_full_disk)


@pytest.mark.parametrize("write", [
    lambda path: save_checkpoint({"weights": torch.zeros(100_000)}, path),  # torch reports "unexpected pos"
    lambda path: write_csv_atomic(path, ["path", "score"], [["a.png", 0.5]] * 10_000),
], ids=["checkpoint", "csv"])
def test_full_disk_is_reported_and_leaves_the_old_file(tmp_path, full_disk, write):
    path = tmp_path / "out.file"
    path.write_text("previous")
    with pytest.raises(UserError, match="the disk is full") as err:
        write(path)
    assert str(path) in str(err.value) and str(tmp_path.resolve()) in str(err.value)
    assert [p.name for p in tmp_path.iterdir()] == ["out.file"] and path.read_text() == "previous"


def test_full_disk_before_the_first_byte_is_reported(tmp_path, monkeypatch):
    def no_room(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(tempfile, "mkstemp", no_room)
    with pytest.raises(UserError, match="the disk is full") as err:
        write_csv_atomic(tmp_path / "scores.csv", ["path", "score"], [])
    assert str(tmp_path / "scores.csv") in str(err.value)


def test_other_write_errors_keep_their_type(tmp_path, monkeypatch):
    def broken(fd, mode="r", **kwargs):
        os.close(fd)
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(os, "fdopen", broken)
    with pytest.raises(OSError, match="Input/output error"):
        with atomic_open(tmp_path / "x.txt"):
            pass
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def umask():
    """Set the process umask for one test, and put the old one back."""
    previous = os.umask(0o022)
    yield lambda mask: os.umask(mask)
    os.umask(previous)


@pytest.mark.parametrize("mask", [0o022, 0o027, 0o002], ids=oct)
def test_new_files_get_the_mode_open_gives(tmp_path, umask, mask):
    umask(mask)
    with open(tmp_path / "plain.txt", "w") as f:
        f.write("x")
    with atomic_open(tmp_path / "atomic.txt") as f:
        f.write("x")
    save_checkpoint({"epoch": 1}, tmp_path / "ckpt.pth.tar")
    expected = 0o666 & ~mask
    assert stat.S_IMODE((tmp_path / "plain.txt").stat().st_mode) == expected
    assert stat.S_IMODE((tmp_path / "atomic.txt").stat().st_mode) == expected
    assert stat.S_IMODE((tmp_path / "ckpt.pth.tar").stat().st_mode) == expected


def test_rewritten_files_keep_their_mode(tmp_path, umask):
    umask(0o022)
    path = tmp_path / "args.json"
    path.write_text("{}")
    path.chmod(0o640)
    with atomic_open(path) as f:
        f.write('{"epochs": 1}')
    assert stat.S_IMODE(path.stat().st_mode) == 0o640 and path.read_text() == '{"epochs": 1}'


def test_a_checkpoint_written_through_a_symlink_replaces_its_target_and_keeps_the_link(tmp_path):
    (tmp_path / "store").mkdir()
    target = tmp_path / "store" / "best.pth.tar"
    target.write_bytes(b"old")
    link = tmp_path / "best.pth.tar"
    link.symlink_to(target)
    save_checkpoint({"epoch": 3}, link)
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert torch.load(target, weights_only=True) == {"epoch": 3}
    assert sorted(p.name for p in (tmp_path / "store").iterdir()) == ["best.pth.tar"]


def test_a_fifo_is_written_to_and_stays_a_fifo(tmp_path):
    fifo = tmp_path / "scores.fifo"
    os.mkfifo(fifo)
    received = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes().decode()))
    reader.start()
    write_csv_atomic(fifo, ["path", "score"], [["a.png", "0.5"]])
    reader.join(timeout=30)
    assert received == ["path,score\r\na.png,0.5\r\n"] and stat.S_ISFIFO(fifo.stat().st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scores.fifo"]


def test_dash_writes_to_stdout(capsys):
    write_csv_atomic("-", ["path", "score"], [["a.png", "0.5"]])
    with atomic_open("-") as stream:
        stream.write("done\n")
    assert capsys.readouterr().out == "path,score\r\na.png,0.5\r\ndone\n"

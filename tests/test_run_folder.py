"""The run folder: a run already in it is refused unless resumed or overwritten, a live run locks it,
and a --save_path that cannot hold a run is refused before any work."""
from __future__ import annotations

import errno
import io
import os
import subprocess
import sys
import textwrap

import pytest
from training_fixtures import training_args, write_training_data

from PromptIQA.commands import train
from PromptIQA.commands.common import run_main
from PromptIQA.training import run_folder
from PromptIQA.training.config import RunConfig
from PromptIQA.training.run_folder import claim_run_folder
from PromptIQA.utils.errors import UserError


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_training_data(tmp_path_factory.mktemp("data"), count=8)


def previous_run(folder):
    """What an earlier run left: results, its log and plots, and a file of the user's."""
    folder.mkdir(parents=True)
    for name in ("metrics.csv", "metrics.jsonl", "args.json", "train.log", "predictions_a.csv", "scatter_a.png"):
        (folder / name).write_text("earlier run\n")
    (folder / "notes.txt").write_text("mine\n")
    return folder


def test_a_folder_that_holds_a_run_is_refused(data, tmp_path, capsys):
    run, cache = previous_run(tmp_path / "run"), tmp_path / "cache"
    assert run_main(train.main, training_args(data, run, "--cache-dir", str(cache))) == 2
    err = capsys.readouterr().err
    assert f"--save_path {run}: already holds a training run (metrics.csv, metrics.jsonl)" in err
    assert "--resume auto" in err and "--overwrite" in err
    assert (run / "metrics.csv").read_text() == "earlier run\n" and not cache.exists()


def test_overwrite_deletes_the_earlier_run_and_nothing_else(tmp_path):
    run = previous_run(tmp_path / "run")
    with claim_run_folder(RunConfig(save_path=str(run), overwrite=True)):
        assert sorted(p.name for p in run.iterdir()) == [".lock", "notes.txt"]


def test_resume_continues_in_a_folder_that_holds_a_run(tmp_path):
    run = previous_run(tmp_path / "run")
    with claim_run_folder(RunConfig(save_path=str(run), resume="auto")):
        assert (run / "metrics.csv").read_text() == "earlier run\n"


def test_a_folder_without_results_is_reused(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "train.log").write_text("a run that stopped before its first epoch ended\n")
    with claim_run_folder(RunConfig(save_path=str(run))) as folder:
        assert folder == run


HOLD_THE_LOCK = textwrap.dedent("""
    import fcntl, os, sys, time
    os.makedirs(sys.argv[1], exist_ok=True)
    with open(os.path.join(sys.argv[1], ".lock"), "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        lock.write(f"pid {os.getpid()} on this machine")
        lock.flush()
        print("holding", flush=True)
        time.sleep(120)
""")


def test_a_live_run_locks_its_folder(data, tmp_path, capsys):
    """Another process holding the folder's lock, as a live run does, keeps a second run out."""
    run = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_THE_LOCK, str(run)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "holding"
        assert run_main(train.main, training_args(data, run, "--resume", "auto")) == 2
        err = capsys.readouterr().err
        assert f"another training run (pid {holder.pid} on this machine) is using this folder" in err
    finally:
        holder.kill()
        holder.wait()
    with claim_run_folder(RunConfig(save_path=str(run))):  # the lock died with its process
        assert (run / ".lock").read_text().startswith(f"pid {os.getpid()} on ")


@pytest.mark.parametrize("where, message", [("file", "is a file, not a folder"),
                                            ("file/run", "cannot write there (Not a directory)")])
def test_a_save_path_that_cannot_hold_a_run_is_refused_before_any_work(data, tmp_path, capsys, where, message):
    (tmp_path / "file").write_text("not a folder\n")
    cache = tmp_path / "cache"
    save_path = tmp_path / where
    assert run_main(train.main, training_args(data, save_path, "--cache-dir", str(cache))) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --save_path {save_path}: {message}") and not cache.exists()


class _FullDisk(io.FileIO):
    """The lock file on a disk with no space left: every write fails as the kernel reports it."""

    def write(self, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_a_full_disk_while_claiming_the_folder_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(run_folder, "open", lambda path, mode, **kwargs: _FullDisk(path, "a+"), raising=False)
    run = tmp_path / "run"
    with pytest.raises(UserError, match="the disk is full") as err:
        with claim_run_folder(RunConfig(save_path=str(run))):
            pass
    assert str(err.value).startswith(f"--save_path {run}: ") and "another disk" in str(err.value)

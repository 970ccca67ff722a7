"""The run folder: claiming it, the configuration and environment, a log of what was printed, and
the metrics of every epoch.

Only the main process writes; the others get a RunLog that does nothing. The metrics files are
rewritten whole from the run's history (which the checkpoint also holds) after each checkpoint,
so a run stopped anywhere and resumed lists every epoch exactly once.
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
import platform
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

import timm
import torch

from ..evaluation.results import EpochStats, EvalResult, epoch_score, format_results, save_predictions
from ..utils.atomic import atomic_open, write_csv_atomic
from ..utils.constants import PACKAGE_DIR
from ..utils.errors import UserError
from .config import RunConfig
from .launch import Topology

METRIC_FIELDS = ["epoch", "split", "dataset", "srcc", "plcc", "images", "loss", "lr"]
LOCK_FILE = ".lock"
# Results of at least one finished epoch: a folder with any of them holds a run.
RUN_RESULTS = ("last.pth.tar", "best.pth.tar", "metrics.csv", "metrics.jsonl")
# Everything a run writes (what --overwrite deletes).
RUN_FILES = (*RUN_RESULTS, "args.json", "environment.json", "train.log", "predictions_*.csv", "scatter_*.png")


def environment(topology: Topology) -> dict:
    """Versions and hardware a run used, its processes, and the commit of this repository if it is a git checkout."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=PACKAGE_DIR, capture_output=True, text=True, timeout=10
        ).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        commit = None
    cuda = torch.cuda.is_available()
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "timm": timm.__version__,
        "cuda": torch.version.cuda if cuda else None,
        "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if cuda else [],
        "topology": topology.to_dict(),
        "git_commit": commit,
        "command": sys.argv,
    }


@contextmanager
def claim_run_folder(run: RunConfig) -> Iterator[Path]:
    """Hold `run.save_path` for this run: created if missing, locked against a second live run, and
    refused if it already holds a run, unless `--resume` (continue it) or `--overwrite` (whose old
    run files are deleted here). The lock is released when the block ends, or when the process dies."""
    folder = Path(run.save_path)
    if folder.exists() and not folder.is_dir():
        raise UserError(f"--save_path {folder}: is a file, not a folder; give a folder (it is created if missing)")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        lock = open(folder / LOCK_FILE, "a+b", buffering=0)  # unbuffered: a failed write leaves nothing to flush
    except OSError as error:
        raise UserError(f"--save_path {folder}: cannot write there ({error.strerror or error}); "
                        "choose a folder you can write to") from None
    with lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().decode(errors="replace").strip() or "unknown"
            raise UserError(f"--save_path {folder}: another training run ({holder}) "
                            "is using this folder; wait for it to end or choose another --save_path") from None
        try:
            lock.seek(0)
            lock.truncate()
            lock.write(f"pid {os.getpid()} on {socket.gethostname()}\n".encode())
        except OSError as error:
            if error.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            raise UserError(f"--save_path {folder}: the disk is full (no space for the lock file {LOCK_FILE}); "
                            "free some space or choose a --save_path on another disk") from error
        found = [name for name in RUN_RESULTS if (folder / name).exists()]
        if found and not run.resume:
            if not run.overwrite:
                raise UserError(
                    f"--save_path {folder}: already holds a training run ({', '.join(found)}); continue it "
                    "with --resume auto, start afresh there with --overwrite, or choose another --save_path"
                )
            remove_run_files(folder)
        yield folder


def remove_run_files(folder: Path) -> None:
    """Delete what an earlier run wrote in `folder` (and nothing else)."""
    for pattern in RUN_FILES:
        for path in folder.glob(pattern):
            path.unlink()


def epoch_record(epoch: int, lr: float, train: EpochStats, results: list[EvalResult], best: dict) -> dict:
    """One epoch in the run's history: a line of metrics.jsonl."""
    return {
        "epoch": epoch, "lr": lr, "train": asdict(train), "score": epoch_score(results), "best_epoch": best["epoch"],
        "test": {r.name: {"srcc": r.srcc, "plcc": r.plcc, "images": len(r.labels)} for r in results},
    }


def metric_rows(record: dict) -> list[list]:
    """The metrics.csv rows of one epoch: training, then one per test set."""
    train = record["train"]
    rows = [{"epoch": record["epoch"], "split": "train", "dataset": "all", "srcc": train["srcc"],
             "plcc": train["plcc"], "images": train["images"], "loss": train["loss"], "lr": record["lr"]}]
    rows += [{"epoch": record["epoch"], "split": "test", "dataset": name, "srcc": test["srcc"], "plcc": test["plcc"],
              "images": test["images"], "lr": record["lr"]} for name, test in record["test"].items()]
    return [[row.get(field, "") for field in METRIC_FIELDS] for row in rows]


class RunLog:
    def __init__(self, save_path: str | os.PathLike, enabled: bool):
        self.path = Path(save_path)
        self.enabled = enabled
        if enabled:
            self.path.mkdir(parents=True, exist_ok=True)

    def info(self, message: str) -> None:
        if self.enabled:
            print(message, flush=True)
            with open(self.path / "train.log", "a") as f:
                f.write(message + "\n")

    def write_json(self, name: str, obj) -> None:
        if self.enabled:
            with atomic_open(self.path / name) as f:
                json.dump(obj, f, indent=2, default=str)

    def predictions(self, results: list[EvalResult]) -> None:
        if self.enabled:
            save_predictions(results, self.path)

    def report_epoch(self, record: dict, results: list[EvalResult]) -> None:
        """Print the epoch's table (and keep it in train.log)."""
        train = EpochStats(**record["train"])
        improved = record["best_epoch"] == record["epoch"]
        self.info(
            f"epoch {record['epoch']}: lr {record['lr']:.3g}, train loss {train.loss:.4f}, SRCC {train.srcc:.4f}, "
            f"PLCC {train.plcc:.4f}, {train.images / train.seconds:.1f} img/s\n{format_results(results)}\n"
            f"score (sum of SRCC + PLCC) {record['score']:.4f}{' (best)' if improved else ''}"
        )

    def write_metrics(self, history: list[dict]) -> None:
        """metrics.jsonl (a line per epoch) and metrics.csv (a row per epoch and set), rewritten whole."""
        if not self.enabled:
            return
        with atomic_open(self.path / "metrics.jsonl") as f:
            f.writelines(json.dumps(record) + "\n" for record in history)
        write_csv_atomic(self.path / "metrics.csv", METRIC_FIELDS, (row for r in history for row in metric_rows(r)))

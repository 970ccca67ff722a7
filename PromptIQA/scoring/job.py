"""A collection scoring job over the processes of a torchrun job (or one process): each process
scores its share and appends it to its part, rank 0 shows the whole job's progress, waits for every
process, merges the parts into the output and reports a summary. With `resume`, the images already
in the parts are left out, so the merged output is that of an uninterrupted run.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from ..utils.distributed import DistContext, all_gather_objects, barrier
from ..utils.errors import UserError
from .collection import Collection, DoneIds
from .outputs import PartWriter, done_ids, merge_parts, output_columns, part_paths
from .scorer import Prompts, ScoredImage, Scorer

FIRST_ERRORS = 5
_POLL_SECONDS = 0.5


class BadImagesError(UserError):
    """Images that cannot be scored, when the job was told to stop on them."""

    def __init__(self, rows: list[ScoredImage], advice: str = ""):
        listed = "; ".join(row.error for row in rows)
        super().__init__(f"{len(rows)} image{'s' if len(rows) > 1 else ''} cannot be scored: {listed}{advice}")
        self.rows = rows


@dataclass
class JobSummary:
    """What one process (or, merged, the job) did in this run."""

    scored: int = 0
    skipped: int = 0
    already_done: int = 0
    seconds: float = 0.0
    first_errors: list[str] = field(default_factory=list)
    merged_rows: int | None = None  # rows in the merged output, when one was written

    def add(self, rows: list[ScoredImage]) -> None:
        bad = [row.error for row in rows if row.error]
        self.skipped += len(bad)
        self.scored += len(rows) - len(bad)
        self.first_errors += bad[: FIRST_ERRORS - len(self.first_errors)]

    @classmethod
    def combined(cls, parts: list["JobSummary"]) -> "JobSummary":
        errors = [error for part in parts for error in part.first_errors][:FIRST_ERRORS]
        return cls(sum(p.scored for p in parts), sum(p.skipped for p in parts), parts[0].already_done,
                   max(p.seconds for p in parts), errors)

    def text(self) -> str:
        rate = (self.scored + self.skipped) / self.seconds if self.seconds else 0.0
        lines = [f"scored {self.scored} images, skipped {self.skipped}, already done {self.already_done}, "
                 f"in {self.seconds:.1f} s ({rate:.1f} images/s)"]
        lines += [f"  skipped: {error}" for error in self.first_errors]
        if self.skipped > len(self.first_errors):
            lines.append(f"  ... and {self.skipped - len(self.first_errors)} more (see the error column)")
        return "\n".join(lines)


@dataclass
class CollectionJob:
    """Score `collection` under `prompts`; write to `output` (parts, then merged) when given.

    `score_range` is the reported scale of scores on [0, 1]; `skip_bad` records unusable images with
    their error instead of stopping with BadImagesError; `echo` sees every batch's rows as written.
    `store` is the torchrun job's key-value store (for the progress of all processes); `advice`
    follows the count of bad images in BadImagesError's message.
    """

    scorer: Scorer
    collection: Collection
    prompts: Prompts
    output: Path | None = None
    ctx: DistContext = field(default_factory=DistContext)
    store: object | None = None
    resume: bool = False
    skip_bad: bool = False
    score_range: tuple[float, float] = (0.0, 1.0)
    echo: Callable[[list[ScoredImage]], None] | None = None
    progress: bool = True
    advice: str = ""

    def run(self) -> JobSummary:
        start = time.perf_counter()
        done = self._done_before()
        summary = JobSummary(already_done=len(done))
        bar = tqdm(desc="scoring", unit="image", initial=len(done), disable=not (self.progress and self.ctx.is_main),
                   dynamic_ncols=True)
        total = self._count_in_background() if self.ctx.is_main and self.progress else None
        writer = PartWriter(self.output, self.ctx.rank, self.ctx.world_size) if self.output else None
        try:
            batches = self.scorer.score_collection_batches(self.collection, self.prompts, self.ctx.rank,
                                                           self.ctx.world_size, done)
            for rows in batches:
                rows = [row.on_range(*self.score_range) for row in rows]
                bad = [row for row in rows if row.error]
                if bad and not self.skip_bad:
                    raise BadImagesError(bad, self.advice)
                if writer:
                    writer.append(rows)
                if self.echo:
                    self.echo(rows)
                summary.add(rows)
                self._show(bar, total, len(done) + self._job_rows(len(rows), summary))
            self._wait_for_all(bar, total, len(done))
        finally:
            if writer:
                writer.close()
            bar.close()
        summary.seconds = time.perf_counter() - start
        summary = JobSummary.combined(all_gather_objects(summary, self.ctx))
        if self.ctx.is_main and self.output:
            summary.merged_rows = merge_parts(self.output, output_columns(self.prompts))
        return summary

    def _done_before(self) -> DoneIds:
        """The images earlier runs wrote (with `resume`); refuses to mix a fresh run with old parts."""
        if not self.output:
            return DoneIds()
        parts = part_paths(self.output)
        barrier(self.ctx)  # every process has looked before any writes
        if self.resume and not parts and self.output.exists():
            raise UserError(f"{self.output}: this job is complete (no unfinished parts to resume); "
                            "delete it to score the collection again")
        if parts and not self.resume:
            names = ", ".join(p.name for p in parts[:3]) + (" ..." if len(parts) > 3 else "")
            raise UserError(f"{self.output}: an unfinished run left its parts here ({names}); resume it "
                            "(--resume) or delete them to start over")
        return done_ids(self.output) if self.resume else DoneIds()

    def _count_in_background(self) -> list[int]:
        """The collection's size for the progress bar's ETA, counted while scoring starts."""
        found: list[int] = []
        threading.Thread(target=lambda: found.append(self.collection.count_images()), daemon=True).start()
        return found

    def _job_rows(self, new_rows: int, summary: JobSummary) -> int:
        """Rows written in this run by all processes (this process's own without torchrun)."""
        if self.store is None:
            return summary.scored + summary.skipped
        return self.store.add("rows", new_rows)

    def _show(self, bar: tqdm, total: list[int] | None, position: int) -> None:
        if total and bar.total is None:
            bar.total = total[0]
        bar.update(position - bar.n)

    def _wait_for_all(self, bar: tqdm, total: list[int] | None, done_before: int) -> None:
        """Wait, polling the store (no collective that could time out), until every process is done."""
        if self.store is None:
            return
        self.store.add("finished", 1)
        while self.store.add("finished", 0) < self.ctx.world_size:
            self._show(bar, total, done_before + self.store.add("rows", 0))
            time.sleep(_POLL_SECONDS)
        self._show(bar, total, done_before + self.store.add("rows", 0))

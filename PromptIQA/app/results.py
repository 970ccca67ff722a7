"""A page request's results: the scores (with the ensemble's spread and the interval, when used) on the
user's range, a CSV and the placement picture, each request in a folder of its own that is removed once
the page has its copies."""
from __future__ import annotations

import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..data.prompts import PromptSet, unit_range_to_scores
from ..models.prompt_pool import PromptEnsemble
from ..scoring.scorer import Prompts, result_on_range
from ..utils.atomic import write_csv_atomic
from ..utils.constants import PUBLISHED_PROMPT_NUM
from .figures import save_placement_figure
from .models import LoadedModel, ModelRegistry
from .texts import TABLE_HEADERS, opposite


class ResultFolders:
    """One fresh folder per request under `root`, so that concurrent requests never share result files."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def new(self) -> Path:
        return Path(tempfile.mkdtemp(dir=self.root))

    def remove(self, folder: str | Path | None) -> None:
        """Remove a request's folder (only ever one made here)."""
        if folder and Path(folder).parent == self.root:
            shutil.rmtree(folder, ignore_errors=True)


@dataclass(frozen=True)
class ScoredRequest:
    """The page's results: table columns and rows, CSV and picture files, and a summary line."""

    columns: list[str]
    rows: list[list]
    csv_path: Path
    picture_path: Path
    summary: str
    table_label: str


def on_score_range(values: dict[str, np.ndarray], score_range: tuple[float, float]) -> dict[str, tuple[float, ...]]:
    """Each column of `Scorer.iter_results` on [low, high] (`result_on_range`), as floats."""
    return {name: tuple(result_on_range(name, column.astype(np.float64), *score_range).tolist())
            for name, column in values.items()}


def pool_description(prompts: Prompts) -> str:
    """How the ISPs were used, for the summary: nothing for one set of all of them."""
    if not isinstance(prompts, PromptEnsemble):
        return ""
    sets, size = prompts.sets.shape
    interval = f" with {prompts.level:g} intervals" if prompts.level is not None else ""
    return f" as an ensemble of {sets} sets of {size}{interval}"


def score_page_request(
    registry: ModelRegistry, model: LoadedModel, prompt_set: PromptSet, reverse: bool, queries: Sequence[str],
    score_range: tuple[float, float], direction: str, output_dir: Path, level: float | None = None,
) -> ScoredRequest:
    """Score the queries as test.py would (one set of every ISP, or an ensemble with an interval at
    `level`), on the user's score range, with the CSV and the placement picture in `output_dir`."""
    used = prompt_set.reversed() if reverse else prompt_set
    prompts = registry.pool(model, used, level)
    values = on_score_range(registry.score(model, prompts, queries), score_range)
    names = [Path(q).name for q in queries]
    columns = [TABLE_HEADERS[0], *values]
    rows = [[name, *(round(column[i], 6) for column in values.values())] for i, name in enumerate(names)]
    csv_path, picture_path = output_dir / "promptiqa_scores.csv", output_dir / "placement.png"
    write_csv_atomic(csv_path, columns, ([name, *(f"{column[i]:.8f}" for column in values.values())]
                                         for i, name in enumerate(names)))
    shown_direction = opposite(direction) if reverse else direction
    intervals = (values["low"], values["high"]) if "low" in values else None
    save_placement_figure(used.paths, unit_range_to_scores(used.scores, *score_range), queries, values["score"],
                          score_range, shown_direction, picture_path, intervals)
    low, high = score_range
    count = len(prompt_set.paths)
    note = "" if count == PUBLISHED_PROMPT_NUM else f" (the published model was trained with {PUBLISHED_PROMPT_NUM})"
    summary = (f"Scored {len(queries)} image(s) against {count} ISP(s){note}{pool_description(prompts)}"
               f"{', reversed' if reverse else ''} with `{model.checkpoint.shown}`: scores on [{low:g}, {high:g}], "
               f"**{shown_direction}**.")
    label = f"Scores on [{low:g}, {high:g}], {shown_direction}"
    return ScoredRequest(columns, rows, csv_path, picture_path, summary, label)

"""A page request's results: the scores on the user's range, a CSV and the placement picture, each
request in a folder of its own that is removed once the page has its copies."""
from __future__ import annotations

import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..data.prompts import PromptSet, unit_range_to_scores
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
    """The page's results: table rows, CSV and picture files, and a summary line."""

    rows: list[list]
    csv_path: Path
    picture_path: Path
    summary: str
    table_label: str


def score_page_request(
    registry: ModelRegistry, model: LoadedModel, prompt_set: PromptSet, reverse: bool, queries: Sequence[str],
    score_range: tuple[float, float], direction: str, output_dir: Path,
) -> ScoredRequest:
    used = prompt_set.reversed() if reverse else prompt_set
    scores = unit_range_to_scores(registry.score(model, used, queries), *score_range)
    prompt_scores = unit_range_to_scores(used.scores, *score_range)
    shown_direction = opposite(direction) if reverse else direction
    rows = [[Path(q).name, round(s, 6)] for q, s in zip(queries, scores)]
    csv_path, picture_path = output_dir / "promptiqa_scores.csv", output_dir / "placement.png"
    write_csv_atomic(csv_path, TABLE_HEADERS, ((Path(q).name, f"{s:.8f}") for q, s in zip(queries, scores)))
    save_placement_figure(used.paths, prompt_scores, queries, scores, score_range, shown_direction, picture_path)
    low, high = score_range
    count = len(prompt_set.paths)
    note = "" if count == PUBLISHED_PROMPT_NUM else f" (the published model was trained with {PUBLISHED_PROMPT_NUM})"
    summary = (f"Scored {len(queries)} image(s) against {count} ISP(s){note}"
               f"{', reversed' if reverse else ''} with `{model.checkpoint.shown}`: scores on [{low:g}, {high:g}], "
               f"**{shown_direction}**.")
    return ScoredRequest(rows, csv_path, picture_path, summary, f"Scores on [{low:g}, {high:g}], {shown_direction}")

"""The placement picture: the ISP images and the queries on one score axis."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.offsetbox import AnnotationBbox, OffsetImage

from ..data.image import read_image

THUMBNAIL_SIZE = 64
MAX_THUMBNAILS = 24  # per row of the picture; further images are marked on the axis only


def _thumbnail_row(ax, paths: Sequence[str], scores: Sequence[float], side: float, colour: str) -> None:
    """Mark the scores on the axis and hang thumbnails above (side=1) or below (side=-1) it."""
    ax.scatter(scores, np.zeros(len(scores)), marker="|", s=400, color=colour, zorder=3)
    by_score = sorted(zip(scores, paths))[:MAX_THUMBNAILS]
    for k, (score, path) in enumerate(by_score):
        height = side * (0.3 + 0.25 * (k % 3))  # three staggered heights keep neighbours apart
        box = AnnotationBbox(
            OffsetImage(read_image(path, THUMBNAIL_SIZE), zoom=0.55), (score, 0), xybox=(score, height),
            arrowprops={"arrowstyle": "-", "color": colour, "linewidth": 0.8},
            bboxprops={"edgecolor": colour, "linewidth": 1.2}, pad=0.1,
        )
        ax.add_artist(box)


def save_placement_figure(
    prompt_paths: Sequence[str], prompt_scores: Sequence[float], query_paths: Sequence[str],
    query_scores: Sequence[float], score_range: tuple[float, float], direction: str, path: Path,
    query_intervals: tuple[Sequence[float], Sequence[float]] | None = None,
) -> None:
    """The ISP images and the queries on one score axis (prompts above, queries below), as a PNG; each
    query's interval (lows, highs), when given, as a horizontal bar through its marker."""
    low, high = score_range
    margin = 0.06 * (high - low)
    fig = Figure(figsize=(8, 4.5), dpi=100)
    ax = fig.add_subplot()
    ax.axhline(0, color="0.7", linewidth=1)
    _thumbnail_row(ax, prompt_paths, prompt_scores, 1, "tab:blue")
    _thumbnail_row(ax, query_paths, query_scores, -1, "tab:red")
    if query_intervals is not None:
        scores, (lows, highs) = np.asarray(query_scores), map(np.asarray, query_intervals)
        ax.errorbar(scores, np.zeros(len(scores)), xerr=[scores - lows, highs - scores], fmt="none",
                    ecolor="tab:red", elinewidth=2, capsize=6, alpha=0.7, zorder=2)
    ax.set(xlim=(low - margin, high + margin), ylim=(-1.2, 1.2), xlabel=f"score ({direction})")
    ax.set_yticks([0.6, -0.6], ["prompts (ISPs)", "queries"])
    for spine in ("left", "right", "top"):
        ax.spines[spine].set_visible(False)
    fig.tight_layout()
    fig.savefig(path)

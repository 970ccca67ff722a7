"""Prompt pools: more labelled images (ISPs) than one prompt set holds, used three ways
(docs/prompt-pools.md):

- an **ensemble**: K sets of `set_size` ISPs drawn from the pool, stratified over the scores; each
  query's image features are computed once and scored under every set (only the small head runs K
  times); the score is the mean, the **spread** the standard deviation over the sets;
- a **calibrated interval**: split-conformal, normalised by the spread, calibrated on the pool itself
  by scoring each pool image with sets that leave it out;
- **prompt selection**: the set of K ISPs that best predicts the rest of the pool.

Everything here works on image features and prompt vectors already computed, so it costs no image
pass; callers (the Scorer, the pool evaluation) compute those.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..utils.errors import UserError
from ..utils.stats import correlations
from .promptiqa import PromptIQA

ENSEMBLE_SETS = 5  # K: sets in an ensemble unless told otherwise
MIN_CALIBRATION_POOL = 20  # ISPs below which a pool is too small to calibrate intervals on
SPREAD_FLOOR = 0.1  # the normaliser is spread + SPREAD_FLOOR x the pool's mean spread (never divides by 0)
_ROWS_PER_CALL = 4096  # (query, set) rows per head call: bounds the memory of big pools


def draw_sets(scores: Sequence[float], set_size: int, count: int, seed: int,
              leave_out: int | None = None) -> np.ndarray:
    """`count` prompt sets of `set_size` pool indices, stratified over the score range: the pool, sorted
    by score, is cut into `set_size` strata of (nearly) equal size and every set takes one ISP from each
    stratum, cycling through a seeded permutation of the stratum, so the sets differ as much as the pool
    allows and each spans the whole range. `leave_out` excludes one index (calibration). (count, set_size).
    """
    candidates = [i for i in range(len(scores)) if i != leave_out]
    if not 1 <= set_size <= len(candidates):
        raise UserError(f"a pool of {len(candidates)} ISPs cannot make sets of {set_size}; give a bigger pool "
                        f"or a smaller set size (1 to {len(candidates)})")
    if count < 1:
        raise UserError(f"an ensemble needs at least one set, got {count}")
    by_score = sorted(candidates, key=lambda i: (scores[i], i))
    rng = np.random.default_rng(seed)
    strata = [rng.permutation(stratum) for stratum in np.array_split(np.asarray(by_score), set_size)]
    return np.array([[stratum[k % len(stratum)] for stratum in strata] for k in range(count)], dtype=np.int64)


def score_sets(model: PromptIQA, features: torch.Tensor, vectors: torch.Tensor, sets: torch.Tensor) -> torch.Tensor:
    """Query features (B, 128) under each prompt set: `sets` (K, m) indexes `vectors` (n, 128). Each set's
    prompts are fused once; the head then scores all (set, query) rows. (K, B)."""
    fused = model.fuse_prompts(vectors[sets])  # (K, m, 128)
    count, batch = fused.shape[0], features.shape[0]
    rows_features = features.unsqueeze(0).expand(count, -1, -1).reshape(count * batch, -1)
    rows_prompts = fused.unsqueeze(1).expand(-1, batch, -1, -1).reshape(count * batch, *fused.shape[1:])
    scores = [model.score_fused(rows_features[s : s + _ROWS_PER_CALL], rows_prompts[s : s + _ROWS_PER_CALL])
              for s in range(0, count * batch, _ROWS_PER_CALL)]
    return torch.cat(scores).view(count, batch)


def score_rows(model: PromptIQA, features: torch.Tensor, vectors: torch.Tensor, sets: torch.Tensor) -> torch.Tensor:
    """Row r of `features` (R, 128) under its own set `sets[r]` (R, m) of `vectors`. (R,)."""
    scores = []
    for start in range(0, len(features), _ROWS_PER_CALL):
        rows = slice(start, start + _ROWS_PER_CALL)
        scores.append(model.score_fused(features[rows], model.fuse_prompts(vectors[sets[rows]])))
    return torch.cat(scores)


@dataclass(frozen=True)
class Calibration:
    """Split-conformal calibration on a pool: each pool image's nonconformity |y - mean| / (spread + floor),
    its mean and spread from an ensemble of sets that leave it out."""

    residuals: np.ndarray  # sorted ascending
    floor: float

    @classmethod
    def fit(cls, labels: torch.Tensor, mean: torch.Tensor, spread: torch.Tensor) -> "Calibration":
        """From the pool's labels and the leave-one-out ensemble's mean and spread, (n,) each."""
        floor = max(SPREAD_FLOOR * float(spread.mean()), 1e-6)
        residuals = ((labels.float() - mean.float()).abs() / (spread.float() + floor)).cpu().numpy()
        return cls(np.sort(residuals), floor)

    def supports(self, level: float) -> bool:
        """Whether the pool is big enough for `level`: ceil((n + 1) level) <= n."""
        return math.ceil((len(self.residuals) + 1) * level) <= len(self.residuals)

    def check_level(self, level: float) -> None:
        """A level the pool can calibrate: in (0, 1), and supported by its size."""
        n = len(self.residuals)
        if not 0 < level < 1:
            raise UserError(f"interval level {level:g}: give a coverage between 0 and 1, e.g. 0.9")
        if not self.supports(level):
            needed = math.ceil(level / (1 - level))
            raise UserError(f"a {level:g} interval needs a pool of at least {needed} ISPs to calibrate on "
                            f"(this one has {n}); lower the level or label more images")

    def half_width(self, spread: torch.Tensor, level: float) -> torch.Tensor:
        """Half the interval's width for each spread: the conformal quantile times the normaliser."""
        self.check_level(level)
        quantile = float(self.residuals[math.ceil((len(self.residuals) + 1) * level) - 1])
        return quantile * (spread + self.floor)

    def bounds(self, mean: torch.Tensor, spread: torch.Tensor, level: float) -> tuple[torch.Tensor, torch.Tensor]:
        """(low, high) of each interval, clipped to [0, 1] (the scores' range, so no coverage is lost)."""
        half = self.half_width(spread, level)
        return (mean - half).clamp(0, 1), (mean + half).clamp(0, 1)


def check_pool_for_intervals(size: int) -> None:
    if size < MIN_CALIBRATION_POOL:
        raise UserError(f"intervals are calibrated on the prompt pool itself, scoring each ISP with sets that "
                        f"leave it out: give at least {MIN_CALIBRATION_POOL} ISPs (this pool has {size})")


def calibrate(model: PromptIQA, features: torch.Tensor, vectors: torch.Tensor, scores: Sequence[float],
              set_size: int, count: int, seed: int) -> Calibration:
    """Score every pool image under `count` sets drawn from the rest of the pool (the draw a query gets,
    less that image) and keep the nonconformity of its label. `features` and `vectors` are the pool's (n, 128)."""
    check_pool_for_intervals(len(scores))
    sets = torch.as_tensor(np.concatenate([draw_sets(scores, set_size, count, seed, leave_out=i)
                                           for i in range(len(scores))]), device=vectors.device)
    rows = features.repeat_interleave(count, dim=0)
    per_set = score_rows(model, rows, vectors, sets).float().view(len(scores), count)
    labels = torch.as_tensor(scores, dtype=torch.float32, device=per_set.device)
    return Calibration.fit(labels, per_set.mean(dim=1), per_set.std(dim=1, correction=0))


@dataclass(frozen=True)
class EnsembleScores:
    """Scores of B queries under an ensemble: `mean` (the score) and `spread` (std over the sets), (B,)
    each, with `low`/`high` when an interval was asked for (clipped to [0, 1], the scores' range)."""

    mean: torch.Tensor
    spread: torch.Tensor
    low: torch.Tensor | None = None
    high: torch.Tensor | None = None

    def columns(self) -> dict[str, torch.Tensor]:
        """{"score", "spread"[, "low", "high"]}: the columns a scored image gets."""
        bounds = {} if self.low is None else {"low": self.low, "high": self.high}
        return {"score": self.mean, "spread": self.spread, **bounds}


@dataclass(frozen=True)
class PromptEnsemble:
    """A pool's prompt vectors (n, 128) with the sets drawn from it (K, m), and, for intervals, the
    pool's calibration and the interval level."""

    vectors: torch.Tensor
    sets: torch.Tensor
    calibration: Calibration | None = None
    level: float | None = None

    def score(self, model: PromptIQA, features: torch.Tensor) -> EnsembleScores:
        per_set = score_sets(model, features, self.vectors, self.sets).float()
        mean, spread = per_set.mean(dim=0), per_set.std(dim=0, correction=0)
        if self.calibration is None or self.level is None:
            return EnsembleScores(mean, spread)
        return EnsembleScores(mean, spread, *self.calibration.bounds(mean, spread, self.level))


def build_ensemble(model: PromptIQA, features: torch.Tensor | None, vectors: torch.Tensor, scores: Sequence[float],
                   set_size: int, count: int = ENSEMBLE_SETS, seed: int = 0,
                   level: float | None = None) -> PromptEnsemble:
    """The ensemble of `count` sets of `set_size` drawn from a pool (its vectors and scores on [0, 1]);
    with `level`, calibrated from the pool's image features for intervals of that coverage."""
    sets = torch.as_tensor(draw_sets(scores, set_size, count, seed), device=vectors.device)
    if level is None:
        return PromptEnsemble(vectors, sets)
    if features is None:
        raise ValueError("build_ensemble: calibrating an interval needs the pool's image features")
    calibration = calibrate(model, features, vectors, scores, set_size, count, seed)
    calibration.check_level(level)
    return PromptEnsemble(vectors, sets, calibration, level)


def _objective(predictions: np.ndarray, labels: np.ndarray) -> float:
    """What selection maximises: SRCC + PLCC on the held-out pool images (training's model choice)."""
    srcc, plcc = correlations(predictions, labels)
    return -math.inf if math.isnan(srcc) else srcc + plcc


def select_prompts(model: PromptIQA, features: torch.Tensor, vectors: torch.Tensor, scores: Sequence[float],
                   start: Sequence[int], passes: int = 2) -> list[int]:
    """The set of len(start) pool ISPs that best predicts the rest of the pool, by swaps from `start`.

    Each pass tries, for every ISP of the set, the pool ISPs that lie between its neighbours in the set's
    score order (so the set keeps spanning the range, as the published evenly spaced choice does, and
    the search stays small): the pool images outside both the current set and the candidate are scored
    under the current set and under the swapped one, and the swap that raises SRCC + PLCC on them the
    most is kept (none if none raises it). SRCC + PLCC is what training chooses its best epoch by.
    """
    labels = np.asarray(scores, dtype=np.float64)
    chosen = list(start)
    if len(set(chosen)) != len(chosen) or len(chosen) >= len(labels):
        raise UserError(f"selecting {len(chosen)} prompts needs a pool of more than {len(chosen)} distinct ISPs "
                        f"(this one has {len(labels)})")
    rank = np.empty(len(labels), dtype=np.int64)
    rank[np.argsort(labels, kind="stable")] = np.arange(len(labels))
    for _ in range(passes):
        changed = False
        for position in range(len(chosen)):
            candidates = _neighbourhood(chosen, position, rank)
            if not candidates:
                continue
            outside = [i for i in range(len(labels)) if i not in chosen]
            trials = [chosen[:position] + [j] + chosen[position + 1 :] for j in candidates]
            sets = torch.as_tensor([chosen, *trials], device=vectors.device)
            predictions = score_sets(model, features[outside], vectors, sets).float().cpu().numpy()
            held_out = labels[outside]
            gains = []
            for row, j in enumerate(candidates, start=1):
                kept = [k for k, i in enumerate(outside) if i != j]  # j is a prompt in the trial
                gains.append(_objective(predictions[row][kept], held_out[kept])
                             - _objective(predictions[0][kept], held_out[kept]))
            best = int(np.argmax(gains))
            if gains[best] > 0:
                chosen[position] = candidates[best]
                changed = True
        if not changed:
            break
    return chosen


def _neighbourhood(chosen: list[int], position: int, rank: np.ndarray) -> list[int]:
    """Pool indices outside `chosen` whose score rank lies strictly between the ranks of the chosen ISPs
    just below and just above chosen[position] (the ends of the range for the lowest and highest)."""
    own = rank[chosen[position]]
    others = rank[[c for k, c in enumerate(chosen) if k != position]]
    below = max((r for r in others if r < own), default=-1)
    above = min((r for r in others if r > own), default=len(rank))
    taken = set(chosen)
    return [i for i in range(len(rank)) if below < rank[i] < above and i not in taken]

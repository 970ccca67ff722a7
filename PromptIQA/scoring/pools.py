"""Prompt pools in scoring: a prompt file or saved set of any size, used as one set, as an ensemble of
sets (with a calibrated interval), or cut down to the ISPs that best predict the rest
(docs/prompt-pools.md; the arithmetic is in models/prompt_pool.py)."""
from __future__ import annotations

from dataclasses import replace

import torch

from ..data.groups import select_prompts as published_choice
from ..data.prompts import PromptSet
from ..models import PromptIQA
from ..models.prompt_pool import (
    ENSEMBLE_SETS,
    PromptEnsemble,
    build_ensemble,
    check_pool_for_intervals,
    select_prompts,
)
from ..utils.constants import DEFAULT_SEED
from ..utils.errors import UserError
from .saved_prompts import SavedPrompts

_NO_FEATURES = ("was saved without the ISPs' image features (a version 2 file), which an interval is calibrated "
                "from; save it again from the prompt file")


def pool_prompts(model: PromptIQA, prompts: SavedPrompts, sets: int | None = None, set_size: int | None = None,
                 level: float | None = None, seed: int = DEFAULT_SEED) -> torch.Tensor | PromptEnsemble:
    """The prompts to score with: one set of every ISP (vectors (n, 128)) when `sets` is 1, else an
    ensemble of `sets` sets of `set_size` (default: the network's prompt number), calibrated for
    intervals at `level` when given. `sets=None` is one set, as the published code uses a prompt file
    (measured on the demo, an ensemble ranks no better: docs/prompt-pools.md), or, for an interval,
    ENSEMBLE_SETS sets."""
    size = len(prompts.vectors)
    set_size = set_size or model.prompt_num
    if level is not None:
        check_pool_for_intervals(size)
    if sets is None:
        sets = ENSEMBLE_SETS if level is not None else 1
    if sets < 1:
        raise UserError(f"an ensemble of {sets} sets: give 1 (one set of all the ISPs) or more")
    if level is not None and sets == 1:
        raise UserError("an interval is normalised by the spread of an ensemble: use two or more sets")
    if sets == 1:
        return prompts.vectors
    if level is not None and prompts.features is None:
        raise UserError(f"this prompt set {_NO_FEATURES}")
    with torch.no_grad():
        return build_ensemble(model, prompts.features, prompts.vectors, prompts.prompt_set.scores, min(set_size, size),
                              sets, seed, level)


def select_from_pool(model: PromptIQA, prompts: SavedPrompts, count: int) -> SavedPrompts:
    """The `count` ISPs of the pool that best predict the rest (models.prompt_pool.select_prompts),
    starting from the published evenly spaced choice, as a prompt set of their own."""
    if prompts.features is None:
        raise UserError(f"selecting prompts needs the ISPs' image features; this prompt set {_NO_FEATURES}")
    scores = prompts.prompt_set.scores
    if not 1 <= count < len(scores):
        raise UserError(f"from a pool of {len(scores)} ISPs, select 1 to {len(scores) - 1}, so that some of the "
                        "pool is left to judge them on")
    with torch.no_grad():
        chosen = select_prompts(model, prompts.features, prompts.vectors, scores,
                                published_choice(list(scores), count, "fixed"))
    chosen.sort(key=lambda i: (scores[i], i))
    index = torch.as_tensor(chosen, device=prompts.vectors.device)
    subset = PromptSet(tuple(prompts.prompt_set.paths[i] for i in chosen), tuple(scores[i] for i in chosen))
    return replace(prompts, vectors=prompts.vectors[index], features=prompts.features[index], prompt_set=subset)

"""The page's texts: the introduction, the interval's explanation, the model line, and what to do
without a model."""
from __future__ import annotations

from ..models.checkpoint import DEFAULT_CHECKPOINT
from ..models.prompt_pool import ENSEMBLE_SETS, MIN_CALIBRATION_POOL
from ..utils.constants import PUBLISHED_PROMPT_NUM
from ..utils.hub import HF_PREFIX, PUBLISHED_REPO

HIGHER, LOWER = "higher is better", "lower is better"
TABLE_HEADERS = ["image", "score"]

INTRODUCTION = f"""# PromptIQA: image quality under your requirement

Give a few **image-score pairs (ISPs)**: example images with the scores your requirement gives them.
PromptIQA scores the query images the same way. Any number of ISPs works (1 or more); the published
model was trained with **{PUBLISHED_PROMPT_NUM}**.

Scores may be on any range **[low, high]**; they are mapped to [0, 1] as (s − low) / (high − low) and
the predictions are mapped back. The direction is kept as given: with lower-is-better scores (e.g.
DMOS) the prompts tell the model so, and the predictions are lower-is-better too. The
"higher / lower is better" choice only labels the output. *Reverse prompts* uses 1 − s for every ISP
(on [0, 1]), i.e. the opposite requirement, and flips that label.
"""

INTERVAL_HELP = f"""With twice as many ISPs as the model was trained with or more (and always with an
interval), each query is scored by an **ensemble** of {ENSEMBLE_SETS} prompt sets of that size drawn from the
ISPs: the score is their mean, the **spread** the standard deviation of the {ENSEMBLE_SETS} sets' scores. An
**interval** [low, high] needs at least {MIN_CALIBRATION_POOL} ISPs: it is split-conformal, calibrated on the
ISPs themselves by scoring each with sets that leave it out, and covers the true score for about the
level's fraction of images (0.9: nine in ten).
"""

HOW_TO_GET_A_CHECKPOINT = f"""**No model is loaded.** Whoever runs this server starts it with a checkpoint:

- the published weights by name: `python app.py --checkpoint {HF_PREFIX}{PUBLISHED_REPO}` (downloaded once
  into the Hugging Face cache), or the published `{DEFAULT_CHECKPOINT.name}` placed in the package's
  `checkpoints/` folder (the default `--checkpoint`);
- a small model trained on the built-in demo data: `python train.py --demo` (minutes on a CPU), then
  `python app.py --checkpoint runs/demo/best.pth.tar`.
"""

LOAD_FROM_FOLDER = ("Checkpoints in the folder this server allows (`--allow-load`). The one you load is used "
                    "for your page only; other visitors keep theirs.")


def opposite(direction: str) -> str:
    return LOWER if direction == HIGHER else HIGHER


def model_line(description: str) -> str:
    return f"**Model:** {description}"


def no_model(reason: str, can_load: bool) -> str:
    """The page's model line without a model: how to get one, why the server has none, and whether this
    page may load one."""
    why = f"\n\n*Why:* {reason}" if reason else ""
    load = "\n\nOr choose a checkpoint under *Load a checkpoint* below." if can_load else ""
    return HOW_TO_GET_A_CHECKPOINT + why + load

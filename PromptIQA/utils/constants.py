"""Constants more than one part of the package uses: where things live, and the published defaults."""
from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parents[1]
CHECKPOINT_DIR = PACKAGE_DIR / "checkpoints"  # the published checkpoint and ImageNet weights (not tracked)
EXAMPLES_DIR = PACKAGE_DIR.parent / "Examples"  # the published prompt sets, in a checkout
DEFAULT_SEED = 2024  # the published training seed: it fixes the train/test split and the evaluation prompts
PUBLISHED_PROMPT_NUM = 10  # ISPs per query the published model was trained with (group size - 1)
MIN_IMG_SIZE = 32  # smaller images leave the CNN backbones' last stages without pixels

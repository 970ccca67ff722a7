"""Parity with the published code: the made-up checkpoint in the published layout scores Example1
as the published code does (tools/make_parity_checkpoint.py and docs/parity.md tell how that score
was produced).

Builds the ~1.3 GB checkpoint in a temp folder and runs the full network on CPU.
"""
from __future__ import annotations

import pytest

from PromptIQA.models.checkpoint import load_model
from tools.make_parity_checkpoint import PUBLISHED_SCORE, TOLERANCE, build_checkpoint, score_example1


@pytest.mark.slow
def test_made_up_checkpoint_scores_example1_like_the_published_code(tmp_path):
    checkpoint = build_checkpoint(tmp_path / "best_model.pth.tar")
    model = load_model(checkpoint, device="cpu")  # strict load of the published layout
    assert model.config.backbone == "vit_base_patch8_224" and model.prompt_num == 10
    score = score_example1(model)
    assert abs(score - PUBLISHED_SCORE) <= TOLERANCE, score

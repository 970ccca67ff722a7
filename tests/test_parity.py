"""Parity with the published code: a made-up checkpoint in the published layout scores Example1 as
the published code does (0.37133264541625977 on CPU, float32).

Builds the ~1.3 GB checkpoint in a temp folder and runs the full network on CPU (about 1-2 minutes).
"""
from __future__ import annotations

from conftest import EXAMPLES
from PromptIQA.checkpoint import load_model
from PromptIQA.data.prompts import read_prompt_file
from PromptIQA.inference import Scorer
from synthetic_checkpoint import write_made_up_checkpoint

PUBLISHED_SCORE = 0.37133264541625977


def test_made_up_checkpoint_scores_example1_like_the_published_code(tmp_path):
    checkpoint = write_made_up_checkpoint(tmp_path / "best_model.pth.tar")
    model = load_model(checkpoint, device="cpu")  # strict load of the published layout
    assert model.config.backbone == "vit_base_patch8_224" and model.prompt_num == 10
    scorer = Scorer(model, batch_size=10)
    prompts = scorer.encode_prompt_set(read_prompt_file(EXAMPLES / "Example1" / "prompts.json"))
    score = scorer.score_images([str(EXAMPLES / "Example1" / "cactus.png")], prompts)[0]
    assert abs(score - PUBLISHED_SCORE) <= 1e-4, score

"""Parity with the published code: the made-up checkpoint of spec/parity.md scores Example1 as it does.

Builds the ~1.3 GB checkpoint in a temp folder and runs the full network on CPU (about 1-2 minutes).
"""
from __future__ import annotations

import importlib.util

import pytest
import torch

from conftest import EXAMPLES, ROOT
from PromptIQA.checkpoint import load_model
from PromptIQA.data.prompts import read_prompt_file
from PromptIQA.inference import Scorer

SPEC = ROOT.parent / "shared" / "spec"
PUBLISHED_SCORE = 0.37133264541625977


@pytest.mark.skipif(not (SPEC / "synth_ckpt.py").is_file(), reason="spec folder not beside the repository")
def test_made_up_checkpoint_scores_example1_like_the_published_code(tmp_path):
    spec = importlib.util.spec_from_file_location("synth_ckpt", SPEC / "synth_ckpt.py")
    synth = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(synth)
    checkpoint = synth.write_checkpoint(tmp_path / "best_model.pth.tar", SPEC / "official_keys.json")

    model = load_model(checkpoint, device="cpu")  # strict load of the published layout
    assert model.config.backbone == "vit_base_patch8_224" and model.prompt_num == 10
    scorer = Scorer(model, batch_size=10)
    prompts = scorer.encode_prompt_set(read_prompt_file(EXAMPLES / "Example1" / "prompts.json"))
    with torch.inference_mode():
        score = scorer.score_images([str(EXAMPLES / "Example1" / "cactus.png")], prompts)[0]
    assert abs(score - PUBLISHED_SCORE) <= 1e-4, score

"""Scorer: prompt sets encoded once and cached, batching does not change scores."""
from __future__ import annotations

import copy
import os

import numpy as np
import pytest
import torch
from conftest import write_image

from PromptIQA.data import load_images
from PromptIQA.data.prompts import read_prompt_file
from PromptIQA.scoring.scorer import Scorer


@pytest.fixture
def scorer(tiny_model):
    return Scorer(tiny_model, batch_size=2, workers=2)


def test_prompt_set_is_encoded_once_and_reencoded_when_a_file_changes(scorer, prompt_dir, monkeypatch):
    prompt_set = read_prompt_file(prompt_dir / "prompts.json")
    first = scorer.encode_prompt_set(prompt_set)
    calls = []
    original = scorer.model.prompt_vectors
    monkeypatch.setattr(scorer.model, "prompt_vectors", lambda *a: calls.append(1) or original(*a))
    assert scorer.encode_prompt_set(prompt_set) is first and calls == []
    assert scorer.encode_prompt_set(prompt_set.reversed()) is not first and calls == [1]
    stat = os.stat(prompt_set.paths[0])
    os.utime(prompt_set.paths[0], ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    scorer.encode_prompt_set(prompt_set)
    assert calls == [1, 1]


def test_batch_size_and_input_kind_do_not_change_scores(scorer, prompt_dir, tmp_path):
    queries = [str(write_image(tmp_path / f"q{i}.png", seed=20 + i)) for i in range(5)]
    prompts = scorer.encode_prompt_set(read_prompt_file(prompt_dir / "prompts.json"))
    by_two = scorer.score_images(queries, prompts)
    scorer.batch_size = 5
    np.testing.assert_allclose(scorer.score_images(queries, prompts), by_two, atol=1e-6)
    np.testing.assert_allclose(scorer.score_images(load_images(queries), prompts), by_two, atol=1e-6)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_scores_match_cpu(tiny_model, prompt_dir):
    prompt_set = read_prompt_file(prompt_dir / "prompts.json")
    query = [str(prompt_dir / "query.jpg")]
    on_cpu = Scorer(tiny_model.cpu())
    expected = on_cpu.score_images(query, on_cpu.encode_prompt_set(prompt_set))
    on_gpu = Scorer(copy.deepcopy(tiny_model).cuda())
    np.testing.assert_allclose(on_gpu.score_images(query, on_gpu.encode_prompt_set(prompt_set)), expected, atol=1e-3)

"""Scorer: prompt sets encoded once and cached by content (bounded), batching does not change scores."""
from __future__ import annotations

import copy
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import write_image

from PromptIQA.data import load_images
from PromptIQA.data.prompts import PromptSet, read_prompt_file
from PromptIQA.scoring import scorer as scorer_module
from PromptIQA.scoring.scorer import Scorer
from PromptIQA.utils.lru import LRUCache


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
    os.utime(prompt_set.paths[0], ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # a touch changes nothing
    assert scorer.encode_prompt_set(prompt_set) is first and calls == [1]
    write_image(Path(prompt_set.paths[0]), seed=99)  # new content under the same name
    scorer.encode_prompt_set(prompt_set)
    assert calls == [1, 1]


def test_the_prompt_cache_is_bounded_and_keeps_the_recently_used(scorer, prompt_dir, monkeypatch):
    monkeypatch.setattr(scorer_module, "PROMPT_CACHE_SIZE", 3)
    small = Scorer(scorer.model, batch_size=4)
    prompt_set = read_prompt_file(prompt_dir / "prompts.json")
    sets = [PromptSet(prompt_set.paths, tuple(s * (i + 1) / 10 for s in prompt_set.scores)) for i in range(5)]
    first = small.encode_prompt_set(sets[0])
    for later in sets[1:]:
        small.encode_prompt_set(later)
        assert small.encode_prompt_set(sets[0]) is first  # in use, so never the one dropped
    assert len(small._prompt_cache) == 3


def test_lru_cache_drops_the_least_recently_used():
    cache = LRUCache(2)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1
    cache.put("c", 3)
    assert (cache.get("a"), cache.get("b"), cache.get("c"), len(cache)) == (1, None, 3, 2)


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

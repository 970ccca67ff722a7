"""The web app's request rules and model registry, without Gradio and without a server: request size
limits, score checks shared with prompt files, the bounded prompt cache, and what a page may load."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import ROOT, write_image

from PromptIQA.app import models as app_models
from PromptIQA.app.models import PROMPT_CACHE_SIZE, ModelRegistry, PromptCache, shown_name
from PromptIQA.app.requests import RequestLimits, prompt_set_from_pairs, read_uploaded_prompt_file
from PromptIQA.data.prompts import PromptSet
from PromptIQA.models import ModelConfig, PromptIQA
from PromptIQA.models.checkpoint import save_checkpoint
from PromptIQA.utils.errors import UserError

SMALL = ModelConfig(backbone="vit_tiny_patch16_224", img_size=64)


def small_checkpoint(path: Path, seed: int) -> Path:
    torch.manual_seed(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint({"model": PromptIQA(SMALL).state_dict(), "model_config": SMALL.to_dict()}, path)
    return path


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> Path:
    """A folder of three different small checkpoints (an allowed folder), and one outside it."""
    root = tmp_path_factory.mktemp("checkpoints")
    for seed, name in enumerate(["runs/a/best.pth.tar", "runs/b/best.pth.tar", "runs/c/last.pth.tar"]):
        small_checkpoint(root / name, seed)
    small_checkpoint(root / "private" / "secret.pth.tar", 9)
    (root / "runs" / "a" / "train.log").write_text("not a checkpoint")
    os.symlink(root / "private" / "secret.pth.tar", root / "runs" / "link.pth.tar")  # leads out of the folder
    return root


@pytest.fixture(scope="module")
def registry(checkpoints) -> ModelRegistry:
    models = ModelRegistry(torch.device("cpu"), allowed_folder=checkpoints / "runs")
    models.load_default(str(checkpoints / "runs" / "a" / "best.pth.tar"))
    return models


def test_request_rules_and_models_load_without_gradio():
    code = "import sys, PromptIQA.app.requests, PromptIQA.app.models; print('gradio' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def test_request_limits_count_images_and_header_pixels(tmp_path):
    small = [str(write_image(tmp_path / f"s{i}.png", seed=i, size=(10, 10))) for i in range(3)]
    big = str(write_image(tmp_path / "big.png", size=(100, 120)))
    RequestLimits(max_images=4, max_pixels=12_300).check([*small, big])
    with pytest.raises(UserError, match="4 images, more than the 3 one request may have"):
        RequestLimits(max_images=3).check([*small, big])
    with pytest.raises(UserError, match=re.escape("more than 0.0122 megapixels (the server's limit per request, "
                                                  "reached at big.png)")):
        RequestLimits(max_pixels=12_200).check([*small, big])


@pytest.mark.parametrize("score", ["true", "false"])
def test_json_true_and_false_are_not_scores(tmp_path, score):
    image = str(write_image(tmp_path / "p0.png"))
    (tmp_path / "prompts.json").write_text(f'{{"isp": [["p0.png", {score}]]}}')
    pairs = read_uploaded_prompt_file(str(tmp_path / "prompts.json"))
    with pytest.raises(UserError, match=f"prompt file prompts.json, ISP row 1 \\(p0.png\\): score {score.title()} "
                                        "is not a number"):
        prompt_set_from_pairs(pairs, [image], (0.0, 1.0), "prompt file prompts.json")


def test_an_upload_removed_from_the_server_is_named(tmp_path):
    image = write_image(tmp_path / "p0.png")
    image.unlink()
    with pytest.raises(UserError, match="upload of p0.png is no longer on the server"):
        prompt_set_from_pairs([("p0.png", 0.5)], [str(image)], (0.0, 1.0), "ISP table")


def encode_distinct_sets(cache: PromptCache, registry: ModelRegistry, image: str, count: int) -> list:
    return [cache.encode(registry.default, PromptSet((image,), (k / count,))) for k in range(count)]


def test_the_prompt_cache_is_bounded_and_the_only_copy(registry, tmp_path):
    image = str(write_image(tmp_path / "p.png", size=(24, 24)))
    cache = PromptCache(size=4)
    encoded = encode_distinct_sets(cache, registry, image, 10)
    assert len(cache) == 4
    assert cache.encode(registry.default, PromptSet((image,), (0.9,))) is encoded[-1]  # the most recent stay
    # the Scorer keeps nothing of its own: encoding the set again there is a new computation
    features, vectors = registry.default.scorer.encode_pool([image], (0.9,))
    assert vectors is not encoded[-1].vectors and torch.allclose(vectors, encoded[-1].vectors)
    assert features is not encoded[-1].features and torch.allclose(features, encoded[-1].features)


@pytest.mark.slow
def test_a_hundred_prompt_sets_leave_the_cache_size(registry, tmp_path):
    image = str(write_image(tmp_path / "p.png", size=(24, 24)))
    cache = PromptCache()
    encode_distinct_sets(cache, registry, image, 100)
    assert len(cache) == PROMPT_CACHE_SIZE


def test_the_cache_key_holds_the_checkpoint(registry, checkpoints, tmp_path):
    image = str(write_image(tmp_path / "p.png", size=(24, 24)))
    other = registry.model(registry.load_choice("b/best.pth.tar"))
    prompt_set = PromptSet((image,), (0.3,))
    assert not torch.equal(registry.prompts.encode(registry.default, prompt_set).vectors,
                           registry.prompts.encode(other, prompt_set).vectors)


def test_a_page_lists_and_loads_only_checkpoints_inside_the_allowed_folder(registry, checkpoints):
    assert registry.checkpoint_choices() == ["a/best.pth.tar", "b/best.pth.tar", "c/last.pth.tar"]
    refused = []
    for name in ["link.pth.tar", "../private/secret.pth.tar", str(checkpoints / "private" / "secret.pth.tar"),
                 "../private/missing.pth.tar", "/etc/shadow", "hf:Zevin2023/PromptIQA", "a/train.log", ""]:
        with pytest.raises(UserError) as error:
            registry.load_choice(name)
        refused.append(str(error.value))
    # the same answer whatever exists: nothing tells which files are on the server
    assert set(refused) == {"checkpoint: choose one of the files listed under 'Load a checkpoint'"}


def test_loading_changes_only_the_session_that_loads(registry, checkpoints):
    default = registry.model(None)
    session_b = registry.load_choice("b/best.pth.tar")
    assert registry.model(None) is default  # every other page and /score keep the start-up model
    assert registry.model(session_b).checkpoint.shown == "b/best.pth.tar"
    assert "`b/best.pth.tar`" in registry.status(session_b)
    assert "`" + shown_name(str(checkpoints / "runs" / "a" / "best.pth.tar")) + "`" in registry.status(None)
    assert str(checkpoints) not in registry.status(session_b) + registry.status(None)


def test_a_model_pushed_out_of_memory_is_read_again_unless_its_file_changed(registry, checkpoints, monkeypatch):
    monkeypatch.setattr(app_models, "MAX_LOADED_MODELS", 1)
    first = registry.load_choice("b/best.pth.tar")
    registry.load_choice("c/last.pth.tar")  # pushes b out
    assert registry.model(first).checkpoint == first  # read again
    registry.load_choice("c/last.pth.tar")
    small_checkpoint(checkpoints / "runs" / "b" / "best.pth.tar", 5)  # replaced on disk
    with pytest.raises(UserError, match="checkpoint b/best.pth.tar: the file changed"):
        registry.model(first)


def test_without_allow_load_a_page_loads_nothing(checkpoints):
    models = ModelRegistry(torch.device("cpu"))
    assert models.checkpoint_choices() == []
    with pytest.raises(UserError, match="does not load checkpoints from the page"):
        models.load_choice("a/best.pth.tar")
    with pytest.raises(UserError, match="no model is loaded"):
        models.model(None)
    assert "No model is loaded" in models.status(None) and "Load a checkpoint" not in models.status(None)


def test_a_missing_start_up_checkpoint_is_named_as_given(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    models = ModelRegistry(torch.device("cpu"))
    with pytest.raises(UserError, match="missing/best.pth.tar: file not found") as error:
        models.load_default(str(tmp_path / "missing" / "best.pth.tar"))
    assert str(tmp_path) not in str(error.value)
    assert json.dumps(shown_name("runs/demo/best.pth.tar")) == '"runs/demo/best.pth.tar"'

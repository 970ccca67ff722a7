"""`--pretrained imagenet` as the published code gets its backbone: a local file first, else timm's Hub
weights for the backbone, from huggingface_hub's cache (a cache the test builds; HF_HUB_OFFLINE=1)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import huggingface_hub.constants
import pytest
import timm
import torch
from conftest import ROOT
from hub_fixtures import hub_cache
from safetensors.torch import save_file
from training_fixtures import training_args, write_training_data

from PromptIQA.commands import train
from PromptIQA.commands.common import run_main
from PromptIQA.models import ModelConfig, PromptIQA
from PromptIQA.models.backbone import hub_weights_id, resolve_pretrained
from PromptIQA.utils.constants import CHECKPOINT_DIR

BACKBONE = "vit_tiny_patch16_224"
REPO = "timm/vit_tiny_patch16_224.augreg_in21k_ft_in1k"  # timm's default pretrained tag for it


@pytest.fixture(scope="module")
def hub_weights(tmp_path_factory) -> tuple:
    """A hub cache holding 'ImageNet' weights for BACKBONE (random, but known) as timm publishes them."""
    root = tmp_path_factory.mktemp("hub")
    torch.manual_seed(11)
    state = timm.create_model(BACKBONE, pretrained=False).state_dict()  # with its classifier, as published
    weights = root / "model.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(weights))
    cache = root / "cache"
    hub_cache(cache, REPO, {"model.safetensors": weights})
    return cache, state


@pytest.fixture
def offline_hub(hub_weights, monkeypatch):
    """This process reads the built cache only (huggingface_hub reads its settings at import)."""
    cache, state = hub_weights
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    return state


def test_the_hub_repository_is_timms_default_pretrained_tag():
    assert hub_weights_id(BACKBONE) == REPO
    assert hub_weights_id("vit_base_patch8_224") == "timm/vit_base_patch8_224.augreg2_in21k_ft_in1k"


def test_imagenet_weights_come_from_the_hub_cache(offline_hub):
    assert not any(CHECKPOINT_DIR.glob(f"{BACKBONE}.*"))  # no local file: the hub is the source
    weights = resolve_pretrained("imagenet", BACKBONE)
    assert weights.source == f"hf-hub:{REPO}" and weights.path.name == "model.safetensors"
    model = PromptIQA(ModelConfig(backbone=BACKBONE, img_size=224), "imagenet")
    for key in ("patch_embed.proj.weight", "blocks.0.attn.qkv.weight", "blocks.11.mlp.fc2.bias", "pos_embed"):
        assert torch.equal(model.vit.state_dict()[key], offline_hub[key]), key


def test_a_local_file_comes_before_the_hub(offline_hub, tmp_path):
    torch.save({"pos_embed": torch.zeros(1)}, tmp_path / "mine.pth")
    assert resolve_pretrained(tmp_path / "mine.pth", BACKBONE).source == str(tmp_path / "mine.pth")


@pytest.mark.slow  # a short training run
def test_training_records_the_hub_weights_it_used(offline_hub, tmp_path):
    data, run = write_training_data(tmp_path / "data", count=12), tmp_path / "run"
    assert run_main(train.main, training_args(data, run, "--pretrained", "imagenet", "--epochs", "1")) == 0
    environment = json.loads((run / "environment.json").read_text())
    assert environment["pretrained_weights"] == f"hf-hub:{REPO}"
    assert f"backbone weights: hf-hub:{REPO}" in (run / "train.log").read_text()


def test_offline_without_cached_weights_says_both_ways_to_provide_them(tmp_path):
    """A real process with HF_HUB_OFFLINE=1 and an empty cache: exit 2 in the pre-flight check, before
    any dataset work, and nothing written."""
    data, run, cache = write_training_data(tmp_path / "data", count=12), tmp_path / "run", tmp_path / "hub"
    cache.mkdir()
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    env = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    argv = training_args(data, run, "--pretrained", "imagenet", "--epochs", "1")
    proc = subprocess.run([sys.executable, "-m", "PromptIQA.commands.train", *argv],
                          capture_output=True, text=True, cwd=ROOT, env=env)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    for said in (f"--pretrained imagenet: cannot get model.safetensors from {REPO}", "HF_HUB_OFFLINE is set",
                 f"{CHECKPOINT_DIR}/{BACKBONE}.pth", "--pretrained PATH", "--pretrained none"):
        assert said in proc.stderr, said
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


def test_missing_weights_are_reported_before_any_dataset_is_read(tmp_path):
    """The pre-flight check of the network comes before the label files are read (or the demo built):
    a dataset that does not exist is not what an offline run without weights stops on."""
    cache = tmp_path / "hub"
    cache.mkdir()
    env = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    argv = ["--dataset", "no_such_dataset", "--backbone", BACKBONE, "--pretrained", "imagenet",
            "--save_path", str(tmp_path / "run"), "--device", "cpu"]
    proc = subprocess.run([sys.executable, "-m", "PromptIQA.commands.train", *argv],
                          capture_output=True, text=True, cwd=ROOT, env=env)
    assert proc.returncode == 2 and "--pretrained imagenet: cannot get" in proc.stderr, proc.stderr
    assert "no_such_dataset" not in proc.stderr and not (tmp_path / "run").exists()

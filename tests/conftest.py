"""Shared fixtures: a tiny network, its checkpoint, and small real image files."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from PromptIQA.models import ModelConfig, PromptIQA
from PromptIQA.models.checkpoint import save_checkpoint

ROOT = Path(__file__).resolve().parents[1]
TINY = ModelConfig(backbone="vit_tiny_patch16_224", img_size=224)
EXAMPLES = ROOT / "Examples"


def write_image(path: Path, seed: int = 0, size: tuple[int, int] = (40, 56)) -> Path:
    """A small smooth-plus-noise colour image, written in the format its suffix names."""
    rng = np.random.default_rng(seed)
    h, w = size
    ramp = np.linspace(0, 255, w)[None, :, None] * rng.uniform(0.3, 1.0, size=(1, 1, 3))
    img = np.clip(ramp + rng.normal(0, 20, size=(h, w, 3)), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), img)
    return path


@pytest.fixture(scope="session")
def tiny_model() -> PromptIQA:
    torch.manual_seed(0)
    return PromptIQA(TINY).eval()


@pytest.fixture(scope="session")
def tiny_checkpoint(tiny_model, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pth.tar"
    save_checkpoint({"model": tiny_model.state_dict(), "model_config": TINY.to_dict(), "prompt_num": 4}, path)
    return path


@pytest.fixture
def prompt_dir(tmp_path) -> Path:
    """Four ISP images and a prompts.json referring to them with relative paths."""
    for i in range(4):
        write_image(tmp_path / "isp" / f"p{i}.png", seed=i)
    write_image(tmp_path / "query.jpg", seed=10)
    rows = ",".join(f'["isp/p{i}.png", {0.2 * i + 0.1:.1f}]' for i in range(4))
    (tmp_path / "prompts.json").write_text(f'{{"isp": [{rows}], "remark": "made up"}}')
    return tmp_path

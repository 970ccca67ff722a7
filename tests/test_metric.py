"""PromptIQA.create_metric: test.py's scores on paths and PIL images, gradients on tensors, torch.hub."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import ROOT, write_image
from PIL import Image

import PromptIQA
from PromptIQA.commands import score as score_cli
from PromptIQA.commands.common import run_main


@pytest.fixture
def metric(tiny_checkpoint, prompt_dir):
    return PromptIQA.create_metric(checkpoint=tiny_checkpoint, prompts=prompt_dir / "prompts.json", device="cpu")


def cli_scores(argv, capsys) -> list[float]:
    assert run_main(score_cli.main, [str(a) for a in argv]) == 0
    return [float(line.split("\t")[1]) for line in capsys.readouterr().out.strip().splitlines()]


def test_metric_on_paths_equals_test_py(metric, tiny_checkpoint, prompt_dir, capsys):
    images = [prompt_dir / "query.jpg", write_image(prompt_dir / "second.png", seed=5)]
    expected = cli_scores(["--checkpoint", tiny_checkpoint, "--prompts", prompt_dir / "prompts.json",
                           "--device", "cpu", "--images", *images], capsys)
    scores = metric([str(p) for p in images])
    assert scores.shape == (2,) and [f"{s:.8f}" for s in scores.tolist()] == [f"{s:.8f}" for s in expected]
    assert metric.metric_mode == "NR" and metric.lower_better is False and metric.score_range == (0.0, 1.0)


def test_pil_image_of_a_png_scores_as_its_path(metric, prompt_dir):
    path = write_image(prompt_dir / "photo.png", seed=7)
    with Image.open(path) as image:
        assert metric(image).item() == metric(str(path)).item()


def test_tensor_input_agrees_with_the_path_up_to_resizing(metric, prompt_dir):
    path = write_image(prompt_dir / "big.png", seed=3, size=(300, 400))
    rgb = torch.from_numpy(np.array(Image.open(path).convert("RGB"))).permute(2, 0, 1).float() / 255
    from_tensor, from_path = metric(rgb.unsqueeze(0)).item(), metric(str(path)).item()
    assert from_tensor == pytest.approx(from_path, abs=0.02)
    assert not metric(rgb.unsqueeze(0)).requires_grad


def test_as_loss_gradient_reaches_the_input(tiny_checkpoint, prompt_dir):
    loss_metric = PromptIQA.create_metric(checkpoint=tiny_checkpoint, prompts=prompt_dir / "prompts.json",
                                          device="cpu", as_loss=True)
    image = torch.rand(2, 3, 48, 64, requires_grad=True)
    loss_metric(image).sum().backward()
    assert image.grad is not None and image.grad.abs().sum() > 0 and torch.isfinite(image.grad).all()


def test_with_prompts_switches_the_requirement_and_scale(metric, prompt_dir):
    rows = json.loads((prompt_dir / "prompts.json").read_text())["isp"]
    (prompt_dir / "dmos.json").write_text(json.dumps({"isp": [[p, 20 + 80 * s] for p, s in rows]}))
    (prompt_dir / "rev.json").write_text(json.dumps({"isp": [[p, 1 - s] for p, s in rows]}))
    query = str(prompt_dir / "query.jpg")
    ranged = metric.with_prompts(prompt_dir / "dmos.json", score_range=(20, 100), lower_better=True)
    assert ranged.lower_better and ranged.score_range == (20, 100)
    assert ranged(query).item() == pytest.approx(20 + 80 * metric(query).item(), abs=1e-4)
    assert metric.with_prompts(prompt_dir / "rev.json")(query).item() != metric(query).item()


def test_saved_prompt_set_gives_the_same_metric(metric, tiny_checkpoint, prompt_dir, tmp_path, capsys):
    saved = tmp_path / "set.pt"
    assert run_main(score_cli.main, ["--checkpoint", str(tiny_checkpoint), "--prompts",
                                     str(prompt_dir / "prompts.json"), "--save-prompts", str(saved)]) == 0
    query = str(prompt_dir / "query.jpg")
    assert metric.with_prompts(saved)(query).item() == metric(query).item()


def test_torch_hub_load_returns_the_metric(tiny_checkpoint, prompt_dir):
    hub_metric = torch.hub.load(str(ROOT), "promptiqa", checkpoint=tiny_checkpoint,
                                prompts=prompt_dir / "prompts.json", device="cpu", source="local")
    assert isinstance(hub_metric, PromptIQA.PromptIQAMetric)
    query = str(prompt_dir / "query.jpg")
    direct = PromptIQA.create_metric(checkpoint=tiny_checkpoint, prompts=prompt_dir / "prompts.json", device="cpu")
    assert hub_metric(query).item() == direct(query).item()

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


def test_a_parents_train_mode_leaves_the_metric_network_in_eval(tiny_checkpoint, prompt_dir):
    metric = PromptIQA.create_metric(checkpoint=tiny_checkpoint, prompts=prompt_dir / "prompts.json", device="cpu",
                                     as_loss=True)
    parent = torch.nn.ModuleDict({"head": torch.nn.Linear(2, 2), "quality": metric})
    images = torch.rand(2, 3, 40, 56, generator=torch.Generator().manual_seed(0))
    before = metric(images).detach()
    buffers = {name: b.clone() for name, b in metric.net.named_buffers()}
    assert any("running_mean" in name for name in buffers)  # the network has BatchNorm statistics to spoil
    parent.train()
    assert parent["head"].training and metric.training and not metric.net.training
    assert not any(m.training for m in metric.net.modules())
    for _ in range(2):
        assert torch.equal(metric(images).detach(), before)
    assert all(torch.equal(b, buffers[name]) for name, b in metric.net.named_buffers())
    assert not any(p.requires_grad for p in metric.net.parameters())


@pytest.mark.parametrize("images, message", [
    ([], "no images given"),
    (torch.rand(0, 3, 32, 32), "holds no images"),
    (torch.full((1, 3, 32, 32), 2.0), "values from 2 to 2; float tensors must hold RGB in \\[0, 1\\]"),
    (torch.full((1, 3, 32, 32), -0.5), "values from -0.5 to -0.5"),
    (torch.full((1, 3, 32, 32), float("nan")), "NaN or infinite values; give RGB values in \\[0, 1\\]"),
    (torch.full((1, 3, 32, 32), float("inf")), "NaN or infinite values"),
    (torch.ones(1, 3, 32, 32, dtype=torch.int32), "give float RGB in \\[0, 1\\] or uint8"),
], ids=["empty-list", "empty-batch", "above-one", "negative", "nan", "inf", "int32"])
def test_inputs_the_metric_cannot_score_are_refused(metric, images, message):
    with pytest.raises(PromptIQA.UserError, match=message):
        metric(images)


@pytest.mark.parametrize("batch_size", [0, -1, 2.5, True])
def test_batch_sizes_below_one_are_refused(tiny_checkpoint, prompt_dir, batch_size):
    with pytest.raises(PromptIQA.UserError, match=f"batch_size={batch_size!r}: give a whole number"):
        PromptIQA.create_metric(checkpoint=tiny_checkpoint, prompts=prompt_dir / "prompts.json", device="cpu",
                                batch_size=batch_size)


def test_uint8_tensors_are_read_as_0_to_255(metric):
    pixels = torch.randint(0, 256, (2, 3, 40, 56), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    assert torch.equal(metric(pixels), metric(pixels.float() / 255))


def test_paths_pil_images_and_tensors_score_alike_in_bf16(tiny_checkpoint, prompt_dir):
    """One precision for every kind of input: an image at the network's size needs no resizing, so the
    three inputs reach the network as the same tensor."""
    metric = PromptIQA.create_metric(checkpoint=tiny_checkpoint, prompts=prompt_dir / "prompts.json", device="cpu",
                                     precision="bf16")
    path = write_image(prompt_dir / "full.png", seed=3, size=(224, 224))
    pixels = torch.from_numpy(np.asarray(Image.open(path).convert("RGB"))).permute(2, 0, 1).unsqueeze(0)
    by_path, by_pil, by_tensor = metric(path), metric(Image.open(path)), metric(pixels)
    assert torch.equal(by_path, by_pil) and torch.equal(by_path, by_tensor)
    fp32 = PromptIQA.create_metric(checkpoint=tiny_checkpoint, prompts=prompt_dir / "prompts.json", device="cpu")
    assert not torch.equal(fp32(path), by_path)  # bf16 is in effect for all three

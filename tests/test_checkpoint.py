"""Checkpoints: the published layout, this project's layout, atomic writes, clear refusals."""
from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from conftest import TINY

from PromptIQA.models.checkpoint import CheckpointNotFound, load_model, read_checkpoint, save_checkpoint
from PromptIQA.utils.errors import UserError


def test_published_layout_with_module_prefix_loads_strictly(tiny_model, tmp_path):
    path = tmp_path / "published.pth.tar"
    state = {"module." + k: v for k, v in tiny_model.state_dict().items()}
    torch.save({"state_dict": state, "prompt_num": 10}, path)
    model = load_model(path, backbone=TINY.backbone)
    assert model.prompt_num == 10 and not model.training
    for key, value in tiny_model.state_dict().items():
        torch.testing.assert_close(model.state_dict()[key], value)


def test_project_checkpoint_records_its_backbone(tiny_checkpoint):
    model = load_model(tiny_checkpoint)
    assert model.config == replace(TINY, prompt_num=4) and model.prompt_num == 4


def test_wrong_backbone_lists_missing_and_unexpected(tiny_checkpoint):
    with pytest.raises(UserError, match=r"missing \d+ \(e\.g\..*unexpected.*wrong shape") as err:
        load_model(tiny_checkpoint, backbone="resnet18")
    assert "do not fit backbone resnet18 at image size 224" in str(err.value) and "--" not in str(err.value)


def test_non_checkpoint_file_is_refused(tmp_path):
    path = tmp_path / "junk.pth.tar"
    path.write_bytes(b"this is not a checkpoint")
    with pytest.raises(UserError, match="not a loadable PyTorch checkpoint"):
        read_checkpoint(path)


def test_pickled_code_is_refused(tmp_path):
    path = tmp_path / "code.pth.tar"
    torch.save({"model": {}, "hook": print}, path)  # arbitrary objects need weights_only=False
    with pytest.raises(UserError, match="not a loadable"):
        read_checkpoint(path)


class _Payload:
    """Unpickling this object runs code: it creates the file `marker`."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return Path.touch, (self.marker,)


def test_code_executing_pickle_is_refused_without_advising_to_trust_it(tmp_path):
    path, marker = tmp_path / "hostile.pth.tar", tmp_path / "ran"
    torch.save({"model": {}, "payload": _Payload(marker)}, path)
    with pytest.raises(UserError, match="could run code") as err:
        read_checkpoint(path)
    assert str(path) in str(err.value) and "weights_only" not in str(err.value)
    assert not marker.exists()


def test_damaged_checkpoint_is_named_without_torch_advice(tiny_checkpoint, tmp_path):
    path = tmp_path / "cut.pth.tar"
    path.write_bytes(tiny_checkpoint.read_bytes()[:5000])
    with pytest.raises(UserError, match="damaged") as err:
        read_checkpoint(path)
    assert str(path) in str(err.value) and "weights_only" not in str(err.value)


def test_folder_is_not_a_checkpoint(tmp_path):
    with pytest.raises(UserError, match="is a folder, not a checkpoint file"):
        read_checkpoint(tmp_path)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")], ids=["nan", "inf", "-inf"])
def test_non_finite_weights_are_refused_naming_the_first_bad_key(tiny_model, tmp_path, bad):
    state = {k: v.clone() for k, v in tiny_model.state_dict().items()}
    keys = [k for k, v in state.items() if v.is_floating_point()]
    first, later = keys[3], keys[-1]
    state[first].view(-1)[-1] = bad
    state[later].view(-1)[0] = bad
    path = tmp_path / "diverged.pth.tar"
    save_checkpoint({"model": state, "model_config": TINY.to_dict()}, path)
    with pytest.raises(UserError, match=f"weight '{re.escape(first)}' holds NaN or infinite values") as err:
        load_model(path)
    assert str(path) in str(err.value)


def test_a_missing_checkpoint_is_named_without_a_flag(tmp_path):
    """The library names the file; test.py adds --checkpoint and how to get one (tests/test_score_cli.py)."""
    path = tmp_path / "best_model.pth.tar"
    with pytest.raises(CheckpointNotFound) as err:
        read_checkpoint(path)
    assert str(err.value) == f"{path}: file not found."


def test_failed_save_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "last.pth.tar"
    save_checkpoint({"epoch": 1}, path)

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint({"epoch": 2}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=True) == {"epoch": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["last.pth.tar"]

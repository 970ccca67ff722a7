"""What a resume restores when the saved run used another device, optimiser mode or GPU count, and
how an epoch's checkpoints are written (one file, best.pth.tar a hard link)."""
from __future__ import annotations

import copy
import os

import pytest
import torch

from PromptIQA.training.run import (
    BEST,
    LAST,
    link_or_copy,
    place_optimizer_steps,
    restore_rng,
    rng_state,
    save_checkpoints,
    saved_cuda_rng,
)


def adam(params, fused: bool | None) -> torch.optim.Adam:
    return torch.optim.Adam(params, lr=1e-2, fused=fused)


def trained_state(fused: bool | None, steps: int = 3) -> tuple[torch.nn.Linear, dict]:
    """A small layer after `steps` Adam steps, and its optimiser's saved state."""
    torch.manual_seed(0)
    layer = torch.nn.Linear(4, 3)
    optimizer = adam(layer.parameters(), fused)
    for _ in range(steps):
        optimizer.zero_grad()
        layer(torch.randn(5, 4)).square().sum().backward()
        optimizer.step()
    return layer, copy.deepcopy(optimizer.state_dict())


def resumed(state: dict, params, fused: bool | None) -> torch.optim.Adam:
    """As training.run.resume loads it: this run's settings kept, steps placed for them."""
    optimizer = adam(params, fused)
    own = [{k: g[k] for k in ("fused", "capturable")} for g in optimizer.param_groups]
    optimizer.load_state_dict(state)
    for group, settings in zip(optimizer.param_groups, own):
        group.update(settings)
    place_optimizer_steps(optimizer)
    return optimizer


def steps_of(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    return [optimizer.state[p]["step"] for g in optimizer.param_groups for p in g["params"]]


def test_fused_adam_on_another_device_gets_its_steps_there():
    """A non-fused CPU state resumed by fused Adam on another device (the meta device stands in for
    CUDA): the steps must move to the parameters' device as float32, as fused Adam creates them."""
    _, state = trained_state(fused=None)
    assert all(s.device.type == "cpu" for s in state["state"][0].values() if s.dim() == 0)
    params = [torch.nn.Parameter(torch.zeros(3, 4, device="meta")), torch.nn.Parameter(torch.zeros(3, device="meta"))]
    optimizer = resumed(state, params, fused=True)
    for step in steps_of(optimizer):
        assert step.device.type == "meta" and step.dtype == torch.float32
    assert optimizer.param_groups[0]["fused"] is True


@pytest.mark.parametrize("saved, now", [(None, True), (True, None)], ids=["plain-to-fused", "fused-to-plain"])
def test_resumed_steps_continue_the_run_exactly(saved, now):
    """Saved in one mode, resumed in the other: the next step gives what the saving mode would have."""
    layer, state = trained_state(fused=saved)
    reference, resumed_layer = copy.deepcopy(layer), copy.deepcopy(layer)
    ref_optimizer = adam(reference.parameters(), saved)
    ref_optimizer.load_state_dict(copy.deepcopy(state))  # loading may share the saved tensors
    optimizer = resumed(copy.deepcopy(state), resumed_layer.parameters(), fused=now)
    for step in steps_of(optimizer):
        assert step.device.type == "cpu"
        assert step.dtype == (torch.float32 if now else torch.get_default_dtype())
    batch = torch.randn(5, 4)
    for model, opt in ((reference, ref_optimizer), (resumed_layer, optimizer)):
        opt.zero_grad()
        model(batch).square().sum().backward()
        opt.step()
    torch.testing.assert_close(resumed_layer.weight, reference.weight, rtol=1e-6, atol=1e-7)


def test_the_rng_state_holds_this_process_device_only():
    state = rng_state(torch.device("cpu"))
    assert state["cuda"] is None and torch.equal(state["cpu"], torch.get_rng_state())


CUDA_STATES = [torch.full((8,), i, dtype=torch.uint8) for i in range(4)]


@pytest.mark.parametrize(
    "saved, device, expected",
    [
        (CUDA_STATES[3], "cuda:0", 3),  # saved on cuda:3 of a 4-GPU node, resumed with one GPU per process
        (CUDA_STATES[0], "cuda:2", 0),  # saved with one GPU per process, resumed on a node's third GPU
        (CUDA_STATES, "cuda:1", 1),  # an older checkpoint: every visible GPU; this device's entry
        (CUDA_STATES[:1], "cuda:3", None),  # older, from fewer GPUs than this index: nothing to restore
        (None, "cuda:0", None),  # saved on the CPU
        (CUDA_STATES[1], "cpu", None),  # resumed on the CPU
    ],
)
def test_the_saved_cuda_rng_of_this_device_is_chosen_whatever_the_device_count(saved, device, expected):
    chosen = saved_cuda_rng({"cpu": torch.get_rng_state(), "cuda": saved}, torch.device(device))
    assert (chosen is None) if expected is None else torch.equal(chosen, CUDA_STATES[expected])


def test_restoring_the_rng_repeats_the_random_stream():
    state = rng_state(torch.device("cpu"))
    first = torch.rand(3)
    torch.rand(5)
    restore_rng({**state, "cuda": CUDA_STATES}, torch.device("cpu"))  # older list format: no CUDA here
    assert torch.equal(torch.rand(3), first)


def weights(value: float) -> dict:
    return {"model": {"w": torch.full((4,), value)}, "epoch": int(value)}


def test_a_best_epoch_writes_one_file_and_links_best_to_it(tmp_path):
    save_checkpoints(weights(1), tmp_path, best=True)
    assert os.path.samefile(tmp_path / BEST, tmp_path / LAST)
    assert os.stat(tmp_path / LAST).st_nlink == 2
    save_checkpoints(weights(2), tmp_path, best=False)  # last.pth.tar is a new file: best keeps epoch 1
    assert not os.path.samefile(tmp_path / BEST, tmp_path / LAST)
    assert torch.load(tmp_path / BEST)["epoch"] == 1 and torch.load(tmp_path / LAST)["epoch"] == 2
    save_checkpoints(weights(3), tmp_path, best=True)
    assert os.path.samefile(tmp_path / BEST, tmp_path / LAST) and torch.load(tmp_path / BEST)["epoch"] == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == [BEST, LAST]  # no temporary left


def test_without_hard_links_best_is_a_copy(tmp_path, monkeypatch):
    def no_links(source, target):
        raise PermissionError(1, "Operation not permitted")  # as on file systems without hard links

    save_checkpoints(weights(1), tmp_path, best=False)
    monkeypatch.setattr(os, "link", no_links)
    link_or_copy(tmp_path / LAST, tmp_path / BEST)
    assert not os.path.samefile(tmp_path / BEST, tmp_path / LAST)
    assert (tmp_path / BEST).read_bytes() == (tmp_path / LAST).read_bytes()

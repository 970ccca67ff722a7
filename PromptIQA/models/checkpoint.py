"""Reading and writing checkpoints.

Reads the published format (`{"state_dict": {"module.<key>": ...}, "prompt_num": 10}`) and this
project's (`"model"` unwrapped, `"model_config"`, ...). Loading is always `weights_only=True`: a
checkpoint is untrusted input. Writing is atomic: a temp file in the same folder, then a rename.
"""
from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import torch

from ..utils.atomic import atomic_open
from ..utils.constants import CHECKPOINT_DIR
from ..utils.errors import UserError
from ..utils.hub import resolve_checkpoint
from .promptiqa import ModelConfig, PromptIQA

DEFAULT_CHECKPOINT = CHECKPOINT_DIR / "best_model.pth.tar"


# torch's refusal of a pickle that would build arbitrary objects starts so, and goes on to suggest
# weights_only=False: advice never to repeat for a file of unknown origin
_CODE_PICKLE = "Weights only load failed"


def _unloadable_reason(error: Exception) -> str:
    """Why torch.load failed, in a phrase; torch's own advice to load with weights_only=False is left out."""
    message = str(error).strip()
    if message.startswith(_CODE_PICKLE):
        return ("it holds pickled Python objects other than weights, which could run code when loaded, and "
                "such files are refused; use a checkpoint saved by PromptIQA or the published one")
    first_sentence = message.splitlines()[0].split(". ")[0] if message else type(error).__name__
    if "weights_only" in first_sentence:
        first_sentence = type(error).__name__
    return f"the file is damaged or of another kind ({first_sentence}); re-copy it or use another checkpoint"


class CheckpointNotFound(UserError):
    """A checkpoint path that names no file (the command line adds how to get one)."""


def read_checkpoint(path: str | os.PathLike) -> dict:
    """The checkpoint's dict, read with weights_only=True; errors name the file and the reason."""
    path = resolve_checkpoint(path)
    if path.is_dir():
        raise UserError(f"{path}: is a folder, not a checkpoint file; give the .pth.tar file in it")
    if not path.is_file():
        raise CheckpointNotFound(f"{path}: file not found.")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a corrupt or foreign file can fail in many ways inside the unpickler
        raise UserError(f"{path}: not a loadable PyTorch checkpoint: {_unloadable_reason(err)}") from err
    if not isinstance(ckpt, dict):
        raise UserError(f"{path}: expected a dict with 'state_dict' or 'model', got {type(ckpt).__name__}")
    return ckpt


def _first_non_finite(state: dict[str, torch.Tensor]) -> str | None:
    """The first key whose floating-point tensor holds NaN or an infinity."""
    for key, value in state.items():
        if isinstance(value, torch.Tensor) and value.is_floating_point() and not torch.isfinite(value).all():
            return key
    return None


def model_state_dict(ckpt: dict, path: str | os.PathLike = "checkpoint") -> dict[str, torch.Tensor]:
    """The network weights, without the `module.` prefix DistributedDataParallel adds.

    Weights holding NaN or infinities (a diverged run) are refused: they would score every image NaN.
    """
    state = ckpt.get("model", ckpt.get("state_dict"))
    if not isinstance(state, dict):
        raise UserError(f"{path}: no 'state_dict' or 'model' entry (keys: {', '.join(map(str, ckpt))})")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    bad = _first_non_finite(state)
    if bad is not None:
        raise UserError(f"{path}: weight '{bad}' holds NaN or infinite values (the training run "
                        "diverged); use a checkpoint saved before that, e.g. best.pth.tar, or retrain")
    return state


def load_weights(model: PromptIQA, state: dict[str, torch.Tensor], path: str | os.PathLike) -> None:
    """Strict load that takes the tensors over (so `model` may live on the meta device); a mismatch
    names what is missing/unexpected instead of torch's wall of keys."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong_shape = [k for k in own if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or wrong_shape:
        def some(keys: list[str]) -> str:
            return f"{len(keys)} (e.g. {', '.join(keys[:4])})" if keys else "0"

        raise UserError(
            f"{path}: its weights do not fit backbone {model.config.backbone} at "
            f"image size {model.config.img_size}: missing {some(missing)}; unexpected {some(unexpected)}; "
            f"wrong shape {some(wrong_shape)}. Pass the backbone and image size it was trained with."
        )
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()}, assign=True)


def model_from_checkpoint(
    ckpt: dict,
    path: str | os.PathLike = "checkpoint",
    backbone: str | None = None,
    img_size: int | None = None,
    device: str | torch.device = "cpu",
) -> PromptIQA:
    """Build the network a checkpoint was saved from and load its weights, in eval mode.

    The backbone and image size come from the checkpoint when it records them (this project's
    checkpoints do); the published checkpoint does not, so the published defaults apply. The
    top-level `prompt_num` (the published format's) wins over the saved model configuration.
    Weights of backbone norms/heads that the network prunes (never used by it) are left out.
    """
    config = ModelConfig.from_dict(ckpt.get("model_config") or {})
    config = replace(
        config,
        backbone=backbone or config.backbone,
        img_size=img_size or config.img_size,
        prompt_num=int(ckpt.get("prompt_num", config.prompt_num)),
    )
    with torch.device("meta"):  # skip random initialisation: every tensor comes from the checkpoint
        model = PromptIQA(config)
    state = {k: v for k, v in model_state_dict(ckpt, path).items() if k not in model.pruned_keys}
    load_weights(model, state, path)
    model.materialize_buffers()  # the meta device left them empty and no checkpoint holds them
    return model.to(device).eval()


def load_model(
    path: str | os.PathLike = DEFAULT_CHECKPOINT,
    backbone: str | None = None,
    img_size: int | None = None,
    device: str | torch.device = "cpu",
) -> PromptIQA:
    """Load a published or project checkpoint file as an eval-mode network (see model_from_checkpoint)."""
    return model_from_checkpoint(read_checkpoint(path), path, backbone, img_size, device)


def save_checkpoint(state: dict, path: str | os.PathLike) -> None:
    """torch.save to a temp file beside `path`, then rename: a crash never leaves a partial file."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path, "wb") as f:
        torch.save(state, f)

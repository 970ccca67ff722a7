"""Backbones that give PromptIQA's head four same-size feature maps (B, D, S, S).

Any timm model with timm's intermediate-layer API (`forward_intermediates`,
`prune_intermediate_layers`) and at least four feature levels works:
- isotropic models (ViTs and other models whose levels all have one width and one stride): four
  evenly spaced blocks ending with the last, used as they are. The default, `vit_base_patch8_224`,
  is the published backbone: blocks 2, 5, 8, 11 of 12.
- hierarchical models (CNNs, Swin, ...): the last four levels, each projected to D channels (1x1) and
  resized to one grid.
Everything after the last level used (final norms, pooling, classifier heads) is pruned, so every
parameter of the backbone receives a gradient. Only the default matches the published weights.
"""
from __future__ import annotations

import difflib
import os
from dataclasses import dataclass
from pathlib import Path

import timm
import torch
import torch.nn.functional as F
from torch import nn

from ..utils.constants import CHECKPOINT_DIR
from ..utils.errors import UserError
from ..utils.hub import download_from_hub

DEFAULT_BACKBONE = "vit_base_patch8_224"
CNN_DIM, CNN_STRIDE = 384, 16  # default width and stride of the grid CNN levels are projected to
FEATURE_COUNT = 4
HEAD_DIM = 64  # channels per attention head when the backbone has no attention of its own
WHAT_WORKS = (
    "use a timm model with forward_intermediates and at least four feature levels: ViTs such as "
    "vit_base_patch8_224, vit_small_patch16_224, vit_relpos_small_patch16_224, eva02_small_patch14_224, "
    "vit_small_patch16_rope_224, or CNNs such as resnet50, convnext_tiny, efficientnet_b0"
)


@dataclass(frozen=True)
class FeatureLayout:
    """What the head needs to know about the maps a backbone gives."""

    dim: int  # D, channels of each map
    grid: int  # S, maps are S x S
    num_heads: int  # heads of the transformer block that follows the MALs


@dataclass(frozen=True)
class Backbone:
    """A pruned timm model and where PromptIQA reads its four maps."""

    model: nn.Module
    indices: list[int]  # the feature levels read, as forward_intermediates numbers them
    channels: list[int]  # channels of each level read
    isotropic: bool  # True: the levels share width and stride, so they are used as they are
    layout: FeatureLayout
    pruned_keys: frozenset[str]  # state-dict keys the pruning removed (weights never used)


def _create(name: str, img_size: int) -> nn.Module:
    """The timm model without classifier and without pretrained weights (never downloads)."""
    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=3)
        hint = f" Did you mean: {', '.join(close)}?" if close else f" {WHAT_WORKS}."
        raise UserError(f"--backbone {name}: not a timm model.{hint}")
    try:
        return timm.create_model(name, pretrained=False, num_classes=0, img_size=img_size)
    except TypeError as err:
        if "img_size" not in str(err):
            raise
    return timm.create_model(name, pretrained=False, num_classes=0)  # fully convolutional: any size


def _feature_levels(model: nn.Module, name: str) -> list[dict]:
    levels = list(getattr(model, "feature_info", None) or [])
    api = all(hasattr(model, m) for m in ("forward_intermediates", "prune_intermediate_layers"))
    if not api or len(levels) < FEATURE_COUNT:
        found = f"{len(levels)} feature levels" if api else "no forward_intermediates"
        raise UserError(f"--backbone {name}: PromptIQA needs {FEATURE_COUNT} feature levels, this model has {found}; {WHAT_WORKS}.")
    return levels


def isotropic_indices(depth: int) -> list[int]:
    """Four evenly spaced levels, ending with the last: (2, 5, 8, 11) for 12 blocks."""
    return [depth * (k + 1) // FEATURE_COUNT - 1 for k in range(FEATURE_COUNT)]


def _grid(name: str, img_size: int, stride: int) -> int:
    if img_size % stride:
        lower, upper = img_size // stride * stride, (img_size // stride + 1) * stride
        sizes = f"{lower} or {upper}" if lower else str(upper)
        raise UserError(
            f"--img-size {img_size} does not fit --backbone {name}: its feature levels have a stride of "
            f"{stride} pixels; use a multiple of {stride} such as {sizes}."
        )
    return img_size // stride


def _attention_heads(model: nn.Module, dim: int) -> int:
    """The backbone's own attention heads (12 for the published ViT-B), else 64-channel heads."""
    own = next((m.num_heads for m in model.modules() if isinstance(getattr(m, "num_heads", None), int)), 0)
    if own and dim % own == 0:
        return own
    return _heads_of_width(dim)


def _heads_of_width(dim: int) -> int:
    """The most heads of at least HEAD_DIM channels that divide `dim` (at least one)."""
    return max(h for h in range(1, max(1, dim // HEAD_DIM) + 1) if dim % h == 0)


def build_backbone(name: str, img_size: int, cnn_dim: int = CNN_DIM) -> Backbone:
    """Create `name` at `img_size`, choose its four levels and prune what comes after them.

    A CNN's levels are projected to `cnn_dim` channels; ViTs keep their width.

    Raises UserError, naming --backbone / --img-size and what works, for a model that cannot give
    four square maps at this size.
    """
    model = _create(name, img_size)
    levels = _feature_levels(model, name)
    isotropic = len({(lv["num_chs"], lv["reduction"]) for lv in levels}) == 1
    wanted = isotropic_indices(len(levels)) if isotropic else list(range(len(levels) - FEATURE_COUNT, len(levels)))
    keys = set(model.state_dict())
    indices = model.prune_intermediate_layers(wanted, prune_norm=True, prune_head=True)
    pruned = frozenset(keys - set(model.state_dict()))
    channels = [levels[i]["num_chs"] for i in indices]
    if isotropic:
        grid = _grid(name, img_size, levels[-1]["reduction"])
        own_grid = tuple(getattr(getattr(model, "patch_embed", None), "grid_size", (grid, grid)))
        if own_grid != (grid, grid):
            raise UserError(f"--backbone {name}: gives a {own_grid} token grid at --img-size {img_size}, "
                            f"PromptIQA needs a square one; {WHAT_WORKS}.")
        layout = FeatureLayout(dim=channels[0], grid=grid, num_heads=_attention_heads(model, channels[0]))
    else:
        _grid(name, img_size, max(levels[i]["reduction"] for i in indices))  # every level a whole size
        layout = FeatureLayout(dim=cnn_dim, grid=img_size // CNN_STRIDE, num_heads=_heads_of_width(cnn_dim))
    return Backbone(model, indices, channels, isotropic, layout, pruned)


def materialize_buffers(model: nn.Module, name: str, img_size: int) -> None:
    """Recompute the non-persistent buffers of a backbone built on the meta device.

    Checkpoints do not hold them (relative-position indices, rotary frequencies, constant biases),
    so after a meta-device load they are still empty. They are taken from one normal construction
    of the backbone on the CPU: timm computes them in the constructors, and rebuilding reproduces
    them for any model without knowing how each module type fills its own.
    """
    empty = [key for key, buffer in model.named_buffers() if buffer.is_meta]
    if not empty:
        return
    computed = dict(build_backbone(name, img_size).model.named_buffers())
    for key in empty:
        owner, _, attr = key.rpartition(".")
        model.get_submodule(owner).register_buffer(attr, computed[key], persistent=False)


def isotropic_maps(backbone: nn.Module, indices: list[int], images: torch.Tensor) -> list[torch.Tensor]:
    """Patch tokens of the chosen blocks as (B, D, S, S) maps, prefix tokens dropped (docs/model.md 1)."""
    return backbone.forward_intermediates(images, indices=indices, output_fmt="NCHW", intermediates_only=True)


class CNNFeatureMaps(nn.Module):
    """Levels of a hierarchical timm model, each projected to D channels (1x1) and resized to S x S."""

    def __init__(self, backbone: Backbone):
        super().__init__()
        self.body = backbone.model
        self.indices = backbone.indices
        self.proj = nn.ModuleList(nn.Conv2d(c, backbone.layout.dim, 1) for c in backbone.channels)
        self.grid = backbone.layout.grid

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        stages = self.body.forward_intermediates(images, indices=self.indices, output_fmt="NCHW", intermediates_only=True)
        return [
            F.interpolate(proj(x), size=(self.grid, self.grid), mode="bilinear", align_corners=False)
            for proj, x in zip(self.proj, stages)
        ]


@dataclass(frozen=True)
class PretrainedWeights:
    """A backbone weights file and where it came from (recorded in the run folder)."""

    path: Path
    source: str  # the file as given, or `hf-hub:<repo id>` for timm's hub weights


LOCAL_SUFFIXES = (".pth", ".pth.tar", ".safetensors", ".bin")
HUB_FILES = ("model.safetensors", "pytorch_model.bin")  # timm's hub repositories: the safe file first


def hub_weights_id(backbone: str) -> str | None:
    """The Hub repository of the weights `timm.create_model(backbone, pretrained=True)` loads: the
    model's default pretrained tag, e.g. timm/vit_base_patch8_224.augreg2_in21k_ft_in1k."""
    config = timm.models.get_pretrained_cfg(backbone)
    return getattr(config, "hf_hub_id", None) or None


def _hub_weights(backbone: str, local: str) -> PretrainedWeights:
    """timm's ImageNet weights of `backbone`, downloaded once into huggingface_hub's cache."""
    repo_id = hub_weights_id(backbone)
    if repo_id is None:
        raise UserError(f"--pretrained imagenet: timm publishes no Hub weights for {backbone}; {local}")
    config = timm.models.get_pretrained_cfg(backbone)
    names = (config.hf_hub_filename,) if config.hf_hub_filename else HUB_FILES
    path = download_from_hub(repo_id, names, "--pretrained imagenet", also=local)
    return PretrainedWeights(path, f"hf-hub:{repo_id}")


def resolve_pretrained(pretrained: str | os.PathLike | None, backbone: str) -> PretrainedWeights | None:
    """`none` -> None; a file -> that file; `imagenet` -> `PromptIQA/checkpoints/<backbone>.*` if there
    is one, else timm's Hub weights for the backbone (as timm.create_model(backbone, pretrained=True)
    loads them), downloaded once into the Hugging Face cache.

    Fails at once, naming both ways to provide the weights, when they cannot be had: training never
    falls back to random weights silently.
    """
    if pretrained is None or str(pretrained).lower() == "none":
        return None
    local = (
        f"put a weights file at {CHECKPOINT_DIR}/{backbone}.pth (saved on a connected machine with "
        f"torch.save(timm.create_model('{backbone}', pretrained=True).state_dict(), '{backbone}.pth')) "
        "or pass --pretrained PATH; --pretrained none trains from random weights"
    )
    if str(pretrained).lower() != "imagenet":
        if not Path(pretrained).is_file():
            raise UserError(f"--pretrained {pretrained}: file not found; pass a weights file, imagenet or none")
        return PretrainedWeights(Path(pretrained), str(pretrained))
    for suffix in LOCAL_SUFFIXES:
        candidate = CHECKPOINT_DIR / f"{backbone}{suffix}"
        if candidate.is_file():
            return PretrainedWeights(candidate, str(candidate))
    return _hub_weights(backbone, local)


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    return state


def load_backbone_weights(model: nn.Module, path: str | os.PathLike) -> None:
    """Load ImageNet (timm) weights from a file found by resolve_pretrained into a model built by
    build_backbone (the pruned norms and heads of the file are left out)."""
    path = Path(path)
    state = _read_state_dict(path)
    own = model.state_dict()
    if "pos_embed" in state and "pos_embed" in own and state["pos_embed"].shape != own["pos_embed"].shape:
        from timm.layers import resample_abs_pos_embed

        state["pos_embed"] = resample_abs_pos_embed(
            state["pos_embed"], model.patch_embed.grid_size, num_prefix_tokens=model.num_prefix_tokens
        )
    state = {k: v for k, v in state.items() if k in own}  # drops classifier / final norm
    missing = sorted(set(own) - set(state))
    if missing:
        raise UserError(
            f"--pretrained {path}: these weights do not fit the backbone; missing {len(missing)} "
            f"parameters, e.g. {', '.join(missing[:5])}. Use weights saved from the same timm model."
        )
    model.load_state_dict(state)

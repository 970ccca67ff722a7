"""Backbones that give PromptIQA's head four same-size feature maps (B, D, S, S).

The default, timm's `vit_base_patch8_224`, is the published backbone: the patch tokens of four
evenly spaced blocks (2, 5, 8, 11 of 12). A timm CNN (e.g. `resnet50`) is accepted through a small
adapter that projects its last four stages to D channels and resizes them to one grid; only the ViT
default matches the published weights.
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

from ..errors import UserError

DEFAULT_BACKBONE = "vit_base_patch8_224"
CHECKPOINT_DIR = Path(__file__).resolve().parents[1] / "checkpoints"
CNN_DIM, CNN_HEADS, CNN_STRIDE = 384, 6, 16


@dataclass(frozen=True)
class FeatureLayout:
    """What the head needs to know about the maps a backbone gives."""

    dim: int  # D, channels of each map
    grid: int  # S, maps are S x S
    num_heads: int  # heads of the transformer block that follows the MALs


def is_vit(model: nn.Module) -> bool:
    return hasattr(model, "blocks") and hasattr(model, "patch_embed")


def create_timm_model(name: str, img_size: int) -> nn.Module:
    """A timm model without classifier and without pretrained weights (never downloads)."""
    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=3)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise UserError(f"--backbone {name}: not a timm model.{hint}")
    model = timm.create_model(name, pretrained=False, num_classes=0)
    if is_vit(model):
        if img_size != model.patch_embed.img_size[0]:
            model = timm.create_model(name, pretrained=False, num_classes=0, img_size=img_size)
        model.norm = nn.Identity()  # the published network drops the final norm (no `vit.norm.*` keys)
    elif not hasattr(model, "forward_intermediates"):
        raise UserError(f"--backbone {name}: neither a ViT with blocks nor a CNN with feature stages")
    return model


def vit_block_indices(depth: int) -> list[int]:
    """Four evenly spaced blocks, ending with the last: (2, 5, 8, 11) for 12 blocks."""
    return [depth * (k + 1) // 4 - 1 for k in range(4)]


def vit_layout(vit: nn.Module) -> FeatureLayout:
    return FeatureLayout(dim=vit.embed_dim, grid=vit.patch_embed.grid_size[0], num_heads=vit.blocks[0].attn.num_heads)


def vit_feature_maps(vit: nn.Module, images: torch.Tensor) -> list[torch.Tensor]:
    """Patch tokens of four blocks as (B, D, S, S) maps, class token dropped (model.md 1)."""
    return vit.forward_intermediates(
        images, indices=vit_block_indices(len(vit.blocks)), norm=False, output_fmt="NCHW", intermediates_only=True
    )


class CNNFeatureMaps(nn.Module):
    """Last four stages of a timm CNN, each projected to D channels (1x1) and resized to S x S."""

    def __init__(self, body: nn.Module, img_size: int, dim: int = CNN_DIM):
        super().__init__()
        self.body = body
        channels = [info["num_chs"] for info in body.feature_info[-4:]]
        self.proj = nn.ModuleList(nn.Conv2d(c, dim, 1) for c in channels)
        self.layout = FeatureLayout(dim=dim, grid=img_size // CNN_STRIDE, num_heads=CNN_HEADS)

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        stages = self.body.forward_intermediates(images, indices=4, intermediates_only=True)
        size = (self.layout.grid, self.layout.grid)
        return [
            F.interpolate(proj(x), size=size, mode="bilinear", align_corners=False)
            for proj, x in zip(self.proj, stages)
        ]


def resolve_pretrained(pretrained: str | os.PathLike | None, backbone: str) -> Path | None:
    """`none` -> None; a file -> that file; `imagenet` -> `PromptIQA/checkpoints/<backbone>.*`.

    Fails at once, saying how to get the weights, when they are not there: training never falls
    back to random weights silently.
    """
    if pretrained is None or str(pretrained).lower() == "none":
        return None
    how_to_get = (
        "this machine cannot download them. On a machine with internet access run "
        f"torch.save(timm.create_model('{backbone}', pretrained=True).state_dict(), '{backbone}.pth') "
        f"and copy the file to {CHECKPOINT_DIR}/ or pass --pretrained PATH; --pretrained none trains "
        "from random weights."
    )
    if str(pretrained).lower() != "imagenet":
        if not Path(pretrained).is_file():
            raise UserError(f"--pretrained {pretrained}: file not found; {how_to_get}")
        return Path(pretrained)
    for suffix in (".pth", ".pth.tar", ".safetensors", ".bin"):
        candidate = CHECKPOINT_DIR / f"{backbone}{suffix}"
        if candidate.is_file():
            return candidate
    raise UserError(f"--pretrained imagenet: no ImageNet weights for {backbone} in {CHECKPOINT_DIR}/; {how_to_get}")


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
    """Load ImageNet (timm) weights from a file found by resolve_pretrained into a backbone built by
    create_timm_model."""
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

"""The PromptIQA network (docs/model.md). Attribute names are the published checkpoint's keys."""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass, fields
from functools import partial

import torch
from timm.models.vision_transformer import Block
from torch import nn

from ..utils.constants import PUBLISHED_PROMPT_NUM
from .backbone import (
    CNN_DIM,
    DEFAULT_BACKBONE,
    CNNFeatureMaps,
    FeatureLayout,
    build_backbone,
    isotropic_maps,
    load_backbone_weights,
    materialize_buffers,
    resolve_pretrained,
)
from .mal import MAL

PROMPT_DIM = 128
# The published head blocks were built with torch's LayerNorm default (eps 1e-5) except `blocks`
# (1e-6); timm's Block default changed, so both are passed explicitly (docs/model.md 3, 4.2; why: 7).
LayerNormHead = partial(nn.LayerNorm, eps=1e-5)
LayerNormScorer = partial(nn.LayerNorm, eps=1e-6)


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild the network; saved in this project's checkpoints."""

    backbone: str = DEFAULT_BACKBONE
    img_size: int = 224
    prompt_num: int = PUBLISHED_PROMPT_NUM  # ISPs per query in training (group size - 1); the default for scoring
    cnn_dim: int = CNN_DIM  # channels a CNN backbone's levels are projected to (ViTs keep their width)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, saved: dict) -> "ModelConfig":
        """Rebuild from `to_dict()` output; keys missing in older files take the defaults."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in saved.items() if k in known})


def quality_cnn(in_dim: int, grid: int) -> nn.Sequential:
    """Conv-BN-ReLU-AvgPool x3 from (B, D, S, S) to (B, 128, 1, 1).

    For S = 28 this is the published stack (28 -> 24 -> 12 -> 10 -> 5 -> 3 -> 1). Smaller grids pad a
    convolution that would not fit and pool at most down to 1, so any backbone gets a valid head.
    """
    layers: list[nn.Module] = []
    size = grid
    stages = [(in_dim, 256, 5), (256, 128, 3), (128, 128, 3)]
    for i, (c_in, c_out, kernel) in enumerate(stages):
        padding = 0 if size >= kernel else kernel // 2
        size = size + 2 * padding - kernel + 1
        pool = size if i == len(stages) - 1 else min(2, size)
        conv = nn.Conv2d(c_in, c_out, kernel, padding=padding)
        layers += [conv, nn.BatchNorm2d(c_out), nn.ReLU(), nn.AvgPool2d(pool)]
        size //= pool
    return nn.Sequential(*layers)


def other_indices(batch: int, device: torch.device | None = None) -> torch.Tensor:
    """(B, B - 1): row i lists 0..B-1 without i, in order. Computed as j + (j >= i), a gather that
    torch.compile keeps in one graph; the published boolean-mask selection has a data-dependent size
    and splits the graph."""
    rows = torch.arange(batch, device=device).unsqueeze(1)
    columns = torch.arange(batch - 1, device=device).unsqueeze(0)
    return columns + (columns >= rows).long()


def head_blocks(depth: int, qkv_bias: bool, norm_layer=LayerNormHead) -> nn.Sequential:
    return nn.Sequential(*(Block(PROMPT_DIM, 4, qkv_bias=qkv_bias, norm_layer=norm_layer) for _ in range(depth)))


class PromptIQA(nn.Module):
    """Scores images under a requirement given by image-score pairs (ISPs).

    image_features: image -> quality feature g (B, 128) (backbone, MALs, block, cnn).
    encode_prompts / prompt_vectors: ISPs -> one prompt vector per ISP (n, 128).
    score_features / score_images: query features + prompt vectors -> score in [0, 1].
    forward: the training step: every image of the batch is the query once, the others its prompts.
    """

    def __init__(self, config: ModelConfig = ModelConfig(), pretrained: str | os.PathLike | None = None):
        super().__init__()
        self.config = config
        backbone = build_backbone(config.backbone, config.img_size, config.cnn_dim)
        weights = resolve_pretrained(pretrained, config.backbone)
        if weights is not None:
            load_backbone_weights(backbone.model, weights.path)
        # Isotropic backbones sit under `vit`, the published checkpoint's prefix.
        if backbone.isotropic:
            self.vit, self.cnn_backbone = backbone.model, None
            prefix = "vit."
        else:
            self.vit, self.cnn_backbone = None, CNNFeatureMaps(backbone)
            prefix = "cnn_backbone.body."
        self.feature_indices = backbone.indices
        self.layout: FeatureLayout = backbone.layout
        # Weights of pruned norms/heads, found in checkpoints written before they were pruned.
        self.pruned_keys = frozenset(prefix + key for key in backbone.pruned_keys)
        d, s = self.layout.dim, self.layout.grid

        self.MALs = nn.ModuleList(MAL(d, 4, s) for _ in range(3))
        self.fusion_mal = MAL(d, 3, s)
        self.block = Block(d, self.layout.num_heads, qkv_bias=False, norm_layer=LayerNormHead)
        self.cnn = quality_cnn(d, s)

        self.i_p_fusion = head_blocks(3, qkv_bias=False)
        self.mlp = nn.Sequential(nn.Linear(PROMPT_DIM, 64), nn.GELU(), nn.Linear(64, PROMPT_DIM))
        self.prompt_fusion = head_blocks(3, qkv_bias=False)
        self.blocks = head_blocks(8, qkv_bias=True, norm_layer=LayerNormScorer)
        self.norm = nn.LayerNorm(PROMPT_DIM)
        self.score_block = nn.Sequential(
            nn.Linear(PROMPT_DIM, 64), nn.ReLU(), nn.Dropout(0.1), nn.Linear(64, 1), nn.Sigmoid()
        )

    @property
    def prompt_num(self) -> int:
        return self.config.prompt_num

    @property
    def backbone(self) -> nn.Module:
        """The timm model the feature maps come from."""
        return self.vit if self.vit is not None else self.cnn_backbone.body

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute the backbone's activations in the backward pass (less memory, more time)."""
        self.backbone.set_grad_checkpointing(enable)

    def materialize_buffers(self) -> None:
        """Fill the backbone's non-persistent buffers after building on the meta device and loading."""
        materialize_buffers(self.backbone, self.config.backbone, self.config.img_size)

    def backbone_maps(self, images: torch.Tensor) -> list[torch.Tensor]:
        if self.vit is not None:
            return isotropic_maps(self.vit, self.feature_indices, images)
        return self.cnn_backbone(images)

    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        """Normalised images (B, 3, H, W) -> quality features g (B, 128)."""
        maps = self.backbone_maps(images)
        b, d, s = images.shape[0], self.layout.dim, self.layout.grid
        views = [mal(maps).view(b, d, s, s) for mal in self.MALs]
        x = self.fusion_mal(views).transpose(1, 2)  # (B, N, D)
        x = self.block(x).transpose(1, 2).reshape(b, d, s, s)
        return self.cnn(x).flatten(1)

    def prompt_vectors(self, features: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        """Features g (n, 128) and scores (n,) of ISPs -> prompt vectors (n, 128)."""
        scores = scores.to(features).view(-1, 1).expand(-1, PROMPT_DIM)
        pair = torch.stack([features, scores], dim=1)  # (n, 2, 128): image token, score token
        return self.mlp(self.i_p_fusion(pair).mean(dim=1))

    def fuse_prompts(self, prompts: torch.Tensor) -> torch.Tensor:
        """Prompt vectors (n, 128) of one set, or (S, n, 128) of S sets -> the fused prompt tokens, same shape."""
        return self.prompt_fusion(prompts.unsqueeze(0))[0] if prompts.dim() == 2 else self.prompt_fusion(prompts)

    def score_features(self, features: torch.Tensor, prompts: torch.Tensor) -> torch.Tensor:
        """Query features (B, 128) against prompts (n, 128) shared by all, or (B, n, 128) -> (B,)."""
        fused = self.fuse_prompts(prompts)
        return self.score_fused(features, fused.expand(features.shape[0], -1, -1) if fused.dim() == 2 else fused)

    def score_fused(self, features: torch.Tensor, fused: torch.Tensor) -> torch.Tensor:
        """Query features (B, 128) against fused prompt tokens (B, n, 128) -> (B,)."""
        tokens = torch.cat([features.unsqueeze(1), fused], dim=1)
        tokens = self.norm(self.blocks(tokens))
        # The score head runs in fp32 under autocast: a bf16 output would round scores to 1/256.
        with torch.autocast(tokens.device.type, enabled=False):
            return self.score_block(tokens.float())[:, 0, 0]

    def encode_prompts(self, images: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        """ISP images (n, 3, H, W) with scores (n,) in [0, 1] -> prompt vectors (n, 128)."""
        return self.prompt_vectors(self.image_features(images), scores)

    def score_images(self, images: torch.Tensor, prompts: torch.Tensor) -> torch.Tensor:
        """Query images (B, 3, H, W) against encoded prompts (n, 128) -> scores (B,)."""
        return self.score_features(self.image_features(images), prompts)

    def forward(self, images: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        """Training step (docs/model.md 4.3): image i is scored against the other B - 1 ISPs, in batch order."""
        features = self.image_features(images)
        prompts = self.prompt_vectors(features, scores)
        return self.score_features(features, prompts[other_indices(features.shape[0], features.device)])

"""The network's scoring path as three traceable modules, each one ONNX graph (docs/model.md 4).

Images come in as the deployment has them: uint8 RGB (B, H, W, 3), normalised inside the graph
as data/image.py's to_tensor does (the export-time check compares the two), or already normalised
float (B, 3, H, W).
"""
from __future__ import annotations

import torch
from torch import nn

from ..models import PromptIQA
from .manifest import NORMALISATION


class _ImageGraph(nn.Module):
    def __init__(self, model: PromptIQA, input_form: str):
        super().__init__()
        self.model = model
        self.takes_uint8 = input_form == "uint8"

    def normalised(self, images: torch.Tensor) -> torch.Tensor:
        """data/image.py's to_tensor, with the axes named outright (a negative permutation is no valid ONNX)."""
        if not self.takes_uint8:
            return images
        x = images.permute(0, 3, 1, 2).float() / NORMALISATION["divide"]
        return (x - NORMALISATION["mean"]) / NORMALISATION["std"]


class QueryGraph(_ImageGraph):
    """images (B, ...) + prompt vectors (n, 128) -> scores (B,)."""

    def forward(self, images: torch.Tensor, prompts: torch.Tensor) -> torch.Tensor:
        return self.model.score_images(self.normalised(images), prompts)


class PromptGraph(_ImageGraph):
    """ISP images (n, ...) + their scores (n,) in [0, 1] -> prompt vectors (n, 128)."""

    def forward(self, images: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        return self.model.encode_prompts(self.normalised(images), scores)


class BakedGraph(_ImageGraph):
    """images (B, ...) -> scores (B,) under one prompt set, its vectors held as constants."""

    def __init__(self, model: PromptIQA, input_form: str, vectors: torch.Tensor):
        super().__init__(model, input_form)
        self.register_buffer("prompts", vectors.detach().float().clone())

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.score_images(self.normalised(images), self.prompts)

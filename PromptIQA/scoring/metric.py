"""A PromptIQA metric shaped like pyiqa's: `create_metric(...)` returns an `nn.Module` scoring images.

    import PromptIQA
    metric = PromptIQA.create_metric(checkpoint="hf:Zevin2023/PromptIQA", prompts="prompts.json")
    metric("photo.png")                     # tensor([score]), exactly test.py's score
    metric(torch.rand(2, 3, 300, 400))      # RGB in [0, 1]

Inputs: image paths, PIL images, or RGB float tensors in [0, 1] of shape (N, 3, H, W) or (3, H, W).
Paths and PIL images go through test.py's pre-processing (OpenCV bicubic resize of the 8-bit image,
so a PIL image of a lossless file scores exactly as its path). Tensors are resized to the model's
input size with `torch.nn.functional.interpolate(mode="bicubic")` and normalised as the published
code does ((x - 0.5) / 0.5), so they agree with paths up to the resizing. With `as_loss=True` the
tensor path keeps the autograd graph (the score is differentiable with respect to the input).
"""
from __future__ import annotations

import os

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..data.image import to_tensor
from ..data.prompts import PromptSet, read_prompt_file
from ..models import PromptIQA
from ..models.checkpoint import DEFAULT_CHECKPOINT, load_model
from ..utils.device import resolve_device
from ..utils.errors import UserError
from .saved_prompts import SavedPrompts, is_saved_prompts, prepare_prompts, read_saved_prompts
from .scorer import Scorer

PromptsInput = str | os.PathLike | PromptSet | SavedPrompts


def _is_pil_image(value: object) -> bool:
    return type(value).__module__.startswith("PIL.") and hasattr(value, "convert")


def _pil_to_array(image, size: int) -> np.ndarray:
    """A PIL image as test.py sees a file: 8-bit RGB, OpenCV bicubic resize to (size, size)."""
    rgb = np.asarray(image.convert("RGB"))
    return cv2.resize(rgb, (size, size), interpolation=cv2.INTER_CUBIC)


class PromptIQAMetric(nn.Module):
    """No-reference quality of images under the requirement given by a prompt set (see the module doc)."""

    metric_mode = "NR"

    def __init__(self, model: PromptIQA, prompts: SavedPrompts, as_loss: bool = False, batch_size: int = 16):
        super().__init__()
        self.net = model.eval().requires_grad_(False)
        self.prompts = prompts
        device = next(model.parameters()).device
        self.register_buffer("prompt_vectors", prompts.vectors.detach().to(device, copy=True), persistent=False)
        self.as_loss = as_loss
        self.batch_size = batch_size

    @property
    def lower_better(self) -> bool:
        """The direction of the prompts' scale, reported as given: scores are never flipped."""
        return self.prompts.lower_better

    @property
    def score_range(self) -> tuple[float, float]:
        return self.prompts.score_range or (0.0, 1.0)

    def with_prompts(self, prompts: PromptsInput, score_range: tuple[float, float] | None = None,
                     lower_better: bool = False) -> "PromptIQAMetric":
        """The same network under another requirement (a prompt file, a saved set or a PromptSet)."""
        encoded = encode_prompts(self.net, prompts, score_range, lower_better)
        return PromptIQAMetric(self.net, encoded, self.as_loss, self.batch_size)

    def _unit_scores(self, images) -> torch.Tensor:
        if isinstance(images, torch.Tensor):
            return self._tensor_scores(images)
        items = list(images) if isinstance(images, (list, tuple)) else [images]
        if all(_is_pil_image(item) for item in items):
            size = self.net.config.img_size
            return self._tensor_scores(to_tensor(np.stack([_pil_to_array(i, size) for i in items])), normalised=True)
        if all(isinstance(item, (str, os.PathLike)) for item in items):
            scorer = Scorer(self.net, batch_size=self.batch_size)
            return torch.from_numpy(scorer.score_images([os.fspath(i) for i in items], self.prompt_vectors))
        raise UserError("metric input: give image paths, PIL images, or an RGB tensor (N, 3, H, W) in [0, 1]")

    def _tensor_scores(self, images: torch.Tensor, normalised: bool = False) -> torch.Tensor:
        device = self.prompt_vectors.device
        x = images.to(device)
        if not normalised:
            if x.dim() == 3:
                x = x.unsqueeze(0)
            if x.dim() != 4 or x.shape[1] != 3:
                raise UserError(f"metric input: expected an RGB tensor (N, 3, H, W), got shape {tuple(images.shape)}")
            size = self.net.config.img_size
            x = F.interpolate(x.float(), size=(size, size), mode="bicubic", align_corners=False)
            x = (x - 0.5) / 0.5
        with torch.set_grad_enabled(self.as_loss and torch.is_grad_enabled()):
            return torch.cat([self.net.score_images(x[i : i + self.batch_size], self.prompt_vectors)
                              for i in range(0, len(x), self.batch_size)])

    def forward(self, images) -> torch.Tensor:
        """Scores (N,) on `score_range`; paths and PIL images are scored without a graph."""
        low, high = self.score_range
        return low + self._unit_scores(images).float() * (high - low)


def encode_prompts(model: PromptIQA, prompts: PromptsInput, score_range: tuple[float, float] | None = None,
                   lower_better: bool = False) -> SavedPrompts:
    """Prompt vectors for `model` from a prompt file (JSON/CSV), a saved `.pt` set, a PromptSet or SavedPrompts."""
    if isinstance(prompts, SavedPrompts):
        return prompts
    if isinstance(prompts, PromptSet):
        given = prompts
    elif isinstance(prompts, (str, os.PathLike)) and is_saved_prompts(prompts):
        given = read_saved_prompts(prompts, flag="prompts=")
    elif isinstance(prompts, (str, os.PathLike)):
        given = read_prompt_file(prompts, score_range)
    else:
        raise UserError(f"prompts={prompts!r}: give a prompt file (.json/.csv), a saved set (.pt) or a PromptSet")
    return prepare_prompts(Scorer(model), given, score_range, lower_better, path=prompts, flag="prompts=")


def create_metric(
    checkpoint: str | os.PathLike = DEFAULT_CHECKPOINT,
    prompts: PromptsInput | None = None,
    device: str | torch.device = "auto",
    as_loss: bool = False,
    score_range: tuple[float, float] | None = None,
    lower_better: bool = False,
    batch_size: int = 16,
) -> PromptIQAMetric:
    """Load a checkpoint (a path or `hf:OWNER/REPO[/FILE]`) and encode `prompts` into a metric module."""
    if prompts is None:
        raise UserError("create_metric: give prompts= (a prompt file, a saved .pt set or a PromptSet)")
    model = load_model(checkpoint, device=resolve_device(str(device)))
    return PromptIQAMetric(model, encode_prompts(model, prompts, score_range, lower_better), as_loss, batch_size)

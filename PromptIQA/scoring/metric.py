"""A PromptIQA metric shaped like pyiqa's: `create_metric(...)` returns an `nn.Module` scoring images.

    import PromptIQA
    metric = PromptIQA.create_metric(checkpoint="hf:Zevin2023/PromptIQA", prompts="prompts.json")
    metric("photo.png")                     # tensor([score]), exactly test.py's score
    metric(torch.rand(2, 3, 300, 400))      # RGB in [0, 1]

    pooled = PromptIQA.create_metric(checkpoint=..., prompts="pool.csv", interval=0.9)
    pooled("photo.png")                     # ScoresWithInterval(score, low, high, spread)

Inputs: image paths, PIL images, or RGB tensors of shape (N, 3, H, W) or (3, H, W): float in [0, 1]
(values outside it, NaN or infinities are refused) or uint8 in 0-255 (divided by 255).
Paths and PIL images go through test.py's pre-processing (OpenCV bicubic resize of the 8-bit image,
so a PIL image of a lossless file scores exactly as its path). Tensors are resized to the model's
input size with `torch.nn.functional.interpolate(mode="bicubic")` and normalised as the published
code does ((x - 0.5) / 0.5), so they agree with paths up to the resizing. With `as_loss=True` the
tensor path keeps the autograd graph (the score is differentiable with respect to the input).

A prompt pool (docs/prompt-pools.md) is used as `ensemble` sets (default: as `test.py` uses it); with
`interval=LEVEL` the metric returns the score with the bounds of a calibrated interval and the spread.
"""
from __future__ import annotations

import os
from typing import NamedTuple

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..data.image import to_tensor
from ..data.prompts import PromptSet, read_prompt_file
from ..models import PromptIQA
from ..models.checkpoint import DEFAULT_CHECKPOINT, load_model
from ..models.prompt_pool import PromptEnsemble
from ..utils.device import precision_scope, resolve_device
from ..utils.errors import UserError
from .pools import pool_prompts
from .saved_prompts import SavedPrompts, is_saved_prompts, prepare_prompts, read_saved_prompts
from .scorer import Prompts, Scorer, result_on_range

PromptsInput = str | os.PathLike | PromptSet | SavedPrompts


def _is_pil_image(value: object) -> bool:
    return type(value).__module__.startswith("PIL.") and hasattr(value, "convert")


def _pil_to_array(image, size: int) -> np.ndarray:
    """A PIL image as test.py sees a file: 8-bit RGB, OpenCV bicubic resize to (size, size)."""
    rgb = np.asarray(image.convert("RGB"))
    return cv2.resize(rgb, (size, size), interpolation=cv2.INTER_CUBIC)


def check_batch_size(batch_size: object) -> int:
    if not (isinstance(batch_size, int) and not isinstance(batch_size, bool) and batch_size >= 1):
        raise UserError(f"batch_size={batch_size!r}: give a whole number of images per batch, 1 or more")
    return batch_size


def _as_unit_rgb(images: torch.Tensor) -> torch.Tensor:
    """A (N, 3, H, W) float batch in [0, 1]: uint8 tensors (0-255) are divided by 255; float tensors
    outside [0, 1], or holding NaN or infinities, are refused (they would score silently wrong)."""
    x = images.unsqueeze(0) if images.dim() == 3 else images
    if x.dim() != 4 or x.shape[1] != 3:
        raise UserError(f"metric input: expected an RGB tensor (N, 3, H, W), got shape {tuple(images.shape)}")
    if len(x) == 0:
        raise UserError("metric input: the batch holds no images; give at least one")
    if x.dtype == torch.uint8:
        return x.float() / 255
    if not x.is_floating_point():
        raise UserError(f"metric input: a {x.dtype} tensor; give float RGB in [0, 1] or uint8 RGB in 0-255")
    values = x.detach()
    if not torch.isfinite(values).all():
        raise UserError("metric input: the tensor holds NaN or infinite values; give RGB values in [0, 1]")
    low, high = values.min().item(), values.max().item()
    if low < 0 or high > 1:
        raise UserError(f"metric input: values from {low:g} to {high:g}; float tensors must hold RGB in [0, 1] "
                        "(divide 8-bit values by 255, or pass a uint8 tensor)")
    return x


class ScoresWithInterval(NamedTuple):
    """What a metric made with `interval=` returns: (N,) tensors on its score range."""

    score: torch.Tensor
    low: torch.Tensor
    high: torch.Tensor
    spread: torch.Tensor


class PromptIQAMetric(nn.Module):
    """No-reference quality of images under the requirement given by a prompt set (see the module doc).

    The network stays in eval mode and frozen whatever a parent module does: `.train()` on a model that
    holds the metric (as a loss, say) would otherwise switch on dropout and update BatchNorm statistics.
    """

    metric_mode = "NR"

    def __init__(self, model: PromptIQA, prompts: SavedPrompts, as_loss: bool = False, batch_size: int = 16,
                 precision: str = "auto", ensemble: int | None = None, interval: float | None = None):
        super().__init__()
        self.batch_size = check_batch_size(batch_size)
        self.net = model.eval().requires_grad_(False)
        self.scorer = Scorer(self.net, batch_size=batch_size, precision=precision)
        self.prompts = prepare_prompts(self.scorer, prompts)
        self.ensemble, self.interval = ensemble, interval
        used = pool_prompts(self.net, self.prompts, ensemble, level=interval)
        self._calibration = used.calibration if isinstance(used, PromptEnsemble) else None
        self.register_buffer("prompt_vectors", self.prompts.vectors.detach().clone(), persistent=False)
        sets = used.sets.clone() if isinstance(used, PromptEnsemble) else None
        self.register_buffer("ensemble_sets", sets, persistent=False)
        self.as_loss = as_loss

    def train(self, mode: bool = True) -> "PromptIQAMetric":
        """Only the metric's own flag follows `mode`; the network stays in eval mode."""
        super().train(mode)
        self.net.eval()
        return self

    @property
    def precision(self) -> str:
        return self.scorer.precision

    @property
    def lower_better(self) -> bool:
        """The direction of the prompts' scale, reported as given: scores are never flipped."""
        return self.prompts.lower_better

    @property
    def score_range(self) -> tuple[float, float]:
        return self.prompts.score_range or (0.0, 1.0)

    @property
    def used_prompts(self) -> Prompts:
        """The prompt vectors on the metric's device, or the ensemble drawn from them."""
        if self.ensemble_sets is None:
            return self.prompt_vectors
        return PromptEnsemble(self.prompt_vectors, self.ensemble_sets, self._calibration, self.interval)

    def with_prompts(self, prompts: PromptsInput, score_range: tuple[float, float] | None = None,
                     lower_better: bool = False) -> "PromptIQAMetric":
        """The same network under another requirement (a prompt file, a saved set or a PromptSet)."""
        encoded = prompts_for_model(self.net, prompts, score_range, lower_better, self.precision)
        return PromptIQAMetric(self.net, encoded, self.as_loss, self.batch_size, self.precision, self.ensemble,
                               self.interval)

    def _unit_results(self, images) -> dict[str, torch.Tensor]:
        if isinstance(images, torch.Tensor):
            return self._tensor_results(_as_unit_rgb(images))
        items = list(images) if isinstance(images, (list, tuple)) else [images]
        if not items:
            raise UserError("metric input: no images given; give image paths, PIL images or an RGB tensor")
        if all(_is_pil_image(item) for item in items):
            size = self.net.config.img_size
            return self._tensor_results(to_tensor(np.stack([_pil_to_array(i, size) for i in items])), normalised=True)
        if all(isinstance(item, (str, os.PathLike)) for item in items):
            results = self.scorer.score_with_intervals([os.fspath(i) for i in items], self.used_prompts)
            return {name: torch.from_numpy(values) for name, values in results.items()}
        raise UserError("metric input: give image paths, PIL images, or an RGB tensor (N, 3, H, W) in [0, 1]")

    def _scored(self, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.net.image_features(batch)
        used = self.used_prompts
        if not isinstance(used, PromptEnsemble):
            return {"score": self.net.score_features(features, used).float()}
        return used.score(self.net, features).columns()

    def _tensor_results(self, images: torch.Tensor, normalised: bool = False) -> dict[str, torch.Tensor]:
        device = self.prompt_vectors.device
        x = images.to(device)
        if not normalised:
            size = self.net.config.img_size
            x = F.interpolate(x.float(), size=(size, size), mode="bicubic", align_corners=False)
            x = (x - 0.5) / 0.5
        # the precision paths are scored in (Scorer), so every kind of input gives the same score
        with torch.set_grad_enabled(self.as_loss and torch.is_grad_enabled()), precision_scope(device, self.precision):
            batches = [self._scored(x[i : i + self.batch_size]) for i in range(0, len(x), self.batch_size)]
        return {name: torch.cat([b[name] for b in batches]) for name in batches[0]}

    def forward(self, images) -> torch.Tensor | ScoresWithInterval:
        """Scores (N,) on `score_range` (with `interval`: ScoresWithInterval); paths and PIL images are
        scored without a graph."""
        results = {name: result_on_range(name, values.float(), *self.score_range)
                   for name, values in self._unit_results(images).items()}
        if self.interval is None:
            return results["score"]
        return ScoresWithInterval(results["score"], results["low"], results["high"], results["spread"])


def prompts_for_model(model: PromptIQA, prompts: PromptsInput, score_range: tuple[float, float] | None = None,
                      lower_better: bool = False, precision: str = "auto") -> SavedPrompts:
    """Read (a prompt file, a saved `.pt` set) and encode or check (a PromptSet, SavedPrompts) prompts for
    `model`: saved vectors, from a file or in memory, are refused when another checkpoint encoded them."""
    if isinstance(prompts, (PromptSet, SavedPrompts)):
        given = prompts
    elif isinstance(prompts, (str, os.PathLike)) and is_saved_prompts(prompts):
        given = read_saved_prompts(prompts)
    elif isinstance(prompts, (str, os.PathLike)):
        given = read_prompt_file(prompts, score_range)
    else:
        raise UserError(f"prompts={prompts!r}: give a prompt file (.json/.csv), a saved set (.pt) or a PromptSet")
    source = os.fspath(prompts) if isinstance(prompts, (str, os.PathLike)) else "prompts (saved prompt vectors)"
    return prepare_prompts(Scorer(model, precision=precision), given, score_range, lower_better, source)


def create_metric(
    checkpoint: str | os.PathLike = DEFAULT_CHECKPOINT,
    prompts: PromptsInput | None = None,
    device: str | torch.device = "auto",
    as_loss: bool = False,
    score_range: tuple[float, float] | None = None,
    lower_better: bool = False,
    batch_size: int = 16,
    precision: str = "auto",
    ensemble: int | None = None,
    interval: float | None = None,
) -> PromptIQAMetric:
    """Load a checkpoint (a path or `hf:OWNER/REPO[/FILE]`) and encode `prompts` into a metric module.

    `precision` (auto: bf16 autocast on a CUDA GPU that has it, fp32 elsewhere) applies to every kind
    of input alike: paths, PIL images and tensors. `ensemble` (sets drawn from the prompts; default as
    test.py) and `interval` (a coverage such as 0.9) use a prompt pool (docs/prompt-pools.md).
    """
    if prompts is None:
        raise UserError("create_metric: give prompts= (a prompt file, a saved .pt set or a PromptSet)")
    check_batch_size(batch_size)
    model = load_model(checkpoint, device=resolve_device(str(device)))
    encoded = prompts_for_model(model, prompts, score_range, lower_better, precision)
    return PromptIQAMetric(model, encoded, as_loss, batch_size, precision, ensemble, interval)

"""Scoring images against prompts: encode a prompt set once, score any number of images in batches."""
from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from tqdm import tqdm

from .data.image import read_image, to_tensor
from .data.prompts import PromptSet
from .models import PromptIQA

ImageInput = Sequence[str | os.PathLike] | torch.Tensor


class Scorer:
    """Batched, cached inference around a PromptIQA model.

    >>> scorer = Scorer(load_model("best_model.pth.tar"))
    >>> prompts = scorer.encode_prompts(["a.png", "b.png"], [0.2, 0.9])
    >>> scorer.score_images(["query.png"], prompts)
    """

    def __init__(self, model: PromptIQA, batch_size: int = 16, workers: int = 4):
        self.model = model.eval()
        self.batch_size = batch_size
        self.workers = workers
        self._prompt_cache: dict[tuple, torch.Tensor] = {}

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _batches(self, images: ImageInput, progress: bool) -> Iterable[torch.Tensor]:
        """Normalised image batches on the model's device; files are decoded in parallel threads."""
        size = self.model.config.img_size
        starts = range(0, len(images), self.batch_size)
        with ThreadPoolExecutor(self.workers) as pool:
            for start in tqdm(starts, desc="scoring", unit="batch", disable=not progress):
                chunk = images[start : start + self.batch_size]
                if not isinstance(chunk, torch.Tensor):
                    chunk = to_tensor(np.stack(list(pool.map(lambda p: read_image(p, size), chunk))))
                yield chunk.to(self.device)

    @torch.inference_mode()
    def image_features(self, images: ImageInput, progress: bool = False) -> torch.Tensor:
        return torch.cat([self.model.image_features(batch) for batch in self._batches(images, progress)])

    @torch.inference_mode()
    def encode_prompts(self, images: ImageInput, scores: Sequence[float] | torch.Tensor) -> torch.Tensor:
        """Prompt vectors (n, 128) for ISPs; file-based prompt sets are cached by (path, mtime, score)."""
        scores = torch.as_tensor(scores, dtype=torch.float32)
        key = None
        if not isinstance(images, torch.Tensor):
            key = tuple((os.path.abspath(p), os.stat(p).st_mtime_ns) for p in images) + tuple(scores.tolist())
            if key in self._prompt_cache:
                return self._prompt_cache[key]
        prompts = self.model.prompt_vectors(self.image_features(images), scores.to(self.device))
        if key is not None:
            self._prompt_cache[key] = prompts
        return prompts

    def encode_prompt_set(self, prompt_set: PromptSet) -> torch.Tensor:
        return self.encode_prompts(list(prompt_set.paths), prompt_set.scores)

    @torch.inference_mode()
    def score_images(self, images: ImageInput, prompts: torch.Tensor, progress: bool = False) -> np.ndarray:
        """Scores in [0, 1] of query images (paths or a normalised tensor) under encoded prompts."""
        scores = [self.model.score_images(batch, prompts) for batch in self._batches(images, progress)]
        return torch.cat(scores).float().cpu().numpy()

"""Scoring images against prompts: encode a prompt set once, score any number of images in batches."""
from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, nullcontext

import numpy as np
import torch
from tqdm import tqdm

from ..data.image import read_image, to_tensor
from ..data.prompts import PromptSet
from ..models import PromptIQA
from ..utils.device import (
    autocast,
    check_compile_support,
    compile_errors,
    resolve_precision,
    set_matmul_precision,
)
from ..utils.lru import LRUCache, file_digest

ImageInput = Sequence[str | os.PathLike] | torch.Tensor
PROMPT_CACHE_SIZE = 64  # encoded prompt sets kept per Scorer (as many as the web app keeps)


def padded_to(batch_size: int, function: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    """`function` of a batch (and other arguments), called with the batch padded to `batch_size` rows
    (repeats of its last row) and its result cut back. A compiled function then sees one batch shape
    and compiles once, instead of again for a smaller last batch or prompt set. Rows are independent in
    inference (batch norm uses its running statistics), so padding does not change the kept rows."""

    def call(batch: torch.Tensor, *rest: torch.Tensor) -> torch.Tensor:
        rows = batch.shape[0]
        if rows >= batch_size:
            return function(batch, *rest)
        padding = batch[-1:].expand(batch_size - rows, *batch.shape[1:])
        return function(torch.cat([batch, padding]), *rest)[:rows]

    return call


class Scorer:
    """Batched, cached inference around a PromptIQA model.

    >>> scorer = Scorer(load_model("best_model.pth.tar"))
    >>> prompts = scorer.encode_prompts(["a.png", "b.png"], [0.2, 0.9])
    >>> scorer.score_images(["query.png"], prompts)

    `precision` is `auto` (bf16 autocast on CUDA, fp32 elsewhere), `fp32`, `tf32` or `bf16`;
    `compile=True` compiles the image and scoring paths with torch.compile (the first batch pays the
    compilation; every batch is padded to `batch_size`, so one graph serves them all). On CUDA, building
    a Scorer sets the process's TF32 flags for its precision, once: batches never switch them.
    """

    def __init__(
        self,
        model: PromptIQA,
        batch_size: int = 16,
        workers: int = 4,
        *,
        precision: str = "auto",
        compile: bool = False,
    ):
        self.model = model.eval()
        self.batch_size = batch_size
        self.workers = workers
        self.precision = resolve_precision(precision, self.device)
        if self.device.type == "cuda":
            set_matmul_precision(self.precision)
        self.compiled = compile
        self._image_features = self.model.image_features
        self._score_features = self.model.score_features
        if compile:
            check_compile_support(self.device)
            self._image_features = padded_to(batch_size, torch.compile(self.model.image_features))
            self._score_features = padded_to(batch_size, torch.compile(self.model.score_features))
        self._prompt_cache: LRUCache[torch.Tensor] = LRUCache(PROMPT_CACHE_SIZE)

    @contextmanager
    def _running(self) -> Iterator[None]:
        """No autograd, the chosen precision, and (compiled only) compilation failures reported as UserError."""
        with torch.inference_mode(), autocast(self.device, self.precision), (
            compile_errors() if self.compiled else nullcontext()
        ):
            yield

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _batches(self, images: ImageInput, progress: bool) -> Iterable[torch.Tensor]:
        """Normalised image batches on the model's device; files are decoded in `workers` threads
        (in this thread with 0)."""
        size = self.model.config.img_size
        starts = range(0, len(images), self.batch_size)
        with ThreadPoolExecutor(self.workers) if self.workers else nullcontext() as pool:
            decode = pool.map if pool else map
            for start in tqdm(starts, desc="scoring", unit="batch", disable=not progress):
                chunk = images[start : start + self.batch_size]
                if not isinstance(chunk, torch.Tensor):
                    chunk = to_tensor(np.stack(list(decode(lambda p: read_image(p, size), chunk))))
                yield chunk.to(self.device)

    def image_features(self, images: ImageInput, progress: bool = False) -> torch.Tensor:
        with self._running():
            return torch.cat([self._image_features(batch) for batch in self._batches(images, progress)])

    def encode_prompts(self, images: ImageInput, scores: Sequence[float] | torch.Tensor) -> torch.Tensor:
        """Prompt vectors (n, 128) for ISPs; file-based prompt sets are cached by the files' contents and
        the scores (the last PROMPT_CACHE_SIZE sets)."""
        scores = torch.as_tensor(scores, dtype=torch.float32)
        key = None
        if not isinstance(images, torch.Tensor):
            key = (tuple(file_digest(p) for p in images), tuple(scores.tolist()))
            cached = self._prompt_cache.get(key)
            if cached is not None:
                return cached
        features = self.image_features(images)
        with self._running():
            prompts = self.model.prompt_vectors(features, scores.to(self.device))
        if key is not None:
            self._prompt_cache.put(key, prompts)
        return prompts

    def encode_prompt_set(self, prompt_set: PromptSet) -> torch.Tensor:
        return self.encode_prompts(list(prompt_set.paths), prompt_set.scores)

    def iter_scores(self, images: ImageInput, prompts: torch.Tensor, progress: bool = False) -> Iterator[np.ndarray]:
        """Scores in [0, 1] of query images under encoded prompts, one batch at a time as each is scored."""
        for batch in self._batches(images, progress):
            # entered per batch so that no-grad and autocast never reach the caller's code between batches
            with self._running():
                scores = self._score_features(self._image_features(batch), prompts)
            yield scores.float().cpu().numpy()

    def score_images(self, images: ImageInput, prompts: torch.Tensor, progress: bool = False) -> np.ndarray:
        """Scores in [0, 1] of query images (paths or a normalised tensor) under encoded prompts."""
        return np.concatenate(list(self.iter_scores(images, prompts, progress)))

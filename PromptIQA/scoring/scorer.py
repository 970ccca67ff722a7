"""Scoring images against prompts: encode a prompt set once, score any number of images in batches."""
from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from ..data.loader import normalise
from ..data.prompts import PromptSet
from ..models import PromptIQA
from ..models.prompt_pool import PromptEnsemble
from ..utils.device import (
    autocast,
    check_compile_support,
    compile_errors,
    resolve_precision,
    set_matmul_precision,
)
from ..utils.lru import LRUCache, file_digest
from .collection import Collection, DecodedBatch, DecodedStream, DoneIds, SampleSource

ImageInput = Sequence[str | os.PathLike] | torch.Tensor
Prompts = torch.Tensor | PromptEnsemble  # one set's vectors (n, 128), or an ensemble of sets from a pool
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

    def _decoded(self, stream: DecodedStream, workers: int) -> Iterator[DecodedBatch]:
        """Decoded uint8 batches from `workers` processes (this one with 0), pinned on CUDA."""
        loader = DataLoader(stream, batch_size=None, num_workers=workers, pin_memory=self.device.type == "cuda")
        return iter(loader)

    def _on_device(self, pixels: torch.Tensor) -> torch.Tensor:
        """uint8 (n, H, W, 3) -> the network's input on its device: a quarter of the bytes cross to
        the device, then the arithmetic of `to_tensor` runs there, step for step."""
        return normalise(pixels.to(self.device, non_blocking=True).movedim(-1, -3))

    def _batches(self, images: ImageInput, progress: bool) -> Iterable[torch.Tensor]:
        """Normalised image batches on the model's device; files are decoded in `workers` processes
        (in this one with 0, or when all fit in one batch)."""
        if isinstance(images, torch.Tensor):
            for start in tqdm(range(0, len(images), self.batch_size), desc="scoring", unit="batch",
                              disable=not progress):
                yield images[start : start + self.batch_size].to(self.device)
            return
        stream = DecodedStream(SampleSource(paths=[os.fspath(p) for p in images]), self.model.config.img_size,
                               self.batch_size)
        workers = self.workers if len(images) > self.batch_size else 0
        total = -(-len(images) // self.batch_size)
        for batch in tqdm(self._decoded(stream, workers), total=total, desc="scoring", unit="batch",
                          disable=not progress):
            batch.raise_first_error()
            yield self._on_device(batch.pixels)

    def image_features(self, images: ImageInput, progress: bool = False) -> torch.Tensor:
        with self._running():
            return torch.cat([self._image_features(batch) for batch in self._batches(images, progress)])

    def encode_pool(self, images: ImageInput,
                    scores: Sequence[float] | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(image features, prompt vectors), (n, 128) each, for ISPs; the features are what an ensemble's
        calibration needs. File-based sets are cached by the files' contents and the scores (the last
        PROMPT_CACHE_SIZE sets)."""
        scores = torch.as_tensor(scores, dtype=torch.float32)
        key = None
        if not isinstance(images, torch.Tensor):
            key = (tuple(file_digest(p) for p in images), tuple(scores.tolist()))
            cached = self._prompt_cache.get(key)
            if cached is not None:
                return cached
        features = self.image_features(images)
        with self._running():
            encoded = features, self.model.prompt_vectors(features, scores.to(self.device))
        if key is not None:
            self._prompt_cache.put(key, encoded)
        return encoded

    def encode_prompts(self, images: ImageInput, scores: Sequence[float] | torch.Tensor) -> torch.Tensor:
        """Prompt vectors (n, 128) for ISPs (cached as `encode_pool`)."""
        return self.encode_pool(images, scores)[1]

    def encode_prompt_set(self, prompt_set: PromptSet) -> torch.Tensor:
        return self.encode_prompts(list(prompt_set.paths), prompt_set.scores)

    def iter_results(self, images: ImageInput, prompts: Prompts,
                     progress: bool = False) -> Iterator[dict[str, np.ndarray]]:
        """Per batch, as each is scored: {"score": ...} in [0, 1]; under an ensemble also "spread", and
        "low" and "high" when it is calibrated for intervals."""
        for batch in self._batches(images, progress):
            yield {name: values.cpu().numpy() for name, values in self._score(batch, prompts).items()}

    def iter_scores(self, images: ImageInput, prompts: Prompts, progress: bool = False) -> Iterator[np.ndarray]:
        """Scores in [0, 1] of query images under encoded prompts, one batch at a time as each is scored."""
        for results in self.iter_results(images, prompts, progress):
            yield results["score"]

    def _score(self, batch: torch.Tensor, prompts: Prompts) -> dict[str, torch.Tensor]:
        # entered per batch so that no-grad and autocast never reach the caller's code between batches
        with self._running():
            features = self._image_features(batch)
            if isinstance(prompts, PromptEnsemble):  # the image path ran once; the head runs once per set
                return prompts.score(self.model, features).columns()
            return {"score": self._score_features(features, prompts).float()}

    def score_images(self, images: ImageInput, prompts: Prompts, progress: bool = False) -> np.ndarray:
        """Scores in [0, 1] of query images (paths or a normalised tensor) under encoded prompts."""
        return np.concatenate(list(self.iter_scores(images, prompts, progress)))

    def score_with_intervals(self, images: ImageInput, prompts: Prompts,
                             progress: bool = False) -> dict[str, np.ndarray]:
        """`iter_results`' columns over all images: {"score"} under one set; under an ensemble also
        "spread", and "low" and "high" when it is calibrated. Arrays in [0, 1]."""
        batches = list(self.iter_results(images, prompts, progress))
        return {name: np.concatenate([b[name] for b in batches]) for name in batches[0]}

    def score_collection_batches(
        self, collection: Collection, prompts: Prompts, rank: int = 0, world_size: int = 1,
        done: DoneIds | None = None,
    ) -> Iterator[list[ScoredImage]]:
        """The images of process `rank` of `world_size` not in `done`, scored batch by batch in
        collection order; an image that cannot be used comes back with its error and no score.

        Batches are decoded in `workers` processes while the device works; on CUDA the next batch is
        sent before the previous batch's scores are read, so the device is not left waiting.
        """
        stream = DecodedStream(SampleSource(collection, rank, world_size), self.model.config.img_size,
                               self.batch_size, done)
        pending: deque[tuple[DecodedBatch, dict[str, torch.Tensor], torch.cuda.Event | None]] = deque()
        for batch in self._decoded(stream, self.workers):
            results = self._score(self._on_device(batch.pixels), prompts) if len(batch.pixels) else {}
            event = None
            if results and self.device.type == "cuda":
                results = {name: values.to("cpu", non_blocking=True) for name, values in results.items()}
                event = torch.cuda.Event()
                event.record()
            pending.append((batch, results, event))
            if len(pending) > 1 or event is None:
                yield _scored_rows(*pending.popleft())
        while pending:
            yield _scored_rows(*pending.popleft())

    def score_collection(self, collection: Collection, prompts: Prompts) -> Iterator[ScoredImage]:
        """(id, score, error) for every image of `collection`, in order, streaming.

        >>> for row in scorer.score_collection(Collection(["photos/"], recursive=True), prompts):
        ...     print(row.id, row.score, row.error)
        """
        for rows in self.score_collection_batches(collection, prompts):
            yield from rows


@dataclass(frozen=True)
class ScoredImage:
    """One image's result: `score` in [0, 1], or None with the reason in `error`; `order` places it
    in the collection (unit index, sample index within the unit)."""

    id: str
    score: float | None
    error: str | None
    order: tuple[int, int]
    spread: float | None = None  # under an ensemble: the std of the sets' scores
    low: float | None = None  # with an interval: its bounds
    high: float | None = None

    def on_range(self, low: float, high: float) -> "ScoredImage":
        """The row with its values put on [low, high] (`result_on_range`)."""
        return replace(self, **{name: None if value is None else result_on_range(name, value, low, high)
                                for name, value in self.values().items()})

    def values(self) -> dict[str, float | None]:
        return {"score": self.score, "spread": self.spread, "low": self.low, "high": self.high}


def result_on_range(name: str, values, low: float, high: float):
    """A result column (float, array or tensor) on [0, 1] put on [low, high]: scores and interval bounds
    mapped as `data.prompts.unit_range_to_scores` maps scores, the spread (a width) only scaled."""
    return values * (high - low) if name == "spread" else low + values * (high - low)


def _scored_rows(batch: DecodedBatch, results: dict[str, torch.Tensor], event: torch.cuda.Event | None
                 ) -> list[ScoredImage]:
    if event is not None:
        event.synchronize()
    columns = {name: iter(values.numpy().tolist()) for name, values in results.items()}
    return [ScoredImage(sample_id, None, error, order) if error else
            ScoredImage(sample_id, error=None, order=order, **{name: next(v) for name, v in columns.items()})
            for sample_id, order, error in zip(batch.ids, batch.orders, batch.errors)]

"""Scoring with the exported graphs on ONNX Runtime: what a deployment runs, behind Scorer's methods.

`OnnxScorer(folder)` reads the export's manifest and opens each graph on first use (a baked prompt
set needs only baked.onnx, so a deployment that uses it loads nothing else). Images are paths
(decoded and resized by data/image.py, as test.py does) or arrays already in the graphs' input form.
"""
from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..data.image import read_image, to_tensor
from ..data.prompts import PromptSet
from ..models.checkpoint import load_model
from ..scoring.saved_prompts import SavedPrompts, check_same_identity, checkpoint_identity
from ..utils.errors import UserError
from .extra import require
from .manifest import BAKED, INPUT_LAYOUTS, PROMPT, QUERY, ExportManifest, read_manifest

OnnxImageInput = Sequence[str | os.PathLike] | np.ndarray | torch.Tensor
PromptVectors = np.ndarray | torch.Tensor


def open_session(path: str | os.PathLike, providers: Sequence[str] | None = None, threads: int | None = None):
    """An ONNX Runtime inference session for one graph file (CPU unless `providers` say otherwise)."""
    ort = require("onnxruntime")
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), options, providers=list(providers or ["CPUExecutionProvider"]))


def check_exported_checkpoint(scorer: "OnnxScorer", checkpoint: str | os.PathLike) -> None:
    """Refuse a checkpoint other than the one the scorer's graphs were exported from."""
    if checkpoint_identity(load_model(checkpoint)) != scorer.checkpoint:
        raise UserError(f"{checkpoint}: not the checkpoint exported to {scorer.folder} (their weights "
                        "differ); drop it to score with the export alone, or export this checkpoint with "
                        "promptiqa-export --checkpoint ... --output DIR")


class OnnxScorer:
    """Scorer's scoring methods (encode_prompts, iter_scores, score_images) on an exported folder.

    >>> scorer = OnnxScorer("exported/")
    >>> prompts = scorer.encode_prompts(["a.png", "b.png"], [0.2, 0.9])
    >>> scorer.score_images(["query.png"], prompts)
    >>> scorer.score_images(["query.png"])          # the prompt set baked in with --prompts

    Array inputs take the export's form: (B, S, S, 3) uint8 RGB, or (B, 3, S, S) normalised float32
    for an export made with --input float.
    """

    def __init__(self, folder: str | os.PathLike, batch_size: int = 16, workers: int = 4, *,
                 providers: Sequence[str] | None = None, threads: int | None = None):
        self.folder = Path(folder)
        self.manifest: ExportManifest = read_manifest(self.folder)
        require("onnxruntime")  # the missing extra is reported now, not at the first image
        self.batch_size = batch_size
        self.workers = workers
        self.providers = providers
        self.threads = threads
        self._sessions: dict[str, object] = {}

    @property
    def checkpoint(self) -> str:
        """Identity of the exported checkpoint (scoring.saved_prompts.checkpoint_identity)."""
        return self.manifest.checkpoint

    @property
    def img_size(self) -> int:
        return self.manifest.image_size

    @property
    def baked_prompts(self) -> SavedPrompts | None:
        """The prompt set baked into the export, or None."""
        baked = self.manifest.baked
        if baked is None:
            return None
        return SavedPrompts(torch.from_numpy(baked.array()), baked.prompt_set, baked.score_range,
                            baked.lower_better, self.checkpoint)

    def _session(self, graph: str):
        if graph not in self._sessions:
            self._sessions[graph] = open_session(self.folder / self.manifest.graphs[graph], self.providers,
                                                 self.threads)
        return self._sessions[graph]

    def _as_input(self, images: np.ndarray | torch.Tensor) -> np.ndarray:
        """An array batch checked against the graphs' input form."""
        array = np.asarray(images)
        s, form = self.img_size, self.manifest.input
        shape, dtype = ((s, s, 3), np.uint8) if form == "uint8" else ((3, s, s), np.float32)
        if array.ndim != 4 or array.shape[1:] != shape or array.dtype != dtype:
            raise UserError(f"images of shape {tuple(array.shape)} and type {array.dtype}: this export takes "
                            f"{INPUT_LAYOUTS[form].replace('image_size', str(s))}; pass image paths, or export "
                            f"with --input {'float' if form == 'uint8' else 'uint8'} for the other form")
        return array

    def _batches(self, images: OnnxImageInput, progress: bool) -> Iterator[np.ndarray]:
        """Batches in the graphs' input form; files are decoded in `workers` threads (here with 0)."""
        starts = range(0, len(images), self.batch_size)
        with ThreadPoolExecutor(self.workers) if self.workers else nullcontext() as pool:
            decode = pool.map if pool else map
            for start in tqdm(starts, desc="scoring", unit="batch", disable=not progress):
                chunk = images[start : start + self.batch_size]
                if isinstance(chunk, (np.ndarray, torch.Tensor)):
                    yield self._as_input(chunk)
                    continue
                rgb = np.stack(list(decode(lambda p: read_image(p, self.img_size), chunk)))
                yield rgb if self.manifest.input == "uint8" else to_tensor(rgb).numpy()

    def encode_prompts(self, images: OnnxImageInput, scores: Sequence[float] | np.ndarray) -> np.ndarray:
        """Prompt vectors (n, 128) of ISPs (images with scores in [0, 1]), from the prompt graph."""
        scores = np.asarray(scores, dtype=np.float32).reshape(-1)
        if len(scores) != len(images):
            raise UserError(f"{len(images)} prompt images but {len(scores)} scores; give one score per image")
        session, vectors, start = self._session(PROMPT), [], 0
        for batch in self._batches(images, progress=False):
            vectors.append(session.run(None, {"images": batch, "scores": scores[start : start + len(batch)]})[0])
            start += len(batch)
        return np.concatenate(vectors)

    def encode_prompt_set(self, prompt_set: PromptSet) -> np.ndarray:
        return self.encode_prompts(list(prompt_set.paths), prompt_set.scores)

    def prepare_prompts(self, given: PromptSet | SavedPrompts, score_range: tuple[float, float] | None = None,
                        lower_better: bool = False, source: str | os.PathLike = "saved prompts") -> SavedPrompts:
        """As scoring.saved_prompts.prepare_prompts: a saved set checked against the exported checkpoint,
        or a prompt set encoded by the prompt graph."""
        if isinstance(given, SavedPrompts):
            check_same_identity(given, self.checkpoint, source)
            return replace(given, lower_better=given.lower_better or lower_better)
        vectors = torch.from_numpy(self.encode_prompt_set(given))
        return SavedPrompts(vectors, given, score_range, lower_better, self.checkpoint)

    def _is_baked(self, prompts: PromptVectors | None) -> bool:
        baked = self.manifest.baked
        if prompts is None:
            if baked is None:
                raise UserError(f"{self.folder}: this export has no baked prompt set; give prompts "
                                "(encode_prompts, or --prompts) or export with --prompts")
            return True
        return baked is not None and np.array_equal(np.asarray(prompts), baked.array())

    def iter_scores(self, images: OnnxImageInput, prompts: PromptVectors | None = None,
                    progress: bool = False) -> Iterator[np.ndarray]:
        """Scores in [0, 1], one batch at a time; prompts None (or the baked set's vectors) use baked.onnx."""
        if self._is_baked(prompts):
            session, extra = self._session(BAKED), {}
        else:
            session, extra = self._session(QUERY), {"prompts": np.asarray(prompts, dtype=np.float32)}
        for batch in self._batches(images, progress):
            yield session.run(None, {"images": batch, **extra})[0]

    def score_images(self, images: OnnxImageInput, prompts: PromptVectors | None = None,
                     progress: bool = False) -> np.ndarray:
        """Scores in [0, 1] of query images (paths or arrays) under prompt vectors, or the baked set."""
        return np.concatenate(list(self.iter_scores(images, prompts, progress)))

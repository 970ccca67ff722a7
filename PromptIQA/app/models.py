"""The models a server holds, and the one cache of encoded prompt sets.

The model given at start (`--checkpoint`) is every page's and `/score`'s. With `--allow-load FOLDER` a
page may load a checkpoint file found in that folder, for that page's session only: the session keeps
the checkpoint's identity, so one visitor never changes another's model, and the page's model line
names the model that scores. A few loaded models are kept in memory; one pushed out is read again
when its session next scores, if the file on disk is still the one that was loaded.
"""
from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..data.image import load_images
from ..data.prompts import PromptSet
from ..models.checkpoint import load_model
from ..models.prompt_pool import check_pool_for_intervals
from ..scoring.pools import pool_prompts
from ..scoring.saved_prompts import SavedPrompts, in_memory_identity
from ..scoring.scorer import Prompts, Scorer
from ..utils.errors import UserError
from ..utils.hub import HF_PREFIX, resolve_checkpoint
from ..utils.lru import LRUCache, file_digest
from .texts import model_line, no_model

PROMPT_CACHE_SIZE = 64  # encoded prompt sets kept, over all models
MAX_LOADED_MODELS = 2  # models loaded from the page kept in memory besides the start-up one
CHECKPOINT_SUFFIXES = (".pth.tar", ".pth", ".pt")
MAX_LISTED_CHECKPOINTS = 200


@dataclass(frozen=True)
class CheckpointId:
    """A checkpoint file as it was when loaded: its resolved path, size and modification time."""

    path: str
    size: int
    mtime_ns: int
    shown: str  # how the page names it: never the server's absolute paths

    @classmethod
    def of(cls, path: Path, shown: str) -> "CheckpointId":
        stat = path.stat()
        return cls(str(path.resolve()), stat.st_size, stat.st_mtime_ns, shown)

    def unchanged(self) -> bool:
        try:
            return CheckpointId.of(Path(self.path), self.shown) == self
        except OSError:
            return False


def shown_name(name: str) -> str:
    """A start-up checkpoint as the page names it: hf: names and relative paths as given, absolute paths by
    their folder and file name."""
    if name.startswith(HF_PREFIX) or not Path(name).is_absolute():
        return name
    return "/".join(Path(name).parts[-2:])


@dataclass
class LoadedModel:
    checkpoint: CheckpointId
    scorer: Scorer

    @property
    def description(self) -> str:
        config, model = self.scorer.model.config, self.scorer.model
        return (f"`{self.checkpoint.shown}` ({config.backbone}, {config.img_size} px, trained with "
                f"{model.prompt_num} ISPs) on {self.scorer.device}")


class PromptCache:
    """Encoded prompt sets (the ISPs' image features, which intervals are calibrated from, and their prompt
    vectors), least recently used first out, keyed by content: the checkpoint, the ISP files' digests and
    the scores (so a re-upload of the same files is a hit, and an edited file a miss)."""

    def __init__(self, size: int = PROMPT_CACHE_SIZE):
        self._entries: LRUCache[SavedPrompts] = LRUCache(size)

    def __len__(self) -> int:
        return len(self._entries)

    def encode(self, model: LoadedModel, prompt_set: PromptSet) -> SavedPrompts:
        key = (model.checkpoint, tuple(file_digest(p) for p in prompt_set.paths), prompt_set.scores)
        encoded = self._entries.get(key)
        if encoded is None:
            # decoded here and passed as a tensor, so that the Scorer keeps no copy of its own
            images = load_images(list(prompt_set.paths), model.scorer.model.config.img_size)
            features, vectors = model.scorer.encode_pool(images, prompt_set.scores)
            encoded = SavedPrompts(vectors, prompt_set, None, False, in_memory_identity(model.scorer.model), features)
            self._entries.put(key, encoded)
        return encoded


class ModelRegistry:
    """The start-up model, the models sessions loaded, and the prompt cache they share."""

    def __init__(self, device: torch.device, allowed_folder: str | Path | None = None):
        self.device = device
        self.allowed_folder = Path(allowed_folder).resolve() if allowed_folder is not None else None
        self.default: LoadedModel | None = None
        self.problem = ""  # why the start-up checkpoint did not load, for the page
        self.prompts = PromptCache()
        self._loaded: OrderedDict[CheckpointId, LoadedModel] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def can_load(self) -> bool:
        return self.allowed_folder is not None

    def _read(self, path: Path, shown: str) -> LoadedModel:
        try:
            model = load_model(path, device=self.device)
        except UserError as err:  # the page names the file as the list does, not by its place on the server
            raise UserError(str(err).replace(str(path), shown)) from None
        return LoadedModel(CheckpointId.of(path, shown), Scorer(model))

    def load_default(self, name: str) -> None:
        """The start-up checkpoint: a path or an hf: name, as the operator gave it (its errors name it so)."""
        try:
            model = load_model(name, device=self.device)
        except UserError as err:
            raise UserError(str(err).replace(name, shown_name(name))) from None
        self.default = LoadedModel(CheckpointId.of(resolve_checkpoint(name), shown_name(name)), Scorer(model))

    def checkpoint_choices(self) -> list[str]:
        """Checkpoint files in the allowed folder (relative names), the only ones a page may load."""
        if self.allowed_folder is None:
            return []
        found = []
        for folder, subfolders, files in os.walk(self.allowed_folder):
            subfolders.sort()
            for name in sorted(files):
                path = Path(folder) / name
                # a link leading out of the folder is not in it
                if name.endswith(CHECKPOINT_SUFFIXES) and path.resolve().is_relative_to(self.allowed_folder):
                    found.append(path.relative_to(self.allowed_folder).as_posix())
                    if len(found) == MAX_LISTED_CHECKPOINTS:
                        return found
        return found

    def load_choice(self, choice: str | None) -> CheckpointId:
        """Load one of `checkpoint_choices()` for a session; returns what the session keeps."""
        if not self.can_load:
            raise UserError("this server does not load checkpoints from the page; it scores with the model it "
                            "was started with")
        # only a listed name is looked at: nothing tells whether other paths exist
        if not choice or choice not in self.checkpoint_choices():
            raise UserError("checkpoint: choose one of the files listed under 'Load a checkpoint'")
        model = self._read(self.allowed_folder / choice, choice)
        with self._lock:
            self._remember(model)
        return model.checkpoint

    def _remember(self, model: LoadedModel) -> None:
        self._loaded[model.checkpoint] = model
        self._loaded.move_to_end(model.checkpoint)
        while len(self._loaded) > MAX_LOADED_MODELS:
            self._loaded.popitem(last=False)

    def model(self, checkpoint: CheckpointId | None) -> LoadedModel:
        """The session's model: the start-up one (None), or the checkpoint the session loaded."""
        if checkpoint is None or (self.default is not None and checkpoint == self.default.checkpoint):
            if self.default is None:
                raise UserError("no model is loaded: the server was started without a usable checkpoint"
                                + (" (choose one under 'Load a checkpoint')" if self.can_load else ""))
            return self.default
        with self._lock:
            if checkpoint in self._loaded:
                self._loaded.move_to_end(checkpoint)
                return self._loaded[checkpoint]
        model = self._read(Path(checkpoint.path), checkpoint.shown) if checkpoint.unchanged() else None
        if model is None or model.checkpoint != checkpoint:  # the page must not name one model and use another
            raise UserError(f"checkpoint {checkpoint.shown}: the file changed or went since this page loaded it; "
                            "load it again")
        with self._lock:
            self._remember(model)
        return model

    def status(self, checkpoint: CheckpointId | None) -> str:
        """The page's model line for a session."""
        try:
            return model_line(self.model(checkpoint).description)
        except UserError:
            return no_model(self.problem, self.can_load)

    def pool(self, model: LoadedModel, prompt_set: PromptSet, level: float | None = None) -> Prompts:
        """The prompts to score with, by test.py's rule (`scoring.pools.pool_prompts`): one set of every ISP,
        or, for an interval at `level`, a calibrated ensemble of sets."""
        if level is not None:  # a pool too small is refused before its ISPs are encoded
            check_pool_for_intervals(len(prompt_set.paths))
        return pool_prompts(model.scorer.model, self.prompts.encode(model, prompt_set), level=level)

    def score(self, model: LoadedModel, prompts: Prompts, queries: Sequence[str]) -> dict[str, np.ndarray]:
        """{"score"} in [0, 1] of the query files; under an ensemble also "spread", and "low" and "high"
        when it is calibrated (`Scorer.score_with_intervals`)."""
        return model.scorer.score_with_intervals(list(queries), prompts)

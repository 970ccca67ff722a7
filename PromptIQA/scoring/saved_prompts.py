"""Saved prompt sets: the encoded prompt vectors of a prompt file, reusable without its ISP images.

Encoding the ISPs is most of the work of scoring a single image, and it depends only on the prompt
file and the checkpoint. A saved set (a `.pt` file) holds the prompt vectors and the ISPs' image
features (what an ensemble's interval is calibrated from, docs/prompt-pools.md) with a SHA-256 of
their bytes (so a damaged file is refused), the ISP paths and their scores on [0, 1], the score range
and direction they were given on, and an identity of the checkpoint (a SHA-256 of its weights and
configuration); it is refused with any other checkpoint, as a file or as an object in memory.
Version 2 files (without the features) are still read; they score as before but cannot be calibrated.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import uuid
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from ..data.prompts import PromptSet
from ..models import PromptIQA
from ..models.promptiqa import PROMPT_DIM
from ..utils.atomic import atomic_open
from ..utils.errors import UserError
from .scorer import Scorer

SAVED_PROMPTS_SUFFIX = ".pt"
_FORMAT = "promptiqa-saved-prompts"
_VERSION = 3  # 2: with the vectors' checksum; 3: with the ISPs' image features
_READABLE_VERSIONS = (2, 3)
_HOW_TO_SAVE = "save it again from the prompt file (test.py --prompts PROMPTS.json --save-prompts FILE.pt)"


@dataclass(frozen=True)
class SavedPrompts:
    vectors: torch.Tensor  # (n, 128) float32
    prompt_set: PromptSet  # scores on [0, 1]
    score_range: tuple[float, float] | None  # the scale the prompt file gave the scores on
    lower_better: bool
    checkpoint: str  # checkpoint_identity() of the network that encoded them (in_memory_identity() until saved)
    features: torch.Tensor | None = None  # (n, 128) the ISPs' image features; None from version 2 files


def is_saved_prompts(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() == SAVED_PROMPTS_SUFFIX


def _weights_digest(model: PromptIQA) -> str:
    """SHA-256 over the configuration and every tensor of the network (names, dtypes, shapes, bytes)."""
    digest = hashlib.sha256(json.dumps(model.config.to_dict(), sort_keys=True).encode())
    for name, tensor in sorted(model.state_dict().items()):
        flat = tensor.detach().to("cpu").contiguous().reshape(-1)
        digest.update(f"{name}|{flat.dtype}|{tuple(tensor.shape)}".encode())
        digest.update(flat.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _weights_state(model: PromptIQA) -> tuple:
    """Which tensors the network holds and how often each was changed in place: cheap to read, and
    different as soon as any weight is trained, loaded or replaced."""
    return tuple((name, t.data_ptr(), t._version) for name, t in model.state_dict(keep_vars=True).items())


def checkpoint_identity(model: PromptIQA) -> str:
    """The identity saved sets are checked against; hashed once per set of weights and kept on the
    model (hashing the published network's 1.3 GB takes seconds)."""
    state = _weights_state(model)
    cached = getattr(model, "_checkpoint_identity", None)
    if cached is None or cached[0] != state:
        cached = (state, _weights_digest(model))
        model._checkpoint_identity = cached  # a plain attribute: not a buffer, never saved
    return cached[1]


_IN_MEMORY = "in-memory:"


def in_memory_identity(model: PromptIQA) -> str:
    """The identity of prompts encoded in this process and not saved: this model object with its current
    weights. Cheap (no hashing of the weights), and never equal to another model's or a saved set's."""
    token = getattr(model, "_identity_token", None)
    if token is None:
        token = model._identity_token = uuid.uuid4().hex
    weights = hashlib.sha256(repr(_weights_state(model)).encode()).hexdigest()
    return f"{_IN_MEMORY}{token}:{weights}"


def vectors_checksum(vectors: torch.Tensor, features: torch.Tensor | None = None) -> str:
    """SHA-256 of the vectors' (and the features') shapes and float32 bytes."""
    digest = hashlib.sha256()
    for tensor in (vectors, features) if features is not None else (vectors,):
        flat = tensor.detach().float().cpu().contiguous()
        digest.update(f"{tuple(flat.shape)}|".encode() + flat.numpy().tobytes())
    return digest.hexdigest()


def check_save_path(path: str | os.PathLike) -> None:
    """Refuse a name without the saved-set suffix or in a missing folder before any work is done."""
    path = Path(path)
    if not is_saved_prompts(path):
        raise UserError(f"{path}: saved prompt sets end in {SAVED_PROMPTS_SUFFIX}; e.g. {path.stem}.pt")
    if path.is_dir() or not path.resolve().parent.is_dir():
        raise UserError(f"{path}: {'is a folder' if path.is_dir() else 'its folder does not exist'}; "
                        "give a file name in an existing folder")


def save_prompts(path: str | os.PathLike, saved: SavedPrompts) -> None:
    """Write the set atomically (a temp file, then a rename), tied to the checkpoint that encoded it."""
    check_save_path(path)
    if saved.checkpoint.startswith(_IN_MEMORY):
        raise ValueError("save_prompts: give the set the checkpoint_identity() of its network first")
    vectors = saved.vectors.detach().float().cpu().contiguous()
    features = None if saved.features is None else saved.features.detach().float().cpu().contiguous()
    record = {
        "format": _FORMAT, "version": _VERSION, "checkpoint": saved.checkpoint,
        "vectors": vectors, "features": features, "vectors_sha256": vectors_checksum(vectors, features),
        "paths": list(saved.prompt_set.paths), "scores": list(saved.prompt_set.scores),
        "score_range": list(saved.score_range) if saved.score_range else None,
        "lower_better": saved.lower_better,
    }
    with atomic_open(path, "wb") as f:
        torch.save(record, f)


def _read_record(path: Path) -> dict:
    if not path.is_file():
        raise UserError(f"{path}: {'is a folder' if path.is_dir() else 'file not found'}; "
                        "give a prompt set saved with --save-prompts")
    try:
        record = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # damaged or foreign files fail in many ways inside the unpickler
        record = None
    if not (isinstance(record, dict) and record.get("format") == _FORMAT):
        raise UserError(f"{path}: not a prompt set saved by --save-prompts; {_HOW_TO_SAVE}")
    if record.get("version") not in _READABLE_VERSIONS:
        raise UserError(f"{path}: a saved prompt set of format version {record.get('version')!r}, this version "
                        f"reads {' and '.join(map(str, _READABLE_VERSIONS))}; {_HOW_TO_SAVE}")
    return record


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_record(record: dict) -> str | None:
    """What is wrong with a saved set's contents, or None."""
    types = {"checkpoint": str, "vectors": torch.Tensor, "paths": list, "scores": list, "lower_better": bool,
             "vectors_sha256": str}
    for key, kind in types.items():
        if not isinstance(record.get(key), kind):
            return f"'{key}' is {type(record.get(key)).__name__ if key in record else 'missing'}, not {kind.__name__}"
    vectors, count = record["vectors"], len(record["paths"])
    if vectors.dim() != 2 or vectors.shape[1] != PROMPT_DIM or len(vectors) < 1:
        return f"the vectors have shape {tuple(vectors.shape)}; expected (n, {PROMPT_DIM}) with n >= 1"
    if not vectors.is_floating_point():
        return f"the vectors are {vectors.dtype}, not floating point"
    if not torch.isfinite(vectors).all():
        return "the vectors hold NaN or infinite values"
    features = record.get("features")
    if features is not None and not (isinstance(features, torch.Tensor) and features.shape == vectors.shape
                                     and features.is_floating_point() and torch.isfinite(features).all()):
        return f"the features are not finite floating-point numbers of the vectors' shape {tuple(vectors.shape)}"
    if vectors_checksum(vectors, features) != record["vectors_sha256"]:
        return "the vectors do not match their checksum (the file was changed or damaged)"
    if count != len(vectors) or len(record["scores"]) != count:
        return f"{len(vectors)} vectors, {count} paths and {len(record['scores'])} scores; expected one of each per ISP"
    if not all(isinstance(p, str) for p in record["paths"]) or not all(_is_number(s) for s in record["scores"]):
        return "the paths must be text and the scores finite numbers"
    if "score_range" not in record:
        return "'score_range' is missing"
    score_range = record["score_range"]
    if score_range is not None:
        if not (isinstance(score_range, list) and len(score_range) == 2 and all(map(_is_number, score_range))
                and score_range[0] < score_range[1] and math.isfinite(score_range[1] - score_range[0])):
            return f"score_range is {score_range!r}; expected two finite numbers [MIN, MAX] with MIN < MAX"
    return None


def read_saved_prompts(path: str | os.PathLike) -> SavedPrompts:
    """Read and check a saved set, without checking which checkpoint made it (see check_same_checkpoint)."""
    path = Path(path)
    record = _read_record(path)
    problem = _check_record(record)
    if problem:
        raise UserError(f"{path}: not a valid saved prompt set: {problem}; {_HOW_TO_SAVE}")
    score_range = record["score_range"]
    return SavedPrompts(
        vectors=record["vectors"].float(),
        prompt_set=PromptSet(tuple(record["paths"]), tuple(float(s) for s in record["scores"])),
        score_range=(float(score_range[0]), float(score_range[1])) if score_range else None,
        lower_better=record["lower_better"],
        checkpoint=record["checkpoint"],
        features=None if record.get("features") is None else record["features"].float(),
    )


def check_same_checkpoint(saved: SavedPrompts, model: PromptIQA, source: str | os.PathLike = "saved prompts") -> None:
    """Refuse prompts encoded by a network other than `model` (`source` names the file or object)."""
    own = in_memory_identity(model) if saved.checkpoint.startswith(_IN_MEMORY) else checkpoint_identity(model)
    check_same_identity(saved, own, source)


def check_same_identity(saved: SavedPrompts, identity: str, source: str | os.PathLike = "saved prompts") -> None:
    """Refuse prompts whose network identity is not `identity` (a checkpoint_identity, e.g. of an export)."""
    if saved.checkpoint != identity:
        raise UserError(f"{source}: these prompts were encoded by another checkpoint, so their vectors do not fit "
                        f"this one; use the checkpoint they were encoded with, or {_HOW_TO_SAVE} with this checkpoint")


def prepare_prompts(scorer: Scorer, given: PromptSet | SavedPrompts, score_range: tuple[float, float] | None = None,
                    lower_better: bool = False, source: str | os.PathLike = "saved prompts") -> SavedPrompts:
    """The prompts ready for the scorer's network: a saved set (read from `source`, or made in memory)
    checked against that network and put on its device, or a prompt set encoded by it and tied to it."""
    if isinstance(given, SavedPrompts):
        check_same_checkpoint(given, scorer.model, source)
        features = None if given.features is None else given.features.to(scorer.device)
        return replace(given, vectors=given.vectors.to(scorer.device), features=features,
                       lower_better=given.lower_better or lower_better)
    features, vectors = scorer.encode_pool(list(given.paths), given.scores)
    return SavedPrompts(vectors, given, score_range, lower_better, in_memory_identity(scorer.model), features)

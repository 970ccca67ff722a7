"""Saved prompt sets: the encoded prompt vectors of a prompt file, reusable without its ISP images.

Encoding the ISPs is most of the work of scoring a single image, and it depends only on the prompt
file and the checkpoint. A saved set (a `.pt` file) holds the prompt vectors, the ISP paths and
their scores on [0, 1], the score range and direction they were given on, and an identity of the
checkpoint (a SHA-256 of its weights and configuration); it is refused with any other checkpoint.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from ..data.prompts import PromptSet
from ..models import PromptIQA
from ..utils.atomic import atomic_open
from ..utils.errors import UserError
from .scorer import Scorer

SAVED_PROMPTS_SUFFIX = ".pt"
_FORMAT = "promptiqa-saved-prompts"
_VERSION = 1


@dataclass(frozen=True)
class SavedPrompts:
    vectors: torch.Tensor  # (n, 128) float32 on the CPU
    prompt_set: PromptSet  # scores on [0, 1]
    score_range: tuple[float, float] | None  # the scale the prompt file gave the scores on
    lower_better: bool
    checkpoint: str  # checkpoint_identity() of the network that encoded them


def is_saved_prompts(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() == SAVED_PROMPTS_SUFFIX


def checkpoint_identity(model: PromptIQA) -> str:
    """SHA-256 over the configuration and every tensor of the network (names, dtypes, shapes, bytes)."""
    digest = hashlib.sha256(json.dumps(model.config.to_dict(), sort_keys=True).encode())
    for name, tensor in sorted(model.state_dict().items()):
        flat = tensor.detach().to("cpu").contiguous().reshape(-1)
        digest.update(f"{name}|{flat.dtype}|{tuple(tensor.shape)}".encode())
        digest.update(flat.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def check_save_path(path: str | os.PathLike, flag: str = "--save-prompts") -> None:
    """Refuse a name without the saved-set suffix or in a missing folder before any work is done."""
    path = Path(path)
    if not is_saved_prompts(path):
        raise UserError(f"{flag} {path}: saved prompt sets end in {SAVED_PROMPTS_SUFFIX}; e.g. {path.stem}.pt")
    if path.is_dir() or not path.parent.is_dir():
        raise UserError(f"{flag} {path}: {'is a folder' if path.is_dir() else 'its folder does not exist'}; "
                        "give a file name in an existing folder")


def save_prompts(path: str | os.PathLike, saved: SavedPrompts) -> None:
    """Write the set atomically (a temp file, then a rename)."""
    check_save_path(path)
    record = {
        "format": _FORMAT, "version": _VERSION, "checkpoint": saved.checkpoint,
        "vectors": saved.vectors.detach().float().cpu().contiguous(),
        "paths": list(saved.prompt_set.paths), "scores": list(saved.prompt_set.scores),
        "score_range": list(saved.score_range) if saved.score_range else None,
        "lower_better": saved.lower_better,
    }
    with atomic_open(path, "wb") as f:
        torch.save(record, f)


def _read_record(path: Path, flag: str) -> dict:
    if not path.is_file():
        raise UserError(f"{flag} {path}: {'is a folder' if path.is_dir() else 'file not found'}; "
                        "give a prompt set saved with --save-prompts")
    try:
        record = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # damaged or foreign files fail in many ways inside the unpickler
        record = None
    if not (isinstance(record, dict) and record.get("format") == _FORMAT and record.get("version") == _VERSION):
        raise UserError(f"{flag} {path}: not a prompt set saved by --save-prompts; save it again with "
                        "--prompts PROMPTS.json --save-prompts FILE.pt")
    return record


def read_saved_prompts(path: str | os.PathLike, flag: str = "--prompts") -> SavedPrompts:
    """Read a saved set without checking which checkpoint made it (see check_same_checkpoint)."""
    path = Path(path)
    record = _read_record(path, flag)
    score_range = record["score_range"]
    return SavedPrompts(
        vectors=record["vectors"],
        prompt_set=PromptSet(tuple(record["paths"]), tuple(record["scores"])),
        score_range=tuple(score_range) if score_range else None,
        lower_better=bool(record["lower_better"]),
        checkpoint=record["checkpoint"],
    )


def check_same_checkpoint(saved: SavedPrompts, checkpoint: str, path: str | os.PathLike,
                          flag: str = "--prompts") -> None:
    """Refuse a saved set encoded by a checkpoint other than the one whose identity is `checkpoint`."""
    if saved.checkpoint != checkpoint:
        raise UserError(f"{flag} {path}: these prompts were encoded by another checkpoint, so their vectors do "
                        "not fit this one; use the checkpoint they were saved with, or save them again from the "
                        "prompt file with this checkpoint (--prompts PROMPTS.json --save-prompts FILE.pt)")


def prepare_prompts(scorer: Scorer, given: PromptSet | SavedPrompts, score_range: tuple[float, float] | None = None,
                    lower_better: bool = False, path: str | os.PathLike = "", flag: str = "--prompts") -> SavedPrompts:
    """The prompts ready for the scorer's network: a saved set (read from `path`) checked against that
    network and put on its device, or a prompt set encoded by it (not tied to it until saved)."""
    if isinstance(given, SavedPrompts):
        check_same_checkpoint(given, checkpoint_identity(scorer.model), path, flag)
        return replace(given, vectors=given.vectors.to(scorer.device), lower_better=given.lower_better or lower_better)
    return SavedPrompts(scorer.encode_prompt_set(given), given, score_range, lower_better, "")

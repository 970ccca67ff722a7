"""The JSON beside the exported graphs: what a deployment needs to feed them and to trust them.

It records the input the graphs take (image size, uint8 RGB or normalised float, the normalisation),
the identity of the checkpoint they were exported from (scoring.saved_prompts.checkpoint_identity),
the opset, the weight type, the baked prompt set if any, the export-time check and the versions of
the tools that wrote it.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..data.prompts import PromptSet
from ..utils.errors import UserError

MANIFEST_NAME = "promptiqa-onnx.json"
_FORMAT = "promptiqa-onnx"
_VERSION = 1

QUERY, PROMPT, BAKED = "query", "prompt", "baked"
GRAPH_FILES = {QUERY: "query.onnx", PROMPT: "prompt.onnx", BAKED: "baked.onnx"}
INPUT_FORMS = ("uint8", "float")
# how the float input is made from the uint8 RGB image (data/image.py to_tensor): (x / divide - mean) / std
NORMALISATION = {"divide": 255.0, "mean": 0.5, "std": 0.5}
RESIZE = "whole image to image_size x image_size, OpenCV INTER_CUBIC on 8-bit BGR, then RGB (docs/model.md 5)"
INPUT_LAYOUTS = {"uint8": "(batch, image_size, image_size, 3) uint8 RGB",
                 "float": "(batch, 3, image_size, image_size) float32 normalised"}


@dataclass(frozen=True)
class BakedPrompts:
    """The prompt set baked into baked.onnx; its vectors are also kept here to recognise it."""

    paths: tuple[str, ...]
    scores: tuple[float, ...]
    score_range: tuple[float, float] | None
    lower_better: bool
    vectors: tuple[tuple[float, ...], ...]  # (n, 128), float32 values

    @property
    def prompt_set(self) -> PromptSet:
        return PromptSet(self.paths, self.scores)

    def array(self) -> np.ndarray:
        return np.asarray(self.vectors, dtype=np.float32)


@dataclass(frozen=True)
class ExportManifest:
    image_size: int
    input: str  # one of INPUT_FORMS
    checkpoint: str  # checkpoint_identity() of the exported network
    model_config: dict
    opset: int
    weights: str  # "fp32" or "int8"
    graphs: dict[str, str]  # QUERY/PROMPT/BAKED -> file name in the folder
    check: dict  # tolerance and the largest |ONNX Runtime - PyTorch| per graph on the check inputs
    versions: dict[str, str]
    baked: BakedPrompts | None = None

    def to_json(self) -> str:
        record = {"format": _FORMAT, "version": _VERSION, **asdict(self),
                  "input_layout": INPUT_LAYOUTS[self.input], "normalisation": NORMALISATION, "resize": RESIZE}
        return json.dumps(record, indent=1)


def _baked_from(record: dict | None) -> BakedPrompts | None:
    if record is None:
        return None
    score_range = record["score_range"]
    return BakedPrompts(tuple(record["paths"]), tuple(record["scores"]),
                        tuple(score_range) if score_range else None, bool(record["lower_better"]),
                        tuple(tuple(row) for row in record["vectors"]))


def read_manifest(folder: str | os.PathLike) -> ExportManifest:
    """The export in `folder`, its graph files checked present; anything else is refused with the fix."""
    folder = Path(folder)
    path = folder / MANIFEST_NAME
    fix = "give a folder written by promptiqa-export (python -m PromptIQA.commands.export)"
    if not folder.is_dir():
        raise UserError(f"{folder}: {'is a file' if folder.exists() else 'no such folder'}; {fix}")
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{folder}: no {MANIFEST_NAME} in it, so it is not an ONNX export; {fix}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserError(f"{path}: not valid JSON ({err}); export again") from None
    if not (isinstance(record, dict) and record.get("format") == _FORMAT and record.get("version") == _VERSION):
        raise UserError(f"{path}: not a PromptIQA ONNX export of format version {_VERSION}; export again")
    manifest = ExportManifest(
        image_size=int(record["image_size"]), input=record["input"], checkpoint=record["checkpoint"],
        model_config=record["model_config"], opset=int(record["opset"]), weights=record["weights"],
        graphs=dict(record["graphs"]), check=record["check"], versions=record["versions"],
        baked=_baked_from(record.get("baked")),
    )
    missing = [name for name in manifest.graphs.values() if not (folder / name).is_file()]
    if missing:
        raise UserError(f"{folder}: graph file(s) {', '.join(missing)} missing; copy the whole folder or "
                        "export again")
    return manifest

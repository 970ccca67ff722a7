"""Export the scoring path to ONNX, check it against PyTorch, and publish the folder atomically.

Exporter: torch.onnx's TorchScript tracer (`dynamo=False`). It handles this network as it is (the
batch size stays symbolic through the `view`s of image_features), exports in seconds where the
torch.export-based exporter takes several times longer on a 2-core CPU, and needs no onnxscript;
the graphs it writes run as fast on ONNX Runtime. Every graph is run on ONNX Runtime before the
folder is published, at batch sizes 1 and 3, and compared with PyTorch: an export outside the
tolerance is refused, so a tracing or quantisation problem never reaches a deployment.
"""
from __future__ import annotations

import logging
import os
import shutil
import tempfile
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import timm
import torch
from torch import nn

from ..data.image import read_image, to_tensor
from ..models import PromptIQA
from ..models.promptiqa import PROMPT_DIM
from ..scoring.saved_prompts import SavedPrompts, checkpoint_identity
from ..utils.errors import UserError
from .extra import require
from .graphs import BakedGraph, PromptGraph, QueryGraph
from .manifest import BAKED, GRAPH_FILES, INPUT_FORMS, MANIFEST_NAME, PROMPT, QUERY, BakedPrompts, ExportManifest
from .runtime import open_session

DEFAULT_OPSET = 17  # LayerNormalization is an ONNX operator from opset 17 on
MAX_OPSET = 20  # the highest the TorchScript exporter writes
# largest |ONNX Runtime - PyTorch fp32| score accepted at export time: fp32 is the same arithmetic;
# int8 weights move scores by about 1e-3 on the tiny test model (the benchmark measures the real cost)
TOLERANCE = {"fp32": 1e-4, "int8": 2e-2}
QUANTIZE_CHOICES = ("int8",)
_CHECK_QUERIES = 3  # check batch sizes: all of them, and the first alone


@dataclass(frozen=True)
class CheckInputs:
    isp_images: np.ndarray  # (n, S, S, 3) uint8 RGB
    isp_scores: np.ndarray  # (n,) float32 in [0, 1]
    queries: np.ndarray  # (_CHECK_QUERIES, S, S, 3) uint8 RGB


def synthetic_images(count: int, size: int, seed: int) -> np.ndarray:
    """Deterministic uint8 RGB images: colour ramps with noise, so the network sees varied content."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 255, size)[None, None, :, None] * rng.uniform(0.2, 1.0, size=(count, 1, 1, 3))
    return np.clip(ramp + rng.normal(0, 25, size=(count, size, size, 3)), 0, 255).astype(np.uint8)


def check_inputs(size: int, prompts: SavedPrompts | None) -> CheckInputs:
    """The baked prompt set's own ISP images when they are at hand (a saved set may have outlived
    them), else synthetic ones; synthetic queries."""
    if prompts is not None and all(Path(p).is_file() for p in prompts.prompt_set.paths):
        isp = np.stack([read_image(p, size) for p in prompts.prompt_set.paths])
        scores = np.asarray(prompts.prompt_set.scores, dtype=np.float32)
    else:
        isp, scores = synthetic_images(4, size, seed=1), np.linspace(0.1, 0.9, 4, dtype=np.float32)
    return CheckInputs(isp, scores, synthetic_images(_CHECK_QUERIES, size, seed=2))


def check_output_folder(output: Path) -> None:
    """Refuse, before any work, a target that is a file, in a missing folder, or a non-empty folder
    other than an earlier export (which is replaced)."""
    if output.exists() and not output.is_dir():
        raise UserError(f"{output}: is a file; give a folder name")
    if not output.parent.is_dir():
        raise UserError(f"{output}: folder {output.parent} does not exist; create it or write elsewhere")
    if not os.access(output.parent, os.W_OK):
        raise UserError(f"{output}: folder {output.parent} is not writable by this user; write elsewhere")
    if output.is_dir() and any(output.iterdir()) and not (output / MANIFEST_NAME).is_file():
        raise UserError(f"{output}: folder exists and is not an earlier export; give a new or empty folder")


@contextmanager
def _quiet_tracing():
    """The tracer's notices (its deprecation, Python checks frozen into the trace) are not the user's
    concern: the export-time check runs every graph at two batch sizes against PyTorch."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*legacy TorchScript-based ONNX export")
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.onnx\.")  # its own internals
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        yield


def _trace(module: nn.Module, inputs: tuple, dynamic: dict[str, dict[int, str]], path: Path, opset: int) -> None:
    """Write one graph; `dynamic` names every input and then the output, with its symbolic first axis."""
    names = list(dynamic)
    with _quiet_tracing(), torch.no_grad():
        torch.onnx.export(module.eval(), inputs, str(path), dynamo=False, opset_version=opset,
                          input_names=names[:-1], output_names=names[-1:], dynamic_axes=dynamic,
                          do_constant_folding=True)


def _graph_input(images: np.ndarray, input_form: str) -> np.ndarray:
    return images if input_form == "uint8" else to_tensor(images).numpy()


def _write_graphs(model: PromptIQA, folder: Path, inputs: CheckInputs, baked: torch.Tensor | None,
                  input_form: str, opset: int) -> dict[str, str]:
    """query.onnx, prompt.onnx and (with a prompt set) baked.onnx; traced at batch 2, checked at 1 and 3."""
    example = torch.from_numpy(_graph_input(inputs.queries[:2], input_form))
    batch, n = {0: "batch"}, {0: "n"}
    _trace(QueryGraph(model, input_form), (example, torch.zeros(3, PROMPT_DIM)),
           {"images": batch, "prompts": n, "scores": batch}, folder / GRAPH_FILES[QUERY], opset)
    _trace(PromptGraph(model, input_form), (example, torch.tensor([0.2, 0.8])),
           {"images": n, "scores": n, "prompts": n}, folder / GRAPH_FILES[PROMPT], opset)
    graphs = [QUERY, PROMPT]
    if baked is not None:
        _trace(BakedGraph(model, input_form, baked), (example,), {"images": batch, "scores": batch},
               folder / GRAPH_FILES[BAKED], opset)
        graphs.append(BAKED)
    return {graph: GRAPH_FILES[graph] for graph in graphs}


def _quantize(folder: Path, graphs: dict[str, str]) -> None:
    """ONNX Runtime's dynamic quantisation: int8 weights, activations quantised per batch at run time."""
    quantization = require("onnxruntime.quantization")
    for name in graphs.values():
        source, target = folder / name, folder / f"{name}.int8"
        logging.disable(logging.WARNING)  # its advice to pre-process first, printed through the root logger
        try:
            quantization.quantize_dynamic(source, target, weight_type=quantization.QuantType.QInt8)
        finally:
            logging.disable(logging.NOTSET)
        os.replace(target, source)


def _max_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64))))


def check_graphs(model: PromptIQA, folder: Path, graphs: dict[str, str], inputs: CheckInputs,
                 baked: torch.Tensor | None, input_form: str) -> dict[str, float]:
    """Largest |ONNX Runtime - PyTorch| score per graph, at batch sizes 3 and 1.

    query: the query graph under PyTorch's prompt vectors; prompt: the query graph under the prompt
    graph's vectors (so the prompt graph is judged by the scores it leads to); baked: the baked graph.
    """
    with torch.no_grad():
        vectors = model.encode_prompts(to_tensor(inputs.isp_images), torch.from_numpy(inputs.isp_scores))
        expected = model.score_images(to_tensor(inputs.queries), vectors).numpy()
        expected_baked = model.score_images(to_tensor(inputs.queries), baked).numpy() if baked is not None else None
    queries = _graph_input(inputs.queries, input_form)
    sessions = {graph: open_session(folder / name) for graph, name in graphs.items()}

    def run_both(graph: str, extra: dict[str, np.ndarray], reference: np.ndarray) -> float:
        whole = sessions[graph].run(None, {"images": queries, **extra})[0]
        first = sessions[graph].run(None, {"images": queries[:1], **extra})[0]
        return max(_max_diff(whole, reference), _max_diff(first, reference[:1]))

    isp = _graph_input(inputs.isp_images, input_form)
    onnx_vectors = sessions[PROMPT].run(None, {"images": isp, "scores": inputs.isp_scores})[0]
    diffs = {QUERY: run_both(QUERY, {"prompts": vectors.numpy()}, expected),
             PROMPT: run_both(QUERY, {"prompts": onnx_vectors}, expected)}
    if baked is not None:
        diffs[BAKED] = run_both(BAKED, {}, expected_baked)
    return diffs


def _versions() -> dict[str, str]:
    onnx, ort = require("onnx"), require("onnxruntime")
    return {"torch": torch.__version__, "timm": timm.__version__, "onnx": onnx.__version__,
            "onnxruntime": ort.__version__, "exporter": "torch.onnx TorchScript (dynamo=False)"}


def _publish(staging: Path, output: Path) -> None:
    """Put the finished folder at `output` by renames; an earlier export there is replaced whole."""
    if output.is_dir() and any(output.iterdir()):
        old = Path(tempfile.mkdtemp(prefix=f".{output.name}.old.", dir=output.parent))
        os.replace(output, old / output.name)
        os.replace(staging, output)
        shutil.rmtree(old)
    else:
        os.replace(staging, output)


def export_onnx(model: PromptIQA, output: str | os.PathLike, prompts: SavedPrompts | None = None, *,
                quantize: str | None = None, opset: int = DEFAULT_OPSET, input_form: str = "uint8") -> ExportManifest:
    """Export `model`'s scoring path to the folder `output` (see the module doc) and return its manifest.

    `prompts` (encoded by this model) are baked into baked.onnx. `quantize="int8"` writes int8 graphs.
    Nothing is written unless every graph agrees with PyTorch within TOLERANCE. The model is moved to
    the CPU in fp32 (where the graphs are traced and checked).
    """
    require("onnx")
    require("onnxruntime")
    if input_form not in INPUT_FORMS:
        raise UserError(f"input form {input_form!r}: give one of {', '.join(INPUT_FORMS)}")
    if quantize not in (None, *QUANTIZE_CHOICES):
        raise UserError(f"--quantize {quantize}: give one of {', '.join(QUANTIZE_CHOICES)}")
    if not DEFAULT_OPSET <= opset <= MAX_OPSET:
        raise UserError(f"--opset {opset}: give an opset from {DEFAULT_OPSET} to {MAX_OPSET}")
    output = Path(output)
    check_output_folder(output)
    model = model.float().cpu().eval()
    baked = prompts.vectors.detach().float().cpu() if prompts is not None else None
    inputs = check_inputs(model.config.img_size, prompts)
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.", dir=output.parent))
    try:
        graphs = _write_graphs(model, staging, inputs, baked, input_form, opset)
        check = {"fp32_max_abs_diff": check_graphs(model, staging, graphs, inputs, baked, input_form)}
        weights = quantize or "fp32"
        if quantize:
            _quantize(staging, graphs)
            check["int8_max_abs_diff"] = check_graphs(model, staging, graphs, inputs, baked, input_form)
        check["tolerance"] = TOLERANCE[weights]
        worst = max(check[f"{weights}_max_abs_diff"].items(), key=lambda item: item[1])
        if worst[1] > TOLERANCE[weights]:
            raise UserError(f"{output}: not written: the {weights} {worst[0]} graph's scores differ from "
                            f"PyTorch's by {worst[1]:.3g}, more than the tolerance {TOLERANCE[weights]:g}; "
                            "export without --quantize, or with another --opset")
        manifest = ExportManifest(
            image_size=model.config.img_size, input=input_form, checkpoint=checkpoint_identity(model),
            model_config=model.config.to_dict(), opset=opset, weights=weights, graphs=graphs, check=check,
            versions=_versions(), baked=_baked_record(prompts),
        )
        (staging / MANIFEST_NAME).write_text(manifest.to_json(), encoding="utf-8")
        _publish(staging, output)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return manifest


def _baked_record(prompts: SavedPrompts | None) -> BakedPrompts | None:
    if prompts is None:
        return None
    vectors = prompts.vectors.detach().float().cpu().numpy()
    return BakedPrompts(prompts.prompt_set.paths, prompts.prompt_set.scores, prompts.score_range,
                        prompts.lower_better, tuple(tuple(float(v) for v in row) for row in vectors))

"""ONNX export (promptiqa-export) and scoring on ONNX Runtime (OnnxScorer, test.py --runtime onnx).

A 32 px tiny-backbone checkpoint is exported once per module through the command line, with a prompt
file baked in; a second export is int8 with float input. Everything is compared with PyTorch's
scores on real image files.
"""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import ROOT, write_image

from PromptIQA.commands import export as export_cli
from PromptIQA.commands import score as score_cli
from PromptIQA.commands.common import run_main
from PromptIQA.data.image import read_image
from PromptIQA.data.prompts import read_prompt_file
from PromptIQA.export import OnnxScorer, exporter, read_manifest
from PromptIQA.export.manifest import MANIFEST_NAME
from PromptIQA.export.runtime import open_session
from PromptIQA.models import ModelConfig, PromptIQA
from PromptIQA.models.checkpoint import load_model, save_checkpoint
from PromptIQA.scoring.saved_prompts import checkpoint_identity
from PromptIQA.scoring.scorer import Scorer
from PromptIQA.utils.errors import UserError

SMALL = ModelConfig(backbone="vit_tiny_patch16_224", img_size=32)
FP32_TOLERANCE = 1e-5
INT8_TOLERANCE = 1e-2  # int8 weights on the tiny model: about 3e-3 measured


def make_checkpoint(path, seed: int):
    torch.manual_seed(seed)
    model = PromptIQA(SMALL).eval()
    save_checkpoint({"model": model.state_dict(), "model_config": SMALL.to_dict()}, path)
    return path


def run(main, argv, capsys):
    code = run_main(main, [str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def score_lines(out: str) -> dict[str, float]:
    return {path: float(score) for path, score in (line.split("\t") for line in out.strip().splitlines())}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A checkpoint, another one, four ISP images with prompts.json, seven query images."""
    root = tmp_path_factory.mktemp("onnx")
    for i in range(4):
        write_image(root / "isp" / f"p{i}.png", seed=i)
    rows = ",".join(f'["isp/p{i}.png", {0.2 * i + 0.1:.1f}]' for i in range(4))
    (root / "prompts.json").write_text(f'{{"isp": [{rows}]}}')
    for i in range(7):
        write_image(root / "queries" / f"q{i}.{'jpg' if i % 2 else 'png'}", seed=20 + i, size=(30 + 7 * i, 50))
    make_checkpoint(root / "small.pth.tar", seed=0)
    make_checkpoint(root / "other.pth.tar", seed=1)
    return root


@pytest.fixture(scope="module")
def queries(files) -> list[str]:
    return sorted(str(p) for p in (files / "queries").iterdir())


@pytest.fixture(scope="module")
def torch_scorer(files) -> Scorer:
    return Scorer(load_model(files / "small.pth.tar"), workers=0, precision="fp32")


@pytest.fixture(scope="module")
def exported(files):
    """fp32 export with prompts.json baked in, through the command line."""
    folder = files / "exported"
    code = run_main(export_cli.main, ["--checkpoint", str(files / "small.pth.tar"), "--output", str(folder),
                                      "--prompts", str(files / "prompts.json")])
    assert code == 0
    return folder


@pytest.fixture(scope="module")
def exported_int8(files):
    folder = files / "int8"
    code = run_main(export_cli.main, ["--checkpoint", str(files / "small.pth.tar"), "--output", str(folder),
                                      "--quantize", "int8", "--input", "float"])
    assert code == 0
    return folder


def test_export_round_trips_within_1e_5(exported, files, queries, torch_scorer):
    manifest = read_manifest(exported)
    assert sorted(os.listdir(exported)) == sorted([MANIFEST_NAME, "query.onnx", "prompt.onnx", "baked.onnx"])
    assert manifest.checkpoint == checkpoint_identity(torch_scorer.model)
    assert (manifest.image_size, manifest.input, manifest.opset, manifest.weights) == (32, "uint8", 17, "fp32")
    assert max(manifest.check["fp32_max_abs_diff"].values()) < FP32_TOLERANCE
    assert {"torch", "onnx", "onnxruntime"} <= set(manifest.versions)
    prompt_set = read_prompt_file(files / "prompts.json")
    onnx = OnnxScorer(exported, workers=0)
    vectors = onnx.encode_prompt_set(prompt_set)
    expected_vectors = torch_scorer.encode_prompt_set(prompt_set)
    assert vectors.shape == (4, 128)
    assert np.abs(vectors - expected_vectors.numpy()).max() < FP32_TOLERANCE
    scores = onnx.score_images(queries, vectors)
    expected = torch_scorer.score_images(queries, expected_vectors)
    assert scores.shape == (7,) and np.abs(scores - expected).max() < FP32_TOLERANCE
    assert np.ptp(expected) > 0  # the queries score differently, so equal scores mean something


def test_dynamic_batch_sizes_1_and_7(exported, queries, torch_scorer):
    images = np.stack([read_image(p, 32) for p in queries])
    prompts = np.random.default_rng(0).normal(size=(5, 128)).astype(np.float32)  # 5 prompts, traced with 3
    session = open_session(exported / "query.onnx")
    seven = session.run(None, {"images": images, "prompts": prompts})[0]
    ones = np.concatenate([session.run(None, {"images": images[i : i + 1], "prompts": prompts})[0] for i in range(7)])
    expected = torch_scorer.score_images(queries, torch.from_numpy(prompts))
    assert seven.shape == (7,) and ones.shape == (7,)
    assert np.abs(seven - expected).max() < FP32_TOLERANCE and np.abs(ones - expected).max() < FP32_TOLERANCE
    by_one = OnnxScorer(exported, batch_size=1, workers=2).score_images(queries, prompts)
    assert np.abs(by_one - seven).max() < 1e-6


def test_baked_graph_equals_query_graph_with_prompt_graph(exported, files, queries):
    images = np.stack([read_image(p, 32) for p in queries])
    prompt_set = read_prompt_file(files / "prompts.json")
    isp = np.stack([read_image(p, 32) for p in prompt_set.paths])
    vectors = open_session(exported / "prompt.onnx").run(
        None, {"images": isp, "scores": np.asarray(prompt_set.scores, dtype=np.float32)})[0]
    two_graphs = open_session(exported / "query.onnx").run(None, {"images": images, "prompts": vectors})[0]
    baked = open_session(exported / "baked.onnx").run(None, {"images": images})[0]
    assert np.abs(baked - two_graphs).max() < 1e-6
    onnx = OnnxScorer(exported, workers=0)
    assert onnx.baked_prompts.prompt_set == prompt_set
    assert np.abs(onnx.score_images(queries) - baked).max() < 1e-6  # no prompts: the baked graph


def test_int8_export_stays_within_its_tolerance(exported_int8, exported, files, queries, torch_scorer):
    manifest = read_manifest(exported_int8)
    assert (manifest.weights, manifest.input) == ("int8", "float")
    assert manifest.check["tolerance"] == exporter.TOLERANCE["int8"]
    assert 0 < max(manifest.check["int8_max_abs_diff"].values()) < INT8_TOLERANCE
    assert os.path.getsize(exported_int8 / "query.onnx") < 0.5 * os.path.getsize(exported / "query.onnx")
    prompt_set = read_prompt_file(files / "prompts.json")
    onnx = OnnxScorer(exported_int8, workers=0)
    scores = onnx.score_images(queries, onnx.encode_prompt_set(prompt_set))
    expected = torch_scorer.score_images(queries, torch_scorer.encode_prompt_set(prompt_set))
    assert np.abs(scores - expected).max() < INT8_TOLERANCE


def test_array_input_in_the_wrong_form_is_refused(exported_int8, queries):
    uint8 = np.stack([read_image(p, 32) for p in queries[:2]])
    with pytest.raises(UserError) as caught:
        OnnxScorer(exported_int8).score_images(uint8, np.zeros((2, 128), np.float32))
    assert "(batch, 3, 32, 32) float32 normalised" in str(caught.value) and "--input uint8" in str(caught.value)


def test_test_py_onnx_runtime_equals_pytorch(exported, files, capsys):
    common = ["--prompts", files / "prompts.json", "--images", files / "queries"]
    code, torch_out, _ = run(score_cli.main, ["--checkpoint", files / "small.pth.tar", "--device", "cpu"] + common,
                             capsys)
    assert code == 0
    code, onnx_out, _ = run(score_cli.main, ["--runtime", "onnx", "--onnx", exported] + common, capsys)
    assert code == 0
    code, with_checkpoint, _ = run(score_cli.main, ["--runtime", "onnx", "--onnx", exported,
                                                    "--checkpoint", files / "small.pth.tar"] + common, capsys)
    assert code == 0
    code, baked_out, _ = run(score_cli.main, ["--onnx", exported, "--images", files / "queries"], capsys)
    assert code == 0
    expected = score_lines(torch_out)
    assert len(expected) == 7
    for out in (onnx_out, with_checkpoint, baked_out):
        got = score_lines(out)
        assert got.keys() == expected.keys() and max(abs(got[p] - expected[p]) for p in got) < FP32_TOLERANCE


def test_graphs_and_prompts_of_another_checkpoint_are_refused(exported, files, tmp_path, capsys):
    other_set = tmp_path / "other.pt"
    code, _, _ = run(score_cli.main, ["--checkpoint", files / "other.pth.tar", "--device", "cpu", "--prompts",
                                      files / "prompts.json", "--save-prompts", other_set], capsys)
    assert code == 0
    images = ["--images", files / "queries"]
    code, out, err = run(score_cli.main, ["--runtime", "onnx", "--onnx", exported, "--prompts", other_set] + images,
                         capsys)
    assert code == 2 and out == "" and "encoded by another checkpoint" in err and "Traceback" not in err
    code, out, err = run(score_cli.main, ["--runtime", "onnx", "--onnx", exported, "--checkpoint",
                                          files / "other.pth.tar"] + images, capsys)
    assert code == 2 and out == "" and "not the checkpoint exported to" in err
    code, _, err = run(export_cli.main, ["--checkpoint", files / "small.pth.tar", "--output", tmp_path / "baked",
                                         "--prompts", other_set], capsys)
    assert code == 2 and "encoded by another checkpoint" in err and not (tmp_path / "baked").exists()


@pytest.mark.parametrize("flags, message", [
    (["--runtime", "onnx"], "--runtime onnx: give --onnx DIR"),
    (["--onnx", "DIR", "--compile", "--precision", "bf16"], "--compile, --precision: options of the PyTorch runtime"),
    (["--onnx", "DIR", "--dataset", "demo_kadid"], "--runtime onnx applies to scoring images"),
])
def test_test_py_onnx_refuses_what_does_not_apply(flags, message, files, capsys):
    flags = [str(files) if f == "DIR" else f for f in flags]
    code, out, err = run(score_cli.main, flags + ["--prompts", files / "prompts.json", "--images", files / "queries"],
                         capsys)
    assert code == 2 and out == "" and message in err and "Traceback" not in err


def test_export_refuses_a_folder_that_is_not_an_export_before_loading(files, tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    code, _, err = run(export_cli.main, ["--checkpoint", tmp_path / "missing.pth.tar", "--output", tmp_path], capsys)
    assert code == 2 and "folder exists and is not an earlier export" in err
    assert os.listdir(tmp_path) == ["notes.txt"]


def test_an_export_beyond_tolerance_is_not_written(files, tmp_path, monkeypatch):
    monkeypatch.setitem(exporter.TOLERANCE, "int8", 1e-9)  # int8 weights always move the scores more
    with pytest.raises(UserError, match="not written.*differ from PyTorch's"):
        exporter.export_onnx(load_model(files / "small.pth.tar"), tmp_path / "out", quantize="int8")
    assert os.listdir(tmp_path) == []  # neither the folder nor its staging copy


BLOCK_ONNXRUNTIME = "import runpy, sys; sys.modules['onnxruntime'] = None; "  # as if the extra were not installed


def test_missing_extra_makes_promptiqa_export_name_the_install_command(files, tmp_path):
    launcher = BLOCK_ONNXRUNTIME + "sys.argv[0] = 'promptiqa-export'; runpy.run_module('PromptIQA.commands.export', run_name='__main__')"
    result = subprocess.run([sys.executable, "-c", launcher, "--checkpoint", str(files / "small.pth.tar"),
                             "--output", str(tmp_path / "out")], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and 'pip install ".[onnx]"' in result.stderr and "onnxruntime" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "out").exists()


def test_missing_extra_makes_test_py_onnx_name_the_install_command(exported, files):
    launcher = BLOCK_ONNXRUNTIME + "sys.argv = sys.argv[1:]; runpy.run_path('test.py', run_name='__main__')"
    result = subprocess.run([sys.executable, "-c", launcher, "test.py", "--runtime", "onnx", "--onnx", str(exported),
                             "--images", str(files / "queries")], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and 'pip install ".[onnx]"' in result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""

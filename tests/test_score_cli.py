"""test.py scoring: outputs, prompt formats, and every user error with a clear message."""
from __future__ import annotations

import csv
import json
import re
import subprocess
import sys

import pytest
import torch

from conftest import ROOT
from PromptIQA.commands import score as score_cli
from PromptIQA.commands.common import run_main



def run(argv, capsys):
    code = run_main(score_cli.main, [str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def score_lines(out: str) -> dict[str, float]:
    return {path: float(score) for path, score in (line.split("\t") for line in out.strip().splitlines())}


@pytest.fixture
def base(tiny_checkpoint, prompt_dir):
    return ["--checkpoint", tiny_checkpoint, "--prompts", prompt_dir / "prompts.json", "--device", "cpu"]


def test_scores_one_image_with_six_decimals(base, prompt_dir, capsys):
    code, out, _ = run(base + ["--images", prompt_dir / "query.jpg"], capsys)
    assert code == 0
    path, score = out.strip().split("\t")
    assert path == str(prompt_dir / "query.jpg") and 0 <= float(score) <= 1 and len(score.split(".")[1]) >= 6


def test_folder_and_csv_output(base, prompt_dir, tmp_path, capsys):
    out_csv = tmp_path / "scores.csv"
    code, out, err = run(base + ["--images", prompt_dir / "isp", prompt_dir / "query.jpg", "--output", out_csv], capsys)
    assert code == 0
    printed = score_lines(out)
    assert len(printed) == 5 and "scoring" in err  # progress bar on stderr
    with open(out_csv) as f:
        rows = list(csv.DictReader(f))
    assert {r["path"]: float(r["score"]) for r in rows} == printed


def test_csv_prompts_equal_json_prompts(base, prompt_dir, capsys):
    rows = json.loads((prompt_dir / "prompts.json").read_text())["isp"]
    (prompt_dir / "prompts.csv").write_text("path,score\n" + "".join(f"{p},{s}\n" for p, s in rows))
    query = ["--images", prompt_dir / "query.jpg"]
    _, from_json, _ = run(base + query, capsys)
    _, from_csv, _ = run(base[:2] + ["--prompts", prompt_dir / "prompts.csv", "--device", "cpu"] + query, capsys)
    assert score_lines(from_json) == score_lines(from_csv)


def test_reverse_prompts_scores_against_one_minus_score(base, prompt_dir, capsys):
    rows = json.loads((prompt_dir / "prompts.json").read_text())["isp"]
    (prompt_dir / "rev.json").write_text(json.dumps({"isp": [[p, 1 - s] for p, s in rows]}))
    query = ["--images", prompt_dir / "query.jpg"]
    _, reversed_flag, _ = run(base + query + ["--reverse-prompts"], capsys)
    _, reversed_file, _ = run(base[:2] + ["--prompts", prompt_dir / "rev.json", "--device", "cpu"] + query, capsys)
    _, plain, _ = run(base + query, capsys)
    assert score_lines(reversed_flag) == pytest.approx(score_lines(reversed_file), abs=1e-7)
    assert score_lines(reversed_flag) != score_lines(plain)


def test_no_arguments_prints_usage_and_example(capsys):
    code, _, err = run([], capsys)
    assert code == 2 and "usage:" in err and "examples:" in err and "Traceback" not in err


def _write(path, text: str) -> str:
    path.write_text(text)
    return path


def _truncated_query(d):
    data = (d / "query.jpg").read_bytes()
    (d / "query.jpg").write_bytes(data[: len(data) // 2])
    return {"--images": [d / "isp", d / "query.jpg"], "--output": d / "out.csv"}


def _empty_folder(d):
    (d / "empty").mkdir()
    return {"--images": [d / "empty"]}


NO_CUDA_DEVICE = "cuda:0" if not torch.cuda.is_available() else "cuda:99"

# Each case overrides some flags of a working command line and expects its message on stderr.
USER_ERRORS = {
    "missing-checkpoint": (lambda d: {"--checkpoint": d / "nope.pth.tar"}, "file not found"),
    "garbage-checkpoint": (
        lambda d: {"--checkpoint": _write(d / "junk.pth", "\0" * 64)}, "not a loadable PyTorch checkpoint"
    ),
    "wrong-backbone": (lambda d: {"--backbone": "resnet18"}, "do not fit --backbone resnet18"),
    "unknown-backbone": (lambda d: {"--backbone": "vit_tinny"}, "not a timm model"),
    "missing-prompts": (lambda d: {"--prompts": d / "nope.json"}, "--prompts .*nope.json: file not found"),
    "prompt-format": (lambda d: {"--prompts": d / "isp" / "p0.png"}, "use a .json file"),
    "bad-json": (
        lambda d: {"--prompts": _write(d / "bad.json", '{"isp": [["isp/p0.png", 0.5],]}')}, "not valid JSON"
    ),
    "score-range": (
        lambda d: {"--prompts": _write(d / "r.json", '{"isp": [["isp/p0.png", 0.5], ["isp/p1.png", 4.2]]}')},
        r"row 2 has score 4.2; scores must be in \[0, 1\]",
    ),
    "missing-isp-image": (
        lambda d: {"--prompts": _write(d / "gone.json", '{"isp": [["isp/nothere.png", 0.5]]}')},
        "row 1: image isp/nothere.png not found",
    ),
    "csv-header": (lambda d: {"--prompts": _write(d / "p.csv", "isp/p0.png,0.5\n")}, "header 'path,score'"),
    "missing-image": (lambda d: {"--images": [d / "nothing.png"]}, "no such file or folder"),
    "empty-folder": (_empty_folder, "no images in this folder"),
    "truncated-query": (_truncated_query, "query.jpg: the image is truncated"),
    "unavailable-device": (lambda d: {"--device": NO_CUDA_DEVICE}, f"--device {NO_CUDA_DEVICE}"),
    "bad-device": (lambda d: {"--device": "tpu"}, "use auto, cpu, cuda"),
}


@pytest.mark.parametrize("case", USER_ERRORS)
def test_user_errors_are_clear(tiny_checkpoint, prompt_dir, capsys, case):
    change, message = USER_ERRORS[case]
    flags = {"--checkpoint": tiny_checkpoint, "--prompts": prompt_dir / "prompts.json", "--device": "cpu"}
    flags |= {"--images": [prompt_dir / "query.jpg"]} | change(prompt_dir)
    argv = [str(a) for flag, value in flags.items() for a in [flag, *(value if isinstance(value, list) else [value])]]
    code, out, err = run(argv, capsys)
    last_line = err.strip().splitlines()[-1]
    assert code == 2 and out == "" and "Traceback" not in err
    assert last_line.startswith("error: ") and re.search(message, last_line), err
    assert [p.name for p in prompt_dir.iterdir() if "out.csv" in p.name] == []


def test_subprocess_exit_code_and_no_traceback(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(ROOT / "test.py"), "--prompts", tmp_path / "p.json", "--images", tmp_path],
        capture_output=True, text=True, cwd=ROOT,
    )
    assert proc.returncode == 2 and "error: --prompts" in proc.stderr and "Traceback" not in proc.stderr

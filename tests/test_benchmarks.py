"""benchmarks/model_speed.py runs on the CPU and prints one row per precision."""
from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import ROOT


def model_speed(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "benchmarks.model_speed", "--device", "cpu", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=900,
    )


@pytest.mark.slow
def test_model_speed_prints_the_table_on_the_cpu():
    run = model_speed("--img-size", "32", "--group", "3", "--score-batch", "4", "--steps", "1", "--rows", "fp32,tf32,bf16")
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert "vit_tiny_patch16_224 at 32 px" in lines[0]
    assert "timm fused attention: backbone on, head blocks on" in run.stdout
    rows = {line.split("  ")[0].strip(): line.split()[-10:] for line in lines if line.startswith(("fp32 eager", "bf16"))}
    assert set(rows) == {"fp32 eager", "bf16"}  # tf32 is left out on the CPU
    assert rows["fp32 eager"][1] == "1.00" and rows["fp32 eager"][6] == "1.00"  # ratios to the first row
    for cells in rows.values():
        train, score = float(cells[0]), float(cells[5])
        assert train > 0 and score > 0
        assert cells[2].endswith("%") and cells[7].endswith("%")


@pytest.mark.parametrize(
    "args, message",
    [(["--rows", "fp32,fp16"], "--rows: unknown fp16"), (["--device", "cuda:7"], "--device cuda:7")],
)
def test_model_speed_rejects_bad_options(args, message):
    run = model_speed(*args)
    assert run.returncode == 2 and message in run.stderr and "Traceback" not in run.stderr

"""The parts of benchmarks/gpu_check.sh in their reduced CPU forms, and the script's syntax."""
from __future__ import annotations

import re
import subprocess
import sys

import pytest
from conftest import ROOT


def run(module: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, "--device", "cpu", *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=600)


@pytest.mark.slow  # a subprocess that builds the network
def test_attention_speed_times_each_attention_both_ways_on_the_networks_inputs():
    proc = run("benchmarks.attention_speed", "--img-size", "32", "--group", "3", "--steps", "1", "--warmup", "0",
               "--precisions", "fp32")
    assert proc.returncode == 0, proc.stderr
    rows = [line.split() for line in proc.stdout.splitlines() if line.split()[:1] in (["spatial"], ["channel"],
                                                                                       ["feature"])]
    assert [r[0] for r in rows] == ["spatial", "channel", "feature"]
    assert "strided" in proc.stdout  # the channel attention's input is a transposed view, as in the network
    assert re.search(r"SUMMARY attention_speed: .*SDPA_OFF_CPU = \{'spatial': (True|False), 'channel'", proc.stdout)


@pytest.mark.slow  # a subprocess that builds the network
def test_score_files_speed_scores_jpeg_files_from_disk():
    proc = run("benchmarks.score_files_speed", "--img-size", "32", "--images", "12", "--batch-size", "4",
               "--workers", "1", "--width", "48", "--height", "40")
    assert proc.returncode == 0, proc.stderr
    assert "8 JPEG files of 48x40" in proc.stdout
    assert re.search(r"SUMMARY score_files_speed \(fp32\): [0-9.]+ img/s from JPEG files", proc.stdout)


def test_gpu_check_script_parses_and_runs_every_part():
    assert subprocess.run(["bash", "-n", str(ROOT / "benchmarks" / "gpu_check.sh")]).returncode == 0
    script = (ROOT / "benchmarks" / "gpu_check.sh").read_text()
    for part in ("pytest -m gpu", "benchmarks.model_speed", "benchmarks.attention_speed",
                 "benchmarks.score_files_speed", "torchrun --standalone --nproc-per-node 2",
                 "benchmarks.example_on_device"):
        assert part in script, part

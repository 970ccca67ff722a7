"""`pip install .` gives an importable package with its data and the command-line programs."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT


@pytest.mark.slow  # pip builds and installs the package: about 20 s on a lightly loaded 2-core CPU
def test_installed_package_works_from_another_folder(tmp_path):
    target, elsewhere = tmp_path / "site", tmp_path / "elsewhere"
    elsewhere.mkdir()
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--target", str(target), str(ROOT)],
        check=True, capture_output=True, cwd=elsewhere,
    )
    env = {**os.environ, "PYTHONPATH": str(target)}
    probe = ("import PromptIQA, PromptIQA.data.dataset_info as d; "
             "print(PromptIQA.__file__); print(d.DEFAULT_DATASET_INFO.is_file()); "
             "print(sorted(d.load_dataset_info())[:1])")
    found = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=elsewhere, env=env)
    assert found.returncode == 0, found.stderr
    package_file, info_exists, first_dataset = found.stdout.splitlines()
    assert Path(package_file).is_relative_to(target) and info_exists == "True" and first_dataset != "[]"
    usage = subprocess.run([sys.executable, "-m", "PromptIQA.commands.score", "--help"],
                           capture_output=True, text=True, cwd=elsewhere, env=env)
    assert usage.returncode == 0 and "--prompts" in usage.stdout and "--save-prompts" in usage.stdout
    scripts = {p.name for p in (target / "bin").iterdir()}
    assert {"promptiqa-train", "promptiqa-score", "promptiqa-app"} <= scripts

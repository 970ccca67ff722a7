"""`--checkpoint hf:OWNER/REPO[/FILE]` from a local huggingface_hub cache, offline."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import ROOT
from hub_fixtures import hub_cache

from PromptIQA import create_metric
from PromptIQA.utils.errors import UserError
from PromptIQA.utils.hub import parse_hf_name


def score(checkpoint, prompt_dir, cache):
    env = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "PromptIQA.commands.score", "--checkpoint", str(checkpoint), "--device", "cpu",
         "--prompts", str(prompt_dir / "prompts.json"), "--images", str(prompt_dir / "query.jpg")],
        capture_output=True, text=True, cwd=ROOT, env=env,
    )


@pytest.mark.slow
def test_hf_names_load_from_the_offline_cache(tiny_checkpoint, prompt_dir, tmp_path):
    cache = tmp_path / "hub"
    hub_cache(cache, "someone/tiny-iqa", {"best_model.pth.tar": tiny_checkpoint, "v2/other.pth.tar": tiny_checkpoint})
    local = score(tiny_checkpoint, prompt_dir, cache)
    by_default_name = score("hf:someone/tiny-iqa", prompt_dir, cache)
    by_file_name = score("hf:someone/tiny-iqa/v2/other.pth.tar", prompt_dir, cache)
    assert local.returncode == 0 and local.stdout.strip()
    assert by_default_name.stdout == local.stdout and by_file_name.stdout == local.stdout


def test_missing_hf_checkpoint_is_a_clear_error(prompt_dir, tmp_path):
    (tmp_path / "hub").mkdir()
    proc = score("hf:someone/absent", prompt_dir, tmp_path / "hub")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "--checkpoint hf:someone/absent: cannot get best_model.pth.tar from someone/absent" in proc.stderr
    assert "HF_HUB_OFFLINE" in proc.stderr


@pytest.mark.parametrize("name, expected", [
    ("hf:Zevin2023/PromptIQA", ("Zevin2023/PromptIQA", "best_model.pth.tar")),
    ("hf:a/b/sub/c.pth", ("a/b", "sub/c.pth")),
])
def test_parse_hf_name(name, expected):
    assert parse_hf_name(name) == expected


@pytest.mark.parametrize("name", ["hf:", "hf:onlyowner", "hf:a//c", "hf:owner/repo/../../x", "hf:owner/repo/sub/../..",
                                  "hf:owner/..", "hf:owner/repo/a\\..\\b.pth", "hf:./repo"])
def test_malformed_hf_names_are_refused(name):
    with pytest.raises(UserError, match="expected hf:OWNER/REPO") as err:
        parse_hf_name(name)
    assert str(err.value).startswith(f"{name}: not a Hugging Face checkpoint name")


def test_hf_names_with_parent_segments_are_clear_errors_in_test_py_and_create_metric(prompt_dir, tmp_path):
    (tmp_path / "hub").mkdir()
    proc = score("hf:owner/repo/../../x", prompt_dir, tmp_path / "hub")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "error: --checkpoint hf:owner/repo/../../x: not a Hugging Face checkpoint name" in proc.stderr
    with pytest.raises(UserError, match="hf:owner/repo/sub/../..: not a Hugging Face checkpoint name"):
        create_metric(checkpoint="hf:owner/repo/sub/../..", prompts=prompt_dir / "prompts.json", device="cpu")

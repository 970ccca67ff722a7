"""Saved prompt sets: the same scores without the ISP images, refused with another checkpoint."""
from __future__ import annotations

import shutil

import pytest
import torch
from conftest import TINY

from PromptIQA.commands import score as score_cli
from PromptIQA.commands.common import run_main
from PromptIQA.models import PromptIQA
from PromptIQA.models.checkpoint import save_checkpoint


def run(argv, capsys):
    code = run_main(score_cli.main, [str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def other_checkpoint(tmp_path_factory):
    torch.manual_seed(1)
    path = tmp_path_factory.mktemp("other") / "other.pth.tar"
    save_checkpoint({"model": PromptIQA(TINY).state_dict(), "model_config": TINY.to_dict(), "prompt_num": 4}, path)
    return path


def test_saved_prompts_give_the_same_scores_without_the_isp_images(tiny_checkpoint, prompt_dir, tmp_path, capsys):
    query = prompt_dir / "query.jpg"
    saved = tmp_path / "set.pt"
    common = ["--checkpoint", tiny_checkpoint, "--device", "cpu", "--images", query]
    code, first, _ = run(common + ["--prompts", prompt_dir / "prompts.json", "--save-prompts", saved], capsys)
    assert code == 0 and saved.is_file()
    shutil.rmtree(prompt_dir / "isp")  # reuse must not read the ISP images
    code, again, _ = run(common + ["--prompts", saved], capsys)
    assert code == 0 and again == first


def test_saved_prompts_keep_the_score_range(tiny_checkpoint, prompt_dir, tmp_path, capsys):
    (prompt_dir / "mos.csv").write_text("path,score\n" + "".join(f"isp/p{i}.png,{1 + i}\n" for i in range(4)))
    saved = tmp_path / "mos.pt"
    common = ["--checkpoint", tiny_checkpoint, "--device", "cpu", "--images", prompt_dir / "query.jpg"]
    _, first, _ = run(common + ["--prompts", prompt_dir / "mos.csv", "--score-range", 1, 5, "--save-prompts", saved],
                      capsys)
    code, again, err = run(common + ["--prompts", saved], capsys)
    assert code == 0 and again == first and "scores on [1, 5]" in err


def test_saved_prompts_are_refused_with_another_checkpoint(tiny_checkpoint, other_checkpoint, prompt_dir, tmp_path,
                                                             capsys):
    saved = tmp_path / "set.pt"
    code, _, _ = run(["--checkpoint", tiny_checkpoint, "--device", "cpu", "--prompts", prompt_dir / "prompts.json",
                      "--save-prompts", saved], capsys)
    assert code == 0
    code, out, err = run(["--checkpoint", other_checkpoint, "--device", "cpu", "--prompts", saved,
                          "--images", prompt_dir / "query.jpg"], capsys)
    assert code == 2 and out == "" and "encoded by another checkpoint" in err and "--save-prompts" in err


@pytest.mark.parametrize("name, message", [("set.json", "end in .pt"), ("missing/set.pt", "does not exist")])
def test_bad_save_path_is_refused_before_the_model_loads(prompt_dir, tmp_path, name, message, capsys):
    code, _, err = run(["--checkpoint", tmp_path / "missing.pth.tar", "--prompts", prompt_dir / "prompts.json",
                        "--save-prompts", tmp_path / name], capsys)
    assert code == 2 and message in err


def test_a_file_that_is_not_a_saved_set_is_refused(tiny_checkpoint, prompt_dir, capsys):
    (prompt_dir / "fake.pt").write_bytes(b"\0" * 32)
    code, _, err = run(["--checkpoint", tiny_checkpoint, "--prompts", prompt_dir / "fake.pt",
                        "--images", prompt_dir / "query.jpg"], capsys)
    assert code == 2 and "not a prompt set saved by --save-prompts" in err

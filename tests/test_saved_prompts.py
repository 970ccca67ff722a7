"""Saved prompt sets: the same scores without the ISP images, refused with another checkpoint (as files or
objects), damaged files refused with the reason, the checkpoint identity hashed once."""
from __future__ import annotations

import shutil

import pytest
import torch
from conftest import TINY

from PromptIQA import PromptIQAMetric, create_metric
from PromptIQA.commands import score as score_cli
from PromptIQA.commands.common import run_main
from PromptIQA.models import PromptIQA
from PromptIQA.models.checkpoint import save_checkpoint
from PromptIQA.scoring import saved_prompts
from PromptIQA.scoring.saved_prompts import read_saved_prompts, vectors_checksum
from PromptIQA.utils.errors import UserError


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


@pytest.fixture
def saved_set(tiny_checkpoint, prompt_dir, tmp_path, capsys):
    """A set saved by test.py, and its record as torch.load reads it."""
    path = tmp_path / "set.pt"
    code, _, _ = run(["--checkpoint", tiny_checkpoint, "--device", "cpu", "--prompts", prompt_dir / "prompts.json",
                      "--save-prompts", path], capsys)
    assert code == 0
    return path, torch.load(path, weights_only=True)


def _resaved(record, checksum=True, **changes):
    """The record with `changes` (None deletes a key); the checksum recomputed for the new vectors unless told not."""
    record = {**record, **changes}
    for key in [k for k, v in changes.items() if v is None]:
        del record[key]
    if checksum and isinstance(record.get("vectors"), torch.Tensor):
        features = record.get("features")
        if isinstance(features, torch.Tensor) and features.shape != record["vectors"].shape:
            features = record["features"] = None  # the damage is to the vectors: keep the check on them
        record["vectors_sha256"] = vectors_checksum(record["vectors"], features)
    return record


def _flip_a_bit(vectors):
    flipped = vectors.clone()
    flipped.view(torch.int32)[0, 0] ^= 1 << 3
    return flipped


DAMAGE = {
    "width-64": (lambda r: _resaved(r, vectors=torch.zeros(4, 64)), r"shape \(4, 64\); expected \(n, 128\)"),
    "one-dimensional": (lambda r: _resaved(r, vectors=torch.zeros(128)), r"shape \(128,\)"),
    "no-vectors-rows": (lambda r: _resaved(r, vectors=torch.zeros(0, 128)), r"with n >= 1"),
    "int64": (lambda r: _resaved(r, vectors=torch.zeros(4, 128, dtype=torch.int64)), "not floating point"),
    "a-list": (lambda r: _resaved(r, vectors=r["vectors"].tolist()), "'vectors' is list, not Tensor"),
    "nan": (lambda r: _resaved(r, vectors=torch.full((4, 128), float("nan"))), "NaN or infinite"),
    "missing-score-range": (lambda r: _resaved(r, score_range=None), "'score_range' is missing"),
    "text-score-range": (lambda r: _resaved(r, score_range="ab"), "score_range is 'ab'"),
    "missing-vectors": (lambda r: _resaved(r, vectors=None), "'vectors' is missing"),
    "lower-better-text": (lambda r: _resaved(r, lower_better="no"), "'lower_better' is str, not bool"),
    "flipped-bits": (lambda r: _resaved(r, checksum=False, vectors=_flip_a_bit(r["vectors"])),
                     "do not match their checksum"),
    "fewer-paths": (lambda r: _resaved(r, paths=r["paths"][:2]), "4 vectors, 2 paths and 4 scores"),
    "reversed-range": (lambda r: _resaved(r, score_range=[5.0, 1.0]), "score_range is"),
}


@pytest.mark.parametrize("case", DAMAGE)
def test_damaged_saved_sets_are_refused_with_the_reason(saved_set, case):
    path, record = saved_set
    change, message = DAMAGE[case]
    torch.save(change(record), path)
    with pytest.raises(UserError, match=message) as err:
        read_saved_prompts(path)
    assert str(err.value).startswith(f"{path}: not a valid saved prompt set") and "--save-prompts" in str(err.value)


def test_a_damaged_set_is_refused_by_test_py_before_scoring(saved_set, tiny_checkpoint, prompt_dir, capsys):
    path, record = saved_set
    torch.save(_resaved(record, checksum=False, vectors=_flip_a_bit(record["vectors"])), path)
    code, out, err = run(["--checkpoint", tiny_checkpoint, "--device", "cpu", "--prompts", path,
                          "--images", prompt_dir / "query.jpg"], capsys)
    assert code == 2 and out == "" and f"error: --prompts {path}: not a valid saved prompt set" in err


def test_prompt_objects_of_another_checkpoint_are_refused(tiny_checkpoint, other_checkpoint, saved_set, prompt_dir):
    path, _ = saved_set
    metric_a = create_metric(checkpoint=tiny_checkpoint, prompts=prompt_dir / "prompts.json", device="cpu")
    metric_b = create_metric(checkpoint=other_checkpoint, prompts=prompt_dir / "prompts.json", device="cpu")
    with pytest.raises(UserError, match="encoded by another checkpoint"):
        metric_b.with_prompts(metric_a.prompts)
    with pytest.raises(UserError, match="encoded by another checkpoint"):
        create_metric(checkpoint=other_checkpoint, prompts=read_saved_prompts(path), device="cpu")
    with pytest.raises(UserError, match="encoded by another checkpoint"):
        PromptIQAMetric(metric_b.net, metric_a.prompts)
    same = metric_a.with_prompts(metric_a.prompts)  # its own prompts, and its own saved set, are fine
    assert torch.equal(same(prompt_dir / "query.jpg"), metric_a(prompt_dir / "query.jpg"))
    from_file = create_metric(checkpoint=tiny_checkpoint, prompts=read_saved_prompts(path), device="cpu")
    assert torch.equal(from_file(prompt_dir / "query.jpg"), metric_a(prompt_dir / "query.jpg"))


def test_the_checkpoint_identity_is_hashed_once_per_set_of_weights(tiny_checkpoint, saved_set, prompt_dir,
                                                                    monkeypatch):
    path, _ = saved_set
    hashed = []
    digest = saved_prompts._weights_digest
    monkeypatch.setattr(saved_prompts, "_weights_digest", lambda model: hashed.append(1) or digest(model))
    metric = create_metric(checkpoint=tiny_checkpoint, prompts=path, device="cpu")
    for _ in range(3):
        metric = metric.with_prompts(path)
        metric.with_prompts(read_saved_prompts(path))
    assert hashed == [1]
    with torch.no_grad():
        next(metric.net.parameters()).add_(1.0)  # other weights: another identity, and the set no longer fits
    with pytest.raises(UserError, match="encoded by another checkpoint"):
        metric.with_prompts(path)
    assert hashed == [1, 1]

"""Scoring a collection: inputs, uint8 decoding, one process vs torchrun, kill and resume, outputs."""
from __future__ import annotations

import io
import os
import re
import signal
import subprocess
import sys
import time
from contextlib import redirect_stderr, redirect_stdout

import numpy as np
import pytest
import torch
from collection_fixtures import SMALL_CNN, encoded, make_collection, small_checkpoint, write_shard
from conftest import ROOT, write_image

from PromptIQA.commands import score as score_cli
from PromptIQA.commands.common import run_main
from PromptIQA.data.image import ImageError, decode_image, read_image, to_tensor
from PromptIQA.models import PromptIQA
from PromptIQA.scoring.collection import Collection, DoneIds, expand_braces, id_digest, shard_samples
from PromptIQA.scoring.outputs import part_paths, read_scores, write_rows
from PromptIQA.scoring.scorer import Scorer


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("collection")
    inputs, expected = make_collection(root / "data")
    checkpoint, prompts = small_checkpoint(root)
    base = ["--checkpoint", str(checkpoint), "--prompts", str(prompts), "--device", "cpu", "--batch-size", "4"]
    return {"root": root, "inputs": inputs, "expected": expected, "base": base}


def cli(argv: list[str], capsys) -> tuple[int, str, str]:
    code = run_main(score_cli.main, [str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def cli_captured(argv: list) -> tuple[int, str, str]:
    """The command line run in this process, its output captured (for module-scoped fixtures)."""
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = run_main(score_cli.main, [str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def one_process(setup, tmp_path_factory):
    """The whole collection scored by one process (two decoding workers), with bad images skipped."""
    output = tmp_path_factory.mktemp("one") / "scores.jsonl"
    code, _, err = cli_captured([*setup["base"], *setup["inputs"], "--on-bad-image", "skip", "--output", output,
                                 "-j", "2"])
    assert code == 0, err
    return output, err


def test_brace_ranges_expand_as_img2dataset_writes_them():
    assert expand_braces("s/{00000..00002}.tar") == ["s/00000.tar", "s/00001.tar", "s/00002.tar"]
    assert expand_braces("{a,b}/{8..10}.tar") == ["a/8.tar", "a/9.tar", "a/10.tar", "b/8.tar", "b/9.tar", "b/10.tar"]
    assert expand_braces("plain{}.tar") == ["plain{}.tar"]


def test_collection_reads_folders_lists_and_shards_in_order(setup):
    inputs, expected = setup["inputs"], setup["expected"]
    images = inputs[1:3]
    collection = Collection(images, [inputs[-1]], recursive=True)
    ids = []
    for unit in collection.units():
        if unit.shard:
            ids += [s.id for s in shard_samples(unit, lambda _id: True)]
        else:
            ids.append(unit.path)
    assert ids == expected["ordered"]
    assert collection.count_images() == len(expected["ordered"])
    flat = Collection([images[0]])  # without --recursive: only the folder's own images
    assert [u.path for u in flat.units()] == expected["ordered"][:4]
    twice = Collection([images[0], images[0] + "/a.jpg"])  # an image reached twice is scored once
    assert [u.path for u in twice.units()] == expected["ordered"][:4]
    halves = [[u.index for u in collection.units(rank, 2)] for rank in range(2)]
    assert sorted(halves[0] + halves[1]) == list(range(collection.units_total)) and not set(halves[0]) & set(halves[1])


def test_tar_samples_keep_the_image_member_and_skip_the_others(tmp_path):
    shard = tmp_path / "00007.tar"
    keys = write_shard(shard, 7, seed=3)
    unit = next(Collection([str(shard)]).units())
    samples = list(shard_samples(unit, lambda _id: True))
    assert [s.id for s in samples] == [f"{shard}/{k}" for k in keys]
    assert [s.order for s in samples] == [(0, 0), (0, 1), (0, 2)]
    assert all(s.data == encoded(3 + i, ".jpg") for i, s in enumerate(samples))
    broken = tmp_path / "broken.tar"
    broken.write_bytes(shard.read_bytes()[:1536])  # breaks off inside the first image
    samples = list(shard_samples(next(Collection([str(broken)]).units()), lambda _id: True))
    assert samples[-1].id == str(broken) and "not a readable tar shard" in samples[-1].error


@pytest.mark.parametrize("extension", [".jpg", ".png", ".webp"])
def test_decoding_bytes_equals_reading_the_file(tmp_path, extension):
    data = encoded(9, extension, size=(61, 47))
    (tmp_path / f"x{extension}").write_bytes(data)
    np.testing.assert_array_equal(decode_image(data, "x", 64), read_image(tmp_path / f"x{extension}", 64))
    with pytest.raises(ImageError, match="x.jpg: the image is truncated"):
        decode_image(encoded(9, ".jpg")[:300], "x.jpg")
    with pytest.raises(ImageError, match="empty"):
        decode_image(b"", "y.png")


def test_uint8_batches_normalised_on_the_device_equal_the_float_path(tmp_path):
    paths = [str(write_image(tmp_path / f"{i}.png", seed=i, size=(50 + i, 70))) for i in range(7)]
    torch.manual_seed(0)
    model = PromptIQA(SMALL_CNN).eval()
    scorer = Scorer(model, batch_size=3, workers=2)
    batches = list(scorer._batches(paths, progress=False))
    for start, batch in zip(range(0, 7, 3), batches):
        published = to_tensor(np.stack([read_image(p, 64) for p in paths[start : start + 3]]))
        assert batch.dtype == torch.float32 and torch.equal(batch, published)
        assert batch.stride() == published.stride()  # the same memory layout, hence the same kernels
    prompts = scorer.encode_prompts(paths[:3], [0.1, 0.5, 0.9])
    with torch.inference_mode():
        expected = np.concatenate([model.score_images(to_tensor(np.stack([read_image(p, 64) for p in paths[s : s + 3]])),
                                                      prompts).numpy() for s in range(0, 7, 3)])
    np.testing.assert_array_equal(scorer.score_images(paths, prompts), expected)


def test_one_process_records_every_image_once_and_both_bad_files(setup, one_process):
    output, err = one_process
    rows = list(read_scores(output))
    expected = setup["expected"]
    assert [r["path"] for r in rows] == expected["ordered"]  # every image once, in collection order
    bad = {r["path"]: r["error"] for r in rows if r["error"]}
    assert set(bad) == set(expected["bad"])
    assert all(bad[path].startswith(f"{path}: ") for path in bad) and "empty" in bad[expected["bad"][1]]
    assert all(r["score"] is None for r in rows if r["error"])
    assert all(0 <= r["score"] <= 1 for r in rows if not r["error"])
    assert re.search(r"scored 15 images, skipped 2, already done 0, in [\d.]+ s \([\d.]+ images/s\)", err)
    assert part_paths(output) == []  # merged, parts removed


def test_torchrun_two_processes_give_the_same_scores(setup, one_process, tmp_path):
    output = tmp_path / "scores.jsonl"
    argv = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
            str(ROOT / "test.py"), *setup["base"], *setup["inputs"], "--on-bad-image", "skip",
            "--output", str(output), "-j", "1"]
    run = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    single = list(read_scores(one_process[0]))
    double = list(read_scores(output))
    assert [r["path"] for r in double] == [r["path"] for r in single]
    assert [r["error"] for r in double] == [r["error"] for r in single]
    for one, two in zip(single, double):
        assert (one["score"] is None and two["score"] is None) or abs(one["score"] - two["score"]) < 1e-6
    assert run.stderr.count("scored 15 images, skipped 2") == 1  # one summary, for the whole job
    assert part_paths(output) == []


def test_killed_run_resumes_to_the_uninterrupted_output(tmp_path, capsys):
    count = 48
    folder = tmp_path / "many"
    for i in range(count):
        write_image(folder / f"{i:03d}.png", seed=i, size=(96, 96))
    checkpoint, prompts = small_checkpoint(tmp_path)
    args = ["--checkpoint", str(checkpoint), "--prompts", str(prompts), "--device", "cpu", "--batch-size", "2",
            "-j", "0", "--images", str(folder)]
    argv = [sys.executable, str(ROOT / "test.py"), *args]
    whole = tmp_path / "whole.csv"
    assert cli(args + ["--output", whole], capsys)[0] == 0

    output = tmp_path / "scores.csv"
    part = output.with_name("scores.csv.part-00000-of-00001.jsonl")
    process = subprocess.Popen(argv + ["--output", str(output)], cwd=ROOT, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    while process.poll() is None and not (part.exists() and part.read_bytes().count(b"\n") >= 2):
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    written = part.read_bytes().count(b"\n")
    assert 0 < written < count and not output.exists()

    code, _, err = cli(args + ["--output", output], capsys)  # a fresh run does not mix with the parts
    assert code == 2 and "--resume" in err and part.read_bytes().count(b"\n") == written

    code, out, err = cli(args + ["--output", output, "--resume"], capsys)
    assert code == 0, err
    assert f"scored {count - written} images, skipped 0, already done {written}," in err
    assert len(out.splitlines()) == count - written  # only the missing images were scored
    assert output.read_text() == whole.read_text()
    assert part_paths(output) == []

    code, _, err = cli(args + ["--output", output, "--resume"], capsys)
    assert code == 2 and "this job is complete" in err


ROWS = [{"path": "a/b.jpg", "score": 0.123456789, "error": None},
        {"path": "shards/00000.tar/000000001", "score": None, "error": "x: the image is empty, \"quoted\""},
        {"path": "ünï, cödé.png", "score": 1.0, "error": None}]


@pytest.mark.parametrize("name", ["s.csv", "s.jsonl", "s.parquet"])
def test_outputs_round_trip(tmp_path, name):
    assert write_rows(tmp_path / name, ROWS) == 3
    back = list(read_scores(tmp_path / name))
    if name.endswith(".csv"):  # the text keeps 8 decimals, as printed
        assert back[0]["score"] == 0.12345679 and back[1:] == ROWS[1:]
    else:
        assert back == ROWS


def test_parquet_without_pyarrow_says_how_to_install_it(setup, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    code, out, err = cli(setup["base"] + setup["inputs"] + ["--output", setup["root"] / "s.parquet"], capsys)
    assert code == 2 and "pip install pyarrow" in err and "--output" in err and "Traceback" not in err


def test_bad_images_stop_the_run_with_their_list_by_default(setup, tmp_path, capsys):
    code, out, err = cli(setup["base"] + setup["inputs"] + ["--output", tmp_path / "s.csv"], capsys)
    assert code == 2 and "2 images cannot be scored" in err and "--on-bad-image skip" in err
    assert all(path in err for path in setup["expected"]["bad"]) and not (tmp_path / "s.csv").exists()


@pytest.mark.parametrize("flags, message", [
    (["--resume"], "--resume continues the run that writes --output"),
    (["--output", "x.txt"], "--output x.txt: unknown output format .txt"),
    (["--image-list", "nope.txt"], "--image-list nope.txt: no such file"),
])
def test_collection_flags_are_checked_before_the_model_loads(setup, flags, message, capsys):
    argv = ["--checkpoint", "missing.pth.tar", "--prompts", setup["base"][3], "--images", setup["inputs"][1]]
    code, out, err = cli(argv + flags, capsys)
    assert code == 2 and message in err and "Traceback" not in err


def test_done_ids_answer_membership():
    done = DoneIds([id_digest(f"img{i}") for i in range(1000)])
    assert all(f"img{i}" in done for i in range(0, 1000, 37)) and "img1000" not in done and "x" not in DoneIds()


def test_scorer_score_collection_yields_rows_in_order(setup):
    torch.manual_seed(0)
    scorer = Scorer(PromptIQA(SMALL_CNN).eval(), batch_size=4, workers=0)
    prompts = scorer.encode_prompts([str(p) for p in sorted((setup["root"] / "isp").iterdir())], [0.1, 0.5, 0.9])
    inputs = setup["inputs"]
    rows = list(scorer.score_collection(Collection(inputs[1:3], [inputs[-1]], recursive=True), prompts))
    assert [r.id for r in rows] == setup["expected"]["ordered"]
    assert {r.id for r in rows if r.error} == set(setup["expected"]["bad"])
    assert os.path.basename(rows[0].id) == "a.jpg" and 0 <= rows[0].score <= 1

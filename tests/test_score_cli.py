"""test.py scoring: outputs, prompt formats, and every user error with a clear message."""
from __future__ import annotations

import csv
import json
import os
import re
import stat
import subprocess
import sys
import threading

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


def test_decoding_in_the_main_thread_and_bf16_score_like_the_defaults(base, prompt_dir, capsys):
    images = ["--images", prompt_dir / "isp", prompt_dir / "query.jpg"]
    _, threaded, _ = run(base + images, capsys)
    _, main_thread, _ = run(base + images + ["-j", "0"], capsys)
    _, bf16, _ = run(base + images + ["--precision", "bf16"], capsys)
    assert score_lines(main_thread) == score_lines(threaded)
    reference, low_precision = score_lines(threaded), score_lines(bf16)
    assert reference.keys() == low_precision.keys()
    assert max(abs(reference[p] - low_precision[p]) for p in reference) < 0.05


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


def test_no_arguments_without_default_checkpoint_says_how_to_get_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(score_cli, "DEFAULT_CHECKPOINT", tmp_path / "checkpoints" / "best_model.pth.tar")
    code, out, err = run([], capsys)
    assert code == 2 and out == "" and "Traceback" not in err
    for how in ("--checkpoint hf:Zevin2023/PromptIQA", "best_model.pth.tar", "PromptIQA/checkpoints/",
                "python train.py --demo"):
        assert how in err


def test_no_arguments_scores_example1_with_the_default_checkpoint(tiny_checkpoint, monkeypatch, capsys):
    monkeypatch.setattr(score_cli, "DEFAULT_CHECKPOINT", tiny_checkpoint)
    code, out, _ = run([], capsys)
    example = ROOT / "Examples" / "Example1"
    explicit = ["--checkpoint", tiny_checkpoint, "--prompts", example / "prompts.json",
                "--images", example / "cactus.png"]
    assert code == 0 and score_lines(out) == score_lines(run(explicit, capsys)[1])
    assert list(score_lines(out)) == [str(example / "cactus.png")]


def test_help_lists_every_flag(capsys):
    with pytest.raises(SystemExit):
        score_cli.main(["--help"])
    out = capsys.readouterr().out
    for flag in ("--prompts", "--images", "--save-prompts", "--score-range", "--lower-is-better", "--dataset"):
        assert flag in out


@pytest.mark.parametrize("flags, message", [
    (["--batch-size", "0"], "--batch-size: 0 is too small"),
    (["--batch_size", "-3"], "--batch-size: -3 is too small"),
    (["-j", "-1"], "-j/--workers: -1 is too small"),
    (["--prompt-num", "0"], "--prompt-num: 0 is too small"),
])
def test_counts_below_their_minimum_are_refused_before_any_work(prompt_dir, flags, message, capsys):
    argv = ["--checkpoint", prompt_dir / "missing.pth.tar", "--prompts", prompt_dir / "prompts.json",
            "--images", prompt_dir / "query.jpg"] + flags
    with pytest.raises(SystemExit) as exit_info:
        run(argv, capsys)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and message in err and "Traceback" not in err


@pytest.mark.parametrize("where, message", [
    (lambda d: d / "isp", "is a folder"),
    (lambda d: d / "no" / "such" / "out.csv", "does not exist"),
])
def test_output_is_checked_before_the_model_loads(prompt_dir, where, message, capsys):
    argv = ["--checkpoint", prompt_dir / "missing.pth.tar", "--prompts", prompt_dir / "prompts.json",
            "--images", prompt_dir / "query.jpg", "--output", where(prompt_dir)]
    code, out, err = run(argv, capsys)
    assert code == 2 and f"error: --output {where(prompt_dir)}: " in err and message in err and out == ""


def test_scores_are_printed_as_they_are_produced(base, prompt_dir, capsys):
    broken = prompt_dir / "broken.png"
    broken.write_bytes((prompt_dir / "isp" / "p0.png").read_bytes()[:100])
    code, out, err = run(base + ["--images", prompt_dir / "query.jpg", broken, "--batch-size", "1",
                                 "--output", prompt_dir / "out.csv"], capsys)
    assert code == 2 and "broken.png" in err
    assert list(score_lines(out)) == [str(prompt_dir / "query.jpg")] and not (prompt_dir / "out.csv").exists()


def test_both_flag_spellings(base, prompt_dir, capsys):
    query = ["--images", prompt_dir / "query.jpg"]
    _, dashes, _ = run(base + query + ["--batch-size", "2", "--reverse-prompts"], capsys)
    _, underscores, _ = run(base + query + ["--batch_size", "2", "--reverse_prompts"], capsys)
    assert score_lines(dashes) == score_lines(underscores)


def test_score_range_maps_prompts_and_output(base, prompt_dir, capsys):
    rows = json.loads((prompt_dir / "prompts.json").read_text())["isp"]
    (prompt_dir / "dmos.json").write_text(json.dumps({"isp": [[p, 20 + 80 * s] for p, s in rows]}))
    query = ["--images", prompt_dir / "query.jpg"]
    _, unit, _ = run(base + query, capsys)
    code, ranged, err = run(base[:2] + ["--prompts", prompt_dir / "dmos.json", "--device", "cpu",
                                        "--score-range", "20", "100", "--lower-is-better"] + query, capsys)
    assert code == 0 and "scores on [20, 100], lower is better" in err
    (path, score), = score_lines(unit).items()
    assert score_lines(ranged)[path] == pytest.approx(20 + 80 * score, abs=1e-5)


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
    "wrong-backbone": (lambda d: {"--backbone": "resnet18"}, "do not fit backbone resnet18"),
    "hf-parent-segment": (lambda d: {"--checkpoint": "hf:owner/repo/../../x"}, "not a Hugging Face checkpoint name"),
    "unknown-backbone": (lambda d: {"--backbone": "vit_tinny"}, "not a timm model"),
    "missing-prompts": (lambda d: {"--prompts": d / "nope.json"}, "--prompts .*nope.json: file not found"),
    "prompt-format": (lambda d: {"--prompts": d / "isp" / "p0.png"}, "use a .json file"),
    "bad-json": (
        lambda d: {"--prompts": _write(d / "bad.json", '{"isp": [["isp/p0.png", 0.5],]}')}, "not valid JSON"
    ),
    "score-range": (
        lambda d: {"--prompts": _write(d / "r.json", '{"isp": [["isp/p0.png", 0.5], ["isp/p1.png", 4.2]]}')},
        r"row 2: score 4.2 is outside the score range \[0, 1\]",
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


def test_reversed_lower_is_better_prompts_are_labelled_higher_is_better(base, prompt_dir, capsys):
    query = ["--images", prompt_dir / "query.jpg"]
    code, _, err = run(base + query + ["--lower-is-better", "--reverse-prompts"], capsys)
    assert code == 0 and "higher is better" in err and "lower is better" not in err
    code, _, err = run(base + query + ["--lower-is-better"], capsys)
    assert code == 0 and "lower is better" in err


def _unscored_command(prompt_dir, *flags):
    """A command line whose checkpoint does not exist: a refusal here comes before the model loads."""
    return ["--checkpoint", prompt_dir / "missing.pth.tar", "--prompts", prompt_dir / "prompts.json",
            "--images", prompt_dir / "query.jpg", *flags]


@pytest.mark.parametrize("output, message", [
    ("/proc/scores.csv", "kernel pseudo-filesystem"),
    ("/sys/scores.csv", "kernel pseudo-filesystem"),
    (lambda d: d / "prompts.json", "is also an input"),
    (lambda d: d / "query.jpg", "is also an input"),
    (lambda d: d / "isp" / "p1.png", "is also an input"),
], ids=["proc", "sys", "prompt-file", "scored-image", "isp-image"])
def test_output_that_cannot_or_must_not_be_written_is_refused_before_scoring(prompt_dir, output, message, capsys):
    output = output(prompt_dir) if callable(output) else output
    before = {p: p.read_bytes() for p in prompt_dir.rglob("*") if p.is_file()}
    code, out, err = run(_unscored_command(prompt_dir, "--output", output), capsys)
    assert code == 2 and out == "" and f"error: --output {output}: " in err and message in err, err
    assert {p: p.read_bytes() for p in prompt_dir.rglob("*") if p.is_file()} == before


@pytest.mark.parametrize("flags, message", [
    (["--device", "tpu"], "'tpu': use auto, cpu, cuda or cuda:INDEX"),
    (["--device", "meta"], "meta, mps and other devices are not supported"),
    (["--device", "mps"], "meta, mps and other devices are not supported"),
    (["--img-size", "-5"], "--img-size: -5 is too small; give 32 or more"),
    (["--img-size", "0"], "--img-size: 0 is too small; give 32 or more"),
    (["--score-range", "0", "1e400"], "'1e400' is not a finite number"),
], ids=["unknown-device", "meta", "mps", "negative-size", "zero-size", "infinite-range"])
def test_devices_sizes_and_ranges_are_checked_when_parsed(prompt_dir, flags, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run(_unscored_command(prompt_dir, *flags), capsys)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and message in err and "Traceback" not in err, err


def test_a_score_range_wider_than_float_range_is_refused(prompt_dir, capsys):
    low = "-" + "9" * 308  # finite, but MAX - MIN is not
    code, out, err = run(_unscored_command(prompt_dir, "--score-range", low, "1.7e308"), capsys)
    assert code == 2 and out == "" and "error: --score-range score range" in err and "difference is finite" in err


def test_a_negative_minimum_in_exponent_form_is_accepted(tiny_checkpoint, prompt_dir, capsys):
    rows = json.loads((prompt_dir / "prompts.json").read_text())["isp"]
    (prompt_dir / "wide.json").write_text(json.dumps({"isp": [[p, -1000 + 1005 * s] for p, s in rows]}))
    code, out, err = run(["--checkpoint", tiny_checkpoint, "--device", "cpu", "--prompts", prompt_dir / "wide.json",
                          "--score-range", "-1e3", "5", "--images", prompt_dir / "query.jpg"], capsys)
    (score,) = score_lines(out).values()
    assert code == 0 and "scores on [-1000, 5]" in err and -1000 <= score <= 5


def test_output_through_a_symlink_writes_its_target_and_keeps_the_link(base, prompt_dir, tmp_path, capsys):
    (tmp_path / "results").mkdir()
    target = tmp_path / "results" / "scores.csv"
    target.write_text("old\n")
    link = prompt_dir / "link.csv"
    link.symlink_to(target)
    code, out, _ = run(base + ["--images", prompt_dir / "query.jpg", "--output", link], capsys)
    assert code == 0 and link.is_symlink() and os.readlink(link) == str(target)
    assert target.read_text().splitlines()[0] == "path,score,error" and str(prompt_dir / "query.jpg") in target.read_text()
    assert sorted(p.name for p in target.parent.iterdir()) == ["scores.csv"]  # no temp file left beside it


def test_output_to_a_fifo_streams_to_its_reader(tiny_checkpoint, prompt_dir, tmp_path):
    fifo = tmp_path / "scores.fifo"
    os.mkfifo(fifo)
    received = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_text()))
    reader.start()
    proc = subprocess.run([sys.executable, str(ROOT / "test.py"), "--checkpoint", str(tiny_checkpoint), "--device",
                           "cpu", "--prompts", str(prompt_dir / "prompts.json"), "--images",
                           str(prompt_dir / "query.jpg"), "--output", str(fifo)],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    reader.join(timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert stat.S_ISFIFO(fifo.stat().st_mode) and received[0].startswith("path,score")
    assert str(prompt_dir / "query.jpg") in received[0]


@pytest.mark.parametrize("output", ["-", "/dev/stdout"])
def test_output_to_stdout_writes_the_csv_there(tiny_checkpoint, prompt_dir, output):
    kind = os.lstat(output).st_mode if output != "-" else None
    proc = subprocess.run([sys.executable, str(ROOT / "test.py"), "--checkpoint", str(tiny_checkpoint), "--device",
                           "cpu", "--prompts", str(prompt_dir / "prompts.json"), "--images",
                           str(prompt_dir / "query.jpg"), "--output", output],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.DictReader(line for line in proc.stdout.splitlines() if "," in line))
    assert [r["path"] for r in rows] == [str(prompt_dir / "query.jpg")] and 0 <= float(rows[0]["score"]) <= 1
    assert not (ROOT / "-").exists() and (output == "-" or os.lstat(output).st_mode == kind)  # never replaced


def test_promptiqa_debug_shows_the_traceback_of_a_user_error(tmp_path):
    argv = [sys.executable, str(ROOT / "test.py"), "--prompts", str(tmp_path / "p.json"), "--images", str(tmp_path)]
    plain = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT)
    debug = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PROMPTIQA_DEBUG": "1"})
    assert plain.returncode == debug.returncode == 2 and "Traceback" not in plain.stderr
    assert "Traceback" in debug.stderr and "read_prompt_file" in debug.stderr
    assert debug.stderr.strip().splitlines()[-1] == plain.stderr.strip().splitlines()[-1]

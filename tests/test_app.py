"""The web demo: its scoring functions in-process, then `python app.py` as a real server, called with
gradio_client on the named `/score` endpoint and driven in headless Chromium through Playwright."""
from __future__ import annotations

import csv
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest
import torch
from conftest import EXAMPLES, ROOT, write_image

from PromptIQA.app import requests
from PromptIQA.app.examples import demo_examples
from PromptIQA.app.figures import save_placement_figure
from PromptIQA.app.models import ModelRegistry, PromptCache
from PromptIQA.app.results import score_page_request
from PromptIQA.app.texts import HIGHER, LOWER
from PromptIQA.commands import app as app_cli
from PromptIQA.commands.common import run_main
from PromptIQA.data.prompts import PromptSet, read_prompt_file
from PromptIQA.models import ModelConfig, PromptIQA
from PromptIQA.models.checkpoint import load_model, save_checkpoint
from PromptIQA.scoring.pools import pool_prompts
from PromptIQA.scoring.saved_prompts import prepare_prompts
from PromptIQA.scoring.scorer import Scorer
from PromptIQA.utils.constants import PUBLISHED_PROMPT_NUM
from PromptIQA.utils.errors import UserError

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
EXAMPLE1 = EXAMPLES / "Example1"
ISP_IMAGES = sorted(str(p) for p in (EXAMPLE1 / "ISPP").iterdir())
TOLERANCE = 1e-6
SMALL = ModelConfig(backbone="vit_tiny_patch16_224", img_size=64)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class AppServer:
    """`python app.py ...` in a subprocess on a free port of 127.0.0.1, its output in a log file."""

    def __init__(self, args: list[str], log: Path, temp_dir: Path | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.log = log
        self.temp_dir = temp_dir  # Gradio's temp folder, in which the server makes its own
        env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"}
        if temp_dir is not None:
            env["GRADIO_TEMP_DIR"] = str(temp_dir)
        with open(log, "w") as out:
            self.process = subprocess.Popen(
                [sys.executable, "app.py", *args, "--device", "cpu", "--port", str(self.port)],
                cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env=env,
            )

    def wait_until_serving(self, limit_s: float = 180) -> None:
        deadline = time.monotonic() + limit_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"app.py exited with {self.process.returncode}:\n{self.log.read_text()}")
            try:
                with urllib.request.urlopen(self.url, timeout=5) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.5)
        pytest.fail(f"app.py did not answer on {self.url}:\n{self.log.read_text()}")

    def server_folder(self) -> Path:
        """The folder the server keeps its uploads and results in."""
        (folder,) = self.temp_dir.glob("promptiqa-app-*")
        return folder

    def stop(self) -> int | None:
        """SIGTERM, as a service manager stops it; the exit code, or None if it had to be killed."""
        self.process.terminate()
        try:
            return self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            return None


@pytest.fixture(scope="module")
def small_checkpoint(tmp_path_factory) -> Path:
    """A random tiny network at 64 px: the server and the reference score the same weights, fast."""
    torch.manual_seed(0)
    model = PromptIQA(SMALL)
    path = tmp_path_factory.mktemp("checkpoint") / "small.pth.tar"
    save_checkpoint({"model": model.state_dict(), "model_config": SMALL.to_dict()}, path)
    return path


@pytest.fixture(scope="module")
def server(small_checkpoint, tmp_path_factory):
    folder = tmp_path_factory.mktemp("app")
    app = AppServer(["--checkpoint", str(small_checkpoint)], folder / "server.log", folder / "gradio")
    try:
        app.wait_until_serving()
        yield app
    finally:
        app.stop()


@pytest.fixture(scope="module")
def scorer(small_checkpoint) -> Scorer:
    return Scorer(load_model(small_checkpoint))


@pytest.fixture(scope="module")
def registry(small_checkpoint) -> ModelRegistry:
    """The app's models with the small checkpoint as the start-up one."""
    models = ModelRegistry(torch.device("cpu"))
    models.load_default(str(small_checkpoint))
    return models


def reference_scores(scorer: Scorer, queries: list[str]) -> np.ndarray:
    """What test.py's code path gives for Example1's prompts and these files."""
    return scorer.score_images(queries, scorer.encode_prompt_set(read_prompt_file(EXAMPLE1 / "prompts.json")))


def red_image(path: Path) -> Path:
    """A strongly red picture: scoring it with swapped colour channels gives another score."""
    image = np.zeros((48, 64, 3), np.uint8)
    image[..., 2] = np.linspace(120, 255, 64, dtype=np.uint8)[None, :]  # OpenCV writes BGR: channel 2 is red
    image[..., 1] = 30
    assert cv2.imwrite(str(path), image)
    return path


# ---------------------------------------------------------------- in-process: the scoring functions


def test_command_line_errors_exit_2_without_traceback(capsys):
    assert run_main(app_cli.main, ["--port", "70000"]) == 2
    assert "--port 70000" in capsys.readouterr().err
    assert run_main(app_cli.main, ["--device", "tpu"]) == 2
    assert "--device tpu" in capsys.readouterr().err
    assert run_main(app_cli.main, ["--allow-load", "no/such/folder"]) == 2
    assert "--allow-load no/such/folder: not a folder" in capsys.readouterr().err
    assert run_main(app_cli.main, ["--concurrency", "0"]) == 2
    assert "--concurrency 0: give a number above 0" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["hf:owner/repo/../../x", "hf:owner/repo/sub/../../x", "hf:owner/repo/..\\..\\x"])
def test_a_start_up_name_that_cannot_load_leaves_a_page_that_says_why(name, monkeypatch, capsys):
    from PromptIQA.app.page import start_up_model

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    models = ModelRegistry(torch.device("cpu"))
    start_up_model(models, name)  # no exception: the server goes on to serve its page
    assert models.default is None
    status = models.status(None)
    assert "No model is loaded" in status and f"*Why:* {name}" in status
    assert name in capsys.readouterr().out


def test_rows_are_matched_to_uploads_by_file_name_and_mapped_from_the_score_range(prompt_dir):
    uploads = [str(p) for p in sorted((prompt_dir / "isp").iterdir())]
    pairs = [("isp/p2.png", 50), ("p0.png", "0"), ("some/other/folder\\p1.png", 100.0), ("p3.png", 25)]
    prompt_set = requests.prompt_set_from_pairs(pairs, uploads, (0.0, 100.0), "table")
    assert [Path(p).name for p in prompt_set.paths] == ["p2.png", "p0.png", "p1.png", "p3.png"]
    assert prompt_set.scores == (0.5, 0.0, 1.0, 0.25)


@pytest.mark.parametrize(
    "pairs, uploaded, message",
    [
        ([], 4, "no image-score pairs"),
        ([("p0.png", 120), ("p1.png", 1), ("p2.png", 1), ("p3.png", 1)], 4, "p0.png): score 120 is outside"),
        ([("p0.png", "good"), ("p1.png", 1), ("p2.png", 1), ("p3.png", 1)], 4, "'good' is not a number"),
        ([("p0.png", None), ("p1.png", 1), ("p2.png", 1), ("p3.png", 1)], 4, "p0.png): no score"),
        ([("p0.png", 1), ("p1.png", 1), ("p2.png", 1), ("p3.png", 1)], 3, "row 4 (p3.png): no uploaded ISP image"),
        ([("p0.png", 1), ("p1.png", 1)], 4, "p2.png, p3.png uploaded but not in any row"),
        ([("p0.png", 1), ("p0.png", 2), ("p1.png", 1), ("p2.png", 1), ("p3.png", 1)], 4, "already in an earlier row"),
    ],
)
def test_bad_prompt_rows_name_the_row_and_the_fix(prompt_dir, pairs, uploaded, message):
    uploads = [str(p) for p in sorted((prompt_dir / "isp").iterdir())][:uploaded]
    with pytest.raises(UserError, match=re.escape(message)):
        requests.prompt_set_from_pairs(pairs, uploads, (0.0, 100.0), "ISP table")


def test_table_keeps_scores_and_adds_rows_for_new_uploads(prompt_dir):
    uploads = [str(p) for p in sorted((prompt_dir / "isp").iterdir())]
    table = requests.table_after_upload(uploads[:2], [["p1.png", 0.3], ["gone.png", None], ["kept.png", 0.9]])
    assert table == [["p1.png", 0.3], ["kept.png", 0.9], ["p0.png", None]]


def test_page_scores_on_the_score_range_reversed_with_csv(scorer, registry, prompt_dir, tmp_path):
    uploads = [str(p) for p in sorted((prompt_dir / "isp").iterdir())]
    queries = [str(prompt_dir / "query.jpg"), uploads[0]]
    raw_scores = [10, 30, 50, 70]  # on [0, 100]: the unit scores 0.1 ... 0.7
    prompt_set = requests.prompt_set_from_pairs(
        [(Path(p).name, s) for p, s in zip(uploads, raw_scores)], uploads, (0.0, 100.0), "table")
    result = score_page_request(registry, registry.default, prompt_set, True, queries, (0.0, 100.0), LOWER, tmp_path)

    unit = PromptSet(tuple(uploads), (0.1, 0.3, 0.5, 0.7)).reversed()
    expected = 100 * scorer.score_images(queries, scorer.encode_prompt_set(unit)).astype(np.float64)
    assert np.allclose([score for _, score in result.rows], expected, rtol=0, atol=TOLERANCE)
    assert "higher is better" in result.table_label and "[0, 100]" in result.table_label  # reversed DMOS
    assert result.columns == ["image", "score"] and "ensemble" not in result.summary  # 4 ISPs: one set
    with open(result.csv_path, newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["image", "score"]
    assert [r[0] for r in rows[1:]] == ["query.jpg", "p0.png"]
    assert np.allclose([float(r[1]) for r in rows[1:]], expected, rtol=0, atol=TOLERANCE)
    assert cv2.imread(str(result.picture_path)) is not None


@pytest.mark.parametrize("count", [1, pytest.param(33, marks=pytest.mark.slow)])
def test_any_number_of_isps(scorer, registry, tmp_path, count):
    uploads = [str(write_image(tmp_path / f"isp{i}.png", seed=i, size=(24, 24))) for i in range(count)]
    query = str(write_image(tmp_path / "query.png", seed=99))
    pairs = [(Path(p).name, i / count) for i, p in enumerate(uploads)]
    prompt_set = requests.prompt_set_from_pairs(pairs, uploads, (0.0, 1.0), "table")
    result = score_page_request(registry, registry.default, prompt_set, False, [query], (0.0, 1.0), HIGHER, tmp_path)
    # test.py's rule: one set of all the ISPs, however many
    expected = scorer.score_images([query], scorer.encode_prompt_set(prompt_set))[0]
    assert abs(result.rows[0][1] - expected) <= TOLERANCE
    assert f"against {count} ISP(s) (the published model was trained with 10)" in result.summary


def test_prompt_sets_are_cached_by_content_and_scores(scorer, registry, tmp_path):
    first = [str(write_image(tmp_path / "a" / f"p{i}.png", seed=i, size=(24, 24))) for i in range(2)]
    copies = [shutil.copy(p, tmp_path / f"copy{i}.png") for i, p in enumerate(first)]
    cache, model = PromptCache(), registry.default
    encoded = cache.encode(model, PromptSet(tuple(first), (0.2, 0.8)))
    assert cache.encode(model, PromptSet(tuple(map(str, copies)), (0.2, 0.8))) is encoded  # same bytes elsewhere
    assert cache.encode(model, PromptSet(tuple(first), (0.2, 0.9))) is not encoded
    features, vectors = scorer.encode_pool(first, (0.2, 0.8))
    assert torch.equal(encoded.vectors, vectors) and torch.equal(encoded.features, features)
    write_image(Path(first[0]), seed=7, size=(24, 24))  # the same file name, other content
    assert not torch.equal(cache.encode(model, PromptSet(tuple(first), (0.2, 0.8))).vectors, encoded.vectors)


def write_pool(folder: Path, count: int) -> tuple[list[str], list[tuple[str, float]]]:
    """`count` small ISP images and their (name, score) rows, the scores spread over [0, 100]."""
    uploads = [str(write_image(folder / f"pool{i:02d}.png", seed=i, size=(24, 24))) for i in range(count)]
    return uploads, [(Path(p).name, round(100 * i / (count - 1), 2)) for i, p in enumerate(uploads)]


def test_a_pool_of_isps_scores_with_intervals_on_the_score_range(scorer, registry, tmp_path):
    uploads, pairs = write_pool(tmp_path / "isp", 24)
    queries = [str(write_image(tmp_path / f"query{i}.png", seed=50 + i)) for i in range(3)]
    prompt_set = requests.prompt_set_from_pairs(pairs, uploads, (0.0, 100.0), "table")
    result = score_page_request(registry, registry.default, prompt_set, False, queries, (0.0, 100.0), HIGHER,
                                tmp_path, 0.9)

    reference = scorer.score_with_intervals(queries, pool_prompts(scorer.model, prepare_prompts(scorer, prompt_set),
                                                                  level=0.9))
    expected = {name: (100 * values.astype(np.float64)) for name, values in reference.items()}
    assert result.columns == ["image", "score", "spread", "low", "high"]
    shown = {name: np.array([row[k] for row in result.rows]) for k, name in enumerate(result.columns) if k}
    for name in expected:
        assert np.allclose(shown[name], expected[name], rtol=0, atol=TOLERANCE), name
    assert np.all(shown["low"] <= shown["score"]) and np.all(shown["score"] <= shown["high"])
    assert np.all(shown["low"] < shown["high"]) and 0 <= shown["low"].min() and shown["high"].max() <= 100
    assert "as an ensemble of 5 sets of 10 with 0.9 intervals" in result.summary
    with open(result.csv_path, newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == result.columns and [r[0] for r in rows[1:]] == ["query0.png", "query1.png", "query2.png"]
    for k, name in enumerate(result.columns[1:], start=1):
        assert np.allclose([float(r[k]) for r in rows[1:]], expected[name], rtol=0, atol=TOLERANCE), name

    # the picture carries the intervals: without them it is another picture
    plain = tmp_path / "plain.png"
    save_placement_figure(uploads, [s for _, s in pairs], queries, shown["score"], (0.0, 100.0), HIGHER, plain)
    assert not np.array_equal(cv2.imread(str(result.picture_path)), cv2.imread(str(plain)))

    one_set = score_page_request(registry, registry.default, prompt_set, False, queries, (0.0, 100.0), HIGHER,
                                 tmp_path)  # no interval: the 24 ISPs are one prompt set, as in test.py
    assert one_set.columns == ["image", "score"] and "ensemble" not in one_set.summary


# ---------------------------------------------------------------- in-process: the page's handlers

HOSTILE_PROMPT_FILES = {
    "huge_number.json": '{"isp": [["p0.png", ' + "9" * 5000 + "]]}",
    "deep.json": "[" * 100_000 + "]" * 100_000,
    "long_field.csv": "path,score\n" + "x" * 140_000 + ",0.5\n",
    "not_json.json": "{isp: ",
}


@pytest.fixture
def web_app(registry, tmp_path):
    from PromptIQA.app.page import ServerSettings, WebApp
    from PromptIQA.app.results import ResultFolders

    return WebApp(registry, ServerSettings(), ResultFolders(tmp_path / "results"))


@pytest.mark.parametrize("name", sorted(HOSTILE_PROMPT_FILES))
def test_a_hostile_prompt_file_gets_a_message_without_traceback_or_server_paths(web_app, prompt_dir, name):
    import gradio as gr

    from PromptIQA.app.page import page_errors

    (prompt_dir / name).write_text(HOSTILE_PROMPT_FILES[name])
    isps = [str(p) for p in sorted((prompt_dir / "isp").iterdir())]
    with pytest.raises(gr.Error) as error:
        page_errors(web_app.score_files)(str(prompt_dir / name), isps, [str(prompt_dir / "query.jpg")])
    message = error.value.message
    assert message.strip() not in ("", "Error") and "Traceback" not in message and "File \"" not in message
    assert str(prompt_dir) not in message  # uploads are named by their file names only
    if name == "not_json.json":  # a UserError reaches the page as its message
        assert "not_json.json" in message and "not valid JSON" in message


def test_a_bug_in_a_request_is_logged_and_the_page_told_without_traceback(caplog):
    import gradio as gr

    from PromptIQA.app.page import page_errors

    def divide(numerator: float, denominator: float) -> float:
        return numerator / denominator

    with pytest.raises(gr.Error) as error:
        page_errors(divide)(1.0, 0.0)
    reference = re.search(r"the server failed on this request \(ZeroDivisionError, logged as (\w+)\)",
                          error.value.message).group(1)
    record = next(r for r in caplog.records if reference in r.getMessage())
    assert record.exc_info[0] is ZeroDivisionError  # the traceback is in the log


def test_a_page_request_leaves_no_result_folder_behind_once_removed(web_app, prompt_dir):
    isps = [str(p) for p in sorted((prompt_dir / "isp").iterdir())]
    table = [[Path(p).name, 0.2 * i] for i, p in enumerate(isps)]
    *_, folder = web_app.score_page(isps, table, 0, 1, HIGHER, False, [str(prompt_dir / "query.jpg")], None)
    assert Path(folder).parent == web_app.results.root and (Path(folder) / "promptiqa_scores.csv").is_file()
    web_app.results.remove(folder)  # what the page runs once it has its copies
    assert list(web_app.results.root.iterdir()) == []


def test_a_page_request_over_the_limits_is_refused_before_scoring(registry, prompt_dir, tmp_path):
    from PromptIQA.app.page import ServerSettings, WebApp
    from PromptIQA.app.requests import RequestLimits
    from PromptIQA.app.results import ResultFolders

    results = ResultFolders(tmp_path / "results")
    web_app = WebApp(registry, ServerSettings(limits=RequestLimits(max_pixels=10_000)), results)
    isps = [str(p) for p in sorted((prompt_dir / "isp").iterdir())]  # 4 of 56 x 40 pixels
    with pytest.raises(UserError, match="more than 0.01 megapixels"):
        web_app.score_page(isps, [[Path(p).name, 0.5] for p in isps], 0, 1, HIGHER, False,
                           [str(prompt_dir / "query.jpg")], None)
    assert list(results.root.iterdir()) == []


@pytest.mark.parametrize("count, level, message", [
    (19, 0.9, "give at least 20 ISPs (this pool has 19)"),
    (4, 1.5, "interval level 1.5: give a coverage between 0 and 1"),
    (4, None, "interval level (empty): give a coverage between 0 and 1"),
])
def test_an_interval_needs_twenty_isps_and_a_level_the_page_says_so(web_app, tmp_path, count, level, message):
    import gradio as gr

    from PromptIQA.app.page import page_errors

    uploads, pairs = write_pool(tmp_path / "isp", count)
    query = str(write_image(tmp_path / "query.png", seed=99))
    with pytest.raises(gr.Error) as error:
        page_errors(web_app.score_page)(uploads, [list(p) for p in pairs], 0, 100, HIGHER, False, [query], None,
                                        True, level)
    assert message in error.value.message and "Traceback" not in error.value.message
    assert list(web_app.results.root.iterdir()) == []


# ---------------------------------------------------------------- the server, called by scripts


def test_score_endpoint_equals_scorer_on_the_same_files(server, scorer):
    from gradio_client import Client, handle_file

    queries = [str(EXAMPLE1 / "cactus.png"), str(EXAMPLES / "Example7" / "198.bmp")]
    result = Client(server.url, verbose=False).predict(
        handle_file(str(EXAMPLE1 / "prompts.json")), [handle_file(p) for p in ISP_IMAGES],
        [handle_file(q) for q in queries], api_name="/score",
    )
    assert [row[0] for row in result["data"]] == ["cactus.png", "198.bmp"]
    served = np.array([row[1] for row in result["data"]])
    assert np.abs(served - reference_scores(scorer, queries)).max() <= TOLERANCE


def test_corrupt_image_is_named_and_the_server_keeps_serving(server, scorer, tmp_path):
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    broken = tmp_path / "broken_query.png"
    broken.write_bytes((EXAMPLE1 / "cactus.png").read_bytes()[:2000])
    client = Client(server.url, verbose=False)
    prompts, isps = handle_file(str(EXAMPLE1 / "prompts.json")), [handle_file(p) for p in ISP_IMAGES]
    with pytest.raises(AppError, match="broken_query.png: the image is truncated"):
        client.predict(prompts, isps, [handle_file(str(broken))], api_name="/score")
    with pytest.raises(AppError, match="no uploaded ISP image has this name"):
        client.predict(prompts, isps[:-1], [handle_file(str(EXAMPLE1 / "cactus.png"))], api_name="/score")
    result = client.predict(prompts, isps, [handle_file(str(EXAMPLE1 / "cactus.png"))], api_name="/score")
    assert abs(result["data"][0][1] - reference_scores(scorer, [str(EXAMPLE1 / "cactus.png")])[0]) <= TOLERANCE


@pytest.fixture(scope="module")
def limited_server(small_checkpoint, tmp_path_factory):
    folder = tmp_path_factory.mktemp("limited")
    app = AppServer(["--checkpoint", str(small_checkpoint), "--max-file-size", "0.1", "--max-request-pixels", "0.5",
                     "--concurrency", "2"], folder / "server.log", folder / "gradio")
    try:
        app.wait_until_serving()
        yield app
    finally:
        app.stop()


def test_a_served_page_has_no_load_box_and_an_upload_limit(limited_server):
    with urllib.request.urlopen(limited_server.url + "config", timeout=30) as response:
        config = json.load(response)
    assert not any(c["props"].get("elem_id") == "checkpoint-choice" for c in config["components"])
    assert config["max_file_size"] == int(0.1 * 1024 * 1024)


def test_scoring_runs_a_bounded_number_of_requests_with_a_bounded_queue(registry, tmp_path):
    from PromptIQA.app.page import MAX_QUEUED_REQUESTS, ServerSettings, WebApp
    from PromptIQA.app.results import ResultFolders

    page = WebApp(registry, ServerSettings(concurrency=3), ResultFolders(tmp_path)).build()
    scoring = {f.name: f.concurrency_limit for f in page.fns.values() if f.concurrency_id == "score"}
    assert scoring == {"score_page": 3, "score_files": 3}  # the page and /score share the limit
    assert page._queue.max_size == MAX_QUEUED_REQUESTS


def test_uploads_and_requests_are_bounded_and_the_server_removes_its_files_at_sigterm(limited_server, tmp_path):
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    isps = [write_image(tmp_path / f"p{i}.png", seed=i, size=(32, 32)) for i in range(2)]
    (tmp_path / "prompts.json").write_text('{"isp": [["p0.png", 0.2], ["p1.png", 0.8]]}')
    noise = tmp_path / "noise.png"  # about 270 kB: over --max-file-size 0.1 (MB)
    cv2.imwrite(str(noise), np.random.default_rng(0).integers(0, 256, (300, 300, 3), dtype=np.uint8))
    wide = tmp_path / "wide.png"  # 0.6 megapixels (over the request limit) in a few kB: two flat halves
    flat = np.zeros((600, 1000, 3), np.uint8)
    flat[:, 500:] = 200
    cv2.imwrite(str(wide), flat)
    client = Client(limited_server.url, verbose=False)

    def score(query: Path) -> list:
        return client.predict(handle_file(str(tmp_path / "prompts.json")), [handle_file(str(p)) for p in isps],
                              [handle_file(str(query))], api_name="/score")["data"]

    with open(noise, "rb") as f:  # the server refuses it (gradio_client would not even send it)
        refused = httpx.post(limited_server.url + "gradio_api/upload", files={"files": f}, timeout=30)
    assert refused.status_code == 413 and "maximum allowed size" in refused.text
    with pytest.raises(AppError, match=re.escape("more than 0.5 megapixels (the server's limit per request, "
                                                 "reached at wide.png)")):
        score(wide)
    (tmp_path / "huge_number.json").write_text(HOSTILE_PROMPT_FILES["huge_number.json"])
    with pytest.raises(AppError) as error:
        client.predict(handle_file(str(tmp_path / "huge_number.json")), [handle_file(str(p)) for p in isps],
                       [handle_file(str(isps[0]))], api_name="/score")
    assert "upstream Gradio app" not in str(error.value)
    assert [row[0] for row in score(isps[0])] == ["p0.png"]
    assert list((limited_server.server_folder() / "uploads").rglob("p0.png"))  # the uploads are there

    assert limited_server.stop() == 0  # SIGTERM: a clean stop
    assert not list(limited_server.temp_dir.glob("promptiqa-app-*"))  # uploads and results are gone


# ---------------------------------------------------------------- the page, in a real browser


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None:
        pytest.skip("no chromium on this machine (CI installs Debian's chromium package)")
    playwright_api = pytest.importorskip("playwright.sync_api")
    with playwright_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield chromium
        chromium.close()


def page_score(page, image_name: str) -> float:
    """The score the results table shows for `image_name`, once it is there."""
    from playwright.sync_api import expect

    results = page.locator("#results")
    expect(results).to_contain_text(image_name, timeout=60_000)
    match = re.search(rf"{re.escape(image_name)}\s+(-?[0-9.]+)", results.inner_text())
    assert match, results.inner_text()
    return float(match.group(1))


def test_browser_scores_an_example_and_an_upload_with_the_right_colours(server, browser, scorer, tmp_path):
    from playwright.sync_api import expect

    page = browser.new_page(viewport={"width": 1400, "height": 1250})
    page.goto(server.url)
    page.get_by_text("Example1: CSIQ DMOS").click()
    expect(page.locator("#isp-table")).to_contain_text("1600.BLUR.5.png")
    expect(page.locator("#results")).not_to_contain_text("cactus.png")  # an example never fills the output
    page.locator("#score-button").click()
    shown = page_score(page, "cactus.png")
    assert abs(shown - reference_scores(scorer, [str(EXAMPLE1 / "cactus.png")])[0]) <= TOLERANCE
    expect(page.locator("#summary")).to_contain_text("lower is better")
    results = server.server_folder() / "results"
    deadline = time.monotonic() + 30  # removed once the page has its copies
    while any(results.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(results.iterdir())
    if os.environ.get("PROMPTIQA_SCREENSHOT"):
        expect(page.locator("#placement img")).to_be_visible()
        page.screenshot(path=os.environ["PROMPTIQA_SCREENSHOT"], full_page=True)

    upload = red_image(tmp_path / "red.png")
    swapped = tmp_path / "swapped.png"
    cv2.imwrite(str(swapped), cv2.imread(str(upload))[..., ::-1])
    page.locator("#queries input[type=file]").set_input_files(str(upload))
    expect(page.locator("#queries")).to_contain_text("red.png")
    page.locator("#score-button").click()
    expected, with_swapped_channels = reference_scores(scorer, [str(upload), str(swapped)])
    assert abs(with_swapped_channels - expected) > 1e-4  # the check below can tell the channel order
    assert abs(page_score(page, "red.png") - expected) <= TOLERANCE
    page.close()


def test_browser_scores_a_pool_of_isps_with_an_interval(server, browser, scorer, tmp_path):
    from playwright.sync_api import expect

    isps = [write_image(tmp_path / f"pool{i:02d}.png", seed=i, size=(32, 32)) for i in range(20)]
    scores = [round(0.05 * i, 2) for i in range(20)]
    rows = ", ".join(f'["{p.name}", {s}]' for p, s in zip(isps, scores))
    (tmp_path / "pool.json").write_text(f'{{"isp": [{rows}]}}')
    query = write_image(tmp_path / "pool_query.png", seed=99)

    page = browser.new_page(viewport={"width": 1400, "height": 1250})
    page.goto(server.url)
    page.locator("#isp-images input[type=file]").set_input_files([str(p) for p in isps])
    expect(page.locator("#isp-table")).to_contain_text("pool19.png", timeout=30_000)
    page.locator("#prompt-file input[type=file]").set_input_files(str(tmp_path / "pool.json"))
    expect(page.locator("#isp-table")).to_contain_text("0.95", timeout=30_000)
    page.locator("#interval input").check()
    page.locator("#queries input[type=file]").set_input_files(str(query))
    expect(page.locator("#queries")).to_contain_text("pool_query.png")
    page.locator("#score-button").click()

    results = page.locator("#results")
    expect(results).to_contain_text("pool_query.png", timeout=60_000)
    header = results.locator("thead").inner_text().split()
    assert header[:5] == ["image", "score", "spread", "low", "high"], header
    match = re.search(r"pool_query\.png" + 4 * r"\s+(-?[0-9.]+)", results.inner_text())
    assert match, results.inner_text()
    score, spread, low, high = map(float, match.groups())
    assert low <= score <= high and low < high and spread > 0
    prompt_set = PromptSet(tuple(map(str, isps)), tuple(scores))
    expected = scorer.score_with_intervals([str(query)], pool_prompts(scorer.model, prepare_prompts(scorer, prompt_set),
                                                                      level=0.9))
    assert np.allclose([score, spread, low, high], [expected[k][0] for k in ("score", "spread", "low", "high")],
                       rtol=0, atol=TOLERANCE)
    expect(page.locator("#summary")).to_contain_text("as an ensemble of 5 sets of 10 with 0.9 intervals")
    expect(page.locator("#placement img")).to_be_visible()
    page.close()


def test_browser_shows_bad_input_in_the_page(server, browser):
    from playwright.sync_api import expect

    page = browser.new_page()
    page.goto(server.url)
    page.locator("#score-button").click()
    expect(page.get_by_text("no image-score pairs")).to_be_visible(timeout=30_000)
    page.get_by_text("Example7: LIVE Challenge MOS").click()
    expect(page.locator("#isp-table")).to_contain_text("197.bmp")
    page.get_by_label("Score range: high").fill("0.5")  # Example7 has scores up to 0.8206
    page.locator("#score-button").click()
    expect(page.get_by_text("score 0.6108 is outside the score range [0, 0.5]")).to_be_visible(timeout=30_000)
    page.close()


@pytest.mark.slow
def test_a_page_loads_a_checkpoint_for_itself_only_and_a_bad_start_up_name_is_explained(browser, tmp_path):
    from playwright.sync_api import expect

    torch.manual_seed(1)
    other = tmp_path / "runs" / "b" / "best.pth.tar"
    other.parent.mkdir(parents=True)
    save_checkpoint({"model": PromptIQA(SMALL).state_dict(), "model_config": SMALL.to_dict()}, other)
    bad_name = "hf:owner/repo/../../x"
    app = AppServer(["--checkpoint", bad_name, "--allow-load", str(tmp_path / "runs")], tmp_path / "server.log",
                    tmp_path / "gradio")
    try:
        app.wait_until_serving()
        page_a, page_b = browser.new_page(), browser.new_page()
        for page in (page_a, page_b):
            page.goto(app.url)
            expect(page.locator("#model-status")).to_contain_text("No model is loaded", timeout=30_000)
        expect(page_a.locator("#model-status")).to_contain_text(bad_name)  # why, instead of a crash at start
        page_a.locator("#checkpoint-choice input").click()
        page_a.get_by_role("option", name="b/best.pth.tar").click()
        page_a.locator("#load-button").click()
        expect(page_a.locator("#model-status")).to_contain_text("Model: b/best.pth.tar (vit_tiny_patch16_224",
                                                                timeout=60_000)
        page_a.get_by_text("Example1: CSIQ DMOS").click()
        expect(page_a.locator("#isp-table")).to_contain_text("1600.BLUR.5.png")
        page_a.locator("#score-button").click()
        expected = reference_scores(Scorer(load_model(other)), [str(EXAMPLE1 / "cactus.png")])[0]
        assert abs(page_score(page_a, "cactus.png") - expected) <= TOLERANCE
        expect(page_a.locator("#summary")).to_contain_text("with b/best.pth.tar")

        page_b.reload()  # the other visitor: still no model, and told so when scoring
        expect(page_b.locator("#model-status")).to_contain_text("No model is loaded", timeout=30_000)
        page_b.get_by_text("Example1: CSIQ DMOS").click()
        expect(page_b.locator("#isp-table")).to_contain_text("1600.BLUR.5.png")
        page_b.locator("#score-button").click()
        expect(page_b.get_by_text("no model is loaded")).to_be_visible(timeout=30_000)
        for page in (page_a, page_b):
            page.close()
    finally:
        app.stop()


def test_no_demo_examples_before_the_demo_is_built(tmp_path, monkeypatch):
    monkeypatch.setenv("PROMPTIQA_CACHE", str(tmp_path))
    assert demo_examples() == []


@pytest.mark.slow
def test_demo_prompt_sets_become_examples_once_the_demo_is_built(tmp_path, monkeypatch):
    from PromptIQA.data.demo import build_demo

    monkeypatch.setenv("PROMPTIQA_CACHE", str(tmp_path))
    build_demo()
    examples = {e.label.split()[0]: e for e in demo_examples()}
    assert set(examples) == {"demo_kadid", "demo_csiq", "demo_brightness"}
    assert examples["demo_kadid"].direction == HIGHER and examples["demo_csiq"].direction == LOWER
    assert examples["demo_brightness"].direction == HIGHER
    for example in examples.values():
        assert len(example.isp_paths) == PUBLISHED_PROMPT_NUM and len(example.queries) == 3
        assert example.isp_scores == sorted(example.isp_scores) and 0 <= min(example.isp_scores) < max(example.isp_scores) <= 1
        assert all(Path(p).is_file() for p in [*example.isp_paths, *example.queries])
        assert not set(example.isp_paths) & set(example.queries)

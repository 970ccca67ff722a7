"""The PromptIQA web demo (Gradio): image-score pairs (ISPs) and query images in, scores out.

Every image is scored from the uploaded file with the reader `test.py` uses, so the page and the
command line give the same score for the same file. Scores are typed on any range [low, high] and
mapped to [0, 1]; "higher/lower is better" only labels the output. The named endpoint `/score`
serves scripts (gradio_client) with the start-up model.

What a served page may do is bounded: it loads no checkpoint unless the server allows a folder
(`--allow-load`), and then only files listed from it, for its own session; a request has at most
`RequestLimits` images and pixels; uploads have a maximum size; scoring runs `concurrency` requests
at a time with a bounded queue; result files go once the page has them, and every file of the server
(uploads, results) is removed when it stops (Ctrl-C or SIGTERM).
"""
from __future__ import annotations

import functools
import html
import logging
import os
import shutil
import signal
import tempfile
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import gradio as gr
import torch

from ..data.demo import default_demo_root
from ..data.image import IMAGE_EXTENSIONS
from ..utils.constants import EXAMPLES_DIR
from ..utils.errors import UserError
from .examples import bundled_examples, demo_examples
from .models import CheckpointId, ModelRegistry, shown_name
from .requests import (
    RequestLimits,
    file_name,
    interval_level_of,
    isp_pairs,
    prompt_set_from_pairs,
    read_uploaded_prompt_file,
    require_queries,
    score_range_of,
    table_after_upload,
    with_upload_names,
)
from .results import ResultFolders, score_page_request
from .texts import HIGHER, INTERVAL_HELP, INTRODUCTION, LOAD_FROM_FOLDER, LOWER, TABLE_HEADERS

log = logging.getLogger(__name__)

IMAGE_FILE_TYPES = sorted(IMAGE_EXTENSIONS)
MAX_QUEUED_REQUESTS = 32  # beyond these waiting requests a visitor is told the queue is full
UPLOAD_LIFETIME_S = 1800  # uploads older than this are removed (checked every UPLOAD_CHECK_S)
UPLOAD_CHECK_S = 300


@dataclass(frozen=True)
class ServerSettings:
    """What the server allows: `allow_load` a folder the page may load checkpoints from (None: none)."""

    allow_load: str | None = None
    limits: RequestLimits = field(default_factory=RequestLimits)
    concurrency: int = 1
    max_file_size_mb: float = 50


def _upload_paths(args: tuple) -> list[str]:
    """The server paths among a handler's arguments (uploads), to be named by file name in messages."""
    values = [item for arg in args for item in (arg if isinstance(arg, list) else [arg])]
    return [v for v in values if isinstance(v, str) and os.path.isabs(v)]


def page_errors(function):
    """A UserError becomes its message in the page; any other error is logged with its traceback and the
    page says that the server failed, with a reference to the log entry (never the traceback)."""
    @functools.wraps(function)
    def wrapped(*args):
        try:
            return function(*args)
        except UserError as err:
            message = with_upload_names(str(err), _upload_paths(args))
        # a request must not end in Gradio's bare "Error": the bug is logged in full, the page is told
        except Exception as err:
            reference = uuid.uuid4().hex[:8]
            log.exception("request %s failed", reference)
            message = (f"the server failed on this request ({type(err).__name__}, logged as {reference}); "
                       "check the inputs, or tell whoever runs the server")
        # gr.Error renders HTML; a file name must show as text
        raise gr.Error(html.escape(message, quote=False), duration=None, print_exception=False) from None

    return wrapped


@dataclass
class PromptInputs:
    prompt_file: gr.File
    isp_files: gr.File
    table: gr.Dataframe
    low: gr.Number
    high: gr.Number
    direction: gr.Radio
    reverse: gr.Checkbox
    interval: gr.Checkbox
    level: gr.Number

    def for_scoring(self) -> list:
        """What a score request and an example set (the prompt file only fills the table; the interval is
        the visitor's choice, kept across examples)."""
        return [self.isp_files, self.table, self.low, self.high, self.direction, self.reverse]


class WebApp:
    """The page and the /score endpoint around a ModelRegistry."""

    def __init__(self, registry: ModelRegistry, settings: ServerSettings, results: ResultFolders):
        self.registry = registry
        self.settings = settings
        self.results = results

    def load_checkpoint(self, choice: str | None) -> tuple[str, CheckpointId]:
        checkpoint = self.registry.load_choice(choice)
        return self.registry.status(checkpoint), checkpoint

    def checkpoint_list(self) -> gr.Dropdown:
        return gr.Dropdown(choices=self.registry.checkpoint_choices())

    def table_from_prompt_file(self, prompt_file: str | None, isp_files: list[str] | None) -> list[list]:
        rows = [[file_name(image), score] for image, score in read_uploaded_prompt_file(prompt_file)]
        return table_after_upload(isp_files, rows)

    def score_page(self, isp_files, table, low, high, direction, reverse, queries, checkpoint,
                   interval: bool = False, level: float | None = None) -> tuple:
        model = self.registry.model(checkpoint)
        score_range = score_range_of(low, high)
        interval_level = interval_level_of(interval, level)
        prompt_set = prompt_set_from_pairs(isp_pairs(table or [], "ISP table"), isp_files, score_range, "ISP table")
        queries = require_queries(queries)
        self.settings.limits.check([*prompt_set.paths, *queries])
        folder = self.results.new()
        try:
            result = score_page_request(self.registry, model, prompt_set, bool(reverse), queries, score_range,
                                        direction, folder, interval_level)
        except BaseException:
            self.results.remove(folder)
            raise
        table_out = gr.Dataframe(value=result.rows, headers=result.columns, label=result.table_label)
        return table_out, str(result.csv_path), str(result.picture_path), result.summary, str(folder)

    def score_files(self, prompt_file: str | None, isp_files: list[str] | None,
                    queries: list[str] | None) -> list[list]:
        """Score query images under a prompt file (JSON or CSV, scores on [0, 1]) whose ISP images
        are uploaded alongside and matched to its rows by file name. Returns rows (image, score); the
        ISPs are one prompt set, as test.py uses a prompt file."""
        model = self.registry.model(None)
        source = f"prompt file {Path(prompt_file).name}" if prompt_file else "prompt file"
        prompt_set = prompt_set_from_pairs(read_uploaded_prompt_file(prompt_file), isp_files, (0.0, 1.0), source)
        queries = require_queries(queries)
        self.settings.limits.check([*prompt_set.paths, *queries])
        scores = self.registry.score(model, self.registry.pool(model, prompt_set), queries)["score"]
        return [[Path(q).name, float(s)] for q, s in zip(queries, scores)]

    def build(self) -> gr.Blocks:
        with gr.Blocks(title="PromptIQA", analytics_enabled=False,
                       delete_cache=(UPLOAD_CHECK_S, UPLOAD_LIFETIME_S)) as page:
            gr.Markdown(INTRODUCTION)
            session_checkpoint = gr.State(None)  # None: the start-up model; else what this session loaded
            self._model_section(page, session_checkpoint)
            with gr.Row(equal_height=False):
                with gr.Column():
                    prompts = self._prompt_section()
                with gr.Column():
                    self._query_section(prompts, session_checkpoint)
            self._api_endpoint()
        page.queue(max_size=MAX_QUEUED_REQUESTS)
        return page

    def _model_section(self, page: gr.Blocks, session_checkpoint: gr.State) -> None:
        status = gr.Markdown(self.registry.status(None), elem_id="model-status")
        if not self.registry.can_load:
            return
        with gr.Accordion("Load a checkpoint", open=self.registry.default is None):
            gr.Markdown(LOAD_FROM_FOLDER)
            with gr.Row():
                choice = gr.Dropdown(label="Checkpoint file", choices=[], scale=4, elem_id="checkpoint-choice")
                load = gr.Button("Load", scale=1, elem_id="load-button")
        page.load(self.checkpoint_list, outputs=choice, api_visibility="private")
        load.click(page_errors(self.load_checkpoint), inputs=choice, outputs=[status, session_checkpoint],
                   concurrency_limit=1, concurrency_id="load", api_visibility="private")

    def _prompt_section(self) -> PromptInputs:
        gr.Markdown("### Prompts: image-score pairs (ISPs)")
        prompt_file = gr.File(label='Prompt file (optional): JSON {"isp": [[image, score], ...]} or CSV '
                              "path,score; fills the table", file_types=[".json", ".csv"], type="filepath",
                              height=140, elem_id="prompt-file")
        isp_files = gr.File(label="ISP images", file_count="multiple", file_types=IMAGE_FILE_TYPES,
                            type="filepath", height=220, elem_id="isp-images")
        table = gr.Dataframe(headers=TABLE_HEADERS, datatype=["str", "number"], value=[["", None]], type="array",
                             interactive=True, elem_id="isp-table",
                             label="ISP scores: one row per ISP image (file name, score)")
        with gr.Row():
            low = gr.Number(0, label="Score range: low", min_width=100)
            high = gr.Number(1, label="Score range: high", min_width=100)
            direction = gr.Radio([HIGHER, LOWER], value=HIGHER, label="Scores are", scale=2)
        reverse = gr.Checkbox(False, label="Reverse prompts (1 − s on [0, 1]: the opposite requirement)")
        with gr.Row(equal_height=True):
            interval = gr.Checkbox(False, label="Interval: add low and high to each score", scale=2,
                                   elem_id="interval")
            level = gr.Number(0.9, label="Interval level (coverage)", step=0.05,
                              min_width=100, elem_id="interval-level")
        gr.Markdown(INTERVAL_HELP)
        prompt_file.upload(page_errors(self.table_from_prompt_file), inputs=[prompt_file, isp_files],
                           outputs=table, api_visibility="private")
        isp_files.upload(table_after_upload, inputs=[isp_files, table], outputs=table, api_visibility="private")
        return PromptInputs(prompt_file, isp_files, table, low, high, direction, reverse, interval, level)

    def _query_section(self, prompts: PromptInputs, session_checkpoint: gr.State) -> None:
        gr.Markdown("### Query images")
        queries = gr.File(label="Images to score (one or many)", file_count="multiple",
                          file_types=IMAGE_FILE_TYPES, type="filepath", height=140, elem_id="queries")
        button = gr.Button("Score", variant="primary", elem_id="score-button")
        examples = bundled_examples() + demo_examples()
        if examples:
            gr.Examples(examples=[e.inputs() for e in examples], inputs=[*prompts.for_scoring(), queries],
                        example_labels=[e.label for e in examples], cache_examples=False,
                        label="Examples: fill the prompts and the query, then press Score")
        summary = gr.Markdown(elem_id="summary")
        results = gr.Dataframe(headers=TABLE_HEADERS, type="array", label="Scores", interactive=False,
                               elem_id="results")
        csv_file = gr.File(label="Download the scores (CSV)", interactive=False)
        picture = gr.Image(label="Where the queries fall among the ISPs", type="filepath", interactive=False,
                           elem_id="placement")
        result_folder = gr.State(None)
        scored = button.click(
            page_errors(self.score_page),
            inputs=[*prompts.for_scoring(), queries, session_checkpoint, prompts.interval, prompts.level],
            outputs=[results, csv_file, picture, summary, result_folder], api_visibility="private",
            concurrency_limit=self.settings.concurrency, concurrency_id="score",
        )
        # the page holds its own copies of the CSV and the picture by now
        scored.then(self.results.remove, inputs=result_folder, api_visibility="private")

    def _api_endpoint(self) -> None:
        """Hidden components that only give `/score` its three inputs and its output."""
        with gr.Column(visible=False):
            prompt_file = gr.File(label="prompt file", file_types=[".json", ".csv"], type="filepath")
            isp_files = gr.File(label="ISP images", file_count="multiple", type="filepath")
            queries = gr.File(label="query images", file_count="multiple", type="filepath")
            table = gr.Dataframe(headers=TABLE_HEADERS, type="array", label="scores")
            trigger = gr.Button("score")
        trigger.click(page_errors(self.score_files), inputs=[prompt_file, isp_files, queries], outputs=table,
                      api_name="score", api_description=self.score_files.__doc__,
                      concurrency_limit=self.settings.concurrency, concurrency_id="score")


def allowed_folders() -> list[str]:
    """Folders the page may serve files from: the examples and the built demo data."""
    return [str(EXAMPLES_DIR), str(default_demo_root())]


def start_up_model(registry: ModelRegistry, checkpoint: str) -> None:
    """Load the start-up checkpoint if it loads; if not, the page says why and how to get one."""
    try:
        registry.load_default(checkpoint)
    except UserError as err:
        registry.problem = str(err)
    # the server still starts and its page explains: whatever failed is logged in full here
    except Exception as err:
        log.exception("--checkpoint %s could not be loaded", checkpoint)
        reason = str(err).strip().splitlines()[0] if str(err).strip() else ""
        registry.problem = (f"{shown_name(checkpoint)}: cannot be loaded ({type(err).__name__}: {reason}); "
                            "check the name or the file")
    if registry.problem:
        print(f"no model loaded: {registry.problem}\nthe page explains how to get a checkpoint", flush=True)


def wait_for_stop() -> None:
    """Block until Ctrl-C or SIGTERM (a service manager's stop), so that clean-up runs either way."""
    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    try:
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)


def serve(checkpoint: str, device: torch.device, host: str, port: int, settings: ServerSettings) -> None:
    """Serve until stopped; every file the server wrote (uploads, results) lives in one private folder that
    is removed when it stops."""
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    parent = Path(os.environ.get("GRADIO_TEMP_DIR") or tempfile.gettempdir())
    parent.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="promptiqa-app-", dir=parent))
    os.environ["GRADIO_TEMP_DIR"] = str(root / "uploads")  # read by Gradio when it stores an upload
    page = None
    try:
        registry = ModelRegistry(device, settings.allow_load)
        start_up_model(registry, checkpoint)
        page = WebApp(registry, settings, ResultFolders(root / "results")).build()
        try:
            page.launch(server_name=host, server_port=port, allowed_paths=allowed_folders(), footer_links=["api"],
                        max_file_size=int(settings.max_file_size_mb * 1024 * 1024), prevent_thread_lock=True)
        except OSError as err:
            raise UserError(f"--host {host} --port {port}: cannot listen there ({err}); pick another --port") from None
        wait_for_stop()
    finally:
        if page is not None:
            page.close()
        shutil.rmtree(root, ignore_errors=True)

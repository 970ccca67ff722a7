"""The PromptIQA web demo (Gradio): image-score pairs (ISPs) and query images in, scores out.

Every image is scored from the uploaded file with the reader `test.py` uses, so the page and the
command line give the same score for the same file. A prompt set is encoded once per model and
cached by the ISP files' contents, their scores and the reverse switch.

Scores are typed on any range [low, high] and mapped to [0, 1] as (s - low) / (high - low); the
direction is kept, so the prompts alone tell the model which way quality runs. "Higher/lower is
better" only labels the output. The named endpoint `/score` serves scripts (gradio_client).
"""
from __future__ import annotations

import functools
import hashlib
import html
import json
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import gradio as gr
import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.offsetbox import AnnotationBbox, OffsetImage

from ..data.datasets import read_dataset_as
from ..data.demo import LABEL_DECIMALS, LAYOUTS, default_demo_root, demo_dataset_info, is_built
from ..data.groups import select_prompts
from ..data.image import IMAGE_EXTENSIONS, read_image
from ..data.prompts import (
    PromptSet,
    check_score_range,
    is_blank,
    parse_score,
    prompt_file_rows,
    read_prompt_file,
    scores_to_unit_range,
    unit_range_to_scores,
)
from ..data.split import split_records
from ..models.checkpoint import DEFAULT_CHECKPOINT, load_model
from ..scoring.scorer import Scorer
from ..utils.atomic import write_csv_atomic
from ..utils.constants import EXAMPLES_DIR
from ..utils.errors import UserError
from ..utils.hub import HF_PREFIX, PUBLISHED_REPO

HIGHER, LOWER = "higher is better", "lower is better"
PUBLISHED_PROMPT_NUM = 10  # ISPs per query the published model was trained with
PROMPT_CACHE_SIZE = 64  # encoded prompt sets kept per model
THUMBNAIL_SIZE = 64
MAX_THUMBNAILS = 24  # per row of the placement picture; further images are marked on the axis only
IMAGE_FILE_TYPES = sorted(IMAGE_EXTENSIONS)
TABLE_HEADERS = ["image", "score"]
DEMO_SEED = 2024  # the training default: its split and "fixed" prompts are the ones evaluation uses

HOW_TO_GET_A_CHECKPOINT = f"""**No model is loaded yet.** Get a checkpoint in one of two ways:

- the published weights by name: give `{HF_PREFIX}{PUBLISHED_REPO}` below (downloaded once into the
  Hugging Face cache), or place the published `best_model.pth.tar` at `{DEFAULT_CHECKPOINT}` and
  restart the app or give that path below;
- a small model trained here on the built-in demo data: `python train.py --demo` (minutes on a
  CPU), then give `runs/demo/best.pth.tar` below.
"""

INTRODUCTION = f"""# PromptIQA: image quality under your requirement

Give a few **image-score pairs (ISPs)**: example images with the scores your requirement gives them.
PromptIQA scores the query images the same way. Any number of ISPs works (1 or more); the published
model was trained with **{PUBLISHED_PROMPT_NUM}**.

Scores may be on any range **[low, high]**; they are mapped to [0, 1] as (s − low) / (high − low) and
the predictions are mapped back. The direction is kept as given: with lower-is-better scores (e.g.
DMOS) the prompts tell the model so, and the predictions are lower-is-better too. The
"higher / lower is better" choice only labels the output. *Reverse prompts* uses 1 − s for every ISP
(on [0, 1]), i.e. the opposite requirement, and flips that label.
"""


def opposite(direction: str) -> str:
    return LOWER if direction == HIGHER else HIGHER


def file_digest(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def file_name(path: str) -> str:
    """The last component of a prompt-file path, with / or \\ separators: uploads keep only names."""
    return str(path).replace("\\", "/").rsplit("/", 1)[-1].strip()


def with_upload_names(message: str, paths: Sequence[str]) -> str:
    """Show uploaded files under their own names instead of the server's temporary paths."""
    for path in sorted(paths, key=len, reverse=True):
        message = message.replace(str(path), Path(path).name)
    return message


@dataclass
class LoadedModel:
    """A model with its Scorer and a bounded cache of encoded prompt sets."""

    scorer: Scorer
    description: str
    _prompts: OrderedDict = field(default_factory=OrderedDict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def encode(self, prompt_set: PromptSet, reverse: bool) -> torch.Tensor:
        key = (tuple(file_digest(p) for p in prompt_set.paths), prompt_set.scores, reverse)
        with self._lock:
            if key in self._prompts:
                self._prompts.move_to_end(key)
                return self._prompts[key]
        encoded = self.scorer.encode_prompt_set(prompt_set.reversed() if reverse else prompt_set)
        with self._lock:
            self._prompts[key] = encoded
            while len(self._prompts) > PROMPT_CACHE_SIZE:
                self._prompts.popitem(last=False)
        return encoded

    def score(self, prompt_set: PromptSet, reverse: bool, queries: Sequence[str]) -> np.ndarray:
        """Scores in [0, 1] of the query files; image errors name the uploaded file."""
        try:
            return self.scorer.score_images(list(queries), self.encode(prompt_set, reverse))
        except UserError as err:
            raise UserError(with_upload_names(str(err), [*prompt_set.paths, *queries])) from None


class ModelSlot:
    """The model every visitor of the page uses; a checkpoint path given in the page replaces it."""

    def __init__(self, device: torch.device):
        self.device = device
        self.loaded: LoadedModel | None = None
        self.problem = ""  # why the last load failed, shown in the page

    def load(self, path: str | Path) -> None:
        path = str(path).strip()
        if not path:
            raise UserError("checkpoint path: empty; type the path of a .pth.tar file")
        try:
            model = load_model(path, device=self.device)
        except UserError as err:
            self.problem = str(err)
            raise
        config = model.config
        description = (f"`{path}` ({config.backbone}, {config.img_size} px, trained with "
                       f"{model.prompt_num} ISPs) on {self.device}")
        self.loaded, self.problem = LoadedModel(Scorer(model), description), ""

    def status(self) -> str:
        if self.loaded is not None:
            return f"**Model:** {self.loaded.description}"
        problem = f"\n\n*Last attempt:* {self.problem}" if self.problem else ""
        return HOW_TO_GET_A_CHECKPOINT + problem

    def model(self) -> LoadedModel:
        if self.loaded is None:
            raise UserError("no model is loaded: give a checkpoint path under 'Load a checkpoint' first "
                            "(the published best_model.pth.tar, or train one with `python train.py --demo`)")
        return self.loaded


def uploads_by_name(files: Sequence[str], what: str) -> dict[str, str]:
    """Uploaded files keyed by file name (uploads lose their folders, so names must be unique)."""
    by_name: dict[str, str] = {}
    for path in files:
        name = Path(path).name
        if name in by_name and file_digest(by_name[name]) != file_digest(path):
            raise UserError(f"{what}: two different files are named {name}; rename one of them")
        by_name[name] = path
    return by_name


def isp_pairs(rows: Sequence, source: str) -> list[tuple[str, object]]:
    """(image, raw score) of each non-blank [image, score] row of a table or prompt file."""
    pairs = []
    for number, row in enumerate(rows, start=1):
        if not isinstance(row, (list, tuple)) or len(row) != 2 or not isinstance(row[0], (str, type(None))):
            raise UserError(f"{source}: ISP row {number} is {row!r}; expected [image, score]")
        if not all(is_blank(cell) for cell in row):
            pairs.append((row[0] or "", row[1]))
    return pairs


def prompt_set_from_pairs(
    pairs: Sequence[tuple[str, object]], isp_files: Sequence[str], score_range: tuple[float, float], source: str
) -> PromptSet:
    """The prompt set of (image, score) pairs, each matched to the uploaded file of the image's file name."""
    low, high = score_range
    check_score_range(low, high)
    if not pairs:
        raise UserError(f"{source}: no image-score pairs; upload ISP images and give each a score")
    by_name = uploads_by_name(isp_files or [], "ISP images")
    paths, scores = [], []
    for number, (image, raw) in enumerate(pairs, start=1):
        name = file_name(image)
        where = f"{source}, ISP row {number} ({name or 'no image name'})"
        if name not in by_name:
            uploaded = ", ".join(sorted(by_name)) or "none"
            raise UserError(f"{where}: no uploaded ISP image has this name; upload it (uploaded: {uploaded})")
        if by_name[name] in paths:
            raise UserError(f"{where}: this image is already in an earlier row; give each image one row")
        paths.append(by_name[name])
        scores.append(parse_score(raw, low, high, where))
    unused = sorted(set(by_name) - {Path(p).name for p in paths})
    if unused:
        raise UserError(f"{source}: ISP image(s) {', '.join(unused)} uploaded but not in any row; "
                        "give each a row with its score, or remove it")
    return PromptSet(tuple(paths), scores_to_unit_range(scores, low, high))


def read_uploaded_prompt_file(path: str) -> list[tuple[str, object]]:
    """The (image, raw score) pairs of an uploaded JSON or CSV prompt file."""
    name = Path(path).name
    if Path(path).suffix.lower() not in (".json", ".csv"):
        raise UserError(f'prompt file {name}: use a .json file ({{"isp": [[image, score], ...]}}) '
                        "or a .csv file with the header path,score")
    try:
        return isp_pairs(prompt_file_rows(path), f"prompt file {name}")
    except UserError as err:
        raise UserError(with_upload_names(str(err), [path])) from None


def require_queries(queries: Sequence[str] | None) -> list[str]:
    if not queries:
        raise UserError("no query image: upload one or more images to score")
    return list(queries)


def _thumbnail_row(ax, paths: Sequence[str], scores: Sequence[float], side: float, colour: str) -> None:
    """Mark the scores on the axis and hang thumbnails above (side=1) or below (side=-1) it."""
    ax.scatter(scores, np.zeros(len(scores)), marker="|", s=400, color=colour, zorder=3)
    by_score = sorted(zip(scores, paths))[:MAX_THUMBNAILS]
    for k, (score, path) in enumerate(by_score):
        height = side * (0.3 + 0.25 * (k % 3))  # three staggered heights keep neighbours apart
        box = AnnotationBbox(
            OffsetImage(read_image(path, THUMBNAIL_SIZE), zoom=0.55), (score, 0), xybox=(score, height),
            arrowprops={"arrowstyle": "-", "color": colour, "linewidth": 0.8},
            bboxprops={"edgecolor": colour, "linewidth": 1.2}, pad=0.1,
        )
        ax.add_artist(box)


def save_placement_figure(
    prompt_paths: Sequence[str], prompt_scores: Sequence[float], query_paths: Sequence[str],
    query_scores: Sequence[float], score_range: tuple[float, float], direction: str, path: Path,
) -> None:
    """The ISP images and the queries on one score axis (prompts above, queries below)."""
    low, high = score_range
    margin = 0.06 * (high - low)
    fig = Figure(figsize=(8, 4.5), dpi=100)
    ax = fig.add_subplot()
    ax.axhline(0, color="0.7", linewidth=1)
    _thumbnail_row(ax, prompt_paths, prompt_scores, 1, "tab:blue")
    _thumbnail_row(ax, query_paths, query_scores, -1, "tab:red")
    ax.set(xlim=(low - margin, high + margin), ylim=(-1.2, 1.2), xlabel=f"score ({direction})")
    ax.set_yticks([0.6, -0.6], ["prompts (ISPs)", "queries"])
    for spine in ("left", "right", "top"):
        ax.spines[spine].set_visible(False)
    fig.tight_layout()
    fig.savefig(path)


@dataclass(frozen=True)
class ScoredRequest:
    """The page's results: table rows, CSV and picture files, and a summary line."""

    rows: list[list]
    csv_path: Path
    picture_path: Path
    summary: str
    table_label: str


def score_page_request(
    model: LoadedModel, prompt_set: PromptSet, reverse: bool, queries: Sequence[str],
    score_range: tuple[float, float], direction: str, output_dir: Path,
) -> ScoredRequest:
    unit_scores = model.score(prompt_set, reverse, queries)
    scores = unit_range_to_scores(unit_scores, *score_range)
    used = prompt_set.reversed() if reverse else prompt_set
    prompt_scores = unit_range_to_scores(used.scores, *score_range)
    shown_direction = opposite(direction) if reverse else direction
    rows = [[Path(q).name, round(s, 6)] for q, s in zip(queries, scores)]
    csv_path, picture_path = output_dir / "promptiqa_scores.csv", output_dir / "placement.png"
    write_csv_atomic(csv_path, TABLE_HEADERS, ((Path(q).name, f"{s:.8f}") for q, s in zip(queries, scores)))
    save_placement_figure(used.paths, prompt_scores, queries, scores, score_range, shown_direction, picture_path)
    low, high = score_range
    count = len(prompt_set.paths)
    note = "" if count == PUBLISHED_PROMPT_NUM else f" (the published model was trained with {PUBLISHED_PROMPT_NUM})"
    summary = (f"Scored {len(queries)} image(s) against {count} ISP(s){note}"
               f"{', reversed' if reverse else ''}: scores on [{low:g}, {high:g}], **{shown_direction}**.")
    return ScoredRequest(rows, csv_path, picture_path, summary, f"Scores on [{low:g}, {high:g}], {shown_direction}")


def table_after_upload(isp_files: Sequence[str] | None, rows: Sequence | None) -> list[list]:
    """The ISP table after images are uploaded: rows with a score stay; each uploaded image without
    a row gets one with an empty score; empty rows of images no longer uploaded go."""
    names = [Path(p).name for p in isp_files or []]
    kept = [list(r) for r in rows or [] if len(r) == 2 and (not is_blank(r[1]) or file_name(r[0] or "") in names)]
    listed = {file_name(r[0] or "") for r in kept}
    return kept + [[name, None] for name in dict.fromkeys(names) if name not in listed] or [["", None]]


@dataclass(frozen=True)
class Example:
    label: str
    isp_paths: list[str]
    isp_scores: list[float]
    queries: list[str]
    score_range: tuple[float, float]
    direction: str
    reverse: bool = False

    def inputs(self) -> list:
        table = [[Path(p).name, s] for p, s in zip(self.isp_paths, self.isp_scores)]
        return [self.isp_paths, table, *self.score_range, self.direction, self.reverse, self.queries]


def example_from_prompt_file(label: str, folder: Path, direction: str, reverse: bool = False) -> Example:
    """An example from a folder of `Examples/`: its prompts.json ISPs and its "query" image."""
    prompt_set = read_prompt_file(folder / "prompts.json")
    query = json.loads((folder / "prompts.json").read_text(encoding="utf-8"))["query"]
    return Example(label, list(prompt_set.paths), list(prompt_set.scores), [str(folder / query)],
                   (0.0, 1.0), direction, reverse)


def bundled_examples() -> list[Example]:
    if not (EXAMPLES_DIR / "Example1" / "prompts.json").is_file():
        return []  # an install without the repository's Examples/ folder
    csiq, livec = EXAMPLES_DIR / "Example1", EXAMPLES_DIR / "Example7"
    return [
        example_from_prompt_file("Example1: CSIQ DMOS, lower is better", csiq, LOWER),
        example_from_prompt_file("Example2: Example1's ISPs reversed (higher is better)", csiq, LOWER, reverse=True),
        example_from_prompt_file("Example7: LIVE Challenge MOS, higher is better", livec, HIGHER),
    ]


def demo_examples() -> list[Example]:
    """One example per built demo dataset: the prompts evaluation uses (the training split's "fixed"
    selection) and three test images (lowest, median and highest label). None before the demo is built."""
    if not is_built():
        return []
    examples = []
    for name, entry in demo_dataset_info().items():
        train, test = split_records(read_dataset_as(name, entry["reader"], entry["root"]), DEMO_SEED)
        prompts = [train[i] for i in select_prompts([r.label for r in train], PUBLISHED_PROMPT_NUM)]
        test = sorted(test, key=lambda r: r.label)
        queries = [test[0].path, test[len(test) // 2].path, test[-1].path]
        direction = HIGHER if LAYOUTS[name].higher_is_better else LOWER
        scores = [round(r.label, LABEL_DECIMALS) for r in prompts]  # the label file's digits, without float noise
        examples.append(Example(f"{name} (demo data, {direction})", [r.path for r in prompts], scores, queries,
                                (0.0, 1.0), direction))
    return examples


def page_errors(function):
    """Turn a UserError into a message in the page (gr.Error); the server keeps serving."""
    @functools.wraps(function)
    def wrapped(*args):
        try:
            return function(*args)
        except UserError as err:
            # gr.Error renders HTML; a file name must show as text
            raise gr.Error(html.escape(str(err), quote=False), duration=None, print_exception=False) from None

    return wrapped


def score_range_of(low: float | None, high: float | None) -> tuple[float, float]:
    if low is None or high is None:
        raise UserError("score range: give both low and high, e.g. 0 and 100")
    check_score_range(float(low), float(high))
    return float(low), float(high)


@dataclass
class PromptInputs:
    prompt_file: gr.File
    isp_files: gr.File
    table: gr.Dataframe
    low: gr.Number
    high: gr.Number
    direction: gr.Radio
    reverse: gr.Checkbox

    def for_scoring(self) -> list:
        """What a score request and an example set (the prompt file only fills the table)."""
        return [self.isp_files, self.table, self.low, self.high, self.direction, self.reverse]


class WebApp:
    """The page and the /score endpoint around one ModelSlot."""

    def __init__(self, slot: ModelSlot):
        self.slot = slot
        self._outputs = tempfile.TemporaryDirectory(prefix="promptiqa-app-")
        self.examples = bundled_examples() + demo_examples()

    def output_dir(self) -> Path:
        """A fresh folder per request, so that concurrent requests never share result files."""
        return Path(tempfile.mkdtemp(dir=self._outputs.name))

    def load_checkpoint(self, path: str) -> str:
        self.slot.load(path)
        return self.slot.status()

    def table_from_prompt_file(self, prompt_file: str | None, isp_files: list[str] | None) -> list[list]:
        rows = [[file_name(image), score] for image, score in read_uploaded_prompt_file(prompt_file or "")]
        return table_after_upload(isp_files, rows)

    def score_page(self, isp_files, table, low, high, direction, reverse, queries) -> tuple:
        model = self.slot.model()
        score_range = score_range_of(low, high)
        prompt_set = prompt_set_from_pairs(isp_pairs(table or [], "ISP table"), isp_files, score_range, "ISP table")
        result = score_page_request(model, prompt_set, bool(reverse), require_queries(queries), score_range,
                                    direction, self.output_dir())
        table_out = gr.Dataframe(value=result.rows, headers=TABLE_HEADERS, label=result.table_label)
        return table_out, str(result.csv_path), str(result.picture_path), result.summary

    def score_files(self, prompt_file: str | None, isp_files: list[str] | None,
                    queries: list[str] | None) -> list[list]:
        """Score query images under a prompt file (JSON or CSV, scores on [0, 1]) whose ISP images
        are uploaded alongside and matched to its rows by file name. Returns rows (image, score)."""
        if not prompt_file:
            raise UserError("no prompt file: give a .json or .csv prompt file")
        source = f"prompt file {Path(prompt_file).name}"
        prompt_set = prompt_set_from_pairs(read_uploaded_prompt_file(prompt_file), isp_files, (0.0, 1.0), source)
        queries = require_queries(queries)
        scores = self.slot.model().score(prompt_set, False, queries)
        return [[Path(q).name, float(s)] for q, s in zip(queries, scores)]

    def build(self) -> gr.Blocks:
        with gr.Blocks(title="PromptIQA", analytics_enabled=False) as page:
            gr.Markdown(INTRODUCTION)
            self._model_section()
            with gr.Row(equal_height=False):
                with gr.Column():
                    prompts = self._prompt_section()
                with gr.Column():
                    self._query_section(prompts)
            self._api_endpoint()
        return page

    def _model_section(self) -> None:
        status = gr.Markdown(self.slot.status(), elem_id="model-status")
        with gr.Accordion("Load a checkpoint", open=self.slot.loaded is None):
            with gr.Row():
                path = gr.Textbox(label="Checkpoint path or hf:OWNER/REPO", placeholder=str(DEFAULT_CHECKPOINT),
                                  scale=4, elem_id="checkpoint-path")
                load = gr.Button("Load", scale=1, elem_id="load-button")
        gr.on([load.click, path.submit], page_errors(self.load_checkpoint), inputs=path, outputs=status,
              api_visibility="private")

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
        prompt_file.upload(page_errors(self.table_from_prompt_file), inputs=[prompt_file, isp_files],
                           outputs=table, api_visibility="private")
        isp_files.upload(table_after_upload, inputs=[isp_files, table], outputs=table, api_visibility="private")
        return PromptInputs(prompt_file, isp_files, table, low, high, direction, reverse)

    def _query_section(self, prompts: PromptInputs) -> None:
        gr.Markdown("### Query images")
        queries = gr.File(label="Images to score (one or many)", file_count="multiple",
                          file_types=IMAGE_FILE_TYPES, type="filepath", height=140, elem_id="queries")
        button = gr.Button("Score", variant="primary", elem_id="score-button")
        if self.examples:
            gr.Examples(examples=[e.inputs() for e in self.examples], inputs=[*prompts.for_scoring(), queries],
                        example_labels=[e.label for e in self.examples], cache_examples=False,
                        label="Examples: fill the prompts and the query, then press Score")
        summary = gr.Markdown(elem_id="summary")
        results = gr.Dataframe(headers=TABLE_HEADERS, type="array", label="Scores", interactive=False,
                               elem_id="results")
        csv_file = gr.File(label="Download the scores (CSV)", interactive=False)
        picture = gr.Image(label="Where the queries fall among the ISPs", type="filepath", interactive=False,
                           elem_id="placement")
        button.click(page_errors(self.score_page), inputs=[*prompts.for_scoring(), queries],
                     outputs=[results, csv_file, picture, summary], api_visibility="private")

    def _api_endpoint(self) -> None:
        """Hidden components that only give `/score` its three inputs and its output."""
        with gr.Column(visible=False):
            prompt_file = gr.File(label="prompt file", file_types=[".json", ".csv"], type="filepath")
            isp_files = gr.File(label="ISP images", file_count="multiple", type="filepath")
            queries = gr.File(label="query images", file_count="multiple", type="filepath")
            table = gr.Dataframe(headers=TABLE_HEADERS, type="array", label="scores")
            trigger = gr.Button("score")
        trigger.click(page_errors(self.score_files), inputs=[prompt_file, isp_files, queries], outputs=table,
                      api_name="score", api_description=self.score_files.__doc__)


def allowed_folders() -> list[str]:
    """Folders the page may serve files from: the examples and the built demo data."""
    return [str(EXAMPLES_DIR), str(default_demo_root())]


def serve(checkpoint: str | Path, device: torch.device, host: str, port: int) -> None:
    """Load the checkpoint if it loads (else the page explains how to get one) and serve until stopped."""
    slot = ModelSlot(device)
    try:
        slot.load(checkpoint)
    except UserError as err:
        print(f"no model loaded: {err}\nthe page explains how to get a checkpoint", flush=True)
    page = WebApp(slot).build()
    try:
        page.launch(server_name=host, server_port=port, allowed_paths=allowed_folders(), footer_links=["api"])
    except OSError as err:
        raise UserError(f"--host {host} --port {port}: cannot listen there ({err}); pick another --port") from None

"""The page's examples: the published prompt sets in `Examples/`, and the demo datasets' once built."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..data.cache import DirectImages
from ..data.datasets import read_dataset_as
from ..data.demo import LABEL_DECIMALS, LAYOUTS, demo_dataset_info, is_built
from ..data.loader import SplitDataset, eval_sets
from ..data.prompts import read_prompt_file
from ..utils.constants import DEFAULT_SEED, EXAMPLES_DIR, PUBLISHED_PROMPT_NUM
from .texts import HIGHER, LOWER


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
        """The values of the page's inputs: ISP images, table, low, high, direction, reverse, queries."""
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
    """One example per built demo dataset: the prompt set evaluation uses (`data.loader.eval_sets` on the
    split of the default seed) and three test images (lowest, median and highest label). None before
    the demo is built."""
    if not is_built():
        return []
    datasets = []
    for name, entry in demo_dataset_info().items():
        records = read_dataset_as(name, entry["reader"], entry["root"])
        datasets.append(SplitDataset.from_records(name, records, DirectImages([r.path for r in records]), DEFAULT_SEED))
    examples = []
    for dataset, chosen in zip(datasets, eval_sets(datasets, PUBLISHED_PROMPT_NUM)):
        test = sorted((dataset.records[i] for i in chosen.test), key=lambda r: r.label)
        queries = [test[0].path, test[len(test) // 2].path, test[-1].path]
        direction = HIGHER if LAYOUTS[dataset.name].higher_is_better else LOWER
        # the label file's digits, without float noise
        scores = [round(label, LABEL_DECIMALS) for label in chosen.prompt_labels]
        examples.append(Example(f"{dataset.name} (demo data, {direction})", [dataset.records[i].path for i in chosen.prompts],
                                scores, queries, (0.0, 1.0), direction))
    return examples

"""Build the made-up checkpoint in the published layout and score Example1 with it.

No published weights can be shipped or downloaded, so faithfulness to the published code is checked
with a checkpoint of made-up weights: every tensor of the published state_dict (names, shapes and
order in official_keys.json beside this file) is drawn from one seeded generator. The published code
scored Examples/Example1 with this checkpoint as PUBLISHED_SCORE (CPU, float32); this implementation
must give the same within TOLERANCE. See docs/parity.md.

    python tools/make_parity_checkpoint.py                      # build in a temp folder, score, delete
    python tools/make_parity_checkpoint.py --checkpoint made_up.pth.tar   # keep the ~1.3 GB file
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if __package__ in (None, ""):  # run as a script: make the repository's package importable
    sys.path.insert(0, str(ROOT))

from PromptIQA.data.prompts import read_prompt_file  # noqa: E402
from PromptIQA.models import PromptIQA  # noqa: E402
from PromptIQA.models.checkpoint import load_model  # noqa: E402
from PromptIQA.scoring.scorer import Scorer  # noqa: E402

OFFICIAL_KEYS = Path(__file__).with_name("official_keys.json")
EXAMPLE1 = ROOT / "Examples" / "Example1"
SEED = 1234
PROMPT_NUM = 10  # what the published checkpoint records
# What the published code predicts for Example1's cactus.png with this checkpoint (CPU, float32).
PUBLISHED_SCORE = 0.37133264541625977
# Pre-processing alone moves the score by more than this (PIL bicubic instead of OpenCV: 0.3740).
TOLERANCE = 1e-4

KeyEntry = tuple[str, list[int], str]


def read_official_keys(path: Path = OFFICIAL_KEYS) -> list[KeyEntry]:
    """(key, shape, dtype) of every published state_dict entry, without `module.`, in order."""
    return [(key, shape, dtype) for key, shape, dtype in json.loads(path.read_text())]


def made_up_tensor(leaf: str, r: torch.Tensor) -> torch.Tensor:
    """Scale a standard-normal draw by what the key's last part holds, so activations stay O(1)."""
    if leaf == "running_var":
        return 1.0 + 0.1 * r.abs()
    if leaf == "running_mean":
        return 0.1 * r
    if leaf == "gamma":
        return 0.5 * r
    if leaf == "bias":
        return 0.02 * r
    if leaf == "weight" and r.dim() == 1:  # LayerNorm / BatchNorm scale
        return 1.0 + 0.1 * r
    if leaf in ("cls_token", "pos_embed"):
        return 0.02 * r
    fan_in = math.prod(r.shape[1:]) if r.dim() > 1 else 1
    return r / math.sqrt(fan_in)


def made_up_state_dict(keys: list[KeyEntry], seed: int = SEED) -> dict[str, torch.Tensor]:
    """One generator walks the keys in order; int64 counters draw nothing and are 0."""
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape, dtype in keys:
        if dtype == "int64":
            state[key] = torch.tensor(0, dtype=torch.int64)
            continue
        r = torch.randn(shape, generator=generator)
        state[key] = made_up_tensor(key.rsplit(".", 1)[-1], r).contiguous()
    return state


def build_checkpoint(path: str | Path) -> Path:
    """Write the made-up checkpoint as the published one is laid out: DDP's `module.` prefix and
    `prompt_num`. About 1.3 GB."""
    state = made_up_state_dict(read_official_keys())
    path = Path(path)
    torch.save({"state_dict": {"module." + k: v for k, v in state.items()}, "prompt_num": PROMPT_NUM}, path)
    return path


def score_example1(model: PromptIQA) -> float:
    """Score Example1's cactus.png against its ten ISPs, prompts encoded once, as test.py does."""
    scorer = Scorer(model, batch_size=PROMPT_NUM)
    prompts = scorer.encode_prompt_set(read_prompt_file(EXAMPLE1 / "prompts.json"))
    return float(scorer.score_images([str(EXAMPLE1 / "cactus.png")], prompts)[0])


def checkpoint_score(path: Path) -> float:
    """Build the checkpoint at `path`, load it strictly on the CPU in float32 and score Example1."""
    build_checkpoint(path)
    return score_example1(load_model(path, device="cpu"))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--checkpoint", type=Path, help="where to write the checkpoint and keep it (default: a temp folder, deleted)"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.checkpoint is not None:
        score = checkpoint_score(args.checkpoint)
    else:
        with tempfile.TemporaryDirectory() as folder:
            score = checkpoint_score(Path(folder) / "made_up.pth.tar")
    difference = abs(score - PUBLISHED_SCORE)
    print(f"score {score!r}; published code {PUBLISHED_SCORE!r}; difference {difference:.3g}")
    if difference > TOLERANCE:
        print(f"differs from the published code by more than {TOLERANCE:g}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

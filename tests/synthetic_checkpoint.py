"""A made-up checkpoint in the published layout (recipe: spec parity.md).

Walks the published (key, shape, dtype) list in order with one generator seeded 1234, draws
r ~ N(0, 1) of each shape (int64 counters draw nothing and are 0), and scales it by the key's last
part so that activations stay O(1). Saved as {"state_dict": {"module." + key: ...}, "prompt_num": 10}.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import torch

OFFICIAL_KEYS = Path(__file__).with_name("data") / "official_keys.json"


def made_up_tensor(leaf: str, r: torch.Tensor) -> torch.Tensor:
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
    return r / math.sqrt(math.prod(r.shape[1:]) if r.dim() > 1 else 1)


def write_made_up_checkpoint(path: Path, seed: int = 1234) -> Path:
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape, dtype in json.loads(OFFICIAL_KEYS.read_text()):
        if dtype == "int64":
            state["module." + key] = torch.tensor(0, dtype=torch.int64)
            continue
        r = torch.randn(shape, generator=generator)
        state["module." + key] = made_up_tensor(key.rsplit(".", 1)[-1], r).contiguous()
    torch.save({"state_dict": state, "prompt_num": 10}, path)
    return path

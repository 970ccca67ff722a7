#!/usr/bin/env bash
# The GPU checks in one go, from the repository root on a CUDA machine: the CUDA tests, the speed
# table on the full model, and Example1 with the made-up published-layout checkpoint on CUDA
# (fp32 must give the CPU score of tests/test_parity.py within 1e-3; bf16 is shown beside it).
set -euo pipefail
python -c "import torch; assert torch.cuda.is_available(), 'no CUDA GPU'; print(torch.cuda.get_device_name(), 'torch', torch.__version__)"
python -m pytest tests/test_fused_attention.py tests/test_precision.py -q -rs -k cuda
python -m benchmarks.model_speed --device cuda
python - <<'PY'
import tempfile
from pathlib import Path

import torch

from PromptIQA.models.checkpoint import load_model
from PromptIQA.data.prompts import read_prompt_file
from PromptIQA.scoring.scorer import Scorer
from tools.make_parity_checkpoint import PUBLISHED_SCORE, build_checkpoint

# Which SDPA kernel the MAL's shapes get (0 math, 1 flash, 2 memory-efficient, 3 cuDNN).
for name, (lq, e, ev) in {"spatial": (784, 96, 768), "channel": (784, 3072, 3072), "feature": (768, 3136, 3136)}.items():
    q = torch.randn(1, 1, lq, e, device="cuda", dtype=torch.bfloat16)
    v = torch.randn(1, 1, lq, ev, device="cuda", dtype=torch.bfloat16)
    print(f"SDPA kernel for the {name} attention (bf16): {torch._fused_sdp_choice(q, q, v)}")
example = Path("Examples/Example1")
with tempfile.TemporaryDirectory() as tmp:
    model = load_model(build_checkpoint(Path(tmp) / "best_model.pth.tar"), device="cuda")
for precision in ("fp32", "bf16"):
    scorer = Scorer(model, batch_size=10, precision=precision)
    prompts = scorer.encode_prompt_set(read_prompt_file(example / "prompts.json"))
    score = float(scorer.score_images([str(example / "cactus.png")], prompts)[0])
    print(f"Example1 on CUDA, {precision}: {score:.6f}; CPU fp32 {PUBLISHED_SCORE:.6f}; |diff| {abs(score - PUBLISHED_SCORE):.2e}")
    if precision == "fp32":
        assert abs(score - PUBLISHED_SCORE) <= 1e-3
PY

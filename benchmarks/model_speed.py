"""Training and scoring speed of the network at each precision, side by side in one table.

Rows: fp32 eager (the published numerics, the baseline), tf32 (CUDA only), bf16 autocast, and
bf16 + torch.compile. Columns: training images/s (groups of --group images, forward + backward +
Adam step, L1 loss in fp32), scoring images/s (prompts encoded once, batches of --score-batch through
Scorer), the ratio to the first row, MFU (the FLOP rate reached, FLOPs counted by torch's
FlopCounterMode, over the best dense matmul rate measured in the same run), CUDA peak memory, and
the warm-up time (which includes any compilation). Random weights, synthetic inputs.

    python -m benchmarks.model_speed --device cpu --backbone vit_tiny_patch16_224   (a few minutes)
    python -m benchmarks.model_speed --device cuda                                  (full model)
"""
from __future__ import annotations

import argparse
import copy
import gc
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from PromptIQA.models import ModelConfig, PromptIQA
from PromptIQA.models.backbone import DEFAULT_BACKBONE
from PromptIQA.scoring.scorer import Scorer
from PromptIQA.utils.device import autocast, compile_model, configure_backends, resolve_device
from PromptIQA.utils.errors import UserError

CPU_BACKBONE = "vit_tiny_patch16_224"
PROMPTS = 10  # ISPs per query, as in the published training groups of 11


@dataclass(frozen=True)
class Row:
    label: str
    precision: str
    compile: bool


ROWS = {
    "fp32": Row("fp32 eager", "fp32", False),
    "tf32": Row("tf32", "tf32", False),
    "bf16": Row("bf16", "bf16", False),
    "bf16+compile": Row("bf16 + compile", "bf16", True),
}


@dataclass(frozen=True)
class Speed:
    images_per_s: float
    peak_bytes: int | None
    warmup_s: float


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextmanager
def cuda_peak_memory(device: torch.device, result: list[int | None]) -> Iterator[None]:
    """Appends CUDA's max_memory_allocated over the block; None on the CPU, where freed memory stays
    with the process and a resident-size delta would show the first measure only."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    yield
    result.append(torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None)


def timed(step: Callable[[], None], device: torch.device, warmup: int, steps: int) -> tuple[float, float]:
    """(seconds of the warm-up steps, which include any compilation; seconds per timed step)."""
    start = time.perf_counter()
    for _ in range(warmup):
        step()
    synchronize(device)
    warm = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(steps):
        step()
    synchronize(device)
    return warm, (time.perf_counter() - start) / steps


def matmul_peak(device: torch.device, dtype: torch.dtype, size: int, repeats: int = 10) -> float:
    """Dense matmul FLOP/s of a size x size product in `dtype` (the best of three rounds)."""
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    best = float("inf")
    for _ in range(3):
        _, seconds = timed(lambda: torch.mm(a, b), device, warmup=1, steps=repeats)
        best = min(best, seconds)
    return 2 * size**3 / best


def fresh_copy(base: PromptIQA, device: torch.device) -> PromptIQA:
    """Every measure starts from the same random weights (a copy is much cheaper than a new build)."""
    return copy.deepcopy(base).to(device)


def images(count: int, args: argparse.Namespace, device: torch.device) -> torch.Tensor:
    return torch.rand(count, 3, args.img_size, args.img_size, device=device) * 2 - 1


def flops_per_image(base: PromptIQA, args: argparse.Namespace, device: torch.device) -> tuple[float, float]:
    """FLOPs per image of one training step (forward + backward of a group) and of scoring."""
    model = fresh_copy(base, device).train()
    group, batch = images(args.group, args, device), images(args.score_batch, args, device)
    with FlopCounterMode(display=False) as counter:
        F.l1_loss(model(group, torch.rand(args.group, device=device)), torch.rand(args.group, device=device)).backward()
    train = counter.get_total_flops() / args.group
    model.eval()
    prompts = torch.randn(PROMPTS, 128, device=device)
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model.score_images(batch, prompts)
    return train, counter.get_total_flops() / args.score_batch


def train_speed(row: Row, base: PromptIQA, args: argparse.Namespace, device: torch.device) -> Speed:
    model = fresh_copy(base, device).train()
    # Fused Adam keeps the optimiser step to a few kernels on CUDA.
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-5, fused=device.type == "cuda")
    network = compile_model(model, row.compile)
    group, scores = images(args.group, args, device), torch.rand(args.group, device=device)

    configure_backends(device, row.precision)  # as train.py: once, so backward() runs in it too

    def step() -> None:
        with autocast(device, row.precision):
            predictions = network(group, scores)
        loss = F.l1_loss(predictions.float(), scores)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    peak: list[int | None] = []
    with cuda_peak_memory(device, peak):
        warm, seconds = timed(step, device, args.warmup, args.steps)
    return Speed(args.group / seconds, peak[0], warm)


def score_speed(row: Row, base: PromptIQA, args: argparse.Namespace, device: torch.device) -> Speed:
    configure_backends(device, row.precision)  # as test.py: once
    scorer = Scorer(fresh_copy(base, device), batch_size=args.score_batch, precision=row.precision, compile=row.compile)
    prompts = scorer.encode_prompts(images(PROMPTS, args, device), torch.rand(PROMPTS))
    batch = images(args.score_batch, args, device)
    peak: list[int | None] = []
    with cuda_peak_memory(device, peak):
        warm, seconds = timed(lambda: scorer.score_images(batch, prompts), device, args.warmup, args.steps)
    return Speed(args.score_batch / seconds, peak[0], warm)


def release(device: torch.device) -> None:
    """Forget compiled graphs and cached memory so that each row starts alike."""
    import torch._dynamo

    torch._dynamo.reset()
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def gib(size: int | None) -> str:
    return "n/a" if size is None else f"{size / 2**30:.2f}"


def fused_state(attentions: list[torch.nn.Module]) -> str:
    return "n/a" if not attentions else "on" if all(a.fused_attn for a in attentions) else "OFF"


def fused_attention_report(model: PromptIQA) -> str:
    """Whether timm's blocks (backbone, `block`, head) use scaled_dot_product_attention."""
    backbone = [b.attn for b in model.vit.blocks] if model.vit is not None else []
    head = [model.block.attn] + [b.attn for s in (model.i_p_fusion, model.prompt_fusion, model.blocks) for b in s]
    return f"timm fused attention: backbone {fused_state(backbone)}, head blocks {fused_state(head)}"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:INDEX")
    parser.add_argument("--backbone", help=f"timm backbone; default {DEFAULT_BACKBONE} on CUDA, {CPU_BACKBONE} on CPU")
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--steps", type=int, help="timed steps per measure; default 20 on CUDA, 3 on CPU")
    parser.add_argument("--warmup", type=int, help="untimed first steps (compilation); default 3 on CUDA, 1 on CPU")
    parser.add_argument("--group", type=int, default=PROMPTS + 1, help="training group: a query and its prompts")
    parser.add_argument("--score-batch", type=int, help="scoring batch; default 64 on CUDA, 16 on CPU")
    parser.add_argument(
        "--rows",
        help=f"comma-separated, of {', '.join(ROWS)}; default all on CUDA, fp32,bf16 on CPU "
        "(compiling the training step there takes many minutes); tf32 is CUDA only",
    )
    args = parser.parse_args(argv)
    try:
        args.device = resolve_device(args.device)
    except UserError as error:
        parser.error(str(error))
    cuda = args.device.type == "cuda"
    args.backbone = args.backbone or (DEFAULT_BACKBONE if cuda else CPU_BACKBONE)
    args.steps = args.steps or (20 if cuda else 3)
    args.warmup = args.warmup if args.warmup is not None else (3 if cuda else 1)
    args.score_batch = args.score_batch or (64 if cuda else 16)
    args.rows = args.rows or (",".join(ROWS) if cuda else "fp32,bf16")
    unknown = [name for name in args.rows.split(",") if name not in ROWS]
    if unknown:
        parser.error(f"--rows: unknown {', '.join(unknown)}; choose from {', '.join(ROWS)}")
    args.rows = [ROWS[name] for name in args.rows.split(",") if cuda or ROWS[name].precision != "tf32"]
    if any(row.compile for row in args.rows) and args.warmup < 1:
        parser.error("--warmup: compiled rows need at least one warm-up step (it compiles)")
    return args


def header(base: PromptIQA, args: argparse.Namespace, peaks: dict[str, float]) -> str:
    device = args.device
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    rates = ", ".join(f"{k} {v / 1e12:.3g} TFLOP/s" for k, v in peaks.items())
    return (
        f"{name}; torch {torch.__version__}; {args.backbone} at {args.img_size} px; "
        f"training groups of {args.group}, scoring batches of {args.score_batch} against {PROMPTS} cached prompts; "
        f"{args.warmup} warm-up + {args.steps} timed steps\n"
        f"matmul peak measured: {rates}; MFU is against the best of these; ratio: to the first row\n"
        f"{fused_attention_report(base)}"
    )


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    device = args.device
    size = 8192 if device.type == "cuda" else 1024
    peaks = {"bf16": matmul_peak(device, torch.bfloat16, size), "fp32": matmul_peak(device, torch.float32, size)}
    torch.manual_seed(0)
    base = PromptIQA(ModelConfig(backbone=args.backbone, img_size=args.img_size))
    train_flops, score_flops = flops_per_image(base, args, device)
    print(header(base, args, peaks))
    print(f"GFLOP per image: training {train_flops / 1e9:.1f}, scoring {score_flops / 1e9:.1f}\n")
    summary = []

    columns = ("row", "train img/s", "ratio", "train MFU", "train GiB", "warm-up s",
               "score img/s", "ratio", "score MFU", "score GiB", "warm-up s")
    widths = (16, 12, 7, 10, 10, 10, 12, 7, 10, 10, 10)
    print(" ".join(f"{c:>{w}}" if i else f"{c:<{w}}" for i, (c, w) in enumerate(zip(columns, widths))))
    baseline: tuple[float, float] | None = None
    best_peak = max(peaks.values())
    for row in args.rows:
        train = train_speed(row, base, args, device)
        release(device)
        score = score_speed(row, base, args, device)
        release(device)
        baseline = baseline or (train.images_per_s, score.images_per_s)
        cells = (
            f"{train.images_per_s:.2f}", f"{train.images_per_s / baseline[0]:.2f}",
            f"{train.images_per_s * train_flops / best_peak:.1%}", gib(train.peak_bytes), f"{train.warmup_s:.1f}",
            f"{score.images_per_s:.2f}", f"{score.images_per_s / baseline[1]:.2f}",
            f"{score.images_per_s * score_flops / best_peak:.1%}", gib(score.peak_bytes), f"{score.warmup_s:.1f}",
        )
        print(f"{row.label:<16} " + " ".join(f"{c:>{w}}" for c, w in zip(cells, widths[1:])), flush=True)
        summary.append(f"{row.label} train {train.images_per_s:.1f} img/s ({gib(train.peak_bytes)} GiB), "
                       f"score {score.images_per_s:.1f} img/s")
    print("SUMMARY model_speed: " + "; ".join(summary))
    if device.type == "cpu":
        print("\nOn the CPU: no peak memory (n/a); tf32 rows are CUDA only.")


if __name__ == "__main__":
    main()

"""Each MAL attention through scaled_dot_product_attention (SDPA) against the explicit formula.

The inputs are the model's own: captured from a forward pass of the network on a training group,
with their strides as the network hands them over (views included), requiring grad. Each attention
module (spatial, channel, feature of the first MAL) is timed forward + backward both ways at each
precision; the last line says which way each attention should run (mal.SDPA_OFF_CPU).

    python -m benchmarks.attention_speed --device cuda                                 (full network)
    python -m benchmarks.attention_speed --device cpu --backbone vit_tiny_patch16_224 --img-size 64
"""
from __future__ import annotations

import argparse
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from benchmarks.model_speed import CPU_BACKBONE, PROMPTS, synchronize, timed
from PromptIQA.models import ModelConfig, PromptIQA, mal
from PromptIQA.models.backbone import DEFAULT_BACKBONE
from PromptIQA.utils.device import autocast, configure_backends, resolve_device, resolve_precision

KINDS = ("spatial", "channel", "feature")


def attention_modules(model: PromptIQA) -> dict[str, torch.nn.Module]:
    first = model.MALs[0]
    return {"spatial": first.attention_module[0], "channel": first.channel_attention,
            "feature": first.feature_attention}


def captured_inputs(model: PromptIQA, images: torch.Tensor, scores: torch.Tensor) -> dict[str, torch.Tensor]:
    """The input each attention module receives in a training forward pass, as handed over (strides
    kept), detached and requiring grad as activations do."""
    seen: dict[str, torch.Tensor] = {}
    hooks = [
        module.register_forward_pre_hook(lambda _, args, kind=kind: seen.setdefault(kind, args[0].detach()))
        for kind, module in attention_modules(model).items()
    ]
    try:
        with torch.no_grad():
            model(images, scores)
    finally:
        for hook in hooks:
            hook.remove()
    return {kind: x.requires_grad_(True) for kind, x in seen.items()}


@contextmanager
def sdpa_for(kind: str, enabled: bool) -> Iterator[None]:
    """Run `kind` through SDPA (or not) on any device, the CPU included, for this block only."""
    saved, saved_rule = dict(mal.SDPA_OFF_CPU), mal.uses_sdpa
    mal.SDPA_OFF_CPU[kind] = enabled
    mal.uses_sdpa = lambda x, attention: mal.SDPA_OFF_CPU[attention]
    try:
        yield
    finally:
        mal.SDPA_OFF_CPU.update(saved)
        mal.uses_sdpa = saved_rule


def sdpa_kernel(module: torch.nn.Module, x: torch.Tensor, precision: str) -> str:
    """The kernel SDPA picks for these inputs on CUDA (torch's own choice function), or n/a."""
    if x.device.type != "cuda":
        return "n/a"
    names = {0: "math", 1: "flash", 2: "mem-efficient", 3: "cudnn"}
    chosen: list[str] = []
    real = mal.F.scaled_dot_product_attention

    def recording(q, k, v, **kwargs):
        chosen.append(names.get(int(torch._fused_sdp_choice(q, k, v, **kwargs)), "other"))
        return real(q, k, v, **kwargs)

    mal.F.scaled_dot_product_attention = recording
    try:
        with torch.no_grad(), autocast(x.device, precision):
            module(x)
    finally:
        mal.F.scaled_dot_product_attention = real
    return chosen[0] if chosen else "n/a"


def time_module(module: torch.nn.Module, x: torch.Tensor, precision: str, args: argparse.Namespace) -> float:
    """Milliseconds of one forward + backward of `module` on `x`."""
    grad = None

    def step() -> None:
        nonlocal grad
        with autocast(x.device, precision):
            out = module(x)
        grad = torch.ones_like(out) if grad is None else grad
        out.backward(grad)
        x.grad = None

    _, seconds = timed(step, x.device, args.warmup, args.steps)
    return seconds * 1e3


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:INDEX")
    parser.add_argument("--backbone", help=f"default {DEFAULT_BACKBONE} on CUDA, {CPU_BACKBONE} on CPU")
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--group", type=int, default=PROMPTS + 1, help="images per training group")
    parser.add_argument("--precisions", default=None, help="comma-separated; default fp32,bf16")
    parser.add_argument("--steps", type=int, help="timed steps; default 20 on CUDA, 3 on CPU")
    parser.add_argument("--warmup", type=int, default=2)
    args = parser.parse_args(argv)
    args.device = resolve_device(args.device)
    cuda = args.device.type == "cuda"
    args.backbone = args.backbone or (DEFAULT_BACKBONE if cuda else CPU_BACKBONE)
    args.steps = args.steps or (20 if cuda else 3)
    args.precisions = [resolve_precision(p, args.device) for p in (args.precisions or "fp32,bf16").split(",")]
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    device = args.device
    torch.manual_seed(0)
    model = PromptIQA(ModelConfig(backbone=args.backbone, img_size=args.img_size)).to(device).train()
    for spatial in model.MALs[0].attention_module:
        spatial.gamma.data.fill_(0.5)  # 0 at initialisation: the attention would get no gradient
    images = torch.rand(args.group, 3, args.img_size, args.img_size, device=device) * 2 - 1
    inputs = captured_inputs(model, images, torch.rand(args.group, device=device))
    modules = attention_modules(model)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"{name}; torch {torch.__version__}; {args.backbone} at {args.img_size} px; groups of {args.group}; "
          f"forward + backward of the first MAL's attentions on the network's own inputs, ms per call")
    print(f"{'attention':<10} {'input':<28} {'precision':<9} {'SDPA kernel':<14} {'SDPA ms':>9} {'explicit ms':>12}")
    faster: dict[str, list[bool]] = {kind: [] for kind in KINDS}
    for precision in args.precisions:
        configure_backends(device, precision)
        for kind in KINDS:
            x, module = inputs[kind], modules[kind]
            times = {}
            with sdpa_for(kind, True):
                kernel = sdpa_kernel(module, x, precision)
            for enabled in (True, False):
                with sdpa_for(kind, enabled):
                    times[enabled] = time_module(module, x, precision, args)
            synchronize(device)
            faster[kind].append(times[True] < times[False])
            layout = f"{tuple(x.shape)} {'contig' if x.is_contiguous() else 'strided'}"
            print(f"{kind:<10} {layout:<28} {precision:<9} {kernel:<14} {times[True]:>9.3f} {times[False]:>12.3f}")
    choice = {kind: all(wins) for kind, wins in faster.items()}
    print(f"SUMMARY attention_speed: SDPA faster at every precision -> SDPA_OFF_CPU = {choice}")


if __name__ == "__main__":
    main()

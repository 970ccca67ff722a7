"""Where and how the network runs: device, numeric precision, compilation."""
from __future__ import annotations

import torch

from .errors import UserError


def resolve_device(name: str) -> torch.device:
    """`auto` (CUDA when available), `cpu`, `cuda` or `cuda:i`."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"--device {name}: use auto, cpu, cuda or cuda:INDEX") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"--device {name}: CUDA is not available on this machine; use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UserError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) here")
    return device


PRECISIONS = ("fp32", "tf32", "bf16")


def default_precision(device: torch.device) -> str:
    """bf16 autocast on CUDA, the exact fp32 path elsewhere."""
    return "bf16" if device.type == "cuda" else "fp32"


def resolve_precision(name: str, device: torch.device) -> str:
    """`auto` or one of PRECISIONS; `tf32` only means something on CUDA."""
    if name == "auto":
        return default_precision(device)
    if name not in PRECISIONS:
        raise UserError(f"--precision {name}: use auto, {', '.join(PRECISIONS)}")
    return name


def set_matmul_precision(precision: str) -> None:
    """TF32 tensor-core matmuls and convolutions for `tf32`; full fp32 otherwise."""
    tf32 = precision == "tf32"
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32


def autocast(device: torch.device, precision: str) -> torch.autocast:
    """The autocast context for a forward pass: bf16 with fp32 weights, or disabled."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def compile_model(model: torch.nn.Module, enabled: bool) -> torch.nn.Module:
    """`torch.compile(model)` when enabled (before any DDP wrap), else the model itself."""
    return torch.compile(model) if enabled else model

"""Where and how the network runs: device, numeric precision, compilation."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

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
PRECISION_CHOICES = ("auto", *PRECISIONS)  # what --precision accepts


def bf16_supported(device: torch.device) -> bool:
    """bf16 autocast runs on every CPU and on CUDA GPUs with bf16 arithmetic (Ampere and later)."""
    return device.type != "cuda" or torch.cuda.get_device_capability(device) >= (8, 0)


def default_precision(device: torch.device) -> str:
    """bf16 autocast on CUDA GPUs that have it; the exact fp32 path elsewhere.

    On the CPU fp32 stays: it is the published arithmetic bit for bit, and bf16 scoring measured no
    faster there (training about 1.4x, on a CPU with AVX512-BF16).
    """
    return "bf16" if device.type == "cuda" and bf16_supported(device) else "fp32"


def resolve_precision(name: str, device: torch.device) -> str:
    """`auto` or one of PRECISIONS, checked against the device."""
    if name == "auto":
        return default_precision(device)
    if name not in PRECISIONS:
        raise UserError(f"--precision {name}: use auto, {', '.join(PRECISIONS)}")
    if name == "tf32" and device.type != "cuda":
        raise UserError(f"--precision tf32: TF32 is a CUDA tensor-core mode; on {device.type} use fp32 or bf16")
    if name == "bf16" and not bf16_supported(device):
        raise UserError(f"--precision bf16: this GPU ({torch.cuda.get_device_name(device)}) has no bf16; use tf32 or fp32")
    return name


def set_matmul_precision(precision: str) -> None:
    """TF32 tensor-core matmuls and convolutions for `tf32`; full fp32 otherwise (bf16 autocast
    leaves its fp32 operations, such as softmax and the loss, in full fp32 too)."""
    tf32 = precision == "tf32"
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32


def configure_backends(device: torch.device, precision: str) -> None:
    """The process-wide switches, set once by a program before its first batch, never per batch:
    the TF32 flags for `precision`, and cuDNN's autotuner on CUDA (the image size is fixed, so the
    fastest convolution algorithms are searched once and reused)."""
    set_matmul_precision(precision)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True


def autocast(device: torch.device, precision: str) -> torch.autocast:
    """The autocast context for a forward pass: bf16 with fp32 weights, or disabled."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


@contextmanager
def precision_scope(device: torch.device, precision: str) -> Iterator[None]:
    """`set_matmul_precision` and `autocast` for the scope only; the TF32 flags are restored after."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    set_matmul_precision(precision)
    try:
        with autocast(device, precision):
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


COMPILE_FIX = "run without --compile"


def check_compile_support(device: torch.device) -> None:
    """Fail early, with the fix, where torch.compile's default backend cannot build kernels."""
    import torch._dynamo

    if not torch._dynamo.is_dynamo_supported():
        raise UserError(f"--compile: torch.compile does not support this Python/platform; {COMPILE_FIX}")
    if device.type == "cuda":
        from torch.utils._triton import has_triton

        if not has_triton():
            raise UserError(f"--compile: torch.compile on CUDA needs Triton (pip install triton); {COMPILE_FIX}")
    elif device.type == "cpu":
        from torch._inductor.cpp_builder import get_cpp_compiler

        try:
            get_cpp_compiler()
        except RuntimeError as error:
            raise UserError(f"--compile: torch.compile on the CPU needs a C++ compiler ({error}); {COMPILE_FIX}") from None


def _compile_failures() -> tuple[type[Exception], ...]:
    """The exceptions a failing torch.compile raises at the first compiled call. InductorError only
    exists in newer torch versions; older ones wrap Inductor's failures in a dynamo exception."""
    from torch._dynamo.exc import TorchDynamoException

    try:
        from torch._inductor.exc import InductorError
    except ImportError:
        return (TorchDynamoException,)
    return (TorchDynamoException, InductorError)


@contextmanager
def compile_errors() -> Iterator[None]:
    """Turns a failure of torch.compile, which shows at the first compiled call, into a UserError.
    Only for code that runs a compiled model: it imports torch.compile's machinery."""
    failures = _compile_failures()
    try:
        yield
    except failures as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UserError(f"--compile: torch.compile failed ({reason}); {COMPILE_FIX}") from None


def compile_model(model: torch.nn.Module, enabled: bool) -> torch.nn.Module:
    """`torch.compile(model)` when enabled, else the model itself. A DDP model is compiled wrapped
    (as PyTorch recommends: the compiled backward then overlaps DDP's all-reduce by bucket).

    Raises UserError at once where compilation cannot work; run the first calls of the compiled
    model under `compile_errors()` to get the same kind of message for a failure inside compilation.
    """
    if not enabled:
        return model
    check_compile_support(next(model.parameters()).device)
    return torch.compile(model)

"""The optional `onnx` extra: imported on first use, with the install command when it is missing."""
from __future__ import annotations

import importlib
from types import ModuleType

from ..utils.errors import UserError

INSTALL_HINT = 'pip install ".[onnx]"'


def require(module: str) -> ModuleType:
    """Import `module` (onnx, onnxruntime, or one of their submodules), or say how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise UserError(f"ONNX export and the ONNX Runtime scoring path need the package {module.split('.')[0]}, "
                        f"which is not installed; install the optional extra with: {INSTALL_HINT} "
                        "(from the PromptIQA source folder), or pip install onnx onnxruntime") from None

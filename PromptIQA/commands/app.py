"""Serve the PromptIQA web demo: give image-score pairs and query images in the browser, get scores.

    python app.py [--checkpoint PATH] [--device auto|cpu|cuda] [--host 127.0.0.1] [--port 7860]
"""
from __future__ import annotations

import argparse
import sys

from ..models.checkpoint import DEFAULT_CHECKPOINT
from ..utils.device import resolve_device
from ..utils.errors import UserError
from .common import both_spellings, run_main


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Serve the PromptIQA web demo (Gradio). Without a loadable checkpoint the page still "
        "opens, explains how to get one and lets you give its path.",
    )
    parser.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT), help="published or project checkpoint")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:INDEX")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0 for every interface)")
    parser.add_argument("--port", type=int, default=7860, help="port to listen on")
    return both_spellings(parser)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    if not 0 < args.port < 65536:
        raise UserError(f"--port {args.port}: give a port number between 1 and 65535")
    device = resolve_device(args.device)
    # Imported here so that `--help` and flag errors do not wait for Gradio to load.
    from ..app.webapp import serve

    serve(args.checkpoint, device, args.host, args.port)
    return 0


def cli() -> None:
    """Console-script entry point."""
    sys.exit(run_main(main))


if __name__ == "__main__":
    cli()

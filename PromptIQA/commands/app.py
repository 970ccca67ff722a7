"""Serve the PromptIQA web demo: give image-score pairs and query images in the browser, get scores.

    python app.py [--checkpoint PATH|hf:OWNER/REPO] [--allow-load FOLDER] [--device auto|cpu|cuda]
                  [--host 127.0.0.1] [--port 7860] [--concurrency 1] [--max-file-size 50]
                  [--max-images 200] [--max-request-pixels 200]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..models.checkpoint import DEFAULT_CHECKPOINT
from ..utils.device import resolve_device
from ..utils.errors import UserError
from .common import both_spellings, run_main


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Serve the PromptIQA web demo (Gradio). Without a loadable checkpoint the page still "
        "opens and explains how to get one. Every page and /score use the --checkpoint model; a page loads "
        "other checkpoints only with --allow-load, from that folder, for its own session.",
    )
    parser.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT), help="published or project checkpoint, "
                        "or hf:OWNER/REPO[/FILE]")
    parser.add_argument("--allow-load", metavar="FOLDER", help="let a page load checkpoint files found in FOLDER "
                        "(for itself only); off by default: for a private instance")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:INDEX")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0 for every interface)")
    parser.add_argument("--port", type=int, default=7860, help="port to listen on")
    limits = parser.add_argument_group("limits per server and request")
    limits.add_argument("--concurrency", type=int, default=1, help="scoring requests run at once (others queue)")
    limits.add_argument("--max-file-size", type=float, default=50, metavar="MB", help="largest upload, in MB")
    limits.add_argument("--max-images", type=int, default=200, help="ISP and query images per request")
    limits.add_argument("--max-request-pixels", type=float, default=200, metavar="MEGAPIXELS",
                        help="pixels summed over a request's images, in millions")
    return both_spellings(parser)


def check_limits(args: argparse.Namespace) -> None:
    if not 0 < args.port < 65536:
        raise UserError(f"--port {args.port}: give a port number between 1 and 65535")
    for flag, value in [("--concurrency", args.concurrency), ("--max-file-size", args.max_file_size),
                        ("--max-images", args.max_images), ("--max-request-pixels", args.max_request_pixels)]:
        if not value > 0:
            raise UserError(f"{flag} {value:g}: give a number above 0")
    if args.allow_load is not None and not Path(args.allow_load).is_dir():
        raise UserError(f"--allow-load {args.allow_load}: not a folder; give the folder that holds the checkpoints "
                        "a page may load (e.g. runs)")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    check_limits(args)
    device = resolve_device(args.device)
    # Imported here so that `--help` and flag errors do not wait for Gradio to load.
    from ..app.page import ServerSettings, serve
    from ..app.requests import RequestLimits

    limits = RequestLimits(max_images=args.max_images, max_pixels=int(args.max_request_pixels * 1e6))
    settings = ServerSettings(args.allow_load, limits, args.concurrency, args.max_file_size)
    serve(args.checkpoint, device, args.host, args.port, settings)
    return 0


def cli() -> None:
    """Console-script entry point."""
    sys.exit(run_main(main))


if __name__ == "__main__":
    cli()

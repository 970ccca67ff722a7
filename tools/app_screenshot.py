"""Take the README's picture of the web app: serve a checkpoint, score an example in headless Chromium,
save the whole page as a PNG.

    python tools/app_screenshot.py --checkpoint runs/demo/best.pth.tar [--output image/app.png]
        [--example demo_kadid] [--chromium /usr/bin/chromium]

Needs the `playwright` package and a Chromium (Debian's `chromium` package is found on the PATH). The
example is the first whose label starts with `--example` (a demo dataset once `train.py --demo` built
it, or `Example1`); the page is shown as a visitor sees it after pressing Score.
"""
from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
START_UP_LIMIT_S = 300
SCORE_LIMIT_MS = 300_000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_serving(process: subprocess.Popen, url: str, log: Path) -> None:
    deadline = time.monotonic() + START_UP_LIMIT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            sys.exit(f"app.py exited with {process.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(url, timeout=5):
                return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.5)
    sys.exit(f"app.py did not answer on {url} within {START_UP_LIMIT_S} s:\n{log.read_text()}")


def take_screenshot(url: str, example: str, output: Path, chromium: str) -> None:
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 1250})
        page.goto(url)
        expect(page.locator("#model-status")).to_contain_text("Model:", timeout=60_000)
        page.get_by_text(example, exact=False).first.click()
        expect(page.locator("#isp-table")).to_contain_text(".png", timeout=60_000)  # the example is in
        page.locator("#score-button").click()
        expect(page.locator("#placement img")).to_be_visible(timeout=SCORE_LIMIT_MS)
        output.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(output), full_page=True)
        browser.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, help="the checkpoint to serve (as app.py takes it)")
    parser.add_argument("--output", default=str(ROOT / "image" / "app.png"), help="the PNG to write")
    parser.add_argument("--example", default="demo_kadid", help="label start of the example to score "
                        "(falls back to Example1 when no such example is on the page)")
    parser.add_argument("--chromium", default=shutil.which("chromium") or shutil.which("chromium-browser"),
                        help="the Chromium executable")
    args = parser.parse_args()
    if not args.chromium:
        sys.exit("no Chromium found: install Debian's chromium package or give --chromium")
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    with tempfile.TemporaryDirectory() as folder:
        log = Path(folder) / "server.log"
        with open(log, "w") as out:
            process = subprocess.Popen(
                [sys.executable, "app.py", "--checkpoint", args.checkpoint, "--port", str(port), "--device", "cpu"],
                cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"},
            )
        try:
            wait_until_serving(process, url, log)
            example = args.example if args.example in examples_on_page(url) else "Example1"
            take_screenshot(url, example, Path(args.output), args.chromium)
        finally:
            process.terminate()
            process.wait(timeout=60)
    print(f"wrote {args.output}")


def examples_on_page(url: str) -> str:
    """The page's configuration as text: it holds the example labels."""
    with urllib.request.urlopen(url + "config", timeout=30) as response:
        return response.read().decode("utf-8")


if __name__ == "__main__":
    main()

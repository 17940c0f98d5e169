"""Screenshots of the web demo and of a report, for the README (docs/images/).

Serves ``models/`` with ``python -m edge_fm.show.serve``, picks a test image in headless Chromium
(Debian's ``chromium``, driven by Playwright; no browser is downloaded) and saves the page; then
writes the report of ``models/`` with the shipped benchmark's figures and saves that page too.

Usage:
    .venv/bin/python tools/screenshots.py [--out docs/images]
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from edge_fm.show.html_report import ReportOptions, build_report

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT = {"width": 1280, "height": 900}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def serve(models: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    # Run from the checkout with relative paths: the page names its folder, and this machine's paths
    # have no place in the README's pictures.
    server = subprocess.Popen(
        [sys.executable, "-m", "edge_fm.show.serve", str(models), "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=REPO,
    )
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2).read()
            return server, url
        except OSError:
            time.sleep(0.1)
    server.kill()
    raise SystemExit(f"the demo did not start on {url}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "images")
    parser.add_argument("--models", type=Path, default=Path("models"), help="relative to the checkout")
    parser.add_argument(
        "--bench",
        type=Path,
        default=Path("benchmarks/results/models_bench.json"),
        help="relative to the checkout",
    )
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="edge-fm-shots-") as tmp, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        page = browser.new_page(viewport=VIEWPORT)
        server, url = serve(args.models)
        try:
            page.goto(url)
            page.wait_for_selector("#answer:not(:empty)", timeout=30_000)
            page.locator("button[title='Sneaker']").click()
            page.wait_for_function(
                "() => (document.querySelector('#answer') || {textContent: ''}).textContent.startsWith('Sneaker')",
                timeout=30_000,
            )
            page.screenshot(path=str(args.out / "demo.png"), full_page=True)
        finally:
            server.terminate()
            server.wait(timeout=10)
        os.chdir(REPO)  # the report names its target and bench file as given: relative, as in the README
        report = build_report(args.models, Path(tmp) / "models-report.html", ReportOptions(bench=args.bench))
        page.goto(report.as_uri())
        page.wait_for_load_state("load")
        page.screenshot(path=str(args.out / "report.png"), full_page=True)
        browser.close()
    for name in ("demo.png", "report.png"):
        print(args.out / name)
    return 0


if __name__ == "__main__":
    sys.exit(main())

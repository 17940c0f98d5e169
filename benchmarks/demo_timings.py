"""How long a user waits: the README's quickstart pipeline, `edge-fm report` on its run and on models/,
`edge-fm serve` from start to its first page, and the demo's answer after a click on a test image
(headless Chromium).

Each timing is a whole command as a user types it (a fresh process, imports included), repeated;
the medians and every run go into benchmarks/results/demo_timings.json. Targets: a report in
seconds, the first page within 3 s of starting.

Usage (from the repository root; needs Debian's chromium and the demo extra):
    python benchmarks/demo_timings.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from edge_fm.result_files import write_result_file
from edge_fm.runner import cpu_model

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
from screenshots import CHROMIUM, CHROMIUM_ARGS, VIEWPORT, free_port  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
EDGE_FM = str(Path(sys.executable).with_name("edge-fm"))
QUICKSTART = ["pipeline", "cnn-2conv", "--sample", "--prune", "0.5", "--qat"]  # the README's first command


def timed(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO)
    return time.perf_counter() - start


def serve_start() -> tuple[float, subprocess.Popen, str]:
    """Seconds from `edge-fm serve models/` to its first page answered, and the running server."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    start = time.perf_counter()
    server = subprocess.Popen(
        [EDGE_FM, "serve", "models/", "--port", str(port)],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    while True:
        try:
            urllib.request.urlopen(url, timeout=2).read()
            return time.perf_counter() - start, server, url
        except OSError:
            if server.poll() is not None or time.perf_counter() - start > 60:
                raise SystemExit("edge-fm serve did not answer within 60 s") from None
            time.sleep(0.02)


def first_answer(page, url: str) -> float:
    """Seconds from a click on a test image to the answer shown on the page."""
    page.goto(url)
    page.wait_for_selector("#answer:not(:empty)", timeout=30_000)
    start = time.perf_counter()
    page.locator("button[title='Sneaker']").click()
    page.wait_for_function(
        "() => (document.querySelector('#answer') || {textContent: ''}).textContent.startsWith('Sneaker')",
        timeout=30_000,
    )
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "demo_timings.json")
    args = parser.parse_args(argv)
    from playwright.sync_api import sync_playwright

    quickstart, report_run, report_models, starts, answers = [], [], [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for index in range(args.repeats):
            quickstart.append(timed([EDGE_FM, *QUICKSTART, "--runs-dir", f"{tmp}/quickstart-{index}"]))
            run = f"{tmp}/quickstart-{index}/cnn-2conv-pipeline-1"
            report_run.append(timed([EDGE_FM, "report", run, "--out", f"{tmp}/run-{index}.html"]))
            report_models.append(timed([EDGE_FM, "report", "models/", "--out", f"{tmp}/models-{index}.html"]))
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        page = browser.new_page(viewport=VIEWPORT)
        for _ in range(args.repeats):
            seconds, server, url = serve_start()
            starts.append(seconds)
            try:
                answers.append(first_answer(page, url))
            finally:
                server.terminate()
                server.wait(timeout=10)
        browser.close()

    def summary(values: list[float], target: float | None = None) -> dict:
        out = {"median_s": statistics.median(values), "runs_s": values}
        if target is not None:
            out.update(target_s=target, met=statistics.median(values) <= target)
        return out

    result = {
        "quickstart_pipeline": {**summary(quickstart), "command": shlex.join(["edge-fm", *QUICKSTART])},
        "report_of_a_run": {**summary(report_run), "command": "edge-fm report runs/cnn-2conv-pipeline-1"},
        "report_of_models": {**summary(report_models), "command": "edge-fm report models/"},
        "serve_first_page": {**summary(starts, 3.0), "command": "edge-fm serve models/"},
        "first_answer_after_a_click": summary(answers),
    }
    write_result_file(
        args.out,
        "demo-timings",
        result,
        shlex.join(["python", "benchmarks/demo_timings.py", *(argv or sys.argv[1:])]),
        {"description": f"{platform.machine()}, {cpu_model()}, {os.cpu_count()} cores"},
    )
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

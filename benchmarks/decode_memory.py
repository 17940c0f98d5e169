"""What a hostile image costs: peak extra memory and time of edge-fm's image reader and of the demo.

The worst shapes for a decoder, each a small file well under the demo's 4 MB upload limit: a
9400x9400 RGBA PNG, a 40000x2000 PNG, an 89,000,000x1 PNG and a 9400x9400 JPEG, with the largest
images the reader accepts beside them (a 4000x3000 RGBA PNG, an 8000x6000 grey PNG). Each goes

* through :func:`edge_fm.data.images.image_to_input` in a fresh Python: peak RSS growth (``VmHWM``
  after a reset, which sees Pillow's own buffers), the Python heap's peak (``tracemalloc``) and the time; and
* through a running ``edge-fm serve``, as HTTP uploads from several clients at once: the server
  process's peak RSS growth (``VmHWM``, reset before each round) and the time until every answer.

Target: under 100 MB of extra memory and under 1 s for any upload under the size limit (per
decode; the demo decodes one upload at a time, on one thread). Results go to benchmarks/results/decode_memory.json.

Usage (from the repository root, on Linux: it reads /proc; needs the demo extra):
    python benchmarks/decode_memory.py [--clients 8] [--model models/edge-cnn-tiny]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from PIL import Image, ImageDraw

from edge_fm.result_files import write_result_file
from edge_fm.runner import cpu_model

REPO = Path(__file__).resolve().parents[1]
TARGET_MB, TARGET_S = 100, 1.0
CLI = "import sys; from edge_fm.cli import main; sys.exit(main(sys.argv[1:]))"
PROBE = """
import json, sys, time, tracemalloc
from pathlib import Path
from edge_fm.errors import EdgeFMError
from edge_fm.data.images import image_to_input
import numpy, PIL.Image, PIL.PngImagePlugin, PIL.JpegImagePlugin

def rss_kb(field):
    lines = Path("/proc/self/status").read_text().splitlines()
    return int(next(line for line in lines if line.startswith(field)).split()[1])

Path("/proc/self/clear_refs").write_text("5")  # the peak so far (start-up) no longer counts
before = rss_kb("VmRSS")
tracemalloc.start()
started = time.perf_counter()
try:
    image_to_input(sys.argv[1])
    outcome = "decoded"
except EdgeFMError as exc:
    outcome = str(exc).replace(sys.argv[1], "FILE")
seconds = time.perf_counter() - started
heap = tracemalloc.get_traced_memory()[1]
grown = (rss_kb("VmHWM") - before) * 1024 / 1e6  # KiB to MB
print(json.dumps({"peak_extra_rss_mb": round(grown, 1), "peak_python_heap_mb": round(heap / 1e6, 1),
                  "seconds": round(seconds, 4), "outcome": outcome}))
"""


def make_images(folder: Path) -> dict[str, Path]:
    """The hostile shapes and the largest accepted images, drawn (a dark disc on a light page) and saved."""
    shapes = {
        "9400x9400 RGBA PNG": ("RGBA", (9_400, 9_400), "png"),
        "40000x2000 PNG": ("L", (40_000, 2_000), "png"),
        "89000000x1 PNG": ("L", (89_000_000, 1), "png"),
        "9400x9400 JPEG": ("RGB", (9_400, 9_400), "jpg"),
        "4000x3000 RGBA PNG (largest accepted RGBA)": ("RGBA", (4_000, 3_000), "png"),
        "8000x6000 grey PNG (largest accepted grey)": ("L", (8_000, 6_000), "png"),
    }
    paths = {}
    for index, (name, (mode, size, suffix)) in enumerate(shapes.items()):
        light = {"L": 235, "RGB": (235, 235, 235), "RGBA": (255, 255, 255, 0)}[mode]
        dark = {"L": 20, "RGB": (20, 20, 20), "RGBA": (20, 20, 20, 255)}[mode]
        image = Image.new(mode, size, light)
        if min(size) > 10:
            width, height = size
            ImageDraw.Draw(image).ellipse(
                (width // 5, height // 5, width * 4 // 5, height * 4 // 5), fill=dark
            )
        paths[name] = folder / f"shape-{index}.{suffix}"
        image.save(paths[name], quality=90) if suffix == "jpg" else image.save(paths[name])
        del image
    return paths


def decode_alone(path: Path) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, str(path)],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def _status(pid: int) -> dict[str, int]:
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line
    )
    return {key: int(fields[key].split()[0]) for key in ("VmRSS", "VmHWM")}


def _reset_peak(pid: int) -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM back to the current RSS


def _upload(url: str, spec: dict, path: Path) -> tuple[int, str]:
    contents = "data:application/octet-stream;base64," + base64.b64encode(path.read_bytes()).decode()
    outputs = [
        dict(zip(("id", "property"), part.rsplit(".", 1))) for part in spec["output"].strip(".").split("...")
    ]
    payload = {
        "output": spec["output"],
        "outputs": outputs,
        "changedPropIds": ["pending.data"],
        "state": [],
        "inputs": [
            {"id": "pending", "property": "data", "value": {"contents": contents, "filename": path.name}},
            [],
        ],
    }
    request = urllib.request.Request(
        url + "_dash-update-component",
        data=json.dumps(payload).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=300) as response:
            body = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")[:200]
    message = body["response"]["message"]["children"]
    return response.status, message or "decoded"


def serve(model: Path) -> tuple[subprocess.Popen, str]:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-c", CLI, "serve", str(model), "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    url = f"http://127.0.0.1:{port}/"
    deadline = time.perf_counter() + 90
    while time.perf_counter() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2).read()
            return server, url
        except OSError:
            if server.poll() is not None:
                raise SystemExit(f"edge-fm serve stopped: {server.stderr.read()}") from None
            time.sleep(0.1)
    server.kill()
    raise SystemExit("edge-fm serve did not answer within 90 s")


def server_rounds(server: subprocess.Popen, url: str, paths: dict[str, Path], clients: int) -> list[dict]:
    """Each shape uploaded by ``clients`` clients at once; the server's peak RSS growth and the time."""
    with urllib.request.urlopen(url + "_dash-dependencies") as response:
        spec = next(
            c
            for c in json.loads(response.read())
            if c["inputs"][0]["id"] == "pending" and not c.get("clientside_function")
        )
    small = paths["small"]
    for _ in range(3):  # the first requests load the callbacks' code and the models' buffers
        _upload(url, spec, small)
    rows = []
    for name, path in paths.items():
        if name == "small":
            continue
        time.sleep(0.5)
        _reset_peak(server.pid)
        before = _status(server.pid)["VmRSS"]
        answers: list = [None] * clients

        def send(index: int, answers: list = answers, path: Path = path) -> None:
            answers[index] = _upload(url, spec, path)

        threads = [threading.Thread(target=send, args=(i,)) for i in range(clients)]
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        seconds = time.perf_counter() - started
        peak = _status(server.pid)["VmHWM"]
        rows.append(
            {
                "image": name,
                "file_bytes": path.stat().st_size,
                "clients_at_once": clients,
                "peak_extra_rss_mb": round((peak - before) * 1024 / 1e6, 1),  # KiB to MB
                "seconds_until_all_answered": round(seconds, 3),
                "seconds_per_upload": round(seconds / clients, 3),
                "http_status": sorted({status for status, _ in answers}),
                "page_message": answers[0][1].replace(path.name, "FILE"),
            }
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--clients", type=int, default=8, help="uploads of each image sent at once to the demo"
    )
    parser.add_argument(
        "--model", type=Path, default=REPO / "models" / "edge-cnn-tiny", help="the bundle served"
    )
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "decode_memory.json")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="edge-fm-decode-") as folder:
        paths = make_images(Path(folder))
        alone = []
        for name, path in paths.items():
            row = {"image": name, "file_bytes": path.stat().st_size, **decode_alone(path)}
            row["outcome"] = row["outcome"].replace("FILE", "the file")
            alone.append(row)
            print(json.dumps(row), flush=True)
        paths["small"] = Path(folder) / "small.png"
        Image.new("L", (56, 56), 200).save(paths["small"])
        server, url = serve(args.model)
        try:
            served = server_rounds(server, url, paths, args.clients)
        finally:
            server.terminate()
            log = server.communicate(timeout=10)[1]
        for row in served:
            row["page_message"] = row["page_message"].replace("FILE", "the file")
            print(json.dumps(row), flush=True)
    worst_alone = max(alone, key=lambda r: r["peak_extra_rss_mb"])
    result = {
        "what": "peak extra memory and time of one image through edge_fm.data.images.image_to_input "
        "(a fresh Python each), "
        f"and of {args.clients} uploads at once through a running `edge-fm serve`",
        "target": {"peak_extra_mb_per_upload": TARGET_MB, "seconds_per_upload": TARGET_S},
        "met": all(r["peak_extra_rss_mb"] < TARGET_MB and r["seconds"] < TARGET_S for r in alone)
        and all(r["peak_extra_rss_mb"] < TARGET_MB and r["seconds_per_upload"] < TARGET_S for r in served),
        "worst_decode": {
            "image": worst_alone["image"],
            "peak_extra_rss_mb": worst_alone["peak_extra_rss_mb"],
        },
        "decode": alone,
        "server": served,
        "server_log_has_traceback": "Traceback" in log,
    }
    write_result_file(
        args.out,
        "decode-memory",
        result,
        shlex.join(["python", "benchmarks/decode_memory.py", *(argv if argv is not None else sys.argv[1:])]),
        {
            "description": f"{platform.machine()}, {cpu_model()}, {os.cpu_count()} CPUs",
            "python": platform.python_version(),
            "pillow": Image.__version__,
        },
    )
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

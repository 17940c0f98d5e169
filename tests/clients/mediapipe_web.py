"""MediaPipe Tasks for the Web in headless Chromium: the npm package's ImageClassifier on a plain page.

The page (``mediapipe-web/index.html``) imports ``@mediapipe/tasks-vision`` through an import map, no
bundler; it, the package (its ESM file and ``wasm/`` folder), the models and the images are served by a
local HTTP server on 127.0.0.1. Every request to another host is refused and listed (MediaPipe sends
usage logs to Google's servers otherwise), so nothing is read from a CDN.

WebGL runs on SwiftShader, Chromium's software renderer (``--use-angle=swiftshader``), so
``delegate: "GPU"`` runs MediaPipe's GPU path on any machine.

Example:
    >>> with web_client(environments.web_package()) as client:  # doctest: +SKIP
    ...     result = client.classify("model.tflite", rgb_images, delegate="CPU")
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import json
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
from environments import CLIENTS, ClientUnavailable

PAGE = CLIENTS / "mediapipe-web" / "index.html"
CHROMIUM = os.environ.get("EDGE_FM_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # WebGL on Chromium's software renderer, so that MediaPipe's GPU delegate runs without a GPU.
    "--use-angle=swiftshader",
    "--enable-unsafe-swiftshader",
]
CLIENT = "MediaPipe Tasks for the Web"


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


class WebClient:
    """One Chromium page with the MediaPipe client loaded; :meth:`classify` runs a model on images."""

    def __init__(self, page, root: Path, base_url: str, package: Path, blocked: list[str]):
        self.page, self.root, self.base_url, self.blocked = page, root, base_url, blocked
        self.package_version = json.loads((package / "package.json").read_text())["version"]
        self.browser_version = page.context.browser.version if page.context.browser else ""
        self.webgl_renderer = page.evaluate("window.webglRenderer()")
        self._jobs = 0

    @property
    def version(self) -> str:
        return f"@mediapipe/tasks-vision {self.package_version}"

    def classify(self, model: Path | str, images: np.ndarray, delegate: str = "CPU") -> dict:
        """Classifies uint8 RGB images ``(N, H, W, 3)`` with ``model`` on ``delegate`` (``CPU`` or ``GPU``).

        Returns:
            ``top1`` (index, -1 where classify threw), ``scores`` (per image, every class's score in
            index order; None where it threw), ``label_names`` (from the model's metadata), ``errors``
            (the distinct errors thrown, with ``error_count``), ``milliseconds`` (all classify calls).
        """
        images = np.ascontiguousarray(images, dtype=np.uint8)
        if images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"images must be uint8 RGB (N, H, W, 3), not {images.shape}")
        self._jobs += 1
        model_name, images_name = f"model-{self._jobs}.tflite", f"images-{self._jobs}.rgb"
        shutil.copyfile(model, self.root / model_name)
        (self.root / images_name).write_bytes(images.tobytes())
        try:
            out = self.page.evaluate(
                "(job) => window.classifyImages(job)",
                {
                    "model": model_name,
                    "delegate": delegate,
                    "images": images_name,
                    "count": int(images.shape[0]),
                    "height": int(images.shape[1]),
                    "width": int(images.shape[2]),
                },
            )
        finally:
            (self.root / model_name).unlink()
            (self.root / images_name).unlink()
        names = out["names"]
        return {
            "top1": [int(t) for t in out["top1"]],
            "scores": out["scores"],
            "label_names": [names[key] for key in sorted(names, key=int)],
            "errors": sorted(set(out["errors"])),
            "error_count": len(out["errors"]),
            "milliseconds": float(out["milliseconds"]),
        }


@contextlib.contextmanager
def web_client(package: Path) -> Iterator[WebClient]:
    """A headless Chromium page with MediaPipe Tasks for the Web loaded from ``package``.

    ``package`` is the npm package's folder (:func:`environments.web_package`).

    Raises:
        ClientUnavailable: Chromium or Playwright is missing.
    """
    if not (os.path.exists(CHROMIUM) or shutil.which(CHROMIUM)):
        raise ClientUnavailable(f"{CHROMIUM} is missing (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        raise ClientUnavailable("playwright is missing (pip install -e '.[dev]')") from None
    with (
        tempfile.TemporaryDirectory(prefix="edge-fm-mediapipe-web-") as scratch,
        _served(Path(scratch)) as base,
    ):
        root = Path(scratch)
        shutil.copyfile(PAGE, root / PAGE.name)
        (root / "tasks-vision").symlink_to(package, target_is_directory=True)
        blocked: list[str] = []
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
            try:
                context = browser.new_context()
                context.route("**/*", functools.partial(_local_only, blocked=blocked))
                page = context.new_page()
                page.goto(base + PAGE.name)
                page.wait_for_function("window.clientReady === true", timeout=30_000)
                yield WebClient(page, root, base, package, blocked)
            finally:
                browser.close()


def short_error(error: str) -> str:
    """MediaPipe's error in one line: the calculator that failed and why (``TensorsDequantizationCalculator:
    Unsupported input tensor type: Float32``), else the error's first line."""
    found = re.search(r'node "(?:[^"]*__)?(\w+)" failed: ([^;\n]+)', error)
    return f"{found.group(1)}: {found.group(2).strip()}" if found else error.strip().splitlines()[0][:300]


def _local_only(route, blocked: list[str]) -> None:
    """Lets requests to the local server through; refuses (and lists) every other one."""
    if urlparse(route.request.url).hostname == "127.0.0.1":
        route.continue_()
    else:
        blocked.append(route.request.url)
        route.abort()


@contextlib.contextmanager
def _served(root: Path) -> Iterator[str]:
    """Serves ``root`` on 127.0.0.1; yields the base URL."""
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(root))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()

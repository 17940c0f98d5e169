"""``edge-fm serve``: a web demo of exported models (Plotly Dash), run through LiteRT alone.

A user drops an image on the page (or picks one of the test images shown) and sees it as the
model does (28x28 after edge-fm's preprocessing), the model's ten class probabilities as a bar
chart, and an occlusion heat map of where the model looks. Given a folder of bundles
(``models/``), every model answers side by side with its measured size, accuracy and latency, so
an app developer can choose one.

The server loads no TensorFlow (inference and explanations run on the .tflite through LiteRT),
so it starts in about a second. It binds 127.0.0.1 unless told otherwise; uploads above a size
limit, files that are not images and decompression bombs get a message on the page.

Example:
    $ python -m edge_fm.show.serve models/ --port 8050
"""

from __future__ import annotations

import argparse
import base64
import binascii
import dataclasses
import ipaddress
import os
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

import numpy as np

from edge_fm.bench.measurements import (
    bench_rows,
    bundle_name,
    bundle_row,
    bundles_in,
    folder_rows,
    read_bench,
)
from edge_fm.data.datasets import CLASS_NAMES, SAMPLE_DIR, load_split
from edge_fm.errors import EdgeFMError
from edge_fm.export.bundles import MODEL_FILE, kind_of
from edge_fm.show import serve_page
from edge_fm.show.explain import occlusion_map, overlay, png_bytes

DEMO_EXTRA_FIX = "pip install 'edge-fm[demo]'"
DEFAULT_PORT = 8050
DEFAULT_MAX_UPLOAD_MB = 4.0
# Request bodies above 3 times the upload limit plus 1 MB are refused by the HTTP layer itself
# (base64 adds a third); a file between the limit and that gets a message on the page.
_REQUEST_FACTOR, _REQUEST_MARGIN = 3, 1_000_000


@dataclasses.dataclass(frozen=True)
class ServeConfig:
    """How the demo is served.

    Attributes:
        path: A bundle, a .tflite file, or a folder of bundles (``models/``).
        host: Address to bind; other than loopback only with ``expose``.
        port: TCP port.
        expose: Confirms a non-loopback ``host`` (the demo has no authentication).
        max_upload_mb: Largest image file accepted, in megabytes.
        bench: A bench result JSON with the models' measured figures (default: their model cards).
    """

    path: Path
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    expose: bool = False
    max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB
    bench: Path | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))
        if not 1 <= self.port <= 65535:
            raise EdgeFMError(f"--port {self.port}: choose a port between 1 and 65535.")
        if self.max_upload_mb <= 0:
            raise EdgeFMError(f"--max-upload-mb {self.max_upload_mb}: give a positive size, e.g. 4.")
        if not is_loopback(self.host) and not self.expose:
            raise EdgeFMError(
                f"--host {self.host} makes the demo reachable from other machines, and it has no "
                "authentication; add --expose to confirm, or keep the default 127.0.0.1."
            )

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1_000_000)


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# ---------------------------------------------------------------- the models


class ServedModel:
    """One .tflite model and what was measured of it; safe to call from several request threads."""

    def __init__(self, path: Path, row: dict[str, Any]):
        from edge_fm.show.predict import load_artifact

        self.path, self.row = path, row
        self.name = row.get("model") or path.parent.name
        self.model, self.labels = load_artifact(path)
        # A TFLite interpreter holds its tensors between set and get: one request at a time each.
        self._lock = threading.Lock()

    def answer(self, pixels: np.ndarray) -> np.ndarray:
        """The ten class probabilities of one ``(28, 28)`` uint8 image."""
        with self._lock:
            return np.asarray(self.model.predict_proba(pixels[None, :, :, None]))[0]

    def occlusion(self, pixels: np.ndarray, class_index: int) -> np.ndarray:
        """Occlusion sensitivity of one image for one class (see :func:`edge_fm.show.explain.occlusion_map`)."""
        with self._lock:
            return occlusion_map(self.model, pixels, class_index)


def load_models(path: Path | str, bench: Path | str | None = None) -> list[ServedModel]:
    """The models of a bundle, a .tflite file or a folder of bundles, with their measured figures.

    Raises:
        EdgeFMError: Nothing loadable there.
    """
    path = Path(path)
    if path.name == MODEL_FILE and path.is_file():
        path = path.parent  # a bundle's own file: the bundle, with its card
    if path.is_file():  # a bare .tflite: nothing measured beside it but its size
        return [ServedModel(path, {"model": path.stem, "bytes": path.stat().st_size})]
    if kind_of(path) == "bundle":
        return [ServedModel(path / MODEL_FILE, bundle_row(path, _bench_row(bench, path.name)))]
    if not path.is_dir() or not bundles_in(path):
        what = "does not exist" if not path.exists() else "holds no bundle (folders with a model.tflite)"
        raise EdgeFMError(
            f"{path} {what}: pass a bundle made by `edge-fm export`, a .tflite file or a folder of "
            "bundles such as models/."
        )
    rows, _ = folder_rows(path, bench)
    return [ServedModel(Path(row["path"]), row) for row in rows]


def _bench_row(bench: Path | str | None, name: str) -> dict[str, Any] | None:
    if bench is None:
        return None
    return next((row for row in bench_rows(read_bench(bench)) if bundle_name(row) == name), None)


def example_images(count: int = 10) -> list[tuple[str, np.ndarray]]:
    """One test image per class from the embedded sample, as ``(class name, pixels)``."""
    images, labels = load_split("test", SAMPLE_DIR)
    return [
        (CLASS_NAMES[c], images[np.flatnonzero(labels == c)[0]].reshape(28, 28))
        for c in range(min(count, len(CLASS_NAMES)))
    ]


def decode_upload(contents: str, filename: str, max_bytes: int) -> np.ndarray:
    """An uploaded file (a ``data:`` URL from the browser) -> ``(28, 28)`` uint8, as ``edge-fm predict`` sees it.

    Raises:
        EdgeFMError: Over the size limit, not an image, or a decompression bomb (one line for the page).
    """
    from edge_fm.show.predict import image_to_input

    name = Path(filename or "upload").name
    _, _, payload = (contents or "").partition(",")
    if len(payload) * 3 // 4 > max_bytes:
        raise EdgeFMError(
            f"{name} is {len(payload) * 3 / 4 / 1e6:.1f} MB; the demo takes images up to "
            f"{max_bytes / 1e6:.1f} MB (the model sees 28x28): downscale it first."
        )
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise EdgeFMError(f"{name}: the upload was garbled; try again.") from None
    with tempfile.TemporaryDirectory(prefix="edge-fm-upload-") as folder:
        # A neutral file name: the user's name never becomes a path on the server.
        path = Path(folder) / ("upload" + Path(name).suffix[:8].replace("/", ""))
        path.write_bytes(data)
        try:
            pixels, _ = image_to_input(path)
        except EdgeFMError as exc:
            raise EdgeFMError(str(exc).replace(str(path), name)) from None
    return pixels


# ---------------------------------------------------------------- the page


def create_app(config: ServeConfig, models: list[ServedModel] | None = None):
    """The Dash app of the demo (not yet serving; see :func:`run_server`).

    Raises:
        EdgeFMError: Dash is not installed (with the command that installs it), or no model loads.
    """
    dash, dcc, html, go = _dash()
    models = models if models is not None else load_models(config.path, config.bench)
    by_name = {model.name: model for model in models}
    examples = example_images()
    app = dash.Dash(__name__, title="edge-fm demo", update_title=None, serve_locally=True)
    app.server.config["MAX_CONTENT_LENGTH"] = _REQUEST_FACTOR * config.max_upload_bytes + _REQUEST_MARGIN
    app.layout = serve_page.layout(dcc, html, models, examples, config)

    @app.callback(
        dash.Output("image", "data"),
        dash.Output("message", "children"),
        dash.Input("upload", "contents"),
        dash.Input({"kind": "example", "index": dash.ALL}, "n_clicks"),
        dash.State("upload", "filename"),
        prevent_initial_call=True,
    )
    def take_image(contents, _clicks, filename):
        trigger = dash.ctx.triggered_id
        if isinstance(trigger, dict):
            name, pixels = examples[trigger["index"]]
            return serve_page.stored(pixels, f"test image of a {name}"), ""
        try:
            pixels = decode_upload(contents, filename, config.max_upload_bytes)
        except EdgeFMError as exc:
            return dash.no_update, str(exc)
        return serve_page.stored(pixels, f"upload {Path(filename or 'upload').name}"), ""

    @app.callback(
        dash.Output("seen", "src"),
        dash.Output("source", "children"),
        dash.Output("answer", "children"),
        dash.Output("chart", "figure"),
        dash.Output("heat", "src"),
        dash.Output("models", "children"),
        dash.Input("image", "data"),
        dash.Input("model", "value"),
    )
    def show(stored, chosen):
        pixels = np.frombuffer(base64.b64decode(stored["pixels"]), dtype=np.uint8).reshape(28, 28)
        model = by_name.get(chosen, models[0])
        probs = model.answer(pixels)
        best = int(probs.argmax())
        heat = model.occlusion(pixels, best)
        answers = {m.name: (probs if m is model else m.answer(pixels)) for m in models}
        return (
            serve_page.data_uri(png_bytes(pixels)),
            stored["source"],
            f"{model.labels[best]} ({probs[best]:.1%})",
            serve_page.chart(go, model, probs),
            serve_page.data_uri(png_bytes(overlay(pixels, heat))),
            serve_page.models_table(html, models, answers, model.name),
        )

    return app


def _dash():
    try:
        import dash
        import plotly.graph_objects as go
        from dash import dcc, html
    except ImportError:
        raise EdgeFMError(f"the demo needs Dash and Plotly: run `{DEMO_EXTRA_FIX}`.") from None
    return dash, dcc, html, go


# ---------------------------------------------------------------- serving


def run_server(config: ServeConfig, app=None) -> None:
    """Serves the demo until interrupted (one thread per request; each model answers one at a time)."""
    app = app or create_app(config)
    app.run(host=config.host, port=config.port, debug=False, threaded=True)


def server_command(config: ServeConfig) -> list[str]:
    """The command line that serves ``config`` in a fresh Python that loads no TensorFlow."""
    command = [
        sys.executable,
        "-m",
        "edge_fm.show.serve",
        str(config.path),
        "--host",
        config.host,
        "--port",
        str(config.port),
        "--max-upload-mb",
        str(config.max_upload_mb),
    ]
    if config.expose:
        command.append("--expose")
    if config.bench:
        command += ["--bench", str(config.bench)]
    return command


def serve_in_fresh_process(config: ServeConfig) -> None:
    """Replaces this process with the server (the CLI has TensorFlow loaded; the server needs none of it).

    Raises:
        EdgeFMError: The configuration or the models are unusable (checked here first, for one clear line).
    """
    load_models(config.path, config.bench)
    _dash()
    sys.stdout.flush()
    sys.stderr.flush()
    command = server_command(config)
    if os.name == "posix":
        os.execv(command[0], command)
    import subprocess

    raise SystemExit(subprocess.call(command))


def main(argv: list[str] | None = None) -> int:
    """``python -m edge_fm.show.serve PATH [--host H] [--port P] [--expose] [--max-upload-mb MB] [--bench JSON]``."""
    parser = argparse.ArgumentParser(
        prog="python -m edge_fm.show.serve", description="Serve the edge-fm web demo."
    )
    parser.add_argument("path", type=Path, nargs="?", default=Path("models"))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--expose", action="store_true")
    parser.add_argument("--max-upload-mb", type=float, default=DEFAULT_MAX_UPLOAD_MB)
    parser.add_argument("--bench", type=Path)
    args = parser.parse_args(argv)
    try:
        config = ServeConfig(args.path, args.host, args.port, args.expose, args.max_upload_mb, args.bench)
        app = create_app(config)
    except EdgeFMError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if not is_loopback(config.host):
        print(
            f"warning: serving on {config.host}: anyone who can reach this machine can use the demo.",
            file=sys.stderr,
        )
    print(f"edge-fm demo on http://{config.host}:{config.port}/ (Ctrl-C stops it)", flush=True)
    try:
        run_server(config, app)
    except KeyboardInterrupt:
        return 130
    except OSError as exc:
        print(
            f"error: cannot serve on {config.host}:{config.port}: {(exc.strerror or str(exc)).lower()}; "
            "choose another --port.",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

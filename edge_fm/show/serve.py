"""``edge-fm serve``: a web demo of exported models (Plotly Dash), run through LiteRT alone.

A user drops an image on the page (or picks one of the test images shown) and sees it as the
model does (28x28 after edge-fm's preprocessing, or the input size of a model of its own data),
the model's class probabilities as a bar chart, and an occlusion heat map of where the model
looks. Given a folder of bundles (``models/``), every model answers side by side with its
measured size, accuracy and latency, so an app developer can choose one.

The server loads no TensorFlow (inference and explanations run on the .tflite through LiteRT),
so it starts in about a second. It binds 127.0.0.1 unless told otherwise and serves through
waitress, a production WSGI server, with security headers and, if given one, an access key
(HTTP Basic authentication; any user name). Uploads above a size limit, files that are not
images, images too large to decode at a bounded cost (see :mod:`edge_fm.data.images`) and malformed
requests get a message, never a traceback; a fixed number of decodes and inferences run at once.

Example:
    $ python -m edge_fm.show.serve models/ --port 8050
"""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import math
import os
import socket
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from edge_fm.errors import EdgeFMError
from edge_fm.show import serve_page
from edge_fm.show.explain import overlay, png_bytes
from edge_fm.show.serve_guard import decode_upload, guard, stored_pixels
from edge_fm.show.served import ServedModel, example_images, input_shape, load_models  # noqa: F401 (re-exported)

DEMO_EXTRA_FIX = "pip install 'edge-fm[demo]'"
DEFAULT_PORT = 8050
DEFAULT_MAX_UPLOAD_MB = 4.0
MAX_UPLOAD_MB = 100  # above the largest image decoded raw: 48 megapixels of grey, 48 MB
KEY_ENV = "EDGE_FM_SERVE_KEY"  # the access key, when not given with --key
# Uploads decoded at once, each on its own thread (each holds up to edge_fm.data.images.DECODE_BUDGET_BYTES).
DECODE_SLOTS = 1
INFERENCE_SLOTS = 2  # requests running models at once
SERVER_THREADS = 4  # waitress' request threads; more requests wait in its queue
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
        expose: Confirms a non-loopback ``host``.
        max_upload_mb: Largest image file accepted, in megabytes.
        bench: A bench result JSON with the models' measured figures (default: their model cards).
        key: An access key every request must carry (HTTP Basic password, any user name); None for none.
        data: Where the models' own dataset is (its test images are offered), when not where their
            bundles say; None for the recorded place (Fashion-MNIST models: the embedded sample).
    """

    path: Path
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    expose: bool = False
    max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB
    bench: Path | None = None
    key: str | None = dataclasses.field(default=None, repr=False)
    data: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))
        object.__setattr__(self, "key", self.key or None)  # an empty key (an empty variable) is no key
        if self.key is not None and (not self.key.isprintable() or self.key != self.key.strip()):
            raise EdgeFMError("--key: use printable characters without leading or trailing spaces.")
        if not 1 <= self.port <= 65535:
            raise EdgeFMError(f"--port {self.port}: choose a port between 1 and 65535.")
        if not (math.isfinite(self.max_upload_mb) and 0 < self.max_upload_mb <= MAX_UPLOAD_MB):
            raise EdgeFMError(
                f"--max-upload-mb {self.max_upload_mb}: give a size above 0 and at most {MAX_UPLOAD_MB}, e.g. 4."
            )
        if not is_loopback(self.host) and not self.expose:
            raise EdgeFMError(
                f"--host {self.host} makes the demo reachable from other machines; add --expose to "
                f"confirm (and --key or ${KEY_ENV} to require a key), or keep the default 127.0.0.1."
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


# ---------------------------------------------------------------- the page


def create_app(config: ServeConfig, models: list[ServedModel] | None = None):
    """The Dash app of the demo (not yet serving; see :func:`run_server`).

    Raises:
        EdgeFMError: Dash is not installed (with the command that installs it), or no model loads.
    """
    dash, dcc, html, go = _dash()
    models = models if models is not None else load_models(config.path, config.bench)
    by_name = {model.name: model for model in models}
    examples = example_images(models=models, data=config.data)
    shape, policy = input_shape(models), models[0].policy
    seen = f"{shape[1]}x{shape[0]}"
    # Uploads are decoded on a fixed pool of threads: a request thread waits for its turn, and the
    # decoders' freed buffers stay in their own malloc arenas to be reused, not one per request thread.
    decoder = ThreadPoolExecutor(max_workers=DECODE_SLOTS, thread_name_prefix="edge-fm-decode")
    inferring = threading.BoundedSemaphore(INFERENCE_SLOTS)
    app = dash.Dash(__name__, title="edge-fm demo", update_title=None, serve_locally=True)
    app.server.config["MAX_CONTENT_LENGTH"] = _REQUEST_FACTOR * config.max_upload_bytes + _REQUEST_MARGIN
    app.layout = serve_page.layout(dcc, html, models, examples, config, seen)

    # In the browser: a file over the limit gets its message without being sent (the server would
    # refuse the request, and the page would not hear why); the rest goes on to the server.
    app.clientside_callback(
        """function(contents, filename) {
            if (!contents) { return [window.dash_clientside.no_update, window.dash_clientside.no_update]; }
            var size = Math.floor((contents.length - contents.indexOf(",") - 1) * 3 / 4);
            var name = String(filename || "upload").split(/[\\/]/).pop();
            if (size > %d) {
                return [window.dash_clientside.no_update, name + " is " + (size / 1e6).toFixed(1) +
                        " MB; the demo takes images up to %.1f MB (the model sees %s): downscale it first."];
            }
            return [{"contents": contents, "filename": filename}, window.dash_clientside.no_update];
        }"""
        % (config.max_upload_bytes, config.max_upload_bytes / 1e6, seen),
        dash.Output("pending", "data"),
        dash.Output("message", "children", allow_duplicate=True),
        dash.Input("upload", "contents"),
        dash.State("upload", "filename"),
        prevent_initial_call=True,
    )

    @app.callback(
        dash.Output("image", "data"),
        dash.Output("message", "children"),
        dash.Input("pending", "data"),
        dash.Input({"kind": "example", "index": dash.ALL}, "n_clicks"),
        prevent_initial_call=True,
    )
    def take_image(pending, _clicks):
        trigger = dash.ctx.triggered_id
        if isinstance(trigger, dict):
            index = trigger.get("index")
            if not isinstance(index, int) or not 0 <= index < len(examples):
                return dash.no_update, "no such test image; pick one of those shown."
            name, pixels = examples[index]
            return serve_page.stored(pixels, f"test image of a {name}"), ""
        pending = pending if isinstance(pending, dict) else {}
        filename = pending.get("filename")
        try:
            pixels = decoder.submit(
                decode_upload, pending.get("contents"), filename, config.max_upload_bytes, policy, seen
            ).result()
        except EdgeFMError as exc:
            return dash.no_update, str(exc)
        return serve_page.stored(
            pixels, f"upload {Path(filename if isinstance(filename, str) and filename else 'upload').name}"
        ), ""

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
        try:
            pixels = stored_pixels(stored, shape)
        except EdgeFMError as exc:
            return dash.no_update, dash.no_update, str(exc), dash.no_update, dash.no_update, dash.no_update
        model = by_name.get(chosen, models[0]) if isinstance(chosen, str) else models[0]
        with inferring:
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

    guard(app, config.key)
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
    """Serves the demo through waitress until interrupted.

    Raises:
        EdgeFMError: waitress is not installed, or the address cannot be bound (a busy port, say).
    """
    server = make_server(config, app or create_app(config))
    server.run()


def make_server(config: ServeConfig, app):
    """A waitress server bound to ``config``'s address, not yet serving.

    Raises:
        EdgeFMError: waitress is not installed, or the address cannot be bound (a busy port, say).
    """
    try:
        from waitress.server import create_server
    except ImportError:
        raise EdgeFMError(f"the demo is served by waitress: run `{DEMO_EXTRA_FIX}`.") from None
    try:
        return create_server(
            app.server,
            host=config.host,
            port=config.port,
            threads=SERVER_THREADS,
            max_request_body_size=_REQUEST_FACTOR * config.max_upload_bytes + _REQUEST_MARGIN,
            ident="edge-fm",
            clear_untrusted_proxy_headers=True,
        )
    except OSError as exc:
        raise _bind_error(config, exc) from None


def _bind_error(config: ServeConfig, exc: OSError) -> EdgeFMError:
    reason = (exc.strerror or str(exc)).lower()
    if getattr(exc, "errno", None) == 98 or "in use" in reason:
        reason = "the port is in use by another program"
    return EdgeFMError(f"cannot serve on {config.host}:{config.port}: {reason}; choose another --port.")


def check_address(config: ServeConfig) -> None:
    """Checks that the demo's address can be bound now (the server binds it again a moment later).

    Raises:
        EdgeFMError: The port is busy, or the host is not an address of this machine.
    """
    try:
        infos = socket.getaddrinfo(config.host, config.port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise EdgeFMError(
            f"--host {config.host}: {(exc.strerror or str(exc)).lower()}; give an address of this machine."
        ) from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        if os.name == "posix":
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server will
        try:
            probe.bind(address)
        except OSError as exc:
            raise _bind_error(config, exc) from None


def server_command(config: ServeConfig) -> list[str]:
    """The command line that serves ``config`` in a fresh Python that loads no TensorFlow.

    The access key is not on it (command lines are visible to other users): it travels in ``$EDGE_FM_SERVE_KEY``.
    """
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
    if config.data:
        command += ["--data", str(config.data)]
    return command


def serve_in_fresh_process(config: ServeConfig) -> None:
    """Replaces this process with the server (the CLI has TensorFlow loaded; the server needs none of it).

    Raises:
        EdgeFMError: The configuration, the address or the models are unusable (checked here first,
            for one clear line).
    """
    _dash()
    _waitress()
    check_address(config)
    example_images(models=load_models(config.path, config.bench), data=config.data)  # its data, checked here
    sys.stdout.flush()
    sys.stderr.flush()
    command = server_command(config)
    environment = dict(os.environ)
    environment.pop(KEY_ENV, None)
    if config.key is not None:
        environment[KEY_ENV] = config.key
    if os.name == "posix":
        os.execve(command[0], command, environment)
    import subprocess

    raise SystemExit(subprocess.call(command, env=environment))


def _waitress() -> None:
    try:
        import waitress  # noqa: F401
    except ImportError:
        raise EdgeFMError(f"the demo is served by waitress: run `{DEMO_EXTRA_FIX}`.") from None


def main(argv: list[str] | None = None) -> int:
    """``python -m edge_fm.show.serve PATH [--host H] [--port P] [--expose] [--key K] [--max-upload-mb MB]
    [--bench JSON]``.

    The access key may also come from ``$EDGE_FM_SERVE_KEY``.
    """
    parser = argparse.ArgumentParser(
        prog="python -m edge_fm.show.serve", description="Serve the edge-fm web demo."
    )
    parser.add_argument("path", type=Path, nargs="?", default=Path("models"))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--expose", action="store_true")
    parser.add_argument("--key", default=None)
    parser.add_argument("--max-upload-mb", type=float, default=DEFAULT_MAX_UPLOAD_MB)
    parser.add_argument("--bench", type=Path)
    parser.add_argument("--data", default=None)
    args = parser.parse_args(argv)
    try:
        config = ServeConfig(
            args.path,
            args.host,
            args.port,
            args.expose,
            args.max_upload_mb,
            args.bench,
            args.key or os.environ.get(KEY_ENV),
            args.data,
        )
        server = make_server(config, create_app(config))
    except EdgeFMError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if not is_loopback(config.host):
        print(
            f"warning: serving on {config.host}: anyone who can reach this machine can use the demo"
            f"{' with its key' if config.key else ''}.",
            file=sys.stderr,
        )
    print(f"edge-fm demo on http://{config.host}:{config.port}/ (Ctrl-C stops it)", flush=True)
    try:
        server.run()
    except KeyboardInterrupt:
        return 130
    finally:
        server.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

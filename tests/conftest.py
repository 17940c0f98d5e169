"""Shared fixtures: the real dataset (found, or fetched once), small slices of it, a local HTTP server."""

from __future__ import annotations

import contextlib
import functools
import getpass
import http.server
import os
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from edge_fm.data import datasets as data
from edge_fm.data import download
from edge_fm.errors import EdgeFMError
from edge_fm.train.callbacks import NullReporter

# pytest-xdist's workers export COLUMNS=80; the CLI's tables, printed to a pipe as in production,
# must keep their pipe width, so the tests see what a user's log sees.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.pop("COLUMNS", None)

REPO = Path(__file__).resolve().parents[1]
TEST_DATA_ENV = "EDGE_FM_TEST_DATA"


def dataset_places() -> list[tuple[str, Path]]:
    """Where the tests look for the full dataset, in order, each with what pointed there.

    The same places the product reads (``$EDGE_FM_DATA``, then the user cache), after
    ``$EDGE_FM_TEST_DATA``, which lets the tests use a copy the product does not see.
    """
    places = [
        (f"${name}", Path(os.environ[name]).expanduser())
        for name in (TEST_DATA_ENV, data.DATA_ENV)
        if os.environ.get(name)
    ]
    return places + [("the user cache", data.default_data_dir())]


def holds_dataset(folder: Path) -> bool:
    """True when ``folder`` has the four IDX files (whichever copy: checksums are not required)."""
    return all((folder / name).is_file() for pair in data.FILES.values() for name in pair)


class DatasetUnavailable(Exception):
    """The full dataset is in none of the places looked at and could not be downloaded."""


class DatasetLocator:
    """Finds the full dataset, or fetches it into the user cache with the product's verified download.

    The outcome, found or failed, is kept: a machine without network pays for one failed
    download, not one per test that needs the data.
    """

    def __init__(self, base_urls: tuple[str, ...] | None = None, timeout: float = 15.0):
        self.base_urls, self.timeout = base_urls, timeout
        self._found: Path | None = None
        self._failure: str | None = None

    def __call__(self, announce=lambda line: None) -> Path:
        if self._found is None and self._failure is None:
            self._locate(announce)
        if self._failure is not None:
            raise DatasetUnavailable(self._failure)
        return self._found

    def _locate(self, announce) -> None:
        places = dataset_places()
        held = [folder for _, folder in places if holds_dataset(folder)]
        if held:
            self._found = held[0]
            return
        cache = data.default_data_dir()
        announce(f"Fashion-MNIST is not on this machine: downloading it into {cache} (once, about 30 MB)")
        try:
            # Read at call time, not fetch()'s default, so the mirror list can be redirected.
            download.fetch(cache, base_urls=self.base_urls or data.MIRRORS, timeout=self.timeout)
        except EdgeFMError as exc:
            looked = ", ".join(f"{folder} ({origin})" for origin, folder in places)
            self._failure = (
                f"the tests need the full Fashion-MNIST dataset. It is not in {looked}, and downloading it "
                f"failed ({str(exc).split(' | ')[0]}). Either set {data.DATA_ENV} (or {TEST_DATA_ENV}) to a folder "
                "holding the four IDX .gz files, or run `edge-fm data fetch` on a machine with network access."
            )
            return
        self._found = cache


_locate_dataset = DatasetLocator()


@pytest.fixture(scope="session")
def data_dir(request) -> Path:
    """The full dataset: $EDGE_FM_TEST_DATA, $EDGE_FM_DATA or the user cache, else fetched once.

    Session-scoped, so it is set up before the per-test fixture below hides the user's
    environment: it sees the same places the user's own `edge-fm` commands do.
    """
    capture = request.config.pluginmanager.getplugin("capturemanager")

    def announce(line: str) -> None:
        # A download takes a while: say why the run pauses, past pytest's output capture.
        with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
            print(f"\n{line}", flush=True)

    try:
        return _locate_dataset(announce)
    except DatasetUnavailable as exc:
        failure = str(exc)
    pytest.fail(failure, pytrace=False)  # outside the handler: the one line, no chained traceback


def _plain_interpreter_accuracy(path, images, labels) -> float:
    """Accuracy computed independently of the runner: a plain interpreter, one image at a time."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    scale, zero = inp["quantization"]
    hits = 0
    for image, label in zip(images, labels):
        x = image.reshape(1, 28, 28, 1).astype(np.float32)
        if inp["dtype"] != np.float32:
            bounds = np.iinfo(inp["dtype"])
            x = np.clip(np.round(x / scale + zero), bounds.min, bounds.max)
        interpreter.set_tensor(inp["index"], x.astype(inp["dtype"]))
        interpreter.invoke()
        hits += int(interpreter.get_tensor(out["index"])[0].argmax() == label)
    return hits / len(labels)


@pytest.fixture(scope="session")
def plain_accuracy():
    """``plain_accuracy(tflite_path, images, labels)``: the reference the runner is checked against."""
    return _plain_interpreter_accuracy


class _InterruptAfter(NullReporter):
    """A training reporter that stops the run like a Ctrl-C at the end of one epoch."""

    def __init__(self, epoch):
        self.stop_at = epoch

    def epoch(self, epoch, logs):
        if epoch == self.stop_at:
            raise KeyboardInterrupt


@pytest.fixture(scope="session")
def interrupt_after():
    """``interrupt_after(n)``: a reporter that interrupts training after epoch ``n``."""
    return _InterruptAfter


@pytest.fixture(scope="session")
def digits():
    """scikit-learn's 8x8 digits (a real dataset shipped in the package): images 0-240 as uint8, labels."""
    sklearn_datasets = pytest.importorskip("sklearn.datasets")
    bunch = sklearn_datasets.load_digits()
    # 0-16 grey levels to 0-240
    return (bunch.images * 15).astype(np.uint8), bunch.target.astype(np.uint8)


@pytest.fixture(autouse=True)
def _no_user_data_env(monkeypatch, tmp_path):
    # Tests must not read or fill the developer's own cache or data folder.
    monkeypatch.delenv("EDGE_FM_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def http_server(tmp_path):
    """Serves a temporary folder on 127.0.0.1; yields (folder, base_url)."""
    root = tmp_path / "served"
    root.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="session")
def exported(tmp_path_factory):
    """A tiny CNN trained briefly on the embedded sample, exported as fp32 and int8 bundles."""
    from edge_fm.export.exporter import export
    from edge_fm.train.trainer import config_for, train

    root = tmp_path_factory.mktemp("exported")
    # 8 epochs, not fewer: after 4 the net is so unsure that int8 rounding flips 1.5% of its 400
    # parity images and the export (rightly) refuses it; at 8 agreement is 99.5% (measured).
    trained = train(
        config_for("tiny-cnn", "quick", data="sample", epochs=8, learning_rate=3e-3), runs_dir=root
    )
    bundles = {name: export(trained, name, parity_images=400, runs_dir=root) for name in ("fp32", "int8")}
    return {"root": root, "train": trained, **bundles}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class SshdFactory:
    """Starts real OpenSSH servers on 127.0.0.1, each with throwaway host and client keys.

    ``factory()`` returns a dict with the port, the user, the accepted key, a key it refuses, the
    known_hosts file that holds its host key (so host-key checking stays on) and a free port where
    nothing listens; ``factory(client_key=...)`` accepts an existing key instead of a new one (a
    fleet whose devices all know one user key). Every server is stopped by :meth:`close`.
    """

    def __init__(self, root: Path):
        self.root = root
        self.servers: list[subprocess.Popen] = []

    def __call__(self, client_key: Path | None = None) -> dict:
        binary = shutil.which("sshd") or "/usr/sbin/sshd"
        if not Path(binary).exists():
            if os.environ.get("CI"):
                pytest.fail("sshd is not installed; .ci/run installs openssh-server")
            pytest.skip("OpenSSH server not installed here (apt-get install openssh-server)")
        root = self.root / f"sshd-{len(self.servers) + 1}"
        root.mkdir()
        for name in ("host_key", "client_key", "stranger_key"):
            subprocess.run(
                ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(root / name)], check=True
            )
        accepted = Path(client_key) if client_key else root / "client_key"
        (root / "authorized_keys").write_text(accepted.with_name(accepted.name + ".pub").read_text())
        user, port = getpass.getuser(), free_port()
        (root / "sshd_config").write_text(
            f"Port {port}\nListenAddress 127.0.0.1\nHostKey {root / 'host_key'}\nPidFile {root / 'sshd.pid'}\n"
            f"AuthorizedKeysFile {root / 'authorized_keys'}\nStrictModes no\nPasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\nUsePAM no\nPermitRootLogin "
            f"prohibit-password\nAllowUsers {user}\nLogLevel ERROR\n"
        )
        host_key = (root / "host_key.pub").read_text().split()
        (root / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_key[0]} {host_key[1]}\n")
        if os.geteuid() == 0:
            Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege-separation directory
        server = subprocess.Popen(
            [binary, "-D", "-e", "-f", str(root / "sshd_config")], stderr=open(root / "sshd.log", "w")
        )
        self.servers.append(server)
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if server.poll() is not None:
                    pytest.fail(f"sshd did not start: {(root / 'sshd.log').read_text()}")
                time.sleep(0.1)
        return {
            "port": port,
            "user": user,
            "key": accepted,
            "stranger_key": root / "stranger_key",
            "known_hosts": root / "known_hosts",
            "free_port": free_port(),
        }

    def close(self) -> None:
        for server in self.servers:
            server.terminate()
            server.wait(timeout=10)


@pytest.fixture(scope="session")
def sshd_factory(tmp_path_factory):
    """``sshd_factory()``: one more real OpenSSH server on 127.0.0.1 (see :class:`SshdFactory`)."""
    factory = SshdFactory(tmp_path_factory.mktemp("sshd"))
    try:
        yield factory
    finally:
        factory.close()


@pytest.fixture(scope="session")
def sshd(sshd_factory):
    """A real OpenSSH server on 127.0.0.1 with throwaway host and client keys.

    Yields a dict with the port, the user, the accepted key, a key it refuses, and the
    known_hosts file that holds its host key (so host-key checking stays on).
    """
    return sshd_factory()

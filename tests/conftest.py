"""Shared fixtures: the real dataset beside the repo, small slices of it, a local HTTP server."""

from __future__ import annotations

import functools
import getpass
import importlib.util
import http.server
import os
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from edge_fm.train import NullReporter

REPO = Path(__file__).resolve().parents[1]
# The full dataset lives beside the checkout (../shared); EDGE_FM_TEST_DATA points elsewhere.
SHARED_DATA = Path(os.environ.get("EDGE_FM_TEST_DATA", REPO.parent / "shared" / "data" / "fashion-mnist"))


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not (SHARED_DATA / "train-images-idx3-ubyte.gz").is_file():
        pytest.fail(f"the Fashion-MNIST IDX files are not in {SHARED_DATA}; set EDGE_FM_TEST_DATA to their folder")
    return SHARED_DATA


def _plain_interpreter_accuracy(path, images, labels) -> float:
    """Accuracy computed independently of the runner: a plain interpreter, one image at a time."""
    import numpy as np
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


def _load_benchmark_script(name: str):
    path = REPO / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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
def benchmark_script():
    """``benchmark_script(name)``: the module benchmarks/<name>.py (scripts, not a package)."""
    return _load_benchmark_script


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
    from edge_fm.export import export
    from edge_fm.train import config_for, train

    root = tmp_path_factory.mktemp("exported")
    # 8 epochs, not fewer: after 4 the net is so unsure that int8 rounding flips 1.5% of its 400
    # parity images and the export (rightly) refuses it; at 8 agreement is 99.5% (measured).
    trained = train(config_for("tiny-cnn", "quick", data="sample", epochs=8, learning_rate=3e-3), runs_dir=root)
    bundles = {name: export(trained, name, parity_images=400, runs_dir=root) for name in ("fp32", "int8")}
    return {"root": root, "train": trained, **bundles}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="session")
def sshd(tmp_path_factory):
    """A real OpenSSH server on 127.0.0.1 with throwaway host and client keys.

    Yields a dict with the port, the user, the accepted key, a key it refuses, and the
    known_hosts file that holds its host key (so host-key checking stays on).
    """
    binary = shutil.which("sshd") or "/usr/sbin/sshd"
    if not Path(binary).exists():
        if os.environ.get("CI"):
            pytest.fail("sshd is not installed; .ci/run installs openssh-server")
        pytest.skip("OpenSSH server not installed here (apt-get install openssh-server)")
    root = tmp_path_factory.mktemp("sshd")
    for name in ("host_key", "client_key", "stranger_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(root / name)], check=True)
    (root / "authorized_keys").write_text((root / "client_key.pub").read_text())
    user, port = getpass.getuser(), _free_port()
    (root / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {root / 'host_key'}\nPidFile {root / 'sshd.pid'}\n"
        f"AuthorizedKeysFile {root / 'authorized_keys'}\nStrictModes no\nPasswordAuthentication no\n"
        f"KbdInteractiveAuthentication no\nUsePAM no\nPermitRootLogin prohibit-password\nAllowUsers {user}\nLogLevel ERROR\n"
    )
    host_key = (root / "host_key.pub").read_text().split()
    (root / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_key[0]} {host_key[1]}\n")
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege-separation directory
    server = subprocess.Popen([binary, "-D", "-e", "-f", str(root / "sshd_config")], stderr=open(root / "sshd.log", "w"))
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            if server.poll() is not None:
                pytest.fail(f"sshd did not start: {(root / 'sshd.log').read_text()}")
            time.sleep(0.1)
    try:
        yield {"port": port, "user": user, "key": root / "client_key", "stranger_key": root / "stranger_key",
               "known_hosts": root / "known_hosts", "free_port": _free_port()}
    finally:
        server.terminate()
        server.wait(timeout=10)

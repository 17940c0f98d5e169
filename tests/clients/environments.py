"""Client environments: each mobile runtime in an environment of its own, as an app has it.

MediaPipe Tasks and the TFLite Task Library cannot share edge-fm's environment (absl-py,
protobuf), so each gets a venv under ``.cache/`` built on first use from its pinned requirements.
MediaPipe Tasks for the Web is the npm package a web app installs, in ``.cache/mediapipe-web/``,
installed on first use from its pinned lock file (``mediapipe-web/package-lock.json``).
"""

from __future__ import annotations

import contextlib
import fcntl
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CLIENTS = Path(__file__).resolve().parent
ENVIRONMENTS = {
    "mediapipe": ("mediapipe-requirements.txt", "mediapipe"),
    "task-library": ("task-library-requirements.txt", "tflite_support.task.vision"),
}


WEB_CLIENT = CLIENTS / "mediapipe-web"  # package.json and package-lock.json of the web client
WEB_PACKAGE = "@mediapipe/tasks-vision"


class ClientUnavailable(Exception):
    """A client environment could not be built or does not import."""


def client_python(name: str, root: Path = REPO / ".cache") -> Path:
    """The Python of client environment ``name``, built on first use (a few minutes, about 700 MB).

    Raises:
        ClientUnavailable: pip failed (no package index reachable) or the client does not import.
    """
    requirements, module = ENVIRONMENTS[name]
    venv = root / f"{name}-venv"
    python = venv / "bin" / "python"
    stamp = venv / "requirements.txt"
    wanted = (CLIENTS / requirements).read_text()
    with _building(root, venv.name):
        if not (python.is_file() and stamp.is_file() and stamp.read_text() == wanted):
            _build(venv, CLIENTS / requirements)
            stamp.write_text(wanted)
    probe = subprocess.run([str(python), "-c", f"import {module}"], capture_output=True, text=True)
    if probe.returncode != 0:
        raise ClientUnavailable(f"{name} does not import in {venv}: {probe.stderr.strip().splitlines()[-1]}")
    return python


@contextlib.contextmanager
def _building(root: Path, name: str):
    """Holds ``root/<name>.lock`` while an environment is checked or built: test workers share ``.cache``."""
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _build(venv: Path, requirements: Path) -> None:
    # Built in place (a venv's scripts hold its absolute path); the stamp written after it marks it whole.
    shutil.rmtree(venv, ignore_errors=True)
    steps = (
        [sys.executable, "-m", "venv", str(venv)],
        [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "-r", str(requirements)],
    )
    for step in steps:
        done = subprocess.run(step, capture_output=True, text=True)
        if done.returncode != 0:
            shutil.rmtree(venv, ignore_errors=True)
            lines = [
                line
                for line in (done.stderr or done.stdout).strip().splitlines()
                if not line.startswith("WARNING")
            ]
            raise ClientUnavailable(f"building {venv.name} failed: {lines[-1] if lines else done.returncode}")


def web_package(root: Path = REPO / ".cache") -> Path:
    """The folder of the npm package ``@mediapipe/tasks-vision``, installed on first use (seconds, about 40 MB).

    ``npm ci`` installs exactly the version and checksum of the pinned lock file into ``root/mediapipe-web``.

    Raises:
        ClientUnavailable: npm is not installed, or the install failed (no npm registry reachable).
    """
    folder = root / "mediapipe-web"
    package = folder / "node_modules" / WEB_PACKAGE
    stamp = folder / "installed-lock.json"
    wanted = (WEB_CLIENT / "package-lock.json").read_text()
    with _building(root, folder.name):
        if not ((package / "package.json").is_file() and stamp.is_file() and stamp.read_text() == wanted):
            _install_web(folder)
            stamp.write_text(wanted)
    return package


def _install_web(folder: Path) -> None:
    npm = shutil.which("npm")
    if npm is None:
        raise ClientUnavailable("npm is not installed (apt-get install nodejs npm)")
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for name in ("package.json", "package-lock.json"):
        shutil.copyfile(WEB_CLIENT / name, folder / name)
    done = subprocess.run(
        [npm, "ci", "--prefix", str(folder), "--no-audit", "--no-fund", "--ignore-scripts"],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        shutil.rmtree(folder, ignore_errors=True)
        # npm ends with where its log is; the lines before say what failed (e.g. the registry unreachable).
        lines = [
            line for line in (done.stderr or done.stdout).splitlines() if line and "complete log" not in line
        ]
        raise ClientUnavailable(f"npm ci of {WEB_PACKAGE} failed: {'; '.join(lines[:2]) or done.returncode}")

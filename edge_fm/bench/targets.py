"""Where a benchmark runs: one ``Target`` protocol, and the targets chosen by the scheme of their URL.

Targets:
    ``local``: the runner (``edge_fm/runner.py``) in child processes of this machine's Python.
    ``ssh://user@host[:port]``: the runner, the artifacts and the test set are copied to a
    temporary folder on the host, run there with the host's ``python3`` (which needs only
    ``numpy`` and ``ai-edge-litert``), and removed afterwards.
    ``tflm``: TensorFlow Lite for Microcontrollers on this machine: accuracy, arena and flash, no latency.
    ``vela:CONFIG``: Arm Vela's Ethos-U estimate for that configuration (memory, NPU and CPU ops, cycles),
    from the model alone: no image, no measurement.

Example:
    >>> target = parse_target("ssh://pi@raspberrypi.local")  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import io
import json
import platform
import shlex
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

import numpy as np

from edge_fm import runner
from edge_fm.bench.options import BenchOptions
from edge_fm.errors import EdgeFMError
from edge_fm.export import tflm
from edge_fm.export.bundles import DESCRIPTION_FILE, MODEL_FILE

TEST_SET_FILE = "test.npz"


class Target(Protocol):
    """Where artifacts are measured: ``run`` returns the runner's JSON (``rows`` and ``environment``);
    ``check`` raises, before minutes of work, when the target cannot be used."""

    name: str

    def check(self) -> None: ...

    def run(self, artifacts: list[Path], test_set: Path, options: BenchOptions) -> dict[str, Any]: ...


@dataclasses.dataclass
class LocalTarget:
    """The runner in child processes of this machine's Python."""

    python: str = sys.executable

    name = "local"

    def check(self) -> None:
        """This machine is always there."""

    def run(self, artifacts: list[Path], test_set: Path, options: BenchOptions) -> dict[str, Any]:
        command = [
            self.python,
            runner.__file__,
            *map(str, artifacts),
            "--test-data",
            str(test_set),
            *options.runner_args(),
            "--json",
            "-",
        ]
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=options.worst_case_seconds(len(artifacts))
        )
        if done.returncode != 0:
            raise EdgeFMError(f"the runner failed locally: {last_line(done.stderr)}")
        return json.loads(done.stdout)


@dataclasses.dataclass
class SshTarget:
    """The runner on a host reached with the system OpenSSH client (BatchMode, host keys checked).

    Attributes:
        user, host, port: Where to connect (``ssh://user@host:port``).
        identity: A private key file (``ssh -i``), else the client's defaults.
        ssh_options: Extra ``-o`` options (e.g. ``UserKnownHostsFile=...``).
        python: The host's Python command.
        connect_timeout: Seconds to wait for the connection.
    """

    host: str
    user: str | None = None
    port: int | None = None
    identity: str | None = None
    ssh_options: tuple[str, ...] = ()
    python: str = "python3"
    connect_timeout: int = 10

    def __post_init__(self) -> None:
        # ssh would read a user or host that starts with "-" as an option (-oProxyCommand=... runs a command).
        for part, value in (("host", self.host), ("user", self.user)):
            if value is not None and (
                not value or value.startswith("-") or not value.isprintable() or " " in value
            ):
                raise EdgeFMError(
                    f"target {self.name}: the {part} {value!r} is not a {part} name (it may not be empty, "
                    "start with '-' or hold spaces); write ssh://user@host[:port]."
                )

    @property
    def name(self) -> str:
        return f"ssh://{self.user + '@' if self.user else ''}{self.host}{':' + str(self.port) if self.port else ''}"

    @property
    def where(self) -> str:
        return f"{self.user + '@' if self.user else ''}{self.host}{':' + str(self.port) if self.port else ''}"

    def ssh_command(self, remote: str) -> list[str]:
        command = [
            "ssh",
            "-o",
            "BatchMode=yes",
            "-o",
            f"ConnectTimeout={self.connect_timeout}",
            "-o",
            "ServerAliveInterval=15",
            "-o",
            "ServerAliveCountMax=4",
        ]
        # Host-key checking stays on unless the caller's own options say otherwise.
        if not any(o.lower().startswith("stricthostkeychecking") for o in self.ssh_options):
            command += ["-o", "StrictHostKeyChecking=yes"]
        for option in self.ssh_options:
            command += ["-o", option]
        if self.identity:
            command += ["-i", str(self.identity), "-o", "IdentitiesOnly=yes"]
        if self.port:
            command += ["-p", str(self.port)]
        # Everything after "--" is the destination and the remote command, never an option.
        command += ["--", f"{self.user}@{self.host}" if self.user else self.host, remote]
        return command

    def call(self, remote: str, timeout: float, stdin: bytes | None = None) -> subprocess.CompletedProcess:
        """Runs ``remote`` (a shell command line) on the host; connection problems raise."""
        try:
            done = subprocess.run(self.ssh_command(remote), input=stdin, capture_output=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise EdgeFMError(
                f"{self.where} did not finish within {timeout:.0f} s: check the host, or raise "
                "--max-seconds / --ssh-timeout."
            ) from None
        except FileNotFoundError:
            raise EdgeFMError(
                "the OpenSSH client `ssh` is not installed here: install it (apt-get install openssh-client)."
            ) from None
        if done.returncode == 255:
            raise EdgeFMError(self.explain_ssh_failure(done.stderr.decode(errors="replace")))
        return done

    def explain_ssh_failure(self, stderr: str) -> str:
        """One line naming what went wrong with the connection and how to fix it."""
        text = stderr.lower()
        if "connection refused" in text:
            return f"cannot reach {self.where}: connection refused (is sshd running there, and is the port right?)."
        if (
            "timed out" in text
            or "no route" in text
            or "could not resolve" in text
            or "network is unreachable" in text
        ):
            return (
                f"cannot reach {self.where}: {last_line(stderr)} (check the address and that the host is up)."
            )
        if "host key verification failed" in text or "host key for" in text:
            return (
                f"the host key of {self.host} is not known (or has changed): connect once with `ssh "
                f"{'-p ' + str(self.port) + ' ' if self.port else ''}"
                f"{self.user + '@' if self.user else ''}{self.host}` "
                "to check and accept it; host-key checking stays on."
            )
        if "permission denied" in text:
            return (
                f"{self.where} refused the key: add your public key to ~/.ssh/authorized_keys on the host "
                f"(`ssh-copy-id {self.user + '@' if self.user else ''}{self.host}`) or pass --ssh-key."
            )
        return f"ssh to {self.where} failed: {last_line(stderr)}"

    def check(self) -> None:
        """Connects and asks for the host's Python, so that a pipeline finds an unusable host before its
        minutes of training, not after.

        Raises:
            EdgeFMError: The host cannot be reached or has no Python 3 (one line with the fix).
        """
        probe = self.call(
            f"{self.python} -c 'import sys; print(sys.version_info[0])'", timeout=self.connect_timeout + 30
        )
        if probe.returncode != 0 or probe.stdout.strip() != b"3":
            raise EdgeFMError(
                f"{self.python} (Python 3) not found on {self.host}: install it (`sudo apt install "
                "python3`) or pass --remote-python."
            )

    def run(self, artifacts: list[Path], test_set: Path, options: BenchOptions) -> dict[str, Any]:
        quick = self.connect_timeout + 30
        self.check()
        made = self.call('mktemp -d "${TMPDIR:-/tmp}/edge-fm-bench.XXXXXX"', timeout=quick)
        remote_dir = made.stdout.decode().strip()
        if made.returncode != 0 or not remote_dir.startswith("/"):
            raise EdgeFMError(
                f"could not make a temporary folder on {self.host}: {last_line(made.stderr.decode())}"
            )
        try:
            names = _remote_names(artifacts)
            self.upload(remote_dir, _payload(artifacts, names, test_set), timeout=quick + 300)
            command = " ".join(
                [
                    "cd",
                    shlex.quote(remote_dir),
                    "&&",
                    self.python,
                    "runner.py",
                    *(shlex.quote(f"{name}/{MODEL_FILE}") for name in names),
                    "--test-data",
                    TEST_SET_FILE,
                    *map(shlex.quote, options.runner_args()),
                    "--json",
                    "-",
                ]
            )
            done = self.call(command, timeout=options.worst_case_seconds(len(artifacts)))
            if done.returncode != 0:
                message = last_line(done.stderr.decode(errors="replace")).removeprefix("error: ")
                raise EdgeFMError(f"the runner failed on {self.host}: {message}")
            result = json.loads(done.stdout)
        finally:
            self.call(f"rm -rf {shlex.quote(remote_dir)}", timeout=quick)
        for row in result["rows"]:  # report local paths, not the temporary remote ones
            row["path"] = str(artifacts[names.index(row["path"].split("/")[0])])
        result["environment"]["remote_dir_removed"] = True
        return result

    def upload(self, remote_dir: str, payload: bytes, timeout: float) -> None:
        done = self.call(f"tar -xzf - -C {shlex.quote(remote_dir)}", timeout=timeout, stdin=payload)
        if done.returncode != 0:
            raise EdgeFMError(
                f"could not copy the artifacts to {self.host}: {last_line(done.stderr.decode())}"
            )


def _remote_names(artifacts: list[Path]) -> list[str]:
    """A unique folder name per artifact, so the runner reports readable names."""
    names: list[str] = []
    for path in artifacts:
        base = runner.artifact_name(str(path))
        name, n = base, 2
        while name in names:
            name, n = f"{base}-{n}", n + 1
        names.append(name)
    return names


def _payload(artifacts: list[Path], names: list[str], test_set: Path) -> bytes:
    """A gzip tar of the runner, the test set and each artifact (with its model.json, if any)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.add(runner.__file__, arcname="runner.py")
        tar.add(test_set, arcname=TEST_SET_FILE)
        for path, name in zip(artifacts, names):
            tar.add(path, arcname=f"{name}/{MODEL_FILE}")
            sidecar = path.with_name(DESCRIPTION_FILE)
            if path.name == MODEL_FILE and sidecar.exists():
                tar.add(sidecar, arcname=f"{name}/{DESCRIPTION_FILE}")
    return buffer.getvalue()


# The fields a TFLM row keeps, in result-file order: the check report's own (TflmReport.as_dict names),
# and three the row adds (the arena's least size, the images checked, how long the check took).
_TFLM_ROW = (
    "runs_under_tflm unsupported_ops ops arena_bytes arena_min_bytes flash_bytes examples tflite_micro_version "
    "agreement_with_litert_reference identical_outputs_to_litert_reference max_output_difference_steps fits_on "
    "check_seconds"
).split()


@dataclasses.dataclass
class TflmTarget:
    """``edge-fm bench --target tflm``: accuracy under TFLM, agreement with LiteRT's reference
    kernels, arena and flash; never latency (TFLM on this computer is not a microcontroller).

    Attributes:
        images: Test images run per artifact (None: all); TFLM takes up to ~70 ms an image here.
    """

    images: int | None = tflm.DEFAULT_CHECK_IMAGES

    name = "tflm"

    def check(self) -> None:
        """tflite-micro is installed (one clear error otherwise)."""
        tflm.load_runtime()

    def run(self, artifacts: list[Path], test_set: Path, options=None) -> dict[str, Any]:
        """Rows for ``artifacts`` on the test set the benchmark wrote; one failure is one error row."""
        tflm.load_runtime()  # a missing tflite-micro is one clear error, not one per row
        images, labels = runner.load_test_set(str(test_set))
        images, labels = images[: self.images], labels[: self.images]
        rows = [self.row(path, images, labels) for path in artifacts]
        environment = {
            "interpreter": "tflite-micro",
            "interpreter_version": tflm.tflm_version(),
            "reference": f"ai-edge-litert {tflm.package_version('ai-edge-litert')} reference kernels (BUILTIN_REF)",
            "cpu": platform.processor() or platform.machine(),
            "machine": platform.machine(),
            "os": f"{platform.system()} {platform.release()}",
            "python": platform.python_version(),
            "images_per_artifact": int(len(labels)),
            "latency": tflm.LATENCY_NOTE,
            "fits_on_note": tflm.FIT_NOTE,
        }
        return {"rows": rows, "environment": environment}

    def row(self, path: Path, images: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
        row: dict[str, Any] = {
            "artifact": runner.artifact_name(str(path)),
            "path": str(path),
            **runner.sidecar_description(str(path)),
            **runner.file_sizes(str(path)),
            "interpreter": "tflite-micro",
            "latency": None,
        }
        started = time.perf_counter()
        try:
            report = tflm.tflm_report(path, images, labels, "benchmark test set")
        except EdgeFMError as exc:
            return {**row, "status": "error", "error": str(exc)}
        except Exception as exc:  # noqa: BLE001 - one artifact's failure is its row, never the sweep's end
            return {**row, "status": "error", "error": f"{type(exc).__name__}: {exc}"}
        fields = {
            **report.as_dict(),
            "arena_min_bytes": report.arena.min_bytes if report.arena else None,
            "examples": report.images,
            "check_seconds": round(time.perf_counter() - started, 1),
        }
        row.update({key: fields[key] for key in _TFLM_ROW})
        if not report.runs_under_tflm:
            return {**row, "status": "error", "error": report.error}
        return {**row, "accuracy": report.accuracy, "status": "ok"}


def _ssh_target(text: str, options: dict[str, Any]) -> SshTarget:
    parts = urlsplit(text)
    try:
        port = parts.port
    except ValueError:
        port = -1
    if not parts.hostname or port == -1 or parts.path not in ("", "/"):
        raise EdgeFMError(f"target {text!r}: write ssh://user@host or ssh://user@host:port.")
    return SshTarget(
        host=parts.hostname,
        user=parts.username,
        port=port,
        identity=options["identity"],
        ssh_options=tuple(options["ssh_options"]),
        python=options["python"] or "python3",
        connect_timeout=options["connect_timeout"],
    )


def _tflm_target(text: str, options: dict[str, Any]) -> TflmTarget:
    images = options["tflm_images"]
    if images is not None and images < 1:
        raise EdgeFMError(f"--tflm-images {images}: give at least 1.")
    return TflmTarget(images=images or tflm.DEFAULT_CHECK_IMAGES)


def _vela_target(text: str, options: dict[str, Any]) -> Target:
    from edge_fm.bench.vela_target import VelaTarget

    return VelaTarget(text.split(":", 1)[1])


@dataclasses.dataclass(frozen=True)
class TargetKind:
    """One row of :data:`TARGETS`: a target's URL form and how to make it from the URL and options."""

    scheme: (
        str  # ``local``, ``tflm``: whole URLs; ``ssh``: ``ssh://user@host[:port]``; ``vela``: ``vela:CONFIG``
    )
    form: str  # the URL as a user writes it
    make: Callable[[str, dict[str, Any]], Target]


TARGETS: tuple[TargetKind, ...] = (
    TargetKind("local", "local", lambda text, options: LocalTarget()),
    TargetKind("ssh", "ssh://user@host[:port]", _ssh_target),
    TargetKind("tflm", "tflm", _tflm_target),
    TargetKind("vela", "vela:CONFIG", _vela_target),
)


def _shape(url: str) -> tuple[str, str]:
    """A URL's scheme and shape: ``ssh://...`` (``//``), ``vela:...`` (``:``), or a whole word (``""``)."""
    if "://" in url:
        return url.split("://", 1)[0], "//"
    if ":" in url:
        return url.split(":", 1)[0], ":"
    return url, ""


def parse_target(
    text: str,
    identity: str | None = None,
    ssh_options: tuple[str, ...] = (),
    python: str | None = None,
    connect_timeout: int = 10,
    tflm_images: int | None = None,
) -> Target:
    """``local``, ``ssh://user@host[:port]``, ``tflm`` (TensorFlow Lite for Microcontrollers here:
    accuracy, arena and flash, no latency; ``tflm_images`` test images per artifact), or ``vela:CONFIG``
    (Arm Vela's Ethos-U estimate for that configuration, e.g. ``vela:ethos-u55-128``).

    Raises:
        EdgeFMError: Any other form.
    """
    scheme = _shape(text)
    options = {
        "identity": identity,
        "ssh_options": ssh_options,
        "python": python,
        "connect_timeout": connect_timeout,
        "tflm_images": tflm_images,
    }
    for kind in TARGETS:
        if _shape(kind.form) == scheme:
            return kind.make(text, options)
    forms = [f"`{kind.form}`" for kind in TARGETS]
    raise EdgeFMError(
        f"target {text!r}: use {', '.join(forms[:-1])} or {forms[-1]} (e.g. vela:ethos-u55-128)."
    )


def target_options(target: Target) -> dict[str, Any]:
    """The options of :func:`parse_target` that make ``target`` again from its name: what a stopped
    pipeline records so that it resumes on the same device, reached the same way. Files (the key, an
    ``-o UserKnownHostsFile=...``) are recorded as absolute paths, so a resume from another folder finds them."""
    if isinstance(target, SshTarget):
        identity = _absolute(target.identity) if target.identity else None
        return {
            "identity": identity,
            "ssh_options": [_absolute_file_option(option) for option in target.ssh_options],
            "python": target.python,
            "connect_timeout": target.connect_timeout,
        }
    if isinstance(target, TflmTarget):
        return {"tflm_images": target.images}
    return {}


# ssh -o options whose value is a file: recorded absolute, so that a resume from another folder finds it.
_FILE_OPTIONS = ("identityfile", "userknownhostsfile", "globalknownhostsfile", "certificatefile")


def _absolute(path: str) -> str:
    return str(Path(path).expanduser().absolute())  # ssh expands ~ itself; a record read elsewhere cannot


def _absolute_file_option(option: str) -> str:
    key, sep, value = option.partition("=")
    if sep and key.strip().lower() in _FILE_OPTIONS and value and value.lower() != "none":
        return f"{key}={_absolute(value)}"
    return option


def last_line(text: str) -> str:
    """The last non-empty line of a command's output (its error, usually)."""
    lines = [line.strip() for line in (text or "").strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no output"

"""The benchmark stage: the device runner on a target, and its JSON turned into a table.

Targets:
    ``local``: the runner (``edge_fm/runner.py``) in child processes of this machine's Python.
    ``ssh://user@host[:port]``: the runner, the artifacts and the test set are copied to a
    temporary folder on the host, run there with the host's ``python3`` (which needs only
    ``numpy`` and ``ai-edge-litert``), and removed afterwards.

Several devices at once (:func:`bench_fleet`): one thread per device, so a device never runs
two benchmarks at once; each row names its ``target``.

Example:
    >>> result = bench(["runs/cnn-2conv-int8-1"], target="local", options=BenchOptions(threads=(1, 2)))  # doctest: +SKIP
    >>> fleet = bench_fleet(["models/"], ["ssh://pi@pi-a.local", "ssh://pi@pi-b.local"])  # doctest: +SKIP
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import shlex
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from edge_fm import runner
from edge_fm.errors import EdgeFMError

TEST_SET_FILE = "test.npz"


@dataclasses.dataclass(frozen=True)
class BenchOptions:
    """How the runner measures (the defaults are the runner's own, ``runner.DEFAULTS``).

    Attributes:
        threads: Interpreter thread counts; one row per artifact and count.
        runs: Minimum number of timed batch-1 runs.
        min_seconds: Minimum timed duration; timing goes on until both minima are reached.
        max_seconds: Timing stops after this long whatever the count.
        warmup: Untimed runs after the first inference.
        batch_size: Batch of the accuracy pass.
        artifact_timeout: Seconds before one measurement is abandoned (an error row).
        accuracy_threads: Threads of the accuracy pass (0: every core).
    """

    threads: tuple[int, ...] = tuple(runner.parse_threads(runner.DEFAULTS.threads))
    runs: int = runner.DEFAULTS.runs
    min_seconds: float = runner.DEFAULTS.min_seconds
    max_seconds: float = runner.DEFAULTS.max_seconds
    warmup: int = runner.DEFAULTS.warmup
    batch_size: int = runner.DEFAULTS.batch_size
    artifact_timeout: float = runner.DEFAULTS.artifact_timeout
    accuracy_threads: int = runner.DEFAULTS.accuracy_threads

    def __post_init__(self):
        if not self.threads or min(self.threads) < 1:
            raise EdgeFMError(f"--threads {','.join(map(str, self.threads))}: give positive thread counts, e.g. 1,4.")
        limits = (("--runs", self.runs, 1), ("--warmup", self.warmup, 0), ("--min-seconds", self.min_seconds, 0),
                  ("batch size", self.batch_size, 1))
        for option, value, low in limits:
            if value < low:
                raise EdgeFMError(f"{option} {value}: must be at least {low}.")
        if self.max_seconds <= 0:
            raise EdgeFMError(f"--max-seconds {self.max_seconds}: must be more than 0.")

    def runner_args(self) -> list[str]:
        return ["--threads", ",".join(map(str, self.threads)), "--runs", str(self.runs),
                "--min-seconds", str(self.min_seconds), "--max-seconds", str(self.max_seconds),
                "--warmup", str(self.warmup), "--batch-size", str(self.batch_size),
                "--artifact-timeout", str(self.artifact_timeout), "--accuracy-threads", str(self.accuracy_threads)]

    def as_runner_options(self) -> dict[str, Any]:
        return {"runs": self.runs, "min_seconds": self.min_seconds, "max_seconds": self.max_seconds,
                "warmup": self.warmup, "batch_size": self.batch_size, "artifact_timeout": self.artifact_timeout,
                "accuracy_threads": self.accuracy_threads}

    def worst_case_seconds(self, artifacts: int) -> float:
        """An upper bound for a whole runner invocation, used as the SSH run timeout."""
        return 60.0 + artifacts * len(self.threads) * (self.max_seconds + 120.0)


# ---------------------------------------------------------------- inputs


def parse_threads(text: str) -> tuple[int, ...]:
    """``"1,4"`` -> ``(1, 4)``.

    Raises:
        EdgeFMError: Not a comma-separated list of positive integers.
    """
    try:
        return tuple(runner.parse_threads(text))
    except runner.RunnerError as exc:
        raise EdgeFMError(str(exc)) from None


def collect_artifacts(paths: list[Path | str]) -> list[Path]:
    """The .tflite files named by ``paths``: files as they are, folders searched recursively.

    Raises:
        EdgeFMError: A path does not exist, or holds no .tflite file (a training run, say).
    """
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_file() and path.suffix == ".tflite":
            found.append(path)
        elif path.is_file():
            raise EdgeFMError(f"{path} is not a .tflite file: pass an artifact, an export bundle or a folder of them.")
        elif path.is_dir():
            inside = sorted(p for p in path.rglob("*.tflite") if not p.name.startswith(".tmp-"))
            if not inside:
                hint = (f"it is a run, not an export: `edge-fm export {path} -f int8` makes one, or pass it as --baseline"
                        if (path / "config.json").exists() else "pass export bundles or .tflite files")
                raise EdgeFMError(f"{path} holds no .tflite artifact: {hint}.")
            found.extend(inside)
        else:
            raise EdgeFMError(f"{path} does not exist: pass .tflite files, export bundles (runs/<arch>-int8-N) or a folder of them.")
    unique = list(dict.fromkeys(p.resolve() for p in found))
    return unique


def write_test_set(path: Path, data_dir: Path | str | None = None, sample: bool = False) -> dict[str, Any]:
    """Writes the test images and labels as a compact .npz for the runner and describes them."""
    from edge_fm import data

    source = data.SAMPLE_DIR if sample else data_dir
    images, labels = data.load_split("test", source)
    np.savez_compressed(path, images=images.reshape(-1, 28, 28).astype(np.uint8), labels=labels.astype(np.uint8))
    what = (f"embedded sample test images ({len(labels)}); NOT the Fashion-MNIST test set" if sample
            else f"Fashion-MNIST test split ({len(labels)} images)")
    return {"source": what, "images": int(len(labels)), "sample": sample, "sha256": data.split_sha256(images, labels)}


# ---------------------------------------------------------------- targets


@dataclasses.dataclass
class LocalTarget:
    """The runner in child processes of this machine's Python."""

    python: str = sys.executable

    name = "local"

    def run(self, artifacts: list[Path], test_set: Path, options: BenchOptions) -> dict[str, Any]:
        command = [self.python, runner.__file__, *map(str, artifacts), "--test-data", str(test_set),
                   *options.runner_args(), "--json", "-"]
        done = subprocess.run(command, capture_output=True, text=True, timeout=options.worst_case_seconds(len(artifacts)))
        if done.returncode != 0:
            raise EdgeFMError(f"the runner failed locally: {_last_line(done.stderr)}")
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

    @property
    def name(self) -> str:
        return f"ssh://{self.user + '@' if self.user else ''}{self.host}{':' + str(self.port) if self.port else ''}"

    @property
    def where(self) -> str:
        return f"{self.user + '@' if self.user else ''}{self.host}{':' + str(self.port) if self.port else ''}"

    def ssh_command(self, remote: str) -> list[str]:
        command = ["ssh", "-o", "BatchMode=yes", "-o", f"ConnectTimeout={self.connect_timeout}",
                   "-o", "ServerAliveInterval=15", "-o", "ServerAliveCountMax=4"]
        # Host-key checking stays on unless the caller's own options say otherwise.
        if not any(o.lower().startswith("stricthostkeychecking") for o in self.ssh_options):
            command += ["-o", "StrictHostKeyChecking=yes"]
        for option in self.ssh_options:
            command += ["-o", option]
        if self.identity:
            command += ["-i", str(self.identity), "-o", "IdentitiesOnly=yes"]
        if self.port:
            command += ["-p", str(self.port)]
        command += [f"{self.user}@{self.host}" if self.user else self.host, "--", remote]
        return command

    def call(self, remote: str, timeout: float, stdin: bytes | None = None) -> subprocess.CompletedProcess:
        """Runs ``remote`` (a shell command line) on the host; connection problems raise."""
        try:
            done = subprocess.run(self.ssh_command(remote), input=stdin, capture_output=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise EdgeFMError(f"{self.where} did not finish within {timeout:.0f} s: check the host, or raise --max-seconds / --ssh-timeout.") from None
        except FileNotFoundError:
            raise EdgeFMError("the OpenSSH client `ssh` is not installed here: install it (apt-get install openssh-client).") from None
        if done.returncode == 255:
            raise EdgeFMError(self.explain_ssh_failure(done.stderr.decode(errors="replace")))
        return done

    def explain_ssh_failure(self, stderr: str) -> str:
        """One line naming what went wrong with the connection and how to fix it."""
        text = stderr.lower()
        if "connection refused" in text:
            return f"cannot reach {self.where}: connection refused (is sshd running there, and is the port right?)."
        if "timed out" in text or "no route" in text or "could not resolve" in text or "network is unreachable" in text:
            return f"cannot reach {self.where}: {_last_line(stderr)} (check the address and that the host is up)."
        if "host key verification failed" in text or "host key for" in text:
            return (f"the host key of {self.host} is not known (or has changed): connect once with `ssh "
                    f"{'-p ' + str(self.port) + ' ' if self.port else ''}{self.user + '@' if self.user else ''}{self.host}` "
                    "to check and accept it; host-key checking stays on.")
        if "permission denied" in text:
            return (f"{self.where} refused the key: add your public key to ~/.ssh/authorized_keys on the host "
                    f"(`ssh-copy-id {self.user + '@' if self.user else ''}{self.host}`) or pass --ssh-key.")
        return f"ssh to {self.where} failed: {_last_line(stderr)}"

    def run(self, artifacts: list[Path], test_set: Path, options: BenchOptions) -> dict[str, Any]:
        quick = self.connect_timeout + 30
        probe = self.call(f"{self.python} -c 'import sys; print(sys.version_info[0])'", timeout=quick)
        if probe.returncode != 0 or probe.stdout.strip() != b"3":
            raise EdgeFMError(f"{self.python} (Python 3) not found on {self.host}: install it (`sudo apt install python3`) or pass --remote-python.")
        made = self.call('mktemp -d "${TMPDIR:-/tmp}/edge-fm-bench.XXXXXX"', timeout=quick)
        remote_dir = made.stdout.decode().strip()
        if made.returncode != 0 or not remote_dir.startswith("/"):
            raise EdgeFMError(f"could not make a temporary folder on {self.host}: {_last_line(made.stderr.decode())}")
        try:
            names = _remote_names(artifacts)
            self.upload(remote_dir, _payload(artifacts, names, test_set), timeout=quick + 300)
            command = " ".join([
                "cd", shlex.quote(remote_dir), "&&", self.python, "runner.py",
                *(shlex.quote(f"{name}/model.tflite") for name in names),
                "--test-data", TEST_SET_FILE, *map(shlex.quote, options.runner_args()), "--json", "-",
            ])
            done = self.call(command, timeout=options.worst_case_seconds(len(artifacts)))
            if done.returncode != 0:
                message = _last_line(done.stderr.decode(errors="replace")).removeprefix("error: ")
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
            raise EdgeFMError(f"could not copy the artifacts to {self.host}: {_last_line(done.stderr.decode())}")


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
            tar.add(path, arcname=f"{name}/model.tflite")
            sidecar = path.with_name("model.json")
            if path.name == "model.tflite" and sidecar.exists():
                tar.add(sidecar, arcname=f"{name}/model.json")
    return buffer.getvalue()


def parse_target(text: str, identity: str | None = None, ssh_options: tuple[str, ...] = (), python: str | None = None,
                 connect_timeout: int = 10, tflm_images: int | None = None):
    """``local``, ``ssh://user@host[:port]``, ``tflm`` (TensorFlow Lite for Microcontrollers here:
    accuracy, arena and flash, no latency; ``tflm_images`` test images per artifact), or
    ``vela:CONFIG`` (Arm Vela's Ethos-U estimate for that configuration, see ``edge_fm.vela``).

    Raises:
        EdgeFMError: Any other form.
    """
    if text == "local":
        return LocalTarget()
    if text == "tflm":
        from edge_fm.mcu import DEFAULT_CHECK_IMAGES, TflmTarget

        if tflm_images is not None and tflm_images < 1:
            raise EdgeFMError(f"--tflm-images {tflm_images}: give at least 1.")
        return TflmTarget(images=tflm_images or DEFAULT_CHECK_IMAGES)
    if text.startswith("vela:"):
        from edge_fm.vela import VelaTarget

        return VelaTarget(text.removeprefix("vela:"))
    if text.startswith("ssh://"):
        parts = urlsplit(text)
        try:
            port = parts.port
        except ValueError:
            port = -1
        if not parts.hostname or port == -1 or parts.path not in ("", "/"):
            raise EdgeFMError(f"target {text!r}: write ssh://user@host or ssh://user@host:port.")
        return SshTarget(host=parts.hostname, user=parts.username, port=port, identity=identity,
                         ssh_options=tuple(ssh_options), python=python or "python3", connect_timeout=connect_timeout)
    raise EdgeFMError(f"target {text!r}: use `local`, `ssh://user@host[:port]`, `tflm` or `vela:CONFIG` (e.g. vela:ethos-u55-128).")


# ---------------------------------------------------------------- the Keras baseline


def measure_keras_baseline(run_dir: Path | str, test_set: Path, options: BenchOptions) -> list[dict[str, Any]]:
    """Rows for a run's Keras model measured through TensorFlow, in a child process (like the
    runner's), one per thread count, so the gain of the TFLite artifacts is visible."""
    from edge_fm.runs import require_run

    run_dir = require_run(run_dir)
    rows = []
    for threads in options.threads:
        command = [sys.executable, "-m", "edge_fm.bench", "--keras-baseline", str(run_dir), str(test_set), str(threads),
                   json.dumps(options.as_runner_options())]
        done = subprocess.run(command, capture_output=True, text=True, timeout=options.worst_case_seconds(1) + 120)
        if done.returncode == 0:
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        else:
            rows.append({"artifact": f"{run_dir.name} (keras)", "format": "keras", "threads": threads, "path": str(run_dir),
                         "status": "error", "error": _last_line(done.stderr)})
    return rows


def _keras_baseline_row(run_dir: str, test_set: str, threads: int, options: dict[str, Any]) -> dict[str, Any]:
    from edge_fm.compat import tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    from edge_fm.runs import Run

    run = Run(run_dir)
    images, labels = runner.load_test_set(test_set)
    model_path = run.model_path
    row: dict[str, Any] = {"artifact": f"{Path(run_dir).name} (keras)", "format": "keras", "path": run_dir, "threads": threads,
                           **runner.file_sizes(str(model_path)), "rss_before_model_mb": runner.current_rss_mb()}
    t0 = time.perf_counter()
    model = run.model()
    # A traced function is what a fair TensorFlow deployment would call (not eager Python).
    call = tf.function(lambda x: model(x, training=False), input_signature=[tf.TensorSpec([1, 28, 28, 1], tf.float32)])
    one = tf.constant(images[:1].reshape(1, 28, 28, 1).astype(np.float32))
    row["init_ms"] = (time.perf_counter() - t0) * 1000.0
    t0 = time.perf_counter()
    call(one).numpy()
    row["first_inference_ms"] = (time.perf_counter() - t0) * 1000.0
    for _ in range(options["warmup"]):
        call(one).numpy()
    timings = runner.time_invocations(lambda: call(one).numpy(), options["runs"], options["min_seconds"], options["max_seconds"])
    row["latency"] = runner.summarize_latency(timings)
    row["peak_rss_mb"] = runner.peak_rss_mb()
    t0 = time.perf_counter()
    probs = model.predict(images.reshape(-1, 28, 28, 1).astype(np.float32), batch_size=options["batch_size"], verbose=0)
    row["accuracy_seconds"] = time.perf_counter() - t0
    predicted = probs.argmax(axis=1)
    row.update(accuracy=float(np.mean(predicted == labels)), examples=int(len(labels)),
               confusion_matrix=runner.confusion_matrix(labels, predicted, probs.shape[1]), status="ok",
               interpreter=f"tensorflow {tf.__version__}")
    return row


# ---------------------------------------------------------------- the stage


def bench(
    paths: list[Path | str],
    target: str | LocalTarget | SshTarget = "local",
    options: BenchOptions = BenchOptions(),
    baseline: Path | str | None = None,
    data_dir: Path | str | None = None,
    sample: bool = False,
) -> dict[str, Any]:
    """Measures artifacts on a target and returns the result document (see :func:`write_results`).

    Args:
        paths: .tflite files, export bundles, or folders of them (``models/``).
        target: ``local``, ``ssh://user@host[:port]`` or a target object.
        options: How to measure.
        baseline: A training or optimization run whose Keras model is measured locally through
            TensorFlow and used as the float reference for the accuracy change.
        data_dir: Where the Fashion-MNIST test split is.
        sample: Use the embedded sample's test images instead (labelled as such).

    Raises:
        EdgeFMError: No artifacts, missing data, or a target that cannot be used (each with a fix).
    """
    artifacts = collect_artifacts(paths)
    target = parse_target(target) if isinstance(target, str) else target
    if baseline:
        from edge_fm.runs import Run  # loads TensorFlow: only when a baseline is asked for

        Run(baseline).require_model()  # a wrong --baseline is refused before any measuring
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="edge-fm-bench-") as tmp:
        test_set = Path(tmp) / TEST_SET_FILE
        if getattr(target, "needs_test_set", True):
            test_info = write_test_set(test_set, data_dir, sample)
        else:  # a compiler's estimate (vela:CONFIG) reads no image
            test_info = {"source": "none (an estimate needs no images)", "images": 0, "sample": False}
        result = target.run(artifacts, test_set, options)
        baseline_rows = measure_keras_baseline(baseline, test_set, options) if baseline else []
    rows = baseline_rows + result["rows"]
    reference = add_accuracy_deltas(rows)
    return {
        "target": target.name,
        "environment": result["environment"],
        "test_set": test_info,
        "options": dataclasses.asdict(options),
        "reference": reference,
        "rows": rows,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "seconds": round(time.time() - started, 1),
    }


def bench_fleet(
    paths: list[Path | str],
    targets: list[str | Any],
    options: BenchOptions = BenchOptions(),
    baseline: Path | str | None = None,
    data_dir: Path | str | None = None,
    sample: bool = False,
) -> dict[str, Any]:
    """Measures the same artifacts on several devices at once and returns one result with a row
    per artifact, thread count and device (its ``target``).

    Each device has one thread of its own, so a device never runs two benchmarks at once and its
    timings stay clean. A device that fails (unreachable, no Python, a runner error) gets an error
    row per artifact and the others go on.

    Args:
        paths: .tflite files, export bundles, or folders of them.
        targets: Two or more of ``local``, ``ssh://user@host[:port]`` or target objects.
        options: How to measure, the same on every device.
        baseline: A run whose Keras model is measured here (once, after the devices), the float
            reference of every device's accuracy change.
        data_dir: Where the Fashion-MNIST test split is.
        sample: Use the embedded sample's test images instead (labelled as such).

    Raises:
        EdgeFMError: No artifacts, missing data, a malformed target, or the same device given twice.
    """
    from concurrent.futures import ThreadPoolExecutor

    artifacts = collect_artifacts(paths)
    targets = [parse_target(t) if isinstance(t, str) else t for t in targets]
    names = [t.name for t in targets]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise EdgeFMError(f"--target {twice[0]} is given twice: a device runs one benchmark at a time; give it once.")
    if baseline:
        from edge_fm.runs import Run  # loads TensorFlow: only when a baseline is asked for

        Run(baseline).require_model()
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="edge-fm-bench-") as tmp:
        test_set = Path(tmp) / TEST_SET_FILE
        if getattr(target, "needs_test_set", True):
            test_info = write_test_set(test_set, data_dir, sample)
        else:  # a compiler's estimate (vela:CONFIG) reads no image
            test_info = {"source": "none (an estimate needs no images)", "images": 0, "sample": False}
        with ThreadPoolExecutor(max_workers=len(targets), thread_name_prefix="edge-fm-device") as pool:
            measured = list(pool.map(lambda target: _measure_device(target, artifacts, test_set, options), targets))
        # Measured here after the devices, so it never competes with a local device for the cores.
        baseline_rows = measure_keras_baseline(baseline, test_set, options) if baseline else []
    rows, environments, errors, references = [], {}, {}, {}
    for target, (result, error) in zip(targets, measured):
        device_rows = result["rows"] if result else _device_error_rows(artifacts, error)
        for row in device_rows:
            row["target"] = target.name
        references[target.name] = add_accuracy_deltas([dict(r) for r in baseline_rows] + device_rows)
        rows += device_rows
        environments[target.name] = result["environment"] if result else None
        if error:
            errors[target.name] = error
    for row in baseline_rows:
        row["target"] = "local"
    return {
        "target": ", ".join(names),
        "targets": names,
        "environment": {},
        "environments": environments,
        "errors": errors,
        "test_set": test_info,
        "options": dataclasses.asdict(options),
        "reference": baseline_rows[0]["artifact"] if baseline_rows else None,
        "references": references,
        "rows": baseline_rows + rows,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "seconds": round(time.time() - started, 1),
    }


def _measure_device(target, artifacts: list[Path], test_set: Path, options: BenchOptions) -> tuple[dict | None, str | None]:
    """One device's result, or its error: nothing a device does stops the others."""
    try:
        return target.run(artifacts, test_set, options), None
    except EdgeFMError as exc:
        return None, str(exc)
    except Exception as exc:  # noqa: BLE001 - a device's unforeseen failure is its error rows, not the fleet's end
        return None, f"{type(exc).__name__}: {exc}"


def _device_error_rows(artifacts: list[Path], error: str) -> list[dict[str, Any]]:
    return [{"artifact": runner.artifact_name(str(path)), "format": runner.sidecar_description(str(path)).get("format"),
             "path": str(path), "status": "error", "error": error} for path in artifacts]


def compare_devices(result: dict[str, Any]) -> dict[str, Any]:
    """The fleet's rows as artifacts x devices at the first thread count (and the Keras baseline left out).

    Returns:
        ``{"devices": [names], "threads": n, "artifacts": [{"artifact", "format", "path", "cells":
        {device: {"status", "accuracy", "p50_ms", "error"}}}]}``; a device without a row for an
        artifact has no cell.
    """
    threads = result.get("options", {}).get("threads", [1])[0]
    devices = list(result.get("targets") or dict.fromkeys(r.get("target") for r in result["rows"]))
    by_path: dict[str, dict[str, Any]] = {}
    for row in result["rows"]:
        if row.get("format") == "keras" or row.get("threads") not in (None, threads):
            continue
        entry = by_path.setdefault(row.get("path") or row["artifact"], {
            "artifact": row["artifact"], "format": row.get("format"), "path": row.get("path"), "cells": {}})
        entry["cells"][row.get("target")] = {
            "status": row.get("status"), "accuracy": row.get("accuracy"),
            "p50_ms": (row.get("latency") or {}).get("p50_ms"), "error": row.get("error")}
    return {"devices": devices, "threads": threads, "artifacts": list(by_path.values())}


def add_accuracy_deltas(rows: list[dict[str, Any]]) -> str | None:
    """Sets each row's ``accuracy_delta`` against the float reference and returns its name.

    The reference is the Keras baseline if there is one, else the first fp32 artifact.
    """
    ok = [r for r in rows if r.get("status") == "ok"]
    reference = next((r for r in ok if r.get("format") == "keras"), None) or next((r for r in ok if r.get("format") == "fp32"), None)
    for row in rows:
        if reference and row.get("status") == "ok":
            row["accuracy_delta"] = row["accuracy"] - reference["accuracy"]
    return reference["artifact"] if reference else None


def best_artifact(rows: list[dict[str, Any]], tolerance: float = 0.005) -> dict[str, Any] | None:
    """The smallest artifact whose accuracy is within ``tolerance`` of the most accurate one."""
    ok = [r for r in rows if r.get("status") == "ok" and r.get("format") != "keras"]
    if not ok:
        return None
    top = max(r["accuracy"] for r in ok)
    return min((r for r in ok if r["accuracy"] >= top - tolerance), key=lambda r: (r["bytes"], -r["accuracy"]))


def below_min_accuracy(rows: list[dict[str, Any]], minimum: float) -> list[str]:
    """Artifacts that fail a ``--min-accuracy`` gate (errors fail it too)."""
    failing = []
    for row in rows:
        if row.get("status") != "ok":
            failing.append(f"{row['artifact']} ({row.get('error', 'error')})")
        elif row["accuracy"] < minimum:
            failing.append(f"{row['artifact']} ({row['accuracy']:.2%})")
    return list(dict.fromkeys(failing))


CSV_COLUMNS = ("artifact", "format", "threads", "bytes", "gzip_bytes", "accuracy", "accuracy_delta", "p50_ms", "p90_ms",
               "p99_ms", "mean_ms", "std_ms", "images_per_second", "init_ms", "peak_rss_mb", "status", "error", "path")


def flat_row(row: dict[str, Any]) -> dict[str, Any]:
    """A row with the latency figures lifted to the top level (for CSV and tables)."""
    flat = {k: v for k, v in row.items() if k != "latency"}
    for key, value in (row.get("latency") or {}).items():
        flat[key] = value
    return flat


def write_results(result: dict[str, Any], json_path: Path | str | None = None, csv_path: Path | str | None = None) -> None:
    """Writes the result as JSON and/or CSV (atomically)."""
    from edge_fm.io import write_bytes_atomic, write_json

    if json_path:
        write_json(Path(json_path), result)
    if csv_path:
        text = io.StringIO()
        # A fleet's rows say which device measured them: that column comes first.
        columns = ("target", *CSV_COLUMNS) if any("target" in row for row in result["rows"]) else CSV_COLUMNS
        writer = csv.DictWriter(text, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for row in result["rows"]:
            writer.writerow(flat_row(row))
        write_bytes_atomic(Path(csv_path), text.getvalue().encode())


def _last_line(text: str) -> str:
    lines = [line.strip() for line in (text or "").strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


def _main(argv: list[str]) -> int:
    # The child side of measure_keras_baseline.
    if len(argv) == 5 and argv[0] == "--keras-baseline":
        from edge_fm.compat import native_stderr_silenced

        with native_stderr_silenced():
            row = _keras_baseline_row(argv[1], argv[2], int(argv[3]), json.loads(argv[4]))
        print(json.dumps(row, default=float))
        return 0
    print("usage: python -m edge_fm.bench --keras-baseline RUN TEST_NPZ THREADS OPTIONS_JSON", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))

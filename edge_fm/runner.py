"""The device runner: accuracy, latency and memory of TFLite artifacts, with nothing but the
standard library, numpy and a TFLite interpreter.

This module is self-contained on purpose: it is copied as a single file to devices such as a
Raspberry Pi where TensorFlow is not installed, and run there as a script. The interpreter comes
from ``ai_edge_litert`` (LiteRT), else ``tflite_runtime``, else ``tensorflow.lite``.

What it measures follows TensorFlow Lite's ``benchmark_model``: init time, first inference,
warm-up runs, then timed runs at batch 1 until both a minimum count and a minimum duration are
reached (capped by a maximum duration), reported as mean, std, min, p50, p90, p99 and images/s;
plus accuracy and the confusion matrix over a whole test set, peak resident memory, and the size
of the file (bytes and gzip bytes).

Each (artifact, thread count) is measured in a child process of its own, so the memory figure is
that of one model and a crashing artifact becomes an error row instead of ending the table.

Usage on a device:
    pip install ai-edge-litert numpy
    python3 runner.py model.tflite other.tflite --test-data test.npz --threads 1,4 --json result.json
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gzip
import hashlib
import importlib
import json
import math
import os
import platform
import struct
import subprocess
import sys
import time

try:
    import numpy as np
except ImportError:  # reported as a clean error by main(); importers of this module have numpy
    np = None

RUNNER_VERSION = "2"  # 2: memory figures in MB of 1,000,000 bytes (1: MiB)
INTERPRETER_PACKAGES = ("ai_edge_litert.interpreter", "tflite_runtime.interpreter", "tensorflow.lite")
# Exit codes a host side maps to fixes: the runtime is missing / the arguments are wrong.
EXIT_MISSING_RUNTIME = 3
EXIT_BAD_INPUT = 2
MISSING_RUNTIME_FIX = "pip install ai-edge-litert numpy"


@dataclasses.dataclass(frozen=True)
class MeasureDefaults:
    """How each artifact is measured unless told otherwise (the habits of TFLite's ``benchmark_model``).

    The one source of these numbers: this file's command line, ``edge_fm.bench.benchmark.BenchOptions`` and
    the options of ``edge-fm bench`` and ``edge-fm pipeline`` all read :data:`DEFAULTS`.
    """

    threads: str = "1"  # interpreter thread counts, comma-separated; one row per artifact and count
    runs: int = 100  # minimum timed batch-1 runs
    min_seconds: float = 1.0  # minimum timed seconds; timing goes on until both minima are reached
    max_seconds: float = 60.0  # timing stops after this long whatever the count
    warmup: int = 10  # untimed runs after the first inference
    batch_size: int = 256  # batch of the accuracy pass
    accuracy_threads: int = 0  # threads of the accuracy pass (0: every core)
    artifact_timeout: float = 900.0  # seconds before one measurement is abandoned (an error row)


DEFAULTS = MeasureDefaults()


class RunnerError(Exception):
    """A problem with an artifact, the test data or the runtime, with a message naming the fix."""


# ---------------------------------------------------------------- the interpreter


def interpreter_modules() -> tuple[str, ...]:
    """Interpreter modules to try, in order; ``EDGE_FM_INTERPRETERS`` (comma list) overrides them."""
    override = os.environ.get("EDGE_FM_INTERPRETERS")
    return tuple(m for m in override.split(",") if m) if override else INTERPRETER_PACKAGES


def load_interpreter_class():
    """Returns ``(Interpreter class, package name, version)`` from the first package available.

    Raises:
        RunnerError: None of the interpreter packages is installed.
    """
    for module_name in interpreter_modules():
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        package = module_name.split(".")[0]
        return module.Interpreter, package, _package_version(package)
    raise RunnerError(f"no TFLite interpreter found for {sys.executable}: run `{MISSING_RUNTIME_FIX}`.")


def _package_version(package: str) -> str:
    try:
        from importlib.metadata import version

        return version(
            {"ai_edge_litert": "ai-edge-litert", "tflite_runtime": "tflite-runtime"}.get(package, package)
        )
    except Exception:  # noqa: BLE001 - a version is informative only
        return "unknown"


@contextlib.contextmanager
def native_stderr_silenced():
    """Hides what native code writes to stderr (fd 2) inside the block; Python exceptions are unaffected.

    TensorFlow's C++ start-up lines (oneDNN, CUDA probing), the TFLite converter's summaries and
    LiteRT's delegate notices go straight to fd 2, past Python, so no logging setting hides them;
    they would break the promise of one clear line on errors.
    """
    try:
        fd = sys.stderr.fileno()
        sys.stderr.flush()
        saved = os.dup(fd)
    except (AttributeError, ValueError, OSError):
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    try:
        yield
    finally:
        os.dup2(saved, fd)
        os.close(saved)
        os.close(devnull)


class TFLiteModel:
    """A loaded .tflite classifier that takes raw uint8 28x28 images and returns probabilities.

    Quantized inputs are quantized with the model's own scale and zero point, quantized outputs
    dequantized, so callers never see the integer details.
    """

    def __init__(
        self,
        model_path: str | None = None,
        model_content: bytes | None = None,
        num_threads: int | None = None,
    ):
        interpreter_class, self.package, self.package_version = load_interpreter_class()
        try:
            with native_stderr_silenced():  # LiteRT's "Created ... XNNPACK delegate" notice
                self.interpreter = interpreter_class(
                    model_path=model_path, model_content=model_content, num_threads=num_threads
                )
                self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise RunnerError(
                f"{model_path or 'model'}: not a loadable TFLite model ({_first_line(exc)})."
            ) from None
        self.input = self.interpreter.get_input_details()[0]
        self.output = self.interpreter.get_output_details()[0]
        self.batch = int(self.input["shape"][0])

    def _resize(self, batch: int) -> None:
        if batch != self.batch:
            shape = list(self.input["shape"])
            shape[0] = batch
            self.interpreter.resize_tensor_input(self.input["index"], shape)
            self.interpreter.allocate_tensors()
            self.input = self.interpreter.get_input_details()[0]
            self.output = self.interpreter.get_output_details()[0]
            self.batch = batch

    def quantize_input(self, images: np.ndarray) -> np.ndarray:
        """Raw 0-255 pixels (see :func:`model_pixels`) -> the model's input dtype (quantized with its
        scale/zero point)."""
        dtype = self.input["dtype"]
        images = model_pixels(images, self.input["shape"][1:])
        scale, zero_point = self.input["quantization"]
        if np.issubdtype(dtype, np.integer) and scale:
            info = np.iinfo(dtype)
            return np.clip(np.round(images / scale + zero_point), info.min, info.max).astype(dtype)
        return images.astype(dtype)

    def dequantize_output(self, values: np.ndarray) -> np.ndarray:
        """The model's raw output -> float probabilities."""
        scale, zero_point = self.output["quantization"]
        if np.issubdtype(values.dtype, np.integer) and scale:
            return (values.astype(np.float32) - zero_point) * scale
        return values.astype(np.float32)

    def invoke(self, model_input: np.ndarray) -> np.ndarray:
        """Runs one already-quantized batch and returns the raw output."""
        self._resize(len(model_input))
        self.interpreter.set_tensor(self.input["index"], model_input)
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self.output["index"])

    def predict_proba(self, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """Class probabilities for raw uint8 images ``(N, 28, 28[, 1])``, batched where the model allows."""
        images = np.asarray(images)
        outputs = []
        for start in range(0, len(images), batch_size):
            chunk = self.quantize_input(images[start : start + batch_size])
            try:
                outputs.append(self.dequantize_output(self.invoke(chunk)))
            except (ValueError, RuntimeError):
                # Some graphs fix the batch size at 1; fall back to one image at a time.
                outputs.append(
                    np.concatenate(
                        [self.dequantize_output(self.invoke(chunk[i : i + 1])) for i in range(len(chunk))]
                    )
                )
                batch_size = 1
        return np.concatenate(outputs) if outputs else np.zeros((0, self.output["shape"][-1]), np.float32)


# ---------------------------------------------------------------- test data


def load_test_set(path: str) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 28, 28) uint8 and labels (N,) from a .npz (``images``, ``labels``) or a folder
    holding the t10k IDX files (gzip or raw).

    Raises:
        RunnerError: The file is missing or not a test set.
    """
    if os.path.isdir(path):
        return _read_idx(_find(path, "t10k-images-idx3-ubyte")), _read_idx(
            _find(path, "t10k-labels-idx1-ubyte")
        )
    if not os.path.isfile(path):
        raise RunnerError(
            f"test data {path} not found: pass a .npz with images and labels, or the folder of the t10k IDX files."
        )
    try:
        with np.load(path) as archive:
            images, labels = archive["images"], archive["labels"]
    except (OSError, ValueError, KeyError) as exc:
        raise RunnerError(
            f"test data {path} is not a .npz with 'images' and 'labels' ({_first_line(exc)})."
        ) from None
    if len(images) != len(labels) or images.dtype != np.uint8:
        raise RunnerError(
            f"test data {path}: expected uint8 images and as many labels ({len(images)} vs {len(labels)})."
        )
    return images, labels.astype(np.int64)


def _find(folder: str, stem: str) -> str:
    for name in (stem + ".gz", stem):
        if os.path.isfile(os.path.join(folder, name)):
            return os.path.join(folder, name)
    raise RunnerError(f"{folder} has no {stem}[.gz]: pass the folder of the Fashion-MNIST test files.")


def _read_idx(path: str) -> np.ndarray:
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as handle:
            raw = handle.read()
        zero, dtype_code, ndim = struct.unpack(">HBB", raw[:4])
        shape = struct.unpack(">" + "I" * ndim, raw[4 : 4 + 4 * ndim])
        if zero != 0 or dtype_code != 0x08:
            raise ValueError("bad magic number")
        body = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
        return body.reshape(shape)
    except (OSError, ValueError, struct.error, EOFError) as exc:
        raise RunnerError(f"{path}: not a valid IDX file ({_first_line(exc)}).") from None


# ---------------------------------------------------------------- measurements


def percentile(sorted_values: list[float], q: float) -> float:
    """The q-th percentile (0-100) of sorted values, by linear interpolation (numpy's default)."""
    if not sorted_values:
        return float("nan")
    rank = (len(sorted_values) - 1) * q / 100.0
    low, high = math.floor(rank), math.ceil(rank)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (rank - low)


# Past this many runs the percentiles no longer move, while a list of timings of a microsecond model
# would grow by hundreds of MB over --min-seconds (and the peak memory measured would be the list's).
MAX_TIMED_RUNS = 100_000


def warm_up(invoke, runs: int, max_seconds: float) -> int:
    """Runs ``invoke`` untimed ``runs`` times, or until ``max_seconds`` have passed; returns how many ran."""
    deadline = time.perf_counter() + max_seconds
    done = 0
    while done < runs:
        invoke()
        done += 1
        if time.perf_counter() > deadline:
            break
    return done


def summarize_latency(seconds: list[float]) -> dict:
    """Mean, std, min, max, p50, p90, p99 (milliseconds) and images/s of per-image timings."""
    ms = sorted(s * 1000.0 for s in seconds)
    mean = sum(ms) / len(ms)
    std = math.sqrt(sum((v - mean) ** 2 for v in ms) / len(ms))
    return {
        "runs": len(ms),
        "mean_ms": mean,
        "std_ms": std,
        "min_ms": ms[0],
        "max_ms": ms[-1],
        "p50_ms": percentile(ms, 50),
        "p90_ms": percentile(ms, 90),
        "p99_ms": percentile(ms, 99),
        "images_per_second": 1000.0 / mean if mean > 0 else float("inf"),
    }


def time_invocations(invoke, min_runs: int, min_seconds: float, max_seconds: float) -> list[float]:
    """Times ``invoke()`` until ``min_runs`` and ``min_seconds`` (or :data:`MAX_TIMED_RUNS` runs) are
    reached, or ``max_seconds``."""
    timings: list[float] = []
    started = time.perf_counter()
    while True:
        t0 = time.perf_counter()
        invoke()
        timings.append(time.perf_counter() - t0)
        elapsed = time.perf_counter() - started
        enough = elapsed >= min_seconds or len(timings) >= MAX_TIMED_RUNS
        if (len(timings) >= min_runs and enough) or elapsed >= max_seconds:
            return timings


MAX_THREADS = 256  # boards have a few cores; LiteRT crashes on absurd counts (100,000) as on a bad file
MB = 1_000_000  # bytes: memory in MB, as sizes are in KB of 1,000 bytes


def peak_rss_mb() -> float | None:
    """Peak resident memory of this process so far, in MB (None where it cannot be read)."""
    try:
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        # ru_maxrss is in bytes on macOS, in KiB on Linux.
        return (peak if sys.platform == "darwin" else peak * 1024) / MB
    except (ImportError, OSError):
        return None


def current_rss_mb() -> float | None:
    """Resident memory of this process now, in MB (Linux; None elsewhere)."""
    kib = proc_kib("/proc/self/status", "VmRSS")
    return None if kib is None else kib * 1024 / MB


def available_bytes() -> int | None:
    """Memory the system can give without swapping (``MemAvailable``), else its physical memory."""
    available = proc_kib("/proc/meminfo", "MemAvailable")
    if available is not None:
        return available * 1024
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def proc_kib(path: str, key: str) -> int | None:
    """The ``key:`` line of a Linux /proc file (``/proc/meminfo``, ``/proc/self/status``), in KiB; None
    where there is no such file or line."""
    try:
        with open(path) as handle:
            for line in handle:
                if line.startswith(f"{key}:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def file_sizes(path: str) -> dict:
    """Bytes, gzip bytes (level 9) and SHA-256 of a file."""
    with open(path, "rb") as handle:
        content = handle.read()
    return {
        "bytes": len(content),
        "gzip_bytes": len(gzip.compress(content, compresslevel=9, mtime=0)),
        "sha256": hashlib.sha256(content).hexdigest(),
    }


def confusion_matrix(labels: np.ndarray, predicted: np.ndarray, classes: int) -> list[list[int]]:
    """Rows: true class; columns: predicted class."""
    matrix = np.zeros((classes, classes), dtype=np.int64)
    np.add.at(matrix, (labels, predicted), 1)
    return matrix.tolist()


def measure(artifact: str, test_data: str, threads: int, options: dict, with_accuracy: bool = True) -> dict:
    """Measures one artifact at one thread count in this process and returns its row.

    The latency loop runs before the accuracy pass so the peak memory reported is that of batch-1
    inference; the batched accuracy pass is reported separately.
    """
    row = {"artifact": artifact_name(artifact), "path": artifact, "threads": threads, **file_sizes(artifact)}
    row.update(sidecar_description(artifact))
    images, labels = load_test_set(test_data)
    load_interpreter_class()
    row["rss_before_model_mb"] = current_rss_mb()  # what the model and interpreter add is peak minus this

    t0 = time.perf_counter()
    model = TFLiteModel(model_path=artifact, num_threads=threads)
    row["init_ms"] = (time.perf_counter() - t0) * 1000.0
    row["input"] = {
        "shape": [int(d) for d in model.input["shape"]],
        "dtype": np.dtype(model.input["dtype"]).name,
    }
    check_fits(model, images, labels)
    model._resize(1)
    # As benchmark_model does: the input is set once and each timed run is one invoke().
    model.interpreter.set_tensor(model.input["index"], model.quantize_input(images[:1]))
    invoke = model.interpreter.invoke

    t0 = time.perf_counter()
    invoke()
    row["first_inference_ms"] = (time.perf_counter() - t0) * 1000.0
    row["warmup_runs"] = warm_up(invoke, options["warmup"], options["max_seconds"])
    row["latency"] = summarize_latency(
        time_invocations(invoke, options["runs"], options["min_seconds"], options["max_seconds"])
    )
    row["peak_rss_mb"] = peak_rss_mb()

    if with_accuracy:
        # Accuracy does not depend on the thread count, so the pass may use every core.
        scorer = TFLiteModel(
            model_path=artifact, num_threads=options.get("accuracy_threads") or os.cpu_count()
        )
        t0 = time.perf_counter()
        probs = scorer.predict_proba(images, batch_size=options["batch_size"])
        row["accuracy_seconds"] = time.perf_counter() - t0
        predicted = probs.argmax(axis=1)
        row["accuracy"] = float(np.mean(predicted == labels))
        row["examples"] = int(len(labels))
        row["confusion_matrix"] = confusion_matrix(labels, predicted, probs.shape[1])
        row["peak_rss_with_accuracy_mb"] = peak_rss_mb()
    row["status"] = "ok"
    return row


def check_fits(model: TFLiteModel, images: np.ndarray, labels: np.ndarray) -> None:
    """Refuses, in words, a model whose input or output does not fit the test set (another dataset's model).

    Raises:
        RunnerError: The input shape differs from the test images', or the model has fewer
            outputs than the test set has classes.
    """
    expected = tuple(int(d) for d in model.input["shape"][1:])
    found = tuple(int(d) for d in images.shape[1:]) + (
        (1,) if images.ndim == 3 else ()
    )  # (N, 28, 28): one channel
    if int(np.prod(expected)) != int(np.prod(found)) and not grey_for_rgb(expected, found):
        raise RunnerError(
            f"the model expects {_shape_words(expected)} input and the test images are {_shape_words(found)}."
        )
    classes = int(model.output["shape"][-1])
    needed = int(labels.max()) + 1 if len(labels) else 0
    if classes < needed:
        raise RunnerError(f"the model outputs {classes} classes and the test set has {needed}.")


def model_pixels(images: np.ndarray, input_shape) -> np.ndarray:
    """Raw pixels as float32 in a model's input shape (without the batch).

    Grey images given to a model that takes RGB of their size (the mobile form of a grey model) get
    three equal channels, as the form was checked with.
    """
    images = np.asarray(images, dtype=np.float32)
    if grey_for_rgb(input_shape, images.shape[1:]):
        images = grey_to_rgb(images)
    return images.reshape(-1, *(int(d) for d in input_shape))


def grey_to_rgb(images: np.ndarray) -> np.ndarray:
    """Grey images ``(N, H, W[, 1])`` as RGB ``(N, H, W, 3)`` with equal channels, same dtype."""
    images = np.asarray(images)
    return np.repeat(images.reshape(*images.shape[:3], 1), 3, axis=-1)


def grey_for_rgb(model_shape: tuple[int, ...], image_shape: tuple[int, ...]) -> bool:
    """Whether images of ``image_shape`` are grey ones of the size of a model that takes RGB."""
    model_shape, image_shape = tuple(int(d) for d in model_shape), tuple(int(d) for d in image_shape)
    return (
        len(model_shape) == 3
        and model_shape[2] == 3
        and image_shape in (model_shape[:2], (*model_shape[:2], 1))
    )


def _shape_words(shape: tuple[int, ...]) -> str:
    """(28, 28, 1) -> "28x28 grey"; (32, 32, 3) -> "32x32 colour (3 channels)"."""
    if len(shape) == 3 and shape[2] in (1, 3):
        return f"{shape[0]}x{shape[1]} {'grey' if shape[2] == 1 else 'colour (3 channels)'}"
    return "x".join(map(str, shape)) + "-valued"


def artifact_name(path: str) -> str:
    """A readable name: the bundle folder for ``.../bundle/model.tflite``, else the file stem."""
    base = os.path.basename(path)
    if base == "model.tflite":
        return os.path.basename(os.path.dirname(os.path.abspath(path))) or base
    return os.path.splitext(base)[0]


def sidecar_description(artifact: str) -> dict:
    """Format, architecture and source from the bundle's ``model.json``, when it sits beside the file."""
    path = os.path.join(os.path.dirname(os.path.abspath(artifact)), "model.json")
    if os.path.basename(artifact) != "model.tflite" or not os.path.isfile(path):
        return {"format": None}
    try:
        with open(path) as handle:
            description = json.load(handle)
    except (
        OSError,
        ValueError,
        RecursionError,
    ):  # unreadable, not JSON, an integer too long, nested too deep
        return {"format": None}
    if not isinstance(description, dict):
        return {"format": None}
    # Informative only: a field of another type is left out rather than reported as this file's format.
    return {
        key: value if isinstance(value, str) else None
        for key, value in (
            ("format", description.get("format")),
            ("architecture", description.get("architecture")),
        )
    }


def environment(notes: dict | None = None) -> dict:
    """Where the numbers were taken: interpreter, CPU, OS, Python."""
    try:
        _, package, version = load_interpreter_class()
    except RunnerError:
        package, version = None, None
    return {
        "runner_version": RUNNER_VERSION,
        "interpreter": package,
        "interpreter_version": version,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpu": cpu_model(),
        "cpu_detail": cpu_detail(),
        "cpu_count": os.cpu_count(),
        "os": os_name(),
        "hostname": platform.node(),
        **(notes or {}),
    }


def _read_cpuinfo() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            return handle.read()
    except OSError:
        return ""


def _cpuinfo_fields(text: str) -> dict[str, str]:
    """``key: value`` lines as a dict; a key repeated per core keeps its last value."""
    return {
        k.strip(): v.strip() for k, v in (line.split(":", 1) for line in text.splitlines() if ":" in line)
    }


def cpu_model() -> str:
    """The CPU's model name (x86 ``model name``, a Raspberry Pi's ``Model`` line, else platform)."""
    fields = _cpuinfo_fields(_read_cpuinfo())
    for key in ("model name", "Model", "Hardware", "cpu model"):
        if fields.get(key):
            return fields[key]
    return platform.processor() or platform.machine()


# The SIMD extensions LiteRT's int8 kernels (XNNPACK) choose between. A cloud VM reports its CPU
# only as "AMD EPYC": two machines under that name ran the same artifacts 2.2 to 5.4 times apart,
# by different ratios per layer type, so a latency is only comparable with these alongside.
_INT8_ISA = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "asimd", "asimddp", "i8mm", "sve")


def cpu_detail(cpuinfo: str | None = None) -> str:
    """The CPU's family/model numbers and int8-relevant SIMD extensions, from ``/proc/cpuinfo``.

    Example: ``family 25 model 17; avx2 avx512f avx512_vnni``. Empty where nothing is known.
    """
    text = _read_cpuinfo() if cpuinfo is None else cpuinfo
    fields = _cpuinfo_fields(text.split("\n\n")[0])  # the first core stands for all
    ident = " ".join(
        f"{label} {fields[key]}"
        for key, label in (("cpu family", "family"), ("model", "model"), ("CPU part", "part"))
        if fields.get(key)
    )
    flags = set((fields.get("flags") or fields.get("Features") or "").split())
    isa = " ".join(name for name in _INT8_ISA if name in flags)
    return "; ".join(part for part in (ident, isa) if part)


def os_name() -> str:
    """``PRETTY_NAME`` from /etc/os-release, else the platform string."""
    try:
        with open("/etc/os-release") as handle:
            for line in handle:
                if line.startswith("PRETTY_NAME="):
                    return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return platform.platform()


# ---------------------------------------------------------------- one child per measurement


def measure_in_child(artifact: str, test_data: str, threads: int, options: dict, with_accuracy: bool) -> dict:
    """Runs :func:`measure` in a fresh Python process; any failure becomes an error row."""
    command = [
        sys.executable,
        os.path.abspath(__file__),
        "--child",
        artifact,
        "--test-data",
        test_data,
        "--threads",
        str(threads),
        "--options",
        json.dumps(options),
    ]
    if not with_accuracy:
        command.append("--no-accuracy")
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=options["artifact_timeout"])
    except subprocess.TimeoutExpired:
        return error_row(
            artifact, threads, f"timed out after {options['artifact_timeout']} s; raise --artifact-timeout"
        )
    if done.returncode == 0:
        return json.loads(done.stdout)
    if done.returncode < 0:
        return error_row(
            artifact,
            threads,
            f"the interpreter crashed (signal {-done.returncode}); the file is probably corrupt",
        )
    lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
    message = lines[-1] if lines else f"exit code {done.returncode}"
    return error_row(
        artifact, threads, message[len("error: ") :] if message.startswith("error: ") else message
    )


def error_row(artifact: str, threads: int, error: str) -> dict:
    """The row of a failed measurement: the table goes on."""
    row = {
        "artifact": artifact_name(artifact),
        "path": artifact,
        "threads": threads,
        "status": "error",
        "error": error,
    }
    if os.path.isfile(artifact):
        row.update(file_sizes(artifact))
        row.update(sidecar_description(artifact))
    return row


def run_all(
    artifacts: list[str],
    test_data: str,
    thread_counts: list[int],
    options: dict,
    isolate: bool = True,
    progress=None,
) -> list[dict]:
    """Rows for every artifact and thread count; accuracy is measured once per artifact (at the
    first thread count) since the interpreter's results do not depend on threads."""
    rows = []
    for artifact in artifacts:
        accuracy_row = None
        for threads in thread_counts:
            with_accuracy = accuracy_row is None
            if isolate:
                row = measure_in_child(artifact, test_data, threads, options, with_accuracy)
            else:
                try:
                    row = measure(artifact, test_data, threads, options, with_accuracy)
                except (RunnerError, ValueError, RuntimeError) as exc:
                    row = error_row(artifact, threads, _first_line(exc))
            if row["status"] == "ok" and with_accuracy:
                accuracy_row = row
            elif row["status"] == "ok":
                for key in ("accuracy", "examples", "confusion_matrix", "accuracy_seconds"):
                    row[key] = accuracy_row[key]
            rows.append(row)
            if progress:
                progress(row)
            if row["status"] != "ok" and accuracy_row is None:
                break  # an artifact that fails at one thread count fails at all of them
    return rows


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# ---------------------------------------------------------------- command line


# The measurement flags: (flag, type, help); each defaults to its DEFAULTS field, "{default}" in the help.
_MEASURE_FLAGS = (
    ("--runs", int, "minimum timed runs (default {default})"),
    ("--min-seconds", float, "minimum timed seconds, or 100,000 runs (default {default:g})"),
    ("--max-seconds", float, "stop timing after this long (default {default:g})"),
    ("--warmup", int, "untimed runs after the first inference (default {default})"),
    ("--batch-size", int, "batch of the accuracy pass (default {default})"),
    ("--accuracy-threads", int, "threads of the accuracy pass (default: all cores)"),
    ("--artifact-timeout", float, "seconds before one measurement is abandoned"),
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Measure TFLite artifacts: accuracy, latency, memory, size.")
    parser.add_argument("artifacts", nargs="+", help=".tflite files")
    parser.add_argument(
        "--test-data", required=True, help=".npz with images and labels, or the folder of the t10k IDX files"
    )
    parser.add_argument(
        "--threads",
        default=DEFAULTS.threads,
        help=f"comma-separated thread counts (default {DEFAULTS.threads})",
    )
    for flag, kind, help_text in _MEASURE_FLAGS:
        default = getattr(DEFAULTS, flag[2:].replace("-", "_"))
        parser.add_argument(flag, type=kind, default=default, help=help_text.format(default=default))
    parser.add_argument(
        "--no-isolate", action="store_true", help="measure in this process (no child per artifact)"
    )
    parser.add_argument(
        "--note", action="append", default=[], help="KEY=VALUE added to the environment record"
    )
    parser.add_argument("--json", default="-", help="where to write the result (default: stdout)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--no-accuracy", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--options", default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def options_from(args: argparse.Namespace) -> dict:
    if args.options:
        return json.loads(args.options)
    if not (
        args.runs >= 1
        and 0 <= args.min_seconds < float("inf")
        and 0 < args.max_seconds < float("inf")
        and args.warmup >= 0
        and args.batch_size >= 1
    ):
        raise RunnerError(
            "--runs and --batch-size must be >= 1, --min-seconds and --warmup >= 0, --max-seconds > 0 (finite)."
        )
    return {
        "runs": args.runs,
        "min_seconds": args.min_seconds,
        "max_seconds": args.max_seconds,
        "warmup": args.warmup,
        "batch_size": args.batch_size,
        "artifact_timeout": args.artifact_timeout,
        "accuracy_threads": args.accuracy_threads,
    }


def parse_threads(text: str) -> list[int]:
    try:
        counts = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        counts = []
    if not counts or min(counts) < 1:
        raise RunnerError(f"--threads {text!r}: give positive thread counts separated by commas, e.g. 1,4.")
    if max(counts) > MAX_THREADS:
        raise RunnerError(
            f"--threads {text!r}: at most {MAX_THREADS} interpreter threads (a board has a few cores), e.g. 1,4."
        )
    return counts


def main(argv: list[str] | None = None) -> int:
    try:
        if np is None:
            raise ImportError("numpy")
        args = parse_args(argv)
        options = options_from(args)
        if args.child:
            row = measure(args.artifacts[0], args.test_data, int(args.threads), options, not args.no_accuracy)
            sys.stdout.write(json.dumps(row))
            return 0
        load_interpreter_class()  # fail once, clearly, before any artifact
        load_test_set(args.test_data)
        notes = dict(n.split("=", 1) for n in args.note if "=" in n)
        started = time.time()
        rows = run_all(
            args.artifacts, args.test_data, parse_threads(args.threads), options, isolate=not args.no_isolate
        )
        result = {
            "environment": environment(notes),
            "options": options,
            "test_data": os.path.basename(args.test_data),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
            "seconds": round(time.time() - started, 2),
            "rows": rows,
        }
        text = json.dumps(result, indent=2)
        final = os.path.realpath(args.json)  # a link stays a link: its target is written
        if args.json in ("-", "/dev/stdout"):
            sys.stdout.write(text + "\n")
        elif args.json == "/dev/stderr":
            sys.stderr.write(text + "\n")
        elif os.path.exists(args.json) and not os.path.isfile(args.json):
            with open(args.json, "w") as out:  # a device or a pipe: written through, never replaced by a file
                out.write(text + "\n")
        else:
            tmp = final + ".tmp"
            with open(tmp, "w") as handle:
                handle.write(text + "\n")
            os.replace(tmp, final)
        return 0
    except ImportError as exc:
        print(
            f"error: {exc.name or exc} is not installed for {sys.executable}: run `{MISSING_RUNTIME_FIX}`.",
            file=sys.stderr,
        )
        return EXIT_MISSING_RUNTIME
    except RunnerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_MISSING_RUNTIME if str(exc).startswith("no TFLite interpreter") else EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())

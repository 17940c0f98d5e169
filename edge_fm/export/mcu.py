"""The microcontroller form of an integer export, proven under TensorFlow Lite for Microcontrollers.

A microcontroller runs a model with TFLM: the .tflite bytes compiled into flash as a C array, a
resolver that registers exactly the model's ops, and a tensor arena in RAM sized for it. This
module writes those files and checks them the only way that proves them: it runs the model under
the TFLM interpreter (the ``tflite-micro`` package, ``pip install 'edge-fm[mcu]'``), finds the
smallest arena that allocates and runs, and compares its answers with LiteRT's reference kernels.

What it does not measure: speed. TFLM on this computer is not TFLM on a Cortex-M, so no latency is
reported anywhere; time the example on the board itself.

Example:
    >>> report = tflm_report("models/mlp/model.tflite", images, labels)  # doctest: +SKIP
    >>> bundle = export_mcu("models/mlp", data_dir="data/fashion-mnist")  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import importlib.metadata
import json
import math
import os
import platform
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edge_fm.errors import EdgeFMError
from edge_fm.io import check_output_dir, make_dirs, read_json, write_bytes_atomic, write_json

INSTALL_HINT = "pip install 'edge-fm[mcu]'"
# The arena is searched in steps of the alignment TFLM gives its own buffers.
ARENA_ALIGNMENT = 16
# The search runs on this 64-bit host with TFLM's reference kernels. A 32-bit board stores smaller
# structs, but optimized kernels (CMSIS-NN, ESP-NN) may ask for scratch buffers the reference ones
# do not: a quarter more, rounded up to whole KiB, covers both.
ARENA_MARGIN = 0.25
ARENA_ROUNDING = 1024
# Where the search for an arena that allocates starts, and where it gives up.
ARENA_PROBE_START = 64 * 1024
ARENA_PROBE_MAX = 64 * 1024 * 1024
# TFLM on this host takes up to ~70 ms an image for the larger shipped models: 1,000 images keep a
# check near a minute per model.
DEFAULT_CHECK_IMAGES = 1000
# TFLM's kernels are ports of TFLite's reference kernels, so on the same int8 model they should
# give the same answers: below this top-1 agreement the MCU form is refused.
MIN_REFERENCE_AGREEMENT = 0.99
LATENCY_NOTE = ("not measured: TFLM timed on this computer says nothing of a microcontroller's speed; "
                "time the example on the board")
FLASH_NOTE = ("the C array holds the .tflite bytes as they are, so it adds nothing to the model's flash "
              f"(at most {ARENA_ALIGNMENT - 1} bytes of alignment padding); TFLM's kernels and the application "
              "take flash of their own")

# What to change when TFLM has no kernel for an op.
_OP_FIXES = {
    "GELU": "retrain with a ReLU head (for mobilenetv2, `--arch-opt head_units=0` drops the GELU head layer)",
    "HARD_SWISH": "retrain with ReLU or ReLU6 activations",
}
_GENERIC_FIX = "retrain without it, using ops TFLM has (Conv2D, DepthwiseConv2D, FullyConnected, pooling, ReLU, Add, Mean)"

# MicroMutableOpResolver's Add* methods are the op names in CamelCase, except these.
_RESOLVER_METHODS = {
    "BATCH_MATMUL": "AddBatchMatMul",
    "CUMSUM": "AddCumSum",
    "PADV2": "AddPadV2",
    "SELECT_V2": "AddSelectV2",
    "RELU_N1_TO_1": "AddReluN1To1",
    "RELU_0_TO_1": "AddRelu0To1",
    "UNIDIRECTIONAL_SEQUENCE_LSTM": "AddUnidirectionalSequenceLSTM",
}


# ---------------------------------------------------------------- TFLM itself


def _runtime():
    """TFLM's Python interpreter module, or a one-line error saying how to install it."""
    try:
        from tflite_micro.python.tflite_micro import runtime
    except ImportError:
        raise EdgeFMError(f"TensorFlow Lite for Microcontrollers is not installed: {INSTALL_HINT}.") from None
    return runtime


def tflm_version() -> str:
    """The installed ``tflite-micro`` version.

    Raises:
        EdgeFMError: It is not installed.
    """
    _runtime()
    return importlib.metadata.version("tflite-micro")


@contextlib.contextmanager
def _native_stderr(lines: list[str]) -> Iterator[None]:
    """Collects what native code writes to fd 2 inside the block into ``lines``.

    TFLM reports a missing op or a short arena there, not in its Python exception.
    """
    fd = 2  # the process's own stderr, whatever Python's sys.stderr was swapped for (pytest, IDEs)
    with contextlib.suppress(AttributeError, ValueError, OSError):
        sys.stderr.flush()
    saved = os.dup(fd)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), fd)
        try:
            yield
        finally:
            os.dup2(saved, fd)
            os.close(saved)
            sink.seek(0)
            lines.extend(line.strip() for line in sink.read().decode(errors="replace").splitlines() if line.strip())


def _interpreter(flatbuffer: bytes, arena_size: int, native: list[str] | None = None):
    """A TFLM interpreter with ``arena_size`` bytes of arena; raises RuntimeError if it cannot allocate."""
    runtime = _runtime()
    with _native_stderr(native if native is not None else []):
        return runtime.Interpreter.from_bytes(flatbuffer, arena_size=arena_size)


def _runs(flatbuffer: bytes, arena_size: int, probe: np.ndarray) -> bool:
    """True when the model allocates in ``arena_size`` bytes and one inference succeeds."""
    native: list[str] = []
    try:
        with _native_stderr(native):
            interpreter = _runtime().Interpreter.from_bytes(flatbuffer, arena_size=arena_size)
            interpreter.set_input(probe, 0)
            interpreter.invoke()
    except RuntimeError:
        return False
    return True


# ---------------------------------------------------------------- reading the model


def _schema():
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as schema

    return schema


def _model_object(flatbuffer: bytes):
    return _runtime().convert_bytearray_to_object(bytearray(flatbuffer))


def model_ops(flatbuffer: bytes) -> list[str]:
    """The model's distinct operators (``CONV_2D``, ``CUSTOM:name``...), in order of first use."""
    runtime, schema = _runtime(), _schema()
    model = _model_object(flatbuffer)
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    ops: list[str] = []
    for graph in model.subgraphs:
        for op in graph.operators or []:
            code = model.operatorCodes[op.opcodeIndex]
            name = names.get(runtime.get_builtin_code_from_operator_code(code), "UNKNOWN")
            if name == "CUSTOM":
                name = f"CUSTOM:{code.customCode.decode() if code.customCode else '?'}"
            if name not in ops:
                ops.append(name)
    return ops


def _io_types(flatbuffer: bytes) -> tuple[str, str]:
    """The dtype names (``INT8``, ``FLOAT32``...) of the first input and first output."""
    schema = _schema()
    model = _model_object(flatbuffer)
    types = {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    graph = model.subgraphs[0]
    return types[graph.tensors[graph.inputs[0]].type], types[graph.tensors[graph.outputs[0]].type]


def _embedded_labels(flatbuffer: bytes) -> list[str]:
    """Labels that edge-fm's exporter stored in the file's metadata, if any."""
    model = _model_object(flatbuffer)
    for entry in model.metadata or []:
        name = entry.name.decode() if isinstance(entry.name, bytes) else entry.name
        if name == "edge_fm.labels":
            return bytes(np.asarray(model.buffers[entry.buffer].data, dtype=np.uint8)).decode().split("\n")
    return []


def check_int8_model(flatbuffer: bytes, source: Path | str) -> None:
    """Checks that a model takes and gives int8 tensors, as TFLM's integer kernels need.

    Raises:
        EdgeFMError: Float or uint8 input or output, with the export option that fixes it.
    """
    try:
        input_type, output_type = _io_types(flatbuffer)
    except EdgeFMError:
        raise
    except Exception:  # noqa: BLE001 - any parse failure means the same: not a .tflite model
        raise EdgeFMError(f"{source} is not a valid .tflite model: re-export it with `edge-fm export RUN -f int8`.") from None
    if (input_type, output_type) != ("INT8", "INT8"):
        raise EdgeFMError(
            f"{source} takes {input_type.lower()} and gives {output_type.lower()}: a microcontroller needs an int8 model "
            "(int8 input and output); export with `-f int8` or `-f qat-int8` (and the default --io-dtype int8)."
        )


@dataclasses.dataclass(frozen=True)
class McuModel:
    """An int8 .tflite model read for the microcontroller form.

    Attributes:
        path: Where it was read from (the .tflite file).
        flatbuffer: Its bytes.
        name: Its name (from the bundle's ``model.json``, else the folder or file name).
        labels: Class names in output order.
        description: The bundle's ``model.json`` (empty for a bare .tflite file).
    """

    path: Path
    flatbuffer: bytes
    name: str
    labels: tuple[str, ...]
    description: dict


def read_model(source: Path | str) -> McuModel:
    """Reads an int8 export bundle (a folder with ``model.tflite``) or a .tflite file.

    Raises:
        EdgeFMError: The path is missing or holds no .tflite file, or the model is not int8 in and out.
    """
    source = Path(source)
    path = source / "model.tflite" if source.is_dir() else source
    if not path.is_file() or path.suffix != ".tflite":
        hint = ("it is a training run: pass it with a format, e.g. `-f int8`" if (source / "config.json").is_file()
                else "pass an int8 export bundle (a folder with model.tflite, e.g. models/mlp) or a .tflite file")
        raise EdgeFMError(f"{source} holds no .tflite model: {hint}.")
    flatbuffer = path.read_bytes()
    check_int8_model(flatbuffer, path)
    sidecar = path.with_name("model.json")
    description = read_json(sidecar) if path.name == "model.tflite" and sidecar.is_file() else {}
    labels_file = path.with_name("labels.txt")
    if labels_file.is_file():
        labels = [line.strip() for line in labels_file.read_text().splitlines() if line.strip()]
    else:
        labels = _embedded_labels(flatbuffer) or description.get("labels") or []
    if not labels:
        from edge_fm.data.datasets import CLASS_NAMES

        labels = list(CLASS_NAMES)
    name = description.get("name") or (path.parent.name if path.name == "model.tflite" else path.stem)
    return McuModel(path, flatbuffer, name, tuple(labels), description)


# ---------------------------------------------------------------- ops and arena


def unsupported_ops(flatbuffer: bytes) -> tuple[list[str], str | None]:
    """Ops of the model TFLM has no kernel for, found by letting TFLM's interpreter try.

    Returns:
        ``(ops, error)``: the ops TFLM named as missing, and TFLM's own message when the model
        did not load for another reason (None when it loads).
    """
    native: list[str] = []
    try:
        _interpreter(flatbuffer, ARENA_PROBE_MAX, native)
    except RuntimeError as exc:
        missing = re.findall(r"Didn't find op for (?:builtin|custom) opcode '([^']+)'", "\n".join(native))
        if missing:
            return list(dict.fromkeys(missing)), None
        return [], (native[-1] if native else str(exc))
    return [], None


def refusal(ops: Sequence[str]) -> str:
    """The message that names the ops TFLM lacks and what to change."""
    fixes = "; ".join(f"{op}: {_OP_FIXES.get(op, _GENERIC_FIX)}" for op in ops)
    return f"TFLM has no kernel for {', '.join(ops)}, so this model cannot run on a microcontroller: {fixes}."


@dataclasses.dataclass(frozen=True)
class Arena:
    """The tensor arena a model needs under TFLM.

    Attributes:
        min_bytes: The smallest arena (a multiple of 16) that allocated and ran one inference here.
        bytes: What the firmware should reserve: ``min_bytes`` plus the margin, rounded up to KiB.
    """

    min_bytes: int
    bytes: int

    def describe(self) -> dict[str, Any]:
        return {
            "min_bytes": self.min_bytes,
            "bytes": self.bytes,
            "margin": f"+{ARENA_MARGIN:.0%}, rounded up to {ARENA_ROUNDING} bytes",
            "how": (f"the smallest arena (in steps of {ARENA_ALIGNMENT} bytes) in which TFLM's interpreter allocated "
                    "and ran one inference on this 64-bit host, found by binary search; optimized kernels may need "
                    "more scratch, 32-bit structs less: the margin covers both, and the board's "
                    "interpreter.arena_used_bytes() tells the exact figure"),
        }


def with_margin(min_bytes: int) -> int:
    """The arena to reserve for a model that needs ``min_bytes`` here."""
    return int(math.ceil(min_bytes * (1 + ARENA_MARGIN) / ARENA_ROUNDING) * ARENA_ROUNDING)


def find_arena(flatbuffer: bytes) -> Arena:
    """Finds the smallest tensor arena in which the model allocates and runs, by binary search.

    Raises:
        EdgeFMError: The model needs an op TFLM lacks, or does not allocate in 64 MiB.
    """
    probe = np.zeros(_input_shape(flatbuffer), dtype=np.int8)
    works = ARENA_PROBE_START
    while not _runs(flatbuffer, works, probe):
        if works >= ARENA_PROBE_MAX:
            ops, error = unsupported_ops(flatbuffer)
            raise EdgeFMError(refusal(ops) if ops else f"TFLM could not run the model in {ARENA_PROBE_MAX // 2**20} MiB "
                              f"of arena ({error}); a microcontroller cannot either.")
        works *= 2
    # In units of the alignment: every size tried is one a firmware could declare.
    low, high = 0, works // ARENA_ALIGNMENT
    while high - low > 1:
        middle = (low + high) // 2
        if _runs(flatbuffer, middle * ARENA_ALIGNMENT, probe):
            high = middle
        else:
            low = middle
    min_bytes = high * ARENA_ALIGNMENT
    return Arena(min_bytes, with_margin(min_bytes))


def _input_shape(flatbuffer: bytes) -> tuple[int, ...]:
    model = _model_object(flatbuffer)
    graph = model.subgraphs[0]
    return tuple(int(d) for d in graph.tensors[graph.inputs[0]].shape)


# ---------------------------------------------------------------- running it


def quantize_images(images: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """Raw 0-255 pixels -> int8 input: ``q = round(pixel / scale) + zero_point``, clamped."""
    values = np.round(np.asarray(images, dtype=np.float32).reshape(-1, 28, 28, 1) / scale + zero_point)
    return np.clip(values, -128, 127).astype(np.int8)


class TflmModel:
    """An int8 model under TFLM's interpreter, one image at a time (as on a board).

    Args:
        flatbuffer: The .tflite bytes.
        arena_size: Bytes of tensor arena.

    Raises:
        EdgeFMError: The model does not allocate in ``arena_size`` bytes.
    """

    def __init__(self, flatbuffer: bytes, arena_size: int):
        native: list[str] = []
        try:
            self.interpreter = _interpreter(flatbuffer, arena_size, native)
        except RuntimeError as exc:
            raise EdgeFMError(f"TFLM could not allocate the model in {arena_size} bytes of arena: "
                              f"{native[-1] if native else exc}.") from None
        details = self.interpreter.get_input_details(0)["quantization_parameters"]
        self.scale, self.zero_point = float(details["scales"][0]), int(details["zero_points"][0])

    def outputs(self, images: np.ndarray) -> np.ndarray:
        """The raw int8 outputs for raw uint8 images ``(N, 28, 28[, 1])``."""
        rows = []
        for image in quantize_images(images, self.scale, self.zero_point):
            self.interpreter.set_input(image[None], 0)
            self.interpreter.invoke()
            rows.append(np.array(self.interpreter.get_output(0)).reshape(-1))
        return np.stack(rows)


def reference_outputs(flatbuffer: bytes, images: np.ndarray) -> np.ndarray:
    """The raw int8 outputs of LiteRT's reference kernels (``BUILTIN_REF``), one image at a time."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interpreter = Interpreter(model_content=flatbuffer, experimental_op_resolver_type=OpResolverType.BUILTIN_REF)
    interpreter.allocate_tensors()
    source, target = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    scale, zero_point = source["quantization"]
    rows = []
    for image in quantize_images(images, scale, zero_point):
        interpreter.set_tensor(source["index"], image[None])
        interpreter.invoke()
        rows.append(interpreter.get_tensor(target["index"]).reshape(-1).copy())
    return np.stack(rows)


# ---------------------------------------------------------------- boards


@dataclasses.dataclass(frozen=True)
class Board:
    """A common microcontroller board, by the memory a model competes for.

    Attributes:
        name: The board.
        chip: Its microcontroller.
        flash_bytes: Program flash.
        ram_bytes: On-chip RAM (SRAM).
    """

    name: str
    chip: str
    flash_bytes: int
    ram_bytes: int


KIB, MIB = 1024, 1024 * 1024
BOARDS: tuple[Board, ...] = (
    Board("Arduino Nano 33 BLE Sense", "nRF52840", 1 * MIB, 256 * KIB),
    Board("Raspberry Pi Pico", "RP2040", 2 * MIB, 264 * KIB),
    Board("STM32F746 Discovery", "STM32F746NG", 1 * MIB, 320 * KIB),
    Board("ESP32-S3 (8 MB flash)", "ESP32-S3", 8 * MIB, 512 * KIB),
)
FIT_NOTE = ("a fit check of the model's bytes against flash and the tensor arena against RAM only: the firmware "
            "(TFLM's runtime and kernels, the application, its stack and buffers) needs room too")


def fits_on(flash_bytes: int, arena_bytes: int, boards: Sequence[Board] = BOARDS) -> list[dict[str, Any]]:
    """Whether the model's bytes fit each board's flash and its arena the board's RAM.

    Returns:
        One dict per board: its memory, the shares the model and the arena take, and ``fits``.
    """
    return [{
        "board": board.name,
        "chip": board.chip,
        "flash_bytes": board.flash_bytes,
        "ram_bytes": board.ram_bytes,
        "model_share_of_flash": round(flash_bytes / board.flash_bytes, 4),
        "arena_share_of_ram": round(arena_bytes / board.ram_bytes, 4),
        "fits": flash_bytes <= board.flash_bytes and arena_bytes <= board.ram_bytes,
    } for board in boards]


# ---------------------------------------------------------------- the check


@dataclasses.dataclass(frozen=True)
class TflmReport:
    """How a model fares under TFLM (see :func:`tflm_report`); ``as_dict`` is what ``model.json`` records.

    Attributes:
        model: The .tflite file checked.
        runs_under_tflm: True when it allocated and ran every image.
        unsupported_ops: Ops TFLM has no kernel for.
        error: Why it does not run (None when it does).
        ops: The model's ops (what the resolver registers).
        arena: The arena it needs (None when it does not run).
        flash_bytes: The model's bytes (what the C array puts in flash).
        images: Images run, and where they came from.
        accuracy: Top-1 accuracy under TFLM.
        agreement_with_litert_reference: Share of images whose top-1 class equals LiteRT's reference kernels'.
        identical_outputs: Share of images whose whole int8 output equals the reference's. Not all:
            TFLM's kernels round some requantizations differently (one step), which softmax can widen.
        max_output_difference: The largest difference of one int8 output from the reference's, in steps.
        tflm_version: The ``tflite-micro`` build.
        litert_version: The ``ai-edge-litert`` build of the reference.
    """

    model: str
    runs_under_tflm: bool
    unsupported_ops: tuple[str, ...]
    error: str | None
    ops: tuple[str, ...]
    arena: Arena | None
    flash_bytes: int
    images: int
    images_source: str
    accuracy: float | None
    agreement_with_litert_reference: float | None
    identical_outputs: float | None
    max_output_difference: int | None
    tflm_version: str
    litert_version: str

    @property
    def arena_bytes(self) -> int | None:
        return self.arena.bytes if self.arena else None

    def as_dict(self) -> dict[str, Any]:
        arena = self.arena.describe() if self.arena else None
        return {
            "runs_under_tflm": self.runs_under_tflm,
            "unsupported_ops": list(self.unsupported_ops),
            "error": self.error,
            "ops": list(self.ops),
            "arena_bytes": self.arena_bytes,
            "arena": arena,
            "flash_bytes": self.flash_bytes,
            "flash": FLASH_NOTE,
            "tflite_micro_version": self.tflm_version,
            "checked_on": {"images": self.images, "source": self.images_source},
            "accuracy": self.accuracy,
            "agreement_with_litert_reference": self.agreement_with_litert_reference,
            "identical_outputs_to_litert_reference": self.identical_outputs,
            "max_output_difference_steps": self.max_output_difference,
            "reference": f"ai-edge-litert {self.litert_version}, OpResolverType.BUILTIN_REF (reference kernels)",
            "fits_on": fits_on(self.flash_bytes, self.arena_bytes) if self.arena else [],
            "fits_on_note": FIT_NOTE,
            "latency": LATENCY_NOTE,
        }


def tflm_report(tflite: Path | str | bytes, images: np.ndarray, labels: np.ndarray,
                images_source: str = "given images") -> TflmReport:
    """Runs an int8 model under TFLM on ``images`` and compares it with LiteRT's reference kernels.

    A model with an op TFLM lacks gets a report with ``runs_under_tflm`` False, the ops, and an
    ``error`` that names them and what to change; nothing raises, so a sweep keeps going.

    Args:
        tflite: A .tflite file, an export bundle, or the model's bytes.
        images: Raw uint8 images ``(N, 28, 28[, 1])``.
        labels: Their classes.
        images_source: What the images are, for the record.

    Returns:
        The :class:`TflmReport`.

    Raises:
        EdgeFMError: TFLM is not installed, or the model is not int8 in and out.
    """
    if isinstance(tflite, bytes):
        check_int8_model(tflite, "the model")
        flatbuffer, name = tflite, "<bytes>"
    else:
        model = read_model(tflite)
        flatbuffer, name = model.flatbuffer, str(model.path)
    images, labels = np.asarray(images), np.asarray(labels)
    if len(images) != len(labels) or len(images) == 0:
        raise EdgeFMError(f"give as many labels as images, and at least one image (got {len(images)} and {len(labels)}).")
    common = dict(model=name, flash_bytes=len(flatbuffer), images_source=images_source, tflm_version=tflm_version(),
                  litert_version=_version("ai-edge-litert"))
    ops = tuple(model_ops(flatbuffer))
    missing, error = unsupported_ops(flatbuffer)
    if missing or error:
        return TflmReport(runs_under_tflm=False, unsupported_ops=tuple(missing), error=refusal(missing) if missing else
                          f"TFLM could not load the model: {error}", ops=ops, arena=None, images=0, accuracy=None,
                          agreement_with_litert_reference=None, identical_outputs=None, max_output_difference=None,
                          **common)
    arena = find_arena(flatbuffer)
    tflm = TflmModel(flatbuffer, arena.min_bytes).outputs(images)
    reference = reference_outputs(flatbuffer, images)
    return TflmReport(
        runs_under_tflm=True, unsupported_ops=(), error=None, ops=ops, arena=arena, images=int(len(labels)),
        accuracy=float(np.mean(tflm.argmax(1) == labels)),
        agreement_with_litert_reference=float(np.mean(tflm.argmax(1) == reference.argmax(1))),
        identical_outputs=float(np.mean(np.all(tflm == reference, axis=1))),
        max_output_difference=int(np.abs(tflm.astype(np.int32) - reference.astype(np.int32)).max()), **common,
    )


def _version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


# ---------------------------------------------------------------- firmware files


def c_identifier(name: str) -> str:
    """``edge-cnn-tiny`` -> ``edge_cnn_tiny``: a name usable in C and C++."""
    identifier = re.sub(r"\W+", "_", name).strip("_").lower() or "model"
    return f"m_{identifier}" if identifier[0].isdigit() else identifier


def resolver_method(op: str) -> str:
    """The ``MicroMutableOpResolver`` method that registers ``op`` (``CONV_2D`` -> ``AddConv2D``)."""
    if op in _RESOLVER_METHODS:
        return _RESOLVER_METHODS[op]
    return "Add" + "".join(part if part[0].isdigit() else part.capitalize() for part in op.split("_"))


def c_array(data: bytes, symbol: str, per_line: int = 12) -> str:
    """The bytes as an aligned C array definition and its length, as ``xxd -i`` writes them."""
    lines = [", ".join(f"0x{byte:02x}" for byte in data[start:start + per_line])
             for start in range(0, len(data), per_line)]
    body = ",\n    ".join(lines)
    return (f"alignas({ARENA_ALIGNMENT}) const unsigned char {symbol}[] = {{\n    {body}\n}};\n"
            f"const unsigned int {symbol}_len = {len(data)};\n")


def parse_c_array(source: str, symbol: str) -> bytes:
    """The bytes of array ``symbol`` in generated C source, checked against its ``_len``.

    Raises:
        ValueError: No such array, or its length does not match.
    """
    match = re.search(rf"{re.escape(symbol)}\[\]\s*=\s*\{{(.*?)\}};", source, re.S)
    length = re.search(rf"{re.escape(symbol)}_len\s*=\s*(\d+);", source)
    if not match or not length:
        raise ValueError(f"no array {symbol} in the source")
    data = bytes(int(value, 16) for value in re.findall(r"0x([0-9a-fA-F]{2})", match.group(1)))
    if len(data) != int(length.group(1)):
        raise ValueError(f"{symbol} holds {len(data)} bytes but {symbol}_len says {length.group(1)}")
    return data


def _header_guard(filename: str) -> str:
    return re.sub(r"\W", "_", filename).upper() + "_"


def _model_data_files(model: McuModel, ident: str) -> dict[str, str]:
    symbol = f"g_{ident}_model"
    header = f"{ident}_model_data.h"
    guard = _header_guard(header)
    return {
        header: (f"// {model.name}: the int8 .tflite model as a C array (generated by edge-fm; do not edit).\n"
                 f"#ifndef {guard}\n#define {guard}\n\n"
                 f"// {ARENA_ALIGNMENT}-byte aligned: TFLM reads the flatbuffer in place, with aligned loads.\n"
                 f"extern const unsigned char {symbol}[];\n"
                 f"extern const unsigned int {symbol}_len;\n\n#endif  // {guard}\n"),
        f"{ident}_model_data.cc": (f"// {model.name}: {len(model.flatbuffer)} bytes of .tflite, sha256 "
                                   f"{hashlib.sha256(model.flatbuffer).hexdigest()} (generated by edge-fm; do not edit).\n"
                                   f'#include "{header}"\n\n' + c_array(model.flatbuffer, symbol)),
    }


def _resolver_file(ops: Sequence[str], ident: str) -> str:
    filename = f"{ident}_op_resolver.h"
    guard = _header_guard(filename)
    adds = "\n".join(f"    resolver.{resolver_method(op)}();  // {op}" for op in ops)
    return (f"// The ops {ident} uses, and only those: an unused kernel would only take flash (generated by edge-fm).\n"
            f"#ifndef {guard}\n#define {guard}\n\n"
            '#include "tensorflow/lite/micro/micro_mutable_op_resolver.h"\n\n'
            f"namespace {ident} {{\n\n"
            f"constexpr int kOpCount = {len(ops)};\n\n"
            "// The resolver to hand to tflite::MicroInterpreter; filled on the first call.\n"
            f"inline const tflite::MicroOpResolver& op_resolver() {{\n"
            f"  static tflite::MicroMutableOpResolver<kOpCount> resolver;\n"
            "  static bool filled = false;\n"
            "  if (!filled) {\n"
            f"{adds}\n"
            "    filled = true;\n"
            "  }\n"
            "  return resolver;\n"
            f"}}\n\n}}  // namespace {ident}\n\n#endif  // {guard}\n")


def _settings_file(model: McuModel, ident: str, arena: Arena, io: dict[str, float]) -> str:
    filename = f"{ident}_model_settings.h"
    guard = _header_guard(filename)
    # JSON's string quoting is C's for printable ASCII, escapes included.
    labels = ",\n    ".join(json.dumps(label) for label in model.labels)
    return (f"// What a sketch needs to call {model.name} (generated by edge-fm).\n"
            f"#ifndef {guard}\n#define {guard}\n\n"
            f"namespace {ident} {{\n\n"
            f"// Tensor arena: {arena.min_bytes} bytes allocated and ran under TFLM's interpreter here, plus "
            f"{ARENA_MARGIN:.0%} for other kernels\n"
            "// and rounded up to KiB; after AllocateTensors(), interpreter.arena_used_bytes() gives this build's need.\n"
            f"constexpr int kTensorArenaSize = {arena.bytes};\n\n"
            "// Input: 28x28 grey pixels, light object on black (Fashion-MNIST), int8 q = round(pixel / scale) + zero_point.\n"
            "constexpr int kImageSide = 28;\n"
            f"constexpr float kInputScale = {io['input_scale']!r}f;\n"
            f"constexpr int kInputZeroPoint = {io['input_zero_point']};\n"
            "// Output: int8 per class; probability = (q - zero_point) * scale.\n"
            f"constexpr float kOutputScale = {io['output_scale']!r}f;\n"
            f"constexpr int kOutputZeroPoint = {io['output_zero_point']};\n\n"
            f"constexpr int kCategoryCount = {len(model.labels)};\n"
            f"constexpr const char* kCategoryLabels[kCategoryCount] = {{\n    {labels}\n}};\n\n"
            f"}}  // namespace {ident}\n\n#endif  // {guard}\n")


def _example_file(model: McuModel, ident: str) -> str:
    return f"""// How a sketch calls {model.name} under TFLM: set up once, then classify 28x28 pixels (generated by edge-fm).
#include <math.h>
#include <stdint.h>

#include "tensorflow/lite/micro/micro_interpreter.h"
#include "tensorflow/lite/schema/schema_generated.h"

#include "{ident}_model_data.h"
#include "{ident}_model_settings.h"
#include "{ident}_op_resolver.h"

namespace {{
// Aligned like the model: kernels read their buffers with wide loads.
alignas(16) uint8_t tensor_arena[{ident}::kTensorArenaSize];
tflite::MicroInterpreter* interpreter = nullptr;
}}  // namespace

// Call once (from setup()). False when the model or the arena does not fit this build.
bool {ident}_setup() {{
  const tflite::Model* model = tflite::GetModel(g_{ident}_model);
  if (model->version() != TFLITE_SCHEMA_VERSION) return false;
  static tflite::MicroInterpreter static_interpreter(model, {ident}::op_resolver(), tensor_arena,
                                                     {ident}::kTensorArenaSize);
  interpreter = &static_interpreter;
  return interpreter->AllocateTensors() == kTfLiteOk;
}}

// pixels: kImageSide x kImageSide grey bytes, row by row. Returns the class index (-1 on failure);
// {ident}::kCategoryLabels[index] is its label.
int {ident}_classify(const uint8_t* pixels) {{
  TfLiteTensor* input = interpreter->input(0);
  for (int i = 0; i < {ident}::kImageSide * {ident}::kImageSide; ++i) {{
    long q = lroundf(pixels[i] / {ident}::kInputScale) + {ident}::kInputZeroPoint;
    input->data.int8[i] = static_cast<int8_t>(q < -128 ? -128 : (q > 127 ? 127 : q));
  }}
  if (interpreter->Invoke() != kTfLiteOk) return -1;
  const int8_t* scores = interpreter->output(0)->data.int8;
  int best = 0;  // the first of equal scores, as numpy's argmax
  for (int c = 1; c < {ident}::kCategoryCount; ++c) {{
    if (scores[c] > scores[best]) best = c;
  }}
  return best;
}}
"""


def _io_quantization(flatbuffer: bytes) -> dict[str, float]:
    interpreter = TflmModel(flatbuffer, ARENA_PROBE_MAX).interpreter
    source = interpreter.get_input_details(0)["quantization_parameters"]
    target = interpreter.get_output_details(0)["quantization_parameters"]
    return {"input_scale": float(source["scales"][0]), "input_zero_point": int(source["zero_points"][0]),
            "output_scale": float(target["scales"][0]), "output_zero_point": int(target["zero_points"][0])}


def mcu_files(source: Path | str, out_dir: Path | str, name: str | None = None,
              arena: Arena | None = None) -> dict[str, Path]:
    """Writes the files a firmware build needs for an int8 model, each atomically.

    ``<name>_model_data.h/.cc`` (the model as an aligned C array and its length),
    ``<name>_op_resolver.h`` (a ``MicroMutableOpResolver<N>`` with exactly the model's ops),
    ``<name>_model_settings.h`` (arena size, quantization, labels) and ``<name>_example.cc``
    (the calls a sketch makes).

    Args:
        source: An int8 export bundle or .tflite file.
        out_dir: Where the files go (created if needed).
        name: The C name of the model (default: the model's name, e.g. ``mlp_qat_int8``).
        arena: The arena found earlier (default: found now, under TFLM).

    Returns:
        File role (``model_data_h``, ``model_data_cc``, ``op_resolver``, ``settings``, ``example``) -> path.

    Raises:
        EdgeFMError: Not an int8 model, an op TFLM lacks, TFLM not installed, or an unwritable folder.
    """
    model = read_model(source)
    missing, error = unsupported_ops(model.flatbuffer)
    if missing:
        raise EdgeFMError(refusal(missing))
    if error:
        raise EdgeFMError(f"TFLM could not load {model.path}: {error}")
    ident = c_identifier(name or model.name)
    arena = arena or find_arena(model.flatbuffer)
    out_dir = make_dirs(out_dir, "firmware folder")
    texts = {
        **_model_data_files(model, ident),
        f"{ident}_op_resolver.h": _resolver_file(model_ops(model.flatbuffer), ident),
        f"{ident}_model_settings.h": _settings_file(model, ident, arena, _io_quantization(model.flatbuffer)),
        f"{ident}_example.cc": _example_file(model, ident),
    }
    roles = dict(zip(("model_data_h", "model_data_cc", "op_resolver", "settings", "example"), texts))
    for filename, text in texts.items():
        write_bytes_atomic(out_dir / filename, text.encode())
    return {role: out_dir / filename for role, filename in roles.items()}


# ---------------------------------------------------------------- the stage


def check_images(data_dir: Path | str | None = None, sample: bool = False,
                 count: int | None = DEFAULT_CHECK_IMAGES) -> tuple[np.ndarray, np.ndarray, str]:
    """The first ``count`` test images (None: all), their labels, and a line saying what they are."""
    from edge_fm.data import datasets as data

    if count is not None and count < 1:
        raise EdgeFMError(f"check images {count}: give at least 1.")
    images, labels = data.load_split("test", data.SAMPLE_DIR if sample else data_dir)
    images, labels = images[:count], labels[:count]
    where = "embedded sample test images (NOT the Fashion-MNIST test set)" if sample else "Fashion-MNIST test split"
    return images, labels, f"{where}, first {len(labels)}"


def export_mcu(
    source: Path | str,
    format_name: str | None = None,
    out: Path | str | None = None,
    runs_dir: Path | str = "runs",
    data_dir: Path | str | None = None,
    sample: bool = False,
    images: int | None = DEFAULT_CHECK_IMAGES,
    representative_size: int | None = None,
    parity_images: int | None = 1000,
    progress: Callable[[str], None] | None = None,
) -> Path:
    """Makes the microcontroller form of a model and returns its bundle folder.

    The bundle (``runs/<name>-mcu-N/``, or ``out``) holds the int8 ``model.tflite``, ``labels.txt``,
    ``model.json`` with an ``mcu`` record (runs under TFLM, arena, flash, agreement with LiteRT's
    reference kernels and accuracy on the images checked, boards it fits on), ``manifest.json``
    and ``firmware/`` (see :func:`mcu_files`).

    Args:
        source: A training or QAT run (exported first with ``format_name``), or an int8 export
            bundle or .tflite file (e.g. ``models/mlp``), used as it is.
        format_name: For a run: ``int8`` or ``qat-int8`` (default: ``qat-int8`` for a QAT run, else ``int8``).
        out: The bundle folder (must not exist, or be empty); default a new one under ``runs_dir``.
        runs_dir: Where new bundles (and a run's int8 export) are created.
        data_dir: Where the full dataset is.
        sample: Check on the embedded sample's test images instead (for a bundle; a run uses its own data).
        images: How many test images to check under TFLM (None: all).
        representative_size: Calibration images of a run's int8 export (default: the exporter's).
        parity_images: Validation images of a run's export parity check.
        progress: Called with a line at each step.

    Raises:
        EdgeFMError: A float format or model, an op TFLM lacks (nothing is written for the MCU),
            agreement with the reference below 99%, or a bad path.
    """
    say = progress or (lambda line: None)
    source = Path(source)
    if out is not None:
        _check_empty(Path(out))
    elif source.is_dir() and (source / "config.json").is_file():
        make_dirs(runs_dir, "runs folder")
    test_images, test_labels, images_source, parent = _source_model(source, format_name, runs_dir, data_dir, sample,
                                                                    images, representative_size, parity_images, say)
    model = read_model(parent)
    say(f"running {model.name} under TFLM on {len(test_labels)} test images")
    report = tflm_report(model.path, test_images, test_labels, images_source)
    if not report.runs_under_tflm:
        raise EdgeFMError(report.error)
    if report.agreement_with_litert_reference < MIN_REFERENCE_AGREEMENT:
        raise EdgeFMError(
            f"TFLM agrees with LiteRT's reference kernels on only {report.agreement_with_litert_reference:.2%} of "
            f"{report.images} images (at least {MIN_REFERENCE_AGREEMENT:.0%} expected): the tflite-micro build "
            f"{report.tflm_version} computes this model differently; try another build ({INSTALL_HINT})."
        )
    bundle = Path(out) if out is not None else _new_bundle(runs_dir, f"{model.name}-mcu")
    try:
        say(f"writing {bundle}")
        _write_bundle(bundle, model, report, parent)
    except BaseException:
        shutil.rmtree(bundle, ignore_errors=True)  # no half bundle survives an error or Ctrl-C
        raise
    return bundle


def _check_empty(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise EdgeFMError(f"--out {out} already exists and is not an empty folder: choose a new folder (bundles are never overwritten).")
    check_output_dir(out, "--out")  # made only once the model has passed, so a refusal leaves nothing behind


def _new_bundle(runs_dir: Path | str, name: str) -> Path:
    from edge_fm.train.runs import new_run_dir

    return new_run_dir(runs_dir, name)


def _source_model(source: Path, format_name, runs_dir, data_dir, sample, images, representative_size, parity_images,
                  say) -> tuple[np.ndarray, np.ndarray, str, Path]:
    """The int8 model to use (exported first from a run) and the test images to check it on."""
    if not (source.is_dir() and (source / "config.json").is_file()):
        if format_name is not None:
            raise EdgeFMError(f"{source} is not a run, so there is nothing to export as {format_name}: drop the format "
                              "to use the model as it is.")
        read_model(source)  # refuse a float or uint8 model before loading any data
        return (*check_images(data_dir, sample, images), source)
    from edge_fm.export import exporter as export_lib
    from edge_fm.train.runs import Run

    run = Run(source)
    fmt = export_lib.get_format(format_name or ("qat-int8" if run.quantization_aware else "int8"))
    if not fmt.integer:
        raise EdgeFMError(f"the microcontroller form is an int8 export; format {fmt.name} is not one: export with "
                          "`-f int8` or `-f qat-int8`.")
    say(f"exporting {run.path} as {fmt.name}")
    exported = export_lib.export(run.path, fmt.name, "int8", representative_size or export_lib.REPRESENTATIVE_SIZE,
                                 parity_images, runs_dir, data_dir)
    dataset = run.dataset(data_dir)
    return (dataset.x_test[:images], dataset.y_test[:images],
            f"{dataset.describe()}: test split, first {len(dataset.y_test[:images])}", exported)


def _write_bundle(bundle: Path, model: McuModel, report: TflmReport, parent: Path) -> None:
    from edge_fm.train.runs import write_manifest

    write_bytes_atomic(bundle / "model.tflite", model.flatbuffer)
    write_bytes_atomic(bundle / "labels.txt", ("\n".join(model.labels) + "\n").encode())
    files = mcu_files(model.path, bundle / "firmware", model.name, report.arena)
    description = dict(model.description) or {"name": model.name, "labels": list(model.labels)}
    description["target"] = "mcu"
    description["mcu"] = {**report.as_dict(),
                          "firmware": {role: path.relative_to(bundle).as_posix() for role, path in files.items()}}
    from edge_fm.export.exporter import artifact_record

    description["artifact"] = artifact_record(model.flatbuffer)
    write_json(bundle / "model.json", description)
    write_manifest(bundle, "export", parent=str(parent), format=description.get("format"), target="mcu",
                   status="complete")


# ---------------------------------------------------------------- the bench target


@dataclasses.dataclass
class TflmTarget:
    """``edge-fm bench --target tflm``: accuracy under TFLM, agreement with LiteRT's reference
    kernels, arena and flash; never latency (TFLM on this computer is not a microcontroller).

    Attributes:
        images: Test images run per artifact (None: all); TFLM takes up to ~70 ms an image here.
    """

    images: int | None = DEFAULT_CHECK_IMAGES

    name = "tflm"

    def run(self, artifacts: list[Path], test_set: Path, options=None) -> dict[str, Any]:
        """Rows for ``artifacts`` on the test set the benchmark wrote; one failure is one error row."""
        from edge_fm import runner

        _runtime()  # a missing tflite-micro is one clear error, not one per row
        images, labels = runner.load_test_set(str(test_set))
        images, labels = images[:self.images], labels[:self.images]
        rows = [self.row(path, images, labels) for path in artifacts]
        environment = {
            "interpreter": "tflite-micro", "interpreter_version": tflm_version(),
            "reference": f"ai-edge-litert {_version('ai-edge-litert')} reference kernels (BUILTIN_REF)",
            "cpu": platform.processor() or platform.machine(), "machine": platform.machine(),
            "os": f"{platform.system()} {platform.release()}", "python": platform.python_version(),
            "images_per_artifact": int(len(labels)), "latency": LATENCY_NOTE, "fits_on_note": FIT_NOTE,
        }
        return {"rows": rows, "environment": environment}

    def row(self, path: Path, images: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
        from edge_fm import runner

        row: dict[str, Any] = {"artifact": runner.artifact_name(str(path)), "path": str(path),
                               **runner.sidecar_description(str(path)), **runner.file_sizes(str(path)),
                               "interpreter": "tflite-micro", "latency": None}
        started = time.perf_counter()
        try:
            report = tflm_report(path, images, labels, "benchmark test set")
        except EdgeFMError as exc:
            return {**row, "status": "error", "error": str(exc)}
        except Exception as exc:  # noqa: BLE001 - one artifact's failure is its row, never the sweep's end
            return {**row, "status": "error", "error": f"{type(exc).__name__}: {exc}"}
        record = report.as_dict()
        row.update(
            runs_under_tflm=report.runs_under_tflm, unsupported_ops=list(report.unsupported_ops), ops=list(report.ops),
            arena_bytes=report.arena_bytes, arena_min_bytes=report.arena.min_bytes if report.arena else None,
            flash_bytes=report.flash_bytes, examples=report.images, tflite_micro_version=report.tflm_version,
            agreement_with_litert_reference=report.agreement_with_litert_reference,
            identical_outputs_to_litert_reference=report.identical_outputs,
            max_output_difference_steps=report.max_output_difference, fits_on=record["fits_on"],
            check_seconds=round(time.perf_counter() - started, 1),
        )
        if not report.runs_under_tflm:
            return {**row, "status": "error", "error": report.error}
        return {**row, "accuracy": report.accuracy, "status": "ok"}

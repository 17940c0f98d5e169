"""TensorFlow Lite for Microcontrollers here: does an int8 model run under TFLM, in what arena, and
does it agree with LiteRT's reference kernels?

A microcontroller runs a model with TFLM: the .tflite bytes compiled into flash, a resolver that
registers exactly the model's ops, and a tensor arena in RAM sized for it. This module proves a
model the only way that counts: it runs it under the TFLM interpreter (the ``tflite-micro``
package, ``pip install 'edge-fm[mcu]'``), finds the smallest arena that allocates and runs, and
compares its answers with LiteRT's reference kernels. The microcontroller form
(:mod:`edge_fm.export.mcu`) and the ``tflm`` bench target are built on it.

What it does not measure: speed. TFLM on this computer is not TFLM on a Cortex-M, so no latency is
reported anywhere; time the example on the board itself.

Example:
    >>> report = tflm_report("models/mlp/model.tflite", images, labels)  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.metadata
import math
import os
import re
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edge_fm.errors import EdgeFMError
from edge_fm.export import tflite_file
from edge_fm.export.boards import BOARDS, FIT_NOTE, Board, fits_on  # noqa: F401 (re-exported)
from edge_fm.export.bundles import Bundle

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
LATENCY_NOTE = (
    "not measured: TFLM timed on this computer says nothing of a microcontroller's speed; "
    "time the example on the board"
)
FLASH_NOTE = (
    "the C array holds the .tflite bytes as they are, so it adds nothing to the model's flash "
    f"(at most {ARENA_ALIGNMENT - 1} bytes of alignment padding); TFLM's kernels and the application "
    "take flash of their own"
)

# What to change when TFLM has no kernel for an op.
_OP_FIXES = {
    "GELU": "retrain with a ReLU head (mobilenetv2's default, `--arch-opt head_activation=relu6`)",
    "HARD_SWISH": "retrain with ReLU or ReLU6 activations",
}
_GENERIC_FIX = (
    "retrain without it, using ops TFLM has (Conv2D, DepthwiseConv2D, FullyConnected, "
    "pooling, ReLU, Add, Mean)"
)

# ---------------------------------------------------------------- TFLM itself


def load_runtime():
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
    load_runtime()
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
            lines.extend(
                line.strip() for line in sink.read().decode(errors="replace").splitlines() if line.strip()
            )


def _interpreter(flatbuffer: bytes, arena_size: int, native: list[str] | None = None):
    """A TFLM interpreter with ``arena_size`` bytes of arena; raises RuntimeError if it cannot allocate."""
    tflm_runtime = load_runtime()
    with _native_stderr(native if native is not None else []):
        return tflm_runtime.Interpreter.from_bytes(flatbuffer, arena_size=arena_size)


def _runs(flatbuffer: bytes, arena_size: int, probe: np.ndarray) -> bool:
    """True when the model allocates in ``arena_size`` bytes and one inference succeeds."""
    native: list[str] = []
    try:
        with _native_stderr(native):
            interpreter = load_runtime().Interpreter.from_bytes(flatbuffer, arena_size=arena_size)
            interpreter.set_input(probe, 0)
            interpreter.invoke()
    except RuntimeError:
        return False
    return True


# ---------------------------------------------------------------- reading the model


def check_int8_model(flatbuffer: bytes, source: Path | str) -> None:
    """Checks that a model takes and gives int8 tensors, as TFLM's integer kernels need.

    Raises:
        EdgeFMError: Float or uint8 input or output, with the export option that fixes it.
    """
    try:
        input_type, output_type = tflite_file.io_types(tflite_file.read(flatbuffer))
    except Exception:  # noqa: BLE001 - any parse failure means the same: not a .tflite model
        raise EdgeFMError(
            f"{source} is not a valid .tflite model: re-export it with `edge-fm export RUN -f int8`."
        ) from None
    if (input_type, output_type) != ("INT8", "INT8"):
        raise EdgeFMError(
            f"{source} takes {input_type.lower()} and gives {output_type.lower()}: a microcontroller "
            "needs an int8 model "
            "(int8 input and output); export with `-f int8` or `-f qat-int8` (and the default --io-dtype int8)."
        )


def model_ops(flatbuffer: bytes) -> list[str]:
    """The model's distinct operators (``CONV_2D``, ``CUSTOM:name``...), in order of first use."""
    return tflite_file.op_names(tflite_file.read(flatbuffer), unknown="UNKNOWN")


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
            "how": (
                f"the smallest arena (in steps of {ARENA_ALIGNMENT} bytes) in which TFLM's interpreter allocated "
                "and ran one inference on this 64-bit host, found by binary search; optimized kernels may need "
                "more scratch, 32-bit structs less: the margin covers both, and the board's "
                "interpreter.arena_used_bytes() tells the exact figure"
            ),
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
            raise EdgeFMError(
                refusal(ops)
                if ops
                else f"TFLM could not run the model in {ARENA_PROBE_MAX // 2**20} MiB "
                f"of arena ({error}); a microcontroller cannot either."
            )
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
    graph = tflite_file.read(flatbuffer).subgraphs[0]
    return tuple(int(d) for d in graph.tensors[graph.inputs[0]].shape)


# ---------------------------------------------------------------- running it


def quantize_images(images: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """Raw 0-255 pixels -> int8 input: ``q = round(pixel / scale) + zero_point``, clamped."""
    images = np.asarray(images, dtype=np.float32)
    if images.ndim == 3:  # (N, height, width): one grey channel
        images = images[..., None]
    values = np.round(images / scale + zero_point)
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
            raise EdgeFMError(
                f"TFLM could not allocate the model in {arena_size} bytes of arena: "
                f"{native[-1] if native else exc}."
            ) from None
        details = self.interpreter.get_input_details(0)["quantization_parameters"]
        self.scale, self.zero_point = float(details["scales"][0]), int(details["zero_points"][0])

    def outputs(self, images: np.ndarray) -> np.ndarray:
        """The raw int8 outputs for raw uint8 images ``(N, height, width[, channels])``."""
        rows = []
        for image in quantize_images(images, self.scale, self.zero_point):
            self.interpreter.set_input(image[None], 0)
            self.interpreter.invoke()
            rows.append(np.array(self.interpreter.get_output(0)).reshape(-1))
        return np.stack(rows)


def reference_outputs(flatbuffer: bytes, images: np.ndarray) -> np.ndarray:
    """The raw int8 outputs of LiteRT's reference kernels (``BUILTIN_REF``), one image at a time."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interpreter = Interpreter(
        model_content=flatbuffer, experimental_op_resolver_type=OpResolverType.BUILTIN_REF
    )
    interpreter.allocate_tensors()
    source, target = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    scale, zero_point = source["quantization"]
    rows = []
    for image in quantize_images(images, scale, zero_point):
        interpreter.set_tensor(source["index"], image[None])
        interpreter.invoke()
        rows.append(interpreter.get_tensor(target["index"]).reshape(-1).copy())
    return np.stack(rows)


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


def tflm_report(
    tflite: Path | str | bytes, images: np.ndarray, labels: np.ndarray, images_source: str = "given images"
) -> TflmReport:
    """Runs an int8 model under TFLM on ``images`` and compares it with LiteRT's reference kernels.

    A model with an op TFLM lacks gets a report with ``runs_under_tflm`` False, the ops, and an
    ``error`` that names them and what to change; nothing raises, so a sweep keeps going.

    Args:
        tflite: A .tflite file, an export bundle, or the model's bytes.
        images: Raw uint8 images ``(N, height, width[, channels])``.
        labels: Their classes.
        images_source: What the images are, for the record.

    Returns:
        The :class:`TflmReport`.

    Raises:
        EdgeFMError: TFLM is not installed, or the model is not int8 in and out.
    """
    if isinstance(tflite, bytes):
        flatbuffer, name = tflite, "<bytes>"
    else:
        bundle = Bundle.open(tflite)
        flatbuffer, name = bundle.flatbuffer, str(bundle.path)
    check_int8_model(flatbuffer, name if name != "<bytes>" else "the model")
    images, labels = np.asarray(images), np.asarray(labels)
    if len(images) != len(labels) or len(images) == 0:
        raise EdgeFMError(
            f"give as many labels as images, and at least one image (got {len(images)} and {len(labels)})."
        )
    common = dict(
        model=name,
        flash_bytes=len(flatbuffer),
        images_source=images_source,
        tflm_version=tflm_version(),
        litert_version=package_version("ai-edge-litert"),
    )
    ops = tuple(model_ops(flatbuffer))
    missing, error = unsupported_ops(flatbuffer)
    if missing or error:
        return TflmReport(
            runs_under_tflm=False,
            unsupported_ops=tuple(missing),
            error=refusal(missing) if missing else f"TFLM could not load the model: {error}",
            ops=ops,
            arena=None,
            images=0,
            accuracy=None,
            agreement_with_litert_reference=None,
            identical_outputs=None,
            max_output_difference=None,
            **common,
        )
    arena = find_arena(flatbuffer)
    tflm = TflmModel(flatbuffer, arena.min_bytes).outputs(images)
    reference = reference_outputs(flatbuffer, images)
    return TflmReport(
        runs_under_tflm=True,
        unsupported_ops=(),
        error=None,
        ops=ops,
        arena=arena,
        images=int(len(labels)),
        accuracy=float(np.mean(tflm.argmax(1) == labels)),
        agreement_with_litert_reference=float(np.mean(tflm.argmax(1) == reference.argmax(1))),
        identical_outputs=float(np.mean(np.all(tflm == reference, axis=1))),
        max_output_difference=int(np.abs(tflm.astype(np.int32) - reference.astype(np.int32)).max()),
        **common,
    )


def package_version(distribution: str) -> str:
    """The installed version of a distribution, or ``not installed``."""
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"

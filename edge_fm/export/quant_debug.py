"""Where quantization loses accuracy, layer by layer, by TensorFlow's QuantizationDebugger.

The debugger converts the float model as the exporter does (:mod:`edge_fm.export.exporter`), runs
the quantized model and, layer by layer, the float computation on the same quantized inputs, so
each layer's error is its own. The same debugger quantizes selectively (some ops kept in float).

Example:
    >>> layers = layer_errors(model, "int8", calibration, images)  # doctest: +SKIP
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from edge_fm.errors import EdgeFMError

# RMSE of pure rounding to a step of 1 (a uniform error on [-0.5, 0.5]): a layer near it loses nothing else.
ROUNDING_RMSE = 1 / math.sqrt(12)
# TensorFlow's debugger requantizes to int8 only (per-channel or per-tensor): it would report an int16x8
# artifact's layers as if they were int8, so it is not asked to.
DEBUGGED_FORMATS = ("int8", "int8-per-tensor", "qat-int8")


def _debugger(
    model,
    format_name: str,
    calibration: np.ndarray,
    images: np.ndarray,
    denylisted_ops: Sequence[str] = (),
    denylisted_nodes: Sequence[str] = (),
):
    """TensorFlow's QuantizationDebugger on the float model, converted as ``format_name`` converts it."""
    from edge_fm.compat import native_stderr_silenced, tf
    from edge_fm.export.converter import representative_dataset, tflite_converter
    from edge_fm.export.formats import get_format

    # The debugger compares float and quantized tensors, so it needs float input and output.
    converter = tflite_converter(model, get_format(format_name), "float32", calibration)
    options = tf.lite.experimental.QuantizationDebugOptions(
        denylisted_ops=list(denylisted_ops) or None, denylisted_nodes=list(denylisted_nodes) or None
    )
    with native_stderr_silenced(), warnings.catch_warnings():
        warnings.filterwarnings("ignore")
        try:
            return tf.lite.experimental.QuantizationDebugger(
                converter=converter,
                debug_dataset=lambda: representative_dataset(images),
                debug_options=options,
            )
        except ValueError as exc:
            if "debug mode" in str(exc):
                return None  # QAT set the range of every op: none was left to the converter to verify
            raise EdgeFMError(
                f"the quantization debugger cannot run {format_name}: {str(exc).splitlines()[0][:300]}"
            ) from None
        except Exception as exc:  # noqa: BLE001 - the converter inside raises many types
            raise EdgeFMError(
                f"the quantization debugger cannot run {format_name}: {type(exc).__name__}: "
                f"{str(exc).splitlines()[0][:300]}"
            ) from None


def layer_errors(
    model, format_name: str, calibration: np.ndarray, images: np.ndarray
) -> list[dict[str, Any]]:
    """Where quantization loses accuracy: each quantized layer's own error, worst first.

    TensorFlow's quantization debugger runs the quantized model and, layer by layer, the float
    computation on the same quantized inputs, so each layer's error is its own, not what earlier
    layers passed on.

    Args:
        model: The float Keras model (a QAT model for ``qat-int8``).
        format_name: The integer format the artifact was exported as.
        calibration: Raw images for calibration, as the exporter draws them.
        images: Raw images the errors are measured on (validation images, not test).

    Returns:
        One dict per quantized layer: ``op``, ``tensor`` (the output tensor, named after the Keras
        layers folded into it), ``rmse_per_scale`` (root-mean-square error in units of the
        quantization step; rounding alone gives about 0.29), ``max_abs_error_per_scale``,
        ``mean_error_per_scale`` (a bias) and ``scale``. Empty when QAT set every range.
    """
    debugger = _debugger(model, format_name, calibration, images)
    if debugger is None:
        return []
    from edge_fm.compat import native_stderr_silenced

    with native_stderr_silenced(), warnings.catch_warnings():
        warnings.filterwarnings("ignore")
        debugger.run()
        dump = io.StringIO()
        debugger.layer_statistics_dump(dump)
    rows = []
    for row in csv.DictReader(io.StringIO(dump.getvalue())):
        if not row["mean_squared_error"] or not row["scale"] or float(row["scale"]) == 0:
            continue
        scale = float(row["scale"])
        rows.append(
            {
                "op": row["op_name"],
                "tensor": row["tensor_name"],
                "rmse_per_scale": float(np.sqrt(float(row["mean_squared_error"])) / scale),
                "max_abs_error_per_scale": float(row["max_abs_error"]) / scale,
                "mean_error_per_scale": float(row["mean_error"]) / scale,
                "scale": scale,
            }
        )
    return sorted(rows, key=lambda row: -row["rmse_per_scale"])


def mixed_models(
    model,
    format_name: str,
    calibration: np.ndarray,
    images: np.ndarray,
    keep_float: Sequence[str],
    layers: Sequence[dict[str, Any]],
    op_kinds: Sequence[str],
) -> tuple[bytes, bytes, list[str], list[str]]:
    """The fully quantized and the selectively quantized (``keep_float`` in float) models, float I/O both."""
    from edge_fm.compat import native_stderr_silenced

    tensors = {layer["tensor"] for layer in layers}
    ops = [name for name in keep_float if name in op_kinds]
    nodes = [name for name in keep_float if name not in op_kinds and name in tensors]
    unknown = [name for name in keep_float if name not in ops and name not in nodes]
    if unknown:
        raise EdgeFMError(
            f"--keep-float {', '.join(unknown)} names no op of the model: give op kinds "
            f"({', '.join(sorted(set(op_kinds)))}) or layer tensors as `edge-fm inspect` lists them."
        )
    full = _debugger(model, format_name, calibration, images)
    mixed = _debugger(model, format_name, calibration, images, denylisted_ops=ops, denylisted_nodes=nodes)
    if full is None or mixed is None:
        raise EdgeFMError(
            f"--keep-float: QAT set every range of this {format_name} model, so the debugger cannot "
            "requantize it selectively; use a post-training int8 export's source run."
        )
    with native_stderr_silenced(), warnings.catch_warnings():
        warnings.filterwarnings("ignore")
        return (
            bytes(full.get_nondebug_quantized_model()),
            bytes(mixed.get_nondebug_quantized_model()),
            ops,
            nodes,
        )


def int8_error_by_op(
    model, calibration: np.ndarray, images: np.ndarray, format_name: str = "int8"
) -> list[dict[str, Any]]:
    """Where int8 conversion loses accuracy: each quantized op's error, worst first.

    The short form of :func:`layer_errors` (TensorFlow's quantization debugger),
    which gives more statistics per layer.

    Args:
        model: A float Keras model (a QAT model for ``qat-int8``).
        calibration: Raw images for calibration, as :func:`edge_fm.export.converter.convert` takes them.
        images: Raw images the errors are measured on (validation images, not test).
        format_name: ``int8``, ``int8-per-tensor`` or ``qat-int8`` (the debugger requantizes to int8 only).

    Returns:
        One dict per op the converter quantized (for a QAT model, only the ops whose ranges QAT
        did not set; none if it set them all): ``op`` (TFLite op name), ``tensor`` (its output tensor, named after the
        Keras layers folded into it) and ``rmse_per_scale`` (root-mean-square error of its output in
        units of the output's quantization step: rounding alone gives about 0.29).
    """
    return [
        {"op": row["op"], "tensor": row["tensor"], "rmse_per_scale": row["rmse_per_scale"]}
        for row in layer_errors(model, format_name, calibration, images)
    ]


@dataclasses.dataclass(frozen=True)
class DebugData:
    """What the debugger runs on for a run (:func:`debug_data`).

    Attributes:
        dataset: The run's dataset.
        calibration: Calibration images, drawn as the run's export draws them.
        images: The first validation images, which the error is measured on.
        labels: Their labels.
        calibration_count: How many calibration images were asked for.
    """

    dataset: Any
    calibration: np.ndarray
    images: np.ndarray
    labels: np.ndarray
    calibration_count: int


def debug_data(run, data_dir, images: int, calibration: int | None) -> DebugData:
    """What the debugger (and a ``--keep-float`` comparison) runs on for a run: its first ``images``
    validation images, and ``calibration`` calibration images (default: the exporter's count)."""
    from edge_fm.export.converter import representative_images
    from edge_fm.export.form_options import REPRESENTATIVE_SIZE

    dataset = run.dataset(data_dir)
    count = calibration or REPRESENTATIVE_SIZE
    return DebugData(
        dataset,
        representative_images(dataset.x_train, count, run.train_config.seed),
        dataset.x_val[:images],
        dataset.y_val[:images],
        count,
    )

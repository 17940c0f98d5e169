"""Know an artifact before shipping it: its ops, where quantization loses accuracy, and what runs it.

:func:`inspect_artifact` answers, for any .tflite file or export bundle:

- per op: its kind, shapes, parameters, multiply-accumulates (MACs) and share of the total, and its
  quantization (per-channel or per-tensor weights, their scales; the activations' type and scale);
- for a quantized artifact whose float source run is on this machine, the layer-wise error of the
  quantized tensors on validation images, ranked (TensorFlow's ``QuantizationDebugger``: each
  layer's own error, on the quantized model's inputs, in units of its quantization step);
- without the source run, or for a qat-int8 artifact (QAT fixed every range, so the debugger finds
  nothing), the error of each int8 activation against the artifact's float twin, ranked by what
  each op adds (:mod:`edge_fm.bench.twin_error`: activation rounding and clipping, accumulated along
  the network, against the artifact's own weights in float; the weights' own rounding is not in it);
- with ``keep_float``, the same debugger's selective quantization: a mixed artifact that keeps
  those ops in float, with the accuracy, size and latency it buys (:mod:`edge_fm.bench.keep_float`);
- what each runtime runs (:func:`edge_fm.export.runtimes.runs_on`).

The shipped models' runs stay on the machine that trained them, so their error is the float twin's;
without images of the model's dataset the static part still works, and the report says what the
error analysis needs.

Example:
    >>> report = inspect_artifact("models/edge-cnn-tiny")  # doctest: +SKIP
    >>> [op["op"] for op in report["ops"]][:3]  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from edge_fm.bench.keep_float import keep_float_bundle
from edge_fm.errors import EdgeFMError
from edge_fm.export.bundles import artifact_file, artifact_record, describe, is_run
from edge_fm.export.op_table import kinds, op_table, quantization_scheme
from edge_fm.export.quant_debug import DEBUGGED_FORMATS, ROUNDING_RMSE, DebugData, debug_data, layer_errors
from edge_fm.export.source_runs import source_run as recorded_source_run

DEBUG_IMAGES = 200  # validation images the quantization debugger (or the float twin) runs
TOP_LAYERS = 10  # layers printed as the worst-quantized


def inspect_artifact(
    path: Path | str,
    source_run: Path | str | None = None,
    data_dir: Path | str | None = None,
    images: int = DEBUG_IMAGES,
    calibration: int | None = None,
    keep_float: Sequence[str] = (),
    out: Path | str | None = None,
    runs_dir: Path | str = "runs",
    runtimes: Sequence[str] | None = None,
    ethos_u_configs: Sequence[str] | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Inspects an artifact: ops, MACs, quantization, layer-wise quantization error, and runtimes.

    Args:
        path: A .tflite file or an export bundle.
        source_run: The float run the artifact was exported from (default: the one its ``model.json``
            names, when that folder exists here).
        data_dir: Where the full dataset is (default: where the run read it).
        images: Validation images the quantization debugger and a ``keep_float`` comparison run on.
        calibration: Calibration images (default: the exporter's); the debugger calibrates as the
            export did, from the run's training images with the run's seed.
        keep_float: Op kinds (``CONV_2D``) or layer tensors to keep in float: writes the mixed
            artifact as a bundle and compares it with the fully quantized one.
        out: The mixed artifact's bundle folder (default: a new ``runs_dir/<name>-mixed-N``).
        runs_dir: Where the mixed bundle is created.
        runtimes: Which runtimes to answer for (default: all of ``edge_fm.export.runtimes.RUNTIMES``; empty: none).
        ethos_u_configs: Ethos-U configurations to estimate.
        progress: Called with a line at each step.

    Returns:
        ``artifact``, ``summary``, ``kinds``, ``ops``, ``runtimes``, ``errors`` and (with
        ``keep_float``) ``keep_float``.

    Raises:
        EdgeFMError: Not an artifact, a ``keep_float`` name the model lacks, a named source run that
            is not a run, or a ``keep_float`` with no source run.
    """
    from edge_fm.errors import unknown_choice
    from edge_fm.export import runtimes as runtimes_lib
    from edge_fm.export.vela import get_config

    for name in runtimes or ():
        if name not in runtimes_lib.RUNTIMES:
            raise unknown_choice("runtime", name, runtimes_lib.RUNTIMES)
    for name in ethos_u_configs or ():
        get_config(name)  # an unknown configuration is refused before any work
    say = progress or (lambda line: None)
    tflite = artifact_file(path)
    flatbuffer = tflite.read_bytes()
    description = dict(describe(tflite).description)  # none for a foreign file: the static part needs none
    try:
        ops = op_table(flatbuffer)
    except EdgeFMError as exc:  # a cut or corrupt file: named, in one line
        raise EdgeFMError(f"{tflite}: {exc}") from None
    format_name = description.get("format")
    quantized = any(op["weights"] or op["activations"] for op in ops)
    report: dict[str, Any] = {
        "artifact": {
            "path": str(tflite),
            "name": description.get("name", tflite.parent.name),
            "format": format_name,
            "architecture": description.get("architecture"),
            **artifact_record(flatbuffer, tflite.name),
        },
        "summary": {
            "ops": len(ops),
            "macs": sum(op["macs"] for op in ops),
            "params": sum(op["params"] for op in ops),
            "quantization": quantization_scheme(ops),
        },
        "kinds": kinds(ops),
        "ops": ops,
    }
    if keep_float and not quantized:
        raise EdgeFMError(f"--keep-float: {tflite} is a float artifact; there is nothing to keep in float.")
    run = _source_run(tflite, description, source_run, quantized, format_name)
    if keep_float and run is None:
        raise EdgeFMError(f"--keep-float on {tflite}: {_no_source_reason(description, format_name)}.")
    debugged = None
    if run is not None:
        say(f"running TensorFlow's quantization debugger on {run.path} ({format_name})")
        data = debug_data(
            run, data_dir, images, calibration
        )  # the debugger's and a --keep-float comparison's
        debugged = _errors(run, format_name, data)
    if debugged is not None and debugged["layers"]:
        report["errors"] = debugged
    else:
        # No source run, or QAT fixed every range so the debugger found nothing: the float twin needs neither.
        report["errors"] = _source_free_errors(
            flatbuffer, ops, description, format_name, data_dir, images, debugged, say
        )
    if run is not None and keep_float:
        say(f"quantizing {run.path} with {', '.join(keep_float)} kept in float")
        report["keep_float"] = keep_float_bundle(
            run,
            format_name,
            data,
            keep_float,
            ops,
            debugged["layers"],
            description,
            out,
            runs_dir,
        )
    if runtimes is None or runtimes:
        say("asking each runtime what it runs")
        report["runtimes"] = runtimes_lib.runs_on(tflite, ethos_u_configs, runtimes or runtimes_lib.RUNTIMES)
        report["runs_on"] = runtimes_lib.summary_rows(report["runtimes"])
    return report


def _source_free_errors(flatbuffer, ops, description, format_name, data_dir, images, debugged, say):
    """The layer-wise error measured against the artifact's float twin (:mod:`edge_fm.bench.twin_error`)."""
    from edge_fm.bench.twin_error import TWIN_HOW, TWIN_MEASURE, twin_applies, twin_errors, twin_images

    if not any(op["weights"] or op["activations"] for op in ops):
        return {"status": "not measured", "reason": "a float artifact has no quantization error"}
    if not twin_applies(ops):
        return debugged or {"status": "not measured", "reason": _no_source_reason(description, format_name)}
    try:
        val_images, val_labels, data = twin_images(description, data_dir, images)
    except EdgeFMError as exc:
        return {
            "status": "not measured",
            "reason": "the layer-wise error runs the artifact on its dataset's validation images: "
            + str(exc).rstrip("."),
        }
    try:
        measured = twin_errors(flatbuffer, val_images, val_labels, say)
    except (ValueError, RuntimeError) as exc:  # a graph the twin cannot follow, an op without a float kernel
        return {
            "status": "not measured",
            "reason": f"the float twin cannot run: {str(exc).splitlines()[0][:300]}",
        }
    errors = {
        "status": "measured",
        "method": "float twin",
        "measures": TWIN_MEASURE,
        "format": format_name,
        "images": measured["twin"]["images"],
        "data": data,
        "rounding_rmse": ROUNDING_RMSE,
        "twin": measured["twin"],
        "layers": measured["layers"],
        "note": "ranked by the error each op adds: its RMSE minus its inputs' share (their largest "
        "error-to-signal ratio at the size of its output), in its output's quantization steps",
        "how": TWIN_HOW,
    }
    if debugged is not None:
        errors["debugger"] = debugged["note"]
    return errors


def _no_source_reason(description: dict[str, Any], format_name: str | None) -> str:
    named = description.get("source", {}).get("run")
    if format_name == "int16x8":
        return (
            "TensorFlow's QuantizationDebugger requantizes to int8 only, so it cannot measure an int16x8 artifact's "
            "layers; inspect the run's int8 export to see which layers lose most"
        )
    if format_name not in DEBUGGED_FORMATS:
        return (
            f"the quantization debugger needs an int8 export of edge-fm ({', '.join(DEBUGGED_FORMATS)}), "
            f"not {format_name or 'an unknown format'}"
        )
    if named:
        return (
            f"the layer-wise error needs the float source run {named}, which is not on this machine (a run "
            "found under that name is another model): pass --source RUN (the run that was exported)"
        )
    return "the artifact names no source run: pass --source RUN (the run that was exported)"


def _source_run(
    tflite: Path, description: dict[str, Any], source_run, quantized: bool, format_name: str | None
):
    from edge_fm.train.runs import Run

    if source_run is not None:
        if not is_run(source_run):
            raise EdgeFMError(f"--source {source_run} is not a run directory (no config.json).")
        if format_name not in DEBUGGED_FORMATS:
            raise EdgeFMError(f"--source: {_no_source_reason(description, format_name)}.")
        return Run(source_run)
    if not quantized or format_name not in DEBUGGED_FORMATS:
        return None
    return recorded_source_run(tflite, description)


def _errors(run, format_name: str, data: DebugData) -> dict[str, Any]:
    layers = layer_errors(run.model_to_convert(), format_name, data.calibration, data.images)
    note = (
        "quantization-aware training set the range of every layer: the converter quantized none itself"
        if not layers
        else "each layer's own error on the quantized model's inputs, in quantization steps"
    )
    return {
        "status": "measured",
        "method": "quantization debugger",
        "measures": "each layer's own error on the quantized model's inputs against the float source run "
        "(the weights' rounding included)",
        "source_run": str(run.path),
        "format": format_name,
        "images": int(len(data.images)),
        "data": f"{data.dataset.describe()}: validation split, first {len(data.images)}",
        "calibration_images": data.calibration_count,
        "rounding_rmse": ROUNDING_RMSE,
        "layers": layers,
        "note": note,
        "how": "TensorFlow's tf.lite.experimental.QuantizationDebugger (layer_statistics_dump)",
    }


def worst_layers(report: dict[str, Any], count: int = TOP_LAYERS) -> list[dict[str, Any]]:
    """The ``count`` layers that lose most to quantization (empty when the error was not measured)."""
    return report.get("errors", {}).get("layers", [])[:count]

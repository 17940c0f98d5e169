"""Know an artifact before shipping it: its ops, where quantization loses accuracy, and what runs it.

:func:`inspect_artifact` answers, for any .tflite file or export bundle:

- per op: its kind, shapes, parameters, multiply-accumulates (MACs) and share of the total, and its
  quantization (per-channel or per-tensor weights, their scales; the activations' type and scale);
- for a quantized artifact whose float source run is on this machine, the layer-wise error of the
  quantized tensors on validation images, ranked (TensorFlow's ``QuantizationDebugger``: each
  layer's own error, on the quantized model's inputs, in units of its quantization step);
- with ``keep_float``, the same debugger's selective quantization: a mixed artifact that keeps
  those ops in float, with the accuracy, size and latency it buys;
- what each runtime runs (``edge_fm.runtimes.runs_on``).

Without the source run (the shipped models' runs stay on the machine that trained them) the static
part still works, and the report says what the error analysis needs.

Example:
    >>> report = inspect_artifact("models/edge-cnn-tiny")  # doctest: +SKIP
    >>> [op["op"] for op in report["ops"]][:3]  # doctest: +SKIP
"""

from __future__ import annotations

import csv
import io
import math
import shutil
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edge_fm.errors import EdgeFMError

DEBUG_IMAGES = 200  # validation images the quantization debugger runs
TOP_LAYERS = 10  # layers printed as the worst-quantized
LATENCY_RUNS = 200  # batch-1 runs timed per model of a --keep-float comparison
# RMSE of pure rounding to a step of 1 (a uniform error on [-0.5, 0.5]): a layer near it loses nothing else.
ROUNDING_RMSE = 1 / math.sqrt(12)

_WEIGHTED = {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV"}


# ---------------------------------------------------------------- the static part


def _tensor_name(tensor) -> str:
    return tensor.name.decode() if isinstance(tensor.name, bytes) else str(tensor.name)


def _shape(tensor) -> list[int]:
    return [int(d) for d in (tensor.shape if tensor.shape is not None else [])]


def _quantization(tensor, type_name: str) -> dict[str, Any] | None:
    q = tensor.quantization
    scales = [] if q is None or q.scale is None else [float(s) for s in q.scale]
    if not scales:
        return None
    return {"dtype": type_name.lower(), "scheme": "per-channel" if len(scales) > 1 else "per-tensor",
            "scales": len(scales), "scale_min": min(scales), "scale_max": max(scales),
            "zero_point": int(q.zeroPoint[0]) if q.zeroPoint is not None and len(q.zeroPoint) else 0}


def _macs(kind: str, inputs: list, output_shape: list[int]) -> int:
    """Multiply-accumulates of one op at batch 1 (convolutions and fully connected layers; 0 otherwise)."""
    if kind not in _WEIGHTED or len(inputs) < 2 or inputs[1] is None:
        return 0
    weights = _shape(inputs[1])
    out = int(np.prod([abs(d) for d in output_shape[1:]])) if output_shape else 0
    if kind == "CONV_2D":  # weights [out_ch, kh, kw, in_ch]
        return out * int(np.prod(weights[1:]))
    if kind == "DEPTHWISE_CONV_2D":  # weights [1, kh, kw, out_ch]
        return out * weights[1] * weights[2]
    if kind == "FULLY_CONNECTED":  # weights [units, features]
        return out * weights[-1]
    if kind == "TRANSPOSE_CONV":  # weights [out_ch, kh, kw, in_ch], one product per input element and tap
        source = _shape(inputs[2]) if len(inputs) > 2 and inputs[2] is not None else []
        return int(np.prod([abs(d) for d in source[1:]])) * weights[0] * weights[1] * weights[2]
    return 0


def op_table(flatbuffer: bytes) -> list[dict[str, Any]]:
    """Every op of the main graph: kind, output name and shape, input shapes, parameters, MACs, quantization.

    ``weights`` is the quantization of the op's constant weight tensor (per-channel or per-tensor,
    how many scales, their range), ``activations`` that of its output; ``None`` where float.
    """
    from edge_fm.export import _schema

    schema, flatbuffer_utils = _schema()
    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(flatbuffer))
    op_names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    type_names = {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    graph = model.subgraphs[0]

    def constant(index: int) -> bool:
        buffer = model.buffers[graph.tensors[index].buffer]
        return buffer.data is not None and len(buffer.data) > 0

    rows = []
    for position, op in enumerate(graph.operators):
        code = model.operatorCodes[op.opcodeIndex]
        kind = op_names.get(max(code.builtinCode, code.deprecatedBuiltinCode), "?")
        inputs = [graph.tensors[i] if i >= 0 else None for i in op.inputs]
        output = graph.tensors[op.outputs[0]]
        output_shape = _shape(output)
        # Only weighted ops have weights: another op's constant input is an axis, a shape or an operand.
        weighted = kind in _WEIGHTED
        weights = next((graph.tensors[i] for i in op.inputs[1:2] if weighted and i >= 0 and constant(i)), None)
        rows.append({
            "index": position,
            "op": kind,
            "name": _tensor_name(output),
            "input_shapes": [_shape(graph.tensors[i]) for i in op.inputs if i >= 0 and not constant(i)],
            "output_shape": output_shape,
            "params": int(sum(np.prod(_shape(graph.tensors[i])) for i in op.inputs if weighted and i >= 0 and constant(i))),
            "macs": _macs(kind, inputs, output_shape),
            "weights": _quantization(weights, type_names.get(weights.type, "?")) if weights is not None else None,
            "weights_dtype": type_names.get(weights.type, "?").lower() if weights is not None else None,
            "activations": _quantization(output, type_names.get(output.type, "?")),
            "activations_dtype": type_names.get(output.type, "?").lower(),
        })
    total = sum(row["macs"] for row in rows) or 1
    for row in rows:
        row["macs_share"] = row["macs"] / total
    return rows


def kinds(ops: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The ops grouped by kind: count, MACs and share, parameters, the weights' schemes; most MACs first."""
    grouped: dict[str, dict[str, Any]] = {}
    for op in ops:
        entry = grouped.setdefault(op["op"], {"op": op["op"], "count": 0, "macs": 0, "macs_share": 0.0, "params": 0,
                                              "schemes": set(), "activations": set()})
        entry["count"] += 1
        entry["macs"] += op["macs"]
        entry["macs_share"] += op["macs_share"]
        entry["params"] += op["params"]
        if op["weights"]:
            entry["schemes"].add(f"{op['weights']['dtype']} {op['weights']['scheme']}")
        elif op["weights_dtype"]:
            entry["schemes"].add(op["weights_dtype"])
        entry["activations"].add(op["activations_dtype"])
    out = [{**entry, "schemes": sorted(entry["schemes"]), "activations": sorted(entry["activations"])}
           for entry in grouped.values()]
    return sorted(out, key=lambda entry: (-entry["macs"], entry["op"]))


def quantization_scheme(ops: Sequence[dict[str, Any]]) -> str:
    """One phrase for the whole artifact: ``int8 weights per-channel, int8 activations``, or ``float``."""
    weighted = [op for op in ops if op["op"] in _WEIGHTED and op["weights_dtype"]]
    weights = sorted({f"{op['weights_dtype']}" + (f" {op['weights']['scheme']}" if op["weights"] else "")
                      for op in weighted})
    activations = sorted({op["activations_dtype"] for op in ops if op["op"] in _WEIGHTED})
    if not weights:
        return f"{'/'.join(activations) or 'unknown'} activations"
    return f"{' + '.join(weights)} weights, {'/'.join(activations)} activations"


# ---------------------------------------------------------------- the quantization debugger


def _representative_dataset(images: np.ndarray) -> Iterator[list[np.ndarray]]:
    for image in images:
        yield [image[None].astype(np.float32)]


def _debugger(model, format_name: str, calibration: np.ndarray, images: np.ndarray,
              denylisted_ops: Sequence[str] = (), denylisted_nodes: Sequence[str] = ()):
    """TensorFlow's QuantizationDebugger on the float model, converted as ``format_name`` converts it."""
    from edge_fm.compat import native_stderr_silenced, tf
    from edge_fm.export import _converter, get_format

    # The debugger compares float and quantized tensors, so it needs float input and output.
    converter = _converter(model, get_format(format_name), "float32", calibration)
    options = tf.lite.experimental.QuantizationDebugOptions(
        denylisted_ops=list(denylisted_ops) or None, denylisted_nodes=list(denylisted_nodes) or None)
    with native_stderr_silenced(), warnings.catch_warnings():
        warnings.filterwarnings("ignore")
        try:
            return tf.lite.experimental.QuantizationDebugger(
                converter=converter, debug_dataset=lambda: _representative_dataset(images), debug_options=options)
        except ValueError as exc:
            if "debug mode" in str(exc):
                return None  # QAT set the range of every op: none was left to the converter to verify
            raise EdgeFMError(f"the quantization debugger cannot run {format_name}: {str(exc).splitlines()[0][:300]}") from None
        except Exception as exc:  # noqa: BLE001 - the converter inside raises many types
            raise EdgeFMError(f"the quantization debugger cannot run {format_name}: {type(exc).__name__}: "
                              f"{str(exc).splitlines()[0][:300]}") from None


def layer_errors(model, format_name: str, calibration: np.ndarray, images: np.ndarray) -> list[dict[str, Any]]:
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
        rows.append({"op": row["op_name"], "tensor": row["tensor_name"],
                     "rmse_per_scale": float(np.sqrt(float(row["mean_squared_error"])) / scale),
                     "max_abs_error_per_scale": float(row["max_abs_error"]) / scale,
                     "mean_error_per_scale": float(row["mean_error"]) / scale, "scale": scale})
    return sorted(rows, key=lambda row: -row["rmse_per_scale"])


def _mixed_model(model, format_name: str, calibration: np.ndarray, images: np.ndarray, keep_float: Sequence[str],
                 layers: Sequence[dict[str, Any]], op_kinds: Sequence[str]) -> tuple[bytes, bytes, list[str], list[str]]:
    """The fully quantized and the selectively quantized (``keep_float`` in float) models, float I/O both."""
    from edge_fm.compat import native_stderr_silenced

    tensors = {layer["tensor"] for layer in layers}
    ops = [name for name in keep_float if name in op_kinds]
    nodes = [name for name in keep_float if name not in op_kinds and name in tensors]
    unknown = [name for name in keep_float if name not in ops and name not in nodes]
    if unknown:
        raise EdgeFMError(f"--keep-float {', '.join(unknown)} names no op of the model: give op kinds "
                          f"({', '.join(sorted(set(op_kinds)))}) or layer tensors as `edge-fm inspect` lists them.")
    full = _debugger(model, format_name, calibration, images)
    mixed = _debugger(model, format_name, calibration, images, denylisted_ops=ops, denylisted_nodes=nodes)
    if full is None or mixed is None:
        raise EdgeFMError(f"--keep-float: QAT set every range of this {format_name} model, so the debugger cannot "
                          "requantize it selectively; use a post-training int8 export's source run.")
    with native_stderr_silenced(), warnings.catch_warnings():
        warnings.filterwarnings("ignore")
        return bytes(full.get_nondebug_quantized_model()), bytes(mixed.get_nondebug_quantized_model()), ops, nodes


def _score(flatbuffer: bytes, images: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    from edge_fm.runner import TFLiteModel, summarize_latency, time_invocations

    model = TFLiteModel(model_content=flatbuffer, num_threads=1)
    accuracy = float(np.mean(model.predict_proba(images).argmax(1) == labels))
    one = model.quantize_input(images[:1])
    model.invoke(one)
    latency = summarize_latency(time_invocations(lambda: model.invoke(one), LATENCY_RUNS, 0.5, 10.0))
    return {"bytes": len(flatbuffer), "accuracy": accuracy, "p50_ms": latency["p50_ms"]}


# ---------------------------------------------------------------- the whole inspection


def artifact_path(path: Path | str) -> Path:
    """The .tflite file of ``path`` (a file, or a bundle folder holding ``model.tflite``).

    Raises:
        EdgeFMError: Neither.
    """
    path = Path(path)
    if path.is_dir():
        if (path / "config.json").is_file():
            raise EdgeFMError(f"{path} is a run, not an export: `edge-fm export {path} -f int8` makes one to inspect.")
        if not (path / "model.tflite").is_file():
            raise EdgeFMError(f"{path} holds no model.tflite (a shipped model too large to keep has none): pass an "
                              "artifact or an export bundle.")
        path = path / "model.tflite"
    if not path.is_file() or path.suffix != ".tflite":
        raise EdgeFMError(f"{path} is not a .tflite file: pass an artifact or an export bundle (e.g. models/edge-cnn-tiny).")
    return path


def _description(tflite: Path) -> dict[str, Any]:
    from edge_fm.export import read_metadata
    from edge_fm.io import read_json

    sidecar = tflite.with_name("model.json")
    if sidecar.is_file():
        return read_json(sidecar)
    try:
        return read_metadata(tflite)["description"]
    except Exception:  # noqa: BLE001 - a foreign .tflite has no edge-fm description; the static part needs none
        return {}


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
        runtimes: Which runtimes to answer for (default: all of ``edge_fm.runtimes.RUNTIMES``; empty: none).
        ethos_u_configs: Ethos-U configurations to estimate.
        progress: Called with a line at each step.

    Returns:
        ``artifact``, ``summary``, ``kinds``, ``ops``, ``runtimes``, ``errors`` and (with
        ``keep_float``) ``keep_float``.

    Raises:
        EdgeFMError: Not an artifact, a ``keep_float`` name the model lacks, a named source run that
            is not a run, or a ``keep_float`` with no source run.
    """
    from edge_fm import runtimes as runtimes_lib
    from edge_fm.export import artifact_record

    say = progress or (lambda line: None)
    tflite = artifact_path(path)
    flatbuffer = tflite.read_bytes()
    description = _description(tflite)
    ops = op_table(flatbuffer)
    format_name = description.get("format")
    quantized = any(op["weights"] or op["activations"] for op in ops)
    report: dict[str, Any] = {
        "artifact": {"path": str(tflite), "name": description.get("name", tflite.parent.name), "format": format_name,
                     "architecture": description.get("architecture"), **artifact_record(flatbuffer, tflite.name)},
        "summary": {"ops": len(ops), "macs": sum(op["macs"] for op in ops), "params": sum(op["params"] for op in ops),
                    "quantization": quantization_scheme(ops)},
        "kinds": kinds(ops),
        "ops": ops,
    }
    if keep_float and not quantized:
        raise EdgeFMError(f"--keep-float: {tflite} is a float artifact; there is nothing to keep in float.")
    run = _source_run(description, source_run, quantized, format_name)
    if keep_float and run is None:
        raise EdgeFMError(f"--keep-float on {tflite}: {_no_source_reason(description, format_name)}.")
    if run is None:
        report["errors"] = {"status": "not measured", "reason": _no_source_reason(description, format_name) if quantized
                            else "a float artifact has no quantization error"}
    else:
        say(f"running TensorFlow's quantization debugger on {run.path} ({format_name})")
        report["errors"] = _errors(run, format_name, data_dir, images, calibration)
        if keep_float:
            say(f"quantizing {run.path} with {', '.join(keep_float)} kept in float")
            report["keep_float"] = _keep_float(run, format_name, data_dir, images, calibration, keep_float, ops,
                                               report["errors"]["layers"], description, out, runs_dir)
    if runtimes is None or runtimes:
        say("asking each runtime what it runs")
        report["runtimes"] = runtimes_lib.runs_on(tflite, ethos_u_configs, runtimes or runtimes_lib.RUNTIMES)
        report["runs_on"] = runtimes_lib.summary_rows(report["runtimes"])
    return report


def _no_source_reason(description: dict[str, Any], format_name: str | None) -> str:
    named = description.get("source", {}).get("run")
    if format_name == "int16x8":
        return ("TensorFlow's QuantizationDebugger requantizes to int8 only, so it cannot measure an int16x8 artifact's "
                "layers; inspect the run's int8 export to see which layers lose most")
    if format_name not in _DEBUGGED_FORMATS:
        return f"the quantization debugger needs an int8 export of edge-fm ({', '.join(_DEBUGGED_FORMATS)}), not {format_name or 'an unknown format'}"
    if named:
        return (f"the layer-wise error needs the float source run {named}, which is not on this machine: pass "
                "--source RUN (the run that was exported)")
    return "the artifact names no source run: pass --source RUN (the run that was exported)"


# TensorFlow's debugger requantizes to int8 only (per-channel or per-tensor): it would report an int16x8
# artifact's layers as if they were int8, so it is not asked to.
_DEBUGGED_FORMATS = ("int8", "int8-per-tensor", "qat-int8")


def _source_run(description: dict[str, Any], source_run, quantized: bool, format_name: str | None):
    from edge_fm.runs import Run

    if source_run is not None:
        if not (Path(source_run) / "config.json").is_file():
            raise EdgeFMError(f"--source {source_run} is not a run directory (no config.json).")
        if format_name not in _DEBUGGED_FORMATS:
            raise EdgeFMError(f"--source: {_no_source_reason(description, format_name)}.")
        return Run(source_run)
    named = description.get("source", {}).get("run")
    if not quantized or format_name not in _DEBUGGED_FORMATS or not named or not (Path(named) / "config.json").is_file():
        return None
    return Run(named)


def _debug_data(run, data_dir, images: int, calibration: int | None):
    from edge_fm.export import REPRESENTATIVE_SIZE, representative_images

    dataset = run.dataset(data_dir)
    count = calibration or REPRESENTATIVE_SIZE
    return (dataset, representative_images(dataset.x_train, count, run.train_config.seed),
            dataset.x_val[:images], dataset.y_val[:images], count)


def _errors(run, format_name: str, data_dir, images: int, calibration: int | None) -> dict[str, Any]:
    dataset, calibration_images, val_images, _, count = _debug_data(run, data_dir, images, calibration)
    layers = layer_errors(run.model_to_convert(), format_name, calibration_images, val_images)
    note = ("quantization-aware training set the range of every layer: the converter quantized none itself"
            if not layers else "each layer's own error on the quantized model's inputs, in quantization steps")
    return {"status": "measured", "source_run": str(run.path), "format": format_name, "images": int(len(val_images)),
            "data": f"{dataset.describe()}: validation split, first {len(val_images)}", "calibration_images": count,
            "rounding_rmse": ROUNDING_RMSE, "layers": layers, "note": note,
            "how": "TensorFlow's tf.lite.experimental.QuantizationDebugger (layer_statistics_dump)"}


def _keep_float(run, format_name, data_dir, images, calibration, keep_float, ops, layers, description, out, runs_dir):
    from edge_fm.evaluate import predict_proba
    from edge_fm.export import artifact_record, embed_metadata, inspect_tflite
    from edge_fm.io import write_bytes_atomic, write_json
    from edge_fm.runs import new_run_dir, write_manifest

    _, calibration_images, val_images, val_labels, _ = _debug_data(run, data_dir, images, calibration)
    model = run.model_to_convert()
    op_kinds = [op["op"] for op in ops]
    full, mixed, denied_ops, denied_nodes = _mixed_model(model, format_name, calibration_images, val_images, keep_float,
                                                         layers, op_kinds)
    keras_accuracy = float(np.mean(predict_proba(model, val_images).argmax(1) == val_labels))
    quantized_score, mixed_score = _score(full, val_images, val_labels), _score(mixed, val_images, val_labels)
    name = f"{description.get('name') or run.train_config.arch}-mixed"
    bundle = Path(out) if out is not None else new_run_dir(runs_dir, name)
    if out is not None and bundle.exists() and any(bundle.iterdir()):
        raise EdgeFMError(f"--out {bundle} already exists and is not an empty folder: choose a new folder.")
    labels = list(description.get("labels") or [])
    record = {"kept_float_ops": denied_ops, "kept_float_layers": denied_nodes, "images": int(len(val_labels)),
              "keras_accuracy": keras_accuracy, "quantized": quantized_score, "mixed": mixed_score,
              "accuracy_gain": mixed_score["accuracy"] - quantized_score["accuracy"],
              "bytes_added": mixed_score["bytes"] - quantized_score["bytes"],
              "p50_ms_added": mixed_score["p50_ms"] - quantized_score["p50_ms"],
              "note": "both models with float input and output, as the debugger makes them; validation images; "
                      "latency batch 1, 1 thread, here"}
    try:
        bundle.mkdir(parents=True, exist_ok=True)
        mixed_description = {"name": name, "architecture": run.train_config.arch, "format": f"{format_name}-mixed",
                             "quantization": f"{format_name} with {', '.join(keep_float)} kept in float (selective quantization)",
                             "labels": labels, "source": {"run": str(run.path), "stage": run.stage},
                             "export": {"keep_float": record, **inspect_tflite(mixed)}}
        final = embed_metadata(mixed, mixed_description, labels)
        write_bytes_atomic(bundle / "model.tflite", final)
        if labels:
            (bundle / "labels.txt").write_text("\n".join(labels) + "\n")
        mixed_description["artifact"] = artifact_record(final)
        write_json(bundle / "model.json", mixed_description)
        write_manifest(bundle, "export", parent=str(run.path), format=mixed_description["format"], status="complete")
    except BaseException:
        shutil.rmtree(bundle, ignore_errors=True)  # no half bundle survives an error or Ctrl-C
        raise
    return {**record, "bundle": str(bundle)}


def worst_layers(report: dict[str, Any], count: int = TOP_LAYERS) -> list[dict[str, Any]]:
    """The ``count`` layers that lose most to quantization (empty when the error was not measured)."""
    return report.get("errors", {}).get("layers", [])[:count]



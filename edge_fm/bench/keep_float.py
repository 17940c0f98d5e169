"""Selective quantization: a mixed artifact that keeps some ops in float (TensorFlow's QuantizationDebugger
makes it), written as a bundle and compared with the fully quantized one (``edge-fm inspect --keep-float``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edge_fm.export.bundles import check_new_folder, new_folder, write_bundle
from edge_fm.export.quant_debug import DebugData, mixed_models
from edge_fm.runner import TFLiteModel, summarize_latency, time_invocations

LATENCY_RUNS = 200  # batch-1 runs timed per model of a --keep-float comparison


def keep_float_bundle(
    run, format_name, data: DebugData, keep_float, ops, layers, description, out, runs_dir
) -> dict[str, Any]:
    """Quantizes ``run`` with the ops or layers of ``keep_float`` kept in float, writes the mixed artifact as
    a bundle (``out``, else a new ``runs_dir/<name>-mixed-N``) and returns what it buys against the fully
    quantized one: accuracy, bytes and latency (on the validation images of ``data``, what
    :func:`edge_fm.export.quant_debug.debug_data` gives; batch 1, 1 thread, here).
    """
    from edge_fm.export.tflite_file import embed_metadata, inspect
    from edge_fm.train.evaluate import predict_proba

    if out is not None:
        check_new_folder(out)
    calibration_images, val_images, val_labels = data.calibration, data.images, data.labels
    model = run.model_to_convert()
    op_kinds = [op["op"] for op in ops]
    full, mixed, denied_ops, denied_nodes = mixed_models(
        model, format_name, calibration_images, val_images, keep_float, layers, op_kinds
    )
    keras_accuracy = float(np.mean(predict_proba(model, val_images).argmax(1) == val_labels))
    quantized_score, mixed_score = _score(full, val_images, val_labels), _score(mixed, val_images, val_labels)
    name = f"{description.get('name') or run.train_config.arch}-mixed"
    labels = list(description.get("labels") or [])
    record = {
        "kept_float_ops": denied_ops,
        "kept_float_layers": denied_nodes,
        "images": int(len(val_labels)),
        "keras_accuracy": keras_accuracy,
        "quantized": quantized_score,
        "mixed": mixed_score,
        "accuracy_gain": mixed_score["accuracy"] - quantized_score["accuracy"],
        "bytes_added": mixed_score["bytes"] - quantized_score["bytes"],
        "p50_ms_added": mixed_score["p50_ms"] - quantized_score["p50_ms"],
        "note": "both models with float input and output, as the debugger makes them; validation images; "
        "latency batch 1, 1 thread, here",
    }
    mixed_description = {
        "name": name,
        "architecture": run.train_config.arch,
        "format": f"{format_name}-mixed",
        "quantization": f"{format_name} with {', '.join(keep_float)} kept in float (selective quantization)",
        "labels": labels,
        "source": {"run": str(run.path), "stage": run.stage},
        "export": {"keep_float": record, **inspect(mixed)},
    }
    final = embed_metadata(mixed, mixed_description, labels)
    manifest = {
        "stage": "export",
        "parent": str(run.path),
        "format": mixed_description["format"],
        "status": "complete",
    }
    bundle = write_bundle(new_folder(out, runs_dir, name), final, mixed_description, labels, manifest)
    return {**record, "bundle": str(bundle), "bundle_bytes": len(final)}


def _score(flatbuffer: bytes, images: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    model = TFLiteModel(model_content=flatbuffer, num_threads=1)
    accuracy = float(np.mean(model.predict_proba(images).argmax(1) == labels))
    one = model.quantize_input(images[:1])
    model.invoke(one)
    latency = summarize_latency(time_invocations(lambda: model.invoke(one), LATENCY_RUNS, 0.5, 10.0))
    return {"bytes": len(flatbuffer), "accuracy": accuracy, "p50_ms": latency["p50_ms"]}

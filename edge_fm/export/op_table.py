"""An artifact's ops one by one: kind, shapes, parameters, multiply-accumulates (MACs) and quantization.

Read from the .tflite file alone (:mod:`edge_fm.export.tflite_file`), so it works on any artifact.

Example:
    >>> ops = op_table(open("models/edge-cnn-tiny/model.tflite", "rb").read())  # doctest: +SKIP
    >>> kinds(ops)[0]["op"]  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from edge_fm.export import tflite_file

_WEIGHTED = {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV"}


def _shape(tensor) -> list[int]:
    return [int(d) for d in (tensor.shape if tensor.shape is not None else [])]


def _quantization(tensor, type_name: str) -> dict[str, Any] | None:
    q = tensor.quantization
    scales = [] if q is None or q.scale is None else [float(s) for s in q.scale]
    if not scales:
        return None
    return {
        "dtype": type_name.lower(),
        "scheme": "per-channel" if len(scales) > 1 else "per-tensor",
        "scales": len(scales),
        "scale_min": min(scales),
        "scale_max": max(scales),
        "zero_point": int(q.zeroPoint[0]) if q.zeroPoint is not None and len(q.zeroPoint) else 0,
    }


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
    model = tflite_file.read(flatbuffer)
    graph = model.subgraphs[0]

    def constant(index: int) -> bool:
        buffer = model.buffers[graph.tensors[index].buffer]
        return buffer.data is not None and len(buffer.data) > 0

    rows = []
    for position, op in enumerate(graph.operators):
        kind = tflite_file.op_name(model, op, "?")
        inputs = [graph.tensors[i] if i >= 0 else None for i in op.inputs]
        output = graph.tensors[op.outputs[0]]
        output_shape = _shape(output)
        # Only weighted ops have weights: another op's constant input is an axis, a shape or an operand.
        weighted = kind in _WEIGHTED
        weights = next(
            (graph.tensors[i] for i in op.inputs[1:2] if weighted and i >= 0 and constant(i)), None
        )
        rows.append(
            {
                "index": position,
                "op": kind,
                "name": tflite_file.name_of(output),
                "input_shapes": [_shape(graph.tensors[i]) for i in op.inputs if i >= 0 and not constant(i)],
                "output_shape": output_shape,
                "params": int(
                    sum(
                        np.prod(_shape(graph.tensors[i]))
                        for i in op.inputs
                        if weighted and i >= 0 and constant(i)
                    )
                ),
                "macs": _macs(kind, inputs, output_shape),
                "weights": _quantization(weights, tflite_file.type_name(weights.type))
                if weights is not None
                else None,
                "weights_dtype": tflite_file.type_name(weights.type).lower() if weights is not None else None,
                "activations": _quantization(output, tflite_file.type_name(output.type)),
                "activations_dtype": tflite_file.type_name(output.type).lower(),
            }
        )
    total = sum(row["macs"] for row in rows) or 1
    for row in rows:
        row["macs_share"] = row["macs"] / total
    return rows


def kinds(ops: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The ops grouped by kind: count, MACs and share, parameters, the weights' schemes; most MACs first."""
    grouped: dict[str, dict[str, Any]] = {}
    for op in ops:
        entry = grouped.setdefault(
            op["op"],
            {
                "op": op["op"],
                "count": 0,
                "macs": 0,
                "macs_share": 0.0,
                "params": 0,
                "schemes": set(),
                "activations": set(),
            },
        )
        entry["count"] += 1
        entry["macs"] += op["macs"]
        entry["macs_share"] += op["macs_share"]
        entry["params"] += op["params"]
        if op["weights"]:
            entry["schemes"].add(f"{op['weights']['dtype']} {op['weights']['scheme']}")
        elif op["weights_dtype"]:
            entry["schemes"].add(op["weights_dtype"])
        entry["activations"].add(op["activations_dtype"])
    out = [
        {**entry, "schemes": sorted(entry["schemes"]), "activations": sorted(entry["activations"])}
        for entry in grouped.values()
    ]
    return sorted(out, key=lambda entry: (-entry["macs"], entry["op"]))


def quantization_scheme(ops: Sequence[dict[str, Any]]) -> str:
    """One phrase for the whole artifact: ``int8 weights per-channel, int8 activations``, or ``float``."""
    weighted = [op for op in ops if op["op"] in _WEIGHTED and op["weights_dtype"]]
    weights = sorted(
        {
            f"{op['weights_dtype']}" + (f" {op['weights']['scheme']}" if op["weights"] else "")
            for op in weighted
        }
    )
    activations = sorted({op["activations_dtype"] for op in ops if op["op"] in _WEIGHTED})
    if not weights:
        return f"{'/'.join(activations) or 'unknown'} activations"
    return f"{' + '.join(weights)} weights, {'/'.join(activations)} activations"

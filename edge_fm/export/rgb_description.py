"""The edge-fm description an RGB form carries in its file: the new input and output, the ops."""

from __future__ import annotations

import json

import numpy as np

from edge_fm.export import tflite_file
from edge_fm.export.tflite_file import METADATA_DESCRIPTION, STANDARD_METADATA


def update_metadata(model, graph, schema, inspection: dict) -> None:
    """Rewrites the edge-fm description's input and output; drops the standard metadata."""
    kept = []
    for entry in model.metadata or []:
        name = tflite_file.name_of(entry)
        if name == STANDARD_METADATA:
            model.buffers[entry.buffer].data = None
            continue
        if name == METADATA_DESCRIPTION:
            raw = tflite_file.buffer_bytes(model, entry.buffer)
            try:
                description = json.loads(raw.decode())
            except (UnicodeDecodeError, json.JSONDecodeError):
                model.buffers[entry.buffer].data = None
                continue
            description = _rgb_description(description, graph, schema, inspection)
            model.buffers[entry.buffer].data = np.frombuffer(
                json.dumps(description, sort_keys=True).encode(), dtype=np.uint8
            )
        kept.append(entry)
    model.metadata = kept


def _rgb_description(description: dict, graph, schema, inspection: dict) -> dict:
    rgb, probs = graph.tensors[graph.inputs[0]], graph.tensors[graph.outputs[0]]
    out_scale, out_zero_point = tflite_file.quantization(probs)
    description = dict(description)
    description["input"] = {
        "dtype": "uint8",
        "layout": "NHWC (batch, height, width, channels)",
        "name": tflite_file.name_of(rgb),
        "pixel_range": [0, 255],
        "preprocessing": _steps(description),
        "scale": 1.0,
        "shape": [int(v) for v in rgb.shape],
        "zero_point": 0,
    }
    output = dict(description.get("output") or {})
    output.update(
        {
            "dtype": tflite_file.type_name(probs.type).lower(),
            "name": tflite_file.name_of(probs),
            "scale": out_scale,
            "shape": [int(v) for v in probs.shape],
            "zero_point": out_zero_point,
        }
    )
    description["output"] = output
    export = description.get("export")
    if isinstance(export, dict):
        description["export"] = {**export, **inspection}
    return description


def _steps(description: dict) -> list[str]:
    """How an app prepares an image: Fashion-MNIST's garment steps, or the model's own data's resize."""
    data = description.get("data") if isinstance(description.get("data"), dict) else {}
    if data.get("kind") not in (None, "fashion-mnist"):
        resize = (data.get("options") or {}).get("resize", "pad")
        rgb = (data.get("image_shape") or [0, 0, 1])[-1] == 3
        return [
            "RGB pixel bytes as they are",
            "resize to the input's height and width"
            + (", keeping the aspect ratio and padding with black (0)" if resize == "pad" else " (stretch)"),
            "no scaling or quantization: the model scales itself"
            + ("" if rgb else " and converts to grey (ITU-R BT.601 luma)"),
        ]
    return [
        "RGB pixel bytes as they are (a grey image repeats its value in the three channels)",
        "if the object is dark on a light background (a photo), invert: pixel = 255 - pixel",
        "pad to a square with black (0), then resize to the input's height and width",
        "no scaling or quantization: the model converts to grey (ITU-R BT.601 luma) and scales itself",
    ]

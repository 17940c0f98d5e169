"""Where an int8 artifact's activations lose accuracy, measured from the artifact alone (its float twin).

The float twin (:func:`edge_fm.export.tflite_file.float_twin`) is the same network computed in
float32 with the artifact's own, already rounded, weights. Both run on the same images in LiteRT's
interpreter with every intermediate tensor kept; each op's int8 output, dequantized, is compared
with the twin's float tensor. What this measures is :data:`TWIN_MEASURE`: the rounding and clipping
of activations, accumulated along the network, against the artifact's own weights in float. The
weights' own rounding is not in it: that needs the float source run, which TensorFlow's
QuantizationDebugger compares against (:mod:`edge_fm.export.quant_debug`).

Each op's error is given in units of its output's quantization step, and so is the error it adds:
its error minus the share its inputs bring (their largest error-to-signal ratio applied to the size
of its own output), so a layer that only passes on what it received adds about nothing, and a
layer fed exact values adds its full rounding (about 0.29 steps RMSE).

Example:
    >>> errors = twin_errors(Path("models/edge-cnn-tiny/model.tflite").read_bytes(), images, labels)  # doctest: +SKIP
    >>> errors["layers"][0]["added_rmse_per_scale"]  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from edge_fm.export import tflite_file
from edge_fm.runner import model_pixels

TWIN_MEASURE = (
    "activation rounding and clipping, accumulated along the network, against the artifact's own weights "
    "in float; the weights' own rounding is not included (that needs the float source: --source RUN uses "
    "TensorFlow's QuantizationDebugger)"
)
TWIN_HOW = (
    "the artifact and its float twin (the same graph and options, every quantized constant dequantized, "
    "every int8 activation made float32, QUANTIZE/DEQUANTIZE removed) on LiteRT's built-in kernels with "
    "every tensor kept"
)
BATCH = 16  # images per invocation: every tensor of both models is kept, so memory grows with it


def twin_applies(ops: list[dict[str, Any]]) -> bool:
    """Whether the twin measure applies: some op's activations are int8 (an int8 or qat-int8 artifact)."""
    return any((op.get("activations") or {}).get("dtype") == "int8" for op in ops)


def _interpreter(content: bytes):
    """LiteRT's interpreter keeping every tensor, on its built-in kernels (a delegate would hide them)."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interpreter = Interpreter(
        model_content=content,
        experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
        experimental_preserve_all_tensors=True,
    )
    interpreter.allocate_tensors()
    return interpreter


class _Sums:
    """Running sums of one tensor's error against the twin (float64, over every element seen)."""

    def __init__(self, scale: float, zero_point: int, lowest: int, highest: int):
        self.scale, self.zero_point = scale, zero_point
        # Values beyond half a step outside the integer range are clipped, not rounded.
        self.low = (lowest - zero_point - 0.5) * scale
        self.high = (highest - zero_point + 0.5) * scale
        self.count = self.squared = self.absolute = self.signed = self.reference = self.clipped = 0.0
        self.largest = 0.0

    def add(self, quantized: np.ndarray, reference: np.ndarray) -> None:
        reference = reference.astype(np.float64)
        error = (quantized.astype(np.float64) - self.zero_point) * self.scale - reference
        self.count += error.size
        self.squared += float(np.sum(error**2))
        self.absolute += float(np.sum(np.abs(error)))
        self.signed += float(np.sum(error))
        self.reference += float(np.sum(reference**2))
        self.clipped += float(np.sum((reference < self.low) | (reference > self.high)))
        self.largest = max(self.largest, float(np.max(np.abs(error))) if error.size else 0.0)

    @property
    def rmse(self) -> float:
        return float(np.sqrt(self.squared / self.count)) if self.count else 0.0

    @property
    def relative(self) -> float:
        """Error-to-signal ratio: RMSE over the root-mean-square of the float values."""
        signal = np.sqrt(self.reference / self.count) if self.count else 0.0
        return float(self.rmse / signal) if signal > 0 else 0.0


def _graph(tflite: bytes) -> tuple[list[dict[str, Any]], dict[int, tuple[float, int, str]], list[int]]:
    """The main graph's ops (name, inputs, outputs), its per-tensor quantized activations, its outputs."""
    model = tflite_file.read(tflite)
    graph = model.subgraphs[0]
    editor = tflite_file.GraphEditor(model, graph)
    ops = [
        {
            "index": index,
            "op": tflite_file.op_name(model, op),
            "inputs": [int(i) for i in op.inputs if i >= 0],
            "outputs": [int(i) for i in op.outputs],
        }
        for index, op in enumerate(graph.operators)
    ]
    activations = {}
    for index, tensor in enumerate(graph.tensors):
        scale, zero_point = tflite_file.quantization(tensor)
        dtype = tflite_file.type_name(tensor.type)
        if scale and dtype in ("INT8", "UINT8", "INT16") and editor.constant(index) is None:
            activations[index] = (scale, zero_point, dtype.lower(), tflite_file.name_of(tensor))
    return ops, activations, [int(i) for i in graph.outputs]


def _batches(images: np.ndarray, interpreters: list, size: int):
    """``images`` in batches the interpreters take (one at a time when a graph fixes its batch at 1)."""
    for interpreter in interpreters:
        detail = interpreter.get_input_details()[0]
        if int(detail["shape_signature"][0]) != -1:
            size = 1
    for start in range(0, len(images), size):
        chunk = images[start : start + size]
        for interpreter in interpreters:
            detail = interpreter.get_input_details()[0]
            if int(detail["shape"][0]) != len(chunk):
                interpreter.resize_tensor_input(detail["index"], [len(chunk), *detail["shape"][1:]])
                interpreter.allocate_tensors()
        yield chunk


def twin_errors(
    tflite: bytes,
    images: np.ndarray,
    labels: np.ndarray,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Each quantized op's activation error against the artifact's float twin, ranked by what it adds.

    Args:
        tflite: An artifact with int8 activations.
        images: Raw images in the model's input shape (validation or training images, never test).
        labels: Their labels, for both models' accuracy.
        progress: Called with a line per step.

    Returns:
        ``twin`` (the check that the twin is the same network: top-1 ``agreement`` of the two,
        ``agreement_counting_ties`` where the twin's top class is one of the int8 output's tied top
        codes, both accuracies) and ``layers``, one per op with a quantized output, worst-adding first: ``op``,
        ``tensor``, ``scale``, ``rmse_per_scale``, ``mean_abs_error_per_scale``,
        ``mean_error_per_scale``, ``max_abs_error_per_scale``, ``clipped_share`` (float values
        beyond the integer range), ``relative_error`` (RMSE over the float values' RMS),
        ``inherited_per_scale``, ``added_rmse_per_scale`` and ``graph_output``.
    """
    say = progress or (lambda line: None)
    twin, twin_of = tflite_file.float_twin(tflite)
    ops, activations, graph_outputs = _graph(tflite)
    quantized, floating = _interpreter(tflite), _interpreter(twin)
    source = quantized.get_input_details()[0]
    in_scale, in_zero = source["quantization"]
    info = np.iinfo(source["dtype"])
    sums = {
        index: _Sums(scale, zero, np.iinfo(dtype).min, np.iinfo(dtype).max)
        for index, (scale, zero, dtype, _) in activations.items()
    }
    quantized_top, twin_top = [], []
    say(f"running the artifact and its float twin on {len(images)} images")
    for chunk in _batches(images, [quantized, floating], BATCH):
        pixels = model_pixels(chunk, source["shape"][1:])
        codes = np.clip(np.round(pixels / in_scale + in_zero), info.min, info.max).astype(source["dtype"])
        # The twin reads exactly the values the artifact's input codes stand for: no error enters there.
        quantized.set_tensor(source["index"], codes)
        floating.set_tensor(
            floating.get_input_details()[0]["index"], (codes.astype(np.float32) - in_zero) * in_scale
        )
        quantized.invoke()
        floating.invoke()
        for index, running in sums.items():
            running.add(quantized.get_tensor(index), floating.get_tensor(twin_of[index]))
        quantized_top.append(quantized.get_tensor(graph_outputs[0]).reshape(len(chunk), -1))
        twin_top.append(floating.get_tensor(twin_of[graph_outputs[0]]).reshape(len(chunk), -1).argmax(1))
    codes, twin_top = np.concatenate(quantized_top), np.concatenate(twin_top)
    quantized_top = codes.argmax(1)
    # A saturated int8 output ties its top classes, and argmax takes the first of them.
    tied = codes[np.arange(len(codes)), twin_top] == codes.max(1)
    labels = np.asarray(labels)[: len(quantized_top)]
    return {
        "twin": {
            "images": int(len(quantized_top)),
            "agreement": float(np.mean(quantized_top == twin_top)),
            "agreement_counting_ties": float(np.mean(tied)),
            "int8_accuracy": float(np.mean(quantized_top == labels)),
            "twin_accuracy": float(np.mean(twin_top == labels)),
        },
        "layers": _rows(ops, activations, sums, set(graph_outputs)),
    }


def _rows(ops, activations, sums, graph_outputs: set[int]) -> list[dict[str, Any]]:
    """One row per op with a quantized output, ranked by the error it adds (most first)."""
    rows = []
    for op in ops:
        fed = [sums[i].relative for i in op["inputs"] if i in sums]
        for index in op["outputs"]:
            if index not in sums:
                continue
            running, scale = sums[index], activations[index][0]
            signal = running.rmse / running.relative if running.relative else 0.0
            inherited = max(fed, default=0.0) * signal / scale
            rmse = running.rmse / scale
            rows.append(
                {
                    "index": op["index"],
                    "op": op["op"],
                    "tensor": activations[index][3],
                    "scale": scale,
                    "rmse_per_scale": rmse,
                    "mean_abs_error_per_scale": running.absolute / running.count / scale,
                    "mean_error_per_scale": running.signed / running.count / scale,
                    "max_abs_error_per_scale": running.largest / scale,
                    "clipped_share": running.clipped / running.count,
                    "relative_error": running.relative,
                    "inherited_per_scale": inherited,
                    "added_rmse_per_scale": rmse - inherited,
                    "graph_output": index in graph_outputs,
                }
            )
    return sorted(rows, key=lambda row: -row["added_rmse_per_scale"])


def twin_images(
    description: dict[str, Any], data_dir=None, count: int = 200
) -> tuple[np.ndarray, np.ndarray, str]:
    """The first ``count`` validation images of the model's dataset (never its test split), and what they are.

    A bundle that records its dataset (:mod:`edge_fm.data.reference`) gets that dataset's validation
    split; any other is a Fashion-MNIST model and gets the validation images that ``edge-fm train``
    carves from Fashion-MNIST's training file by default (5,000, seed 0).

    Raises:
        EdgeFMError: The dataset is not on this machine (the message says where to point).
    """
    from edge_fm.data.datasets import load_dataset
    from edge_fm.data.reference import load_recorded, recorded_data

    record = recorded_data(description)
    dataset = load_recorded(record) if record is not None else load_dataset("full", data_dir)
    images, labels, split = dataset.x_val, dataset.y_val, "validation split"
    if not len(images):
        images, labels, split = dataset.x_train, dataset.y_train, "training split"
    return images[:count], labels[:count], f"{dataset.describe()}: {split}, first {min(count, len(images))}"

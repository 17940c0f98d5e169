"""Runs TFLite artifacts with nothing but the standard library, numpy and a TFLite interpreter.

This module is self-contained on purpose: it is copied as a single file to devices such as a
Raspberry Pi where TensorFlow is not installed. The interpreter comes from ``ai_edge_litert``
(LiteRT), else ``tflite_runtime``, else ``tensorflow.lite``.
"""

from __future__ import annotations

import importlib

import numpy as np

INTERPRETER_PACKAGES = ("ai_edge_litert.interpreter", "tflite_runtime.interpreter", "tensorflow.lite")


class RunnerError(Exception):
    """A problem with an artifact or the runtime, with a message naming the fix."""


def load_interpreter_class():
    """Returns ``(Interpreter class, package name, version)`` from the first package available.

    Raises:
        RunnerError: None of the interpreter packages is installed.
    """
    for module_name in INTERPRETER_PACKAGES:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        package = module_name.split(".")[0]
        version = _package_version(package)
        return module.Interpreter, package, version
    raise RunnerError("no TFLite interpreter found: run `pip install ai-edge-litert numpy`.")


def _package_version(package: str) -> str:
    try:
        from importlib.metadata import version

        return version({"ai_edge_litert": "ai-edge-litert", "tflite_runtime": "tflite-runtime"}.get(package, package))
    except Exception:  # noqa: BLE001 - a version is informative only
        return "unknown"


class TFLiteModel:
    """A loaded .tflite classifier that takes raw uint8 28x28 images and returns probabilities.

    Quantized inputs are quantized with the model's own scale and zero point, quantized outputs
    dequantized, so callers never see the integer details.
    """

    def __init__(self, model_path: str | None = None, model_content: bytes | None = None, num_threads: int | None = None):
        interpreter_class, self.package, self.package_version = load_interpreter_class()
        try:
            self.interpreter = interpreter_class(model_path=model_path, model_content=model_content, num_threads=num_threads)
            self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise RunnerError(f"{model_path or 'model'}: not a loadable TFLite model ({exc}).") from None
        self.input = self.interpreter.get_input_details()[0]
        self.output = self.interpreter.get_output_details()[0]
        self.batch = 1

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
        """Raw 0-255 pixels -> the model's input dtype (quantized with its scale/zero point)."""
        dtype = self.input["dtype"]
        images = np.asarray(images, dtype=np.float32).reshape(-1, *self.input["shape"][1:])
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
                outputs.append(np.concatenate([self.dequantize_output(self.invoke(chunk[i : i + 1])) for i in range(len(chunk))]))
                batch_size = 1
        return np.concatenate(outputs) if outputs else np.zeros((0, self.output["shape"][-1]), np.float32)

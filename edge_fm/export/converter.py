"""Keras model -> .tflite bytes in one export format (TensorFlow's converter), and the calibration
images integer formats are quantized with."""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterator

import numpy as np

from edge_fm.compat import keras, native_stderr_silenced, tf
from edge_fm.errors import EdgeFMError
from edge_fm.export.formats import ExportFormat


def representative_images(images: np.ndarray, count: int, seed: int = 0) -> np.ndarray:
    """A seeded random subset of ``images`` for int8 calibration (drawn from the training split)."""
    if count < 1:
        raise EdgeFMError(f"representative set size must be at least 1, got {count}.")
    rng = np.random.default_rng(seed)
    return images[rng.choice(len(images), size=min(count, len(images)), replace=False)]


def convert(
    model: keras.Model, fmt: ExportFormat, io_dtype: str, calibration: np.ndarray | None = None
) -> bytes:
    """Converts a Keras model to a .tflite flatbuffer in format ``fmt``.

    Args:
        model: The Keras model (a QAT model for ``qat-int8``).
        fmt: The format.
        io_dtype: ``int8``, ``uint8`` or ``float32`` input/output (integer formats only).
        calibration: Raw uint8 images for the representative dataset of integer formats.

    Returns:
        The flatbuffer bytes.
    """
    converter = tflite_converter(model, fmt, io_dtype, calibration)
    try:
        with native_stderr_silenced(), warnings.catch_warnings():
            # Raised for every integer-input model; the inputs' ranges come from calibration.
            warnings.filterwarnings("ignore", message="Statistics for quantized inputs")
            return bytes(converter.convert())
    except Exception as exc:  # noqa: BLE001 - the converter raises many types; all mean the same to a user
        if unsupported := _NO_16X8_KERNEL.findall(str(exc)):
            raise EdgeFMError(
                f"{fmt.name}: TFLite has no 16-bit-activation kernel for {', '.join(sorted(set(unsupported)))}; "
                "export this model as int8 or int8-per-tensor."
            ) from None
        raise EdgeFMError(
            f"conversion to {fmt.name} failed: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
        ) from None


_NO_16X8_KERNEL = re.compile(r"16x8-bit not yet supported for op: '(\w+)'")


def tflite_converter(model: keras.Model, fmt: ExportFormat, io_dtype: str, calibration: np.ndarray | None):
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if fmt.name == "fp16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif fmt.name == "dynamic":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    elif fmt.integer:
        if calibration is None:
            raise ValueError("integer formats need calibration images")
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        # QAT models carry their own ranges; the converter still asks for a representative
        # dataset when the input and output are integer, and uses it only where ranges are missing.
        converter.representative_dataset = lambda: representative_dataset(calibration)
        converter.target_spec.supported_ops = [
            tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8
            if fmt.activation_bits == 16
            else tf.lite.OpsSet.TFLITE_BUILTINS_INT8
        ]
        if not fmt.per_channel:
            converter._experimental_disable_per_channel = True  # the converter's only switch for it
        dtype = {"int8": tf.int8, "uint8": tf.uint8, "int16": tf.int16, "float32": tf.float32}[io_dtype]
        converter.inference_input_type = dtype
        converter.inference_output_type = dtype
    return converter


def representative_dataset(images: np.ndarray) -> Iterator[list[np.ndarray]]:
    """The calibration images as the converter takes them; of uint8 pixels, the first with their whole range.

    The input's quantization comes from the range calibration sees. Data that never reaches 0 or 255
    (dim photos) would give an input scale that clips a brighter image and is not the raw pixels apps
    feed, so a first image without them gets one black and one white corner pixel: the input range is
    0-255 (q = pixel - 128 for int8) and the layers' ranges move by one pixel's worth at most.
    """
    for index, image in enumerate(images):
        sample = image[None].astype(np.float32)
        if index == 0 and images.dtype == np.uint8 and (images.min() > 0 or images.max() < 255):
            channels = (
                sample.shape[-1] if sample.ndim == 4 else 1
            )  # an image's pixel, or a flat input's value
            pixels = sample.reshape(-1)  # a view: the first pixel black, the last white
            pixels[:channels], pixels[-channels:] = 0.0, 255.0
        yield [sample]

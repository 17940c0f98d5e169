"""Whether a training step fits in this machine's memory, estimated before the run starts.

A step keeps every layer's output for the backward pass and makes a gradient of the same size, so
its working set grows with the batch and with the image's area. An image size a model cannot train at
here (a photo's own size, a typo) would otherwise take all the memory, swap, and be killed.
"""

from __future__ import annotations

import os

from edge_fm.compat import keras
from edge_fm.errors import EdgeFMError
from edge_fm.runner import available_bytes
from edge_fm.zoo.layers import count_activations

BYTES_PER_ELEMENT = 4  # float32 activations
KEPT_PER_ELEMENT = 2  # the activation and its gradient
CHECK_VARIABLE = "EDGE_FM_MEMORY_CHECK"  # "off": train without the check


def activation_bytes(model: keras.Model, batch_size: int) -> int:
    """Bytes of one training step's activations and their gradients (weights and the optimizer's
    state, far smaller for edge models, are not counted)."""
    return count_activations(model) * batch_size * BYTES_PER_ELEMENT * KEPT_PER_ELEMENT


def check_fits(
    model: keras.Model, batch_size: int, image_shape: tuple[int, ...], arch: str, workers: int = 1
) -> None:
    """Refuses, before any step, a training step whose activations exceed the memory free here.

    Args:
        batch_size: This machine's share of the batch.
        workers: The machines the global batch is split over (the batch a user can pass is the global one).

    Raises:
        EdgeFMError: The estimate is over :func:`available_bytes`; the message names both, the largest
            batch that fits, and how to train anyway (``EDGE_FM_MEMORY_CHECK=off``, for an estimate
            that is too cautious: activations a layer frees early, memory that swap can give).
    """
    if os.environ.get(CHECK_VARIABLE, "").lower() in ("off", "0", "no"):
        return
    free = available_bytes()
    needed = activation_bytes(model, batch_size)
    if free is None or needed <= free:
        return
    height, width, channels = image_shape
    fitting = int(free // (needed / batch_size)) * workers
    smaller = f"--batch-size {fitting} or less" if fitting else "a smaller --image-size"
    raise EdgeFMError(
        f"training {arch} on {width}x{height}x{channels} images at batch {batch_size * workers} needs about "
        f"{needed / 2**30:.1f} GiB for its activations, more than the {free / 2**30:.1f} GiB free here: "
        f"pass {smaller} (or set {CHECK_VARIABLE}=off to train anyway)."
    )

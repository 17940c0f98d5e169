"""The parity rules an artifact is held to against the model it was made from, on the same images.

Free of TensorFlow: the forms (mobile, GPU) apply them to predictions made elsewhere, and the CLI,
which imports the forms' table, starts without loading TensorFlow.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edge_fm.export.formats import ExportFormat

# Parity rules: float artifacts agree with their Keras model on nearly every image; integer
# artifacts keep its accuracy within a point. On fewer than 100 images a point is less than one
# image, the smallest change there is, so there one image is allowed.
MIN_AGREEMENT = 0.99
MAX_ACCURACY_DROP = 0.01


def within_share(changed: int, total: int, share: float) -> bool:
    """Whether ``changed`` of ``total`` images is at most ``share`` of them, or one image where that share
    is less than one: on few images one image is the smallest change there is."""
    limit = share * total
    return changed <= (1 if 0 < limit < 1 else limit)


def parity_check(
    keras_probs: np.ndarray, tflite_probs: np.ndarray, labels: np.ndarray, fmt: ExportFormat
) -> dict[str, Any]:
    """Compares an artifact's predictions with its Keras model's on the same images.

    Returns:
        ``agreement`` (share of equal top-1), both accuracies, the rule applied and ``passed``.
    """
    keras_top, tflite_top = keras_probs.argmax(1), tflite_probs.argmax(1)
    keras_acc = float(np.mean(keras_top == labels))
    tflite_acc = float(np.mean(tflite_top == labels))
    agreement = float(np.mean(keras_top == tflite_top))
    total, few = len(labels), len(labels) * MAX_ACCURACY_DROP < 1  # few: a point is less than one image
    if fmt.integer:
        rule = f"accuracy within {MAX_ACCURACY_DROP * 100:.0f} point of the Keras model"
        rule += f" (one image of {total})" if few else ""
        lost = int(np.sum(keras_top == labels)) - int(np.sum(tflite_top == labels))
        passed = within_share(lost, total, MAX_ACCURACY_DROP)
    else:
        rule = f"top-1 agreement >= {MIN_AGREEMENT:.0%}" + (f" (all but one image of {total})" if few else "")
        passed = within_share(int(np.sum(keras_top != tflite_top)), total, 1 - MIN_AGREEMENT)
    return {
        "images": int(len(labels)),
        "agreement": agreement,
        "keras_accuracy": keras_acc,
        "tflite_accuracy": tflite_acc,
        "rule": rule,
        "passed": bool(passed),
    }

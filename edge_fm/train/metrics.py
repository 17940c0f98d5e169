"""Metrics from predictions: accuracy, loss, per-class precision/recall/F1, confusion matrix."""

from __future__ import annotations

import numpy as np

from edge_fm.data.datasets import CLASS_NAMES, NUM_CLASSES


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int = NUM_CLASSES) -> np.ndarray:
    """Rows are true classes, columns predicted classes."""
    index = np.asarray(y_true, dtype=np.int64) * num_classes + np.asarray(y_pred, dtype=np.int64)
    return np.bincount(index, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def classification_metrics(
    y_true: np.ndarray, probs: np.ndarray, class_names: tuple[str, ...] | None = None
) -> dict:
    """Scores class probabilities against true labels.

    Args:
        y_true: True class per example.
        probs: ``(N, classes)`` probabilities (rows sum to 1).
        class_names: The name of each class (default: Fashion-MNIST's for 10 classes, else numbers).

    Returns:
        ``accuracy``, ``balanced_accuracy`` (the mean of the per-class recalls, over the classes
        with examples), ``lowest_recall`` (the class recalled least and its recall), ``loss`` (mean
        cross-entropy), ``per_class`` precision/recall/F1/support by class name, ``macro_f1`` and
        ``confusion_matrix`` (nested lists).
    """
    y_true = np.asarray(y_true, dtype=np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    if class_names is not None and len(class_names) == probs.shape[1]:
        names = class_names
    else:
        names = CLASS_NAMES if probs.shape[1] == NUM_CLASSES else [str(i) for i in range(probs.shape[1])]
    y_pred = probs.argmax(axis=1)
    matrix = confusion_matrix(y_true, y_pred, probs.shape[1])
    true_pos = np.diag(matrix).astype(np.float64)
    predicted = matrix.sum(axis=0)
    actual = matrix.sum(axis=1)
    precision = np.divide(true_pos, predicted, out=np.zeros_like(true_pos), where=predicted > 0)
    recall = np.divide(true_pos, actual, out=np.zeros_like(true_pos), where=actual > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(true_pos), where=denom > 0)
    # Clipping keeps log finite for a confident wrong answer.
    loss = -np.mean(np.log(np.clip(probs[np.arange(len(y_true)), y_true], 1e-12, 1.0)))
    # Balanced accuracy: the mean recall over the classes present, what a classifier that
    # ignored a rare class would be marked down for.
    present = actual > 0
    balanced = float(recall[present].mean()) if present.any() else 0.0
    lowest = int(np.flatnonzero(present)[np.argmin(recall[present])]) if present.any() else 0
    return {
        "accuracy": float(true_pos.sum() / max(1, len(y_true))),
        "balanced_accuracy": balanced,
        "lowest_recall": {"class": str(names[lowest]), "recall": float(recall[lowest])},
        "loss": float(loss),
        "examples": int(len(y_true)),
        "macro_f1": float(f1.mean()),
        "per_class": {
            name: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for name, p, r, f, s in zip(names, precision, recall, f1, actual)
        },
        "confusion_matrix": matrix.tolist(),
    }


def cpu_text(environment: dict) -> str:
    """``"AMD EPYC (family 25 model 17; avx2 avx512f avx512_vnni)"``: a benchmark's CPU, as tables print it.

    Results written before the runner recorded ``cpu_detail`` print the model name alone.
    """
    detail = environment.get("cpu_detail")
    return f"{environment['cpu']} ({detail})" if detail else environment["cpu"]


def shape_text(options: dict) -> str:
    """``"stem 16, widths 16/32/64, blocks 0/2/2, conv blocks"``: an edge-family shape, as tables name it.

    The block kind is always named (edge-cnn-tiny's default has changed before), and a per-stage list
    of kinds is joined like the widths.
    """
    kinds = options["block"] if isinstance(options["block"], str) else "/".join(options["block"])
    return (
        f"stem {options['stem']}, widths {'/'.join(map(str, options['widths']))}, "
        f"blocks {'/'.join(map(str, options['blocks']))}, {kinds} blocks"
    )


def epochs_text(epochs: int) -> str:
    """``"1 epoch"``, ``"24 epochs"``: how the CLI and the model cards count epochs."""
    return f"{epochs} epoch{'' if epochs == 1 else 's'}"

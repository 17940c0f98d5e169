"""Scoring: a Keras model on a run's validation and test splits, with the test figure keyed honestly.

Example:
    >>> evaluate_run("runs/cnn-2conv-train-1")["accuracy"]  # doctest: +SKIP
    0.9151
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edge_fm.compat import keras, tf
from edge_fm.data.datasets import Dataset
from edge_fm.errors import EdgeFMError
from edge_fm.train.metrics import classification_metrics
from edge_fm.train.runs import Run


def evaluate_run(
    run_dir: Path | str,
    data_dir: Path | str | None = None,
    split: str = "test",
    data: Path | str | None = None,
) -> dict[str, Any]:
    """Scores a run's model on its data's test (or validation) split.

    Args:
        run_dir: A finished training run.
        data_dir: Where the full dataset is; defaults to where the run read it.
        split: ``"test"`` or ``"val"`` (the run's own validation split, same seed).
        data: Where the run's data is now, when it moved (see :meth:`Run.dataset`).

    Returns:
        The :func:`~edge_fm.train.metrics.classification_metrics` dict, plus ``data`` and ``split``.
    """
    if split not in ("test", "val"):
        raise EdgeFMError(f"unknown split {split!r}; use 'test' or 'val'.")
    run = Run(run_dir)
    model = run.model()
    dataset = run.dataset(data_dir, data=data)
    images, labels = (dataset.x_test, dataset.y_test) if split == "test" else (dataset.x_val, dataset.y_val)
    result = classification_metrics(labels, predict_proba(model, images), dataset.class_names)
    result["data"] = dataset.describe()
    result["split"] = evaluation_key(dataset) if split == "test" else "val"
    return result


def score_model(model: keras.Model, dataset: Dataset) -> dict[str, Any]:
    """Scores a model on the validation and test splits, with the test figure keyed honestly.

    Returns:
        ``data``, ``evaluated_on``, ``val`` (accuracy, loss, examples) and ``test`` (or
        ``sample_test`` for the embedded sample) with the full classification metrics.
    """
    val = classification_metrics(dataset.y_val, predict_proba(model, dataset.x_val), dataset.class_names)
    test = classification_metrics(dataset.y_test, predict_proba(model, dataset.x_test), dataset.class_names)
    return {
        "data": dataset.describe(),
        "evaluated_on": "embedded sample held-out images (NOT the test set)"
        if dataset.is_sample
        else "test split",
        evaluation_key(dataset): test,
        "val": {
            "accuracy": val["accuracy"],
            "balanced_accuracy": val["balanced_accuracy"],
            "loss": val["loss"],
            "examples": val["examples"],
        },
    }


def evaluation_key(dataset: Dataset) -> str:
    """``"test"`` for the real test split, ``"sample_test"`` for the embedded sample's held-out part.

    The sample's figure is never presented as test-set accuracy, so it has its own key.
    """
    return "sample_test" if dataset.is_sample else "test"


def predict_proba(model: keras.Model, images: np.ndarray, batch_size: int = 512) -> np.ndarray:
    """Class probabilities of a Keras model for raw uint8 images."""
    dataset = (
        tf.data.Dataset.from_tensor_slices(images).batch(batch_size).map(lambda x: tf.cast(x, tf.float32))
    )
    return model.predict(dataset, verbose=0)

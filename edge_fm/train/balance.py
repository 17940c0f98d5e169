"""Class weights for imbalanced data: ``--class-weight balanced|none|FILE.json``.

A class's weight multiplies the loss of each of its training images, so a rare class counts as
much as a common one. ``balanced`` gives class ``c`` the weight ``n / (k * n_c)`` (``n`` training
images, ``k`` classes, ``n_c`` images of class ``c``), the rule of scikit-learn's
``class_weight="balanced"``: the mean weight over the training images is 1, so the learning rate
keeps its meaning. A JSON file names the weight of each class by its name; an unnamed class
weighs 1. Validation and test scores are never weighted.

Example:
    >>> class_weights("balanced", np.array([0, 0, 0, 1]), ("cat", "dog")).tolist()
    [0.6666666666666666, 2.0]
"""

from __future__ import annotations

import math
import numbers
from pathlib import Path

import numpy as np

from edge_fm.errors import EdgeFMError
from edge_fm.io import read_json
from edge_fm.records import InvalidJSONError

BALANCED = "balanced"
NONE = "none"
CHOICES = (BALANCED, NONE)


def check_class_weight(value: str) -> None:
    """Refuses a ``class_weight`` setting that is neither a choice nor a JSON file's path, in one line."""
    if not isinstance(value, str) or not (value in CHOICES or value.lower().endswith(".json")):
        raise EdgeFMError(
            f"class_weight must be 'balanced', 'none' or the path of a JSON file of weights by class name, "
            f"got {value!r}."
        )


def class_weights(value: str, labels: np.ndarray, class_names: tuple[str, ...]) -> np.ndarray | None:
    """The weight of each class (in label order) that a ``class_weight`` setting gives, or None for none.

    Args:
        value: ``balanced``, ``none`` or the path of a JSON object ``{"class name": weight, ...}``.
        labels: The training split's labels (``balanced`` counts them).
        class_names: The name of each label index.

    Raises:
        EdgeFMError: A file that is missing, not a JSON object, names an unknown class, or gives a
            weight that is not a positive finite number.
    """
    check_class_weight(value)
    if value == NONE:
        return None
    if value == BALANCED:
        counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=len(class_names)).astype(
            np.float64
        )
        present = counts > 0
        weights = np.zeros(len(class_names))
        weights[present] = len(labels) / (present.sum() * counts[present])
        return weights
    return _weights_file(Path(value), class_names)


def _weights_file(path: Path, class_names: tuple[str, ...]) -> np.ndarray:
    try:
        given = read_json(path)
    except InvalidJSONError as exc:  # the user's own file: the fix is to edit it, not to re-make it
        if exc.problem is None:
            raise
        raise EdgeFMError(
            f"--class-weight {exc.problem}: write a JSON object of weights by class name, e.g. "
            f'{{"{class_names[0]}": 2.0}}.'
        ) from None
    if not isinstance(given, dict):
        raise EdgeFMError(
            f"--class-weight {path}: expected a JSON object of weights by class name, e.g. "
            f'{{"{class_names[0]}": 2.0}}, got a {type(given).__name__}.'
        )
    index = {name: i for i, name in enumerate(class_names)}
    weights = np.ones(len(class_names))
    for name, weight in given.items():
        if name not in index:
            shown = ", ".join(class_names[:12]) + (", ..." if len(class_names) > 12 else "")
            raise EdgeFMError(f"--class-weight {path}: no class {name!r} in this data; its classes: {shown}.")
        if not _positive_number(weight):
            raise EdgeFMError(
                f"--class-weight {path}: the weight of {name!r} must be a positive number, got {weight!r}."
            )
        weights[index[name]] = float(weight)
    return weights


def _positive_number(value) -> bool:
    return (
        isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value) and value > 0
    )


def weights_record(weights: np.ndarray | None, class_names: tuple[str, ...]) -> dict[str, float] | None:
    """The weights by class name, as a run's metrics record them (None: unweighted)."""
    if weights is None:
        return None
    return {name: round(float(w), 6) for name, w in zip(class_names, weights)}

"""The dataset a model was made from, named in its bundle, and its test split loaded again.

An export made from a dataset other than Fashion-MNIST records in its ``model.json`` a ``data``
entry: the dataset's identity (kind, source path, fingerprint, class names, counts per split,
image shape) and the options that reproduce its splits. Every later reader of the bundle (the
benchmark, the mobile and microcontroller forms, evaluate, report, serve) loads that dataset's
test split through :func:`model_test_split`, so a model is always scored on its own data. A bundle
without the entry was made from Fashion-MNIST.

Example:
    >>> split = model_test_split(Bundle.open("runs/edge-cnn-tiny-int8-1").description)  # doctest: +SKIP
    >>> split.images.shape, split.class_names  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edge_fm.data import datasets as fmnist
from edge_fm.data.datasets import Dataset
from edge_fm.data.options import DEFAULT_DATA, SAMPLE_DATA, DataOptions
from edge_fm.errors import EdgeFMError

RECORD_KEY = "data"  # the entry of model.json (and of a shipped model's provenance)
FASHION_MNIST = "fashion-mnist"


def data_record(dataset: Dataset, options: DataOptions) -> dict[str, Any] | None:
    """``model.json``'s ``data`` entry for a model made from ``dataset``; None for Fashion-MNIST.

    Args:
        dataset: The data the model was trained on, with its identity.
        options: The options it was read with (they fix its size, channels and splits).
    """
    identity = dataset.identity
    if identity is None or identity.kind == FASHION_MNIST:
        return None
    record = identity.as_record()
    values = dataclasses.asdict(options)
    values["image_size"] = list(options.image_size) if options.image_size else None
    record["options"] = values
    return record


def recorded_data(description: dict[str, Any] | None) -> dict[str, Any] | None:
    """The ``data`` entry of a model's description, or None when the model is a Fashion-MNIST one."""
    record = (description or {}).get(RECORD_KEY)
    if isinstance(record, dict) and record.get("kind") not in (None, FASHION_MNIST):
        return record
    return None


def short_name(record: dict[str, Any]) -> str:
    """``csv data sha256:846f6cad587f``: how messages and pages name recorded data (no path)."""
    return f"{record.get('kind', '?')} data {str(record.get('fingerprint', '?'))[:19]}"


def load_recorded(record: dict[str, Any], data: str | Path | None = None, what: str = "the model") -> Dataset:
    """Loads the dataset a ``data`` entry names: from ``data`` when given, else from its recorded path.

    The same options give the same splits, so the test split is the one the model never trained on.

    Args:
        record: The entry (see :func:`data_record`).
        data: Where a copy of the data is (a ``--data`` value); default: the recorded path.
        what: The model, for messages.

    Raises:
        EdgeFMError: The recorded path is not on this machine (pass ``--data``), the data there
            changed, or ``data`` holds other classes or another image shape.
    """
    from edge_fm.data.sources import load_data

    source = str(data) if data is not None else str(record.get("source", ""))
    if source in (DEFAULT_DATA, SAMPLE_DATA):
        raise EdgeFMError(
            f"--data {source} is Fashion-MNIST, but {what} was made from {short_name(record)}: pass the data "
            "the model was made from."
        )
    if data is None and not Path(source).exists():
        raise EdgeFMError(
            f"{what} was made from {short_name(record)} read from {source}, which is not on this machine: "
            "pass --data with the path of that data."
        )
    options = _options(record.get("options") or {})
    dataset = load_data(source, None, options)
    check_classes(dataset.class_names, record.get("class_names") or (), what, source)
    recorded = record.get("fingerprint")
    if dataset.identity is not None and recorded and dataset.identity.fingerprint != recorded:
        if data is None:
            raise EdgeFMError(
                f"{what} was made from {short_name(record)}, but {source} is now "
                f"{dataset.identity.fingerprint[:19]}: its files changed; pass --data with the data as it was."
            )
        # Other files split afresh: their "test" images could be ones the model trained on.
        raise EdgeFMError(
            f"{what} was made from {short_name(record)}, but {source} holds other files "
            f"({dataset.identity.fingerprint[:19]}), whose held-out split could hold images the model trained "
            "on: pass --data with the data the model was made from (a moved copy is fine)."
        )
    shape = tuple(record.get("image_shape") or dataset.image_shape)
    if dataset.image_shape != shape:
        # Other data of the same classes: read at the model's input size, by the recorded policy.
        forced = dataclasses.replace(options, image_size=shape[:2], channels=shape[2])
        dataset = load_data(source, None, forced)
    return dataset


def _options(values: dict[str, Any]) -> DataOptions:
    known = {field.name for field in dataclasses.fields(DataOptions)}
    values = {key: value for key, value in values.items() if key in known}
    if values.get("image_size"):
        values["image_size"] = tuple(values["image_size"])
    return DataOptions(**values)


def check_classes(found: Sequence[str], expected: Sequence[str], what: str, source: str | Path) -> None:
    """Refuses, in one line, data whose classes are not the model's.

    Raises:
        EdgeFMError: The class names differ (count or order).
    """
    if tuple(found) == tuple(expected):
        return
    raise EdgeFMError(
        f"{source} holds {len(found)} classes ({_names(found)}) but {what} classifies {len(expected)} "
        f"({_names(expected)}): pass the data the model was made from."
    )


def _names(names: Sequence[str], shown: int = 4) -> str:
    names = list(names)
    return ", ".join(names[:shown]) + (", ..." if len(names) > shown else "")


@dataclasses.dataclass(frozen=True)
class SplitImages:
    """A model's test images with their labels, and what they are.

    Attributes:
        images: uint8 ``(N, height, width, channels)``.
        labels: Class indices.
        class_names: The name of each label index.
        name: What the images are, in a few words (no local path).
        sample: Whether they are the embedded sample's (not a test set).
        record: The ``data`` entry of their dataset (None for Fashion-MNIST).
    """

    images: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]
    name: str
    sample: bool = False
    record: dict[str, Any] | None = None

    @property
    def source(self) -> str:
        """What the images are and how many: the ``test_set`` line of a benchmark."""
        if self.sample:
            return f"embedded sample test images ({len(self.labels)}); NOT the Fashion-MNIST test set"
        return f"{self.name} ({len(self.labels)} images)"

    @property
    def sha256(self) -> str:
        """The identity of the images and labels (Fashion-MNIST's as :func:`split_sha256` gives it)."""
        if self.record is None:
            return fmnist.split_sha256(self.images, self.labels)
        digest = hashlib.sha256(np.ascontiguousarray(self.images, dtype=np.uint8).tobytes())
        digest.update(np.ascontiguousarray(self.labels, dtype="<u2").tobytes())
        return digest.hexdigest()

    @property
    def checked_on(self) -> str:
        """What a form's check names these images by: ``NAME, first N``."""
        return f"{self.name}, first {len(self.labels)}"

    def first(self, count: int | None) -> SplitImages:
        """The first ``count`` images (None: all)."""
        return dataclasses.replace(self, images=self.images[:count], labels=self.labels[:count])


def model_test_split(
    description: dict[str, Any] | None = None,
    data: str | Path | None = None,
    data_dir: Path | str | None = None,
    sample: bool = False,
    what: str = "the model",
    labels: Sequence[str] | None = None,
) -> SplitImages:
    """The test split a model is scored on: its recorded dataset's, else Fashion-MNIST's.

    Args:
        description: The model's ``model.json`` (None or without ``data``: a Fashion-MNIST model).
        data: A ``--data`` value: where the model's data is (a copy, or other data of the same classes).
        data_dir: Where Fashion-MNIST's IDX files are.
        sample: The embedded sample's test images (a Fashion-MNIST model only).
        what: The model, for messages.
        labels: The model's class names, checked against the data's (default: the description's).

    Raises:
        EdgeFMError: The data is missing or holds other classes than the model's.
    """
    record = recorded_data(description)
    expected = tuple(labels or (description or {}).get("labels") or ())
    if record is not None:
        if sample:
            raise EdgeFMError(
                f"{what} was made from {short_name(record)}, not Fashion-MNIST: drop --sample (its own test "
                "split is used)."
            )
        dataset = load_recorded(record, data, what)
        return _from_dataset(dataset, record)
    if data is not None and str(data) not in (FASHION_MNIST, "sample"):
        from edge_fm.data.sources import load_data

        dataset = load_data(data)
        check_classes(dataset.class_names, expected or fmnist.CLASS_NAMES, what, data)
        return _from_dataset(dataset, data_record(dataset, DataOptions()))
    sample = sample or str(data) == "sample"
    images, split_labels = fmnist.load_split("test", fmnist.SAMPLE_DIR if sample else data_dir)
    if expected and len(expected) != fmnist.NUM_CLASSES:
        check_classes(fmnist.CLASS_NAMES, expected, what, "Fashion-MNIST")
    where = (
        "embedded sample test images (NOT the Fashion-MNIST test set)"
        if sample
        else "Fashion-MNIST test split"
    )
    return SplitImages(images, split_labels, fmnist.CLASS_NAMES, where, sample)


def _from_dataset(dataset: Dataset, record: dict[str, Any] | None) -> SplitImages:
    where = f"test split of {dataset.describe()}"
    return SplitImages(
        np.asarray(dataset.x_test), np.asarray(dataset.y_test), dataset.class_names, where, False, record
    )


def group_by_data(
    descriptions: Sequence[dict[str, Any] | None], data: str | Path | None = None
) -> dict[str, tuple[dict[str, Any] | None, list[int]]]:
    """Models grouped by the dataset they were made from, in the order each dataset first comes:
    fingerprint (or Fashion-MNIST) -> (the first description of that data, the models' indices).

    Raises:
        EdgeFMError: ``data`` (one dataset's place) given for models of several datasets.
    """
    groups: dict[str, tuple[dict[str, Any] | None, list[int]]] = {}
    for index, description in enumerate(descriptions):
        key = (recorded_data(description) or {}).get("fingerprint", FASHION_MNIST)
        groups.setdefault(key, (description, []))[1].append(index)
    if len(groups) > 1 and data is not None:
        raise EdgeFMError(
            f"--data {data} names one dataset, but these models were made from {len(groups)} "
            f"({_data_names(groups)}): drop --data, or bench one dataset's models with it."
        )
    return groups


def _data_names(groups: dict[str, tuple[dict[str, Any] | None, list[int]]]) -> str:
    records = [recorded_data(first) for first, _ in groups.values()]
    return ", ".join(short_name(record) if record else "Fashion-MNIST" for record in records)


def same_data(descriptions: Sequence[dict[str, Any] | None]) -> dict[str, Any] | None:
    """The one description whose data every model shares (for one test file), else an error.

    Raises:
        EdgeFMError: The models were made from different datasets.
    """
    groups = group_by_data(descriptions)
    if len(groups) > 1:
        raise EdgeFMError(
            f"these models were made from different datasets ({_data_names(groups)}): give the models of one "
            "dataset at a time."
        )
    return next(iter(groups.values()))[0] if groups else None

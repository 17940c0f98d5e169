"""The test set a benchmark hands its target, as one compact .npz: the models' own dataset's test split.

A bundle made from a dataset other than Fashion-MNIST names that dataset in its ``model.json``
(see :mod:`edge_fm.data.reference`); its test split is what the runner scores. Fashion-MNIST
models get Fashion-MNIST's test split (or the embedded sample's).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edge_fm.data.reference import (
    FASHION_MNIST,
    SplitImages,
    model_test_split,
    recorded_data,
    same_data,
    short_name,
)
from edge_fm.errors import EdgeFMError


def split_for_targets(
    targets: list[Any],
    path: Path,
    data_dir: Path | str | None,
    sample: bool,
    artifacts: list[Path] = (),
    data: str | Path | None = None,
) -> dict[str, Any]:
    """The test set the targets read, written to ``path``; none when no target reads images (an estimate).

    Args:
        targets: The targets (one that reads no images has ``needs_test_set`` False).
        path: The .npz to write.
        data_dir: Where Fashion-MNIST's IDX files are.
        sample: The embedded sample's test images (Fashion-MNIST models).
        artifacts: The .tflite files measured: their bundles' ``model.json`` name their dataset.
        data: Where the models' dataset is (a ``--data`` value), when not where it was recorded.

    Raises:
        EdgeFMError: The artifacts come from different datasets, or their dataset cannot be read.
    """
    if any(getattr(target, "needs_test_set", True) for target in targets):
        return write_test_set(path, data_dir, sample, artifacts, data)
    return {"source": "none (an estimate needs no images)", "images": 0, "sample": False}


def write_test_set(
    path: Path,
    data_dir: Path | str | None = None,
    sample: bool = False,
    artifacts: list[Path] = (),
    data: str | Path | None = None,
) -> dict[str, Any]:
    """Writes the test images and labels of the artifacts' dataset as a compact .npz and describes them."""
    split = artifacts_split(artifacts, data_dir, sample, data)
    images = split.images
    if split.record is None:  # Fashion-MNIST: the (N, 28, 28) layout every runner version reads
        images = images.reshape(len(images), *images.shape[1:3])
    labels = split.labels.astype(np.uint8 if len(split.class_names) <= 256 else np.uint16)
    np.savez_compressed(path, images=np.asarray(images, dtype=np.uint8), labels=labels)
    info = {
        "source": split.source,
        "images": int(len(labels)),
        "sample": split.sample,
        "sha256": split.sha256,
    }
    if split.record is not None:
        info["data"] = {
            key: split.record[key] for key in ("kind", "fingerprint", "class_names", "image_shape")
        }
    return info


def artifacts_split(
    artifacts: list[Path], data_dir: Path | str | None, sample: bool, data: str | Path | None = None
) -> SplitImages:
    """The test split of the dataset the artifacts were made from (one dataset for all of them)."""
    shared = same_data([_description(path) for path in artifacts])
    what = f"{Path(artifacts[0]).parent.name}" if len(artifacts) == 1 else "these models"
    return model_test_split(shared, data, data_dir, sample, what)


def data_groups(artifacts: list[Path], data: str | Path | None = None) -> list[list[Path]]:
    """The artifacts grouped by the dataset they were made from (each group gets its own test split),
    in the order their first artifact comes.

    Raises:
        EdgeFMError: ``data`` (one dataset's place) given for models of several datasets.
    """
    groups: dict[str, list[Path]] = {}
    names: dict[str, str] = {}
    for path in artifacts:
        record = recorded_data(_description(path))
        key = (record or {}).get("fingerprint", FASHION_MNIST)
        groups.setdefault(key, []).append(path)
        names.setdefault(key, short_name(record) if record else "Fashion-MNIST")
    if len(groups) > 1 and data is not None:
        raise EdgeFMError(
            f"--data {data} names one dataset, but these models were made from {len(groups)} "
            f"({', '.join(names.values())}): drop --data, or bench one dataset's models with it."
        )
    return list(groups.values())


def _description(artifact: Path) -> dict[str, Any]:
    """A bundle's ``model.json``; empty for a bare file, or one the benchmark reports as corrupt."""
    from edge_fm.export.bundles import Bundle

    try:
        return Bundle.open(artifact).description
    except EdgeFMError:
        return {}

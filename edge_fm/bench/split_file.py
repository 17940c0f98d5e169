"""The test set a benchmark hands its target, as one compact .npz: the models' own dataset's test split.

A bundle made from a dataset other than Fashion-MNIST names that dataset in its ``model.json``
(see :mod:`edge_fm.data.reference`); its test split is what the runner scores. Fashion-MNIST
models get Fashion-MNIST's test split (or the embedded sample's).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from edge_fm.data.reference import SplitImages, model_test_split


@dataclasses.dataclass(frozen=True)
class DataGroup:
    """Artifacts made from one dataset, which share its test split.

    Attributes:
        artifacts: The .tflite files.
        description: The first one's ``model.json`` (its ``data`` entry and labels name the split);
            None when the group was not read (no target reads images).
    """

    artifacts: list[Path]
    description: dict[str, Any] | None = None

    @property
    def what(self) -> str:
        """The models, for messages."""
        return Path(self.artifacts[0]).parent.name if len(self.artifacts) == 1 else "each of these models"


# The ``test_set`` of a benchmark whose targets read no images (estimates).
NO_TEST_SET = {"source": "none (an estimate needs no images)", "images": 0, "sample": False}


def write_test_set(
    path: Path,
    data_dir: Path | str | None = None,
    sample: bool = False,
    group: DataGroup | None = None,
    data: str | Path | None = None,
) -> dict[str, Any]:
    """Writes the test images and labels of a group's dataset (default: Fashion-MNIST's) as a compact
    .npz and describes them."""
    split = group_split(group, data_dir, sample, data)
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


def group_split(
    group: DataGroup | None, data_dir: Path | str | None, sample: bool, data: str | Path | None = None
) -> SplitImages:
    """The test split of the dataset a group's artifacts were made from."""
    if group is None:
        return model_test_split(None, data, data_dir, sample)
    return model_test_split(group.description, data, data_dir, sample, group.what)

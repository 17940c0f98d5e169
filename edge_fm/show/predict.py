"""Classifying real image files with an exported artifact, preprocessed as docs/mobile.md describes.

A Fashion-MNIST model's images are read by :func:`edge_fm.data.images.image_to_input` (re-exported
here): grey, inverted when the background is light, padded and resized to 28x28. A model made from
other data reads them as its training images were read (:func:`edge_fm.data.images.read_image`):
its input size and channels, by the resize policy its bundle records.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from edge_fm.data.datasets import CLASS_NAMES, IMAGE_SHAPE
from edge_fm.data.images import image_to_input, read_image
from edge_fm.data.reference import SplitImages, model_test_split, recorded_data
from edge_fm.errors import EdgeFMError
from edge_fm.export.bundles import DESCRIPTION_FILE, LABELS_FILE, Bundle, artifact_file
from edge_fm.records import check_labels
from edge_fm.runner import RunnerError, TFLiteModel

__all__ = [
    "ImagePolicy",
    "Prediction",
    "classify_files",
    "classify_test_split",
    "evaluate_artifact",
    "image_to_input",
    "load_artifact",
    "load_described",
    "policy_of",
]


@dataclasses.dataclass(frozen=True)
class Prediction:
    """The classes of one image, or why it could not be classified."""

    path: str
    top: list[tuple[str, float]]  # (class name, probability), best first
    inverted: bool = False  # the image had a light background and was inverted
    error: str | None = None
    label: str | None = None  # the true class, for an image of a test split


@dataclasses.dataclass(frozen=True)
class ImagePolicy:
    """How an image file becomes a model's input.

    Attributes:
        size: ``(height, width)`` of the input.
        channels: 1 (grey) or 3 (RGB).
        resize: ``pad`` or ``stretch`` (a model of its own data: its training images' policy).
        garment: Fashion-MNIST's steps: grey, inverted when the background is light, padded to 28x28.
    """

    size: tuple[int, int] = IMAGE_SHAPE[:2]
    channels: int = 1
    resize: str = "pad"
    garment: bool = True

    def read(self, source: Path | str | bytes, name: str | None = None) -> tuple[np.ndarray, bool]:
        """``(pixels (height, width, channels) uint8, inverted)`` of an image file or its bytes.

        Raises:
            EdgeFMError: The image cannot be read (see :func:`image_to_input`).
        """
        if self.garment:
            pixels, inverted = image_to_input(source, name)
            return pixels[..., None], inverted
        return read_image(source, self.size, self.channels, self.resize, name), False


def policy_of(description: dict[str, Any] | None) -> ImagePolicy:
    """How an image file becomes the input of the model ``description`` describes: its data's size,
    channels and resize as its bundle records them; else Fashion-MNIST's."""
    record = recorded_data(description)
    if record is None:
        return ImagePolicy()
    height, width, channels = (int(d) for d in record["image_shape"])
    return ImagePolicy((height, width), channels, (record.get("options") or {}).get("resize", "pad"), False)


def load_artifact(artifact: Path | str) -> tuple[TFLiteModel, list[str]]:
    """Loads a .tflite file or an export bundle directory, with its class names.

    Labels come from the bundle's ``model.json`` (or ``labels.txt``) beside the file, else the
    Fashion-MNIST classes. A model of another dataset than Fashion-MNIST takes the input its
    bundle's ``data`` entry records.
    """
    model, labels, _ = load_described(artifact)
    return model, labels


def load_described(artifact: Path | str) -> tuple[TFLiteModel, list[str], dict[str, Any]]:
    """:func:`load_artifact`, with the artifact's description (its ``model.json``, else the one
    embedded in the file; empty for a foreign file), read once."""
    model_path = artifact_file(artifact)
    try:
        model = TFLiteModel(model_path=str(model_path))
    except RunnerError as exc:
        raise EdgeFMError(str(exc)) from None
    bundle = Bundle.open(model_path, embedded=True) if model_path.suffix == ".tflite" else None
    labels = list(bundle.labels or CLASS_NAMES) if bundle else list(CLASS_NAMES)
    labels = check_labels(labels, f"{model_path.parent}: labels")
    description = bundle.description if bundle else {}
    record = recorded_data(description)
    expected = tuple(record["image_shape"]) if record else IMAGE_SHAPE
    _check_shapes(model, labels, model_path, bool(bundle and bundle.has_sidecar), expected)
    return model, labels, description


def _check_shapes(
    model: TFLiteModel,
    labels: list[str],
    model_path: Path,
    has_sidecar: bool = True,
    expected: tuple[int, ...] = IMAGE_SHAPE,
) -> None:
    # Another model's .tflite (or a bundle whose model.json lists other labels) would fail later
    # with a shape error or print wrong names; say so up front.
    image_shape = tuple(int(d) for d in model.input["shape"][1:])
    classes = int(model.output["shape"][-1])
    if image_shape[:2] == tuple(expected[:2]) and image_shape[2] in (1, 3):
        pass  # its data's size: grey, or RGB (a mobile form of a grey model takes RGB)
    elif image_shape != (28, 28, 1):
        raise EdgeFMError(
            f"{model_path} takes input {image_shape}, not a 28x28 grey image: pass a model made by `edge-fm export`."
        )
    if len(labels) != classes and not has_sidecar:
        raise EdgeFMError(
            f"{model_path} outputs {classes} classes, and with no model.json beside it the labels are Fashion-MNIST's "
            f"{len(labels)}: pass the bundle folder made by `edge-fm export`, which holds the model's labels."
        )
    if len(labels) != classes:
        # The bundle's labels.txt names the classes where it has one, else its model.json.
        named_in = model_path.with_name(LABELS_FILE)
        named_in = named_in if named_in.is_file() else model_path.with_name(DESCRIPTION_FILE)
        raise EdgeFMError(
            f"{named_in} lists {len(labels)} labels but the model outputs {classes} classes: give one label "
            "per output class, in output order, or re-export the bundle with `edge-fm export`."
        )


def classify_files(artifact: Path | str, images: list[Path | str], top: int = 3) -> list[Prediction]:
    """Classifies image files; an unreadable image gets an error entry and the rest go on.

    Args:
        artifact: A .tflite file or an export bundle directory.
        images: Image file paths.
        top: How many classes to keep per image.
    """
    model, labels, description = load_described(artifact)
    policy = dataclasses.replace(policy_of(description), channels=int(model.input["shape"][-1]))
    results = []
    for path in images:
        try:
            pixels, inverted = policy.read(path)
        except EdgeFMError as exc:
            results.append(Prediction(str(path), [], error=str(exc)))
            continue
        probs = model.predict_proba(pixels[None])[0]
        # Stable: classes with equal probability (an int8 output has 256 levels) keep label order, as argmax
        # and MediaPipe's classifier order them, so the first class is the one they name.
        order = np.argsort(-probs, kind="stable")[:top]
        results.append(Prediction(str(path), [(labels[i], float(probs[i])) for i in order], inverted))
    return results


# ---------------------------------------------------------------- a bundle on its own data


def evaluate_artifact(
    artifact: Path | str,
    data: Path | str | None = None,
    data_dir: Path | str | None = None,
    sample: bool = False,
) -> dict:
    """Scores an export bundle (or a .tflite beside its ``model.json``) on its dataset's test split.

    A bundle made from the user's own data is scored on that data's test split (read from where
    its ``model.json`` says, or from ``data``); a Fashion-MNIST one on Fashion-MNIST's (or the
    embedded sample's, with ``sample``). Data of other classes than the model's is refused.

    Returns:
        The :func:`~edge_fm.train.metrics.classification_metrics` dict, plus ``data`` and ``split``.
    """
    from edge_fm.train.metrics import classification_metrics

    model, labels, split = _model_and_split(artifact, data, data_dir, sample)
    result = classification_metrics(split.labels, model.predict_proba(split.images), split.class_names)
    result["data"] = split.name
    result["split"] = "sample_test" if split.sample else "test"
    return result


def classify_test_split(
    artifact: Path | str,
    data: Path | str | None = None,
    data_dir: Path | str | None = None,
    count: int = 10,
    top: int = 3,
) -> list[Prediction]:
    """The top classes of the first ``count`` images of a bundle's own test split, with their true class.

    ``data`` is where the bundle's data is (see :func:`evaluate_artifact`).
    """
    model, labels, split = _model_and_split(artifact, data, data_dir, False)
    split = split.first(count)
    probs = model.predict_proba(split.images)
    results = []
    for index, (row, label) in enumerate(zip(probs, split.labels)):
        order = np.argsort(-row, kind="stable")[:top]
        name = f"test image {index}"
        results.append(
            Prediction(name, [(labels[i], float(row[i])) for i in order], label=split.class_names[int(label)])
        )
    return results


def _model_and_split(artifact, data, data_dir, sample: bool) -> tuple[TFLiteModel, list[str], SplitImages]:
    model, labels, description = load_described(artifact)
    split = model_test_split(description, data, data_dir, sample, what=str(artifact), labels=labels)
    return model, labels, split

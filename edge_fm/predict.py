"""Classifying real image files with an exported artifact, preprocessed as docs/mobile.md describes."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from edge_fm.data import CLASS_NAMES
from edge_fm.errors import EdgeFMError
from edge_fm.runner import RunnerError, TFLiteModel

BORDER_FRACTION = 0.08  # share of each side read to decide what the background is


@dataclasses.dataclass(frozen=True)
class Prediction:
    """The classes of one image, or why it could not be classified."""

    path: str
    top: list[tuple[str, float]]  # (class name, probability), best first
    inverted: bool = False  # the image had a light background and was inverted
    error: str | None = None


def image_to_input(path: Path | str) -> tuple[np.ndarray, bool]:
    """Turns an image file (PNG, JPEG, ...; any size, colour or grey) into a 28x28 uint8 array.

    Fashion-MNIST shows a light object on a black background, centred and filling the frame, so:
    greyscale; invert when the border is light (a photo of an object on a light surface); pad to
    a square with black; resize to 28x28.

    Returns:
        ``(pixels, inverted)``: ``(28, 28)`` uint8 values 0-255 and whether it was inverted.

    Raises:
        EdgeFMError: The file is missing or not a readable image.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image = ImageOps.exif_transpose(image)
            if image.mode in ("RGBA", "LA", "P"):
                # Transparent areas become white, as a photo's background would be.
                image = image.convert("RGBA")
                canvas = Image.new("RGBA", image.size, (255, 255, 255, 255))
                image = Image.alpha_composite(canvas, image)
            grey = np.asarray(image.convert("L"), dtype=np.uint8)
    except FileNotFoundError:
        raise EdgeFMError(f"{path}: no such file.") from None
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise EdgeFMError(f"{path}: not a readable image ({type(exc).__name__}); use a PNG or JPEG file.") from None
    if grey.size == 0:
        raise EdgeFMError(f"{path}: the image is empty.")
    inverted = _border_is_light(grey)
    if inverted:
        grey = 255 - grey
    side = max(grey.shape)
    square = np.zeros((side, side), dtype=np.uint8)
    top, left = (side - grey.shape[0]) // 2, (side - grey.shape[1]) // 2
    square[top : top + grey.shape[0], left : left + grey.shape[1]] = grey
    resized = Image.fromarray(square).resize((28, 28), Image.Resampling.LANCZOS)
    return np.asarray(resized, dtype=np.uint8), inverted


def _border_is_light(grey: np.ndarray) -> bool:
    height, width = grey.shape
    band_h, band_w = max(1, int(height * BORDER_FRACTION)), max(1, int(width * BORDER_FRACTION))
    border = np.concatenate(
        [grey[:band_h].ravel(), grey[-band_h:].ravel(), grey[:, :band_w].ravel(), grey[:, -band_w:].ravel()]
    )
    return float(np.median(border)) > 127


def load_artifact(artifact: Path | str) -> tuple[TFLiteModel, list[str]]:
    """Loads a .tflite file or an export bundle directory, with its class names.

    Labels come from the bundle's ``model.json`` (or ``labels.txt``) beside the file, else the
    Fashion-MNIST classes.
    """
    path = Path(artifact)
    model_path = path / "model.tflite" if path.is_dir() else path
    if not model_path.is_file():
        raise EdgeFMError(f"{model_path}: no such artifact; pass a .tflite file or a bundle made by `edge-fm export`.")
    try:
        model = TFLiteModel(model_path=str(model_path))
    except RunnerError as exc:
        raise EdgeFMError(str(exc)) from None
    labels = list(CLASS_NAMES)
    sidecar = model_path.with_name("model.json")
    if sidecar.is_file():
        labels = json.loads(sidecar.read_text()).get("labels", labels)
    return model, labels


def classify_files(artifact: Path | str, images: list[Path | str], top: int = 3) -> list[Prediction]:
    """Classifies image files; an unreadable image gets an error entry and the rest go on.

    Args:
        artifact: A .tflite file or an export bundle directory.
        images: Image file paths.
        top: How many classes to keep per image.
    """
    model, labels = load_artifact(artifact)
    results = []
    for path in images:
        try:
            pixels, inverted = image_to_input(path)
        except EdgeFMError as exc:
            results.append(Prediction(str(path), [], error=str(exc)))
            continue
        probs = model.predict_proba(pixels[None, :, :, None])[0]
        order = np.argsort(-probs)[:top]
        results.append(Prediction(str(path), [(labels[i], float(probs[i])) for i in order], inverted))
    return results

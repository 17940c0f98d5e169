"""Classifying real image files with an exported artifact, preprocessed as docs/mobile.md describes."""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path

import numpy as np

from edge_fm.data.datasets import CLASS_NAMES
from edge_fm.errors import EdgeFMError
from edge_fm.export.bundles import DESCRIPTION_FILE, MODEL_FILE, Bundle
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
    a square with black; resize to 28x28. Palette, 16-bit, float, CMYK and transparent images are
    converted first (16-bit scaled to 0-255, transparency over white); an animation gives its
    first frame.

    Returns:
        ``(pixels, inverted)``: ``(28, 28)`` uint8 values 0-255 and whether it was inverted.

    Raises:
        EdgeFMError: The file is missing, empty, a folder, not a readable image, or so large that
            decoding it could exhaust memory (above Pillow's decompression-bomb limit).
    """
    from PIL import Image

    path = Path(path)
    _check_image_file(path)
    try:
        with warnings.catch_warnings():
            # Pillow only warns between its limit and twice it; both mean a bomb-sized image.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                grey = _to_grey(image)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise EdgeFMError(
            f"{path}: more than {Image.MAX_IMAGE_PIXELS:,} pixels, Pillow's guard against decompression bombs; "
            "downscale it first (the model sees 28x28)."
        ) from None
    except Exception as exc:  # noqa: BLE001 - decoders raise many types for a bad file; all mean the same to a user
        raise EdgeFMError(
            f"{path}: not a readable image ({_decode_reason(exc)}); use a PNG or JPEG file."
        ) from None
    if grey.size == 0:
        raise EdgeFMError(f"{path}: the image has no pixels.")
    inverted = _border_is_light(grey)
    if inverted:
        grey = 255 - grey
    side = max(grey.shape)
    square = np.zeros((side, side), dtype=np.uint8)
    top, left = (side - grey.shape[0]) // 2, (side - grey.shape[1]) // 2
    square[top : top + grey.shape[0], left : left + grey.shape[1]] = grey
    resized = Image.fromarray(square).resize((28, 28), Image.Resampling.LANCZOS)
    return np.asarray(resized, dtype=np.uint8), inverted


def _check_image_file(path: Path) -> None:
    if not path.exists():
        raise EdgeFMError(f"{path}: no such file.")
    if path.is_dir():
        raise EdgeFMError(f"{path} is a folder: pass image files (e.g. {path}/*.png).")
    if path.stat().st_size == 0:
        raise EdgeFMError(f"{path}: the file is empty; pass a PNG or JPEG image.")


def _decode_reason(exc: Exception) -> str:
    from PIL import UnidentifiedImageError

    if isinstance(exc, UnidentifiedImageError):
        return "not an image format Pillow knows"
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _to_grey(image) -> np.ndarray:
    """Greyscale uint8 pixels of the first frame, whatever the mode."""
    from PIL import Image, ImageOps

    image.seek(0)  # an animated GIF or PNG: its first frame
    image = ImageOps.exif_transpose(image)
    if image.mode.startswith("I;16") or image.mode in ("I", "F"):
        return _wide_to_uint8(np.asarray(image), image.mode)
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        image.mode == "P" and "transparency" in image.info
    ):
        # Transparent areas become white, as a photo's background would be.
        image = image.convert("RGBA")
        canvas = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(canvas, image)
    return np.asarray(image.convert("L"), dtype=np.uint8)


def _wide_to_uint8(values: np.ndarray, mode: str) -> np.ndarray:
    # Converting to 8 bits with Pillow would clip, turning every mid-grey 16-bit pixel white.
    values = values.astype(np.float64)
    if mode == "F":
        full_scale = 1.0 if values.size and values.max() <= 1.0 else 255.0  # 0-1 floats, else 0-255
    elif mode == "I" and values.size and values.max() <= 255:
        full_scale = 255.0  # 32-bit integers that hold 8-bit values
    else:
        full_scale = 65535.0  # 16-bit samples (Pillow reads some 16-bit files as mode I)
    return np.clip(np.round(values * (255.0 / full_scale)), 0, 255).astype(np.uint8)


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
    model_path = path / MODEL_FILE if path.is_dir() else path
    if not model_path.is_file():
        raise EdgeFMError(
            f"{model_path}: no such artifact; pass a .tflite file or a bundle made by `edge-fm export`."
        )
    try:
        model = TFLiteModel(model_path=str(model_path))
    except RunnerError as exc:
        raise EdgeFMError(str(exc)) from None
    labels = (
        list(Bundle.open(model_path).labels or CLASS_NAMES)
        if model_path.suffix == ".tflite"
        else list(CLASS_NAMES)
    )
    _check_shapes(model, labels, model_path)
    return model, labels


def _check_shapes(model: TFLiteModel, labels: list[str], model_path: Path) -> None:
    # Another model's .tflite (or a bundle whose model.json lists other labels) would fail later
    # with a shape error or print wrong names; say so up front.
    image_shape = tuple(int(d) for d in model.input["shape"][1:])
    classes = int(model.output["shape"][-1])
    if image_shape != (28, 28, 1):
        raise EdgeFMError(
            f"{model_path} takes input {image_shape}, not a 28x28 grey image: pass a model made by `edge-fm export`."
        )
    if not isinstance(labels, list) or len(labels) != classes:
        raise EdgeFMError(
            f"{model_path.with_name(DESCRIPTION_FILE)} lists "
            f"{len(labels) if isinstance(labels, list) else 'no'} labels "
            f"but the model outputs {classes} classes: re-export the bundle with `edge-fm export`."
        )


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

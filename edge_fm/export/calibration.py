"""Calibration images of integer exports from a folder of the user's own images.

By default the exporter calibrates on the run's training images (``--calibration N`` of them); a
folder (``--calibration-dir``) lets the ranges come from images like those the model will see. Each
image is prepared as ``edge-fm predict`` prepares it (greyscale, a light background inverted, padded
to a square, resized to 28x28); for a model of its own data, as its training images were read (its
input size and channels, its resize policy).

Example:
    >>> images = folder_images("my-photos/", count=200)  # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edge_fm.errors import EdgeFMError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def folder_images(
    folder: Path | str,
    count: int | None = None,
    shape: tuple[int, int, int] | None = None,
    resize: str = "pad",
) -> np.ndarray:
    """The first ``count`` images of ``folder`` (sorted by name, searched recursively), as uint8 images.

    ``(N, 28, 28, 1)`` prepared as ``edge-fm predict`` prepares a photo for Fashion-MNIST; with
    ``shape`` (height, width, channels), read at that size by the ``resize`` policy.

    Raises:
        EdgeFMError: Not a folder, a folder with no image files, or an image that cannot be read.
    """
    from edge_fm.data.images import image_to_input, read_image

    folder = Path(folder)
    if not folder.is_dir():
        raise EdgeFMError(
            f"--calibration-dir {folder} is not a folder: give a folder of images (PNG, JPEG...)."
        )
    paths = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise EdgeFMError(
            f"--calibration-dir {folder} holds no images ({', '.join(IMAGE_SUFFIXES)}): "
            "add some, or drop it to calibrate on the run's training images."
        )
    if shape is not None:
        return np.stack([read_image(path, shape[:2], shape[2], resize) for path in paths[:count]])
    return np.stack([image_to_input(path)[0] for path in paths[:count]])[..., None]

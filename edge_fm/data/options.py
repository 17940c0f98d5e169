"""How a dataset source is read and split: the options, the shared constants and the cache's place."""

from __future__ import annotations

import collections
import dataclasses
import numbers
import os
from collections.abc import Callable
from pathlib import Path

from edge_fm.data import datasets as fmnist
from edge_fm.data.images import RESIZE_POLICIES
from edge_fm.errors import EdgeFMError

DEFAULT_DATA = "fashion-mnist"
SAMPLE_DATA = "sample"
TFDS_PREFIX = "tfds:"  # --data tfds:NAME, a TensorFlow Datasets dataset
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
SPLITS = ("train", "val", "test")
NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")
MAX_CLASSES = 10_000  # labels beyond this are a wrong column, not classes
CACHE_VERSION = 3  # bumped whenever the cache's layout or the decoding changes
CACHE_ENV = "EDGE_FM_CACHE"
SKIPPED_EXAMPLES = 5  # skipped files named in the identity record
ORIGIN = {split: code for code, split in enumerate(SPLITS)}
# A side beyond this is a typo or a photo's own size, not an edge model's input; it would also decode
# every image into gigabytes.
MAX_SIDE = 1024
# Without --image-size, images larger than this (a phone's photos) are brought down to it, aspect kept:
# MobileNetV2's largest input, and already more than a microcontroller holds.
DEFAULT_MAX_SIDE = 224

ProgressFn = Callable[[str, int, int], None]  # (task, done, total)


@dataclasses.dataclass(frozen=True)
class DataOptions:
    """How a source is read and split; the same options on the same data give the same dataset."""

    image_size: tuple[int, int] | None = None  # (height, width); None: see default_size
    channels: int | None = None  # 1 (grey) or 3 (RGB); None: grey when every image is grey
    resize: str = "pad"  # images of another size: 'pad' (aspect kept) or 'stretch'
    val_size: int | None = None  # validation images carved from train (None: 5000 / 400 / a tenth)
    test_fraction: float = 0.2  # share of each class held out for test when the data has no test split
    seed: int = 0  # seed of the held-out splits
    max_train: int | None = None  # cap on training images, stratified (None: all)
    label_column: str | None = None  # CSV: the label column's name or index (None: 'label', else the first)

    def __post_init__(self):
        if self.image_size is not None:
            check_image_size(self.image_size)
        if self.channels not in (None, 1, 3):
            raise EdgeFMError(f"--channels must be 1 or 3, not {self.channels}.")
        if self.resize not in RESIZE_POLICIES:
            raise EdgeFMError(
                f"unknown resize policy {self.resize!r}; use one of {', '.join(RESIZE_POLICIES)}."
            )
        if not 0.0 < self.test_fraction < 1.0:
            raise EdgeFMError(f"test fraction {self.test_fraction} must be between 0 and 1.")
        if self.val_size is not None and self.val_size < 1:
            raise EdgeFMError(f"validation size {self.val_size} must be at least 1.")
        check_seed(self.seed)
        if self.max_train is not None and self.max_train < 1:
            raise EdgeFMError(f"max_train {self.max_train} must be at least 1.")


def check_seed(seed: int) -> None:
    """Refuses a seed numpy and TensorFlow cannot take (a whole number from 0 to 2**32 - 1).

    Raises:
        EdgeFMError: Out of range, or not a whole number.
    """
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not 0 <= seed < 2**32:
        raise EdgeFMError(f"seed must be a whole number from 0 to {2**32 - 1}, got {seed!r}.")


def check_image_size(size: tuple[int, ...]) -> None:
    """Refuses an image size that is not two sides of 1 to :data:`MAX_SIDE` pixels.

    Raises:
        EdgeFMError: Not ``(height, width)``, or a side beyond :data:`MAX_SIDE`.
    """
    if len(size) != 2 or min(size) < 1:
        raise EdgeFMError(f"image size {size} must be two positive sides (height, width).")
    if max(size) > MAX_SIDE:
        height, width = size
        raise EdgeFMError(
            f"image size {width}x{height} is over {MAX_SIDE} pixels a side; edge models take 32 to "
            f"{DEFAULT_MAX_SIDE} or so: pass a smaller --image-size."
        )


def default_size(sizes: collections.Counter) -> tuple[int, int]:
    """The size a source's images are brought to without ``--image-size``.

    The most common ``(height, width)`` (among equally common ones the largest, so no size is chosen by
    file order), scaled down, aspect kept, to at most :data:`DEFAULT_MAX_SIDE` a side.
    """
    height, width = max(sizes, key=lambda s: (sizes[s], s[0] * s[1], s))
    scale = DEFAULT_MAX_SIDE / max(height, width)
    if scale >= 1:
        return height, width
    return max(1, round(height * scale)), max(1, round(width * scale))


def parse_image_size(text: str) -> tuple[int, int]:
    """Reads ``--image-size``: ``96`` (a square) or ``WIDTHxHEIGHT`` such as ``64x48``.

    Returns:
        ``(height, width)``.

    Raises:
        EdgeFMError: Not one or two positive whole numbers.
    """
    parts = str(text).lower().replace(" ", "").split("x")
    if len(parts) in (1, 2) and all(p.isdigit() and int(p) > 0 for p in parts):
        width, height = int(parts[0]), int(parts[-1])
        check_image_size((height, width))
        return height, width
    raise EdgeFMError(f"--image-size {text!r}: use a side (96) or WIDTHxHEIGHT (64x48), in pixels.")


def cache_root() -> Path:
    """Where decoded images are cached: ``$EDGE_FM_CACHE``, else ``datasets/`` in the user cache."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    return fmnist.default_data_dir().parent / "datasets"

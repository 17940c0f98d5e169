"""Checks of a Fashion-MNIST folder: are these the published files, and is its test split a test split.

The published release's SHA-256 checksums are compared with the four files: a match is recorded
with the data's identity (and said by ``edge-fm data info``); other files (a rebuilt copy, a
re-compressed one) are not an error, only recorded as not the published files, since accuracies on
them are comparable to, not identical with, figures on the release.

A test accuracy means something only on images the model never trained on. Files copied into
the wrong names (train and test swapped, or one copied over the other) still read as valid IDX
files, so the splits are compared: their sizes and class balance where Fashion-MNIST's are known
(60,000 and 10,000 images, a tenth of each per class), and their images. The original release
shares 10 identical images between its splits; more than :data:`MAX_SHARED_FRACTION` of the test
split is an error.
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path
from typing import Any

import numpy as np

from edge_fm.data.idx import EXPECTED_COUNTS, FILES, NUM_CLASSES, PUBLISHED_SHA256, read_idx
from edge_fm.errors import EdgeFMError
from edge_fm.io import sha256_file

MAX_SHARED_FRACTION = 0.01  # test images also in the training split, at most (the original: 0.1%)
PUBLISHED = "the published files of Fashion-MNIST (checksums match)"
NOT_PUBLISHED = "not the published files (checksums differ)"


def published_release(directory: Path | str) -> dict[str, Any]:
    """Whether a folder's four files are Fashion-MNIST's published release, by their SHA-256.

    Returns:
        ``{"published": bool, "verdict": str, "files": {name: {"sha256", "matches_published"}}}``;
        ``verdict`` is :data:`PUBLISHED` or :data:`NOT_PUBLISHED`. A missing file counts as differing.
    """
    files = {}
    for name, expected in PUBLISHED_SHA256.items():
        path = Path(directory) / name
        actual = (
            _sha256(str(path.resolve()), path.stat().st_size, path.stat().st_mtime_ns)
            if path.is_file()
            else None
        )
        files[name] = {"sha256": actual, "matches_published": actual == expected}
    published = all(entry["matches_published"] for entry in files.values())
    return {"published": published, "verdict": PUBLISHED if published else NOT_PUBLISHED, "files": files}


@functools.lru_cache(maxsize=32)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    """A file's SHA-256, computed once per process for each (path, size, modification time)."""
    return sha256_file(Path(path))


def check_splits(directory: Path | str) -> None:
    """Refuses a folder whose test split is, or overlaps, its training split, or has the wrong size.

    Does nothing when a file is missing (the loader says which). The result is kept per set of
    files (path, size, modification time), so a process pays for the comparison once.

    Raises:
        EdgeFMError: The splits are swapped, identical or overlapping, or a split of Fashion-MNIST's
            size has classes of other sizes.
    """
    files = [Path(directory) / name for pair in FILES.values() for name in pair]
    if not all(path.is_file() for path in files):
        return
    _check(
        str(directory),
        tuple((str(path.resolve()), path.stat().st_size, path.stat().st_mtime_ns) for path in files),
    )


@functools.lru_cache(maxsize=8)
def _check(folder: str, files: tuple[tuple[str, int, int], ...]) -> None:
    paths = dict(zip([name for pair in FILES.values() for name in pair], (Path(f[0]) for f in files)))
    train_images, test_images = (read_idx(paths[FILES[split][0]]) for split in ("train", "test"))
    fix = (
        "put the original files back under their own names, or run `edge-fm data fetch` into an empty folder."
    )
    sizes = {"train": len(train_images), "test": len(test_images)}
    if sizes["test"] == EXPECTED_COUNTS["train"] and sizes["train"] == EXPECTED_COUNTS["test"]:
        raise EdgeFMError(
            f"{folder}: the test files hold {sizes['test']:,} images and the training files "
            f"{sizes['train']:,}, the sizes of Fashion-MNIST's training and test splits: the train and "
            f"test files are swapped; {fix}"
        )
    shared = _shared_images(train_images, test_images)
    if shared > MAX_SHARED_FRACTION * len(test_images):
        what = (
            "is the training split"
            if shared == len(test_images) == len(train_images)
            else "overlaps the training split"
        )
        raise EdgeFMError(
            f"{folder}: the test split {what} ({shared:,} of its {len(test_images):,} images are training "
            f"images), so a test accuracy would measure memory, not generalisation; {fix}"
        )
    if sizes["test"] == EXPECTED_COUNTS["train"]:
        raise EdgeFMError(
            f"{folder}: {FILES['test'][0]} holds {sizes['test']:,} images, the size of Fashion-MNIST's "
            f"training split (its test split has {EXPECTED_COUNTS['test']:,}); {fix}"
        )
    for split, images in (("train", train_images), ("test", test_images)):
        if len(images) != EXPECTED_COUNTS[split]:
            continue  # a sample or another dataset: no known balance
        labels = read_idx(paths[FILES[split][1]])
        counts = np.bincount(labels[labels < NUM_CLASSES], minlength=NUM_CLASSES)
        each = EXPECTED_COUNTS[split] // NUM_CLASSES
        if len(labels) == len(images) and (counts != each).any():
            raise EdgeFMError(
                f"{folder}: the {split} split's classes hold {counts.min():,} to {counts.max():,} images, "
                f"where Fashion-MNIST's hold {each:,} each: its labels are not the original ones; {fix}"
            )


def _shared_images(train: np.ndarray, test: np.ndarray) -> int:
    """How many test images are byte-for-byte also training images."""

    def digests(images: np.ndarray) -> list[bytes]:
        rows = np.ascontiguousarray(images, dtype=np.uint8).reshape(len(images), -1)
        return [hashlib.blake2b(row.tobytes(), digest_size=16).digest() for row in rows]

    seen = set(digests(train))
    return sum(digest in seen for digest in digests(test))

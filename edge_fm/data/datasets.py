"""The Fashion-MNIST data layer: IDX files, where the data lives, downloads, splits, the sample.

Every array handed to the rest of the package is raw: images are ``uint8`` of shape
``(N, 28, 28, 1)`` with values 0-255 and labels are ``uint8`` class indices. Scaling and resizing
belong to the models (see :mod:`edge_fm.zoo`), so an exported model takes what a camera gives.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from pathlib import Path

import numpy as np

from edge_fm.data.idx import (  # noqa: F401 (the release's facts and the IDX reader: re-exported)
    CLASS_NAMES,
    EXPECTED_COUNTS,
    FILES,
    IMAGE_SHAPE,
    NUM_CLASSES,
    PUBLISHED_SHA256,
    read_idx,
    write_idx,
)
from edge_fm.data.sanity import check_splits, published_release
from edge_fm.errors import EdgeFMError

# The official location first, then the copy Keras downloads from.
MIRRORS: tuple[str, ...] = (
    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    "https://storage.googleapis.com/tensorflow/tf-keras-datasets/",
)
DATA_ENV = "EDGE_FM_DATA"
SAMPLE_DIR = Path(__file__).parent / "sample"

# ---------------------------------------------------------------- where the data is


def default_data_dir() -> Path:
    """Returns the per-user cache directory used when neither ``--data-dir`` nor the env var is set."""
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "edge-fm" / "fashion-mnist"


def resolve_data_dir(data_dir: Path | str | None = None) -> Path:
    """Picks the data directory: the argument, else ``$EDGE_FM_DATA``, else the per-user cache."""
    if data_dir:
        return Path(data_dir).expanduser()
    if os.environ.get(DATA_ENV):
        return Path(os.environ[DATA_ENV]).expanduser()
    return default_data_dir()


def load_split(split: str, data_dir: Path | str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Loads one split of Fashion-MNIST from IDX files.

    Args:
        split: ``"train"`` or ``"test"``.
        data_dir: Directory holding the four standard files (see :func:`resolve_data_dir`).

    Returns:
        ``(images, labels)``: uint8 ``(N, 28, 28, 1)`` and uint8 ``(N,)``.

    Raises:
        EdgeFMError: Files missing, corrupt, or images and labels that do not belong together; a
            test split that is, or overlaps, the training split (see :mod:`edge_fm.data.sanity`).
    """
    if split not in FILES:
        raise EdgeFMError(f"unknown split {split!r}; use 'train' or 'test'.")
    directory = resolve_data_dir(data_dir)
    image_file, label_file = (directory / name for name in FILES[split])
    missing = [p.name for p in (image_file, label_file) if not p.is_file()]
    if missing:
        raise EdgeFMError(
            f"Fashion-MNIST not found in {directory} (missing {', '.join(missing)}): run "
            f"`edge-fm data fetch`, or pass --data-dir / set {DATA_ENV} to a folder holding the IDX files."
        )
    images, labels = read_idx(image_file), read_idx(label_file)
    _check_pair(images, labels, image_file, label_file)
    if split == "test":
        check_splits(directory)  # a test split that is, or overlaps, the training split is refused
    return images.reshape(-1, *IMAGE_SHAPE), labels


def _check_pair(images: np.ndarray, labels: np.ndarray, image_file: Path, label_file: Path) -> None:
    if images.ndim != 3 or images.shape[1:] != (28, 28) or images.dtype != np.uint8:
        raise EdgeFMError(f"{image_file}: expected uint8 images of 28x28, got {images.dtype} {images.shape}.")
    if labels.ndim != 1 or labels.dtype != np.uint8:
        raise EdgeFMError(
            f"{label_file}: expected a 1-D uint8 label array, got {labels.dtype} {labels.shape}."
        )
    if len(images) != len(labels):
        raise EdgeFMError(
            f"{image_file.name} holds {len(images)} images but {label_file.name} holds {len(labels)} labels: "
            "the files do not belong together."
        )
    if labels.size and labels.max() >= NUM_CLASSES:
        raise EdgeFMError(f"{label_file}: label {int(labels.max())} out of range 0-{NUM_CLASSES - 1}.")


# ---------------------------------------------------------------- splits and datasets


def split_sha256(images: np.ndarray, labels: np.ndarray) -> str:
    """The identity of a split's content (pixels and labels), whatever the compression of its files.

    Copies of Fashion-MNIST differ (the original download and a rebuilt one hold other test images
    at the same positions): an accuracy is comparable across machines only on the same content.
    """
    digest = hashlib.sha256(np.ascontiguousarray(images, dtype=np.uint8).tobytes())
    digest.update(np.ascontiguousarray(labels, dtype=np.uint8).tobytes())
    return digest.hexdigest()


@dataclasses.dataclass(frozen=True)
class DataIdentity:
    """What a dataset is, recorded with every run and printed by ``edge-fm data info``.

    Two loads with the same fingerprint and options give the same images in the same splits.

    Attributes:
        kind: ``fashion-mnist``, ``idx`` (a folder of MNIST-format files), ``folder`` (an image
            folder), ``csv``, ``npz`` or ``tfds`` (a TensorFlow Datasets dataset).
        source: The path the data was read from (``tfds:NAME`` for a TensorFlow Datasets one).
        fingerprint: ``sha256:...`` of the file list and sizes (folders of images) or of the
            files' content (IDX, CSV, npz).
        class_names: The class of each label index.
        counts: Split (``train``, ``val``, ``test``) -> images per class, in label order.
        image_shape: ``(height, width, channels)`` of every image.
        resize: How images of other sizes were brought to ``image_shape`` (``pad`` or
            ``stretch``), or None when none was resized.
        test_split: ``given`` (the data's own test split) or how it was held out.
        test_members: ``sha256:...`` of the held-out test images' names (None when given).
        val_split: ``given`` (the data's own validation split) or how it was held out; None in
            records made before it was recorded.
        published: Whether the files are the dataset's published release (their SHA-256 match the
            published checksums); None where no release is known (other data, the embedded sample).
        skipped: Files skipped (hidden, not an image, unreadable).
        skipped_examples: The first skipped files, each with its reason.
    """

    kind: str
    source: str
    fingerprint: str
    class_names: tuple[str, ...]
    counts: dict[str, tuple[int, ...]]
    image_shape: tuple[int, int, int]
    resize: str | None = None
    test_split: str = "given"
    test_members: str | None = None
    val_split: str | None = None
    published: bool | None = None
    skipped: int = 0
    skipped_examples: tuple[str, ...] = ()

    def as_record(self) -> dict:
        """The identity as JSON-ready values (the ``data`` entry of configs and manifests)."""
        record = dataclasses.asdict(self)
        record["class_names"] = list(self.class_names)
        record["counts"] = {split: list(counts) for split, counts in self.counts.items()}
        record["image_shape"] = list(self.image_shape)
        record["skipped_examples"] = list(self.skipped_examples)
        return record

    @classmethod
    def from_record(cls, record: dict) -> DataIdentity:
        """Reads back what :meth:`as_record` wrote."""
        fields = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in record.items() if k in fields}
        values["class_names"] = tuple(values["class_names"])
        values["counts"] = {split: tuple(counts) for split, counts in values["counts"].items()}
        values["image_shape"] = tuple(values["image_shape"])
        values["skipped_examples"] = tuple(values.get("skipped_examples", ()))
        return cls(**values)


@dataclasses.dataclass(frozen=True)
class Dataset:
    """Train, validation and test arrays, and where they came from.

    Images are uint8 ``(N, height, width, channels)``, labels uint8 (or uint16 past 256 classes)
    class indices into ``class_names``. Arrays may be memory-mapped from the decoded-image cache.

    Attributes:
        source: ``"full"`` (a complete dataset) or ``"sample"`` (the embedded sample).
        location: The directory or file the data was read from.
        class_names: The class of each label index (Fashion-MNIST's by default).
        identity: The dataset's identity record (see :mod:`edge_fm.data.sources`), when known.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    source: str
    location: str
    class_names: tuple[str, ...] = CLASS_NAMES
    identity: DataIdentity | None = None

    @property
    def is_sample(self) -> bool:
        """True when this is the embedded sample, whose accuracy is not test-set accuracy."""
        return self.source == "sample"

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(height, width, channels)`` of every image."""
        return tuple(int(d) for d in self.x_train.shape[1:])

    @property
    def num_classes(self) -> int:
        """How many classes the labels index."""
        return len(self.class_names)

    def describe(self) -> str:
        """One line that says what data this is, for every output that used it."""
        sizes = f"{len(self.x_train)} train / {len(self.x_val)} val / {len(self.x_test)} test"
        if self.is_sample:
            return f"embedded sample of Fashion-MNIST ({sizes}); not the full test set"
        if self.identity is not None and self.identity.kind != "fashion-mnist":
            height, width, channels = self.image_shape
            colour = "grey" if channels == 1 else "RGB"
            # The fingerprint, not the path: this line goes into artifacts shipped to other machines.
            # Files that could not be read are left out; `edge-fm data info` names the first ones.
            skipped = self.identity.skipped
            left_out = f"; {skipped} file{'s' * (skipped != 1)} skipped" if skipped else ""
            return (
                f"{self.identity.kind} data {self.identity.fingerprint[:19]} ({self.num_classes} classes, "
                f"{width}x{height} {colour}; {sizes}{left_out})"
            )
        # No local path: this line goes into artifacts that are shipped to other machines.
        return f"Fashion-MNIST ({sizes})"


def stratified_split(labels: np.ndarray, val_size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Splits indices into train and validation with the class balance of ``labels`` kept.

    Args:
        labels: Class index per example.
        val_size: Number of validation examples.
        seed: Seed of the shuffle; the same seed gives the same split.

    Returns:
        ``(train_indices, val_indices)``, each sorted.

    Raises:
        EdgeFMError: ``val_size`` leaves no training data or is negative.
    """
    n = len(labels)
    if not 0 <= val_size < n:
        raise EdgeFMError(
            f"validation size {val_size} must be between 0 and {n - 1} (the training set holds {n})."
        )
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    # Largest-remainder allocation: per-class quotas that sum to exactly val_size.
    quota = counts * val_size / n
    per_class = np.floor(quota).astype(int)
    shortfall = val_size - per_class.sum()
    per_class[np.argsort(-(quota - per_class), kind="stable")[:shortfall]] += 1
    val = [rng.permutation(np.flatnonzero(labels == c))[:k] for c, k in zip(classes, per_class)]
    val_idx = np.sort(np.concatenate(val)) if val else np.array([], dtype=int)
    train_mask = np.ones(n, dtype=bool)
    train_mask[val_idx] = False
    return np.flatnonzero(train_mask), val_idx


def load_dataset(
    source: str = "full",
    data_dir: Path | str | None = None,
    val_size: int = 5000,
    seed: int = 0,
    max_train: int | None = None,
) -> Dataset:
    """Loads train/validation/test arrays.

    Args:
        source: ``"full"`` reads the IDX files from the data directory; ``"sample"`` reads the
            embedded sample shipped in the package.
        data_dir: Data directory for ``"full"`` (see :func:`resolve_data_dir`).
        val_size: Images carved, stratified, from the training split for validation.
        seed: Seed of the validation split.
        max_train: Keep at most this many training images (stratified), for quick runs.

    Returns:
        The :class:`Dataset`.
    """
    if source == "sample":
        directory = SAMPLE_DIR
    elif source == "full":
        directory = resolve_data_dir(data_dir)
    else:
        raise EdgeFMError(f"unknown data source {source!r}; use 'full' or 'sample'.")
    x, y = load_split("train", directory)
    x_test, y_test = load_split("test", directory)
    train_idx, val_idx = stratified_split(y, val_size, seed)
    if max_train is not None and max_train < len(train_idx):
        keep, _ = stratified_split(y[train_idx], len(train_idx) - max_train, seed + 1)
        train_idx = train_idx[keep]
    return Dataset(x[train_idx], y[train_idx], x[val_idx], y[val_idx], x_test, y_test, source, str(directory))


# ---------------------------------------------------------------- information and the sample


def info(data_dir: Path | str | None = None) -> dict:
    """Describes the dataset found in ``data_dir``.

    Returns:
        A dict with the directory, per-split counts per class, train pixel mean/std (0-255 scale),
        whether the files are the published release (``published``, and ``release`` in words), and for
        each file its SHA-256 and whether it matches the published one.
    """
    directory = resolve_data_dir(data_dir)
    result: dict = {"data_dir": str(directory), "splits": {}, "files": {}}
    for split in FILES:
        images, labels = load_split(split, directory)
        result["splits"][split] = {
            "images": int(len(labels)),
            "per_class": {
                CLASS_NAMES[c]: int(n) for c, n in enumerate(np.bincount(labels, minlength=NUM_CLASSES))
            },
        }
        if split == "train":
            pixels = images.astype(np.float64)
            result["pixel_mean"] = float(pixels.mean())
            result["pixel_std"] = float(pixels.std())
    release = published_release(directory)  # a rebuilt copy is said, not refused
    result.update(published=release["published"], release=release["verdict"], files=release["files"])
    return result


def make_sample(
    out_dir: Path | str,
    data_dir: Path | str | None = None,
    per_class_train: int = 200,
    per_class_test: int = 100,
    seed: int = 0,
) -> list[Path]:
    """Writes a stratified subset of the real dataset as four IDX files (how the embedded sample is made).

    Args:
        out_dir: Where to write the four files.
        data_dir: The full dataset.
        per_class_train: Training images kept per class.
        per_class_test: Test images kept per class.
        seed: Seed of the selection.

    Returns:
        The four written paths.
    """
    rng = np.random.default_rng(seed)
    written = []
    for split, per_class in (("train", per_class_train), ("test", per_class_test)):
        images, labels = load_split(split, data_dir)
        keep = np.sort(
            np.concatenate(
                [rng.permutation(np.flatnonzero(labels == c))[:per_class] for c in range(NUM_CLASSES)]
            )
        )
        image_name, label_name = FILES[split]
        write_idx(Path(out_dir) / image_name, images[keep].reshape(-1, 28, 28))
        write_idx(Path(out_dir) / label_name, labels[keep])
        written += [Path(out_dir) / image_name, Path(out_dir) / label_name]
    return written

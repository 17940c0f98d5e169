"""Where a dataset comes from: one ``--data`` value resolved to a :class:`~edge_fm.data.datasets.Dataset`.

``--data`` takes:

- ``fashion-mnist`` (the default; ``--data-dir`` says where its IDX files are) or ``sample`` (the
  embedded sample);
- a folder holding the four IDX files of any MNIST-format set;
- an image folder, ``DIR/<class>/*`` or ``DIR/train/<class>/...`` with optional ``DIR/val/`` and
  ``DIR/test/``;
- a CSV of pixels with a label column (``.csv`` or ``.csv.gz``), or an ``.npz`` holding
  ``x_train``, ``y_train``, ``x_test``, ``y_test`` (optional ``x_val``, ``y_val``, ``class_names``).

Every source gives a :class:`Dataset` with its :class:`DataIdentity`. A source without a test split
has one held out, stratified; its membership depends only on the data's fingerprint and the seed,
so every load of the same data holds out the same images. Image folders are decoded once, through
the bounded reader of :mod:`edge_fm.data.images`, into a cache of memory-mapped uint8 arrays keyed
by the fingerprint and the options (see :func:`cache_root`).

Example:
    >>> dataset = load_data("photos/", DataOptions(image_size=(32, 32)))  # doctest: +SKIP
    >>> dataset.class_names, dataset.identity.fingerprint  # doctest: +SKIP
"""

from __future__ import annotations

import collections
import concurrent.futures
import csv
import dataclasses
import errno
import gzip
import hashlib
import json
import math
import os
import shutil
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from edge_fm.data import datasets as fmnist
from edge_fm.data.datasets import DataIdentity, Dataset
from edge_fm.data.images import RESIZE_POLICIES, fit_image, read_header, read_image
from edge_fm.errors import EdgeFMError
from edge_fm.io import sha256_file, write_json

DEFAULT_DATA = "fashion-mnist"
SAMPLE_DATA = "sample"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
SPLITS = ("train", "val", "test")
NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")
MAX_CLASSES = 10_000  # labels beyond this are a wrong column, not classes
CACHE_VERSION = 1  # bumped whenever the cache's layout or the decoding changes
CACHE_ENV = "EDGE_FM_CACHE"
SKIPPED_EXAMPLES = 5  # skipped files named in the identity record
_ORIGIN = {split: code for code, split in enumerate(SPLITS)}

ProgressFn = Callable[[str, int, int], None]  # (task, done, total)


@dataclasses.dataclass(frozen=True)
class DataOptions:
    """How a source is read and split; the same options on the same data give the same dataset."""

    image_size: tuple[int, int] | None = None  # (height, width); None: the most common size
    channels: int | None = None  # 1 (grey) or 3 (RGB); None: grey when every image is grey
    resize: str = "pad"  # images of another size: 'pad' (aspect kept) or 'stretch'
    val_size: int | None = None  # validation images carved from train (None: 5000 / 400 / a tenth)
    test_fraction: float = 0.2  # share of each class held out for test when the data has no test split
    seed: int = 0  # seed of the held-out splits
    max_train: int | None = None  # cap on training images, stratified (None: all)
    label_column: str | None = None  # CSV: the label column's name or index (None: 'label', else the first)

    def __post_init__(self):
        if self.image_size is not None and (len(self.image_size) != 2 or min(self.image_size) < 1):
            raise EdgeFMError(f"image size {self.image_size} must be two positive sides (height, width).")
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
        if self.max_train is not None and self.max_train < 1:
            raise EdgeFMError(f"max_train {self.max_train} must be at least 1.")


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
        return height, width
    raise EdgeFMError(f"--image-size {text!r}: use a side (96) or WIDTHxHEIGHT (64x48), in pixels.")


def cache_root() -> Path:
    """Where decoded images are cached: ``$EDGE_FM_CACHE``, else ``datasets/`` in the user cache."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    return fmnist.default_data_dir().parent / "datasets"


def load_data(
    data: str | Path | None = None,
    data_dir: Path | str | None = None,
    options: DataOptions | None = None,
    progress: ProgressFn | None = None,
) -> Dataset:
    """Resolves a ``--data`` value to a dataset with its identity.

    Args:
        data: ``fashion-mnist`` (default), ``sample``, or a path (see the module's docstring).
        data_dir: Where Fashion-MNIST's IDX files are, for ``fashion-mnist``.
        options: Image size, channels, resize policy and splits.
        progress: Called as ``progress(task, done, total)`` while images are read.

    Returns:
        The :class:`Dataset`; its ``identity`` says what it is.

    Raises:
        EdgeFMError: The source is missing, of an unknown kind, or its content is not a usable
            dataset (the message names what is wrong and where).
    """
    options = options or DataOptions()
    name = str(data) if data is not None else DEFAULT_DATA
    if name in (DEFAULT_DATA, SAMPLE_DATA):
        return _fashion_mnist(name, data_dir, options)
    path = _existing(Path(name).expanduser().absolute())
    if path.is_dir():
        if _idx_files(path):
            return _idx_folder(path, options)
        return _image_folder(path, options, progress)
    lower = path.name.lower()
    if lower.endswith(".npz"):
        return _npz(path, options)
    if lower.endswith((".csv", ".csv.gz")):
        return _csv(path, options)
    if lower.endswith(IMAGE_SUFFIXES):
        raise EdgeFMError(
            f"--data {path} is an image file: pass the folder that holds the class folders (DIR/<class>/*.png)."
        )
    raise EdgeFMError(
        f"--data {path} is a file edge-fm cannot read as a dataset: pass {DEFAULT_DATA}, an image folder, "
        "a folder of IDX files, a .csv or a .npz."
    )


def _existing(path: Path) -> Path:
    try:
        path.stat()
    except OSError as exc:
        if path.is_symlink() or exc.errno == errno.ELOOP:
            what = "a symlink loop" if exc.errno == errno.ELOOP else "a broken symlink"
            raise EdgeFMError(f"--data {path} is {what}: point it at a folder or file that exists.") from None
        raise EdgeFMError(
            f"--data {path}: no such file or folder; pass {DEFAULT_DATA}, an image folder, a folder of IDX "
            "files, a .csv or a .npz."
        ) from None
    return path


# ---------------------------------------------------------------- Fashion-MNIST and IDX folders


def _fashion_mnist(name: str, data_dir: Path | str | None, options: DataOptions) -> Dataset:
    if options.image_size is not None or options.channels is not None:
        raise EdgeFMError(
            "--image-size and --channels do not apply to Fashion-MNIST (28x28 grey); the models resize inside."
        )
    source = "sample" if name == SAMPLE_DATA else "full"
    val_size = options.val_size if options.val_size is not None else (400 if source == "sample" else 5000)
    dataset = fmnist.load_dataset(source, data_dir, val_size, options.seed, options.max_train)
    directory = Path(dataset.location)
    digest = hashlib.sha256()
    for split_files in fmnist.FILES.values():
        for file_name in split_files:
            digest.update(f"{file_name} {sha256_file(directory / file_name)}\n".encode())
    identity = DataIdentity(
        kind="fashion-mnist",
        source=str(directory),
        fingerprint="sha256:" + digest.hexdigest(),
        class_names=fmnist.CLASS_NAMES,
        counts=_counts(dataset, fmnist.NUM_CLASSES),
        image_shape=fmnist.IMAGE_SHAPE,
    )
    return dataclasses.replace(dataset, identity=identity)


def _idx_files(folder: Path) -> dict[str, tuple[Path, Path]] | None:
    """The four IDX files of an MNIST-format set (gzip-compressed or not), or None."""
    found = {}
    for split, names in fmnist.FILES.items():
        pair = []
        for name in names:
            for candidate in (folder / name, folder / name.removesuffix(".gz")):
                if candidate.is_file():
                    pair.append(candidate)
                    break
        if len(pair) != 2:
            return None
        found[split] = tuple(pair)
    return found


def _idx_folder(folder: Path, options: DataOptions) -> Dataset:
    files = _idx_files(folder)
    arrays = {}
    digest = hashlib.sha256()
    for split, (image_file, label_file) in files.items():
        images, labels = fmnist.read_idx(image_file), fmnist.read_idx(label_file)
        if images.ndim != 3 or images.dtype != np.uint8:
            raise EdgeFMError(
                f"{image_file}: expected uint8 images (N, height, width), got {images.dtype} {images.shape}."
            )
        if labels.ndim != 1 or labels.dtype != np.uint8:
            raise EdgeFMError(
                f"{label_file}: expected a 1-D uint8 label array, got {labels.dtype} {labels.shape}."
            )
        _same_length(images, labels, image_file.name, label_file.name)
        arrays[split] = (images[..., None], labels)
        for path in (image_file, label_file):
            digest.update(f"{path.name} {sha256_file(path)}\n".encode())
    fingerprint = "sha256:" + digest.hexdigest()
    published = {sha256_file(p) for pair in files.values() for p in pair if p.name.endswith(".gz")}
    if published and published == set(fmnist.PUBLISHED_SHA256.values()):
        return _fashion_mnist(DEFAULT_DATA, folder, options)
    labels = np.concatenate([arrays["train"][1], arrays["test"][1]])
    class_names = tuple(str(c) for c in range(int(labels.max()) + 1))
    return _from_arrays("idx", folder, fingerprint, arrays, class_names, options)


# ---------------------------------------------------------------- arrays (IDX, CSV, npz)


def _from_arrays(
    kind: str,
    source: Path,
    fingerprint: str,
    arrays: dict[str, tuple[np.ndarray, np.ndarray]],
    class_names: tuple[str, ...],
    options: DataOptions,
) -> Dataset:
    """A dataset from in-memory arrays per split (``train`` required, ``val`` and ``test`` optional)."""
    shapes = {split: x.shape[1:] for split, (x, _) in arrays.items()}
    if len(set(shapes.values())) > 1:
        raise EdgeFMError(f"{source}: the splits hold images of different shapes {shapes}; use one shape.")
    for split, (_, y) in arrays.items():
        _check_labels(y, len(class_names), f"{source} ({split})")
    x_all = np.concatenate([x for x, _ in arrays.values()])
    y_all = np.concatenate([y for _, y in arrays.values()]).astype(_label_dtype(len(class_names)))
    origin = np.concatenate([np.full(len(y), _ORIGIN[split], np.uint8) for split, (_, y) in arrays.items()])
    x_all, resized = _convert(x_all, options)
    names = [f"{SPLITS[o]}:{i}" for o, i in zip(origin, _index_within(origin))]
    plan, test_split, members = _plan_splits(y_all, origin, names, class_names, fingerprint, options, source)
    split_arrays = {split: (x_all[idx], y_all[idx]) for split, idx in plan.items()}
    identity = DataIdentity(
        kind=kind,
        source=str(source),
        fingerprint=fingerprint,
        class_names=class_names,
        counts={split: _per_class(y, len(class_names)) for split, (_, y) in split_arrays.items()},
        image_shape=tuple(int(d) for d in x_all.shape[1:]),
        resize=options.resize if resized else None,
        test_split=test_split,
        test_members=members,
    )
    return _dataset(split_arrays, source, class_names, identity)


def _index_within(origin: np.ndarray) -> np.ndarray:
    """Each example's position within its own split."""
    index = np.empty(len(origin), dtype=np.int64)
    for code in np.unique(origin):
        mask = origin == code
        index[mask] = np.arange(mask.sum())
    return index


def _convert(x: np.ndarray, options: DataOptions) -> tuple[np.ndarray, bool]:
    """Images brought to ``options``' size and channels, and whether any was resized."""
    from PIL import Image

    height, width, channels = x.shape[1:]
    size = options.image_size or (height, width)
    target_channels = options.channels or channels
    if size == (height, width) and target_channels == channels:
        return x, False
    out = np.empty((len(x), *size, target_channels), dtype=np.uint8)
    for i, pixels in enumerate(x):
        image = Image.fromarray(pixels[..., 0] if channels == 1 else pixels)
        image = image.convert("L" if target_channels == 1 else "RGB")
        out[i] = np.asarray(fit_image(image, size, options.resize)).reshape(*size, target_channels)
    return out, size != (height, width)


def _npz(path: Path, options: DataOptions) -> Dataset:
    try:
        with np.load(path, allow_pickle=False) as archive:
            contents = {key: archive[key] for key in archive.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise EdgeFMError(f"{path}: not a readable .npz ({exc}); save it with numpy.savez.") from None
    missing = [key for key in NPZ_KEYS if key not in contents]
    if missing:
        raise EdgeFMError(
            f"{path} lacks {', '.join(missing)}: an .npz dataset holds x_train, y_train, x_test, y_test "
            "(optional x_val, y_val, class_names)."
        )
    splits = ["train", "test"] + (["val"] if "x_val" in contents and "y_val" in contents else [])
    arrays = {}
    for split in sorted(splits, key=SPLITS.index):
        images, labels = contents[f"x_{split}"], contents[f"y_{split}"]
        _same_length(images, labels, f"x_{split}", f"y_{split}", where=f"{path}: ")
        arrays[split] = (_as_images(images, f"{path}: x_{split}"), _as_labels(labels, f"{path}: y_{split}"))
    top = max(int(y.max()) for _, y in arrays.values() if len(y))
    if "class_names" in contents:
        class_names = tuple(str(name) for name in np.asarray(contents["class_names"]).ravel())
        if top >= len(class_names):
            raise EdgeFMError(
                f"{path}: label {top} out of range: class_names names {len(class_names)} classes "
                f"(0-{len(class_names) - 1})."
            )
    else:
        class_names = tuple(str(c) for c in range(top + 1))
    return _from_arrays("npz", path, "sha256:" + sha256_file(path), arrays, class_names, options)


def _as_images(images: np.ndarray, where: str) -> np.ndarray:
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or images.shape[-1] not in (1, 3) or min(images.shape[1:3], default=0) < 1:
        raise EdgeFMError(
            f"{where} has shape {images.shape}: use (N, height, width) or (N, height, width, 1 or 3)."
        )
    if images.dtype == np.uint8:
        return images
    if images.dtype.kind not in "iuf" or (images.size and (images.min() < 0 or images.max() > 255)):
        raise EdgeFMError(f"{where} holds {images.dtype} values outside 0-255: store uint8 pixels 0-255.")
    if images.dtype.kind == "f" and not np.array_equal(images, np.round(images)):
        raise EdgeFMError(f"{where} holds fractional {images.dtype} values: store uint8 pixels 0-255.")
    return images.astype(np.uint8)


def _as_labels(labels: np.ndarray, where: str) -> np.ndarray:
    labels = np.asarray(labels).ravel() if np.asarray(labels).ndim == 2 and labels.shape[1] == 1 else labels
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise EdgeFMError(f"{where} must be 1-D integer class indices, got {labels.dtype} {labels.shape}.")
    if labels.size and (labels.min() < 0 or labels.max() >= MAX_CLASSES):
        bad = int(labels.min()) if labels.min() < 0 else int(labels.max())
        raise EdgeFMError(
            f"{where}: label {bad} out of range; labels are class indices 0 to {MAX_CLASSES - 1}."
        )
    return labels


def _csv(path: Path, options: DataOptions) -> Dataset:
    rows_x, rows_y = _read_csv(path, options.label_column)
    shape = _csv_shape(rows_x.shape[1], path)
    labels, class_names = _csv_labels(rows_y, path)
    arrays = {"train": (rows_x.reshape(-1, *shape), labels)}
    return _from_arrays("csv", path, "sha256:" + sha256_file(path), arrays, class_names, options)


def _read_csv(path: Path, label_column: str | None) -> tuple[np.ndarray, list[str]]:
    """The pixel rows (uint8) and the label of each row, checked line by line.

    The first line is a header when any of its fields is not a number.
    """
    with open(path, "rb") as handle:
        compressed = handle.read(2) == b"\x1f\x8b"
    try:
        opened = gzip.open(path, "rt", newline="") if compressed else open(path, newline="")
        with opened as text:
            reader = csv.reader(text)
            first = next(reader, None)
            if first is None:
                raise EdgeFMError(
                    f"{path}: the file is empty; a CSV dataset holds a label and pixel columns per row."
                )
            header = first if any(not _is_number(field) for field in first) else None
            columns = len(first)
            label_at = _label_index(header, columns, label_column, path)
            pixel_names = [c for i, c in enumerate(header or range(columns)) if i != label_at]
            rows, labels = [], []
            records = reader if header else _chain_first(first, reader)
            for line, row in enumerate(records, start=2 if header else 1):
                if not row:
                    continue
                if len(row) != columns:
                    raise EdgeFMError(
                        f"{path}: line {line} has {len(row)} fields where the {'header' if header else 'first line'} "
                        f"has {columns}: ragged rows."
                    )
                labels.append(row[label_at].strip())
                fields = row[:label_at] + row[label_at + 1 :]
                rows.append(_pixel_row(fields, path, line, pixel_names))
    except (OSError, EOFError, UnicodeDecodeError, csv.Error) as exc:
        raise EdgeFMError(f"{path}: not a readable CSV ({exc}).") from None
    if not rows:
        raise EdgeFMError(f"{path} holds no rows of pixels.")
    return np.stack(rows), labels


def _chain_first(first: list[str], reader):
    yield first
    yield from reader


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _label_index(header: list[str] | None, columns: int, label_column: str | None, path: Path) -> int:
    if label_column is None:
        if header is None:
            return 0  # headerless CSVs of MNIST-like sets put the label first
        lowered = [h.strip().lower() for h in header]
        if "label" in lowered:
            return lowered.index("label")
        raise EdgeFMError(
            f"{path}: no 'label' column in the header; name the label column with --label-column."
        )
    if header is not None and label_column in header:
        return header.index(label_column)
    try:
        index = int(label_column)
    except ValueError:
        known = ", ".join(header[:5]) + ("..." if header and len(header) > 5 else "") if header else "none"
        raise EdgeFMError(f"{path}: no column {label_column!r} (columns: {known}).") from None
    if not -columns <= index < columns:
        raise EdgeFMError(f"{path}: --label-column {index} is out of range for {columns} columns.")
    return index % columns


def _pixel_row(fields: list[str], path: Path, line: int, names: list) -> np.ndarray:
    try:
        values = np.array(fields, dtype=np.float64)
    except ValueError:
        for name, field in zip(names, fields):
            if not _is_number(field):
                raise EdgeFMError(
                    f"{path}: line {line}, column {name}: {field!r} is not a number (pixel columns hold 0-255)."
                ) from None
        raise
    if values.size and (
        values.min() < 0 or values.max() > 255 or not np.array_equal(values, np.round(values))
    ):
        bad = next(f for f, v in zip(fields, values) if v < 0 or v > 255 or v != round(v))
        raise EdgeFMError(f"{path}: line {line}: pixel value {bad} is not a whole number 0-255.")
    return values.astype(np.uint8)


def _csv_shape(pixels: int, path: Path) -> tuple[int, int, int]:
    side = math.isqrt(pixels)
    if side * side == pixels:
        return side, side, 1
    colour_side = math.isqrt(pixels // 3)
    if pixels % 3 == 0 and colour_side * colour_side * 3 == pixels:
        return colour_side, colour_side, 3
    raise EdgeFMError(
        f"{path}: {pixels} pixel columns are neither a square grey image nor a square RGB one; "
        "write square images, one pixel per column."
    )


def _csv_labels(labels: list[str], path: Path) -> tuple[np.ndarray, tuple[str, ...]]:
    if all(_is_number(label) for label in labels):
        values = np.array(labels, dtype=np.float64)
        if not np.array_equal(values, np.round(values)) or values.min() < 0:
            bad = next(label for label, v in zip(labels, values) if v < 0 or v != round(v))
            raise EdgeFMError(
                f"{path}: label {bad} out of range: numeric labels are class indices 0, 1, 2..."
            )
        distinct = len(np.unique(values))
        if values.max() >= distinct:
            raise EdgeFMError(
                f"{path}: label {int(values.max())} out of range: the file has {distinct} distinct labels, "
                f"so they must be 0-{distinct - 1} (or class names)."
            )
        return values.astype(_label_dtype(distinct)), tuple(str(c) for c in range(distinct))
    class_names = tuple(sorted(set(labels)))
    lookup = {name: i for i, name in enumerate(class_names)}
    return np.array([lookup[label] for label in labels], dtype=_label_dtype(len(class_names))), class_names


# ---------------------------------------------------------------- image folders


@dataclasses.dataclass
class _Scan:
    files: list[Path]  # readable candidates, in a fixed order
    labels: list[int]
    origin: list[int]  # index into SPLITS of the folder each file is in
    names: list[str]  # path relative to the root, for messages and the test membership
    class_names: tuple[str, ...]
    skipped: list[str]  # "name (reason)"


def _image_folder(root: Path, options: DataOptions, progress: ProgressFn | None) -> Dataset:
    scan = _scan_folder(root)
    digest = hashlib.sha256()
    for name, path in zip(scan.names, scan.files):
        digest.update(f"{name}\t{path.stat().st_size}\n".encode())
    # The images alone: a stray .DS_Store must not move the held-out test split.
    fingerprint = "sha256:" + digest.hexdigest()
    key = hashlib.sha256(
        # max_train is applied to the cached arrays, so it is not part of what they hold; the skipped
        # files are, so that the record of what was skipped stays true.
        json.dumps(
            [
                CACHE_VERSION,
                fingerprint,
                dataclasses.asdict(dataclasses.replace(options, max_train=None)),
                scan.skipped,
            ],
            sort_keys=True,
        ).encode()
    ).hexdigest()[:32]
    cached = cache_root() / key
    if not (cached / "identity.json").is_file():
        _decode_into_cache(root, scan, fingerprint, options, cached, progress)
    return _read_cache(cached, root, options)


def _scan_folder(root: Path) -> _Scan:
    """Lists the class folders and their image files; hidden, non-image and empty files are skipped."""
    split_root = root / "train"
    if split_root.is_dir():
        split_dirs = {split: root / split for split in SPLITS if (root / split).is_dir()}
    else:
        split_dirs = {"train": root}
    skipped: list[str] = []
    class_dirs = {split: _class_dirs(folder, skipped, root) for split, folder in split_dirs.items()}
    class_names = tuple(sorted(class_dirs["train"]))
    where = split_root if split_root.is_dir() else root
    if not class_names:
        raise EdgeFMError(
            f"--data {root}: no class folders in {where}; lay images out as DIR/<class>/*.png, or "
            "DIR/train/<class>/... with optional DIR/val/ and DIR/test/."
        )
    if len(class_names) == 1:
        raise EdgeFMError(
            f"--data {root}: one class folder ({class_names[0]!r}) in {where}; a classifier needs at least two."
        )
    for split, dirs in class_dirs.items():
        extra = sorted(set(dirs) - set(class_names))
        if extra:
            raise EdgeFMError(
                f"--data {root}: {split}/ has class folders that train/ lacks ({', '.join(extra)}); "
                "every class needs training images."
            )
    scan = _Scan([], [], [], [], class_names, skipped)
    seen_dirs: set[str] = set()
    for split, dirs in class_dirs.items():
        for label, name in enumerate(class_names):
            if name not in dirs:
                continue
            for path in _walk(dirs[name], skipped, root, seen_dirs):
                scan.files.append(path)
                scan.labels.append(label)
                scan.origin.append(_ORIGIN[split])
                scan.names.append(path.relative_to(root).as_posix())
    return scan


def _class_dirs(folder: Path, skipped: list[str], root: Path) -> dict[str, Path]:
    dirs = {}
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        path = Path(entry.path)
        if entry.name.startswith("."):
            continue  # hidden: .DS_Store, .git, editors' files
        if folder == root and entry.name in SPLITS:
            continue
        if _is_dir(path):
            dirs[entry.name] = path
        else:
            skipped.append(f"{path.relative_to(root).as_posix()} (not in a class folder)")
    return dirs


def _is_dir(path: Path) -> bool:
    try:
        return path.is_dir()
    except OSError:  # a symlink loop
        return False


def _walk(folder: Path, skipped: list[str], root: Path, seen_dirs: set[str]):
    """Image files under ``folder``, sorted, following symlinked folders once each (no loops)."""
    real = os.path.realpath(folder)
    if real in seen_dirs:
        skipped.append(
            f"{folder.relative_to(root).as_posix()}/ (a folder already read: symlink loop or copy)"
        )
        return
    seen_dirs.add(real)
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        path = Path(entry.path)
        name = path.relative_to(root).as_posix()
        if entry.name.startswith("."):
            skipped.append(f"{name} (hidden)")
            continue
        try:
            status = path.stat()
        except OSError as exc:
            reason = (
                "symlink loop"
                if exc.errno == errno.ELOOP
                else "broken link"
                if path.is_symlink()
                else "unreadable"
            )
            skipped.append(f"{name} ({reason})")
            continue
        if _is_dir(path):
            yield from _walk(path, skipped, root, seen_dirs)
        elif not entry.name.lower().endswith(IMAGE_SUFFIXES):
            skipped.append(f"{name} (not an image)")
        elif status.st_size == 0:
            skipped.append(f"{name} (empty file)")
        else:
            yield path


def _decode_into_cache(
    root: Path, scan: _Scan, fingerprint: str, options: DataOptions, cached: Path, progress: ProgressFn | None
) -> None:
    """Reads every image once into memory-mapped arrays per split, written under ``cached`` atomically."""
    skipped = list(scan.skipped)
    workers = min(8, os.cpu_count() or 1)
    total = len(scan.files)

    def report(task: str, done: int) -> None:
        if progress:
            progress(task, done, total)

    headers = []
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        for done, result in enumerate(pool.map(_header_or_error, scan.files), start=1):
            headers.append(result)
            if done % 256 == 0 or done == total:
                report("reading headers", done)
    readable = [i for i, h in enumerate(headers) if not isinstance(h, str)]
    skipped += [f"{scan.names[i]} ({headers[i]})" for i in range(total) if isinstance(headers[i], str)]
    if not readable:
        raise EdgeFMError(f"--data {root}: no readable image ({_first(skipped)}).")
    sizes = collections.Counter((headers[i].height, headers[i].width) for i in readable)
    # The most common size; among equally common ones the largest, so no size is chosen by file order.
    size = options.image_size or max(sizes, key=lambda s: (sizes[s], s[0] * s[1], s))
    channels = options.channels or (1 if all(headers[i].grey for i in readable) else 3)
    resized = any(s != size for s in sizes)

    cache_root_dir = cached.parent
    cache_root_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".tmp-{cached.name}-", dir=cache_root_dir))
    try:
        decoded = np.lib.format.open_memmap(
            staging / "all.npy", mode="w+", dtype=np.uint8, shape=(len(readable), *size, channels)
        )
        ok = np.zeros(len(readable), dtype=bool)

        def decode(slot: int) -> str | None:
            try:
                decoded[slot] = read_image(scan.files[readable[slot]], size, channels, options.resize)
            except EdgeFMError as exc:
                return _reason(exc)
            ok[slot] = True
            return None

        with concurrent.futures.ThreadPoolExecutor(workers) as pool:
            for done, error in enumerate(pool.map(decode, range(len(readable))), start=1):
                if error:
                    skipped.append(f"{scan.names[readable[done - 1]]} ({error})")
                if done % 256 == 0 or done == len(readable):
                    report("decoding images", done)
        kept = np.asarray(readable)[ok]
        labels = np.asarray(scan.labels, dtype=_label_dtype(len(scan.class_names)))[kept]
        origin = np.asarray(scan.origin, dtype=np.uint8)[kept]
        names = [scan.names[i] for i in kept]
        empty = [
            scan.class_names[c] for c in range(len(scan.class_names)) if not (labels[origin == 0] == c).any()
        ]
        if empty:
            raise EdgeFMError(
                f"--data {root}: class {empty[0]!r} has no readable training image"
                f"{f' ({_first(skipped)})' if skipped else ''}; add images or remove the folder."
            )
        plan, test_split, members = _plan_splits(
            labels, origin, names, scan.class_names, fingerprint, options, root
        )
        positions = np.flatnonzero(ok)
        for split, indices in plan.items():
            out = np.lib.format.open_memmap(
                staging / f"x_{split}.npy", mode="w+", dtype=np.uint8, shape=(len(indices), *size, channels)
            )
            for start in range(0, len(indices), 4096):  # bounded memory whatever the folder's size
                out[start : start + 4096] = decoded[positions[indices[start : start + 4096]]]
            out.flush()
            del out
            np.save(staging / f"y_{split}.npy", labels[indices])
        decoded = None  # unmapped before its file is removed
        (staging / "all.npy").unlink()
        identity = DataIdentity(
            kind="folder",
            source=str(root),
            fingerprint=fingerprint,
            class_names=scan.class_names,
            counts={split: _per_class(labels[idx], len(scan.class_names)) for split, idx in plan.items()},
            image_shape=(size[0], size[1], channels),
            resize=options.resize if resized else None,
            test_split=test_split,
            test_members=members,
            skipped=len(skipped),
            skipped_examples=tuple(skipped[:SKIPPED_EXAMPLES]),
        )
        write_json(staging / "identity.json", identity.as_record())
        try:
            staging.rename(cached)
        except OSError:
            if not (cached / "identity.json").is_file():  # not another process having written it first
                raise
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def _read_cache(cached: Path, root: Path, options: DataOptions) -> Dataset:
    from edge_fm.io import read_json

    identity = DataIdentity.from_record(read_json(cached / "identity.json"))
    identity = dataclasses.replace(identity, source=str(root))
    split_arrays = {}
    for split in SPLITS:
        if (cached / f"x_{split}.npy").is_file():
            split_arrays[split] = (
                np.load(cached / f"x_{split}.npy", mmap_mode="r"),
                np.load(cached / f"y_{split}.npy"),
            )
    if options.max_train is not None:
        split_arrays["train"] = _capped(*split_arrays["train"], options.max_train, options.seed)
    return _dataset(split_arrays, root, identity.class_names, identity)


def _header_or_error(path: Path):
    try:
        return read_header(path)
    except EdgeFMError as exc:
        return _reason(exc)


def _reason(exc: EdgeFMError) -> str:
    """The part of a reader's message after the file name."""
    text = str(exc)
    text = text.split(": ", 1)[1] if ": " in text else text
    return text.split("; ", 1)[0].rstrip(".")  # the fix a reader suggests for one image does not apply here


def _first(skipped: list[str]) -> str:
    more = f", and {len(skipped) - SKIPPED_EXAMPLES} more" if len(skipped) > SKIPPED_EXAMPLES else ""
    return "skipped: " + "; ".join(skipped[:SKIPPED_EXAMPLES]) + more


# ---------------------------------------------------------------- splits


def _plan_splits(
    labels: np.ndarray,
    origin: np.ndarray,
    names: list[str],
    class_names: tuple[str, ...],
    fingerprint: str,
    options: DataOptions,
    source: Path,
) -> tuple[dict[str, np.ndarray], str, str | None]:
    """Indices of each split: the data's own, else held out per class (test first, then validation).

    The held-out draws are seeded by the fingerprint and the seed alone, so the same data and seed
    always hold out the same images.

    Returns:
        ``(split -> indices, how the test split was made, sha256 of the held-out test names or None)``.
    """
    pool = np.flatnonzero(origin == _ORIGIN["train"])
    plan = {split: np.flatnonzero(origin == _ORIGIN[split]) for split in ("val", "test")}
    hold_test, hold_val = not len(plan["test"]), not len(plan["val"])
    val_fraction = None
    if hold_val:
        after_test = len(pool) * (1 - options.test_fraction) if hold_test else len(pool)
        val_fraction = min(0.5, options.val_size / max(1.0, after_test)) if options.val_size else 0.1
    _check_class_sizes(labels[pool], class_names, hold_test, hold_val, options, val_fraction, source)
    test_split, members = "given", None
    if hold_test:
        rng = _split_rng(fingerprint, options.seed, "test")
        taken = _take_per_class(labels[pool], options.test_fraction, rng)
        plan["test"], pool = pool[taken], np.delete(pool, taken)
        test_split = f"held out: {options.test_fraction:.0%} of each class, seed {options.seed}"
        members = (
            "sha256:" + hashlib.sha256("\n".join(sorted(names[i] for i in plan["test"])).encode()).hexdigest()
        )
    if hold_val:
        rng = _split_rng(fingerprint, options.seed, "val")
        taken = _take_per_class(labels[pool], val_fraction, rng)
        plan["val"], pool = pool[taken], np.delete(pool, taken)
    plan["train"] = pool
    return {split: np.sort(plan[split]) for split in SPLITS}, test_split, members


def _check_class_sizes(
    labels: np.ndarray,
    class_names: tuple[str, ...],
    hold_test: bool,
    hold_val: bool,
    options: DataOptions,
    val_fraction: float | None,
    source: Path,
) -> None:
    counts = _per_class(labels, len(class_names))
    for name, count in zip(class_names, counts):
        test = max(1, round(count * options.test_fraction)) if hold_test else 0
        val = max(1, round((count - test) * val_fraction)) if hold_val else 0
        if count - test - val < 1:
            held = " and ".join(what for what, n in (("a test", test), ("a validation", val)) if n)
            raise EdgeFMError(
                f"--data {source}: class {name!r} has {count} training image{'s' * (count != 1)}, fewer than the "
                f"splits need ({test + val + 1}: {held} split held out and one to train on); add images, or give "
                "test/ and val/ folders."
            )


def _split_rng(fingerprint: str, seed: int, purpose: str) -> np.random.Generator:
    digest = hashlib.sha256(f"{fingerprint}\n{seed}\n{purpose}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "big"))


def _take_per_class(labels: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Positions of a stratified draw: ``fraction`` of each class, at least one."""
    taken = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        count = max(1, round(len(members) * fraction))
        taken.append(rng.permutation(members)[:count])
    return np.sort(np.concatenate(taken)) if taken else np.array([], dtype=np.int64)


def _capped(x: np.ndarray, y: np.ndarray, max_train: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    if max_train >= len(y):
        return x, y
    keep, _ = fmnist.stratified_split(y, len(y) - max_train, seed + 1)
    return x[keep], y[keep]


# ---------------------------------------------------------------- shared checks


def _dataset(
    split_arrays: dict[str, tuple[np.ndarray, np.ndarray]],
    source: Path,
    class_names: tuple[str, ...],
    identity,
) -> Dataset:
    return Dataset(
        *split_arrays["train"],
        *split_arrays["val"],
        *split_arrays["test"],
        source="full",
        location=str(source),
        class_names=class_names,
        identity=identity,
    )


def _same_length(images, labels, image_name: str, label_name: str, where: str = "") -> None:
    if len(images) != len(labels):
        raise EdgeFMError(
            f"{where}{image_name} holds {len(images)} images but {label_name} holds {len(labels)} labels: "
            "they do not belong together."
        )


def _check_labels(labels: np.ndarray, num_classes: int, where: str) -> None:
    if labels.size and int(labels.max()) >= num_classes:
        raise EdgeFMError(f"{where}: label {int(labels.max())} out of range 0-{num_classes - 1}.")


def _label_dtype(num_classes: int):
    return np.uint8 if num_classes <= 256 else np.uint16


def _per_class(labels: np.ndarray, num_classes: int) -> tuple[int, ...]:
    return tuple(int(n) for n in np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_classes))


def _counts(dataset: Dataset, num_classes: int) -> dict[str, tuple[int, ...]]:
    return {split: _per_class(getattr(dataset, f"y_{split}"), num_classes) for split in SPLITS}


def summary(dataset: Dataset) -> dict:
    """The identity of a loaded dataset as JSON-ready values, for ``edge-fm data info`` and records.

    Raises:
        EdgeFMError: The dataset carries no identity (it was built by hand).
    """
    if dataset.identity is None:
        raise EdgeFMError("this dataset has no identity record; load it with edge_fm.data.sources.load_data.")
    return dataset.identity.as_record()

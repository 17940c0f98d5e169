"""Where a dataset comes from: one ``--data`` value resolved to a :class:`~edge_fm.data.datasets.Dataset`.

``--data`` takes:

- ``fashion-mnist`` (the default; ``--data-dir`` says where its IDX files are) or ``sample`` (the
  embedded sample);
- a folder holding the four IDX files of any MNIST-format set;
- an image folder, ``DIR/<class>/*`` or ``DIR/train/<class>/...`` with optional ``DIR/val/`` and
  ``DIR/test/``;
- a CSV of pixels with a label column (``.csv`` or ``.csv.gz``), or an ``.npz`` holding
  ``x_train``, ``y_train``, ``x_test``, ``y_test`` (optional ``x_val``, ``y_val``, ``class_names``);
- ``tfds:NAME``, a dataset of TensorFlow Datasets already prepared on this machine (the optional
  extra ``tfds``; see :mod:`edge_fm.data.tfds_source`).

Every source gives a :class:`Dataset` with its :class:`DataIdentity`. A source without a test split
has one held out, stratified; its membership depends only on the data's fingerprint and the seed,
so every load of the same data holds out the same images. Image folders are decoded once, through
the bounded reader of :mod:`edge_fm.data.images`, into a cache of memory-mapped uint8 arrays keyed
by the fingerprint and the options (see :func:`cache_root` and :mod:`edge_fm.data.array_cache`);
``tfds:NAME`` datasets are read once into the same cache, keyed by their prepared files.

Example:
    >>> dataset = load_data("photos/", DataOptions(image_size=(32, 32)))  # doctest: +SKIP
    >>> dataset.class_names, dataset.identity.fingerprint  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import math
import os
import warnings
import zipfile
from pathlib import Path

import numpy as np

from edge_fm.data import datasets as fmnist
from edge_fm.data.array_cache import cache_entry, is_cached, read_cache, write_splits
from edge_fm.data.csv_pixels import csv_labels, csv_shape, read_csv
from edge_fm.data.datasets import DataIdentity, Dataset
from edge_fm.data.folders import image_folder
from edge_fm.data.images import fit_image
from edge_fm.data.options import (  # noqa: F401 (DEFAULT_DATA, cache_root, parse_image_size: re-exported)
    DEFAULT_DATA,
    IMAGE_SUFFIXES,
    MAX_CLASSES,
    NPZ_KEYS,
    ORIGIN,
    SAMPLE_DATA,
    SPLITS,
    TFDS_PREFIX,
    DataOptions,
    ProgressFn,
    cache_root,
    parse_image_size,
)
from edge_fm.data.sanity import published_release
from edge_fm.data.splits import (  # noqa: F401 (summary: re-exported)
    capped,
    check_label_range,
    label_dtype,
    make_dataset,
    per_class,
    plan_splits,
    same_length,
    split_counts,
    summary,
)
from edge_fm.errors import EdgeFMError
from edge_fm.io import sha256_file
from edge_fm.runner import available_bytes


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
    dataset = _load(str(data) if data is not None else DEFAULT_DATA, data_dir, options, progress)
    _say_about_validation(dataset, options)
    return dataset


def _load(
    name: str, data_dir: Path | str | None, options: DataOptions, progress: ProgressFn | None
) -> Dataset:
    if name in (DEFAULT_DATA, SAMPLE_DATA):
        return _fashion_mnist(name, data_dir, options)
    if name.startswith(TFDS_PREFIX):
        return _tfds(name.removeprefix(TFDS_PREFIX), options)
    path = _existing(Path(os.path.abspath(Path(name).expanduser())))  # ../data.csv is recorded as where it is
    if path.is_dir():
        if _idx_files(path):
            return _idx_folder(path, options)
        return image_folder(path, options, progress)
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


def _say_about_validation(dataset: Dataset, options: DataOptions) -> None:
    """Warns, on every load, when ``val_size`` went unused (the data has its own validation split) or was
    more than half of the training images could give."""
    pool = len(dataset.x_train) + len(dataset.x_val)
    if dataset.identity is not None and dataset.identity.kind != "fashion-mnist" and options.val_size:
        if dataset.identity.val_split == "given":
            warnings.warn(
                f"validation size {options.val_size} is not used: {dataset.identity.source} has its own "
                f"validation split ({len(dataset.x_val)} images), which is used as it is.",
                stacklevel=3,
            )
        elif options.val_size > pool / 2 and len(dataset.x_val) < options.val_size:
            warnings.warn(
                f"validation size {options.val_size} is over half of the {pool} training images: "
                f"{len(dataset.x_val)} are held out for validation (half of each class, at most).",
                stacklevel=3,
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
    release = published_release(directory)
    digest = hashlib.sha256()
    for split_files in fmnist.FILES.values():
        for file_name in split_files:
            digest.update(f"{file_name} {release['files'][file_name]['sha256']}\n".encode())
    identity = DataIdentity(
        kind="fashion-mnist",
        source=str(directory),
        fingerprint="sha256:" + digest.hexdigest(),
        class_names=fmnist.CLASS_NAMES,
        counts=split_counts(dataset, fmnist.NUM_CLASSES),
        image_shape=fmnist.IMAGE_SHAPE,
        # A rebuilt copy is not an error; the record says the accuracy is on other files than the release's.
        published=release["published"] if source == "full" else None,
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
        same_length(images, labels, image_file.name, label_file.name)
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
        check_label_range(y, len(class_names), f"{source} ({split})")
    x_all = np.concatenate([x for x, _ in arrays.values()])
    y_all = np.concatenate([y for _, y in arrays.values()]).astype(label_dtype(len(class_names)))
    origin = np.concatenate([np.full(len(y), ORIGIN[split], np.uint8) for split, (_, y) in arrays.items()])
    x_all, resized = _convert(x_all, options)
    names = [f"{SPLITS[o]}:{i}" for o, i in zip(origin, _index_within(origin))]
    split_plan = plan_splits(y_all, origin, names, class_names, fingerprint, options, source)
    split_arrays = {split: (x_all[idx], y_all[idx]) for split, idx in split_plan.indices.items()}
    identity = DataIdentity(
        kind=kind,
        source=str(source),
        fingerprint=fingerprint,
        class_names=class_names,
        counts={split: per_class(y, len(class_names)) for split, (_, y) in split_arrays.items()},
        image_shape=tuple(int(d) for d in x_all.shape[1:]),
        resize=options.resize if resized else None,
        test_split=split_plan.test_split,
        test_members=split_plan.test_members,
        val_split=split_plan.val_split,
    )
    return make_dataset(split_arrays, source, class_names, identity)


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
        path.open("rb").close()
    except OSError as exc:
        raise EdgeFMError(
            f"--data {path}: {(exc.strerror or str(exc)).lower()}; check its permissions."
        ) from None
    if not zipfile.is_zipfile(path):  # numpy takes other bytes for a pickle and says so
        raise EdgeFMError(f"{path}: not a readable .npz (not a zip archive); save it with numpy.savez.")
    _check_npz_fits(path)
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
        same_length(images, labels, f"x_{split}", f"y_{split}", where=f"{path}: ")
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


# Reading an .npz holds its arrays about three times over (loaded, converted, split) at the peak.
NPZ_COPIES = 3


def _check_npz_fits(path: Path) -> None:
    """Refuses, from the arrays' headers and before loading them, an .npz that would not fit in memory
    (a few compressed megabytes can hold gigabytes of zeros)."""
    try:
        with zipfile.ZipFile(path) as archive:
            # Every member: numpy loads a member that is not an array as its bytes.
            held = sum(
                _npy_bytes(archive, info.filename) if info.filename.endswith(".npy") else info.file_size
                for info in archive.infolist()
            )
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise EdgeFMError(f"{path}: not a readable .npz ({exc}); save it with numpy.savez.") from None
    free = available_bytes()
    if free is not None and held * NPZ_COPIES > free:
        raise EdgeFMError(
            f"{path}: its arrays take {held / 1e9:.1f} GB in memory, read about {NPZ_COPIES} times over, "
            f"more than the {free / 1e9:.1f} GB free here; write the images as an image folder (read a "
            "batch at a time into the cache) instead."
        )


def _npy_bytes(archive: zipfile.ZipFile, name: str) -> int:
    with archive.open(name) as member:
        version = np.lib.format.read_magic(member)
        read_header = (
            np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        )
        shape, _, dtype = read_header(member)
    return math.prod(shape) * dtype.itemsize  # Python integers: no overflow on absurd headers


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


def _tfds(name: str, options: DataOptions) -> Dataset:
    """A tensorflow-datasets dataset through the decode cache: read once, then memory-mapped.

    A prepared dataset's entry is keyed by its files (names and sizes) and the options, so a later
    load maps the arrays without reading the dataset. Data with no files here (tensorflow-datasets'
    mock data) is read each time and its entry keyed by the content's fingerprint.
    """
    # Imported here: tensorflow-datasets is an optional extra, and slow to import.
    from edge_fm.data.tfds_source import prepared_files, read_tfds

    if not name:
        raise EdgeFMError(f"--data {TFDS_PREFIX}: name the dataset, e.g. --data {TFDS_PREFIX}mnist.")
    source = f"{TFDS_PREFIX}{name}"
    files = prepared_files(name)
    cached = cache_entry(["tfds", files], options) if files else None
    if cached is None or not is_cached(cached):
        unlimited = dataclasses.replace(options, max_train=None)  # the cap applies when the entry is read
        arrays, class_names, fingerprint, resized = read_tfds(name, unlimited)
        dataset = _from_arrays("tfds", source, fingerprint, arrays, class_names, unlimited)
        if resized and dataset.identity.resize is None:
            dataset = dataclasses.replace(
                dataset, identity=dataclasses.replace(dataset.identity, resize=options.resize)
            )
        cached = cached or cache_entry(["tfds", fingerprint], options)
        if not is_cached(cached):
            write_splits(cached, dataset)
        del arrays, dataset  # the process keeps the mapped entry, not a second copy in memory
    return read_cache(cached, source, options)


def _csv(path: Path, options: DataOptions) -> Dataset:
    rows_x, rows_y = read_csv(path, options.label_column)
    shape = csv_shape(rows_x.shape[1], path)
    labels, class_names = csv_labels(rows_y, path)
    arrays = {"train": (rows_x.reshape(-1, *shape), labels)}
    return _from_arrays("csv", path, "sha256:" + sha256_file(path), arrays, class_names, options)

"""``--data tfds:NAME``: an image-classification dataset of TensorFlow Datasets, already on this machine.

Needs the optional extra ``tfds`` (``pip install 'edge-fm[tfds]'``). The dataset must already be
prepared in tensorflow-datasets' data folder (``$TFDS_DATA_DIR``, else ``~/tensorflow_datasets``):
edge-fm never downloads it. Its ``train`` split is the training data, ``validation`` (when there)
the validation split and ``test`` (when there) the test split; a split that is missing is held out
as for any other source. Images and labels are read through the dataset's supervised keys, class
names from its label feature. The fingerprint is a hash of the content read (labels and pixels).

Example:
    >>> arrays, names, fingerprint = read_tfds("mnist")  # doctest: +SKIP
"""

from __future__ import annotations

import collections
import hashlib
import os
from pathlib import Path

import numpy as np

from edge_fm.data.images import fit_image
from edge_fm.data.options import TFDS_PREFIX as PREFIX
from edge_fm.data.options import DataOptions, default_size
from edge_fm.errors import EdgeFMError

SPLIT_NAMES = {"train": "train", "val": "validation", "test": "test"}  # edge-fm's split -> tfds'
INSTALL = "pip install 'edge-fm[tfds]'"


def read_tfds(
    name: str, options: DataOptions
) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], tuple[str, ...], str, bool]:
    """Reads a prepared tensorflow-datasets dataset into uint8 arrays per split.

    Args:
        name: The dataset's name as tensorflow-datasets spells it (``mnist``, ``cifar10:3.0.2``).
        options: The size images of different sizes are brought to (``image_size``, ``resize``).

    Returns:
        ``{split: (images (N, H, W, C) uint8, labels)}`` (``train``, and ``val`` and ``test`` when
        the dataset has them), the class names, the content's fingerprint, and whether any image
        was resized to the common size.

    Raises:
        EdgeFMError: tensorflow-datasets is not installed, the dataset is unknown or not prepared
            here, or it is not image classification (one image and one class label per example).
    """
    try:
        import tensorflow_datasets as tfds
    except ImportError:
        raise EdgeFMError(f"--data {PREFIX}{name} needs tensorflow-datasets: {INSTALL}.") from None
    builder = _builder(tfds, name)
    image_key, label_key = _supervised_keys(builder.info, name)
    label = builder.info.features[label_key]
    class_names = tuple(str(n) for n in getattr(label, "names", ()) or ())
    if not class_names:
        raise EdgeFMError(f"--data {PREFIX}{name}: its {label_key!r} feature is not a class label.")
    known = set(builder.info.splits.keys())
    digest = hashlib.sha256(f"{builder.info.full_name}\n".encode())
    arrays, resized = {}, False
    for split, tfds_split in SPLIT_NAMES.items():
        # A dataset whose metadata lists no splits (tensorflow-datasets' mock data) is asked for each.
        if known and tfds_split not in known:
            continue
        try:
            examples = builder.as_dataset(split=tfds_split, as_supervised=True)
        except Exception as exc:  # noqa: BLE001 - a split that is not there fails in many ways
            if split == "train":
                raise EdgeFMError(
                    f"--data {PREFIX}{name} is not prepared in {builder.data_dir} ({type(exc).__name__}): "
                    f"prepare it there with tensorflow-datasets (`tfds build {name}`) on a machine with "
                    "network, then copy the folder, or set TFDS_DATA_DIR to where it is."
                ) from None
            continue
        images, labels, fitted = _to_arrays(
            tfds.as_numpy(examples), options, f"{PREFIX}{name} ({tfds_split})", digest
        )
        arrays[split], resized = (images, labels), resized or fitted
    shapes = {images.shape[1:3] for images, _ in arrays.values()}
    if len(shapes) > 1:  # splits of different common sizes: bring them to the training split's
        size = arrays["train"][0].shape[1:3]
        options = DataOptions(image_size=size, resize=options.resize)
        arrays = {split: (_one_size(list(x), options)[0], y) for split, (x, y) in arrays.items()}
        resized = True
    return arrays, class_names, "sha256:" + digest.hexdigest(), resized


def prepared_files(name: str) -> list[list]:
    """The prepared dataset's files here, as ``[full name, [relative path, size], ...]``; empty when none.

    What the decode cache keys a tensorflow-datasets dataset by: preparing it again (another
    version, other shards) changes the list.

    Raises:
        EdgeFMError: tensorflow-datasets is not installed, or it has no such dataset.
    """
    try:
        import tensorflow_datasets as tfds
    except ImportError:
        raise EdgeFMError(f"--data {PREFIX}{name} needs tensorflow-datasets: {INSTALL}.") from None
    builder = _builder(tfds, name)
    folder = Path(str(builder.data_dir))
    if not folder.is_dir():
        return []
    listing = sorted(
        [path.relative_to(folder).as_posix(), path.stat().st_size]
        for path in folder.rglob("*")
        if path.is_file()
    )
    return [builder.info.full_name, *listing] if listing else []


def _builder(tfds, name: str):
    # tensorflow-datasets reads $TFDS_DATA_DIR once, when imported; read it at each load instead.
    data_dir = os.environ.get("TFDS_DATA_DIR") or None
    try:
        return tfds.builder(name, data_dir=data_dir)
    except Exception as exc:  # noqa: BLE001 - unknown names and versions raise several kinds
        reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise EdgeFMError(
            f"--data {PREFIX}{name}: tensorflow-datasets has no such dataset ({reason})."
        ) from None


def _supervised_keys(info, name: str) -> tuple[str, str]:
    keys = info.supervised_keys
    if not keys or len(keys) != 2 or not all(isinstance(k, str) for k in keys):
        raise EdgeFMError(
            f"--data {PREFIX}{name} is not an image-classification dataset (no (image, label) supervised keys)."
        )
    return keys


def _to_arrays(examples, options: DataOptions, where: str, digest) -> tuple[np.ndarray, np.ndarray, bool]:
    """One split's images (brought to one size) and labels, hashed into ``digest`` as they are read."""
    images, labels = [], []
    for image, label in examples:
        image = np.asarray(image)
        if image.ndim == 2:
            image = image[..., None]
        if image.ndim != 3 or image.shape[-1] not in (1, 3) or image.dtype != np.uint8:
            raise EdgeFMError(
                f"{where}: images must be uint8 (height, width, 1 or 3), got {image.dtype} {image.shape}."
            )
        digest.update(
            np.int64(label).tobytes() + np.asarray(image.shape, np.int64).tobytes() + image.tobytes()
        )
        images.append(image)
        labels.append(int(label))
    if not images:
        raise EdgeFMError(f"{where} holds no examples.")
    stacked, resized = _one_size(images, options)
    return stacked, np.asarray(labels, dtype=np.int64), resized


def _one_size(images: list[np.ndarray], options: DataOptions) -> tuple[np.ndarray, bool]:
    """Stacks the images; those of another size than :func:`default_size`'s (or ``--image-size``) are resized.

    Returns:
        The images and whether any was resized.
    """
    sizes = collections.Counter(image.shape[:2] for image in images)
    size = options.image_size or default_size(sizes)
    channels = max(image.shape[-1] for image in images)
    if len(sizes) == 1 and tuple(size) in sizes and all(image.shape[-1] == channels for image in images):
        return np.stack(images), False
    from PIL import Image

    out = np.empty((len(images), *size, channels), dtype=np.uint8)
    for i, pixels in enumerate(images):
        image = Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels)
        image = image.convert("L" if channels == 1 else "RGB")
        out[i] = np.asarray(fit_image(image, tuple(size), options.resize)).reshape(*size, channels)
    return out, any(image.shape[:2] != tuple(size) for image in images)

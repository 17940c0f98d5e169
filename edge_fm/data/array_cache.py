"""The decoded-image cache: each split's uint8 images and labels as ``.npy`` files, memory-mapped
when read, beside the data's identity; an entry is written under a temporary name and renamed into
place, so an interrupted write leaves nothing a later load would take for a cache.

Image folders decode into it (:mod:`edge_fm.data.folders`); tensorflow-datasets datasets are
written into it once read (:mod:`edge_fm.data.sources`). Entries live under :func:`cache_root`,
one folder per key; the key hashes what the arrays depend on.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import os
import shutil
import socket
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from edge_fm.data.datasets import DataIdentity, Dataset
from edge_fm.data.options import CACHE_ENV, CACHE_VERSION, SPLITS, DataOptions, cache_root
from edge_fm.data.splits import capped, make_dataset
from edge_fm.errors import EdgeFMError
from edge_fm.io import read_json, write_json

IDENTITY_FILE = "identity.json"
CHUNK = 4096  # images copied at a time: bounded memory whatever the split's size


def cache_entry(parts: list[Any], options: DataOptions) -> Path:
    """The cache folder of data described by ``parts`` (JSON values) read with ``options``.

    ``max_train`` is applied to the cached arrays when they are read, so it is not part of the key.
    """
    key = hashlib.sha256(
        json.dumps(
            [CACHE_VERSION, *parts, dataclasses.asdict(dataclasses.replace(options, max_train=None))],
            sort_keys=True,
        ).encode()
    ).hexdigest()[:32]
    return cache_root() / key


def is_cached(cached: Path) -> bool:
    """Whether ``cached`` is a complete, readable entry (its identity is written last).

    An entry damaged since it was written (a truncated or missing array, an unreadable identity) is
    removed, with a warning, so that the caller decodes the data again instead of failing on it.
    """
    if not (cached / IDENTITY_FILE).is_file():
        return False
    damage = _damage(cached)
    if damage is None:
        return True
    warnings.warn(
        f"the decoded-image cache entry {cached} is damaged ({damage}): it is made again.", stacklevel=2
    )
    # Named as a staging folder of this process, so that a kill before the removal is cleared later.
    discarded = cached.with_name(f".tmp-{cached.name}-{_host()}-{os.getpid()}-damaged")
    try:
        cached.rename(discarded)
    except OSError:
        pass  # another process took it away first
    shutil.rmtree(discarded, ignore_errors=True)
    return False


def _damage(cached: Path) -> str | None:
    """What is wrong with a written entry, or None: each split's arrays must open and hold the counts
    its identity records."""
    try:
        counts = read_json(cached / IDENTITY_FILE)["counts"]
        for split in SPLITS:
            expected = sum(counts.get(split) or [])
            if not expected and not (cached / f"x_{split}.npy").exists():
                continue
            images = np.load(cached / f"x_{split}.npy", mmap_mode="r")
            labels = np.load(cached / f"y_{split}.npy", mmap_mode="r")
            if len(images) != expected or len(labels) != expected:
                return f"{split}: {len(images)} images and {len(labels)} labels where {expected} were written"
    except (OSError, ValueError, KeyError, TypeError, EdgeFMError) as exc:
        return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return None


def new_staging(cached: Path) -> Path:
    """A new temporary folder for the entry ``cached``, beside it, named by this machine and process.

    What a killed write of the same entry on this machine left (its process is gone) is removed first;
    another machine's, on a shared cache, is left alone.
    """
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise EdgeFMError(
            f"cannot write the decoded-image cache in {cached.parent}: {(exc.strerror or str(exc)).lower()}; "
            f"set ${CACHE_ENV} to a writable folder."
        ) from None
    host = _host()
    for folder in cached.parent.glob(f".tmp-{cached.name}-{host}-*"):
        pid = folder.name.removeprefix(f".tmp-{cached.name}-{host}-").split("-")[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=f".tmp-{cached.name}-{host}-{os.getpid()}-", dir=cached.parent))


def _host() -> str:
    return "".join(c if c.isalnum() else "_" for c in socket.gethostname()) or "host"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process: alive
        return True
    return True


def new_array_file(path: Path, shape: tuple[int, ...]) -> np.memmap:
    """A new uint8 ``.npy`` file of ``shape``, memory-mapped for writing, its disk space reserved first.

    A write through a map onto a full disk kills the process (SIGBUS) with no message; reserving the
    space turns that into an error the user can act on. Where the system cannot reserve space (no
    ``posix_fallocate``, or a file system without it), the file is written as it is.

    Raises:
        EdgeFMError: The cache's disk has not the room.
    """
    array = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=shape)
    reserve = getattr(os, "posix_fallocate", None)
    try:
        if reserve is not None:
            with open(path, "r+b") as file:
                reserve(file.fileno(), 0, os.path.getsize(path))
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            return array  # EOPNOTSUPP, EINVAL...: this file system reserves nothing ahead
        needed = int(np.prod(shape))
        raise EdgeFMError(
            f"the image cache {path.parent.parent} has no room for {needed / 1e6:,.0f} MB of decoded images: "
            f"free space there, or set {CACHE_ENV} to a folder on a larger disk (or choose a smaller --image-size)."
        ) from None
    return array


def write_splits(cached: Path, dataset: Dataset) -> None:
    """Writes a dataset's splits and identity as the entry ``cached``, atomically."""
    staging = new_staging(cached)
    try:
        splits = {
            "train": (dataset.x_train, dataset.y_train),
            "val": (dataset.x_val, dataset.y_val),
            "test": (dataset.x_test, dataset.y_test),
        }
        for split, (images, labels) in splits.items():
            write_split(staging, split, images, labels)
        write_json(staging / IDENTITY_FILE, dataset.identity.as_record())
        publish(staging, cached)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def write_split(
    staging: Path, split: str, images: np.ndarray, labels: np.ndarray, rows: np.ndarray | None = None
) -> None:
    """Writes one split's ``x_<split>.npy`` (``images[rows]``, all of them when None) and ``y_<split>.npy``.

    The images are copied :data:`CHUNK` at a time into a memory-mapped file: bounded memory whatever
    the split's size, from arrays that may themselves be memory-mapped.
    """
    count = len(images) if rows is None else len(rows)
    out = new_array_file(staging / f"x_{split}.npy", (count, *images.shape[1:]))
    for start in range(0, count, CHUNK):
        part = slice(start, start + CHUNK)
        out[part] = images[part] if rows is None else images[rows[part]]
    out.flush()
    del out
    np.save(staging / f"y_{split}.npy", np.asarray(labels))


def publish(staging: Path, cached: Path) -> None:
    """Renames a finished staging folder into place; another process having done so first is fine."""
    try:
        staging.rename(cached)
    except OSError:
        if not is_cached(cached):
            raise


def read_cache(cached: Path, source: Path | str, options: DataOptions) -> Dataset:
    """The dataset of a cache entry, its images memory-mapped (nothing is read until used).

    Args:
        cached: The entry.
        source: Where the data is now (recorded as the identity's source).
        options: The options it was read with; ``max_train`` caps the training split here.
    """
    identity = DataIdentity.from_record(read_json(cached / IDENTITY_FILE))
    identity = dataclasses.replace(identity, source=str(source))
    split_arrays = {}
    for split in SPLITS:
        if (cached / f"x_{split}.npy").is_file():
            split_arrays[split] = (
                np.load(cached / f"x_{split}.npy", mmap_mode="r"),
                np.load(cached / f"y_{split}.npy"),
            )
    if options.max_train is not None:
        split_arrays["train"] = capped(*split_arrays["train"], options.max_train, options.seed)
    return make_dataset(split_arrays, source, identity.class_names, identity)

"""Image folders as a dataset: scanning ``DIR/<class>/*`` (or ``DIR/train|val|test/<class>/...``),
skipping what is not a readable image, and decoding once into a cache of memory-mapped arrays.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import errno
import hashlib
import os
import shutil
import warnings
from pathlib import Path

import numpy as np

from edge_fm.data.array_cache import (
    IDENTITY_FILE,
    cache_entry,
    is_cached,
    new_array_file,
    new_staging,
    publish,
    read_cache,
    write_split,
)
from edge_fm.data.datasets import DataIdentity, Dataset
from edge_fm.data.images import read_header, read_image
from edge_fm.data.options import (
    IMAGE_SUFFIXES,
    ORIGIN,
    SKIPPED_EXAMPLES,
    SPLITS,
    DataOptions,
    ProgressFn,
    default_size,
)
from edge_fm.data.splits import check_class_names, label_dtype, per_class, plan_splits
from edge_fm.errors import EdgeFMError
from edge_fm.io import write_json

# ---------------------------------------------------------------- image folders


@dataclasses.dataclass
class _Scan:
    files: list[Path]  # readable candidates, in a fixed order
    labels: list[int]
    origin: list[int]  # index into SPLITS of the folder each file is in
    names: list[str]  # path relative to the root, for messages and the test membership
    class_names: tuple[str, ...]
    skipped: list[str]  # "name (reason)"


def image_folder(root: Path, options: DataOptions, progress: ProgressFn | None) -> Dataset:
    scan = _scan_folder(root)
    digest = hashlib.sha256()
    for name, path in zip(scan.names, scan.files):
        digest.update(f"{name}\t{path.stat().st_size}\n".encode())
    # The images alone: a stray .DS_Store must not move the held-out test split.
    fingerprint = "sha256:" + digest.hexdigest()
    # The skipped files are part of what the entry holds, so that its record of them stays true.
    cached = cache_entry([fingerprint, scan.skipped], options)
    if not is_cached(cached):
        _decode_into_cache(root, scan, fingerprint, options, cached, progress)
    return read_cache(cached, root, options)


def _scan_folder(root: Path) -> _Scan:
    """Lists the class folders and their image files; hidden, non-image and empty files are skipped."""
    split_root = root / "train"
    if split_root.is_dir():
        split_dirs = {split: root / split for split in SPLITS if (root / split).is_dir()}
        _check_no_classes_beside(root)
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
    check_class_names(class_names, root)  # before any image is read
    for split, dirs in class_dirs.items():
        extra = sorted(set(dirs) - set(class_names))
        if extra:
            raise EdgeFMError(
                f"--data {root}: {split}/ has class folders that train/ lacks ({', '.join(extra)}); "
                "every class needs training images."
            )
    scan = _Scan([], [], [], [], class_names, skipped)
    seen_dirs: set[str] = set()
    owners = {os.path.realpath(folder): name for dirs in class_dirs.values() for name, folder in dirs.items()}
    for split, dirs in class_dirs.items():
        for label, name in enumerate(class_names):
            if name not in dirs:
                continue
            for path in _walk(dirs[name], skipped, root, seen_dirs, _Classes(name, owners)):
                scan.files.append(path)
                scan.labels.append(label)
                scan.origin.append(ORIGIN[split])
                scan.names.append(path.relative_to(root).as_posix())
    return scan


def _check_no_classes_beside(root: Path) -> None:
    """Refuses folders beside ``train/``: class folders there would be read in neither layout."""
    beside = sorted(
        entry.name
        for entry in os.scandir(root)
        if not _skipped_name(entry.name) and entry.name not in SPLITS and _is_dir(Path(entry.path))
    )
    if beside == ["validation"]:
        raise EdgeFMError(f"--data {root}: name the validation folder val/ (beside train/), not validation/.")
    if beside:
        raise EdgeFMError(
            f"--data {root}: train/ stands beside other folders ({', '.join(beside[:3])}"
            f"{', ...' if len(beside) > 3 else ''}), so it is not clear whether train/ is a class or the "
            "training split: lay out DIR/<class>/ (rename a class called train, val or test) or "
            "DIR/train/<class>/ with DIR/val/ and DIR/test/ beside it."
        )


def _skipped_name(name: str) -> bool:
    """Hidden files and folders (.DS_Store, .git) and the resource folder macOS puts in its zips."""
    return name.startswith(".") or name == "__MACOSX"


def _class_dirs(folder: Path, skipped: list[str], root: Path) -> dict[str, Path]:
    dirs = {}
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        path = Path(entry.path)
        if _skipped_name(entry.name):
            continue  # hidden: .DS_Store, .git, editors' files; macOS's __MACOSX
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


@dataclasses.dataclass(frozen=True)
class _Classes:
    """The class being read, and every class folder's real path with its class."""

    name: str
    owners: dict[str, str]

    def clash(self, path: Path) -> str | None:
        """Why a link at ``path`` is not read in this class, if it leads into another class's folder or
        to a folder that holds class folders (the dataset's own folder, or one above it)."""
        real = os.path.realpath(path)
        for folder, name in self.owners.items():
            if name != self.name and (real == folder or real.startswith(folder + os.sep)):
                return f"a link into class folder {name!r}: its images are read there"
        # Above a class folder ("/" too); the class's own folder is a loop, named as such by the walk.
        if any(folder != real and os.path.commonpath([real, folder]) == real for folder in self.owners):
            return "a link to a folder that holds the class folders: their images are read in their classes"
        return None


def _walk(folder: Path, skipped: list[str], root: Path, seen_dirs: set[str], classes: _Classes):
    """Image files under ``folder``, sorted, following symlinked folders once each (no loops); a link
    into another class's folder is skipped, so no image is read under a class it does not belong to."""
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
        if _skipped_name(entry.name):
            skipped.append(f"{name} (hidden)")
            continue
        clash = classes.clash(path) if entry.is_symlink() else None
        if clash is not None:
            skipped.append(f"{name} ({clash})")
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
            yield from _walk(path, skipped, root, seen_dirs, classes)
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
    size = options.image_size or default_size(sizes)
    channels = options.channels or (1 if all(headers[i].grey for i in readable) else 3)
    resized = any(s != size for s in sizes)

    staging = new_staging(cached)
    try:
        decoded = new_array_file(staging / "all.npy", (len(readable), *size, channels))
        ok = np.zeros(len(readable), dtype=bool)

        def decode(slot: int) -> str | None:
            try:
                decoded[slot] = read_image(scan.files[readable[slot]], size, channels, options.resize)
            except EdgeFMError as exc:
                return _reason(exc, scan.files[readable[slot]])
            ok[slot] = True
            return None

        with concurrent.futures.ThreadPoolExecutor(workers) as pool:
            for done, error in enumerate(pool.map(decode, range(len(readable))), start=1):
                if error:
                    skipped.append(f"{scan.names[readable[done - 1]]} ({error})")
                if done % 256 == 0 or done == len(readable):
                    report("decoding images", done)
        kept = np.asarray(readable)[ok]
        if options.channels is None and channels == 3 and all(headers[i].grey for i in kept):
            # The only colour files could not be decoded: the images read are grey, and stay so.
            channels, decoded = 1, decoded[..., :1]
        if options.channels is None and channels == 3:
            _say_about_few_colour_files([scan.names[i] for i in kept if not headers[i].grey], len(kept))
        labels = np.asarray(scan.labels, dtype=label_dtype(len(scan.class_names)))[kept]
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
        split_plan = plan_splits(labels, origin, names, scan.class_names, fingerprint, options, root)
        positions = np.flatnonzero(ok)
        for split, indices in split_plan.indices.items():
            write_split(staging, split, decoded, labels[indices], rows=positions[indices])
        decoded = None  # unmapped before its file is removed
        (staging / "all.npy").unlink()
        identity = DataIdentity(
            kind="folder",
            source=str(root),
            fingerprint=fingerprint,
            class_names=scan.class_names,
            counts={
                split: per_class(labels[idx], len(scan.class_names))
                for split, idx in split_plan.indices.items()
            },
            image_shape=(size[0], size[1], channels),
            resize=options.resize if resized else None,
            test_split=split_plan.test_split,
            test_members=split_plan.test_members,
            val_split=split_plan.val_split,
            skipped=len(skipped),
            skipped_examples=tuple(skipped[:SKIPPED_EXAMPLES]),
        )
        write_json(staging / IDENTITY_FILE, identity.as_record())
        publish(staging, cached)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


# Below this share of colour files, the RGB input the folder gets is most likely a mistake worth a word.
FEW_COLOUR_FILES = 0.05


def _say_about_few_colour_files(colour: list[str], total: int) -> None:
    """Warns when a handful of colour files make a grey folder RGB: three times the input (and a
    microcontroller's arena) for images that are grey."""
    if len(colour) < FEW_COLOUR_FILES * total:
        warnings.warn(
            f"{len(colour)} of {total:,} images {'is' if len(colour) == 1 else 'are'} in colour (e.g. {colour[0]}), so "
            "every image is read as RGB; "
            "pass --channels 1 to read them all grey (a third of the input), or convert those files.",
            stacklevel=5,
        )


def _header_or_error(path: Path):
    try:
        return read_header(path)
    except EdgeFMError as exc:
        return _reason(exc, path)


def _reason(exc: EdgeFMError, path: Path) -> str:
    """The part of a reader's message after the file name (cached with the data's fingerprint, so it
    must not name where this copy of the folder is)."""
    text = str(exc)
    if text.startswith(str(path)):
        text = text[len(str(path)) :].lstrip(": ")
    elif ": " in text:
        text = text.split(": ", 1)[1]
    return text.split("; ", 1)[0].rstrip(".")  # the fix a reader suggests for one image does not apply here


def _first(skipped: list[str]) -> str:
    more = f", and {len(skipped) - SKIPPED_EXAMPLES} more" if len(skipped) > SKIPPED_EXAMPLES else ""
    return "skipped: " + "; ".join(skipped[:SKIPPED_EXAMPLES]) + more

"""Splits and checks shared by every source: held-out test and validation splits seeded by the
data's fingerprint, class-size checks, and the Dataset and its summary.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import NamedTuple

import numpy as np

from edge_fm.data import datasets as fmnist
from edge_fm.data.datasets import Dataset
from edge_fm.data.options import ORIGIN, SPLITS, DataOptions
from edge_fm.errors import EdgeFMError
from edge_fm.records import LABEL_RULE, is_label

# ---------------------------------------------------------------- splits


class SplitPlan(NamedTuple):
    """Which images go to which split, and how the held-out splits were made (for the identity)."""

    indices: dict[str, np.ndarray]  # split -> image indices: train sorted, val and test spread
    test_split: str  # "given" (the data's own) or how it was held out
    test_members: str | None  # sha256 of the held-out test images' names (None when given)
    val_split: str  # "given" or how it was held out


def plan_splits(
    labels: np.ndarray,
    origin: np.ndarray,
    names: list[str],
    class_names: tuple[str, ...],
    fingerprint: str,
    options: DataOptions,
    source: Path,
) -> SplitPlan:
    """Indices of each split: the data's own, else held out per class (test first, then validation).

    The held-out draws are seeded by the fingerprint and the seed alone, so the same data and seed
    always hold out the same images.
    """
    pool = np.flatnonzero(origin == ORIGIN["train"])
    plan = {split: np.flatnonzero(origin == ORIGIN[split]) for split in ("val", "test")}
    hold_test, hold_val = not len(plan["test"]), not len(plan["val"])
    val_fraction = None
    if hold_val:
        after_test = len(pool) * (1 - options.test_fraction) if hold_test else len(pool)
        # At most half: a preset's size (the paper's 12,000) on a smaller dataset, and runs made so, still read.
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
    val_split = "given"
    if hold_val:
        rng = _split_rng(fingerprint, options.seed, "val")
        taken = _take_per_class(labels[pool], val_fraction, rng)
        plan["val"], pool = pool[taken], np.delete(pool, taken)
        val_split = f"held out: {val_fraction:.1%} of each class, seed {options.seed}"
    plan["train"] = pool
    indices = {
        split: np.sort(plan[split]) if split == "train" else spread(plan[split], labels) for split in SPLITS
    }
    return SplitPlan(indices, test_split, members, val_split)


def spread(positions: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """``positions`` ordered so that every prefix holds each class in its share of the split.

    A folder lists its images class by class, so a split in file order scores its first N images
    (a report, a parity check, ``--tflm-images``) on the first few classes only. Here the k-th of a
    class's n images stands at (k + 1/2) / n, ties by class: the order is fixed by the data alone.
    """
    positions = np.sort(positions)
    held = labels[positions]
    share = np.empty(len(positions))
    for label in np.unique(held):
        members = np.flatnonzero(held == label)
        share[members] = (np.arange(len(members)) + 0.5) / len(members)
    return positions[np.lexsort((held, share))]


def _check_class_sizes(
    labels: np.ndarray,
    class_names: tuple[str, ...],
    hold_test: bool,
    hold_val: bool,
    options: DataOptions,
    val_fraction: float | None,
    source: Path,
) -> None:
    counts = per_class(labels, len(class_names))
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


def capped(x: np.ndarray, y: np.ndarray, max_train: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    if max_train >= len(y):
        return x, y
    keep, _ = fmnist.stratified_split(y, len(y) - max_train, seed + 1)
    return x[keep], y[keep]


# ---------------------------------------------------------------- shared checks


def check_class_names(class_names: tuple[str, ...], source: Path) -> None:
    """Refuses a class name that cannot be a label (a folder name with a line break, say) before any
    work: every bundle would carry it in ``labels.txt``, a line a label."""
    for name in class_names:
        if not is_label(name):
            raise EdgeFMError(
                f"--data {source}: the class name {name[:40]!r} cannot be a label ({LABEL_RULE}): rename "
                "that class (its folder, or its name in the data)."
            )


def make_dataset(
    split_arrays: dict[str, tuple[np.ndarray, np.ndarray]],
    source: Path,
    class_names: tuple[str, ...],
    identity,
) -> Dataset:
    check_class_names(class_names, source)
    return Dataset(
        *split_arrays["train"],
        *split_arrays["val"],
        *split_arrays["test"],
        source="full",
        location=str(source),
        class_names=class_names,
        identity=identity,
    )


def same_length(images, labels, image_name: str, label_name: str, where: str = "") -> None:
    if len(images) != len(labels):
        raise EdgeFMError(
            f"{where}{image_name} holds {len(images)} images but {label_name} holds {len(labels)} labels: "
            "they do not belong together."
        )


def check_label_range(labels: np.ndarray, num_classes: int, where: str) -> None:
    if labels.size and int(labels.max()) >= num_classes:
        raise EdgeFMError(f"{where}: label {int(labels.max())} out of range 0-{num_classes - 1}.")


def label_dtype(num_classes: int):
    return np.uint8 if num_classes <= 256 else np.uint16


def per_class(labels: np.ndarray, num_classes: int) -> tuple[int, ...]:
    return tuple(int(n) for n in np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_classes))


def split_counts(dataset: Dataset, num_classes: int) -> dict[str, tuple[int, ...]]:
    return {split: per_class(getattr(dataset, f"y_{split}"), num_classes) for split in SPLITS}


def summary(dataset: Dataset) -> dict:
    """The identity of a loaded dataset as JSON-ready values, for ``edge-fm data info`` and records.

    Raises:
        EdgeFMError: The dataset carries no identity (it was built by hand).
    """
    if dataset.identity is None:
        raise EdgeFMError("this dataset has no identity record; load it with edge_fm.data.sources.load_data.")
    return dataset.identity.as_record()

"""Reading a CSV of pixels with a label column (the Kaggle layout of Fashion-MNIST, or headerless)."""

from __future__ import annotations

import csv
import gzip
import math
from pathlib import Path

import numpy as np

from edge_fm.data.splits import label_dtype
from edge_fm.errors import EdgeFMError


def read_csv(path: Path, label_column: str | None) -> tuple[np.ndarray, list[str]]:
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
        not np.isfinite(values).all()
        or values.min() < 0
        or values.max() > 255
        or not np.array_equal(values, np.round(values))
    ):
        bad = next(
            f for f, v in zip(fields, values) if not math.isfinite(v) or v < 0 or v > 255 or v != round(v)
        )
        raise EdgeFMError(f"{path}: line {line}: pixel value {bad} is not a whole number 0-255.")
    return values.astype(np.uint8)


def csv_shape(pixels: int, path: Path) -> tuple[int, int, int]:
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


def csv_labels(labels: list[str], path: Path) -> tuple[np.ndarray, tuple[str, ...]]:
    for label in labels:
        if _is_number(label) and not math.isfinite(float(label)):
            raise EdgeFMError(
                f"{path}: label {label!r} is neither a class index (0, 1, 2...) nor a class name; fix that row."
            )
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
        return values.astype(label_dtype(distinct)), tuple(str(c) for c in range(distinct))
    class_names = tuple(sorted(set(labels)))
    lookup = {name: i for i, name in enumerate(class_names)}
    return np.array([lookup[label] for label in labels], dtype=label_dtype(len(class_names))), class_names

"""The report's figures, drawn with matplotlib (Agg) and returned as PNG bytes.

Every function takes plain arrays and dicts (no model, no file), so each figure can be drawn
from a training run, a bundle or a benchmark alike, and tested on its own.
"""

from __future__ import annotations

import functools
import io
import math
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from edge_fm.io import KB, atomic_path
from edge_fm.show.explain import overlay

DPI = 100
_CORRECT, _WRONG = "#1a7f37", "#cf222e"  # green for a right answer, red for a wrong one


# Fonts that draw the scripts DejaVu Sans lacks (class names in Chinese, Japanese, Korean...), used
# glyph by glyph after it where installed (matplotlib's font fallback).
FALLBACK_FONTS = ("Noto Sans CJK JP", "Noto Sans CJK SC", "WenQuanYi Zen Hei", "Droid Sans Fallback")


@functools.cache  # the backend and the fonts are set once a process
def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # no display: figures are only ever written to files
    import matplotlib.pyplot as plt
    from matplotlib import font_manager

    installed = {font.name for font in font_manager.fontManager.ttflist}
    matplotlib.rcParams["font.family"] = ["DejaVu Sans", *(f for f in FALLBACK_FONTS if f in installed)]
    return plt


_warned_fonts: list[bool] = []


def _one_font_warning(draw):
    """Runs a figure function with matplotlib's warning per glyph no font has (one per character of a
    class name in a script DejaVu Sans lacks) turned into one line that says what to install."""

    @functools.wraps(draw)
    def wrapper(*args, **kwargs):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = draw(*args, **kwargs)
        missing = [w for w in caught if "missing from font" in str(w.message)]
        for w in caught:
            if w not in missing:
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        if missing and not _warned_fonts:
            _warned_fonts.append(True)  # once a process: every figure of a report has the same names
            warnings.warn(
                "some class names hold characters no installed font draws; figures show them as boxes "
                "(install a font that has them, e.g. Debian's fonts-noto-cjk).",
                stacklevel=2,
            )
        return result

    return wrapper


def _png(fig, tight: bool = False) -> bytes:
    """The figure as PNG; ``tight`` measures the drawing first, for a legend outside the axes (slower)."""
    plt = _pyplot()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight" if tight else None)
    plt.close(fig)
    return buffer.getvalue()


@_one_font_warning
def training_curves(history: Sequence[dict], title: str) -> bytes:
    """Loss, accuracy (train and validation) and learning rate per epoch, from a run's ``history.json``."""
    plt = _pyplot()
    epochs = [entry["epoch"] for entry in history]
    panels = [("loss", ("loss", "val_loss")), ("accuracy", ("accuracy", "val_accuracy"))]
    has_lr = any("lr" in entry or "learning_rate" in entry for entry in history)
    fig, axes = plt.subplots(1, 3 if has_lr else 2, figsize=(12 if has_lr else 8.5, 3.2))
    for ax, (name, keys) in zip(axes, panels):
        for key, label in zip(keys, ("train", "validation")):
            values = [entry.get(key) for entry in history]
            if any(v is not None for v in values):
                ax.plot(
                    epochs,
                    [math.nan if v is None else v for v in values],
                    marker="o",
                    markersize=3,
                    label=label,
                )
        ax.set_title(name)
        ax.set_xlabel("epoch")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    if has_lr:
        rates = [entry.get("lr", entry.get("learning_rate")) for entry in history]
        axes[2].plot(
            epochs, [math.nan if r is None else r for r in rates], marker="o", markersize=3, color="C2"
        )
        axes[2].set_title("learning rate")
        axes[2].set_xlabel("epoch")
        axes[2].grid(True, alpha=0.3)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _png(fig)


@_one_font_warning
def confusion_heatmap(matrix: Sequence[Sequence[int]], labels: Sequence[str], title: str) -> bytes:
    """The confusion matrix as a heatmap: rows true classes, columns predicted, counts written in."""
    plt = _pyplot()
    counts = np.asarray(matrix, dtype=np.int64)
    # Each row scaled by its class's size, so a small class's errors show as clearly as a large one's.
    share = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(7.2, 6.2))
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for row in range(counts.shape[0]):
        for col in range(counts.shape[1]):
            if counts[row, col]:
                ax.text(
                    col,
                    row,
                    str(counts[row, col]),
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if share[row, col] > 0.5 else "black",
                )
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title, fontsize=10)
    fig.colorbar(image, ax=ax, fraction=0.046, label="share of the true class")
    fig.tight_layout()
    return _png(fig)


@_one_font_warning
def confidence_boxes(labels_true: np.ndarray, probs: np.ndarray, labels: Sequence[str]) -> bytes:
    """Box plot, per true class, of the confidence of each prediction, split into right and wrong answers."""
    plt = _pyplot()
    predicted, confidence = probs.argmax(axis=1), probs.max(axis=1)
    fig, ax = plt.subplots(figsize=(11, 3.8))
    positions = np.arange(len(labels))
    for offset, right, colour, name in (
        (-0.18, True, _CORRECT, "right answers"),
        (0.18, False, _WRONG, "wrong answers"),
    ):
        groups = [confidence[(labels_true == c) & ((predicted == c) == right)] for c in range(len(labels))]
        kept = [(p, g) for p, g in zip(positions, groups) if len(g)]
        if not kept:
            continue
        boxes = ax.boxplot(
            [g for _, g in kept],
            positions=[p + offset for p, _ in kept],
            widths=0.32,
            patch_artist=True,
            showfliers=True,
            flierprops={"markersize": 2},
        )
        for patch in boxes["boxes"]:
            patch.set(facecolor=colour, alpha=0.35, edgecolor=colour)
        ax.plot([], [], color=colour, linewidth=6, alpha=0.35, label=name)
    ax.set_xticks(positions, labels, rotation=20, fontsize=8)
    ax.set_ylabel("confidence (top probability)")
    ax.set_ylim(0, 1.02)
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    ax.set_title("Confidence of each prediction, by true class", fontsize=10)
    fig.tight_layout()
    return _png(fig)


@_one_font_warning
def prediction_gallery(
    images: np.ndarray,
    labels_true: np.ndarray,
    probs: np.ndarray,
    class_names: Sequence[str],
    per_kind: int = 4,
) -> bytes:
    """Per true class, a row: its most confident right answers, then its most confident mistakes.

    Each thumbnail is titled with the predicted class and its probability, green when right and red
    when wrong.
    """
    predicted, confidence = probs.argmax(axis=1), probs.max(axis=1)
    cells, titles = [], []
    for c in range(len(class_names)):
        right = _most_confident((labels_true == c) & (predicted == c), confidence, per_kind)
        wrong = _most_confident((labels_true == c) & (predicted != c), confidence, per_kind)
        row = [*right, *([None] * (per_kind - len(right))), *wrong, *([None] * (per_kind - len(wrong)))]
        cells.append([None if i is None else thumbnail(images[i]) for i in row])
        titles.append(
            [
                None
                if i is None
                else (
                    f"{class_names[predicted[i]]} {confidence[i]:.0%}",
                    _CORRECT if predicted[i] == c else _WRONG,
                )
                for i in row
            ]
        )
    return _mosaic_figure(
        cells,
        titles,
        list(class_names),
        f"Left {per_kind}: most confident right answers; right {per_kind}: most confident mistakes "
        "(title: predicted class and its probability)",
    )


def thumbnail(image: np.ndarray) -> np.ndarray:
    """An image as a cell shows it: ``(height, width)`` grey or ``(height, width, 3)`` RGB."""
    pixels = np.asarray(image)
    return pixels[..., 0] if pixels.ndim == 3 and pixels.shape[-1] == 1 else pixels


def _most_confident(mask: np.ndarray, confidence: np.ndarray, count: int) -> list[int]:
    indices = np.flatnonzero(mask)
    return [int(i) for i in indices[np.argsort(-confidence[indices], kind="stable")][:count]]


@_one_font_warning
def explanation_grid(
    images: np.ndarray, rows: Sequence[tuple[str, Sequence[np.ndarray]]], titles: Sequence[str]
) -> bytes:
    """Images in the first row, then one row of heat-map overlays per method, column by column.

    Args:
        images: ``(N, height, width[, channels])`` pixels.
        rows: ``(method name, N maps)`` per method.
        titles: One title per image (its class, and the agreement of the maps).
    """
    pictures = [thumbnail(image) for image in images]
    cells = [pictures] + [
        [overlay(picture, heat) for picture, heat in zip(pictures, maps)] for _, maps in rows
    ]
    labelled = [[(title, "black") for title in titles]] + [[None] * len(pictures) for _ in rows]
    return _mosaic_figure(cells, labelled, ["image", *[name for name, _ in rows]], None)


def _mosaic_figure(
    cells: Sequence[Sequence[np.ndarray | None]], titles, row_names: Sequence[str], title: str | None
) -> bytes:
    """Thumbnails laid out in one picture, drawn on a single axes (80 small axes take seconds to lay out)."""
    plt = _pyplot()
    first = next(np.asarray(cell) for row in cells for cell in row if cell is not None)
    height, side = first.shape[:2]  # every cell has the images' size (28x28 for Fashion-MNIST)
    gap_x, gap_y = max(4, side // 7), max(16, height * 4 // 7)  # room between cells for their titles
    n_rows, n_cols = len(cells), max(len(row) for row in cells)
    canvas = np.full((n_rows * (height + gap_y), n_cols * (side + gap_x), 3), 255, dtype=np.uint8)
    for r, row in enumerate(cells):
        for c, cell in enumerate(row):
            if cell is None:
                continue
            pixels = np.asarray(cell, dtype=np.uint8)
            top, left = r * (height + gap_y) + gap_y, c * (side + gap_x)
            canvas[top : top + height, left : left + side] = pixels if pixels.ndim == 3 else pixels[..., None]
    fig, ax = plt.subplots(figsize=(n_cols * 1.05 + 1.2, n_rows * 1.2 + (0.4 if title else 0)))
    ax.imshow(canvas, interpolation="nearest")
    for r, row in enumerate(titles):
        for c, label in enumerate(row):
            if label:
                ax.text(
                    c * (side + gap_x) + side / 2,
                    r * (height + gap_y) + gap_y - 2,
                    label[0],
                    ha="center",
                    va="bottom",
                    fontsize=6.5,
                    color=label[1],
                )
        ax.text(
            -3, r * (height + gap_y) + gap_y + height / 2, row_names[r], ha="right", va="center", fontsize=7.5
        )
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return _png(fig)


@_one_font_warning
def per_class_bars(
    rows: Sequence[tuple[str, Sequence[float]]], class_names: Sequence[str], title: str
) -> bytes:
    """Grouped bars: one group per class, one bar per model (e.g. each shipped model's recall)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(11, 3.6))
    width = 0.8 / max(1, len(rows))
    for index, (name, values) in enumerate(rows):
        ax.bar(np.arange(len(class_names)) + (index - (len(rows) - 1) / 2) * width, values, width, label=name)
    ax.set_xticks(range(len(class_names)), class_names, rotation=20, fontsize=8)
    ax.set_ylim(min(0.5, min((min(v) for _, v in rows), default=0.5)), 1.0)
    ax.set_ylabel("recall")
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(
        fontsize=7, ncol=min(8, len(rows)), loc="upper center", bbox_to_anchor=(0.5, -0.2), frameon=False
    )
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return _png(fig, tight=True)


# ---------------------------------------------------------------- the accuracy-size-latency front


def row_name(row: dict) -> str:
    """A row's model name in a catalog, else its artifact's name."""
    return row.get("model") or row["artifact"]


def pareto_front(rows: Sequence[dict]) -> set[str]:
    """Names of the rows no other row beats on accuracy (up), bytes (down) and p50 latency (down) at once."""

    def point(row):
        return row["accuracy"], -row["bytes"], -row["latency"]["p50_ms"]

    front = set()
    for row in rows:
        mine = point(row)
        dominated = any(
            all(o >= m for o, m in zip(point(other), mine)) and point(other) != mine for other in rows
        )
        if not dominated:
            front.add(row_name(row))
    return front


@_one_font_warning
def plot_front(rows: Sequence[dict], path: Path | str) -> None:
    """Draws accuracy against size and against p50 latency, one marker per model, the front filled.

    Each model has its own colour and marker, named in one legend, so labels never overlap.
    """
    import matplotlib.ticker

    plt = _pyplot()

    rows = sorted(rows, key=lambda row: row["bytes"])
    front = pareto_front(rows)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.8), sharey=True)
    axis_specs = (
        (axes[0], lambda row: row["bytes"] / KB, "size of the .tflite (KB, log scale)"),
        (axes[1], lambda row: row["latency"]["p50_ms"], "p50 latency, batch 1 (ms, log scale)"),
    )
    markers = "osD^vP*Xhp"
    for ax, x_of, x_label in axis_specs:
        for index, row in enumerate(rows):
            on_front = row_name(row) in front
            name = row_name(row) + ("" if row.get("shipped", True) else " (artifact not in models/)")
            ax.scatter(
                x_of(row),
                row["accuracy"] * 100,
                s=70,
                marker=markers[index % len(markers)],
                color=f"C{index % 10}",
                facecolors=f"C{index % 10}" if on_front else "none",
                linewidths=1.5,
                label=name + (" - on the front" if on_front else ""),
            )
        ax.set_xscale("log")
        # Plain numbers: matplotlib's 2x10^2-style minor labels collide on a short log axis.
        ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel(x_label)
        ax.grid(True, alpha=0.3)
    axes[0].set_ylabel("test accuracy (%)")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(4, len(labels)), fontsize=8, frameon=False)
    threads = rows[0]["threads"] if rows else 1
    fig.suptitle(
        f"Accuracy against size and latency, {threads} thread (filled: on the front, where no other model is "
        "more accurate, smaller and faster at once)",
        fontsize=10,
    )
    fig.tight_layout(rect=(0, 0.14 if len(labels) > 4 else 0.08, 1, 1))
    with atomic_path(Path(path)) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)

"""What a report reads besides its target: the runs a record names, their curves, and the images scored."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from edge_fm.data.reference import model_test_split
from edge_fm.export.bundles import DESCRIPTION_FILE, is_run, read_description
from edge_fm.io import read_json
from edge_fm.show import figures


class Scored(NamedTuple):
    """Images a model is scored on, their labels, what they are, and the name of each class."""

    images: np.ndarray
    labels: np.ndarray
    what: str
    class_names: tuple[str, ...]


def data_uri(png: bytes) -> str:
    """A PNG as a ``data:`` URI, so the page carries its own images."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def float_ancestor(run):
    """The nearest run of the lineage that is not quantization-aware: the float Keras model's run."""
    from edge_fm.train.runs import Run

    for link in run.lineage() or [{"run": str(run.path)}]:
        found = Run(link["run"]) if is_run(link["run"]) else None
        if found is not None and not found.quantization_aware and found.model_path.is_file():
            return found
    return None


def exported_artifact(run):
    """An int8 bundle exported from ``run``, found beside it, as ``(path, format, model)``; else None."""
    from edge_fm.show.predict import load_artifact

    for folder in sorted(path.parent for path in run.path.parent.glob(f"*/{DESCRIPTION_FILE}")):
        description = read_description(folder)
        source = Path(str(description.get("source", {}).get("run", "")))
        if source.name == run.path.name and "int8" in str(description.get("format")):
            return folder, description["format"], load_artifact(folder)[0]
    return None


def scored_images(run, options, description: dict[str, Any] | None = None) -> Scored:
    """The test images a bundle is scored on: its run's test split, else its recorded dataset's, else
    Fashion-MNIST's or the sample's (``options``: the report's :class:`ReportOptions`)."""
    if run is not None and not options.sample:
        dataset = run.dataset(options.data_dir, data=options.data)
        images, labels = bounded(dataset.x_test, dataset.y_test, options.max_images)
        return Scored(
            images, labels, f"{len(labels):,} test images of {dataset.describe()}", dataset.class_names
        )
    split = model_test_split(description, options.data, options.data_dir, options.sample)
    split = split.first(options.max_images)
    what = (
        "the embedded sample's test images (not the Fashion-MNIST test set)"
        if split.sample
        else ("the Fashion-MNIST test split" if split.record is None else f"the {split.name}")
    )
    return Scored(split.images, split.labels, f"{len(split.labels):,} images of {what}", split.class_names)


def bounded(images: np.ndarray, labels: np.ndarray, limit: int) -> tuple[np.ndarray, np.ndarray]:
    """The first ``limit`` images and labels."""
    return images[:limit], labels[:limit]


def curves(run) -> list[dict[str, str]]:
    history_path = run.path / "history.json"
    if not history_path.is_file():
        return []
    history = read_json(history_path)
    if not history:
        return []
    return [
        {
            "title": f"{run.path.name} ({run.stage})",
            "png": data_uri(figures.training_curves(history, f"{run.path.name}: {run.stage}")),
        }
    ]


def curves_of_lineage(run) -> list[dict[str, str]]:
    """Curves of every run of the lineage, the first training first."""
    from edge_fm.train.runs import Run

    if run is None:
        return []
    runs = [Run(link["run"]) for link in reversed(run.lineage()) if is_run(link["run"])]
    return [curve for each in (runs or [run]) for curve in curves(each)]

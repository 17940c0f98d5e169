"""The models the web demo serves: loaded through LiteRT, with their measured figures, their input
policy and the test images the page offers.

Every model of one demo classifies the same data: Fashion-MNIST, or the one dataset their bundles
name (see :mod:`edge_fm.data.reference`); the page reads an image once, as those models take it.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np

from edge_fm.bench.measurements import (
    bench_rows,
    bundle_name,
    bundle_row,
    bundles_in,
    folder_rows,
    read_bench,
)
from edge_fm.data.reference import model_test_split, same_data
from edge_fm.errors import EdgeFMError
from edge_fm.export.bundles import MODEL_FILE, kind_of
from edge_fm.export.luma import GREY_WEIGHTS
from edge_fm.show.explain import occlusion_map


class ServedModel:
    """One .tflite model and what was measured of it; safe to call from several request threads."""

    def __init__(self, path: Path, row: dict[str, Any]):
        from edge_fm.show.predict import load_described, policy_of

        self.path, self.row = path, row
        self.name = row.get("model") or path.parent.name
        self.model, self.labels, self.description = load_described(path)
        self.policy = policy_of(self.description)
        self.channels = int(self.model.input["shape"][-1])
        # A TFLite interpreter holds its tensors between set and get: one request at a time each.
        self._lock = threading.Lock()

    def answer(self, pixels: np.ndarray) -> np.ndarray:
        """The class probabilities of one uint8 image ``(height, width[, channels])``."""
        with self._lock:
            return np.asarray(self.model.predict_proba(self.fitted(pixels)[None]))[0]

    def occlusion(self, pixels: np.ndarray, class_index: int) -> np.ndarray:
        """Occlusion sensitivity of one image for one class (see :func:`edge_fm.show.explain.occlusion_map`)."""
        with self._lock:
            return occlusion_map(self.model, self.fitted(pixels), class_index)

    def fitted(self, pixels: np.ndarray) -> np.ndarray:
        """The image with this model's channels: grey repeated for an RGB input, RGB as its luma for a grey one."""
        pixels = np.asarray(pixels, dtype=np.uint8)
        pixels = pixels if pixels.ndim == 3 else pixels[..., None]
        if pixels.shape[-1] == self.channels:
            return pixels
        if self.channels == 3:
            return np.repeat(pixels, 3, axis=-1)
        luma = pixels.astype(np.float64) @ np.asarray(GREY_WEIGHTS, np.float64)
        return np.clip(np.round(luma), 0, 255).astype(np.uint8)[..., None]


def load_models(path: Path | str, bench: Path | str | None = None) -> list[ServedModel]:
    """The models of a bundle, a .tflite file or a folder of bundles, with their measured figures.

    Raises:
        EdgeFMError: Nothing loadable there, or models of different datasets.
    """
    models = _load_models(Path(path), bench)
    same_data([model.description for model in models])  # one page reads an image one way
    return models


def _load_models(path: Path, bench: Path | str | None) -> list[ServedModel]:
    if path.name == MODEL_FILE and path.is_file():
        path = path.parent  # a bundle's own file: the bundle, with its card
    if path.is_file():  # a bare .tflite: nothing measured beside it but its size
        return [ServedModel(path, {"model": path.stem, "bytes": path.stat().st_size})]
    if kind_of(path) == "bundle":
        return [ServedModel(path / MODEL_FILE, bundle_row(path, _bench_row(bench, path.name)))]
    if kind_of(path) == "run":
        raise EdgeFMError(
            f"{path} is a run, not an export: `edge-fm export {path} -f int8` makes one to serve."
        )
    if not path.is_dir() or not bundles_in(path):
        what = "does not exist" if not path.exists() else "holds no bundle (folders with a model.tflite)"
        raise EdgeFMError(
            f"{path} {what}: pass a bundle made by `edge-fm export`, a .tflite file or a folder of "
            "bundles such as models/."
        )
    rows, _ = folder_rows(path, bench)
    return [ServedModel(Path(row["path"]), row) for row in rows]


def _bench_row(bench: Path | str | None, name: str) -> dict[str, Any] | None:
    if bench is None:
        return None
    return next((row for row in bench_rows(read_bench(bench)) if bundle_name(row) == name), None)


def example_images(
    count: int = 10, models: list[ServedModel] | None = None, data: str | Path | None = None
) -> list[tuple[str, np.ndarray]]:
    """One test image per class, as ``(class name, pixels)``: the embedded sample's for Fashion-MNIST
    models, else the first of each class in the models' own test split (``data``: where their data is)."""
    first = models[0] if models else None
    sample = first is None or first.policy.garment
    split = model_test_split(
        first.description if first else None,
        data,
        sample=sample and data is None,
        what=first.name if first else "the model",
        labels=first.labels if first else None,
    )
    images, labels = split.images, split.labels
    shown = [c for c in range(len(split.class_names)) if np.any(labels == c)][:count]
    return [(split.class_names[c], _as_seen(images[np.flatnonzero(labels == c)[0]])) for c in shown]


def _as_seen(pixels: np.ndarray) -> np.ndarray:
    """``(height, width)`` for a grey image (as the page stores it), ``(height, width, 3)`` for RGB."""
    return pixels[..., 0] if pixels.ndim == 3 and pixels.shape[-1] == 1 else pixels


def input_shape(models: list[ServedModel]) -> tuple[int, ...]:
    """The shape of the image the page keeps: ``(height, width)`` grey, or ``(height, width, 3)``."""
    policy = models[0].policy
    return (*policy.size, 3) if policy.channels == 3 and not policy.garment else tuple(policy.size)

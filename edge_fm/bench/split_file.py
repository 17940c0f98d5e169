"""The test set a benchmark hands its target: Fashion-MNIST's test split (or the embedded sample) as a compact .npz."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def split_for_targets(
    targets: list[Any], path: Path, data_dir: Path | str | None, sample: bool
) -> dict[str, Any]:
    """The test set the targets read, written to ``path``; none when no target reads images (an estimate)."""
    if any(getattr(target, "needs_test_set", True) for target in targets):
        return write_test_set(path, data_dir, sample)
    return {"source": "none (an estimate needs no images)", "images": 0, "sample": False}


def write_test_set(path: Path, data_dir: Path | str | None = None, sample: bool = False) -> dict[str, Any]:
    """Writes the test images and labels as a compact .npz for the runner and describes them."""
    from edge_fm.data import datasets as data

    source = data.SAMPLE_DIR if sample else data_dir
    images, labels = data.load_split("test", source)
    np.savez_compressed(
        path, images=images.reshape(-1, 28, 28).astype(np.uint8), labels=labels.astype(np.uint8)
    )
    what = (
        f"embedded sample test images ({len(labels)}); NOT the Fashion-MNIST test set"
        if sample
        else f"Fashion-MNIST test split ({len(labels)} images)"
    )
    return {
        "source": what,
        "images": int(len(labels)),
        "sample": sample,
        "sha256": data.split_sha256(images, labels),
    }

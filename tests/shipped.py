"""The shipped models' folders as the tests see them.

A mobile form kept as its record (``kept_as_record`` in its ``model.json``,
:mod:`edge_fm.export.recorded_forms`) has no ``model.tflite`` in a fresh clone until the command in
its record makes it, so the tests that load every stored form leave it to its own test.
"""

import json
from pathlib import Path

from edge_fm.export.recorded_forms import kept_entry

REPO = Path(__file__).resolve().parents[1]
MODELS = REPO / "models"


def _mobile_forms() -> list[Path]:
    return sorted(folder for folder in MODELS.glob("*/mobile") if (folder / "model.json").is_file())


def record_only_forms() -> set[Path]:
    """Form folders kept as their record: the repository does not store their ``model.tflite``."""
    return {
        folder for folder in _mobile_forms() if kept_entry(json.loads((folder / "model.json").read_text()))
    }


def stored_mobile_forms() -> list[Path]:
    """Shipped models' ``mobile/`` folders that hold their ``model.tflite`` in the repository."""
    kept_as_record = record_only_forms()
    return [folder for folder in _mobile_forms() if folder not in kept_as_record]

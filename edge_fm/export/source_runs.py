"""Which run an exported artifact came from, when this machine has that very run.

A bundle's ``model.json`` names its run by the path it had where the bundle was made (a shipped model's:
on the machine that trained it). These functions find that run, here or beside the bundle, and accept it
only when its records show it is the one: its model's SHA-256, where ``model.json`` records it; in an
older ``model.json``, the same architecture, data and classes, and made before the bundle.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edge_fm.errors import EdgeFMError
from edge_fm.export.bundles import MODEL_FILE, Bundle, is_run, kind_of
from edge_fm.io import read_json
from edge_fm.train.runs import CONFIG as RUN_CONFIG
from edge_fm.train.runs import MANIFEST, model_sha256, read_manifest, run_places


def training_run_of(path: Path | str, option: str) -> str:
    """The training run ``path`` stands for: the path itself, or the run an export bundle was exported from.

    Raises:
        EdgeFMError: A bundle whose run is not recorded or not on this machine (``option`` names what gave it).
    """
    path = Path(path)
    if kind_of(path) != "bundle":
        return str(path)
    parent = read_manifest(path).get("parent") if (path / MANIFEST).is_file() else None
    if (
        not parent
        or kind_of(parent) != "run"
        or not _made_from(path / MODEL_FILE, Bundle.open(path).description, Path(parent))
    ):
        raise EdgeFMError(
            f"{option} {path} is an export bundle whose run ({parent or 'not recorded'}) is not here: "
            "pass the training run directory it was exported from."
        )
    return parent


def recorded_run(recorded: str | None, near: Path | None = None, is_it: Callable[[Path], bool] | None = None):
    """The run a record names, looked for where :func:`edge_fm.train.runs.run_places` says; with ``is_it``,
    only a run it accepts. None when no such run is here."""
    if not recorded:
        return None
    for place in run_places(recorded, near):
        if is_run(place) and (is_it is None or is_it(place)):
            from edge_fm.train.runs import Run  # loads TensorFlow: only when there is a run to read

            return Run(place)
    return None


def source_run(artifact: Path, description: dict[str, Any], near: Path | None = None):
    """The run an exported artifact came from, when this machine has that very run; else None.

    A description names its run by the path it had where the artifact was made (a shipped model's,
    on the machine that trained it), so a run found there, or by name beside ``near``, counts only if
    it trained on the data the description records, with its classes, before the artifact was made:
    a run of the same name trained since, or on other data, is another model.
    """
    recorded = (description.get("source") or {}).get("run")
    return recorded_run(recorded, near, lambda place: _made_from(artifact, description, place))


def _made_from(artifact: Path, description: dict[str, Any], run_dir: Path) -> bool:
    """Whether the artifact described was exported from the run at ``run_dir``: the run's model when the
    description records its hash; for a description without one, the same architecture, data and
    classes, and the run made before the bundle (when both say when)."""
    try:
        run, config = read_manifest(run_dir), read_json(run_dir / RUN_CONFIG)
    except EdgeFMError:  # a run without a readable record cannot be shown to be the one
        return False
    model_hash = (description.get("source") or {}).get("model_sha256")
    if model_hash:
        return model_sha256(run) == model_hash
    arch = description.get("architecture")
    if arch is not None and (config.get("fine_tune") or config).get("arch") != arch:
        return False
    data = run.get("data") or {}
    recorded = (description.get("source") or {}).get("data")
    if recorded is not None and data.get("description") != recorded:
        return False
    classes = (data.get("identity") or {}).get("class_names")
    if classes and description.get("labels") and list(classes) != list(description["labels"]):
        return False
    return _made_before(run.get("created"), artifact)


def _made_before(run_created: str | None, artifact: Path) -> bool:
    """Whether a run created at ``run_created`` precedes the bundle of ``artifact`` (True when either
    time is unknown: a bare file, or a record without one)."""
    if artifact.name != MODEL_FILE or not artifact.with_name(MANIFEST).is_file():
        return True
    try:
        made = read_manifest(artifact.parent).get("created")
        return not (made and run_created) or _moment(run_created) <= _moment(made)
    except (EdgeFMError, ValueError, TypeError):
        return True


def _moment(stamp: str) -> datetime.datetime:
    return datetime.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S%z")

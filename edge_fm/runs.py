"""Run directories (never overwritten) and their manifests."""

from __future__ import annotations

import importlib.metadata
import platform
import time
from pathlib import Path
from typing import Any

from edge_fm.errors import EdgeFMError
from edge_fm.io import read_json, sha256_file, write_json

MANIFEST = "manifest.json"
CONFIG = "config.json"
_VERSIONED = ("edge-fm", "tensorflow", "tf-keras", "tensorflow-model-optimization", "ai-edge-litert", "numpy")


def new_run_dir(root: Path | str, name: str) -> Path:
    """Creates ``root/name-N`` with the first free N (1, 2, ...) and returns it.

    ``mkdir`` without ``exist_ok`` makes the claim atomic, so two runs started together never
    share a directory.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    n = 1 + max((_suffix(p.name, name) for p in root.glob(f"{name}-*")), default=0)
    while True:
        candidate = root / f"{name}-{n}"
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            n += 1


def _suffix(dirname: str, name: str) -> int:
    tail = dirname[len(name) + 1 :]
    return int(tail) if tail.isdigit() else 0


def library_versions() -> dict[str, str]:
    """Versions of Python and the libraries that shape an artifact."""
    versions = {"python": platform.python_version()}
    for dist in _VERSIONED:
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[dist] = "not installed"
    return versions


def write_manifest(run_dir: Path, stage: str, parent: str | None = None, **extra: Any) -> dict:
    """Writes ``manifest.json``: every file of the run with its bytes and SHA-256, and its lineage.

    Args:
        run_dir: The run directory.
        stage: The stage that produced the run (``train``, ``optimize``, ``export``...).
        parent: The run this one was derived from, if any.
        **extra: More fields to record (e.g. the data used).

    Returns:
        The manifest written.
    """
    run_dir = Path(run_dir)
    files = {}
    for path in sorted(p for p in run_dir.rglob("*") if p.is_file()):
        rel = path.relative_to(run_dir).as_posix()
        if rel == MANIFEST or path.name.startswith(".tmp-"):
            continue
        files[rel] = {"bytes": path.stat().st_size, "sha256": sha256_file(path)}
    manifest = {
        "run": run_dir.name,
        "stage": stage,
        "parent": parent,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "versions": library_versions(),
        **extra,
        "files": files,
    }
    write_json(run_dir / MANIFEST, manifest)
    return manifest


def require_run(run_dir: Path | str) -> Path:
    """Checks that ``run_dir`` is a run directory (it has a config.json).

    Raises:
        EdgeFMError: The directory does not exist or is not a run.
    """
    run_dir = Path(run_dir)
    if not (run_dir / CONFIG).is_file():
        what = "does not exist" if not run_dir.exists() else "has no config.json"
        raise EdgeFMError(f"{run_dir} {what}: pass a run directory made by `edge-fm train` (e.g. runs/cnn-2conv-train-1).")
    return run_dir


def read_manifest(run_dir: Path) -> dict:
    """Reads a run's manifest."""
    return read_json(Path(run_dir) / MANIFEST)

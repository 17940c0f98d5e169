"""Artifact folders: what kind of folder a path is, and the one reader and writer of bundles.

A bundle is the folder an export writes and a user ships: ``model.tflite`` (the artifact),
``labels.txt`` (class names in output order), ``model.json`` (its description: everything an app
needs to call the model) and ``manifest.json`` (every file with its bytes and SHA-256, and what
made it). This module alone knows those names; every reader opens a bundle with
:meth:`Bundle.open`, every writer writes one with :func:`write_bundle`, and whoever must tell a
run from a bundle, a pipeline, a catalog of shipped models or a bench result asks :func:`kind_of`.
The stand-alone device runner (``edge_fm/runner.py``) keeps its own copy of the two names it reads.

Example:
    >>> bundle = Bundle.open("models/edge-cnn-tiny")  # doctest: +SKIP
    >>> bundle.name, bundle.labels[0], bundle.input["dtype"]  # doctest: +SKIP
    ('edge-cnn-tiny-int8', 'T-shirt/top', 'int8')
"""

from __future__ import annotations

import dataclasses
import functools
import gzip
import hashlib
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edge_fm.errors import EdgeFMError
from edge_fm.io import check_output_dir, make_dirs, read_json, unwritable, write_bytes_atomic, write_json
from edge_fm.records import check_fields, check_labels
from edge_fm.swap import TEMPORARY_PREFIX
from edge_fm.train.runs import CONFIG as RUN_CONFIG
from edge_fm.train.runs import new_run_dir, read_manifest, write_manifest

MODEL_FILE = "model.tflite"
LABELS_FILE = "labels.txt"
DESCRIPTION_FILE = "model.json"
FIRMWARE_FOLDER = "firmware"  # where an MCU bundle keeps its firmware sources
# The description's fields and their types (see :func:`edge_fm.records.check_fields`); any may be absent.
DESCRIPTION_FIELDS = {
    "name": "str",
    "architecture": "str",
    "format": "str",
    "quantization": "str",
    "target": "str",
    "labels": "labels",
    "input": "dict",
    "input.shape": "list[int]",
    "input.dtype": "str",
    "input.scale": "number",
    "input.zero_point": "int",
    "output": "dict",
    "output.shape": "list[int]",
    "output.dtype": "str",
    "output.scale": "number",
    "output.zero_point": "int",
    "source": "dict",
    "export": "dict",
    "artifact": "dict",
    "artifact.bytes": "int",
    "artifact.sha256": "str",
    "mobile": "dict",
    "mcu": "dict",
}
PIPELINE_FILE = "pipeline.json"  # the record of a pipeline run, at its top
BENCH_FILE = "bench.json"  # a bench result, beside the artifacts it measured (a pipeline's, a catalog's)
BENCH_TABLE = "bench.csv"  # the same rows as CSV
PROVENANCE_FILE = "provenance.json"  # what produced a shipped model, in its folder
MEASUREMENT_FILE = "measurement.json"  # a shipped model's measured figures, written with its card

KINDS = ("run", "bundle", "pipeline", "catalog", "folder", "tflite", "bench")


def kind_of(path: Path | str) -> str | None:
    """What a path holds, or None when it is none of the kinds.

    Returns:
        ``run`` (a training or optimization run), ``bundle`` (an export bundle or shipped model
        folder), ``pipeline`` (a pipeline run), ``catalog`` (a folder of shipped models with their
        provenance), ``folder`` (another folder of bundles), ``tflite`` (a bare .tflite file) or
        ``bench`` (a bench result JSON).
    """
    path = Path(path)
    if path.is_file():
        return {".tflite": "tflite", ".json": "bench"}.get(path.suffix)
    if not path.is_dir():
        return None
    if (path / PIPELINE_FILE).is_file():
        return "pipeline"
    if (path / MODEL_FILE).is_file():
        return "bundle"
    if (path / RUN_CONFIG).is_file():
        return "run"
    if any(path.glob(f"*/{PROVENANCE_FILE}")):
        return "catalog"
    if any(path.glob(f"*/{MODEL_FILE}")):
        return "folder"
    return None


def is_run(path: Path | str) -> bool:
    """Whether ``path`` is a training or optimization run directory."""
    return kind_of(path) == "run"


def model_file(path: Path | str) -> Path | None:
    """The .tflite file a path names (a bundle's ``model.tflite``, or the file itself), or None."""
    path = Path(path)
    file = path / MODEL_FILE if path.is_dir() else path
    return file if file.is_file() and file.suffix == ".tflite" else None


def artifact_file(path: Path | str) -> Path:
    """The .tflite file a command runs: ``path`` itself, or a bundle's ``model.tflite``.

    Raises:
        EdgeFMError: ``path`` holds no model; the message says what it is instead (a run, a folder of
            models, a shipped model kept as its record alone) and what to pass.
    """
    path = Path(path)
    file = model_file(path)
    if file is not None:
        return file
    kind = kind_of(path)
    if kind == "run":
        raise EdgeFMError(f"{path} is a run, not an export: `edge-fm export {path} -f int8` makes one.")
    if kind in ("pipeline", "catalog", "folder"):
        inside = sorted(p.parent for p in (*path.glob(f"*/{MODEL_FILE}"), *path.glob(f"*/*/{MODEL_FILE}")))
        example = f", e.g. {inside[0]}" if inside else ""
        raise EdgeFMError(f"{path} is a folder of models: pass one of them{example}.")
    if path.is_dir() and (path / DESCRIPTION_FILE).is_file():
        raise EdgeFMError(
            f"{path} holds no {MODEL_FILE} (a shipped model too large to keep has none): pass an artifact "
            "or an export bundle."
        )
    what = "no .tflite model there" if path.exists() else "no such file or folder"
    raise EdgeFMError(f"{path}: {what}; pass a .tflite file or a bundle made by `edge-fm export`.")


def read_labels(path: Path) -> list[str]:
    """The names of a labels file, one a line (blank lines skipped).

    Raises:
        EdgeFMError: The file is not UTF-8 text.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise EdgeFMError(f"{path} is not UTF-8 text: write one class name a line.") from None
    return [line.strip() for line in text.splitlines() if line.strip()]


def labels_bytes(labels: Sequence[str]) -> bytes:
    """A labels file's bytes: one name a line, as the Task APIs and ``labels.txt`` readers take them."""
    return ("\n".join(labels) + "\n").encode()


@dataclasses.dataclass(frozen=True)
class Bundle:
    """An artifact with what describes it: a bundle's ``model.tflite``, or a bare .tflite file.

    Attributes:
        path: The .tflite file.
        description: Its ``model.json`` (a bundle's), else the description edge-fm embedded in the
            file when opened with ``embedded=True``, else empty.
        labels: Class names in output order: ``labels.txt`` beside the file, else those embedded
            in it (``embedded=True``), else the description's; empty when none says.
        has_sidecar: Whether ``description`` is a bundle's ``model.json``.
    """

    path: Path
    description: dict
    labels: tuple[str, ...]
    has_sidecar: bool

    @classmethod
    def open(cls, path: Path | str, embedded: bool = False) -> Bundle:
        """Opens a bundle folder or a .tflite file.

        Args:
            path: A bundle folder (with ``model.tflite``) or a .tflite file.
            embedded: Also read the description and labels edge-fm embeds in the file's metadata,
                used where the bundle's files say nothing (this parses the flatbuffer unless a
                ``model.json`` and a ``labels.txt`` lie beside the file).

        Raises:
            EdgeFMError: No .tflite file there, an unreadable ``model.json``, or (``embedded``, where
                the files beside it do not say all) a file that is not a .tflite model.
        """
        file = model_file(path)
        if file is None:
            raise EdgeFMError(
                f"{path} holds no .tflite model: pass an export bundle (a folder with {MODEL_FILE}) "
                "or a .tflite file."
            )
        sidecar = file.with_name(DESCRIPTION_FILE)
        has_sidecar = file.name == MODEL_FILE and sidecar.is_file()
        description = _read_checked(sidecar) if has_sidecar else {}
        stored = {"description": {}, "labels": []}
        labels_path = file.with_name(LABELS_FILE)
        if embedded and not (has_sidecar and labels_path.is_file()):  # a bundle's own files say all
            from edge_fm.export.tflite_file import read_metadata

            try:
                stored = read_metadata(file.read_bytes())
            except Exception:  # noqa: BLE001 - any parse failure means the same: not a .tflite model
                raise EdgeFMError(
                    f"{file} is not a valid .tflite model: export it again (`edge-fm export RUN -f int8`)."
                ) from None
            if not has_sidecar:  # the file's own description, checked as a model.json is
                description = stored["description"]
                check_fields(description, DESCRIPTION_FIELDS, f"{file} (its embedded description)")
        if labels_path.is_file():
            labels = read_labels(labels_path)
        else:
            described = description.get("labels")
            labels = stored["labels"] or (described if isinstance(described, list) else [])
        return cls(file, description, tuple(labels), has_sidecar)

    def checked_labels(self, fallback: Sequence[str] = ()) -> tuple[str, ...]:
        """The labels, checked against the model: one-line strings, exactly one per output class.

        Args:
            fallback: Names used only where nothing beside or inside the file names the classes
                (a bare .tflite file); an empty or short ``labels.txt`` is an error, not a reason to
                fall back.

        Raises:
            EdgeFMError: Labels that are not one-line strings, or not one per output class.
        """
        from edge_fm.export import tflite_file

        labels_path = self.path.with_name(LABELS_FILE)
        named = labels_path.is_file() or bool(self.labels)
        where = labels_path if labels_path.is_file() else self.path
        labels = check_labels(list(self.labels if named else fallback), f"{where}:")
        graph = tflite_file.read(self.flatbuffer).subgraphs[0]
        classes = int(graph.tensors[graph.outputs[0]].shape[-1])
        if len(labels) != classes:
            raise EdgeFMError(
                f"{where} names {len(labels):,} classes but the model outputs {classes}: give one label per "
                "output class, in output order (one a line in labels.txt), or re-export the bundle."
            )
        return tuple(labels)

    @property
    def folder(self) -> Path | None:
        """The bundle folder, or None for a bare .tflite file."""
        return self.path.parent if self.path.name == MODEL_FILE else None

    @property
    def name(self) -> str:
        """The artifact's name: its description's, else the bundle folder's or the file's."""
        return self.description.get("name") or (self.path.parent.name if self.folder else self.path.stem)

    @property
    def input(self) -> dict[str, Any]:
        """What the model takes (``shape``, ``dtype``, ``scale``...), as ``model.json`` says."""
        return self.description.get("input") or {}

    @property
    def format(self) -> str | None:
        """The export format (``int8``...), when the description names it."""
        return self.description.get("format")

    @functools.cached_property
    def flatbuffer(self) -> bytes:
        """The .tflite file's bytes (read once)."""
        return self.path.read_bytes()


@dataclasses.dataclass(frozen=True)
class Described:
    """What describes an artifact (see :func:`describe`).

    Attributes:
        description: A bundle's ``model.json``, or the description edge-fm embeds in a bare .tflite file
            (which names the model's own dataset); empty for a file without one, or a corrupt bundle's.
        bare: A .tflite file without a bundle's ``model.json`` beside it.
        error: Why a bundle's ``model.json`` cannot be read (a benchmark's rows report it); None when it can.
    """

    description: dict[str, Any]
    bare: bool
    error: str | None = None

    @property
    def format(self) -> str | None:
        named = self.description.get("format")
        return named if isinstance(named, str) else None


def describe(artifact: Path) -> Described:
    """Reads what describes a .tflite file: a bundle's ``model.json``, else the description edge-fm embeds
    in a bare file (the flatbuffer is parsed only then)."""
    if artifact.name == MODEL_FILE and artifact.with_name(DESCRIPTION_FILE).is_file():
        try:
            return Described(read_description(artifact), bare=False)
        except EdgeFMError as exc:
            return Described({}, bare=False, error=str(exc))
    try:
        return Described(Bundle.open(artifact, embedded=True).description, bare=True)
    except EdgeFMError:  # not an edge-fm file, or a bad embedded description: nothing describes it
        return Described({}, bare=True)


def read_description(bundle: Path | str) -> dict[str, Any]:
    """A bundle's ``model.json`` (a folder's, or the one beside its ``model.tflite``).

    Raises:
        EdgeFMError: There is none, or it is not valid JSON.
    """
    bundle = Path(bundle)
    return _read_checked((bundle if bundle.is_dir() else bundle.parent) / DESCRIPTION_FILE)


def _read_checked(path: Path) -> dict[str, Any]:
    """A ``model.json`` read back with its fields' types checked: one line naming a bad one."""
    description = read_json(path)
    check_fields(description, DESCRIPTION_FIELDS, path)
    return description


def write_description(bundle: Path | str, description: dict[str, Any]) -> None:
    """Rewrites a bundle's ``model.json`` (atomically)."""
    write_json(Path(bundle) / DESCRIPTION_FILE, description)


def update_description(bundle: Path | str, description: dict[str, Any]) -> None:
    """Rewrites a finished bundle's ``model.json`` and its ``manifest.json`` entry (lineage kept)."""
    bundle = Path(bundle)
    write_description(bundle, description)
    manifest = read_manifest(bundle)
    extra = {
        key: value
        for key, value in manifest.items()
        if key not in ("run", "stage", "parent", "created", "versions", "files")
    }
    write_manifest(bundle, manifest["stage"], parent=manifest.get("parent"), **extra)


def check_new_folder(out: Path | str) -> Path:
    """Checks, before any work, that a bundle may be written to ``out``: a new folder, or an empty one.

    Raises:
        EdgeFMError: ``out`` holds files, is a file, or cannot be written.
    """
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise EdgeFMError(
            f"--out {out} already exists and is not an empty folder: choose a new folder "
            "(bundles are never overwritten)."
        )
    return check_output_dir(out, "--out")  # made only once the model has passed: a refusal leaves nothing


def new_folder(out: Path | str | None, runs_dir: Path | str, name: str) -> Path:
    """``out`` when given, else a new ``runs_dir/<name>-N`` folder (claimed, never shared)."""
    return Path(out) if out is not None else new_run_dir(runs_dir, name)


def artifact_record(final: bytes, file: str = MODEL_FILE) -> dict[str, Any]:
    """``model.json``'s ``artifact`` entry: the final file's name, bytes, gzip bytes and SHA-256."""
    return {
        "file": file,
        "bytes": len(final),
        "gzip_bytes": len(gzip.compress(final, compresslevel=9, mtime=0)),
        "sha256": hashlib.sha256(final).hexdigest(),
    }


def write_bundle(
    folder: Path | str,
    artifact: bytes,
    description: dict[str, Any],
    labels: Sequence[str],
    manifest: dict[str, Any],
    files: dict[str, bytes] | None = None,
) -> Path:
    """Writes a bundle whole or not at all, and returns its folder.

    The files are written into a temporary folder beside ``folder`` with the manifest, then the
    folder is renamed into place: an error or Ctrl-C leaves nothing under the final name (and an
    empty ``folder`` claimed for the bundle is removed).

    Args:
        folder: The bundle folder: new, or empty (as :func:`edge_fm.train.runs.new_run_dir` claims one).
        artifact: The final .tflite bytes.
        description: ``model.json``; its ``artifact`` entry is set from ``artifact``.
        labels: Class names in output order.
        manifest: The manifest's fields (``stage`` and ``parent``, then any others).
        files: More files of the bundle, by path inside it (e.g. ``firmware/x.h``).

    Raises:
        EdgeFMError: ``folder`` holds files, or cannot be written.
    """
    folder = Path(folder)
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise EdgeFMError(
            f"{folder} already exists and is not an empty folder: bundles are never overwritten."
        )
    make_dirs(folder.parent)
    try:
        staging = Path(tempfile.mkdtemp(prefix=f"{TEMPORARY_PREFIX}{folder.name}-", dir=folder.parent))
    except OSError as exc:  # a folder the checks let through (a read-only mount, /proc) names the bundle
        raise unwritable(folder, "", exc) from None
    try:
        write_bytes_atomic(staging / MODEL_FILE, artifact)
        write_bytes_atomic(staging / LABELS_FILE, labels_bytes(labels))
        for name, content in (files or {}).items():
            write_bytes_atomic(staging / name, content)
        # The sidecar adds what the embedded copy cannot hold: the final file's own size and hash.
        description["artifact"] = artifact_record(artifact)
        write_json(staging / DESCRIPTION_FILE, description)
        write_manifest(staging, name=folder.name, **manifest)
        os.chmod(staging, 0o777 & ~_umask())
        os.replace(staging, folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
        raise
    return folder


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask

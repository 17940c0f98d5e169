"""The one shape of every result file: what was measured, by which command, on which machine.

Every JSON a benchmark or a study writes (``benchmarks/results/``, ``experiments/results/``, and
``edge-fm bench --json``) is an envelope::

    {"schema": "edge-fm/<kind>/1",      what the results are, and the version of their shape
     "command": "python benchmarks/...", the command that wrote the file, to reproduce it
     "environment": {...},              the machine: CPU, cores, OS, Python and library versions
     "results": ...}                    the figures, shaped as the kind says

written by :func:`write_result_file` and read back by :func:`read_result_file`. A file meant for
the repository (``public=True``) holds no absolute or private path: a path on the machine that
measured means nothing to a reader, and a data folder is written as ``DATA_DIR``.

Example:
    >>> write_result_file("benchmarks/results/x.json", "x", {"rows": []}, "python benchmarks/x.py")  # doctest: +SKIP
"""

from __future__ import annotations

import importlib.metadata
import math
import re
from pathlib import Path
from typing import Any

from edge_fm.errors import EdgeFMError
from edge_fm.io import read_json, write_json
from edge_fm.records import InvalidJSONError, check_fields, fields_of

VERSION = 1
_SCHEMA = re.compile(r"^edge-fm/([a-z0-9-]+)/(\d+)$")
FIELDS = ("schema", "command", "environment", "results")
# Strings that name a place on the measuring machine: an absolute path under a user's or the system's
# folders, the developers' shared data folder, or the runs of a long local training.
PRIVATE = re.compile(r"(?:^|[\s=:'\"(])/(?:home|root|work|tmp|Users|mnt|srv|var)/|\.\./shared|runs/long")
_VERSIONED = ("tensorflow", "ai-edge-litert", "numpy")


def schema(kind: str) -> str:
    """``edge-fm/<kind>/1``: the schema string of a kind of results."""
    if not re.fullmatch(r"[a-z0-9-]+", kind):
        raise ValueError(f"result kind {kind!r}: use lower-case letters, digits and hyphens")
    return f"edge-fm/{kind}/{VERSION}"


def kind_of(value: Any) -> str | None:
    """The kind of an envelope (``bench``, ``runner-quality``...), or None when ``value`` is not one."""
    if not isinstance(value, dict) or not isinstance(value.get("schema"), str):
        return None
    match = _SCHEMA.match(value["schema"])
    return match.group(1) if match else None


def environment(**notes: Any) -> dict[str, Any]:
    """This machine as results record it: CPU model and details, cores, OS, Python, library versions.

    The host name is left out (it names a private machine). ``notes`` are added as they are.
    """
    from edge_fm.runner import environment as runner_environment

    found = {key: value for key, value in runner_environment().items() if key != "hostname"}
    for dist in _VERSIONED:
        try:
            found.setdefault(dist.replace("-", "_"), importlib.metadata.version(dist))
        except importlib.metadata.PackageNotFoundError:
            continue
    return {**found, **notes}


def without_host_names(value: Any) -> Any:
    """``value`` with every ``hostname`` entry removed, at any depth."""
    if isinstance(value, dict):
        return {key: without_host_names(item) for key, item in value.items() if key != "hostname"}
    if isinstance(value, list):
        return [without_host_names(item) for item in value]
    return value


def envelope(
    kind: str, results: Any, command: str, environment: dict[str, Any] | None, public: bool = True
) -> dict[str, Any]:
    """The envelope of ``results`` (see the module), without the host name of ``environment``;
    ``public`` refuses private paths in it.

    Raises:
        EdgeFMError: ``public`` and a string of the envelope names a private path.
    """
    # A result file is shared: a machine is told by its CPU, cores and OS, never by its host name (nor
    # are a fleet's devices, whose environments sit in the results).
    value = without_host_names(
        {"schema": schema(kind), "command": command, "environment": environment or {}, "results": results}
    )
    if public:
        found = private_strings(value)
        if found:
            raise EdgeFMError(
                f"the {kind} results hold a path of this machine ({found[0][0]}: {found[0][1]!r}): record paths "
                "relative to the repository, and a data folder as DATA_DIR."
            )
    return value


def write_result_file(
    path: Path | str,
    kind: str,
    results: Any,
    command: str,
    environment: dict[str, Any] | None = None,
    public: bool = True,
) -> Path:
    """Writes ``results`` in the envelope to ``path`` (atomically) and returns the path.

    Args:
        path: The JSON file.
        kind: What the results are (the schema's name, e.g. ``runner-quality``).
        results: The figures (any JSON value).
        command: The command that made them, as a reader would run it.
        environment: The machine (default: :func:`environment` of this one).
        public: Refuse absolute and private paths (files committed to the repository).
    """
    path = Path(path)
    write_json(
        path, envelope(kind, results, command, environment if environment is not None else _here(), public)
    )
    return path


def _here() -> dict[str, Any]:
    return environment()


def read_result_file(path: Path | str, kind: str | None = None) -> dict[str, Any]:
    """An envelope read back and checked (its four fields, and its kind when ``kind`` is given).

    Raises:
        EdgeFMError: Not JSON, not an envelope, or another kind.
    """
    value = read_json(path)
    found = kind_of(value)
    if found is None or not all(field in value for field in FIELDS):
        raise EdgeFMError(
            f"{path} is not an edge-fm result file (no 'schema', 'command', 'environment' and 'results'): "
            "re-create it with the command that made it."
        )
    if kind is not None and found != kind:
        raise EdgeFMError(f"{path} holds {found} results, not {kind} results.")
    if not isinstance(value["environment"], dict) or not isinstance(value["command"], str):
        raise EdgeFMError(f"{path}: 'environment' should be an object and 'command' a string.")
    return value


def flat(value: dict[str, Any]) -> dict[str, Any]:
    """An envelope whose results are an object, as one object: the results with ``command`` and
    ``environment`` beside them (the shape of an ``edge-fm bench`` result in memory)."""
    return {**value["results"], "command": value["command"], "environment": value["environment"]}


def private_strings(value: Any, where: str = "") -> list[tuple[str, str]]:
    """``(field, string)`` for every string in ``value`` that names a private path (see :data:`PRIVATE`)."""
    found: list[tuple[str, str]] = []
    if isinstance(value, str):
        if PRIVATE.search(value):
            found.append((where or "the value", value))
    elif isinstance(value, dict):
        for key, item in value.items():
            found += private_strings(item, f"{where}.{key}" if where else str(key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += private_strings(item, f"{where}[{index}]")
    return found


# The field types of a benchmark row (see :func:`edge_fm.records.check_fields`).
BENCH_ROW_FIELDS = {
    "artifact": "str",
    "path": "str",
    "format": "str",
    "status": "str",
    "threads": "int",
    "bytes": "int",
    "accuracy": "number",
    "latency": "dict",
    "model": "str",
    "error": "str",
}


def check_bench_result(value: Any, path: Path | str) -> dict[str, Any]:
    """A benchmark result (``edge-fm bench --json``), checked and unwrapped from its envelope
    (see :func:`envelope`); any file name.

    Raises:
        EdgeFMError: Not a result, or a field of the wrong type (naming the row).
    """
    if kind_of(value) == "bench" and isinstance(value.get("results"), dict):
        missing = [field for field in ("command", "environment") if field not in value]
        if missing:
            raise InvalidJSONError(
                f"{path} has no {' or '.join(repr(f) for f in missing)}: pass a JSON written by `edge-fm bench --json`."
            )
        check_fields(value, {"command": "str", "environment": "dict"}, path)
        value = flat(value)  # the envelope of every result file; a bare result is an older file
    if not isinstance(value, dict) or not isinstance(value.get("rows"), list):
        raise InvalidJSONError(
            f"{path} is not a benchmark result (no 'rows'): pass a JSON written by `edge-fm bench --json`."
        )
    check_fields(value, fields_of("bench.json"), path)
    for index, row in enumerate(value["rows"]):
        check_fields(row, BENCH_ROW_FIELDS, path, what=f"rows[{index}].")
        if isinstance(row, dict) and row.get("status") == "ok":
            _check_measured_row(row, path, index)
    return value


def _check_measured_row(row: dict[str, Any], path: Path | str, index: int) -> None:
    """A measured row holds what its readers compute with: a name, and finite numbers where it has a
    size, an accuracy or a latency (a timed row also its thread count)."""
    latency = row.get("latency") if isinstance(row.get("latency"), dict) else None
    numbers = {"bytes": row.get("bytes"), "accuracy": row.get("accuracy")}
    if latency is not None:
        numbers.update({"threads": row.get("threads"), "latency.p50_ms": latency.get("p50_ms")})
    problems = (
        [f"its artifact is {row.get('artifact')!r}"] if not isinstance(row.get("artifact"), str) else []
    )
    for field, value in numbers.items():
        finite = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        if not finite and (value is not None or field in ("threads", "latency.p50_ms")):
            problems.append(f"its {field} is {value!r}")
    if problems:
        raise InvalidJSONError(
            f"{path}: rows[{index}] is marked ok but {problems[0]}: pass a JSON written by `edge-fm bench --json`."
        )

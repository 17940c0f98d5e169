"""Checked reading of the JSON and YAML files edge-fm writes and later reads back.

Bundles, runs and results travel between machines and people, so a file read back may be
corrupt, hand-edited or hostile. Every one is parsed here with bounds (file size, nesting depth,
digits of an integer), must have the top-level type of its kind, and the fields its readers use
must have their types. Any problem is one :class:`~edge_fm.errors.EdgeFMError` line that names the
file and the field. A file's kind is known by its name (``manifest.json``, ``provenance.json``, ...; a bundle's
description is checked by its owner, :mod:`edge_fm.export.bundles`);
a benchmark result, whatever its name, is checked by
:func:`edge_fm.result_files.check_bench_result`.

Labels are one-line strings: a label is printed, drawn and compiled into firmware.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from edge_fm.errors import EdgeFMError

MAX_BYTES = 32_000_000  # the largest JSON or YAML file read back (bench results of big sweeps stay far below)
MAX_DEPTH = 64  # nesting levels; edge-fm writes at most 8
MAX_INT_DIGITS = 40  # digits of one integer (byte counts and seeds need at most 20)
MAX_LABEL_CHARS = 200

_FIX = "re-create it with the command that made it."


class InvalidJSONError(EdgeFMError, ValueError):
    """A file that should hold JSON does not; still a ``ValueError``, as ``json``'s own error is,
    for callers that treat a corrupt file as absent.

    Attributes:
        problem: What is wrong with a corrupt file (``PATH is not valid JSON (...)``), for a caller whose
            fix is another than re-making it (a user's own file); None for other errors.
    """

    problem: str | None = None

    @classmethod
    def corrupt(cls, problem: str) -> InvalidJSONError:
        """The error of a corrupt file: ``problem`` with the fix of a file edge-fm made."""
        error = cls(f"{problem}: the file is corrupt; {_FIX}")
        error.problem = problem
        return error


# Field types per kind of file, by dotted path; a field may be absent (older files) or null.
# Types: str, int, number, bool, dict, list, labels (one-line strings), list[int], list[dict].
_SCHEMAS: dict[str, dict[str, str]] = {
    "manifest.json": {
        "run": "str",
        "stage": "str",
        "parent": "str",
        "created": "str",
        "format": "str",
        "target": "str",
        "status": "str",
        "versions": "dict",
        "files": "dict",
    },
    "provenance.json": {
        "name": "str",
        "chosen_format": "str",
        "artifact": "dict",
        "selection": "dict",
        "commands": "dict",
        "train": "dict",
        "qat": "dict",
        "versions": "dict",
    },
    "pipeline.json": {},
    "config.json": {},
    "metrics.json": {},
    "bench.json": {"rows": "list[dict]", "target": "str", "environment": "dict", "test_set": "dict"},
}


def parse_json(text: str, path: Path | str) -> Any:
    """Parses JSON text read from ``path`` within the bounds above, and checks it against its kind.

    Raises:
        EdgeFMError: Not JSON, too deep, an integer too long, or the wrong type for its kind.
    """

    def bounded_int(digits: str) -> int:
        if len(digits.lstrip("-")) > MAX_INT_DIGITS:
            raise _TooLong(
                f"an integer of {len(digits.lstrip('-')):,} digits (at most {MAX_INT_DIGITS} are read)"
            )
        return int(digits)

    try:
        value = json.loads(text, parse_int=bounded_int)
    except _TooLong as exc:
        raise InvalidJSONError.corrupt(f"{path} holds {exc}") from None
    except RecursionError:
        raise InvalidJSONError.corrupt(
            f"{path} is nested too deeply to read (at most {MAX_DEPTH} levels)"
        ) from None
    except (json.JSONDecodeError, ValueError) as exc:
        raise InvalidJSONError.corrupt(f"{path} is not valid JSON ({str(exc).splitlines()[0]})") from None
    check_depth(value, path)
    schema = _SCHEMAS.get(Path(path).name)
    if schema is not None:
        check_fields(value, schema, path)
    return value


class _TooLong(ValueError):
    pass


def check_size(path: Path | str) -> None:
    """Refuses a file above :data:`MAX_BYTES` before it is read.

    Raises:
        EdgeFMError: The file is larger.
    """
    size = Path(path).stat().st_size
    if size > MAX_BYTES:
        raise InvalidJSONError(
            f"{path} is {size / 1e6:.0f} MB, more than the {MAX_BYTES / 1e6:.0f} MB edge-fm reads back "
            f"from such a file: it is not one edge-fm wrote; {_FIX}"
        )


def check_depth(value: Any, path: Path | str) -> None:
    """Refuses values nested deeper than :data:`MAX_DEPTH` (readers walk them recursively)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise InvalidJSONError.corrupt(f"{path} is nested more than {MAX_DEPTH} levels deep")
        if isinstance(item, dict):
            stack.extend((child, depth + 1) for child in item.values())
        elif isinstance(item, list):
            stack.extend((child, depth + 1) for child in item)


def check_fields(value: Any, schema: dict[str, str], path: Path | str, what: str = "") -> None:
    """Checks that ``value`` is an object and that each field of ``schema`` present has its type.

    Raises:
        EdgeFMError: One line naming the file and the first wrong field.
    """
    if not isinstance(value, dict):
        raise InvalidJSONError(
            f"{path}: {what or 'the file'} holds {_kind(value)}, not an object of named fields: "
            f"it is not the file edge-fm wrote; {_FIX}"
        )
    for field, expected in schema.items():
        found, present = value, True
        for part in field.split("."):
            if not isinstance(found, dict) or part not in found:
                present = False
                break
            found = found[part]
        if not present or found is None:
            continue
        problem = _type_problem(found, expected)
        if problem:
            raise InvalidJSONError(f"{path}: field '{what + field}' {problem}; {_FIX}")


def check_labels(labels: Any, where: str) -> list[str]:
    """The class labels, checked: a list of non-empty one-line strings.

    Args:
        labels: What a file holds as its labels.
        where: The file and field, for the message (e.g. ``"bundle/model.json, field 'labels'"``).

    Raises:
        EdgeFMError: Not a list of one-line strings.
    """
    problem = _type_problem(labels, "labels")
    if problem:
        raise EdgeFMError(f"{where} {problem}; re-export the bundle with `edge-fm export`.")
    return list(labels)


def _type_problem(value: Any, expected: str) -> str | None:
    """Why ``value`` is not of type ``expected``, in words; None when it is."""
    simple = {
        "str": (str,),
        "int": (int,),
        "number": (int, float),
        "bool": (bool,),
        "dict": (dict,),
        "list": (list,),
    }
    if expected in simple:
        ok = isinstance(value, simple[expected]) and not (
            expected in ("int", "number") and isinstance(value, bool)
        )
        return None if ok else f"should be {_NAMES[expected]}, not {_kind(value)}"
    if not isinstance(value, list):
        return f"should be a list, not {_kind(value)}"
    item_type = {"labels": "str", "list[int]": "int", "list[dict]": "dict"}[expected]
    for position, item in enumerate(value):
        problem = _type_problem(item, item_type)
        if problem:
            return f"item {position} {problem}"
        if expected == "labels" and not is_label(item):
            return f"item {position} ({item[:40]!r}) is not a label: {LABEL_RULE}"
    return None


LABEL_RULE = f"labels are one-line strings of 1 to {MAX_LABEL_CHARS} printable characters"


def is_label(text: str) -> bool:
    """Whether ``text`` can be a class label: what ``labels.txt`` (a line each) and the cards hold."""
    return bool(text.strip()) and text.isprintable() and len(text) <= MAX_LABEL_CHARS


_NAMES = {
    "str": "a string",
    "int": "an integer",
    "number": "a number",
    "bool": "true or false",
    "dict": "an object",
    "list": "a list",
}


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true or false"
    if isinstance(value, (int, float)):
        return f"the number {value!r}" if len(repr(value)) <= 20 else "a number"
    if isinstance(value, str):
        return f"the string {value[:30]!r}"
    if isinstance(value, list):
        return f"a list of {len(value)}"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def fields_of(name: str) -> dict[str, str]:
    """The field types of the kind of file called ``name`` (``bench.json``, ``manifest.json``, ...)."""
    return _SCHEMAS[name]

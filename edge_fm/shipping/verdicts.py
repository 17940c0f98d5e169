"""A bench result of a folder of shipped models made that folder's own: rows named by model, the rows of
models that cannot be measured here carried over from the previous result, and the folder's targets
(``targets.json``) judged on what was measured.
"""

from __future__ import annotations

import dataclasses
import operator
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edge_fm.io import read_json

TARGETS_FILE = "targets.json"  # a catalog's targets, judged in each benchmark run (see :func:`checks`)
_COMPARE = {"gt": operator.gt, "ge": operator.ge, "lt": operator.lt, "le": operator.le}


@dataclasses.dataclass(frozen=True)
class ShippedModels:
    """A folder of shipped models measured here, as :func:`edge_fm.shipping.catalog.read_shipped` reads it
    (the one place that makes one: its fields agree with each other).

    Attributes:
        folder: The catalog.
        provenances: Model name -> its ``provenance.json``.
        away: Models whose artifact is too large for the folder -> where their export wrote it.
        present: Those of ``away`` whose artifact is on this machine.
        artifacts: What is measured: each shipped artifact in the folder (not its mobile and mcu forms,
            which are not rows), then those of ``present``.
    """

    folder: Path
    provenances: dict[str, dict]
    away: dict[str, Path]
    present: dict[str, Path]
    artifacts: tuple[Path, ...]


def annotate(shipped: ShippedModels, result: dict[str, Any], previous: dict | None) -> dict[str, Any]:
    """Names the rows by model, carries over the rows of models not measurable here, judges the targets
    on the rows at the result's first thread count."""
    threads = result["options"]["threads"][0]
    by_path = {path.resolve(): name for name, path in shipped.present.items()}
    given = {path.resolve(): path for path in shipped.artifacts}
    for row in result["rows"]:
        path = Path(row["path"])
        row["model"] = by_path.get(path.resolve(), path.parent.name)
        # As the folder was named (models/NAME/model.tflite), not where this machine keeps it.
        row["path"] = str(given.get(path.resolve(), path))
        row["shipped"] = row["model"] not in shipped.away
        row["remeasured"] = True
    result["rows"] += carried_rows(previous, sorted(set(shipped.away) - set(shipped.present)))
    for row in result["rows"]:
        provenance = shipped.provenances[row["model"]]
        row["arch"] = provenance["train"]["config"]["arch"]
        row["float_test_accuracy"] = provenance["train"]["metrics"].get("test", {}).get("accuracy")
    ok = [row for row in result["rows"] if row.get("status") == "ok" and row["threads"] == threads]
    result["checks"] = checks(ok, read_targets(shipped.folder))
    return result


_ANNOTATIONS = ("note", "arch", "float_test_accuracy")


def carried_rows(previous: dict | None, names: Sequence[str]) -> list[dict]:
    """The previous rows of models that cannot be measured here, marked with the machine that measured them."""
    if not previous:
        return []
    # Only what the runner measured travels: annotations are recomputed from today's provenance.
    kept = [
        {key: value for key, value in row.items() if key not in _ANNOTATIONS}
        for row in previous.get("rows", [])
        if row.get("model") in names
    ]
    for row in kept:
        row["remeasured"] = False
        row.setdefault("measured_in", previous.get("started"))
        row.setdefault("measured_on", previous.get("environment", {}))
    return kept


def _met(measured, target, passes) -> bool | None:
    """``passes(measured, target)``, or None when either side was not measured."""
    return None if measured is None or target is None else bool(passes(measured, target))


def read_targets(models_dir: Path | str) -> dict[str, Any]:
    """A catalog's targets (its ``targets.json``); none when it has no such file."""
    path = Path(models_dir) / TARGETS_FILE
    return read_json(path) if path.is_file() else {}


def checks(rows: Sequence[dict], targets: dict[str, Any]) -> list[dict]:
    """Every target of a catalog (see :func:`read_targets`) against what one benchmark run measured.

    ``accuracy`` targets are minimum test accuracies; each ``relative`` target compares a model's
    measure (``accuracy``, ``bytes`` or ``p50``) with a fixed ``value``, or with the largest measure
    among the models named in ``of`` (times ``factor``). A target whose inputs are missing (a model
    not in the folder, or not remeasured) is ``met: None``.
    """
    by_name = {row["model"]: row for row in rows if row.get("remeasured", True)}

    def value(name: str, key: str):
        row = by_name.get(name)
        return None if row is None else row["latency"]["p50_ms"] if key == "p50" else row[key]

    def check(model: str, what: str, measured, target, passes) -> dict:
        return {
            "model": model,
            "check": what,
            "measured": measured,
            "target": target,
            "met": _met(measured, target, passes),
        }

    out = [
        check(name, "int8 test accuracy", value(name, "accuracy"), target, operator.ge)
        for name, target in targets.get("accuracy", {}).items()
    ]
    for rule in targets.get("relative", []):
        if "value" in rule:
            target = rule["value"]
        else:
            target = max(
                (value(name, rule["measure"]) for name in rule["of"] if name in by_name), default=None
            )
            if target is not None and "factor" in rule:
                target *= rule["factor"]
        measured = value(rule["model"], rule["measure"])
        out.append(check(rule["model"], rule["check"], measured, target, _COMPARE[rule["compare"]]))
    return out

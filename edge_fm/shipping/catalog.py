"""A folder of shipped models (``models/``): benchmark them in one run, judge their targets, and
rewrite their model cards and the accuracy-size-latency plot from what was measured.

A folder is a catalog when its sub-folders hold ``provenance.json`` files (written by
:mod:`edge_fm.shipping.ship`). A model whose artifact is too large to keep in the folder is measured from
where its export wrote it; on a machine without that file its previous row is carried over, marked
``remeasured: false`` with the machine that measured it, and no target is judged on it.
"""

from __future__ import annotations

import dataclasses
import operator
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edge_fm.bench.benchmark import BenchOptions, bench
from edge_fm.bench.measurements import FIGURES, read_bench
from edge_fm.errors import EdgeFMError
from edge_fm.export.bundles import MEASUREMENT_FILE, MODEL_FILE, read_description
from edge_fm.io import read_json, write_bytes_atomic
from edge_fm.result_files import write_result_file
from edge_fm.shipping.card_forms import folder_forms
from edge_fm.shipping.cards import model_card
from edge_fm.shipping.runs_on import runs_on_rows
from edge_fm.shipping.ship import CARD, PROVENANCE
from edge_fm.swap import restore_retired

TARGETS_FILE = "targets.json"  # a catalog's targets, judged in each benchmark run (see :func:`checks`)
_COMPARE = {"gt": operator.gt, "ge": operator.ge, "lt": operator.lt, "le": operator.le}


def is_catalog(path: Path | str) -> bool:
    """True when ``path`` is a folder of shipped models (sub-folders with a provenance record)."""
    path = Path(path)
    return path.is_dir() and any(path.glob(f"*/{PROVENANCE}"))


def read_provenances(models_dir: Path | str) -> dict[str, dict]:
    """Model name -> its ``provenance.json``, for every model of the folder (a model a killed ship
    left as ``.old-NAME`` alone is put back first)."""
    restore_retired(models_dir)
    return {
        p.parent.name: read_json(p)
        for p in sorted(Path(models_dir).glob(f"*/{PROVENANCE}"))
        if not p.parent.name.startswith(".")  # an interrupted ship's .tmp-NAME or .old-NAME
    }


@dataclasses.dataclass(frozen=True)
class ShippedModels:
    """A folder of shipped models measured here: its rows are named by model, a model whose artifact is
    not on this machine keeps its previous row, and the folder's targets are judged.

    Attributes:
        folder: The catalog.
        provenances: Model name -> its ``provenance.json``.
        away: Models whose artifact is too large for the folder -> where their export wrote it.
        present: Those of ``away`` whose artifact is on this machine.
    """

    folder: Path
    provenances: dict[str, dict]
    away: dict[str, Path]
    present: dict[str, Path]

    @classmethod
    def read(cls, folder: Path | str) -> ShippedModels:
        """The catalog at ``folder`` (a folder that also holds other artifacts is refused)."""
        folder = Path(folder)
        _check_only_shipped(folder)
        provenances = read_provenances(folder)
        away = {
            name: Path(p["artifact"].get("exported_to", ""))
            for name, p in provenances.items()
            if not p.get("artifact_shipped", True)
        }
        return cls(folder, provenances, away, {name: path for name, path in away.items() if path.is_file()})

    def artifacts(self) -> list[Path]:
        # The shipped artifact itself: a model folder also holds its mobile and mcu forms, which are not rows.
        in_folder = [
            self.folder / name / MODEL_FILE
            for name, p in self.provenances.items()
            if p.get("artifact_shipped", True)
        ]
        return [*in_folder, *self.present.values()]

    def annotate(self, result: dict[str, Any], previous: dict | None, threads: int) -> dict[str, Any]:
        """Names the rows by model, carries over the rows of models not measurable here, judges the targets
        on the rows at ``threads``."""
        by_path = {path.resolve(): name for name, path in self.present.items()}
        given = {path.resolve(): path for path in self.artifacts()}
        for row in result["rows"]:
            path = Path(row["path"])
            row["model"] = by_path.get(path.resolve(), path.parent.name)
            # As the folder was named (models/NAME/model.tflite), not where this machine keeps it.
            row["path"] = str(given.get(path.resolve(), path))
            row["shipped"] = row["model"] not in self.away
            row["remeasured"] = True
        result["rows"] += carried_rows(previous, sorted(set(self.away) - set(self.present)))
        for row in result["rows"]:
            provenance = self.provenances[row["model"]]
            row["arch"] = provenance["train"]["config"]["arch"]
            row["float_test_accuracy"] = provenance["train"]["metrics"].get("test", {}).get("accuracy")
        ok = [row for row in result["rows"] if row.get("status") == "ok" and row["threads"] == threads]
        result["checks"] = checks(ok, read_targets(self.folder))
        return result


def bench_catalog(
    models_dir: Path | str,
    options: BenchOptions,
    data_dir: Path | str | None = None,
    previous: dict | None = None,
    sample: bool = False,
    data: str | Path | None = None,
) -> dict[str, Any]:
    """Benchmarks every model of a catalog in one run and judges their targets (cards: :func:`refresh_cards`).

    Args:
        models_dir: The catalog.
        options: How to measure (threads, runs...); the targets are judged at the first thread count.
        data_dir: Where the full dataset is.
        previous: An earlier result of this function, whose rows of models that cannot be measured
            here are carried over.
        sample: Score on the embedded sample instead of the test split (for a smoke run).
        data: Where the models' own dataset is, when not where their ``model.json`` says.

    Returns:
        The bench result, its rows named by model, with the targets judged (``checks``).
    """
    if not is_catalog(models_dir):
        raise EdgeFMError(
            f"{models_dir} is not a folder of shipped models (no */{PROVENANCE}): ship models into it with "
            "`edge-fm ship`, or bench its artifacts with `edge-fm bench`."
        )
    return measure([models_dir], "local", options, None, data_dir, sample, previous, data=data)


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


def write_cards(
    models_dir: Path,
    rows: Sequence[dict],
    provenances: dict[str, dict],
    environment: dict,
    test_source: str,
    model_checks: Sequence[dict],
    threads: int,
) -> list[Path]:
    """Rewrites ``MODEL_CARD.md`` of every model with a row at ``threads``.

    A row carried over from an earlier run states that run's machine, and no target is judged on it.

    Returns:
        The cards written.
    """
    written = []
    for row in rows:
        if row["threads"] != threads:
            continue
        name = row["model"]
        description = read_description(models_dir / name)
        judged = () if "measured_on" in row else [c for c in model_checks if c["model"] == name]
        forms = folder_forms(models_dir / name)
        card = model_card(
            name,
            provenances[name],
            description,
            row,
            row.get("measured_on", environment),
            test_source,
            judged,
            forms,
            runs_on_rows(models_dir / name, forms),
        )
        write_bytes_atomic(models_dir / name / CARD, card.encode())
        written.append(models_dir / name / CARD)
    return written


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


def measure(
    paths: Sequence[Path | str],
    target,
    options: BenchOptions,
    baseline: Path | str | None = None,
    data_dir: Path | str | None = None,
    sample: bool = False,
    previous: dict | None = None,
    *,
    command: str = "",
    data: str | Path | None = None,
) -> dict[str, Any]:
    """``edge-fm bench``: ``paths`` measured by :func:`edge_fm.bench.benchmark.bench` on ``target``; a folder
    of shipped models measured here (see :func:`shipped_models`) has its rows annotated by it.

    Args:
        previous: The result this one replaces: a catalog carries over its rows of models that cannot
            be measured here.
        command: The command line, recorded in the result.
    """
    shipped = shipped_models(paths, target, baseline)
    result = bench(
        shipped.artifacts() if shipped else list(paths), target, options, baseline, data_dir, sample, data
    )
    if shipped:
        result = shipped.annotate(result, previous, options.threads[0])
    result["command"] = command
    return result


def shipped_models(paths: Sequence[Path | str], target, baseline: Path | str | None) -> ShippedModels | None:
    """The folder of shipped models ``paths`` names, when it is one measured here without a baseline;
    None for anything else (measured as it is)."""
    if not _measures_shipped_models(paths, target, baseline):
        return None
    return ShippedModels.read(paths[0])


def _measures_shipped_models(paths: Sequence[Path | str], target, baseline: Path | str | None) -> bool:
    """One folder of shipped models, measured here (one local target), without a baseline."""
    local = not isinstance(target, list) and getattr(target, "name", target) == "local"
    return len(paths) == 1 and is_catalog(paths[0]) and local and baseline is None


def check_cards_request(paths: Sequence[Path | str], target, baseline: Path | str | None) -> None:
    """Refuses a request to rewrite model cards from anything but one folder of shipped models measured here.

    Raises:
        EdgeFMError: Several paths, a path that is no catalog, another target, or a baseline.
    """
    if not _measures_shipped_models(paths, target, baseline):
        raise EdgeFMError(
            "--cards rewrites the model cards of one folder of shipped models measured here: "
            "pass only that folder (e.g. models/), with the local target and no --baseline."
        )


def _check_only_shipped(models_dir: Path) -> None:
    """Refuses a folder of shipped models that also holds other artifacts: they would go unmeasured."""
    others = sorted(
        folder.name
        for folder in models_dir.iterdir()
        if folder.is_dir()
        and not folder.name.startswith(".")
        and not (folder / PROVENANCE).is_file()
        and any(folder.rglob("*.tflite"))
    ) + sorted(file.name for file in models_dir.glob("*.tflite"))
    if others:
        raise EdgeFMError(
            f"{models_dir} holds shipped models (with {PROVENANCE}) and other artifacts ({', '.join(others[:4])}"
            f"{', ...' if len(others) > 4 else ''}), which a bench of shipped models would leave out: bench "
            "those on their own, or move them out of the folder."
        )


def refresh_cards(models_dir: Path | str, result: dict[str, Any]) -> list[Path]:
    """Rewrites the model cards of a catalog, and each model's ``measurement.json``, from a bench result
    of :func:`bench_catalog` (just measured, or read back with
    :func:`edge_fm.bench.measurements.read_bench`: the same result gives the same bytes).

    Returns:
        The cards written.
    """
    models_dir = Path(models_dir)
    ok = [row for row in result["rows"] if row.get("status") == "ok"]
    threads = result["options"]["threads"][0]
    environment, test_source = result["environment"], result["test_set"]["source"]
    written = write_cards(
        models_dir, ok, read_provenances(models_dir), environment, test_source, result["checks"], threads
    )
    for row in ok:
        if row["threads"] == threads:
            write_measurement(models_dir / row["model"], row, result)
    return written


def write_measurement(folder: Path, row: dict[str, Any], result: dict[str, Any]) -> Path:
    """A shipped model's measured figures (``measurement.json``), which readers take instead of its card's text."""
    figures = {key: row[key] for key in ("model", "format", "bytes", "sha256", *FIGURES) if key in row}
    figures["test_set"] = result["test_set"].get("source")
    figures["measured"] = row.get("measured_in", result.get("started"))
    environment = {k: v for k, v in row.get("measured_on", result["environment"]).items() if k != "hostname"}
    # Not refused for private paths: a catalog measured under a temporary folder is not a committed one.
    command = result.get("command", "")
    return write_result_file(
        folder / MEASUREMENT_FILE, "measurement", figures, command, environment, public=False
    )


def previous_result(path: Path | str | None) -> dict | None:
    """The bench result a new one will replace (its rows that cannot be remeasured are carried over)."""
    if path is None or not Path(path).is_file():
        return None
    try:
        return read_bench(path)
    except EdgeFMError:  # not a result file: nothing to carry over
        return None

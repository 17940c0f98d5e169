"""What a sweep found: every artifact of every trial, the front, the pick for each constraint.

The sweep folder's ``sweep.json`` and ``sweep.csv`` are written here, with ``front.png`` and the
HTML report of the table.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable

from edge_fm.errors import EdgeFMError
from edge_fm.io import KB, read_json, write_bytes_atomic, write_json
from edge_fm.pipeline.sweep_spec import (
    FRONT_PNG,
    OPTUNA_JOURNAL,
    OPTUNA_STUDY,
    PLOT_ALL_UP_TO,
    REPORT_HTML,
    SWEEP_CSV,
    SWEEP_JSON,
    TRIAL_FILE,
    TRIALS_DIR,
    Constraints,
    SweepSpec,
)

# ---------------------------------------------------------------- the trials' records


def read_trial(trial_dir: Path) -> dict[str, Any] | None:
    """A finished trial's record, or None (not finished, or its file is unreadable)."""
    path = Path(trial_dir) / TRIAL_FILE
    if not path.is_file():
        return None
    try:
        record = read_json(path)
    except (EdgeFMError, ValueError):
        return None
    return record if isinstance(record, dict) and "status" in record else None


def finished_trials(sweep_dir: Path) -> dict[str, dict]:
    """Trial key -> record of each trial with a ``trial.json`` (finished, with its artifacts or its error)."""
    records = {}
    for trial_dir in sorted((Path(sweep_dir) / TRIALS_DIR).glob("*")):
        record = read_trial(trial_dir)
        if record is not None:
            records[trial_dir.name] = record
    return records


def optuna_storage(sweep_dir: Path):
    """The journal storage of the sweep's Optuna study."""
    import optuna

    journal = optuna.storages.journal.JournalFileBackend(str(sweep_dir / OPTUNA_JOURNAL))
    return optuna.storages.JournalStorage(journal)


def optuna_completed(sweep_dir: Path) -> int:
    """Trials of the sweep's Optuna study that finished (with a result or an error) in earlier attempts."""
    import optuna

    if not (sweep_dir / OPTUNA_JOURNAL).is_file():
        return 0
    try:
        study = optuna.load_study(study_name=OPTUNA_STUDY, storage=optuna_storage(sweep_dir))
    except KeyError:  # the journal exists, the study was never created
        return 0
    ended = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL)
    return len(study.get_trials(deepcopy=False, states=ended))


# ---------------------------------------------------------------- the result


CSV_COLUMNS = (
    "trial",
    "arch",
    "settings",
    "prune",
    "qat",
    "format",
    "threads",
    "bytes",
    "accuracy",
    "accuracy_delta",
    "p50_ms",
    "p90_ms",
    "front",
    "status",
    "error",
    "path",
)


def picks(rows: list[dict[str, Any]], constraints: Constraints) -> list[dict[str, Any]]:
    """The artifact that answers each common question under ``constraints`` (None where none qualifies)."""
    ok = [row for row in rows if row.get("status") == "ok"]

    def p50(row):
        return row["latency"]["p50_ms"]

    def choose(question: str, candidates: list[dict], key) -> dict[str, Any]:
        best = min(candidates, key=key) if candidates else None
        return {
            "question": question,
            "model": best["model"] if best else None,
            "artifact": _pick_summary(best) if best else None,
        }

    kb = f"{constraints.max_bytes / KB:g} KB"
    at = f"{constraints.min_accuracy:.0%}"
    accurate = [r for r in ok if r["accuracy"] >= constraints.min_accuracy]
    answers = [
        choose(
            f"most accurate at most {kb}",
            [r for r in ok if r["bytes"] <= constraints.max_bytes],
            lambda r: (-r["accuracy"], r["bytes"], p50(r)),
        ),
        choose(f"fastest at {at} or better", accurate, lambda r: (p50(r), r["bytes"], -r["accuracy"])),
        choose(f"smallest at {at} or better", accurate, lambda r: (r["bytes"], p50(r), -r["accuracy"])),
    ]
    if constraints.max_p50_ms is not None:
        answers.append(
            choose(
                f"most accurate at p50 {constraints.max_p50_ms:g} ms or faster",
                [r for r in ok if p50(r) <= constraints.max_p50_ms],
                lambda r: (-r["accuracy"], r["bytes"], p50(r)),
            )
        )
    return answers


def _pick_summary(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "trial": row["trial"],
        "format": row["format"],
        "accuracy": row["accuracy"],
        "bytes": row["bytes"],
        "p50_ms": row["latency"]["p50_ms"],
        "path": row.get("path"),
    }


def write_summary(
    sweep_dir: Path,
    spec: SweepSpec,
    ray_record: dict | None = None,
    seconds: float = 0.0,
    log: Callable[[str], None] = lambda message: None,
) -> Path:
    """Writes ``sweep.json``, ``sweep.csv``, ``front.png`` and the HTML report from the trials' records."""
    from edge_fm.show.figures import pareto_front, plot_front

    records = finished_trials(sweep_dir)
    expected = len(spec.trial_configs()) if spec.search == "grid" else spec.trials
    # An Optuna search may draw one combination twice (run once): its count is the study's.
    done = len(records) if spec.search == "grid" else optuna_completed(sweep_dir)
    rows = [row for record in records.values() for row in record.get("rows", [])]
    measured = [row for row in rows if row.get("status") == "ok"]
    front = pareto_front(measured)
    for row in rows:
        row["front"] = row["model"] in front
    previous = read_json(sweep_dir / SWEEP_JSON) if (sweep_dir / SWEEP_JSON).is_file() else {}
    first = next((r for r in records.values() if r.get("environment")), {})
    summary = {
        "kind": "edge-fm sweep",
        "target": "local (each trial's machine)" if spec.bench_target == "local" else spec.bench_target,
        "spec": spec.as_dict(),
        "trials": {
            key: {
                k: v for k, v in record.items() if k not in ("rows", "environment", "test_set", "traceback")
            }
            for key, record in records.items()
        },
        "expected_trials": expected,
        "finished_trials": done,
        "complete": done >= expected,
        "environment": first.get("environment") or {},
        "test_set": first.get("test_set") or {},
        "reference": None,
        "front": sorted(front),
        "picks": picks(rows, spec.constraints),
        "rows": sorted(rows, key=lambda r: (r["trial"], str(r.get("format")))),
        "attempts": [
            *previous.get("attempts", []),
            {
                "ray": ray_record,
                "seconds": round(seconds, 1),
                "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            },
        ],
    }
    write_json(sweep_dir / SWEEP_JSON, summary)
    write_bytes_atomic(sweep_dir / SWEEP_CSV, _csv(summary["rows"]).encode())
    if measured:
        drawn = measured if len(measured) <= PLOT_ALL_UP_TO else [r for r in measured if r["model"] in front]
        plot_front(drawn, sweep_dir / FRONT_PNG)
        summary["plot"] = {"file": FRONT_PNG, "artifacts": "all" if drawn is measured else "the front only"}
        write_json(sweep_dir / SWEEP_JSON, summary)
    _html_report(sweep_dir, log)
    return sweep_dir


def _csv(rows: list[dict[str, Any]]) -> str:
    import csv
    import io

    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=CSV_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        flat = {
            **row,
            **(row.get("latency") or {}),
            "settings": json.dumps(row.get("settings", {}), sort_keys=True),
        }
        writer.writerow(flat)
    return text.getvalue()


def _html_report(sweep_dir: Path, log) -> None:
    """The sweep's page through `edge-fm report`, where that module is installed."""
    try:
        from edge_fm.show.html_report import build_report
    except ImportError:
        return
    try:
        log(f"report: {build_report(sweep_dir / SWEEP_JSON, sweep_dir / REPORT_HTML)}")
    except EdgeFMError as exc:  # the sweep's results stand without their page
        log(f"report failed: {exc}")


def read_sweep(sweep_dir: Path | str) -> dict[str, Any]:
    """A finished sweep's ``sweep.json``.

    Raises:
        EdgeFMError: No sweep result in ``sweep_dir``.
    """
    path = Path(sweep_dir) / SWEEP_JSON
    if not path.is_file():
        raise EdgeFMError(f"{sweep_dir} has no {SWEEP_JSON}: run or resume the sweep first.")
    return read_json(path)

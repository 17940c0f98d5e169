"""One trial of a sweep, as a Ray worker runs it: a pipeline run in the trial's folder, claimed so
that two attempts never run the same trial, and its record (``trial.json``) with one row per artifact.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import socket
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from edge_fm.bench.benchmark import ROW_KEYS
from edge_fm.bench.measurements import read_bench
from edge_fm.errors import EdgeFMError
from edge_fm.export.bundles import BENCH_FILE
from edge_fm.io import read_json, write_json
from edge_fm.pipeline.sweep_spec import (
    CLAIM_FILE,
    FAILED_OBJECTIVES,
    TRIAL_FILE,
    TRIALS_DIR,
    SweepSpec,
    TrialConfig,
    spec_from_dict,
)
from edge_fm.pipeline.sweep_summary import (
    read_trial,
)

# ---------------------------------------------------------------- how it runs


def run_trial(
    trial: TrialConfig,
    spec: SweepSpec,
    sweep_dir: Path,
    attempt: str,
    threads: int,
    data_dir: str | None = None,
    notes: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Runs one trial's pipeline in ``sweep_dir/trials/<key>/`` and returns its record.

    A trial already finished (its ``trial.json`` exists) is not run again; a folder left by an
    attempt that was stopped is cleared first. Any failure becomes the record's error.
    """
    trial_dir = Path(sweep_dir) / TRIALS_DIR / trial.key
    done = read_trial(trial_dir)
    if done is not None:
        return {**done, "reused": True}
    if not _claim(trial_dir, attempt):
        return _wait_for(trial_dir)  # the same combination drawn twice at once: one runs, both report
    started = time.time()
    record: dict[str, Any] = {
        "trial": trial.key,
        "config": trial.as_dict(),
        "node": socket.gethostname(),
        "threads": threads,
        **(notes or {}),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    try:
        record.update(_pipeline_record(trial, spec, trial_dir, threads, data_dir))
        record["status"] = "ok"
    except EdgeFMError as exc:
        record.update(status="error", error=str(exc), rows=[error_row(trial, str(exc))])
    except Exception as exc:  # noqa: BLE001 - one failure never aborts a sweep; its traceback is kept
        error = f"{type(exc).__name__}: {exc}"
        record.update(
            status="error", error=error, rows=[error_row(trial, error)], traceback=traceback.format_exc()
        )
    record["seconds"] = round(time.time() - started, 1)
    write_json(trial_dir / TRIAL_FILE, record)
    return record


def _claim(trial_dir: Path, attempt: str) -> bool:
    """Takes the trial folder for this attempt; False when this attempt already runs it."""
    claim = trial_dir / CLAIM_FILE
    if claim.is_file():
        if claim.read_text().strip() == attempt:
            return False
        shutil.rmtree(trial_dir)  # a trial stopped mid-way by an earlier attempt: start it afresh
    trial_dir.mkdir(parents=True, exist_ok=True)
    try:
        with open(claim, "x") as handle:  # exclusive: of two workers, one wins
            handle.write(attempt)
    except FileExistsError:
        return False
    return True


def _wait_for(trial_dir: Path, timeout: float = 24 * 3600) -> dict[str, Any]:
    deadline = time.time() + timeout
    while time.time() < deadline:
        done = read_trial(trial_dir)
        if done is not None:
            return {**done, "reused": True}
        time.sleep(2)
    raise EdgeFMError(f"{trial_dir} did not finish within {timeout:.0f} s.")


def check_trials(spec: SweepSpec) -> None:
    """Builds every trial's pipeline and training config before any trial runs: a sweep in which no
    trial can run (``--prune 1.5``, ``--set epochs=0``) is one line, not a folder of failed trials. A
    sweep in which some can runs them; the others become error rows that say why.

    Raises:
        EdgeFMError: Every trial's configuration is refused (the first one's reason, named).
    """
    from edge_fm.pipeline.pipeline import train_config_of  # TensorFlow loads: the sweep trains anyway

    refusals = []
    for trial in spec.trial_configs():
        try:
            train_config_of(_pipeline_config(trial, spec))
        except EdgeFMError as exc:
            refusals.append(f"trial {trial.key}: {exc}")
            continue
        return  # one trial can run
    if refusals:
        raise EdgeFMError(f"no trial can run; {refusals[0]}")


def _pipeline_config(trial: TrialConfig, spec: SweepSpec):
    from edge_fm.pipeline.pipeline import PipelineConfig

    formats = tuple(f for f in spec.formats if trial.qat or f != "qat-int8")
    if spec.formats and not formats:
        raise EdgeFMError(f"formats {', '.join(spec.formats)}: qat-int8 needs QAT, and this trial has none.")
    return PipelineConfig(
        trial.arch,
        spec.preset,
        spec.sample,
        trial.prune or None,
        trial.qat,
        formats,
        {**spec.data, **{k: list(v) if isinstance(v, tuple) else v for k, v in trial.settings}},
        spec.fine_tune_epochs,
    )


def _pipeline_record(
    trial: TrialConfig, spec: SweepSpec, trial_dir: Path, threads: int, data_dir
) -> dict[str, Any]:
    from edge_fm.pipeline.pipeline import PIPELINE_BENCH, PIPELINE_FILE, run_pipeline

    config = _pipeline_config(trial, spec)
    # Concurrent trials share the machine: each measures with its own cores only.
    options = dataclasses.replace(PIPELINE_BENCH, threads=(spec.bench_threads,), accuracy_threads=threads)
    where = spec.bench_where()
    if (
        where.name != "local"
    ):  # a device measures one trial at a time, or the trials' latencies disturb each other
        where = _OneAtATime(
            where, trial_dir.parent / f".bench-{re.sub(r'[^A-Za-z0-9]+', '-', where.name)}.lock"
        )
    top = run_pipeline(config, where, options, data_dir, trial_dir)
    pipeline = read_json(top / PIPELINE_FILE)
    bench = read_bench(top / BENCH_FILE)
    rows = [_trial_row(trial, row) for row in bench["rows"] if row.get("format") != "keras"]
    return {
        "pipeline": top.name,
        "best": pipeline.get("best"),
        "rows": rows,
        "environment": bench.get("environment"),
        "test_set": bench.get("test_set"),
    }


@dataclasses.dataclass
class _OneAtATime:
    """A bench target that runs one benchmark at a time across the sweep's trials (a lock file beside them)."""

    target: Any
    lock: Path

    @property
    def name(self) -> str:
        return self.target.name

    def check(self) -> None:
        self.target.check()

    def run(self, artifacts, test_set, options):
        import fcntl

        with open(self.lock, "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                return self.target.run(artifacts, test_set, options)
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


_KEPT = (
    *ROW_KEYS,
    "latency",
    "peak_rss_mb",
    "confusion_matrix",
    "status",
    "error",
    "path",
)


def _trial_row(trial: TrialConfig, row: dict[str, Any]) -> dict[str, Any]:
    kept = {key: row[key] for key in _KEPT if key in row}
    if kept.get("path"):
        kept["path"] = str(Path(kept["path"]).resolve())
    return {"model": f"{trial.key}/{row.get('format')}", "trial": trial.key, **_trial_columns(trial), **kept}


def _trial_columns(trial: TrialConfig) -> dict[str, Any]:
    return {"arch": trial.arch, "prune": trial.prune, "qat": trial.qat, "settings": dict(trial.settings)}


def error_row(trial: TrialConfig, error: str) -> dict[str, Any]:
    return {
        "model": f"{trial.key}/-",
        "trial": trial.key,
        **_trial_columns(trial),
        "artifact": trial.key,
        "format": None,
        "status": "error",
        "error": error,
    }


def objectives(record: dict[str, Any]) -> dict[str, float]:
    """What a trial reports to Tune: its best artifact's accuracy, bytes and p50 (see the pipeline's rule)."""
    best = record.get("best") if record.get("status") == "ok" else None
    if not best:
        return dict(FAILED_OBJECTIVES)
    return {
        "accuracy": float(best["accuracy"]),
        "bytes": float(best["bytes"]),
        "p50_ms": float(best["p50_ms"]),
    }


def ray_trainable(
    config: dict[str, Any],
    spec: dict[str, Any],
    sweep_dir: str,
    attempt: str,
    threads: int,
    data_dir: str | None,
) -> dict[str, Any]:
    # In a Ray worker: TensorFlow reads its thread counts once, when it starts, so they are set
    # before anything imports it (importing this module does not).
    tensorflow_loaded = "tensorflow" in sys.modules
    for name in ("TF_NUM_INTRAOP_THREADS", "OMP_NUM_THREADS"):
        os.environ[name] = str(threads)
    os.environ["TF_NUM_INTEROP_THREADS"] = "1"
    trial = TrialConfig.from_dict(config.get("trial", config))
    notes = {
        "tensorflow_threads": {
            "intra_op": threads,
            "inter_op": 1,
            "set_before_tensorflow_started": not tensorflow_loaded,
        }
    }
    record = run_trial(trial, spec_from_dict(spec), Path(sweep_dir), attempt, threads, data_dir, notes)
    return {
        **objectives(record),
        "status": record["status"],
        "trial": trial.key,
        "record": json.dumps(record, default=str),
    }

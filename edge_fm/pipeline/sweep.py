"""``edge-fm sweep``: many pipeline runs (architectures x training options x optimizations) on Ray Tune.

Each trial is one pipeline run (:func:`edge_fm.pipeline.pipeline.run_pipeline`) inside the sweep's folder::

    runs/sweep-N/
        spec.json                   the resolved sweep spec, written before any trial starts
        trials/<trial>/trial.json   one trial's config, status, error and artifact rows
        trials/<trial>/<arch>-pipeline-1/
        tune/                       Ray Tune's own records of each attempt
        sweep.json, sweep.csv       every artifact of every trial, the front and the picks
        front.png                   accuracy against size and latency, the front filled
        report.html                 the HTML report of the sweep's table (when edge-fm report is installed)

Trials run locally on Ray started in-process, or on an existing Ray cluster (``address``). A
sweep that is stopped resumes without redoing a finished trial: a trial is finished when its
``trial.json`` exists, and a resumed sweep only sends Ray the others.

Ray Tune and Optuna are the optional ``cluster`` extra: ``pip install 'edge-fm[cluster]'``.

Example:
    >>> spec = SweepSpec(archs=("tiny-cnn",), settings={"epochs": (1, 2)}, prune=(0.0, 0.5), sample=True)
    >>> sweep_dir = run_sweep(spec)  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import socket
import sys
import time
import traceback
import uuid
from pathlib import Path
from typing import Any, Callable

from edge_fm.errors import EdgeFMError
from edge_fm.export.bundles import BENCH_FILE
from edge_fm.io import read_json, write_json
from edge_fm.pipeline.sweep_spec import (
    CLAIM_FILE,
    FAILED_OBJECTIVES,
    INSTALL_HINT,
    OBJECTIVES,
    OPTUNA_STUDY,
    SPEC_FILE,
    TRIAL_FILE,
    TRIALS_DIR,
    SweepSpec,
    TrialConfig,
    spec_from_dict,
)
from edge_fm.pipeline.sweep_summary import (
    finished_trials,
    optuna_completed,
    optuna_storage,
    read_trial,
    write_summary,
)

# ---------------------------------------------------------------- how it runs


@dataclasses.dataclass(frozen=True)
class RayOptions:
    """Where and how many trials run at once.

    Attributes:
        address: An existing Ray cluster (``host:port`` of its head, or ``auto``); None starts Ray
            in this process, on this machine's cores.
        concurrency: Trials at once (default: every core of the machine or cluster, over ``threads``).
        threads: Cores, and TensorFlow threads, of each trial (default: cores / concurrency).
        retry_errors: On resume, run again the trials that ended in an error.
    """

    address: str | None = None
    concurrency: int | None = None
    threads: int | None = None
    retry_errors: bool = False

    def __post_init__(self) -> None:
        for option, value in (("--concurrency", self.concurrency), ("--threads-per-trial", self.threads)):
            if value is not None and value < 1:
                raise EdgeFMError(f"{option} {value}: give at least 1.")

    def plan(self, cores: int) -> tuple[int, int]:
        """``(concurrency, threads per trial)`` on ``cores``: together they never ask for more cores."""
        if self.concurrency and self.threads:
            return min(self.concurrency, max(1, cores // self.threads)), min(self.threads, cores)
        if self.threads:
            return max(1, cores // self.threads), min(self.threads, cores)
        concurrency = min(self.concurrency or cores, cores)
        return concurrency, max(1, cores // concurrency)


def require_ray() -> None:
    """Raises a one-line error naming the install when Ray Tune is missing."""
    try:
        import ray  # noqa: F401
        from ray import tune  # noqa: F401
    except ImportError:
        raise EdgeFMError(
            f"edge-fm sweep runs on Ray Tune, which is not installed: {INSTALL_HINT}."
        ) from None


def require_optuna() -> None:
    """Raises a one-line error naming the install when Optuna is missing."""
    try:
        import optuna  # noqa: F401
        from ray.tune.search.optuna import OptunaSearch  # noqa: F401
    except ImportError:
        raise EdgeFMError(f"--search optuna needs Optuna: {INSTALL_HINT}.") from None


# ---------------------------------------------------------------- one trial (in a Ray worker)


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
        record.update(status="error", error=str(exc), rows=[_error_row(trial, str(exc))])
    except Exception as exc:  # noqa: BLE001 - one failure never aborts a sweep; its traceback is kept
        error = f"{type(exc).__name__}: {exc}"
        record.update(
            status="error", error=error, rows=[_error_row(trial, error)], traceback=traceback.format_exc()
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


def _pipeline_record(
    trial: TrialConfig, spec: SweepSpec, trial_dir: Path, threads: int, data_dir
) -> dict[str, Any]:
    from edge_fm.pipeline.pipeline import PIPELINE_BENCH, PIPELINE_FILE, PipelineConfig, run_pipeline

    formats = tuple(f for f in spec.formats if trial.qat or f != "qat-int8")
    if spec.formats and not formats:
        raise EdgeFMError(f"formats {', '.join(spec.formats)}: qat-int8 needs QAT, and this trial has none.")
    config = PipelineConfig(
        trial.arch,
        spec.preset,
        spec.sample,
        trial.prune or None,
        trial.qat,
        formats,
        {k: list(v) if isinstance(v, tuple) else v for k, v in trial.settings},
        spec.fine_tune_epochs,
    )
    # Concurrent trials share the machine: each measures with its own cores only.
    options = dataclasses.replace(PIPELINE_BENCH, threads=(spec.bench_threads,), accuracy_threads=threads)
    top = run_pipeline(config, "local", options, data_dir, trial_dir)
    pipeline = read_json(top / PIPELINE_FILE)
    bench = read_json(top / BENCH_FILE)
    rows = [_trial_row(trial, row) for row in bench["rows"] if row.get("format") != "keras"]
    return {
        "pipeline": top.name,
        "best": pipeline.get("best"),
        "rows": rows,
        "environment": bench.get("environment"),
        "test_set": bench.get("test_set"),
    }


_KEPT = (
    "artifact",
    "format",
    "threads",
    "bytes",
    "gzip_bytes",
    "accuracy",
    "accuracy_delta",
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


def _error_row(trial: TrialConfig, error: str) -> dict[str, Any]:
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


def _trainable(
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


# ---------------------------------------------------------------- the sweep (the driver)


def run_sweep(
    spec: SweepSpec,
    runs_dir: Path | str = "runs",
    ray_options: RayOptions = RayOptions(),
    data_dir: Path | str | None = None,
    log: Callable[[str], None] = lambda message: None,
) -> Path:
    """Runs a new sweep in ``runs_dir/sweep-N/`` and returns that folder.

    Raises:
        EdgeFMError: Ray (or Optuna) missing, a bad spec, an unreachable cluster, or missing data.
    """
    from edge_fm.train.runs import new_run_dir

    require_ray()
    if spec.search == "optuna":
        require_optuna()
    sweep_dir = new_run_dir(runs_dir, "sweep").resolve()
    write_json(
        sweep_dir / SPEC_FILE,
        {
            "spec": spec.as_dict(),
            "data_dir": str(Path(data_dir).resolve()) if data_dir else None,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        },
    )
    log(f"sweep folder: {sweep_dir}")
    return _sweep(sweep_dir, spec, ray_options, data_dir, log)


def resume_sweep(
    sweep_dir: Path | str,
    ray_options: RayOptions = RayOptions(),
    constraints: dict | None = None,
    data_dir: Path | str | None = None,
    log: Callable[[str], None] = lambda message: None,
) -> Path:
    """Continues a sweep that was stopped: finished trials are kept, the others run.

    Args:
        sweep_dir: The sweep's folder.
        ray_options: Where and how many trials run at once.
        constraints: Constraints of the picks that replace the saved ones (None values are ignored).
        data_dir: Where the full dataset is (default: where the sweep found it).
        log: Called with each progress line.

    Raises:
        EdgeFMError: ``sweep_dir`` is not a sweep folder, or as :func:`run_sweep`.
    """
    sweep_dir = Path(sweep_dir).resolve()
    if not (sweep_dir / SPEC_FILE).is_file():
        raise EdgeFMError(
            f"{sweep_dir} is not a sweep folder (no {SPEC_FILE}): give a folder made by `edge-fm sweep`."
        )
    saved = read_json(sweep_dir / SPEC_FILE)
    limits = {
        **saved["spec"].get("constraints", {}),
        **{k: v for k, v in (constraints or {}).items() if v is not None},
    }
    spec = spec_from_dict({**saved["spec"], "constraints": limits})
    require_ray()
    if spec.search == "optuna":
        require_optuna()
    return _sweep(sweep_dir, spec, ray_options, data_dir or saved.get("data_dir"), log)


def _sweep(sweep_dir: Path, spec: SweepSpec, ray_options: RayOptions, data_dir, log) -> Path:
    started = time.time()
    if ray_options.retry_errors:
        for key, record in finished_trials(sweep_dir).items():
            if record["status"] != "ok":
                shutil.rmtree(sweep_dir / TRIALS_DIR / key)  # its error row goes; the trial runs again
    finished = finished_trials(sweep_dir)
    if spec.search == "grid":
        pending = [t for t in spec.trial_configs() if t.key not in finished]
        log(f"{len(finished)} trial(s) finished before, {len(pending)} to run")
        to_run = len(pending)
    else:
        pending = []
        to_run = max(0, spec.trials - optuna_completed(sweep_dir))
        log(f"{len(finished)} trial(s) finished before, {to_run} Optuna trial(s) to run")
    ray_record = None
    if to_run:
        ray_record = _tune(sweep_dir, spec, pending, to_run, ray_options, data_dir, log)
    return write_summary(sweep_dir, spec, ray_record, seconds=time.time() - started, log=log)


def _start_ray(address: str | None, log) -> tuple[bool, int]:
    """Starts Ray here or connects to ``address``; returns (started here, the cores it has)."""
    import ray

    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # Tune's console tables: the CLI renders progress itself
    if ray.is_initialized():
        return False, int(ray.cluster_resources().get("CPU", 1))
    common = {"log_to_driver": False, "logging_level": logging.ERROR, "configure_logging": True}
    try:
        if address:
            ray.init(address=address, **common)
        else:
            # "local": a Ray of its own, even where `ray start` ran on this machine before.
            ray.init(address="local", num_cpus=os.cpu_count() or 1, include_dashboard=False, **common)
    except (ConnectionError, RuntimeError) as exc:  # RuntimeError: token authentication on, and no token here
        auth = (
            ""
            if os.environ.get("RAY_AUTH_MODE")
            else (
                "; a cluster with token authentication needs RAY_AUTH_MODE=token and its token in RAY_AUTH_TOKEN "
                "or ~/.ray/auth_token"
            )
        )
        raise EdgeFMError(
            f"cannot connect to the Ray cluster at {address}: {str(exc).splitlines()[0]} "
            f"(is `ray start --head` running there, and is the port right?{auth})."
        ) from None
    cores = int(ray.cluster_resources().get("CPU", 1))
    log(f"ray: {'cluster at ' + address if address else 'started here'}, {cores} CPU(s)")
    return True, cores


def _tune(
    sweep_dir: Path,
    spec: SweepSpec,
    pending: list[TrialConfig],
    to_run: int,
    ray_options: RayOptions,
    data_dir,
    log,
) -> dict[str, Any]:
    import ray
    from ray import tune

    started_here, cores = _start_ray(ray_options.address, log)
    try:
        concurrency, threads = ray_options.plan(cores)
        log(f"{concurrency} trial(s) at once, {threads} thread(s) each")
        attempt = uuid.uuid4().hex
        trainable = tune.with_parameters(
            _trainable,
            spec=spec.as_dict(),
            sweep_dir=str(sweep_dir),
            attempt=attempt,
            threads=threads,
            data_dir=str(Path(data_dir).resolve()) if data_dir else None,
        )
        trainable = tune.with_resources(trainable, {"cpu": threads})
        tune_config, param_space = _search(sweep_dir, spec, pending, to_run, concurrency)
        run_config = tune.RunConfig(
            name=f"attempt-{len(list((sweep_dir / 'tune').glob('attempt-*'))) + 1}",
            storage_path=str(sweep_dir / "tune"),
            verbose=0,
            callbacks=[_record_keeper(sweep_dir, log)],
            failure_config=tune.FailureConfig(max_failures=0, fail_fast=False),
        )
        tuner = tune.Tuner(trainable, param_space=param_space, tune_config=tune_config, run_config=run_config)
        results = tuner.fit()
        _record_crashed(sweep_dir, results, log)
        context = ray.get_runtime_context()
        return {
            "address": ray_options.address or "local",
            "gcs_address": context.gcs_address,
            "cpus": cores,
            "concurrency": concurrency,
            "threads_per_trial": threads,
            "experiment": run_config.name,
            "ray": ray.__version__,
        }
    finally:
        if started_here:
            ray.shutdown()


def _search(sweep_dir: Path, spec: SweepSpec, pending: list[TrialConfig], to_run: int, concurrency: int):
    from ray import tune

    def dirname(trial) -> str:
        config = trial.config.get("trial", trial.config)
        return f"{TrialConfig.from_dict(config).key}-{trial.trial_id}"

    if spec.search == "grid":
        param_space = {"trial": tune.grid_search([t.as_dict() for t in pending])}
        return tune.TuneConfig(max_concurrent_trials=concurrency, trial_dirname_creator=dirname), param_space
    from ray.tune.search.optuna import OptunaSearch

    param_space = {
        "arch": tune.choice(list(spec.archs)),
        "prune": tune.choice(list(spec.prune)),
        "qat": tune.choice(list(spec.qat)),
        "set": {
            k: tune.choice([list(v) if isinstance(v, tuple) else v for v in values])
            for k, values in spec.settings.items()
        },
    }
    searcher = OptunaSearch(
        metric=[m for m, _ in OBJECTIVES],
        mode=[m for _, m in OBJECTIVES],
        seed=spec.seed,
        study_name=OPTUNA_STUDY,
        storage=optuna_storage(sweep_dir),
    )
    config = tune.TuneConfig(
        search_alg=searcher,
        num_samples=to_run,
        max_concurrent_trials=concurrency,
        trial_dirname_creator=dirname,
    )
    return config, param_space


def _record_keeper(sweep_dir: Path, log):
    """A Tune callback (Ray is imported only when a sweep runs)."""
    from ray.tune import Callback

    class RecordKeeper(Callback):
        """In the driver: writes each finished trial's record into the sweep folder (a cluster's
        workers may not share its disk) and reports progress."""

        def __init__(self, sweep_dir: Path, log):
            self.sweep_dir, self.log = sweep_dir, log

        def __getstate__(self):
            # Tune pickles its callbacks with the experiment; the progress callback (a console) stays here.
            return {"sweep_dir": self.sweep_dir}

        def __setstate__(self, state):
            self.sweep_dir, self.log = state["sweep_dir"], lambda message: None

        def on_trial_complete(self, iteration, trials, trial, **info):
            result = trial.last_result or {}
            if "record" not in result:
                return
            record = json.loads(result["record"])
            trial_dir = self.sweep_dir / TRIALS_DIR / record["trial"]
            if read_trial(trial_dir) is None:
                trial_dir.mkdir(parents=True, exist_ok=True)
                write_json(trial_dir / TRIAL_FILE, record)
            self.log(_progress_line(record))

        def on_trial_error(self, iteration, trials, trial, **info):
            self.log(f"trial {trial.trial_id}: its Ray worker failed (recorded as an error row)")

    return RecordKeeper(sweep_dir, log)


def _progress_line(record: dict[str, Any]) -> str:
    if record["status"] != "ok":
        return f"trial {record['trial']}: [error] {record.get('error')}"
    best = record.get("best") or {}
    reused = " (finished before)" if record.get("reused") else ""
    return (
        f"trial {record['trial']}: ok in {record.get('seconds', 0):.0f} s{reused}; best {best.get('format')} "
        f"{best.get('accuracy', 0):.2%}, {best.get('bytes', 0) / 1000:.1f} KB, p50 {best.get('p50_ms', 0):.3f} ms"
    )


def _record_crashed(sweep_dir: Path, results, log) -> None:
    """A trial whose worker died (no record of its own) still gets its error row."""
    for result in results:
        if result.error is None:
            continue
        config = result.config.get("trial", result.config) if result.config else None
        if not config:
            continue
        trial = TrialConfig.from_dict(config)
        trial_dir = sweep_dir / TRIALS_DIR / trial.key
        if read_trial(trial_dir) is not None:
            continue
        error = f"the trial's Ray worker failed: {_last_line(str(result.error))}"
        trial_dir.mkdir(parents=True, exist_ok=True)
        write_json(
            trial_dir / TRIAL_FILE,
            {
                "trial": trial.key,
                "config": trial.as_dict(),
                "status": "error",
                "error": error,
                "rows": [_error_row(trial, error)],
            },
        )
        log(f"trial {trial.key}: [error] {error}")


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no message"

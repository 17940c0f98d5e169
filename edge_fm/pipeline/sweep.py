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
``trial.json`` exists, and a resumed sweep only sends Ray the others. Ray started here keeps its
files in a temporary folder of the sweep's own (:mod:`edge_fm.pipeline.ray_local`): an interrupted
sweep (Ctrl-C, SIGTERM) stops its Ray before it exits, and a resumed one first stops what a killed
run left running and removes that folder.

Ray Tune and Optuna are the optional ``cluster`` extra: ``pip install 'edge-fm[cluster]'``.

Example:
    >>> spec = SweepSpec(archs=("tiny-cnn",), settings={"epochs": (1, 2)}, prune=(0.0, 0.5), sample=True)
    >>> sweep_dir = run_sweep(spec)  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator

# ---------------------------------------------------------------- how it runs
from edge_fm.bench.targets import last_line
from edge_fm.errors import EdgeFMError
from edge_fm.io import KB, read_json, write_json
from edge_fm.pipeline.ray_local import clean_ray_leftovers, interrupted_by_signals, ray_temp_dir
from edge_fm.pipeline.sweep_spec import (
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
from edge_fm.pipeline.sweep_trial import check_trials, error_row, ray_trainable


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
    check_trials(spec)
    sweep_dir = new_run_dir(runs_dir, "sweep").resolve()
    write_json(
        sweep_dir / SPEC_FILE,
        {
            "spec": spec.as_dict(),
            "ray": _placement(ray_options),
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
        ray_options: Where and how many trials run at once; an option left None is the sweep's recorded one.
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
    # Where and how many at once as the sweep was started, each option given now replacing its own.
    given = {key: value for key, value in _placement(ray_options).items() if value is not None}
    ray_options = dataclasses.replace(ray_options, **{**saved.get("ray", {}), **given})
    return _sweep(sweep_dir, spec, ray_options, data_dir or saved.get("data_dir"), log)


def _placement(ray_options: RayOptions) -> dict[str, Any]:
    """The options of where trials run and how many at once (None: chosen by the machine), as recorded."""
    return {
        "address": ray_options.address,
        "concurrency": ray_options.concurrency,
        "threads": ray_options.threads,
    }


def _sweep(sweep_dir: Path, spec: SweepSpec, ray_options: RayOptions, data_dir, log) -> Path:
    started = time.time()
    leftover = ray_temp_dir(sweep_dir)
    if leftover.exists():
        stopped = clean_ray_leftovers(leftover)
        log(
            f"cleared what a killed run of this sweep left: {stopped} Ray process(es) and Ray's temporary folder"
        )
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
        with _ray_session(sweep_dir, ray_options) as temp_dir:
            ray_record = _fit(sweep_dir, spec, pending, to_run, ray_options, data_dir, temp_dir, log)
    return write_summary(sweep_dir, spec, ray_record, seconds=time.time() - started, log=log)


def _start_ray(address: str | None, temp_dir: Path, log) -> int:
    """Starts Ray here (its files in ``temp_dir``) or connects to ``address``; returns the cores it has."""
    import ray

    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # Tune's console tables: the CLI renders progress itself
    if ray.is_initialized():
        return int(ray.cluster_resources().get("CPU", 1))
    common = {"log_to_driver": False, "logging_level": logging.ERROR, "configure_logging": True}
    try:
        if address:
            ray.init(address=address, **common)
        else:
            # "local": a Ray of its own, even where `ray start` ran on this machine before.
            ray.init(
                address="local",
                num_cpus=os.cpu_count() or 1,
                include_dashboard=False,
                _temp_dir=str(temp_dir),
                **common,
            )
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
    return cores


@contextlib.contextmanager
def _ray_session(sweep_dir: Path, ray_options: RayOptions) -> Iterator[Path]:
    """Around the trials: Ray's temp folder for this sweep, and signals that interrupt them."""
    import ray

    temp_dir = ray_temp_dir(sweep_dir)
    ours = not ray.is_initialized()
    with interrupted_by_signals():
        try:
            yield temp_dir
        finally:
            if ours:  # on success, error or interrupt: disconnected, and a Ray started here leaves nothing
                ray.shutdown()
                if ray_options.address is None:
                    clean_ray_leftovers(temp_dir)


def _fit(
    sweep_dir: Path,
    spec: SweepSpec,
    pending: list[TrialConfig],
    to_run: int,
    ray_options: RayOptions,
    data_dir,
    temp_dir: Path,
    log,
) -> dict[str, Any]:
    import ray
    from ray import tune

    cores = _start_ray(ray_options.address, temp_dir, log)
    concurrency, threads = ray_options.plan(cores)
    log(f"{concurrency} trial(s) at once, {threads} thread(s) each")
    attempt = uuid.uuid4().hex
    trainable = tune.with_parameters(
        ray_trainable,
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
        f"{best.get('accuracy', 0):.2%}, {best.get('bytes', 0) / KB:.1f} KB, p50 {best.get('p50_ms', 0):.3f} ms"
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
        error = f"the trial's Ray worker failed: {last_line(str(result.error))}"
        trial_dir.mkdir(parents=True, exist_ok=True)
        write_json(
            trial_dir / TRIAL_FILE,
            {
                "trial": trial.key,
                "config": trial.as_dict(),
                "status": "error",
                "error": error,
                "rows": [error_row(trial, error)],
            },
        )
        log(f"trial {trial.key}: [error] {error}")

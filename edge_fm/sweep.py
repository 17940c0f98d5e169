"""``edge-fm sweep``: many pipeline runs (architectures x training options x optimizations) on Ray Tune.

Each trial is one pipeline run (:func:`edge_fm.pipeline.run_pipeline`) inside the sweep's folder::

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
import hashlib
import itertools
import json
import logging
import os
import re
import shutil
import socket
import sys
import time
import traceback
import uuid
from pathlib import Path
from typing import Any, Callable

from edge_fm.errors import EdgeFMError, unknown_choice
from edge_fm.io import read_json, write_bytes_atomic, write_json

SPEC_FILE = "spec.json"
TRIALS_DIR = "trials"
TRIAL_FILE = "trial.json"
CLAIM_FILE = ".claim"
SWEEP_JSON = "sweep.json"
SWEEP_CSV = "sweep.csv"
FRONT_PNG = "front.png"
REPORT_HTML = "report.html"
SEARCHES = ("grid", "optuna")
INSTALL_HINT = "pip install 'edge-fm[cluster]'"
OPTUNA_STUDY = "edge-fm-sweep"
OPTUNA_JOURNAL = "optuna.journal"
# What Optuna is told about a failed trial: worse than any artifact on every objective.
FAILED_OBJECTIVES = {"accuracy": 0.0, "bytes": 1e12, "p50_ms": 1e9}
OBJECTIVES = (("accuracy", "max"), ("bytes", "min"), ("p50_ms", "min"))
# The front's plot names each artifact in its legend: past this many, only the front is drawn.
PLOT_ALL_UP_TO = 16
_NOT_SWEPT = {"arch": "list architectures with --arch", "data": "use --sample for the embedded sample",
              "arch_options": "architecture options are not swept"}


# ---------------------------------------------------------------- the spec


@dataclasses.dataclass(frozen=True)
class Constraints:
    """The deployment limits the sweep's picks answer (1 KB = 1,000 bytes).

    Attributes:
        max_bytes: "The most accurate artifact at most this size".
        min_accuracy: "The fastest (and the smallest) artifact at this accuracy or better" (0-1).
        max_p50_ms: "The most accurate artifact at this p50 latency or faster", when given.
    """

    max_bytes: int = 100_000
    min_accuracy: float = 0.94
    max_p50_ms: float | None = None

    def __post_init__(self) -> None:
        if self.max_bytes <= 0:
            raise EdgeFMError(f"--max-bytes {self.max_bytes}: give a positive size in bytes, e.g. 100000.")
        if not 0 <= self.min_accuracy <= 1:
            raise EdgeFMError(f"--min-accuracy {self.min_accuracy}: give a fraction between 0 and 1, e.g. 0.94.")
        if self.max_p50_ms is not None and self.max_p50_ms <= 0:
            raise EdgeFMError(f"--max-p50-ms {self.max_p50_ms}: give a positive latency in milliseconds, e.g. 1.5.")


@dataclasses.dataclass(frozen=True)
class SweepSpec:
    """What a sweep tries; saved as ``spec.json`` in the sweep's folder.

    A grid sweep runs every combination of ``archs`` x ``settings`` x ``prune`` x ``qat``; an
    Optuna sweep draws ``trials`` combinations from the same choices, steered towards the front
    of accuracy (up), bytes (down) and p50 latency (down). Option values are checked in each
    trial, so an impossible one becomes that trial's error row and the others go on.

    Attributes:
        archs: Architectures of the zoo.
        settings: Training config field -> the values to try (``--set epochs=1,2``).
        prune: Target sparsities to try; 0 means no pruning step.
        qat: Whether to add a QAT step (and its qat-int8 artifact): (False,), (True,) or both.
        formats: Export formats of every trial (default: the pipeline's); qat-int8 only where QAT ran.
        preset: Training preset.
        sample: Train and score on the embedded sample (figures say so).
        fine_tune_epochs: Epochs of each optimization step (default: the optimize stage's).
        search: ``grid`` or ``optuna`` (multi-objective).
        trials: Trials of an Optuna search, counting those already finished.
        seed: Seed of the Optuna sampler.
        bench_threads: Interpreter threads of each trial's latency measurement.
        constraints: The limits the picks answer.
        bench_target: Where every trial measures latency: ``local`` (the trial's own machine) or
            ``ssh://user@host[:port]`` (the device the model will run on; one trial at a time).
        bench_ssh_key: Private key for an SSH bench target.
        bench_ssh_options: Extra ``ssh -o`` options for it (e.g. ``UserKnownHostsFile=...``).
        bench_python: The Python command on the SSH bench target.
    """

    archs: tuple[str, ...]
    settings: dict = dataclasses.field(default_factory=dict)
    prune: tuple[float, ...] = (0.0,)
    qat: tuple[bool, ...] = (False,)
    formats: tuple[str, ...] = ()
    preset: str = "quick"
    sample: bool = False
    fine_tune_epochs: int | None = None
    search: str = "grid"
    trials: int = 10
    seed: int = 0
    bench_threads: int = 1
    constraints: Constraints = Constraints()
    bench_target: str = "local"
    bench_ssh_key: str | None = None
    bench_ssh_options: tuple[str, ...] = ()
    bench_python: str = "python3"

    def __post_init__(self) -> None:
        from edge_fm.config import TrainConfig
        from edge_fm.export import get_format
        from edge_fm.presets import PRESET_NAMES
        from edge_fm.zoo.registry import get_spec

        archs = tuple(dict.fromkeys(self.archs))
        if not archs:
            raise EdgeFMError("name at least one architecture to sweep, e.g. --arch tiny-cnn,cnn-2conv.")
        for arch in archs:
            get_spec(arch)
        fields = {field.name for field in dataclasses.fields(TrainConfig)}
        settings = {}
        for key, values in dict(self.settings).items():
            if key in _NOT_SWEPT:
                raise EdgeFMError(f"--set {key}: {_NOT_SWEPT[key]}.")
            if key not in fields:
                raise unknown_choice("setting", key, fields)
            values = tuple(values) if isinstance(values, (list, tuple)) else (values,)
            if not values:
                raise EdgeFMError(f"--set {key}: give at least one value.")
            settings[key] = values
        for name in self.formats:
            get_format(name)
        if self.preset not in PRESET_NAMES:
            raise unknown_choice("preset", self.preset, PRESET_NAMES)
        if self.search not in SEARCHES:
            raise unknown_choice("search", self.search, SEARCHES)
        if self.search == "optuna" and self.trials < 1:
            raise EdgeFMError(f"--trials {self.trials}: an Optuna search needs at least 1 trial.")
        if self.bench_threads < 1:
            raise EdgeFMError(f"--bench-threads {self.bench_threads}: give at least 1.")
        if not (self.bench_target == "local" or self.bench_target.startswith("ssh://")):
            raise EdgeFMError(f"--bench-target {self.bench_target}: the sweep ranks by measured latency, so give local or "
                              "ssh://user@host[:port] (tflm and vela: targets do not time a model).")
        self.bench_where()  # a malformed ssh:// address is refused before any trial
        object.__setattr__(self, "bench_ssh_options", tuple(self.bench_ssh_options))
        prune = tuple(dict.fromkeys(_number("--prune", p) for p in self.prune)) or (0.0,)
        qat = tuple(dict.fromkeys(bool(q) for q in self.qat)) or (False,)
        constraints = self.constraints if isinstance(self.constraints, Constraints) else Constraints(**self.constraints)
        for name, value in (("archs", archs), ("settings", settings), ("prune", prune), ("qat", qat),
                            ("formats", tuple(dict.fromkeys(self.formats))), ("constraints", constraints)):
            object.__setattr__(self, name, value)

    def trial_configs(self) -> list[TrialConfig]:
        """Every combination, in a stable order (the grid)."""
        keys = sorted(self.settings)
        combos = itertools.product(self.archs, itertools.product(*(self.settings[k] for k in keys)), self.prune, self.qat)
        return [TrialConfig(arch, tuple(zip(keys, values)), prune, qat) for arch, values, prune, qat in combos]

    def as_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "settings": {k: list(v) for k, v in self.settings.items()}}

    def bench_where(self):
        """The bench target object of :attr:`bench_target` (see ``edge_fm.bench.parse_target``)."""
        from edge_fm.bench import parse_target

        return parse_target(self.bench_target, identity=self.bench_ssh_key, ssh_options=tuple(self.bench_ssh_options),
                            python=self.bench_python)


def _number(option: str, value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise EdgeFMError(f"{option} {value!r}: give a number, e.g. 0.5.") from None


@dataclasses.dataclass(frozen=True)
class TrialConfig:
    """One trial: an architecture, its training settings and its optimizations.

    Attributes:
        arch: Architecture.
        settings: Training config overrides as sorted (field, value) pairs.
        prune: Target sparsity of the pruning step; 0 for none.
        qat: Whether a QAT step runs.
    """

    arch: str
    settings: tuple[tuple[str, Any], ...] = ()
    prune: float = 0.0
    qat: bool = False

    @property
    def key(self) -> str:
        """The trial's folder name: readable, and the same in every attempt of the sweep."""
        parts = [self.arch, *(f"{k}={json.dumps(v, separators=(',', ':'))}" for k, v in self.settings),
                 f"prune={self.prune:g}", "qat" if self.qat else "noqat"]
        slug = re.sub(r"[^A-Za-z0-9._=+-]+", "+", "_".join(parts)).strip("+")
        if len(slug) > 100:
            digest = hashlib.sha256(json.dumps(self.as_dict(), sort_keys=True).encode()).hexdigest()[:8]
            slug = f"{slug[:90]}-{digest}"
        return slug

    def as_dict(self) -> dict[str, Any]:
        return {"arch": self.arch, "set": dict(self.settings), "prune": self.prune, "qat": self.qat}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrialConfig:
        settings = tuple(sorted((k, _hashable(v)) for k, v in (values.get("set") or {}).items()))
        return cls(values["arch"], settings, float(values.get("prune") or 0.0), bool(values.get("qat")))


def _hashable(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def load_spec(path: Path | str, **overrides: Any) -> SweepSpec:
    """Reads a sweep spec from a YAML or JSON file; ``overrides`` (not None) replace its entries.

    The file's keys: ``arch`` (a name or a list), ``set`` (field: value or list of values),
    ``prune``, ``qat`` (true, false or [false, true]), ``formats``, ``preset``, ``sample``,
    ``epochs`` (fine-tuning), ``search``, ``trials``, ``seed``, ``bench_threads`` and
    ``constraints`` (``max_bytes``, ``min_accuracy``, ``max_p50_ms``).

    Example file::

        arch: [tiny-cnn, cnn-2conv]
        set: {epochs: [1, 2]}
        prune: [0, 0.5]
        qat: [false, true]
        sample: true
        constraints: {max_bytes: 100000, min_accuracy: 0.94}

    Raises:
        EdgeFMError: The file is missing or not YAML/JSON, or holds an unknown key or a bad value.
    """
    import yaml

    path = Path(path)
    try:
        values = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise EdgeFMError(f"--spec {path} does not exist: give a YAML or JSON sweep spec (see `edge-fm sweep --help`).") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise EdgeFMError(f"--spec {path} is not a readable YAML or JSON file ({str(exc).splitlines()[0]}).") from None
    if not isinstance(values, dict):
        raise EdgeFMError(f"--spec {path} must hold a mapping of sweep options (arch, set, prune, qat...).")
    return spec_from_dict(values, **overrides)


_FILE_KEYS = {"arch": "archs", "archs": "archs", "set": "settings", "settings": "settings", "prune": "prune",
              "qat": "qat", "formats": "formats", "format": "formats", "preset": "preset", "sample": "sample",
              "epochs": "fine_tune_epochs", "fine_tune_epochs": "fine_tune_epochs", "search": "search",
              "trials": "trials", "seed": "seed", "bench_threads": "bench_threads", "constraints": "constraints",
              "bench_target": "bench_target", "bench_ssh_key": "bench_ssh_key", "bench_ssh_options": "bench_ssh_options", "bench_python": "bench_python"}


def spec_from_dict(values: dict[str, Any], **overrides: Any) -> SweepSpec:
    """A :class:`SweepSpec` from a spec file's mapping (or ``spec.json``), with ``overrides`` applied.

    Raises:
        EdgeFMError: An unknown key (with a close match) or a bad value.
    """
    fields: dict[str, Any] = {}
    for key, value in values.items():
        if key not in _FILE_KEYS:
            raise unknown_choice("sweep spec key", key, _FILE_KEYS)
        fields[_FILE_KEYS[key]] = value
    fields.update({k: v for k, v in overrides.items() if v is not None})
    for name in ("archs", "prune", "qat", "formats"):
        if name in fields and not isinstance(fields[name], (list, tuple)):
            fields[name] = (fields[name],)
    if "constraints" in fields and isinstance(fields["constraints"], dict):
        known = {f.name for f in dataclasses.fields(Constraints)}
        for key in fields["constraints"]:
            if key not in known:
                raise unknown_choice("constraint", key, known)
        fields["constraints"] = Constraints(**fields["constraints"])
    if "archs" not in fields:
        raise EdgeFMError("name at least one architecture to sweep, e.g. --arch tiny-cnn,cnn-2conv.")
    try:
        return SweepSpec(**{k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()})
    except TypeError as exc:  # a value of the wrong shape (a mapping where a list belongs, say)
        raise EdgeFMError(f"bad sweep spec: {exc}.") from None


def parse_settings(pairs: list[str]) -> dict[str, tuple]:
    """``["epochs=1,2", "learning_rate=0.003"]`` -> ``{"epochs": (1, 2), "learning_rate": (0.003,)}``.

    A comma separates the values to try; a field that is itself a list (``augment``) takes its
    alternatives separated by ``|`` instead (``augment=crop,flip|crop``). Repeating a key adds values.

    Raises:
        EdgeFMError: A pair without ``=``, a setting that is not a training field, or bad JSON.
    """
    from edge_fm.config import TrainConfig, parse_value

    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    settings: dict[str, list] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise EdgeFMError(f"--set {pair!r} is not key=value: write e.g. --set epochs=1,2.")
        if key in _NOT_SWEPT:
            raise EdgeFMError(f"--set {key}: {_NOT_SWEPT[key]}.")
        if key not in fields:
            raise unknown_choice("setting", key, fields)
        is_list = "tuple" in str(fields[key].type)
        alternatives = raw.split("|") if is_list else ([raw] if raw.strip()[:1] in "[{" else raw.split(","))
        for text in alternatives:
            value = parse_value(text, tuple_field=is_list, name=f"--set {key}")
            settings.setdefault(key, []).append(_hashable(value))
    return {key: tuple(dict.fromkeys(values)) for key, values in settings.items()}


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
        raise EdgeFMError(f"edge-fm sweep runs on Ray Tune, which is not installed: {INSTALL_HINT}.") from None


def require_optuna() -> None:
    """Raises a one-line error naming the install when Optuna is missing."""
    try:
        import optuna  # noqa: F401
        from ray.tune.search.optuna import OptunaSearch  # noqa: F401
    except ImportError:
        raise EdgeFMError(f"--search optuna needs Optuna: {INSTALL_HINT}.") from None


# ---------------------------------------------------------------- one trial (in a Ray worker)


def run_trial(trial: TrialConfig, spec: SweepSpec, sweep_dir: Path, attempt: str, threads: int,
              data_dir: str | None = None, notes: dict[str, Any] | None = None) -> dict[str, Any]:
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
    record: dict[str, Any] = {"trial": trial.key, "config": trial.as_dict(), "node": socket.gethostname(),
                              "threads": threads, **(notes or {}), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    try:
        record.update(_pipeline_record(trial, spec, trial_dir, threads, data_dir))
        record["status"] = "ok"
    except EdgeFMError as exc:
        record.update(status="error", error=str(exc), rows=[_error_row(trial, str(exc))])
    except Exception as exc:  # noqa: BLE001 - one failure never aborts a sweep; its traceback is kept
        error = f"{type(exc).__name__}: {exc}"
        record.update(status="error", error=error, rows=[_error_row(trial, error)], traceback=traceback.format_exc())
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


def _pipeline_record(trial: TrialConfig, spec: SweepSpec, trial_dir: Path, threads: int, data_dir) -> dict[str, Any]:
    from edge_fm.pipeline import PIPELINE_BENCH, PIPELINE_FILE, PipelineConfig, run_pipeline

    formats = tuple(f for f in spec.formats if trial.qat or f != "qat-int8")
    if spec.formats and not formats:
        raise EdgeFMError(f"formats {', '.join(spec.formats)}: qat-int8 needs QAT, and this trial has none.")
    config = PipelineConfig(trial.arch, spec.preset, spec.sample, trial.prune or None, trial.qat, formats,
                            {k: list(v) if isinstance(v, tuple) else v for k, v in trial.settings},
                            spec.fine_tune_epochs)
    # Concurrent trials share the machine: each measures with its own cores only.
    options = dataclasses.replace(PIPELINE_BENCH, threads=(spec.bench_threads,), accuracy_threads=threads)
    where = spec.bench_where()
    if where.name != "local":  # a device measures one trial at a time, or the trials' latencies disturb each other
        where = _OneAtATime(where, trial_dir.parent / f".bench-{re.sub(r'[^A-Za-z0-9]+', '-', where.name)}.lock")
    top = run_pipeline(config, where, options, data_dir, trial_dir)
    pipeline = read_json(top / PIPELINE_FILE)
    bench = read_json(top / "bench.json")
    rows = [_trial_row(trial, row) for row in bench["rows"] if row.get("format") != "keras"]
    return {"pipeline": top.name, "best": pipeline.get("best"), "rows": rows, "environment": bench.get("environment"),
            "test_set": bench.get("test_set")}


@dataclasses.dataclass
class _OneAtATime:
    """A bench target that runs one benchmark at a time across the sweep's trials (a lock file beside them)."""

    target: Any
    lock: Path

    @property
    def name(self) -> str:
        return self.target.name

    def run(self, artifacts, test_set, options):
        import fcntl

        with open(self.lock, "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                return self.target.run(artifacts, test_set, options)
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


_KEPT = ("artifact", "format", "threads", "bytes", "gzip_bytes", "accuracy", "accuracy_delta", "latency", "peak_rss_mb",
         "confusion_matrix", "status", "error", "path")


def _trial_row(trial: TrialConfig, row: dict[str, Any]) -> dict[str, Any]:
    kept = {key: row[key] for key in _KEPT if key in row}
    if kept.get("path"):
        kept["path"] = str(Path(kept["path"]).resolve())
    return {"model": f"{trial.key}/{row.get('format')}", "trial": trial.key, **_trial_columns(trial), **kept}


def _trial_columns(trial: TrialConfig) -> dict[str, Any]:
    return {"arch": trial.arch, "prune": trial.prune, "qat": trial.qat, "settings": dict(trial.settings)}


def _error_row(trial: TrialConfig, error: str) -> dict[str, Any]:
    return {"model": f"{trial.key}/-", "trial": trial.key, **_trial_columns(trial), "artifact": trial.key,
            "format": None, "status": "error", "error": error}


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


def objectives(record: dict[str, Any]) -> dict[str, float]:
    """What a trial reports to Tune: its best artifact's accuracy, bytes and p50 (see the pipeline's rule)."""
    best = record.get("best") if record.get("status") == "ok" else None
    if not best:
        return dict(FAILED_OBJECTIVES)
    return {"accuracy": float(best["accuracy"]), "bytes": float(best["bytes"]), "p50_ms": float(best["p50_ms"])}


def _trainable(config: dict[str, Any], spec: dict[str, Any], sweep_dir: str, attempt: str, threads: int,
               data_dir: str | None) -> dict[str, Any]:
    # In a Ray worker: TensorFlow reads its thread counts once, when it starts, so they are set
    # before anything imports it (importing this module does not).
    tensorflow_loaded = "tensorflow" in sys.modules
    for name in ("TF_NUM_INTRAOP_THREADS", "OMP_NUM_THREADS"):
        os.environ[name] = str(threads)
    os.environ["TF_NUM_INTEROP_THREADS"] = "1"
    trial = TrialConfig.from_dict(config.get("trial", config))
    notes = {"tensorflow_threads": {"intra_op": threads, "inter_op": 1, "set_before_tensorflow_started": not tensorflow_loaded}}
    record = run_trial(trial, spec_from_dict(spec), Path(sweep_dir), attempt, threads, data_dir, notes)
    return {**objectives(record), "status": record["status"], "trial": trial.key,
            "record": json.dumps(record, default=str)}


# ---------------------------------------------------------------- the sweep (the driver)


def run_sweep(spec: SweepSpec, runs_dir: Path | str = "runs", ray_options: RayOptions = RayOptions(),
              data_dir: Path | str | None = None, log: Callable[[str], None] = lambda message: None) -> Path:
    """Runs a new sweep in ``runs_dir/sweep-N/`` and returns that folder.

    Raises:
        EdgeFMError: Ray (or Optuna) missing, a bad spec, an unreachable cluster, or missing data.
    """
    from edge_fm.runs import new_run_dir

    require_ray()
    if spec.search == "optuna":
        require_optuna()
    sweep_dir = new_run_dir(runs_dir, "sweep").resolve()
    write_json(sweep_dir / SPEC_FILE, {"spec": spec.as_dict(), "data_dir": str(Path(data_dir).resolve()) if data_dir else None,
                                       "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    log(f"sweep folder: {sweep_dir}")
    return _sweep(sweep_dir, spec, ray_options, data_dir, log)


def resume_sweep(sweep_dir: Path | str, ray_options: RayOptions = RayOptions(), constraints: dict | None = None,
                 data_dir: Path | str | None = None, log: Callable[[str], None] = lambda message: None) -> Path:
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
        raise EdgeFMError(f"{sweep_dir} is not a sweep folder (no {SPEC_FILE}): give a folder made by `edge-fm sweep`.")
    saved = read_json(sweep_dir / SPEC_FILE)
    limits = {**saved["spec"].get("constraints", {}), **{k: v for k, v in (constraints or {}).items() if v is not None}}
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
        to_run = max(0, spec.trials - _optuna_completed(sweep_dir))
        log(f"{len(finished)} trial(s) finished before, {to_run} Optuna trial(s) to run")
    ray_record = None
    if to_run:
        ray_record = _tune(sweep_dir, spec, pending, to_run, ray_options, data_dir, log)
    return write_summary(sweep_dir, spec, ray_record, seconds=time.time() - started, log=log)


def finished_trials(sweep_dir: Path) -> dict[str, dict]:
    """Trial key -> record of each trial with a ``trial.json`` (finished, with its artifacts or its error)."""
    records = {}
    for trial_dir in sorted((Path(sweep_dir) / TRIALS_DIR).glob("*")):
        record = read_trial(trial_dir)
        if record is not None:
            records[trial_dir.name] = record
    return records


def _optuna_storage(sweep_dir: Path):
    import optuna

    journal = optuna.storages.journal.JournalFileBackend(str(sweep_dir / OPTUNA_JOURNAL))
    return optuna.storages.JournalStorage(journal)


def _optuna_completed(sweep_dir: Path) -> int:
    """Trials of the sweep's Optuna study that finished (with a result or an error) in earlier attempts."""
    import optuna

    if not (sweep_dir / OPTUNA_JOURNAL).is_file():
        return 0
    try:
        study = optuna.load_study(study_name=OPTUNA_STUDY, storage=_optuna_storage(sweep_dir))
    except KeyError:  # the journal exists, the study was never created
        return 0
    ended = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL)
    return len(study.get_trials(deepcopy=False, states=ended))


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
        auth = "" if os.environ.get("RAY_AUTH_MODE") else (
            "; a cluster with token authentication needs RAY_AUTH_MODE=token and its token in RAY_AUTH_TOKEN "
            "or ~/.ray/auth_token")
        raise EdgeFMError(f"cannot connect to the Ray cluster at {address}: {str(exc).splitlines()[0]} "
                          f"(is `ray start --head` running there, and is the port right?{auth}).") from None
    cores = int(ray.cluster_resources().get("CPU", 1))
    log(f"ray: {'cluster at ' + address if address else 'started here'}, {cores} CPU(s)")
    return True, cores


def _tune(sweep_dir: Path, spec: SweepSpec, pending: list[TrialConfig], to_run: int, ray_options: RayOptions,
          data_dir, log) -> dict[str, Any]:
    import ray
    from ray import tune

    started_here, cores = _start_ray(ray_options.address, log)
    try:
        concurrency, threads = ray_options.plan(cores)
        log(f"{concurrency} trial(s) at once, {threads} thread(s) each")
        attempt = uuid.uuid4().hex
        trainable = tune.with_parameters(_trainable, spec=spec.as_dict(), sweep_dir=str(sweep_dir), attempt=attempt,
                                         threads=threads, data_dir=str(Path(data_dir).resolve()) if data_dir else None)
        trainable = tune.with_resources(trainable, {"cpu": threads})
        tune_config, param_space = _search(sweep_dir, spec, pending, to_run, concurrency)
        run_config = tune.RunConfig(
            name=f"attempt-{len(list((sweep_dir / 'tune').glob('attempt-*'))) + 1}", storage_path=str(sweep_dir / "tune"),
            verbose=0, callbacks=[_record_keeper(sweep_dir, log)],
            failure_config=tune.FailureConfig(max_failures=0, fail_fast=False),
        )
        tuner = tune.Tuner(trainable, param_space=param_space, tune_config=tune_config, run_config=run_config)
        results = tuner.fit()
        _record_crashed(sweep_dir, results, log)
        context = ray.get_runtime_context()
        return {"address": ray_options.address or "local", "gcs_address": context.gcs_address, "cpus": cores,
                "concurrency": concurrency, "threads_per_trial": threads, "experiment": run_config.name,
                "ray": ray.__version__}
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

    param_space = {"arch": tune.choice(list(spec.archs)), "prune": tune.choice(list(spec.prune)),
                   "qat": tune.choice(list(spec.qat)),
                   "set": {k: tune.choice([list(v) if isinstance(v, tuple) else v for v in values])
                           for k, values in spec.settings.items()}}
    searcher = OptunaSearch(metric=[m for m, _ in OBJECTIVES], mode=[m for _, m in OBJECTIVES], seed=spec.seed,
                            study_name=OPTUNA_STUDY, storage=_optuna_storage(sweep_dir))
    config = tune.TuneConfig(search_alg=searcher, num_samples=to_run, max_concurrent_trials=concurrency,
                             trial_dirname_creator=dirname)
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
    return (f"trial {record['trial']}: ok in {record.get('seconds', 0):.0f} s{reused}; best {best.get('format')} "
            f"{best.get('accuracy', 0):.2%}, {best.get('bytes', 0) / 1000:.1f} KB, p50 {best.get('p50_ms', 0):.3f} ms")


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
        write_json(trial_dir / TRIAL_FILE, {"trial": trial.key, "config": trial.as_dict(), "status": "error",
                                            "error": error, "rows": [_error_row(trial, error)]})
        log(f"trial {trial.key}: [error] {error}")


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no message"


# ---------------------------------------------------------------- the result


CSV_COLUMNS = ("trial", "arch", "settings", "prune", "qat", "format", "threads", "bytes", "accuracy", "accuracy_delta",
               "p50_ms", "p90_ms", "front", "status", "error", "path")


def picks(rows: list[dict[str, Any]], constraints: Constraints) -> list[dict[str, Any]]:
    """The artifact that answers each common question under ``constraints`` (None where none qualifies)."""
    ok = [row for row in rows if row.get("status") == "ok"]

    def p50(row):
        return row["latency"]["p50_ms"]

    def choose(question: str, candidates: list[dict], key) -> dict[str, Any]:
        best = min(candidates, key=key) if candidates else None
        return {"question": question, "model": best["model"] if best else None,
                "artifact": _pick_summary(best) if best else None}

    kb = f"{constraints.max_bytes / 1000:g} KB"
    at = f"{constraints.min_accuracy:.0%}"
    accurate = [r for r in ok if r["accuracy"] >= constraints.min_accuracy]
    answers = [
        choose(f"most accurate at most {kb}", [r for r in ok if r["bytes"] <= constraints.max_bytes],
               lambda r: (-r["accuracy"], r["bytes"], p50(r))),
        choose(f"fastest at {at} or better", accurate, lambda r: (p50(r), r["bytes"], -r["accuracy"])),
        choose(f"smallest at {at} or better", accurate, lambda r: (r["bytes"], p50(r), -r["accuracy"])),
    ]
    if constraints.max_p50_ms is not None:
        answers.append(choose(f"most accurate at p50 {constraints.max_p50_ms:g} ms or faster",
                              [r for r in ok if p50(r) <= constraints.max_p50_ms],
                              lambda r: (-r["accuracy"], r["bytes"], p50(r))))
    return answers


def _pick_summary(row: dict[str, Any]) -> dict[str, Any]:
    return {"trial": row["trial"], "format": row["format"], "accuracy": row["accuracy"], "bytes": row["bytes"],
            "p50_ms": row["latency"]["p50_ms"], "path": row.get("path")}


def write_summary(sweep_dir: Path, spec: SweepSpec, ray_record: dict | None = None, seconds: float = 0.0,
                  log: Callable[[str], None] = lambda message: None) -> Path:
    """Writes ``sweep.json``, ``sweep.csv``, ``front.png`` and the HTML report from the trials' records."""
    from edge_fm.catalog import pareto_front, plot_front

    records = finished_trials(sweep_dir)
    expected = len(spec.trial_configs()) if spec.search == "grid" else spec.trials
    # An Optuna search may draw one combination twice (run once): its count is the study's.
    done = len(records) if spec.search == "grid" else _optuna_completed(sweep_dir)
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
        "trials": {key: {k: v for k, v in record.items() if k not in ("rows", "environment", "test_set", "traceback")}
                   for key, record in records.items()},
        "expected_trials": expected,
        "finished_trials": done,
        "complete": done >= expected,
        "environment": first.get("environment") or {},
        "test_set": first.get("test_set") or {},
        "reference": None,
        "front": sorted(front),
        "picks": picks(rows, spec.constraints),
        "rows": sorted(rows, key=lambda r: (r["trial"], str(r.get("format")))),
        "attempts": [*previous.get("attempts", []), {"ray": ray_record, "seconds": round(seconds, 1),
                                                    "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")}],
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
        flat = {**row, **(row.get("latency") or {}), "settings": json.dumps(row.get("settings", {}), sort_keys=True)}
        writer.writerow(flat)
    return text.getvalue()


def _html_report(sweep_dir: Path, log) -> None:
    """The sweep's page through `edge-fm report`, where that module is installed."""
    try:
        from edge_fm.html_report import build_report
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


# ---------------------------------------------------------------- from command-line options


QAT_CHOICES = {"off": (False,), "on": (True,), "both": (False, True)}


def build_spec(spec_file: Path | str | None = None, archs: str | None = None, settings: list[str] | None = None,
               prune: str | None = None, qat: str | None = None, formats: list[str] | None = None,
               preset: str | None = None, sample: bool | None = None, fine_tune_epochs: int | None = None,
               search: str | None = None, trials: int | None = None, seed: int | None = None,
               bench_threads: int | None = None, max_bytes: int | None = None, min_accuracy: float | None = None,
               max_p50_ms: float | None = None, bench_target: str | None = None, bench_ssh_key: str | None = None,
               bench_ssh_options: list[str] | None = None, bench_python: str | None = None) -> SweepSpec:
    """A :class:`SweepSpec` from command-line options over an optional spec file (options win).

    Args:
        spec_file: A YAML or JSON spec (see :func:`load_spec`).
        archs: Comma-separated architectures.
        settings: ``key=v1,v2`` strings (see :func:`parse_settings`); they replace the file's values of those keys.
        prune: Comma-separated sparsities (0: no pruning).
        qat: ``off``, ``on`` or ``both``.
        max_bytes, min_accuracy, max_p50_ms: Constraints of the picks, over the file's.
        bench_target, bench_ssh_key, bench_ssh_options, bench_python: Where the trials measure latency (see
            :class:`SweepSpec`).

    Raises:
        EdgeFMError: A bad option or spec (one line, with the fix).
    """
    if qat is not None and qat not in QAT_CHOICES:
        raise unknown_choice("--qat value", qat, QAT_CHOICES)
    base: dict[str, Any] = {}
    if spec_file is not None:
        base = load_spec(spec_file).as_dict()
    if settings:
        base["settings"] = {**base.get("settings", {}), **parse_settings(settings)}
    limits = {"max_bytes": max_bytes, "min_accuracy": min_accuracy, "max_p50_ms": max_p50_ms}
    constraints = {**base.get("constraints", dataclasses.asdict(Constraints())), **{k: v for k, v in limits.items() if v is not None}}
    options = {"archs": [a.strip() for a in archs.split(",") if a.strip()] if archs else None,
               "prune": [_number("--prune", p) for p in prune.split(",") if p.strip()] if prune else None,
               "qat": QAT_CHOICES[qat] if qat else None, "formats": tuple(formats) if formats else None,
               "preset": preset, "sample": sample or None, "fine_tune_epochs": fine_tune_epochs, "search": search,
               "trials": trials, "seed": seed, "bench_threads": bench_threads, "constraints": Constraints(**constraints),
               "bench_target": bench_target, "bench_ssh_key": bench_ssh_key,
               "bench_ssh_options": tuple(bench_ssh_options) if bench_ssh_options else None, "bench_python": bench_python}
    merged = {**base, **{k: v for k, v in options.items() if v is not None}}
    if not merged.get("archs"):
        raise EdgeFMError("name at least one architecture to sweep: --arch tiny-cnn,cnn-2conv (or `arch:` in --spec).")
    return SweepSpec(**{k: tuple(v) if isinstance(v, list) else v for k, v in merged.items()})


"""What a sweep runs: its spec (architectures x training options x optimizations), its trials and constraints.

A :class:`SweepSpec` is validated on construction and saved as ``spec.json`` in the sweep folder
before any trial starts; :func:`build_spec` makes one from the options of ``edge-fm sweep``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import re
from pathlib import Path
from typing import Any

from edge_fm.errors import EdgeFMError, unknown_choice
from edge_fm.runner import MAX_THREADS

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
_NOT_SWEPT = {
    "arch": "list architectures with --arch",
    "data": "give the dataset of every trial with --data (or --sample)",
    "arch_options": "architecture options are not swept",
}


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
            raise EdgeFMError(
                f"--min-accuracy {self.min_accuracy}: give a fraction between 0 and 1, e.g. 0.94."
            )
        if self.max_p50_ms is not None and not 0 < self.max_p50_ms < float("inf"):  # NaN too
            raise EdgeFMError(
                f"--max-p50-ms {self.max_p50_ms}: give a positive latency in milliseconds, e.g. 1.5."
            )


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
        data: The dataset of every trial: training fields ``data`` (a path), ``image_size``,
            ``channels``, ``resize``, ``label_column``; empty for Fashion-MNIST.
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
    data: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        from edge_fm.export.formats import get_format
        from edge_fm.train.config import TrainConfig
        from edge_fm.train.presets import PRESET_NAMES
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
        if not 1 <= self.bench_threads <= MAX_THREADS:
            raise EdgeFMError(f"--bench-threads {self.bench_threads}: give 1 to {MAX_THREADS}.")
        if not (self.bench_target == "local" or self.bench_target.startswith("ssh://")):
            raise EdgeFMError(
                f"--bench-target {self.bench_target}: the sweep ranks by measured latency, so give local or "
                "ssh://user@host[:port] (tflm and vela: targets do not time a model)."
            )
        object.__setattr__(self, "bench_ssh_options", tuple(self.bench_ssh_options))
        object.__setattr__(self, "data", _data_fields(self.data, self.sample))
        self.bench_where()  # a malformed ssh:// address is refused before any trial
        prune = tuple(dict.fromkeys(_number("--prune", p) for p in self.prune)) or (0.0,)
        qat = tuple(dict.fromkeys(bool(q) for q in self.qat)) or (False,)
        constraints = (
            self.constraints if isinstance(self.constraints, Constraints) else Constraints(**self.constraints)
        )
        for name, value in (
            ("archs", archs),
            ("settings", settings),
            ("prune", prune),
            ("qat", qat),
            ("formats", tuple(dict.fromkeys(self.formats))),
            ("constraints", constraints),
        ):
            object.__setattr__(self, name, value)

    def trial_configs(self) -> list[TrialConfig]:
        """Every combination, in a stable order (the grid)."""
        keys = sorted(self.settings)
        combos = itertools.product(
            self.archs, itertools.product(*(self.settings[k] for k in keys)), self.prune, self.qat
        )
        return [
            TrialConfig(arch, tuple(zip(keys, values)), prune, qat) for arch, values, prune, qat in combos
        ]

    def as_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "settings": {k: list(v) for k, v in self.settings.items()}}

    def bench_where(self):
        """The bench target object of :attr:`bench_target` (see :func:`edge_fm.bench.targets.parse_target`)."""
        from edge_fm.bench.targets import parse_target

        return parse_target(
            self.bench_target,
            identity=self.bench_ssh_key,
            ssh_options=tuple(self.bench_ssh_options),
            python=self.bench_python,
        )


DATA_FIELDS = ("data", "image_size", "channels", "resize", "label_column")


def _data_fields(data: Any, sample: bool) -> dict[str, Any]:
    """The training fields that name every trial's dataset: a path, or a mapping of ``DATA_FIELDS``."""
    values = {"data": data} if isinstance(data, str) else dict(data or {})
    unknown = sorted(set(values) - set(DATA_FIELDS))
    if unknown:
        raise EdgeFMError(f"sweep data: unknown field {unknown[0]!r}; use {', '.join(DATA_FIELDS)}.")
    if values and not values.get("data"):
        raise EdgeFMError("sweep data: name the dataset's path (data: photos/), or drop the data options.")
    if values and sample:
        raise EdgeFMError(f"--sample and --data {values['data']} name two datasets: pass one of them.")
    return {key: value for key, value in values.items() if value is not None}


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
        parts = [
            self.arch,
            *(f"{k}={json.dumps(v, separators=(',', ':'))}" for k, v in self.settings),
            f"prune={self.prune:g}",
            "qat" if self.qat else "noqat",
        ]
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
    ``epochs`` (fine-tuning), ``search``, ``trials``, ``seed``, ``bench_threads``,
    ``constraints`` (``max_bytes``, ``min_accuracy``, ``max_p50_ms``) and ``data`` (a dataset path,
    or a mapping with ``data``, ``image_size``, ``channels``, ``resize``, ``label_column``).

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
        raise EdgeFMError(
            f"--spec {path} does not exist: give a YAML or JSON sweep spec (see `edge-fm sweep --help`)."
        ) from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise EdgeFMError(
            f"--spec {path} is not a readable YAML or JSON file ({str(exc).splitlines()[0]})."
        ) from None
    if not isinstance(values, dict):
        raise EdgeFMError(f"--spec {path} must hold a mapping of sweep options (arch, set, prune, qat...).")
    return spec_from_dict(values, **overrides)


_FILE_KEYS = {
    "arch": "archs",
    "archs": "archs",
    "set": "settings",
    "settings": "settings",
    "prune": "prune",
    "qat": "qat",
    "formats": "formats",
    "format": "formats",
    "preset": "preset",
    "sample": "sample",
    "epochs": "fine_tune_epochs",
    "fine_tune_epochs": "fine_tune_epochs",
    "search": "search",
    "trials": "trials",
    "seed": "seed",
    "bench_threads": "bench_threads",
    "constraints": "constraints",
    "bench_target": "bench_target",
    "bench_ssh_key": "bench_ssh_key",
    "bench_ssh_options": "bench_ssh_options",
    "bench_python": "bench_python",
    "data": "data",
}


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
    from edge_fm.train.config import TrainConfig, is_tuple_field, parse_value, settable_field, split_setting

    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    settings: dict[str, list] = {}
    for pair in pairs:
        key, raw = split_setting(pair, "--set", "epochs=1,2")
        is_list = is_tuple_field(settable_field(key, fields, _NOT_SWEPT))
        alternatives = raw.split("|") if is_list else ([raw] if raw.strip()[:1] in "[{" else raw.split(","))
        for text in alternatives:
            value = parse_value(text, tuple_field=is_list, name=f"--set {key}")
            settings.setdefault(key, []).append(_hashable(value))
    return {key: tuple(dict.fromkeys(values)) for key, values in settings.items()}


# ---------------------------------------------------------------- from command-line options


QAT_CHOICES = {"off": (False,), "on": (True,), "both": (False, True)}


@dataclasses.dataclass(frozen=True, kw_only=True)
class SweepOptions:
    """A sweep as the command line asks for it (``edge-fm sweep``'s options, as typed), over an optional spec
    file: an option given adds to or replaces the file's value; None is not given, nor is False or empty
    for the switch, the lists and the comma-separated values (an option never unsets the file's value)."""

    spec_file: Path | str | None = None  # a YAML or JSON spec (see load_spec)
    archs: str | None = None  # comma-separated architectures
    # key=v1,v2 strings (parse_settings): they replace the file's values of those keys.
    settings: list[str] | None = None
    prune: str | None = None  # comma-separated sparsities (0: no pruning)
    qat: str | None = None  # off, on or both
    formats: list[str] | None = None  # export formats of every trial
    preset: str | None = None  # the training recipe trials start from
    sample: bool | None = None  # train and score on the embedded sample
    fine_tune_epochs: int | None = None  # epochs of each optimization step
    search: str | None = None  # grid, random or optuna
    trials: int | None = None  # trials of a random or optuna search
    seed: int | None = None  # the search's seed
    bench_threads: int | None = None  # threads each trial's latency is measured with
    # Constraints of the picks, over the file's.
    max_bytes: int | None = None
    min_accuracy: float | None = None
    max_p50_ms: float | None = None
    # Where the trials measure latency (see SweepSpec).
    bench_target: str | None = None
    bench_ssh_key: str | None = None
    bench_ssh_options: list[str] | None = None
    bench_python: str | None = None
    # The dataset of every trial (--data and its options as training fields).
    data: dict[str, Any] | None = None


def build_spec(options: SweepOptions) -> SweepSpec:
    """A :class:`SweepSpec` from command-line options over an optional spec file (options win).

    Raises:
        EdgeFMError: A bad option or spec (one line, with the fix).
    """
    if options.qat is not None and options.qat not in QAT_CHOICES:
        raise unknown_choice("--qat value", options.qat, QAT_CHOICES)
    base: dict[str, Any] = {}
    if options.spec_file is not None:
        base = load_spec(options.spec_file).as_dict()
    if options.settings:
        base["settings"] = {**base.get("settings", {}), **parse_settings(options.settings)}
    limits = {
        "max_bytes": options.max_bytes,
        "min_accuracy": options.min_accuracy,
        "max_p50_ms": options.max_p50_ms,
    }
    constraints = {
        **base.get("constraints", dataclasses.asdict(Constraints())),
        **{k: v for k, v in limits.items() if v is not None},
    }
    given = {
        "archs": [a.strip() for a in options.archs.split(",") if a.strip()] if options.archs else None,
        "prune": [_number("--prune", p) for p in options.prune.split(",") if p.strip()]
        if options.prune
        else None,
        "qat": QAT_CHOICES[options.qat] if options.qat else None,
        "formats": tuple(options.formats) if options.formats else None,
        "preset": options.preset,
        "sample": options.sample or None,
        "fine_tune_epochs": options.fine_tune_epochs,
        "search": options.search,
        "trials": options.trials,
        "seed": options.seed,
        "bench_threads": options.bench_threads,
        "constraints": Constraints(**constraints),
        "bench_target": options.bench_target,
        "bench_ssh_key": options.bench_ssh_key,
        "bench_ssh_options": tuple(options.bench_ssh_options) if options.bench_ssh_options else None,
        "bench_python": options.bench_python,
        "data": options.data or None,
    }
    merged = {**base, **{k: v for k, v in given.items() if v is not None}}
    if not merged.get("archs"):
        raise EdgeFMError(
            "name at least one architecture to sweep: --arch tiny-cnn,cnn-2conv (or `arch:` in --spec)."
        )
    return SweepSpec(**{k: tuple(v) if isinstance(v, list) else v for k, v in merged.items()})

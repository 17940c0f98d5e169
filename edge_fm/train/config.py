"""Frozen, validated configuration dataclasses (training, optimization), saved with every run as ``config.json``."""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import numbers
from pathlib import Path
from typing import Any, TypeVar

from edge_fm.data.options import check_image_size, check_seed
from edge_fm.errors import EdgeFMError, unknown_choice
from edge_fm.io import read_json
from edge_fm.train.balance import check_class_weight

C = TypeVar("C")

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("constant", "exponential", "cyclical", "cosine", "onecycle")
AUGMENTATIONS = ("crop", "flip", "affine", "erasing")
DATA_SOURCES = ("full", "sample")  # Fashion-MNIST's; any other value is a dataset path
RESIZE_POLICIES = ("pad", "stretch")  # as edge_fm.data.images reads them
MONITORS = ("val_loss", "val_accuracy")
METHODS = ("prune", "qat")  # optimization methods
MIXED_DTYPES = ("float16", "bfloat16")  # compute dtypes of Keras' mixed-precision policies
DISTRIBUTE = (
    "auto",
    "none",
    "mirrored",
    "multi-worker",
)  # tf.distribute strategies (see edge_fm.train.distribute)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a training run; ``config.json`` of a run re-creates it.

    Example:
        >>> cfg = TrainConfig(arch="cnn-2conv", epochs=3)
        >>> dataclasses.replace(cfg, learning_rate=3e-4).learning_rate
        0.0003
    """

    arch: str  # registry name of the architecture
    arch_options: dict = dataclasses.field(default_factory=dict)  # keyword options of its builder
    preset: str = "custom"  # preset the values came from (informational)
    data: str = (
        "full"  # 'full' Fashion-MNIST, the embedded 'sample', or a dataset path (see edge_fm.data.sources)
    )
    image_size: tuple[int, ...] | None = (
        None  # (height, width) of a dataset path's images (None: the most common, at most 224 a side)
    )
    channels: int | None = None  # 1 or 3 for a dataset path (None: grey when every image is grey)
    resize: str = "pad"  # images of another size: 'pad' (aspect kept) or 'stretch'
    label_column: str | None = None  # a CSV's label column, name or index (None: 'label', else the first)
    val_size: int | None = (
        None  # validation images carved from train (None: 5000 full, 400 sample, a tenth else)
    )
    max_train: int | None = None  # cap on training images, stratified (None: all)
    epochs: int = 10  # maximum epochs
    batch_size: int = (
        128  # images per step: the GLOBAL batch, split evenly over the replicas of a distributed run
    )
    optimizer: str = "adam"  # adam, adamw or sgd
    learning_rate: float = 1e-3  # peak learning rate
    momentum: float = 0.9  # SGD momentum (Nesterov)
    schedule: str = "constant"  # constant, exponential, cyclical, cosine or onecycle
    warmup_epochs: float = 0.0  # linear warm-up before cosine decay
    decay_rate: float = 0.9  # per-epoch factor of the exponential schedule
    min_learning_rate: float = 1e-5  # floor of cosine and base of cyclical schedules
    cycle_epochs: float = 4.0  # length of one triangular cycle
    weight_decay: float = 0.0  # decoupled weight decay (AdamW style)
    l2: float = 0.0  # L2 penalty on kernels added to the loss
    label_smoothing: float = 0.0  # label smoothing of the cross-entropy
    augment: tuple[str, ...] = ()  # any of crop, flip, affine, erasing
    crop_padding: int = 2  # pixels of zero padding for the random crop
    rotation: float = 10.0  # max rotation of 'affine', degrees
    shift: float = 0.1  # max shift of 'affine', fraction of the side
    zoom: float = 0.1  # max zoom change of 'affine', fraction
    shear: float = 10.0  # max shear of 'affine', degrees
    erasing_prob: float = 0.5  # probability of random erasing per image
    early_stopping: int = 0  # patience in epochs on `monitor` (0: off); best weights restored
    monitor: str = "val_loss"  # val_loss or val_accuracy
    seed: int = 0  # seed of the split, the initialisation and the shuffling
    mixed_precision: bool | None = None  # None: on when a GPU is present
    mixed_dtype: str = (
        "float16"  # compute dtype of mixed precision: float16 (GPUs) or bfloat16 (AMX/AVX-512-BF16 CPUs)
    )
    distribute: str = (
        "auto"  # auto, none, mirrored or multi-worker (auto: mirrored over 2+ GPUs, else one device)
    )
    teacher: str | None = None  # finished train run (same split) whose predictions are mixed into the targets
    distill_weight: float = 0.5  # share of the teacher's softened probabilities in each training target
    distill_temperature: float = 2.0  # divides the teacher's log-probabilities (1: as the teacher predicts)
    class_weight: str = (
        "none"  # 'balanced', 'none' or a JSON file of weights by class name (training loss only)
    )
    init_from: str | None = (
        None  # finished train run whose weights start this one (a new head for new classes)
    )
    freeze_epochs: int = 0  # epochs the pretrained layers (--init-from, --weights) stay frozen at the start

    def __post_init__(self) -> None:
        check_field_types(self)
        object.__setattr__(self, "augment", tuple(self.augment))
        object.__setattr__(self, "arch_options", dict(self.arch_options))
        _choice("optimizer", self.optimizer, OPTIMIZERS)
        _choice("schedule", self.schedule, SCHEDULES)
        if not isinstance(self.data, str) or not self.data:
            raise EdgeFMError(
                f"data must be {' or '.join(map(repr, DATA_SOURCES))} or the path of a dataset, got {self.data!r}."
            )
        _choice("resize policy", self.resize, RESIZE_POLICIES)
        if self.image_size is not None:
            object.__setattr__(self, "image_size", tuple(self.image_size))
            if len(self.image_size) != 2 or not all(_is_whole(d) and d > 0 for d in self.image_size):
                raise EdgeFMError(
                    f"image_size must be [height, width] in pixels, got {list(self.image_size)}."
                )
            check_image_size(self.image_size)
        if self.channels is not None and self.channels not in (1, 3):
            raise EdgeFMError(f"channels must be 1 or 3, got {self.channels!r}.")
        _choice("monitor", self.monitor, MONITORS)
        _choice("distribution strategy", self.distribute, DISTRIBUTE)
        _choice("mixed_dtype", self.mixed_dtype, MIXED_DTYPES)
        for name in self.augment:
            _choice("augmentation", name, AUGMENTATIONS)
        _at_least("epochs", self.epochs, 1)
        _at_least("batch_size", self.batch_size, 1)
        check_seed(self.seed)
        _positive("learning_rate", self.learning_rate)
        _positive("min_learning_rate", self.min_learning_rate)
        _positive("cycle_epochs", self.cycle_epochs)
        _within("decay_rate", self.decay_rate, 0.0, 1.0, low_open=True)
        _within("label_smoothing", self.label_smoothing, 0.0, 1.0, high_open=True)
        _within("erasing_prob", self.erasing_prob, 0.0, 1.0)
        _within("shift", self.shift, 0.0, 0.5)
        _within("zoom", self.zoom, 0.0, 0.9)
        _within("momentum", self.momentum, 0.0, 1.0, high_open=True)
        _within("distill_weight", self.distill_weight, 0.0, 1.0)
        _positive("distill_temperature", self.distill_temperature)
        if self.teacher is not None and (not isinstance(self.teacher, str) or not self.teacher):
            raise EdgeFMError(f"teacher must be the path of a finished train run, got {self.teacher!r}.")
        check_class_weight(self.class_weight)
        if self.init_from is not None and (not isinstance(self.init_from, str) or not self.init_from):
            raise EdgeFMError(f"init_from must be the path of a finished train run, got {self.init_from!r}.")
        _at_least("freeze_epochs", self.freeze_epochs, 0)
        for name in ("weight_decay", "l2", "warmup_epochs", "rotation", "shear"):
            _at_least(name, getattr(self, name), 0)
        _at_least("crop_padding", self.crop_padding, 0)
        _at_least("early_stopping", self.early_stopping, 0)
        if self.val_size is not None:
            _at_least("val_size", self.val_size, 1)
        if self.max_train is not None:
            _at_least("max_train", self.max_train, 1)

    @property
    def resolved_val_size(self) -> int | None:
        """The validation size in force: the given one, else 5000 (full), 400 (sample), None (a tenth of a path's)."""
        if self.val_size is not None:
            return self.val_size
        if self.data not in DATA_SOURCES:
            return None
        return 400 if self.data == "sample" else 5000

    @property
    def data_options(self):
        """How :func:`edge_fm.data.sources.load_data` reads this config's data."""
        from edge_fm.data.sources import DataOptions

        return DataOptions(
            image_size=self.image_size,
            channels=self.channels,
            resize=self.resize,
            val_size=self.resolved_val_size,
            seed=self.seed,
            max_train=self.max_train,
            label_column=self.label_column,
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (tuples become lists)."""
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class OptimizeConfig:
    """One optimization step; saved as ``config.json`` of its run with the fine-tuning config."""

    method: str  # 'prune' or 'qat'
    parent: str  # run directory the step starts from
    target_sparsity: float = 0.5  # prune: fraction of zero weights reached
    keep_first_last: bool = True  # prune: leave the first and last prunable layers dense
    pruning_end: float = 0.7  # prune: fraction of fine-tuning steps over which sparsity ramps up
    preserve_sparsity: bool | None = None  # qat: keep zeros (None: when the parent was pruned)
    fold_batch_norms: bool = True  # qat: fold batch norms that feed a Dense into it first
    fine_tune: dict = dataclasses.field(default_factory=dict)  # overrides of the parent's training config
    then_qat: bool = False  # prune: a QAT step follows in the same chain (a resume runs it too)

    def __post_init__(self) -> None:
        check_field_types(self)
        if self.method not in METHODS:
            raise unknown_choice("optimization method", self.method, METHODS)
        if not 0.0 < self.target_sparsity < 1.0:
            raise EdgeFMError(f"target sparsity must be in (0, 1), got {self.target_sparsity!r}.")
        if not 0.0 < self.pruning_end <= 1.0:
            raise EdgeFMError(f"pruning_end must be in (0, 1], got {self.pruning_end!r}.")
        object.__setattr__(self, "fine_tune", dict(self.fine_tune))


def from_dict(cls: type[C], values: dict[str, Any]) -> C:
    """Builds config ``cls`` from a dict, naming any unknown key with a close match.

    Raises:
        EdgeFMError: An unknown key, or a value out of range.
    """
    if not isinstance(values, dict):
        raise EdgeFMError(f"a {cls.__name__} must be a JSON object of settings, got {type(values).__name__}.")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in values:
        if key not in fields:
            close = difflib.get_close_matches(key, fields, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise EdgeFMError(f"unknown setting {key!r}.{hint}")
    return cls(**values)


def load_config(cls: type[C], path: Path) -> C:
    """Reads a config saved as JSON by a run.

    Raises:
        EdgeFMError: The file is missing or corrupt, or holds an unknown key or a bad value.
    """
    return from_dict(cls, read_json(path))


def parse_overrides(cls: type, pairs: list[str]) -> dict[str, Any]:
    """Parses ``key=value`` strings into typed values for the fields of ``cls``.

    Values are read as JSON where possible (numbers, true/false, null, lists), else as strings;
    a comma-separated value for a tuple field becomes a list.

    Example:
        >>> parse_overrides(TrainConfig, ["epochs=3", "augment=crop,flip"])
        {'epochs': 3, 'augment': ['crop', 'flip']}
    """
    fields = {f.name: f for f in dataclasses.fields(cls)}
    result: dict[str, Any] = {}
    for pair in pairs:
        key, raw = split_setting(pair, "--set", "epochs=5")
        field = settable_field(key, fields, _NOT_SETTABLE)
        result[key] = parse_value(raw, tuple_field=is_tuple_field(field), name=f"--set {key}")
    return result


def split_setting(pair: str, option: str, example: str) -> tuple[str, str]:
    """``key=value`` -> ``(key, value)``, dashes of the key made underscores.

    Raises:
        EdgeFMError: No ``=`` or no key (the message shows ``option example``).
    """
    key, sep, raw = pair.partition("=")
    key = key.strip().replace("-", "_")
    if not sep or not key:
        raise EdgeFMError(f"{option} {pair!r} is not key=value: write e.g. {option} {example}.")
    return key, raw


def settable_field(
    key: str, fields: dict[str, dataclasses.Field], refused: dict[str, str]
) -> dataclasses.Field:
    """The config field ``--set key=...`` names.

    Raises:
        EdgeFMError: A field set another way (``refused``: key -> how), or no such field (with a close match).
    """
    if key in refused:
        raise EdgeFMError(f"--set {key}: {refused[key]}.")
    if key not in fields:
        raise unknown_choice("setting", key, fields)
    return fields[key]


def is_tuple_field(field: dataclasses.Field) -> bool:
    """Whether a config field holds a tuple (its command-line value is a list)."""
    return "tuple" in str(field.type)


# Fields a command line sets another way; --set would clash with it or be silently replaced.
_NOT_SETTABLE = {
    "arch": "the architecture is the command's first argument",
    "arch_options": "set architecture options with --arch-opt key=value",
}


def parse_arch_options(pairs: list[str]) -> dict[str, Any]:
    """Parses ``--arch-opt key=value`` strings into a dict of builder options (dashes become underscores).

    Names are checked against the architecture later (see :func:`edge_fm.zoo.check_options`).

    Example:
        >>> parse_arch_options(["alpha=0.5", "widths=[16, 32]"])
        {'alpha': 0.5, 'widths': [16, 32]}

    Raises:
        EdgeFMError: A pair without ``=`` or a name, or a list or object that is not valid JSON.
    """
    options: dict[str, Any] = {}
    for pair in pairs:
        key, raw = split_setting(pair, "--arch-opt", "alpha=0.5")
        options[key] = parse_value(raw, name=f"--arch-opt {key}")
    return options


def parse_value(raw: str, tuple_field: bool = False, name: str = "value") -> Any:
    """Reads a command-line value as JSON where it parses, else as a string (lists split on commas).

    Raises:
        EdgeFMError: The value starts like a JSON list or object but is not valid JSON.
    """
    raw = raw.strip()
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        if raw[:1] in "[{" and raw:
            raise EdgeFMError(
                f"{name} {raw!r} is not valid JSON ({exc.msg}): write a list as e.g. [16, 32]."
            ) from None
        value = raw
    if tuple_field and isinstance(value, str):
        value = [v for v in value.split(",") if v] if value else []
    return value


def check_field_types(config: Any) -> None:
    """Checks each field of a config dataclass against its annotation (``int``, ``float | None``...).

    A value from ``--set`` or a hand-edited ``config.json`` of the wrong type would otherwise fail
    deep inside TensorFlow (a float seed, a string batch size) or pass unnoticed (``"maybe"`` as a
    boolean).

    Raises:
        EdgeFMError: A field holds a value of another type, with the type it needs.
    """
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        kinds = [kind.strip() for kind in str(field.type).split("|")]
        if value is None and "None" in kinds:
            continue
        checked = [kind for kind in kinds if kind in _TYPE_CHECKS]
        if checked and not any(_TYPE_CHECKS[kind][0](value) for kind in checked):
            wanted = " or ".join(_TYPE_CHECKS[kind][1] for kind in checked)
            raise EdgeFMError(f"{field.name} must be {wanted}, got {value!r}.")


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _is_whole(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


# Annotation -> (test, what the message asks for); bools are not numbers here, though Python says so.
_TYPE_CHECKS = {
    "int": (_is_whole, "a whole number"),
    "float": (_is_number, "a number"),
    "bool": (lambda v: isinstance(v, bool), "true or false"),
    "str": (lambda v: isinstance(v, str), "a string"),
    "dict": (lambda v: isinstance(v, dict), 'a JSON object (e.g. {"width": 8})'),
    "tuple[str, ...]": (
        lambda v: isinstance(v, (list, tuple)) and all(isinstance(x, str) for x in v),
        "a list of names",
    ),
}


def _choice(kind: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise unknown_choice(kind, value, allowed)


def _at_least(name: str, value: float, low: float) -> None:
    if not _finite(value) or value < low:
        raise EdgeFMError(f"{name} must be a number >= {low}, got {value!r}.")


def _positive(name: str, value: float) -> None:
    if not _finite(value) or value <= 0:
        raise EdgeFMError(f"{name} must be a positive number, got {value!r}.")


def _finite(value) -> bool:
    # NaN compares false with every bound, and inf passes a lower one: both would train to NaN.
    return isinstance(value, int) or (isinstance(value, float) and math.isfinite(value))


def _within(
    name: str, value: float, low: float, high: float, low_open: bool = False, high_open: bool = False
) -> None:
    ok = _finite(value)
    ok = ok and (value > low if low_open else value >= low) and (value < high if high_open else value <= high)
    if not ok:
        lo, hi = ("(" if low_open else "["), (")" if high_open else "]")
        raise EdgeFMError(f"{name} must be in {lo}{low}, {high}{hi}, got {value!r}.")

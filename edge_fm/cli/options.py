"""Options that several ``edge-fm`` commands take, declared once, and the option groups that gather them.

A command names its parameter after the option (``data_dir: DataDirOption = None``) and keeps its own default
where the commands' differ; a group (``source: DataSource``) stands for several options at once.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import typing
from pathlib import Path
from typing import Annotated, Optional

import typer

from edge_fm import FormOptions, ShipConfig
from edge_fm.errors import EdgeFMError
from edge_fm.export.forms import accelerator_configs_help, io_dtypes_help
from edge_fm.runner import DEFAULTS as MEASURE

DataDirOption = Annotated[
    Optional[Path],
    typer.Option(
        "--data-dir", help="Folder of the four IDX files (default: $EDGE_FM_DATA, else the user cache)."
    ),
]


# A model made from the user's own data reads that data (its splits, its test images) where its run
# or model.json recorded it; this option says where it is after a move.
MovedDataOption = Annotated[
    Optional[str],
    typer.Option(
        "--data",
        help="For a model made from your own data: where that data is now, when it has moved from where "
        "its run or model.json says.",
    ),
]
SampleRunOption = Annotated[
    bool, typer.Option("--sample", help="Train and score on the embedded sample (no download).")
]
PresetOption = Annotated[
    str, typer.Option(help="Recipe to start from: 'quick' (smoke run) or 'paper' (the paper's).")
]
TrainSettingsOption = Annotated[
    Optional[list[str]],
    typer.Option(
        "--set", help="Any training config field as key=value (repeatable), e.g. --set label_smoothing=0.1."
    ),
]
FineTuneEpochsOption = Annotated[
    Optional[int], typer.Option(help="Fine-tuning epochs of each optimization step (default 4).")
]
RunsDirOption = Annotated[Path, typer.Option(help="Where run directories are created.")]
TopOption = Annotated[int, typer.Option(min=1, max=10, help="Classes shown per image.")]
BenchResultOption = Annotated[
    Optional[Path], typer.Option("--bench", help="Bench result JSON with the models' measured figures.")
]


@dataclasses.dataclass(frozen=True)
class DataSource:
    """A command's data-source options: ``--data``, ``--image-size``, ``--channels``, ``--resize``,
    ``--label-column`` (an option group, see :func:`with_option_groups`)."""

    data: Annotated[
        Optional[str],
        typer.Option(
            "--data",
            help="The dataset: fashion-mnist (default), sample, an image folder (DIR/<class>/*), a folder of "
            "IDX files, a .csv of pixels with a label column, or an .npz.",
        ),
    ] = None
    image_size: Annotated[
        Optional[str],
        typer.Option(
            "--image-size",
            help="Image size: a side (96) or WIDTHxHEIGHT (64x48), up to 1024; default: an image folder's or "
            "tfds set's most common size, at most 224 a side (CSV and npz: their own).",
        ),
    ] = None
    channels: Annotated[
        Optional[int],
        typer.Option("--channels", help="1 (grey) or 3 (RGB); default: grey when every image is grey."),
    ] = None
    resize: Annotated[
        Optional[str],
        typer.Option(
            "--resize",
            help="Images of another size: pad (aspect kept, black borders; the default) or stretch.",
        ),
    ] = None  # None: the library's default (pad)
    label_column: Annotated[
        Optional[str],
        typer.Option(
            "--label-column", help="CSV: the label column's name or index (-1: last); default: 'label'."
        ),
    ] = None

    def options(self, seed: int = 0):
        """The library's DataOptions from these options."""
        from edge_fm.data.sources import DataOptions, parse_image_size

        return DataOptions(
            image_size=parse_image_size(self.image_size) if self.image_size else None,
            channels=self.channels,
            label_column=self.label_column,
            seed=seed,
            **({"resize": self.resize} if self.resize else {}),
        )

    def overrides(self, sample: bool = False) -> dict:
        """The training config fields these options set, for a command that starts a chain.

        Raises:
            EdgeFMError: ``--image-size`` or ``--channels`` without a ``--data`` source, or with ``--sample``.
        """
        data = self.data
        if sample and data not in (None, "fashion-mnist", "sample"):
            raise EdgeFMError(f"--sample and --data {data} name two datasets: pass one of them.")
        if sample or data == "sample":
            overrides: dict = {"data": "sample"}
        elif data not in (None, "fashion-mnist"):
            from edge_fm.data.sources import parse_image_size

            chosen = {
                "data": data,
                "image_size": parse_image_size(self.image_size) if self.image_size else None,
                "channels": self.channels,
                "resize": self.resize,
                "label_column": self.label_column,
            }
            # An option left out leaves the field to --set (or the preset), not to the option's default.
            return {field: value for field, value in chosen.items() if value is not None}
        else:
            overrides = {}
        if self.image_size or self.channels:
            raise EdgeFMError("--image-size and --channels apply to --data sources, not to Fashion-MNIST.")
        return overrides

    def sample_and_overrides(self, sample: bool) -> tuple[bool, dict]:
        """For a chain with a ``--sample`` switch: whether it runs on the sample (``--data sample`` is
        ``--sample``), and the other config fields these options set."""
        chosen = self.overrides(sample)
        if chosen.get("data") == "sample":
            sample = bool(chosen.pop("data"))
        return sample, chosen


DEFAULT_SOURCE = DataSource()  # a command's `source` default: Fashion-MNIST, as without the options


@dataclasses.dataclass(frozen=True)
class SshOptions:
    """How a command reaches an SSH target: ``--ssh-key``, ``--ssh-option``, ``--remote-python`` (an option
    group, see :func:`with_option_groups`)."""

    ssh_key: Annotated[Optional[Path], typer.Option(help="Private key for the SSH target.")] = None
    ssh_option: Annotated[
        Optional[list[str]],
        typer.Option(help="Extra ssh -o option, e.g. UserKnownHostsFile=kh (repeatable)."),
    ] = None
    remote_python: Annotated[str, typer.Option(help="Python command on the SSH host.")] = "python3"

    @classmethod
    def of(cls, options: dict) -> SshOptions:
        """The options a target was reached with (:func:`edge_fm.bench.targets.target_options`)."""
        return cls(
            Path(options["identity"]) if options.get("identity") else None,
            list(options.get("ssh_options") or []) or None,
            options.get("python") or "python3",
        )

    def target(self, target: str, connect_timeout: int, tflm_images: Optional[int] = None):
        """The bench target a ``--target`` value names, reached over SSH with these options."""
        from edge_fm import parse_target

        return parse_target(
            target,
            identity=str(self.ssh_key) if self.ssh_key else None,
            ssh_options=tuple(self.ssh_option or ()),
            python=self.remote_python,
            connect_timeout=connect_timeout,
            tflm_images=tflm_images,
        )


DEFAULT_SSH = SshOptions()  # a command's `ssh` default: the user's own SSH setup


@dataclasses.dataclass(frozen=True)
class TrainingOptions:
    """``edge-fm train``'s training options, each named after the config field it sets (an option group,
    see :func:`with_option_groups`); one left out leaves its field to ``--set`` and the preset."""

    epochs: Annotated[Optional[int], typer.Option(help="Maximum epochs.")] = None
    batch_size: Annotated[Optional[int], typer.Option(help="Images per step.")] = None
    learning_rate: Annotated[Optional[float], typer.Option("--lr", help="Peak learning rate.")] = None
    optimizer: Annotated[Optional[str], typer.Option(help="adam, adamw or sgd.")] = None
    schedule: Annotated[
        Optional[str], typer.Option(help="constant, exponential, cyclical, cosine or onecycle.")
    ] = None
    augment: Annotated[
        Optional[str], typer.Option(help="Comma list of crop, flip, affine, erasing ('' for none).")
    ] = None
    val_size: Annotated[
        Optional[int], typer.Option(help="Validation images carved from the training split.")
    ] = None
    early_stopping: Annotated[Optional[int], typer.Option(help="Patience in epochs (0: off).")] = None
    seed: Annotated[Optional[int], typer.Option(help="Seed of split, initialisation and shuffling.")] = None
    teacher: Annotated[
        Optional[Path],
        typer.Option(
            help="Distil from this finished train run (same split); see --set distill_weight, distill_temperature."
        ),
    ] = None
    class_weight: Annotated[
        Optional[str],
        typer.Option(
            help="Weigh the training loss by class: balanced (rare classes count as much as common ones), "
            "none, or a JSON file of weights by class name.",
        ),
    ] = None
    freeze_epochs: Annotated[
        Optional[int],
        typer.Option(
            help="Keep the pretrained layers (--init-from, --weights) frozen for the first N epochs."
        ),
    ] = None

    def overrides(self) -> dict:
        """The config fields these options set."""
        from edge_fm.train.config import parse_value

        given = dataclasses.asdict(self)
        if self.augment is not None:
            given["augment"] = parse_value(self.augment, tuple_field=True)
        if self.teacher is not None:
            given["teacher"] = str(self.teacher)
        return {field: value for field, value in given.items() if value is not None}


DEFAULT_TRAINING = TrainingOptions()  # a command's `training` default: every field to the preset


@dataclasses.dataclass(frozen=True)
class Measurement:
    """How each artifact's latency is timed: ``--threads``, ``--runs``, ``--min-seconds``, ``--max-seconds``,
    ``--warmup`` (an option group, see :func:`with_option_groups`; a command's default instance holds its
    defaults, the runner's own for ``bench``)."""

    threads: Annotated[str, typer.Option(help="Interpreter thread counts, comma-separated.")] = (
        MEASURE.threads
    )
    runs: Annotated[int, typer.Option(help="Minimum timed batch-1 runs per artifact.")] = MEASURE.runs
    min_seconds: Annotated[
        float,
        typer.Option(help="Minimum timed seconds per artifact (or 100,000 runs, whichever comes first)."),
    ] = MEASURE.min_seconds
    max_seconds: Annotated[float, typer.Option(help="Stop timing an artifact after this long.")] = (
        MEASURE.max_seconds
    )
    warmup: Annotated[int, typer.Option(help="Untimed runs before timing.")] = MEASURE.warmup

    @classmethod
    def of(cls, options) -> Measurement:
        """The options that give the library's BenchOptions ``options`` (a command's own defaults)."""
        threads = ",".join(map(str, options.threads))
        return cls(threads, options.runs, options.min_seconds, options.max_seconds, options.warmup)

    def bench_options(self):
        """The library's BenchOptions of these options."""
        from edge_fm import BenchOptions, parse_threads

        return BenchOptions(
            threads=parse_threads(self.threads),
            runs=self.runs,
            min_seconds=self.min_seconds,
            max_seconds=self.max_seconds,
            warmup=self.warmup,
        )


DEFAULT_MEASUREMENT = Measurement()  # `bench`'s timing: the runner's defaults


_FORM = FormOptions()  # the library's defaults of an export's options


@dataclasses.dataclass(frozen=True)
class ExportOptions:
    """How ``edge-fm export`` makes each bundle, plain or in a form (an option group, see
    :func:`with_option_groups`); :meth:`form_options` gives the library's options of a form."""

    io_dtype: Annotated[Optional[str], typer.Option(help=io_dtypes_help())] = None
    calibration: Annotated[
        int,
        typer.Option(
            min=1,
            help="Calibration images of integer formats, drawn from the training images of the run's dataset.",
        ),
    ] = _FORM.representative_size
    calibration_dir: Annotated[
        Optional[Path],
        typer.Option(
            help="Calibrate integer formats on the images of this folder (up to --calibration of them) instead "
            "of training images."
        ),
    ] = None
    runs_dir: Annotated[Path, typer.Option(help="Where bundle directories are created.")] = Path(
        _FORM.runs_dir
    )
    out: Annotated[
        Optional[Path],
        typer.Option(
            help="With --for: the bundle folder to create (default: a new <name>-<form>-N in --runs-dir)."
        ),
    ] = None
    parity_images: Annotated[
        int,
        typer.Option(
            min=1,
            help="Images the parity checks run on (a plain export: validation images against Keras; mobile: "
            "test images against the int8 artifact; mcu: test images under TFLM against LiteRT's reference "
            "kernels).",
        ),
    ] = _FORM.parity_images
    c_array: Annotated[
        str,
        typer.Option(
            help="With --for mcu: 'source' puts the model's C array in firmware/; 'script' puts there a Python "
            "script that writes it from model.tflite at build time (the array is ~6x the model's size).",
        ),
    ] = _FORM.c_array_mode
    accelerator_config: Annotated[Optional[str], typer.Option(help=accelerator_configs_help())] = None

    def form_options(self, format_name: str | None, data_dir, data) -> FormOptions:
        """The library's options of one form's export of ``format_name``."""
        return FormOptions(
            format_name=format_name,
            out=self.out,
            runs_dir=self.runs_dir,
            data_dir=data_dir,
            representative_size=self.calibration,
            parity_images=self.parity_images,
            c_array_mode=self.c_array,
            accelerator_config=self.accelerator_config,
            data=data,
        )


DEFAULT_EXPORT = ExportOptions()  # `export`'s defaults: the library's


_SHIP = {field.name: field.default for field in dataclasses.fields(ShipConfig)}  # the library's defaults


@dataclasses.dataclass(frozen=True)
class ShipOptions:
    """How ``edge-fm ship`` makes and documents a shipped model beyond its run and name (an option group,
    see :func:`with_option_groups`); :meth:`config` gives the library's config."""

    models_dir: Annotated[Path, typer.Option(help="The folder of shipped models.")] = Path(
        _SHIP["models_dir"]
    )
    qat_run: Annotated[
        Optional[Path], typer.Option(help="Reuse this finished QAT run of TRAIN_RUN instead of running QAT.")
    ] = None
    qat_epochs: Annotated[
        Optional[int], typer.Option(help="Epochs of the QAT fine-tune (default: the optimize stage's).")
    ] = None
    qat_learning_rate: Annotated[
        Optional[float], typer.Option("--qat-lr", help="Peak learning rate of the QAT fine-tune.")
    ] = None
    qat_max_train: Annotated[
        Optional[int], typer.Option(help="QAT on this many training images (a heavy network).")
    ] = None
    note: Annotated[
        str, typer.Option(help="A sentence or two for the model card: what a user should know.")
    ] = ""
    train_command: Annotated[
        str, typer.Option(help="The command that made TRAIN_RUN, shown in the model card.")
    ] = ""
    max_artifact_bytes: Annotated[
        int, typer.Option(help="A larger artifact keeps its card and provenance but stays out of the folder.")
    ] = _SHIP["max_artifact_bytes"]

    def config(self, train_run: Path, name: str) -> ShipConfig:
        """The library's config of ``train_run`` shipped as ``name`` with these options (same field names)."""
        given = {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}
        as_saved = {key: str(value) if isinstance(value, Path) else value for key, value in given.items()}
        return ShipConfig(str(train_run), name, **as_saved)


DEFAULT_SHIP = ShipOptions()  # `ship`'s defaults: the library's


def given_over(recorded, given, default):
    """``recorded`` (an option group's values a run recorded) with each option the user gave now: a field of
    ``given`` that differs from the command's ``default``."""
    changed = {
        field.name: getattr(given, field.name)
        for field in dataclasses.fields(given)
        if getattr(given, field.name) != getattr(default, field.name)
    }
    return dataclasses.replace(recorded, **changed)


def with_option_groups(command):
    """Gives a command the options of each option group it takes (``source: DataSource``, ``ssh: SshOptions``).

    A group's options stand where the group stands in the signature (so ``--help`` lists them there),
    with the group's default for their defaults; the command receives them gathered in one group.
    """
    signature = inspect.signature(command, eval_str=True)
    parameters, groups = [], {}
    for parameter in signature.parameters.values():
        group = parameter.annotation
        if not (isinstance(group, type) and dataclasses.is_dataclass(group)):
            parameters.append(parameter)
            continue
        groups[parameter.name] = group
        options = typing.get_type_hints(group, include_extras=True)
        for field in dataclasses.fields(group):
            default = getattr(parameter.default, field.name)
            parameters.append(
                parameter.replace(name=field.name, annotation=options[field.name], default=default)
            )
    if not groups:
        return command

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        for name, group in groups.items():
            kwargs[name] = group(
                **{field.name: kwargs.pop(field.name) for field in dataclasses.fields(group)}
            )
        return command(*args, **kwargs)

    wrapper.__signature__ = signature.replace(parameters=parameters)
    wrapper.__annotations__ = {p.name: p.annotation for p in parameters}
    return wrapper

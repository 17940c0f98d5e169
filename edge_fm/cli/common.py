"""What every ``edge-fm`` command shares: the Typer app, the consoles, one-line errors, the progress reporter."""

from __future__ import annotations

import dataclasses
import functools
import inspect
import os
import sys
import typing
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from edge_fm.errors import EdgeFMError

try:  # Typer >= 0.23 carries its own copy of Click
    from typer.exceptions import TyperException as UsageError
except ImportError:  # older Typer raises Click's own exceptions
    from click.exceptions import ClickException as UsageError  # noqa: F401 (the CLI's usage errors, for root)

app = typer.Typer(
    name="edge-fm",
    help="Train, optimize, export and benchmark tiny Fashion-MNIST classifiers for the edge.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
data_app = typer.Typer(
    help="Get Fashion-MNIST, and inspect it or a dataset of your own (--data).", no_args_is_help=True
)
app.add_typer(data_app, name="data")

# soft_wrap: a long line stays one line (paths and figures are not broken) when piped.
# Piped output has no width; 160 columns keep the wide tables (bench, export) readable in logs.
_PIPE_WIDTH = None if sys.stdout.isatty() or os.environ.get("COLUMNS") else 160
console = Console(soft_wrap=True, width=_PIPE_WIDTH)
err_console = Console(stderr=True, soft_wrap=True)

# Options that several commands take, declared once; a command names its parameter after the option
# (`data_dir: DataDirOption = None`) and keeps its own default where the commands' differ.
DataDirOption = Annotated[
    Optional[Path],
    typer.Option(
        "--data-dir", help="Folder of the four IDX files (default: $EDGE_FM_DATA, else the user cache)."
    ),
]

DataOption = Annotated[
    Optional[str],
    typer.Option(
        "--data",
        help="The dataset: fashion-mnist (default), sample, an image folder (DIR/<class>/*), a folder of "
        "IDX files, a .csv of pixels with a label column, or an .npz.",
    ),
]
ImageSizeOption = Annotated[
    Optional[str],
    typer.Option(
        "--image-size",
        help="Image size: a side (96) or WIDTHxHEIGHT (64x48), up to 1024; default: an image folder's or "
        "tfds set's most common size, at most 224 a side (CSV and npz: their own).",
    ),
]
ChannelsOption = Annotated[
    Optional[int],
    typer.Option("--channels", help="1 (grey) or 3 (RGB); default: grey when every image is grey."),
]
ResizeOption = Annotated[
    Optional[str],
    typer.Option(
        "--resize", help="Images of another size: pad (aspect kept, black borders; the default) or stretch."
    ),
]
LabelColumnOption = Annotated[
    Optional[str],
    typer.Option(
        "--label-column", help="CSV: the label column's name or index (-1: last); default: 'label'."
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
ThreadsOption = Annotated[str, typer.Option(help="Interpreter thread counts, comma-separated.")]
RunsOption = Annotated[int, typer.Option(help="Minimum timed batch-1 runs per artifact.")]
MinSecondsOption = Annotated[
    float, typer.Option(help="Minimum timed seconds per artifact (or 100,000 runs, whichever comes first).")
]
SshKeyOption = Annotated[Optional[Path], typer.Option(help="Private key for the SSH target.")]
SshOptionOption = Annotated[
    Optional[list[str]], typer.Option(help="Extra ssh -o option, e.g. UserKnownHostsFile=kh (repeatable).")
]
RemotePythonOption = Annotated[str, typer.Option(help="Python command on the SSH host.")]
TopOption = Annotated[int, typer.Option(min=1, max=10, help="Classes shown per image.")]
BenchResultOption = Annotated[
    Optional[Path], typer.Option("--bench", help="Bench result JSON with the models' measured figures.")
]


@dataclasses.dataclass(frozen=True)
class DataSource:
    """A command's data-source options: ``--data``, ``--image-size``, ``--channels``, ``--resize``,
    ``--label-column`` (an option group, see :func:`with_option_groups`)."""

    data: DataOption = None
    image_size: ImageSizeOption = None
    channels: ChannelsOption = None
    resize: ResizeOption = None  # None: the library's default (pad)
    label_column: LabelColumnOption = None

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

    ssh_key: SshKeyOption = None
    ssh_option: SshOptionOption = None
    remote_python: RemotePythonOption = "python3"

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


def command_line(command: str) -> str:
    """The command line as typed, for the records a command writes (empty when called from Python)."""
    import shlex

    return shlex.join(["edge-fm", *sys.argv[1:]]) if sys.argv[1:2] == [command] else ""


def fails_cleanly(command):
    """Turns EdgeFMError (and Ctrl-C) into one red line and a non-zero exit."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except EdgeFMError as exc:
            print_error(str(exc))
            raise typer.Exit(1) from None
        except OSError as exc:
            if exc.filename is None:
                raise
            # The system refused a file the library did not foresee (no space, no permission):
            # the user can fix that, so one line, not a traceback.
            print_error(
                f"{exc.filename}: {(exc.strerror or str(exc)).lower()}; check the path, its permissions and free space."
            )
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            err_console.print("[bold red]interrupted[/]", highlight=False)
            raise typer.Exit(130) from None

    return wrapper


def print_answers(results: Iterable[Any], line: Callable[[Any, str], str]) -> int:
    """Prints each image's answer, ``line(result, classes)``, or its error as one red line.

    Returns:
        How many images failed (the command exits non-zero after its summary).
    """
    failed = 0
    for result in results:
        if result.error:
            failed += 1
            print_error(result.error)
            continue
        classes = ", ".join(f"{name} {p:.1%}" for name, p in result.top)
        console.print(line(result, classes), highlight=False)
    return failed


def print_error(text: str) -> None:
    # Escaped: messages quote users' values, and "[16," or "[int, int]" would read as rich markup.
    err_console.print(f"[bold red]error:[/] {escape(text)}", highlight=False, soft_wrap=True)


def _show_warning(message, category, filename, lineno, file=None, line=None):
    err_console.print(f"[yellow]warning:[/] {escape(str(message))}", highlight=False, soft_wrap=True)


def _version_callback(value: bool) -> None:
    if value:
        from edge_fm import __version__

        console.print(f"edge-fm {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version_callback, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Train, optimize, export and benchmark tiny Fashion-MNIST classifiers for the edge."""
    warnings.showwarning = _show_warning


class RichReporter:
    """Renders training progress: live bars on a terminal, one plain line per epoch otherwise."""

    def __init__(self, out: Console):
        self.out = out
        self.progress: Progress | None = None
        self.epochs = 0

    def start(self, run_dir, config, data, steps_per_epoch, initial_epoch):
        self.epochs = config.epochs
        self.out.print(f"run [bold]{run_dir}[/]  ·  {config.arch} ({config.preset} preset)  ·  {data}")
        if initial_epoch:
            self.out.print(f"resuming after epoch {initial_epoch}")
        if self.out.is_terminal:
            self.progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                TextColumn("{task.completed}/{task.total}"),
                TimeElapsedColumn(),
                TextColumn("{task.fields[metrics]}"),
                console=self.out,
            )
            self.progress.start()
            self.epoch_task = self.progress.add_task(
                "epochs", total=config.epochs, completed=initial_epoch, metrics=""
            )
            self.step_task = self.progress.add_task("steps", total=steps_per_epoch, metrics="")

    def step(self, step, logs):
        if self.progress:
            self.progress.update(self.step_task, completed=step, metrics=format_logs(logs))

    def epoch(self, epoch, logs):
        if self.progress:
            self.progress.update(self.epoch_task, completed=epoch, metrics=format_logs(logs))
            self.progress.reset(self.step_task)
        else:
            self.out.print(f"epoch {epoch}/{self.epochs}  {format_logs(logs)}", highlight=False)

    def message(self, text):
        self.stop()
        self.out.print(text)

    def stop(self):
        if self.progress:
            self.progress.stop()
            self.progress = None


def format_logs(logs: dict[str, float]) -> str:
    return "  ".join(f"{k} {v:.4f}" for k, v in logs.items())


def bench_options(threads: str, runs: int, min_seconds: float, max_seconds: float, warmup: int):
    from edge_fm import BenchOptions, parse_threads

    return BenchOptions(
        threads=parse_threads(threads),
        runs=runs,
        min_seconds=min_seconds,
        max_seconds=max_seconds,
        warmup=warmup,
    )

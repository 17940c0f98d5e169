"""What every ``edge-fm`` command shares: the Typer app, the consoles, one-line errors, the progress reporter."""

from __future__ import annotations

import functools
import os
import sys
import warnings
from collections.abc import Callable, Iterable
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from edge_fm.cli.options import with_option_groups
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


def command_line(command: str) -> str:
    """The command line as typed, for the records a command writes (empty when called from Python)."""
    import shlex

    return shlex.join(["edge-fm", *sys.argv[1:]]) if sys.argv[1:2] == [command] else ""


def command(group: typer.Typer, name: str):
    """Registers a function as the command ``name`` of ``group`` (the app or a sub-app such as ``data``),
    with the one-line errors of :func:`fails_cleanly` and the options of its option groups
    (:func:`edge_fm.cli.options.with_option_groups`)."""

    def register(function):
        return group.command(name)(fails_cleanly(with_option_groups(function)))

    return register


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


def ignored_with_resume(**given: bool) -> None:
    """Warns, in one line, of the options given with ``--resume`` that it does not read: a resumed run
    goes on with the settings it recorded (``given``: option name -> whether it was given)."""
    names = [name for name, was_given in given.items() if was_given]
    if names:
        err_console.print(
            "[yellow]warning:[/] --resume goes on with the run's recorded settings; ignored: "
            f"{escape(', '.join(names))}.",
            highlight=False,
            soft_wrap=True,
        )


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

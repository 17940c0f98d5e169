"""The ``edge-fm`` command line: a thin Typer layer over the library.

Each command parses its options, calls one library function and renders the result with rich.
Users' mistakes (:class:`~edge_fm.errors.EdgeFMError`, bad options) become one red line on
stderr and a non-zero exit code, never a traceback.
"""

from __future__ import annotations

import typer

# The command modules register their commands on the app, in the order `edge-fm --help` lists them.
# isort: off
from edge_fm.cli import data_commands  # noqa: F401
from edge_fm.cli import train_commands  # noqa: F401
from edge_fm.cli import export_commands  # noqa: F401
from edge_fm.cli import inspect_commands  # noqa: F401
from edge_fm.cli import show_commands  # noqa: F401
from edge_fm.cli import bench_commands  # noqa: F401
from edge_fm.cli import pipeline_commands  # noqa: F401

# isort: on
from edge_fm.cli import ABORTED_EXIT_CODE
from edge_fm.cli.common import UsageError, app, err_console, print_error


def main(argv: list[str] | None = None) -> int:
    """Runs the CLI; usage errors become one line on stderr (Click's box spans several)."""
    command = typer.main.get_command(app)
    try:
        # Without standalone mode, Click hands back the code of a typer.Exit instead of exiting.
        result = command.main(args=argv, prog_name="edge-fm", standalone_mode=False)
    except typer.Exit as exc:
        return exc.exit_code
    except typer.Abort:
        err_console.print("[bold red]aborted[/]")
        return ABORTED_EXIT_CODE
    except UsageError as exc:
        context = getattr(exc, "ctx", None)
        where = context.command_path if context else "edge-fm"
        print_error(f"{exc.format_message()} (see `{where} --help`)")
        return exc.exit_code
    return result if isinstance(result, int) else 0

"""The ``edge-fm`` command line: a thin Typer layer over the library.

This module stays light: the console script imports it, and a Ctrl-C while the commands' modules
load must end in one line, as it does once they run.
"""

from __future__ import annotations

import sys

__all__ = ["app", "entry_point", "main"]

ABORTED_EXIT_CODE = 130  # the shell's code for a process ended by SIGINT


def entry_point() -> None:
    """The console script."""
    try:
        from edge_fm.cli.root import main

        code = main()
    except KeyboardInterrupt:  # before Click takes over, or after it hands back
        sys.stderr.write("aborted\n")
        code = ABORTED_EXIT_CODE
    sys.exit(code)


def __getattr__(name: str):
    if name in ("app", "main"):
        from edge_fm.cli import root

        return getattr(root, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

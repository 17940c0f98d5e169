"""The ``edge-fm`` command line: a thin Typer layer over the library."""

from edge_fm.cli.root import app, entry_point, main

__all__ = ["app", "entry_point", "main"]

"""``python -m edge_fm.cli``: the ``edge-fm`` command."""

from edge_fm.cli import entry_point

entry_point()

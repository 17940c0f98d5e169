"""``python -m edge_fm.cli``: the ``edge-fm`` command."""

from edge_fm.cli.root import entry_point

entry_point()

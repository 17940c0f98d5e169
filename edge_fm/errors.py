"""The one exception type for users' mistakes.

The library raises :class:`EdgeFMError` for anything the user can fix (a wrong path, a corrupt
file, a bad option); the CLI prints its message as a single line and exits non-zero, without a
traceback. Programming errors stay ordinary exceptions so they keep their tracebacks.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping


class EdgeFMError(Exception):
    """A problem with the user's input, with a message that names the fix."""


def unknown_choice(kind: str, value: str, known: Iterable[str], meant: str | None = None) -> EdgeFMError:
    """Builds the error for a name that is not one of ``known``, with a close match if any.

    Args:
        kind: What the name is, e.g. ``"architecture"``.
        value: The name the user gave.
        known: The valid names.
        meant: The name to suggest (default: the closest spelling, if any).

    Returns:
        An :class:`EdgeFMError` listing the valid names.
    """
    known = sorted(known)
    close = [meant] if meant else difflib.get_close_matches(value, known, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return EdgeFMError(f"unknown {kind} {value!r}.{hint} Known: {', '.join(known)}.")


class NameTable(tuple):
    """A table of named rows (export formats, forms, accelerator configurations), in a fixed order,
    each row looked up by its ``name``.

    Args:
        kind: What a name is, for the error of an unknown one (``"export format"``).
        rows: The rows, each with a ``name`` (and optionally ``also_called``: other words users give for
            it, suggested when one is typed, e.g. ``phone`` for ``mobile``).
        also_known: Names the callers take besides the rows', each with what it is instead (``get``
            refuses one with that text; the error of an unknown name lists them first), e.g. ``none``.
    """

    def __new__(cls, kind: str, rows: Iterable, also_known: Mapping[str, str] | None = None):
        table = super().__new__(cls, rows)
        table.kind, table.also_known = kind, dict(also_known or {})
        return table

    def __getnewargs__(self):  # copies and pickles rebuild the table with its kind
        return self.kind, tuple(self), self.also_known

    def names(self) -> list[str]:
        """The rows' names, in table order."""
        return [row.name for row in self]

    def get(self, name: str):
        """The row called ``name``.

        Raises:
            EdgeFMError: A name the table only knows of (what it is instead), or an unknown name (the
                known ones listed).
        """
        for row in self:
            if row.name == name:
                return row
        if name in self.also_known:
            raise EdgeFMError(f"{name!r} {self.also_known[name]}")
        typed = name.strip().lower()  # MCU, " mobile": the row, suggested by its own spelling
        meant = next(
            (
                row.name
                for row in self
                if typed == row.name.lower() or typed in getattr(row, "also_called", ())
            ),
            None,
        )
        raise unknown_choice(self.kind, name, [*self.also_known, *self.names()], meant)

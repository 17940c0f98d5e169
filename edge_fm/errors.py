"""The one exception type for users' mistakes.

The library raises :class:`EdgeFMError` for anything the user can fix (a wrong path, a corrupt
file, a bad option); the CLI prints its message as a single line and exits non-zero, without a
traceback. Programming errors stay ordinary exceptions so they keep their tracebacks.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import TypeVar

T = TypeVar("T")


class EdgeFMError(Exception):
    """A problem with the user's input, with a message that names the fix."""


def unknown_choice(kind: str, value: str, known: Iterable[str]) -> EdgeFMError:
    """Builds the error for a name that is not one of ``known``, with a close match if any.

    Args:
        kind: What the name is, e.g. ``"architecture"``.
        value: The name the user gave.
        known: The valid names.

    Returns:
        An :class:`EdgeFMError` listing the valid names.
    """
    known = sorted(known)
    close = difflib.get_close_matches(value, known, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return EdgeFMError(f"unknown {kind} {value!r}.{hint} Known: {', '.join(known)}.")


def by_name(table: Iterable[T], name: str, kind: str, known: Iterable[str] | None = None) -> T:
    """The entry of ``table`` whose ``.name`` is ``name``, for the getters of the name tables.

    Raises:
        EdgeFMError: No entry has that name; the message lists ``known`` (default: the table's names).
    """
    entries = list(table)
    for entry in entries:
        if entry.name == name:
            return entry
    raise unknown_choice(kind, name, [entry.name for entry in entries] if known is None else known)

"""Replacing a folder in place, so that a reader never finds two versions under names it lists, nor
none, and a killed write leaves the old version or the new one.

The next version is assembled at ``.tmp-NAME`` beside ``NAME`` and swapped in (:func:`replace_folder`);
writers clear what a killed swap left (:func:`recover_folder`), readers put back a previous version a
kill left alone (:func:`restore_retired`) before they list a folder.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import os
import shutil
import sys
from pathlib import Path

TEMPORARY_PREFIX = ".tmp-"  # folders and files being written; never read as artifacts
RETIRED_PREFIX = ".old-"  # a folder's previous version while a new one replaces it (see replace_folder)


def staging_path(target: Path | str) -> Path:
    """Where the next version of ``target`` is assembled: ``.tmp-NAME`` beside it (hidden from readers)."""
    target = Path(target)
    return target.parent / f"{TEMPORARY_PREFIX}{target.name}"


def retired_path(target: Path | str) -> Path:
    """Where ``target``'s previous version waits while a swap without an atomic exchange runs."""
    target = Path(target)
    return target.parent / f"{RETIRED_PREFIX}{target.name}"


def replace_folder(staging: Path, target: Path) -> None:
    """Puts the folder ``staging`` in the place of ``target`` (new or existing) and removes the old one.

    A reader never finds two versions under names it lists, nor none: on Linux the two folders trade
    places in one step (``renameat2`` with ``RENAME_EXCHANGE``), and the old version, now at the hidden
    staging name, is removed. Where that is not available it takes two renames (``target`` to
    ``.old-NAME``, ``staging`` to ``target``); a kill between them leaves ``.old-NAME`` alone, which
    :func:`recover_folder` (any writer) and :func:`restore_retired` (any reader) put back.
    """
    if not target.exists():
        os.rename(staging, target)
    elif _exchange(staging, target):
        shutil.rmtree(staging, ignore_errors=True)  # the previous version, hidden since the exchange
    else:
        _swap_by_renames(staging, target)


def _swap_by_renames(staging: Path, target: Path) -> None:
    retired = retired_path(target)
    shutil.rmtree(retired, ignore_errors=True)
    _retire(target)
    os.rename(staging, target)
    shutil.rmtree(retired, ignore_errors=True)


def _retire(target: Path) -> None:
    """The first of the two renames: ``target`` leaves for ``.old-NAME``."""
    os.rename(target, retired_path(target))


def recover_folder(target: Path | str) -> None:
    """Clears what an interrupted :func:`replace_folder` of ``target`` left, before a new one starts.

    A ``.old-NAME`` without ``NAME`` is the previous version: it is put back. Then any ``.old-NAME``
    (the swap had finished) and ``.tmp-NAME`` (a half-written or a replaced version) are removed.
    """
    target = Path(target)
    retired = retired_path(target)
    if retired.is_dir() and not target.exists():
        os.rename(retired, target)
    shutil.rmtree(retired, ignore_errors=True)
    shutil.rmtree(staging_path(target), ignore_errors=True)


def restore_retired(folder: Path | str) -> None:
    """Puts back, in a folder a reader lists, each ``.old-NAME`` whose ``NAME`` a killed swap removed.

    Readers call this before they list: a model stays listed through any kill. Nothing is deleted
    here (a write may be running); a folder the reader cannot write is read as it is.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return
    for retired in folder.glob(f"{RETIRED_PREFIX}*"):
        target = folder / retired.name.removeprefix(RETIRED_PREFIX)
        if retired.is_dir() and not target.exists():
            with contextlib.suppress(OSError):
                os.rename(retired, target)


_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


@functools.cache
def _renameat2():
    """glibc's ``renameat2`` (Linux 3.15, glibc 2.28), or None where there is none."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        function = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    function.restype = ctypes.c_int
    return function


def _exchange(first: Path, second: Path) -> bool:
    """Swaps two existing paths in one step; False where the system or the file system cannot."""
    function = _renameat2()
    if function is None:
        return False
    done = function(_AT_FDCWD, os.fsencode(first), _AT_FDCWD, os.fsencode(second), _RENAME_EXCHANGE)
    if done == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP):
        return False  # an old kernel, or a file system without the exchange (some network ones)
    raise OSError(code, os.strerror(code), str(first), None, str(second))

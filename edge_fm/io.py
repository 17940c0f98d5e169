"""Atomic file writing, output-path checks, hashing and JSON helpers shared by every stage."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import stat
import sys
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from edge_fm.errors import EdgeFMError
from edge_fm.records import InvalidJSONError, check_size, parse_json

KB = 1000  # bytes: the unit of every size edge-fm prints, that of its size targets ("at most 100 KB")


def check_output_file(path: Path | str, option: str = "") -> Path:
    """Checks, before any work, that a file could be written at ``path``; leaves nothing.

    Args:
        path: Where a result file will be written.
        option: How the user named it (e.g. ``"--json"``), for the message.

    Returns:
        ``path`` as a Path.

    Raises:
        EdgeFMError: ``path`` is a folder, or lies under a file or a folder that cannot be written.
    """
    path = Path(path)
    if path.is_dir():
        raise EdgeFMError(
            f"cannot write {_named(option, path)}: it is a folder; give the path of a file (inside it, say)."
        )
    _check_writable_parent(path.parent, path, option)
    return path


def check_output_dir(path: Path | str, option: str = "") -> Path:
    """Checks, before any work, that folder ``path`` exists or could be made, and written; leaves nothing.

    Raises:
        EdgeFMError: ``path`` is a file, lies under a file, or cannot be written.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise EdgeFMError(f"{_named(option, path)} is a file, not a folder: choose a folder path.")
    _check_writable_parent(path, path, option)
    return path


def make_dirs(path: Path | str, option: str = "") -> Path:
    """Creates folder ``path`` (and its parents) if needed, after checking that it can be written.

    Raises:
        EdgeFMError: ``path`` is a file, lies under a file, or cannot be created or written.
    """
    path = check_output_dir(path, option)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise unwritable(path, option, exc) from None
    return path


def _named(option: str, path: Path) -> str:
    return f"{option} {path}" if option else str(path)


def _check_writable_parent(folder: Path, target: Path, option: str) -> None:
    # The nearest part of the path that exists decides: a file there, or a folder we may not write.
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        raise EdgeFMError(
            f"cannot write {_named(option, target)}: {existing} is a file, not a folder; choose another path."
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        raise EdgeFMError(
            f"cannot write {_named(option, target)}: permission denied in {existing}; choose a folder you can write."
        )
    # Permission bits do not tell all (root passes them in /proc, where nothing can be made): a file
    # made and removed at once does, and leaves nothing.
    try:
        handle, probe = tempfile.mkstemp(prefix=".edge-fm-probe-", dir=existing)
    except OSError as exc:
        raise unwritable(target, option, exc) from None
    os.close(handle)
    os.unlink(probe)


def unwritable(path: Path, option: str, exc: OSError) -> EdgeFMError:
    """The error for folder or file ``path`` (given as ``option``, if any) that the system refused to write."""
    reason = (exc.strerror or str(exc)).lower()
    return EdgeFMError(f"cannot write {_named(option, path)}: {reason}; choose another path.")


@contextlib.contextmanager
def atomic_path(final: Path) -> Iterator[Path]:
    """Yields a temporary path beside ``final`` and renames it into place on success.

    A crash or an exception leaves no half-written file under the final name, because the
    rename is the last step and is atomic on POSIX file systems.

    Example:
        >>> with atomic_path(Path("out/model.tflite")) as tmp:  # doctest: +SKIP
        ...     tmp.write_bytes(data)

    A symbolic link stays a link (the file it points to is written), and a device or a pipe
    (``/dev/stdout``, ``/dev/null``, a FIFO) is written through, never replaced by a file.

    Raises:
        EdgeFMError: ``final`` is a folder, or its folder cannot be created or written.
    """
    final = Path(final)
    stream = _open_stream(final)
    if stream is not None or _is_device(final):
        with _written_through(final, stream) as tmp:
            yield tmp
        return
    if final.is_symlink():
        final = Path(os.path.realpath(final))
    check_output_file(final)
    make_dirs(final.parent)
    try:
        # The temporary name ends with the final one, so writers that pick a format by suffix
        # (Keras: .h5, .keras) still see the right one.
        fd, name = tempfile.mkstemp(prefix=".tmp-", suffix=f"-{final.name}", dir=final.parent)
    except OSError as exc:
        raise unwritable(final, "", exc) from None
    os.close(fd)
    tmp = Path(name)
    # mkstemp creates 0600; give the final file the permissions a plain open() would.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    try:
        yield tmp
        try:
            os.replace(tmp, final)
        except OSError as exc:
            raise unwritable(final, "", exc) from None
    finally:
        if tmp.exists():
            tmp.unlink()


_OWN_STREAM = re.compile(r"/dev/(?:(stdout)|(stderr)|fd/(\d+))|/proc/self/fd/(\d+)")


def _open_stream(path: Path) -> int | None:
    """The descriptor ``/dev/stdout``, ``/dev/stderr``, ``/dev/fd/N`` or ``/proc/self/fd/N`` names: this
    process's own open stream, written at its place (a pipe, a terminal, or a file the shell appends to)."""
    match = _OWN_STREAM.fullmatch(str(path))
    if match is None:
        return None
    stdout, stderr, fd, proc_fd = match.groups()
    return 1 if stdout else 2 if stderr else int(fd or proc_fd)


def _is_device(path: Path) -> bool:
    """Whether ``path`` (a link followed) is a device, a pipe or a socket, not a file or a folder."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))


@contextlib.contextmanager
def _written_through(device: Path, stream: int | None) -> Iterator[Path]:
    """Yields a temporary file elsewhere and copies what was written to it into ``device``, or into the
    open ``stream`` it names."""
    with tempfile.TemporaryDirectory(prefix="edge-fm-") as folder:
        tmp = Path(folder) / device.name
        yield tmp
        data = tmp.read_bytes() if tmp.exists() else b""
        try:
            if stream is not None:
                sys.stdout.flush()
                sys.stderr.flush()
                view = memoryview(data)  # at the stream's place: nothing it already holds is truncated
                while view:
                    view = view[os.write(stream, view) :]
            else:
                with open(device, "wb") as out:
                    out.write(data)
        except OSError as exc:
            raise unwritable(device, "", exc) from None


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Writes ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_json(path: Path, obj: Any) -> None:
    """Writes ``obj`` as indented JSON to ``path`` atomically."""
    text = json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n"
    write_bytes_atomic(path, text.encode())


def read_json(path: Path) -> Any:
    """Reads a JSON file, checked by :mod:`edge_fm.records` (size, nesting, integers, its kind's fields).

    Raises:
        EdgeFMError: The file is missing, a folder, unreadable, not valid JSON, or not what its
            name says (one line naming the field).
    """
    path = Path(path)
    try:
        if path.is_file():
            check_size(path)
        return parse_json(path.read_text(), path)
    except FileNotFoundError:
        raise EdgeFMError(f"{path}: no such file.") from None
    except IsADirectoryError:
        raise EdgeFMError(f"{path} is a folder, not a JSON file.") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidJSONError.corrupt(f"{path} is not valid JSON ({str(exc).splitlines()[0]})") from None
    except OSError as exc:
        raise EdgeFMError(f"cannot read {path}: {(exc.strerror or str(exc)).lower()}.") from None


@contextlib.contextmanager
def deliberate_hdf5() -> Iterator[None]:
    """Silences Keras' advice to leave HDF5 while a run saves its ``model.h5`` on purpose.

    Run directories keep HDF5 because tf_keras cannot read tfmot's QAT wrappers back from
    ``.keras`` files; the warning would only tell users to do something they cannot act on.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"You are saving your model as an HDF5 file")
        yield


def sha256_file(path: Path, chunk_size: int = 1 << 20) -> str:
    """Returns the hex SHA-256 of a file, read in chunks so large files stay out of memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _json_default(value: Any) -> Any:
    # numpy scalars and arrays, and paths, appear in metrics; JSON knows none of them.
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")

"""Atomic file writing, hashing and JSON helpers shared by every stage."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_path(final: Path) -> Iterator[Path]:
    """Yields a temporary path beside ``final`` and renames it into place on success.

    A crash or an exception leaves no half-written file under the final name, because the
    rename is the last step and is atomic on POSIX file systems.

    Example:
        >>> with atomic_path(Path("out/model.tflite")) as tmp:  # doctest: +SKIP
        ...     tmp.write_bytes(data)
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    # The temporary name ends with the final one, so writers that pick a format by suffix
    # (Keras: .h5, .keras) still see the right one.
    fd, name = tempfile.mkstemp(prefix=".tmp-", suffix=f"-{final.name}", dir=final.parent)
    os.close(fd)
    tmp = Path(name)
    # mkstemp creates 0600; give the final file the permissions a plain open() would.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    try:
        yield tmp
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Writes ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_json(path: Path, obj: Any) -> None:
    """Writes ``obj`` as indented JSON to ``path`` atomically."""
    text = json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n"
    write_bytes_atomic(path, text.encode())


def read_json(path: Path) -> Any:
    """Reads a JSON file."""
    return json.loads(Path(path).read_text())


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

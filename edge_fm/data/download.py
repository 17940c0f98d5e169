"""Downloading Fashion-MNIST's four files, each checked against its published SHA-256 and written atomically."""

from __future__ import annotations

import hashlib
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path

from edge_fm.data import datasets
from edge_fm.data.datasets import FILES, MIRRORS, resolve_data_dir
from edge_fm.errors import EdgeFMError
from edge_fm.io import atomic_path, check_output_dir, sha256_file

# ---------------------------------------------------------------- downloading


ProgressFn = Callable[[str, int, int | None], None]


def fetch(
    dest: Path | str | None = None,
    base_urls: Sequence[str] = MIRRORS,
    checksums: dict[str, str] | None = None,
    progress: ProgressFn | None = None,
    timeout: float = 30.0,
) -> list[Path]:
    """Downloads the four Fashion-MNIST files, verifying each one's SHA-256.

    A file already present with the right checksum is kept. Each file is streamed to a temporary
    name and renamed into place only after its checksum matches, so no half or wrong file is ever
    left under the final name. Mirrors are tried in order.

    Args:
        dest: Target directory (see :func:`resolve_data_dir`).
        base_urls: Base URLs to try in order; each file is ``base_url + file name``.
        checksums: File name -> expected SHA-256 (defaults to the published values).
        progress: Called as ``progress(file_name, bytes_done, bytes_total_or_None)``.
        timeout: Seconds before a stalled connection is abandoned.

    Returns:
        The paths of the four files.

    Raises:
        EdgeFMError: A file could not be fetched from any mirror, or its checksum was wrong.
    """
    directory = resolve_data_dir(dest)
    checksums = checksums or datasets.PUBLISHED_SHA256  # read at call time: the one table of checksums
    done, failures = [], []
    if directory.is_dir():
        _clear_stale_downloads(directory)
    for name in FILE_NAMES:
        target = directory / name
        if target.is_file() and sha256_file(target) == checksums[name]:
            done.append(target)
            continue
        check_output_dir(directory, "--data-dir")  # a folder that cannot be written fails before any download
        errors = []
        for base in base_urls:
            url = base.rstrip("/") + "/" + name
            try:
                _download(url, target, checksums[name], progress, timeout)
                done.append(target)
                break
            except _DownloadError as exc:
                errors.append(str(exc))
        else:
            failures.append(f"{name}: " + "; ".join(errors))
    if failures:
        raise EdgeFMError(
            "download failed: "
            + " | ".join(failures)
            + f"; check the network (or its proxy), or copy the four files into {directory} (or point --data-dir "
            "at a copy)."
        )
    return done


FILE_NAMES = tuple(name for pair in FILES.values() for name in pair)  # the four release files

# A temporary download untouched this long is what a killed fetch left (a live one writes every moment).
STALE_SECONDS = 600


def _clear_stale_downloads(directory: Path) -> None:
    """Removes what a killed fetch left: the dataset's temporary files that nothing has written to for
    :data:`STALE_SECONDS` (a fetch running beside this one keeps its own)."""
    for leftover in directory.glob(".tmp-*"):
        try:
            stale = time.time() - leftover.stat().st_mtime > STALE_SECONDS
        except FileNotFoundError:
            continue
        if stale and leftover.is_file() and any(leftover.name.endswith(f"-{name}") for name in FILE_NAMES):
            leftover.unlink(missing_ok=True)


# The largest release file (training images) is about 26 MB: a mirror sending more is not sending it.
MAX_FILE_BYTES = 64_000_000


class _DownloadError(Exception):
    pass


def _download(url: str, target: Path, expected_sha: str, progress: ProgressFn | None, timeout: float) -> None:
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, atomic_path(target) as tmp:
            total = int(response.headers.get("Content-Length") or 0) or None
            if total is not None and total > MAX_FILE_BYTES:
                raise _DownloadError(f"{url} is {total:,} bytes, more than any release file; file refused")
            received = 0
            with open(tmp, "wb") as out:
                for chunk in iter(lambda: response.read(1 << 16), b""):
                    received += len(chunk)
                    if received > MAX_FILE_BYTES:  # a server that sends more than it said, or says nothing
                        raise _DownloadError(f"{url} sent more than {MAX_FILE_BYTES:,} bytes; file refused")
                    out.write(chunk)
                    digest.update(chunk)
                    if progress:
                        progress(target.name, received, total)
            if digest.hexdigest() != expected_sha:
                # Raising inside atomic_path discards the temporary file: nothing lands.
                raise _DownloadError(
                    f"checksum mismatch from {url} (expected {expected_sha[:12]}…, got {digest.hexdigest()[:12]}…); "
                    "file refused"
                )
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise _DownloadError(f"{url}: {reason}") from None

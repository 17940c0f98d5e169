"""What was measured of each bundle in a folder (``models/``): size, accuracy and latency.

The figures come from a benchmark result (``edge-fm bench models/ --json ...``) when one is given
or lies in the folder as ``bench.json``, else from each bundle's ``measurement.json`` (written with
its model card by ``edge-fm bench models/ --cards``); never from the card's Markdown. Sizes are
always read from the files themselves. This module loads no TensorFlow: the web demo reads it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edge_fm.errors import EdgeFMError
from edge_fm.export.bundles import BENCH_FILE, MEASUREMENT_FILE, MODEL_FILE, Bundle
from edge_fm.io import read_json
from edge_fm.swap import restore_retired

BENCH_IN_FOLDER = BENCH_FILE
# What a bundle row takes from a measurement, and the types its record must give them.
FIGURES = ("accuracy", "threads", "latency", "examples", "confusion_matrix")
MEASUREMENT_FIELDS = {
    "results": "dict",
    "results.accuracy": "number",
    "results.threads": "int",
    "results.latency": "dict",
    "results.latency.p50_ms": "number",
    "results.latency.p90_ms": "number",
    "results.examples": "int",
    "results.confusion_matrix": "list",
}


def bundles_in(folder: Path | str) -> list[Path]:
    """The bundle folders (with a ``model.tflite``) directly inside ``folder``, by name.

    Hidden folders are left out: they are what an interrupted write left (``.tmp-NAME``, a shipped
    model's ``.old-NAME``), never a bundle to read. A ``.old-NAME`` whose ``NAME`` a killed swap
    removed is put back first.
    """
    restore_retired(folder)
    return sorted(p.parent for p in Path(folder).glob(f"*/{MODEL_FILE}") if not p.parent.name.startswith("."))


def bench_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The measured rows of a bench result at its first thread count (the Keras baseline left out)."""
    ok = [row for row in result.get("rows", []) if row.get("status") == "ok" and row.get("format") != "keras"]
    if not ok:
        return []
    threads = min(row.get("threads", 1) for row in ok)
    return [row for row in ok if row.get("threads", 1) == threads]


def bundle_name(row: dict[str, Any]) -> str:
    """The bundle a bench row measured: its catalog name, else its bundle folder's name."""
    return row.get("model") or Path(row.get("path", "")).parent.name or row["artifact"]


def read_bench(path: Path | str) -> dict[str, Any]:
    """Reads a bench result JSON.

    Raises:
        EdgeFMError: The file is missing, not JSON, or not a result of ``edge-fm bench``.
    """
    from edge_fm.result_files import check_bench_result

    return check_bench_result(read_json(path), path)


def folder_rows(folder: Path | str, bench: Path | str | None = None) -> tuple[list[dict[str, Any]], str]:
    """One row per bundle of ``folder``, shaped as a bench row, and where its figures come from.

    Args:
        folder: A folder of bundles.
        bench: A bench result to read the figures from; default ``folder/bench.json`` if present.

    Returns:
        ``(rows, source)``: rows with ``model``, ``artifact``, ``format``, ``path``, ``bytes``, and
        when measured ``accuracy``, ``threads`` and ``latency`` (``p50_ms``, ``p90_ms``), plus the
        ``confusion_matrix`` from a bench result; ``source`` says where the figures were read.
    """
    folder = Path(folder)
    bench = (
        Path(bench) if bench else (folder / BENCH_IN_FOLDER if (folder / BENCH_IN_FOLDER).is_file() else None)
    )
    measured: dict[str, dict] = {}
    if bench is not None:
        measured = {bundle_name(row): row for row in bench_rows(read_bench(bench))}
    rows = [bundle_row(bundle, measured.get(bundle.name)) for bundle in bundles_in(folder)]
    source = f"benchmark result {bench}" if bench is not None else f"each bundle's {MEASUREMENT_FILE}"
    return rows, source


def bundle_row(bundle: Path | str, measured: dict[str, Any] | None = None) -> dict[str, Any]:
    """One bundle's row (see :func:`folder_rows`): figures from ``measured`` (a bench row), else the
    bundle's ``measurement.json``."""
    bundle = Path(bundle)
    path = bundle / MODEL_FILE
    row = {
        "model": bundle.name,
        "artifact": bundle.name,
        "path": str(path),
        "format": _description(bundle).get("format"),
        "bytes": path.stat().st_size,
        "shipped": True,
    }
    figures = measured or _recorded_figures(bundle)
    for key in FIGURES:
        if figures.get(key) is not None:
            row[key] = figures[key]
    return row


def _description(bundle: Path) -> dict:
    try:
        return Bundle.open(bundle).description
    except EdgeFMError:  # a corrupt model.json: the row still shows the file's size
        return {}


def _recorded_figures(bundle: Path) -> dict[str, Any]:
    """A shipped model's measured figures, from the record written with its card (none when it has none)."""
    from edge_fm.records import check_fields
    from edge_fm.result_files import read_result_file

    path = bundle / MEASUREMENT_FILE
    if not path.is_file():
        return {}
    record = read_result_file(path, "measurement")
    check_fields(record, MEASUREMENT_FIELDS, path)
    return record["results"]

"""The model cards (``MODEL_CARD.md``) and measured figures (``measurement.json``) of a folder of shipped
models, rewritten from a bench result of that folder: the one way cards change after ``edge-fm ship``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edge_fm.bench.measurements import FIGURES
from edge_fm.export.bundles import MEASUREMENT_FILE, read_description
from edge_fm.io import write_bytes_atomic
from edge_fm.result_files import write_result_file
from edge_fm.shipping.card_forms import folder_forms
from edge_fm.shipping.cards import model_card
from edge_fm.shipping.catalog import read_provenances
from edge_fm.shipping.runs_on import runs_on_rows
from edge_fm.shipping.ship import CARD
from edge_fm.train.runs import record_files


def refresh_cards(models_dir: Path | str, result: dict[str, Any]) -> list[Path]:
    """Rewrites the model cards of a catalog, and each model's ``measurement.json``, from a bench result
    of :func:`edge_fm.shipping.catalog.bench_catalog` (just measured, or read back with
    :func:`edge_fm.bench.measurements.read_bench`: the same result gives the same bytes).

    Returns:
        The cards written.
    """
    models_dir = Path(models_dir)
    threads = result["options"]["threads"][0]
    rows = [row for row in result["rows"] if row.get("status") == "ok" and row["threads"] == threads]
    environment, test_source = result["environment"], result["test_set"]["source"]
    written = write_cards(
        models_dir, rows, read_provenances(models_dir), environment, test_source, result["checks"]
    )
    for row in rows:
        write_measurement(models_dir / row["model"], row, result)
    return written


def write_measurement(folder: Path, row: dict[str, Any], result: dict[str, Any]) -> Path:
    """A shipped model's measured figures (``measurement.json``), which readers take instead of its card's text."""
    figures = {key: row[key] for key in ("model", "format", "bytes", "sha256", *FIGURES) if key in row}
    figures["test_set"] = result["test_set"].get("source")
    figures["measured"] = row.get("measured_in", result.get("started"))
    environment = {k: v for k, v in row.get("measured_on", result["environment"]).items() if k != "hostname"}
    # Not refused for private paths: a catalog measured under a temporary folder is not a committed one.
    command = result.get("command", "")
    written = write_result_file(
        folder / MEASUREMENT_FILE, "measurement", figures, command, environment, public=False
    )
    record_files(folder, [MEASUREMENT_FILE])
    return written


def write_cards(
    models_dir: Path,
    rows: Sequence[dict],
    provenances: dict[str, dict],
    environment: dict,
    test_source: str,
    model_checks: Sequence[dict],
) -> list[Path]:
    """Rewrites the ``MODEL_CARD.md`` of the model of each row (one row a model, at one thread count).

    A row carried over from an earlier run states that run's machine, and no target is judged on it.

    Returns:
        The cards written.
    """
    written = []
    for row in rows:
        name = row["model"]
        description = read_description(models_dir / name)
        judged = () if "measured_on" in row else [c for c in model_checks if c["model"] == name]
        forms = folder_forms(models_dir / name)
        card = model_card(
            name,
            provenances[name],
            description,
            row,
            row.get("measured_on", environment),
            test_source,
            judged,
            forms,
            runs_on_rows(models_dir / name, forms),
        )
        write_bytes_atomic(models_dir / name / CARD, card.encode())
        record_files(models_dir / name, [CARD])
        written.append(models_dir / name / CARD)
    return written

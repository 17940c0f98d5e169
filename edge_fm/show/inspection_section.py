"""The HTML report's section on an artifact: ops by kind, the layers quantization hurts most, what each runtime runs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from edge_fm.errors import EdgeFMError


def inspection_section(
    page: dict[str, Any],
    artifact: Path,
    source_run: Path | None,
    data_dir: Path | str | None,
    progress: Callable[[str], None],
) -> None:
    """Adds ``inspection`` to a bundle's page (:func:`edge_fm.bench.inspection.inspect_artifact`); when the
    inspection fails, the rest of the page stands and a note says why."""
    from edge_fm.bench.inspection import inspect_artifact, worst_layers

    progress("inspecting the artifact")
    try:
        report = inspect_artifact(artifact, source_run, data_dir, progress=progress)
    except EdgeFMError as exc:
        page["notes"].append(f"Ops, quantization and runtimes not shown: {exc}")
        return
    page["inspection"] = {
        "summary": report["summary"],
        "kinds": report["kinds"],
        "worst": worst_layers(report),
        "errors": report["errors"],
        "runs_on": report.get("runs_on", []),
    }

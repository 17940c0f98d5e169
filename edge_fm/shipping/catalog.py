"""A folder of shipped models (``models/``): read it, and benchmark its models in one run (``edge-fm bench``),
their rows made the folder's by :mod:`edge_fm.shipping.verdicts` (targets judged) and their cards rewritten
by :mod:`edge_fm.shipping.card_refresh`.

A folder is a catalog when its sub-folders hold ``provenance.json`` files (written by
:mod:`edge_fm.shipping.ship`). A model whose artifact is too large to keep in the folder is measured from
where its export wrote it; on a machine without that file its previous row is carried over, marked
``remeasured: false`` with the machine that measured it, and no target is judged on it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edge_fm.bench.benchmark import BenchOptions, bench, target_list
from edge_fm.bench.measurements import read_bench
from edge_fm.errors import EdgeFMError
from edge_fm.export.bundles import MODEL_FILE
from edge_fm.io import read_json
from edge_fm.shipping.ship import PROVENANCE
from edge_fm.shipping.verdicts import ShippedModels, annotate
from edge_fm.swap import restore_retired


def is_catalog(path: Path | str) -> bool:
    """True when ``path`` is a folder of shipped models (sub-folders with a provenance record)."""
    path = Path(path)
    return path.is_dir() and any(path.glob(f"*/{PROVENANCE}"))


def read_provenances(models_dir: Path | str) -> dict[str, dict]:
    """Model name -> its ``provenance.json``, for every model of the folder (a model a killed ship
    left as ``.old-NAME`` alone is put back first)."""
    restore_retired(models_dir)
    return {
        p.parent.name: read_json(p)
        for p in sorted(Path(models_dir).glob(f"*/{PROVENANCE}"))
        if not p.parent.name.startswith(".")  # an interrupted ship's .tmp-NAME or .old-NAME
    }


def read_shipped(folder: Path | str) -> ShippedModels:
    """The catalog at ``folder``, to be measured here (a folder that also holds other artifacts is refused)."""
    folder = Path(folder)
    _check_only_shipped(folder)
    provenances = read_provenances(folder)
    away = {
        name: Path(p["artifact"].get("exported_to", ""))
        for name, p in provenances.items()
        if not p.get("artifact_shipped", True)
    }
    present = {name: path for name, path in away.items() if path.is_file()}
    in_folder = [folder / name / MODEL_FILE for name in provenances if name not in away]
    return ShippedModels(folder, provenances, away, present, (*in_folder, *present.values()))


def bench_catalog(
    models_dir: Path | str,
    options: BenchOptions,
    data_dir: Path | str | None = None,
    previous: dict | None = None,
    sample: bool = False,
    data: str | Path | None = None,
) -> dict[str, Any]:
    """Benchmarks every model of a catalog in one run and judges their targets.

    The cards are rewritten from the result by :func:`edge_fm.shipping.card_refresh.refresh_cards`.

    Args:
        models_dir: The catalog.
        options: How to measure (threads, runs...); the targets are judged at the first thread count.
        data_dir: Where the full dataset is.
        previous: An earlier result of this function, whose rows of models that cannot be measured
            here are carried over.
        sample: Score on the embedded sample instead of the test split (for a smoke run).
        data: Where the models' own dataset is, when not where their ``model.json`` says.

    Returns:
        The bench result, its rows named by model, with the targets judged (``checks``).
    """
    if not is_catalog(models_dir):
        raise EdgeFMError(
            f"{models_dir} is not a folder of shipped models (no */{PROVENANCE}): ship models into it with "
            "`edge-fm ship`, or bench its artifacts with `edge-fm bench`."
        )
    return measure([models_dir], "local", options, None, data_dir, sample, previous, data=data)


def measure(
    paths: Sequence[Path | str],
    target,
    options: BenchOptions,
    baseline: Path | str | None = None,
    data_dir: Path | str | None = None,
    sample: bool = False,
    previous: dict | None = None,
    *,
    command: str = "",
    data: str | Path | None = None,
) -> dict[str, Any]:
    """``edge-fm bench``: ``paths`` measured by :func:`edge_fm.bench.benchmark.bench` on ``target``; a folder
    of shipped models measured here (see :func:`shipped_models`) has its rows annotated by it.

    Args:
        previous: The result this one replaces: a catalog carries over its rows of models that cannot
            be measured here.
        command: The command line, recorded in the result.
    """
    shipped = shipped_models(paths, target, baseline)
    result = bench(
        list(shipped.artifacts if shipped else paths), target, options, baseline, data_dir, sample, data
    )
    if shipped:
        result = annotate(shipped, result, previous)
    result["command"] = command
    return result


def shipped_models(paths: Sequence[Path | str], target, baseline: Path | str | None) -> ShippedModels | None:
    """The folder of shipped models ``paths`` names, when it is one measured here without a baseline;
    None for anything else (measured as it is)."""
    if not _measures_shipped_models(paths, target, baseline):
        return None
    return read_shipped(paths[0])


def _measures_shipped_models(paths: Sequence[Path | str], target, baseline: Path | str | None) -> bool:
    """One folder of shipped models, measured here (one local target), without a baseline."""
    targets = target_list(target)
    local = len(targets) == 1 and getattr(targets[0], "name", targets[0]) == "local"
    return len(paths) == 1 and is_catalog(paths[0]) and local and baseline is None


def check_cards_request(paths: Sequence[Path | str], target, baseline: Path | str | None) -> None:
    """Refuses a request to rewrite model cards from anything but one folder of shipped models measured here.

    Raises:
        EdgeFMError: Several paths, a path that is no catalog, another target, or a baseline.
    """
    if not _measures_shipped_models(paths, target, baseline):
        raise EdgeFMError(
            "--cards rewrites the model cards of one folder of shipped models measured here: "
            "pass only that folder (e.g. models/), with the local target and no --baseline."
        )


def _check_only_shipped(models_dir: Path) -> None:
    """Refuses a folder of shipped models that also holds other artifacts: they would go unmeasured."""
    others = sorted(
        folder.name
        for folder in models_dir.iterdir()
        if folder.is_dir()
        and not folder.name.startswith(".")
        and not (folder / PROVENANCE).is_file()
        and any(folder.rglob("*.tflite"))
    ) + sorted(file.name for file in models_dir.glob("*.tflite"))
    if others:
        raise EdgeFMError(
            f"{models_dir} holds shipped models (with {PROVENANCE}) and other artifacts ({', '.join(others[:4])}"
            f"{', ...' if len(others) > 4 else ''}), which a bench of shipped models would leave out: bench "
            "those on their own, or move them out of the folder."
        )


def previous_result(path: Path | str | None) -> dict | None:
    """The bench result a new one will replace (its rows that cannot be remeasured are carried over)."""
    if path is None or not Path(path).is_file():
        return None
    try:
        return read_bench(path)
    except EdgeFMError:  # not a result file: nothing to carry over
        return None

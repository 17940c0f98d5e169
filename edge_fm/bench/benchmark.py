"""The benchmark stage: the device runner on a target, and its JSON turned into a table.

Targets:
    ``local``: the runner (``edge_fm/runner.py``) in child processes of this machine's Python.
    ``ssh://user@host[:port]``: the runner, the artifacts and the test set are copied to a
    temporary folder on the host, run there with the host's ``python3`` (which needs only
    ``numpy`` and ``ai-edge-litert``), and removed afterwards.

Several devices at once (a list of targets): one thread per device, so a device never runs
two benchmarks at once; each row names its ``target``.

Example:
    >>> options = BenchOptions(threads=(1, 2))
    >>> result = bench(["runs/cnn-2conv-int8-1"], target="local", options=options)  # doctest: +SKIP
    >>> fleet = bench(["models/"], ["ssh://pi@pi-a.local", "ssh://pi@pi-b.local"])  # doctest: +SKIP
"""

from __future__ import annotations

import csv
import dataclasses
import io
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edge_fm import runner
from edge_fm.bench.keras_baseline import measure_keras_baseline
from edge_fm.bench.options import BenchOptions, parse_threads  # noqa: F401 (re-exported)
from edge_fm.bench.split_file import NO_TEST_SET, DataGroup, write_test_set
from edge_fm.bench.targets import TEST_SET_FILE, LocalTarget, SshTarget, parse_target  # noqa: F401 (re-exported)
from edge_fm.data.reference import group_by_data
from edge_fm.errors import EdgeFMError
from edge_fm.export.bundles import MODEL_FILE, Described, describe, is_run
from edge_fm.swap import restore_retired

# ---------------------------------------------------------------- inputs


def _not_a_bundles_own_model(artifact: Path, top: Path) -> bool:
    """Whether ``artifact``, found under ``top``, is some other file than a bundle's model: one beside it (an
    Ethos-U form's compiled ``model_vela.tflite``), or one in a folder below a bundle's own (a form kept
    inside a shipped model)."""
    if artifact.name != MODEL_FILE and (artifact.parent / MODEL_FILE).is_file():
        return True
    return any(
        (folder / MODEL_FILE).is_file() for folder in artifact.parent.parents if folder.is_relative_to(top)
    )


def collect_artifacts(paths: list[Path | str]) -> list[Path]:
    """The .tflite files named by ``paths``: files as they are, folders searched recursively.

    A bundle stands for its own model: the forms kept inside it (a shipped model's ``mobile/`` and
    ``mcu/``) are bundles of their own, and a file beside its model (an Ethos-U form's compiled model,
    which only the NPU runs) is not the bundle's; each is measured when named.

    Raises:
        EdgeFMError: A path does not exist, or holds no .tflite file (a training run, say).
    """
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_file() and path.suffix == ".tflite":
            found.append(path)
        elif path.is_file():
            raise EdgeFMError(
                f"{path} is not a .tflite file: pass an artifact, an export bundle or a folder of them."
            )
        elif path.is_dir():
            restore_retired(path)  # a model a killed ship left as .old-NAME alone is listed again
            inside = sorted(
                p
                for p in path.rglob("*.tflite")
                # hidden parts (.tmp-*, .old-*) are what an interrupted write left, never an artifact
                if not any(part.startswith(".") for part in p.relative_to(path).parts)
                and not _not_a_bundles_own_model(p, path)
            )
            if not inside:
                hint = (
                    f"it is a run, not an export: `edge-fm export {path} -f int8` makes one, or pass it as --baseline"
                    if is_run(path)
                    else "pass export bundles or .tflite files"
                )
                raise EdgeFMError(f"{path} holds no .tflite artifact: {hint}.")
            found.extend(inside)
        else:
            raise EdgeFMError(
                f"{path} does not exist: pass .tflite files, export bundles (runs/<arch>-int8-N) or a folder of them."
            )
    unique = list(dict.fromkeys(p.resolve() for p in found))
    return unique


def data_groups(
    artifacts: list[Path], descriptions: dict[Path, Described], data: str | Path | None = None
) -> list[DataGroup]:
    """The artifacts grouped by the dataset they were made from (each group gets its own test split),
    in the order their first artifact comes.

    Raises:
        EdgeFMError: ``data`` (one dataset's place) given for models of several datasets.
    """
    groups = group_by_data([descriptions[path].description for path in artifacts], data)
    return [DataGroup([artifacts[i] for i in indices], first) for first, indices in groups.values()]


# ---------------------------------------------------------------- the stage


def bench(
    paths: list[Path | str],
    target: str | LocalTarget | SshTarget | list[str | LocalTarget | SshTarget] = "local",
    options: BenchOptions = BenchOptions(),
    baseline: Path | str | None = None,
    data_dir: Path | str | None = None,
    sample: bool = False,
    data: str | Path | None = None,
) -> dict[str, Any]:
    """Measures artifacts on a target, or on several devices at once, and returns the result document
    (see :func:`write_results`).

    Args:
        paths: .tflite files, export bundles, or folders of them (``models/``).
        target: ``local``, ``ssh://user@host[:port]``, ``tflm``, ``vela:CONFIG`` or a target object; or a
            list of them, a fleet: each device measures on a thread of its own (so a device never runs
            two benchmarks at once), every row names its ``target``, and a device that fails
            (unreachable, no Python, a runner error) gets an error row per artifact while the others go on.
        options: How to measure, the same on every device.
        baseline: A training or optimization run whose Keras model is measured here (after the
            devices) through TensorFlow: the float reference for the accuracy change.
        data_dir: Where the Fashion-MNIST test split is.
        sample: Use the embedded sample's test images instead (labelled as such).
        data: Where the artifacts' own dataset is, when not where their ``model.json`` says.

    Models of several datasets are measured a dataset at a time, each group on its own test split;
    each row then names its ``test_set``, accuracy changes are taken within a group, and the
    result's ``test_set`` lists every group's (``groups``).

    Raises:
        EdgeFMError: No artifacts, missing data, ``data`` or a baseline for models of several
            datasets, a device given twice, or a target that cannot be used (each with a fix).
    """
    artifacts = collect_artifacts(paths)
    descriptions = {path: describe(path) for path in artifacts}
    targets = _parse_targets(target)
    reads_images = any(getattr(device, "needs_test_set", True) for device in targets)
    groups = _groups_of(artifacts, descriptions, data) if reads_images else [DataGroup(artifacts)]
    _check_baseline(baseline, groups)
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="edge-fm-bench-") as tmp:
        infos, measured = [], []
        for number, group in enumerate(groups):  # a dataset at a time, every device at once
            test_set = Path(tmp) / (TEST_SET_FILE if len(groups) == 1 else f"{number}-{TEST_SET_FILE}")
            infos.append(
                write_test_set(test_set, data_dir, sample, group, data) if reads_images else dict(NO_TEST_SET)
            )
            measured.append(_run_devices(targets, group.artifacts, test_set, options))
        # Measured here after the devices, so it never competes with a local device for the cores.
        baseline_rows = measure_keras_baseline(baseline, test_set, options) if baseline else []
    parts = _rows_by_device(targets, groups, infos, measured, baseline_rows, descriptions)
    parts.update(
        test_set=infos[0] if len(infos) == 1 else grouped_test_set(infos),
        options=dataclasses.asdict(options),
        started=time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        seconds=round(time.time() - started, 1),
    )
    return {key: parts[key] for key in RESULT_KEYS if key in parts}


def _groups_of(artifacts: list[Path], descriptions: dict[Path, Described], data) -> list[DataGroup]:
    """The data groups of the readable artifacts; a bundle whose ``model.json`` cannot be read names no
    dataset, so it runs with the first group and its rows become error rows that say why (alone, it is
    that one error)."""
    broken = [path for path in artifacts if descriptions[path].error is not None]
    readable = [path for path in artifacts if descriptions[path].error is None]
    if not readable:
        raise EdgeFMError(descriptions[broken[0]].error)
    groups = data_groups(readable, descriptions, data)
    if broken:
        groups[0] = dataclasses.replace(groups[0], artifacts=groups[0].artifacts + broken)
    return groups


# The result document's keys, in the order it is written (a fleet's have all of them).
RESULT_KEYS = (
    "target",
    "targets",
    "environment",
    "environments",
    "errors",
    "test_set",
    "options",
    "reference",
    "references",
    "rows",
    "started",
    "seconds",
)


def target_list(target: Any) -> list[Any]:
    """``bench``'s ``target`` as a list: a list or tuple of targets (a fleet), or one target."""
    return list(target) if isinstance(target, Sequence) and not isinstance(target, str) else [target]


def _parse_targets(
    target: str | LocalTarget | SshTarget | Sequence[str | LocalTarget | SshTarget],
) -> list[Any]:
    """The target objects of ``bench``'s ``target`` (one, or a list or tuple); none, or a device given twice,
    is refused."""
    targets = [parse_target(t) if isinstance(t, str) else t for t in target_list(target)]
    if not targets:
        raise EdgeFMError("no bench target given: pass local, ssh://user@host[:port], tflm or vela:CONFIG.")
    names = [t.name for t in targets]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise EdgeFMError(
            f"--target {twice[0]} is given twice: a device runs one benchmark at a time; give it once."
        )
    return targets


def _run_devices(
    targets: list[Any], artifacts: list[Path], test_set: Path, options: BenchOptions
) -> list[tuple[dict | None, str | None]]:
    """Each device's result or error, every device at once; one device's error is raised as it is."""
    if len(targets) == 1:
        return [(targets[0].run(artifacts, test_set, options), None)]
    from concurrent.futures import ThreadPoolExecutor

    count = len(targets)
    with ThreadPoolExecutor(max_workers=count, thread_name_prefix="edge-fm-device") as pool:
        return list(
            pool.map(_measure_device, targets, [artifacts] * count, [test_set] * count, [options] * count)
        )


def _rows_by_device(
    targets: list[Any],
    groups: list[DataGroup],
    infos: list[dict[str, Any]],
    measured: list[list[tuple[dict | None, str | None]]],
    baseline_rows: list[dict[str, Any]],
    descriptions: dict[Path, Described],
) -> dict[str, Any]:
    """The rows of every group on every device, each group's accuracy changes against its float
    reference; a fleet's rows name their device, and a device's error becomes its rows."""
    fleet = len(targets) > 1
    rows, environments, errors, references = [], {}, {}, {}
    for group, info, group_measured in zip(groups, infos, measured):
        for target, (result, error) in zip(targets, group_measured):
            device_rows = (
                [_checked_description(row, descriptions) for row in result["rows"]]
                if result
                else _device_error_rows(group.artifacts, error, descriptions)
            )
            for row in device_rows:
                if fleet:
                    row["target"] = target.name
                if len(groups) > 1:
                    row["test_set"] = info["source"]
            # A fleet's baseline rows are shown once, for no device: each device's changes use a copy.
            base = [dict(row) for row in baseline_rows] if fleet else baseline_rows
            reference = add_accuracy_deltas(base + device_rows)
            references[target.name] = (
                ", ".join(n for n in (references.get(target.name), reference) if n) or None
            )
            rows += device_rows
            if result or target.name not in environments:
                environments[target.name] = result["environment"] if result else None
            if error:
                errors[target.name] = error
    if not fleet:
        name = targets[0].name
        return {
            "target": name,
            "environment": environments[name],
            "reference": references[name],
            "rows": baseline_rows + rows,
        }
    for row in baseline_rows:
        row["target"] = "local"
    names = [target.name for target in targets]
    return {
        "target": ", ".join(names),
        "targets": names,
        "environment": {},
        "environments": environments,
        "errors": errors,
        "reference": baseline_rows[0]["artifact"] if baseline_rows else None,
        "references": references,
        "rows": baseline_rows + rows,
    }


def _check_baseline(baseline: Path | str | None, groups: list[DataGroup]) -> None:
    """Refuses a baseline that is not a finished run, or one given for models of several datasets."""
    if not baseline:
        return
    if len(groups) > 1:
        raise EdgeFMError(
            f"--baseline {baseline} is the float reference of one dataset's models, but these models were "
            f"made from {len(groups)} datasets: bench one dataset's models with it."
        )
    from edge_fm.train.runs import Run  # loads TensorFlow: only when a baseline is asked for

    Run(baseline).require_model()  # a wrong --baseline is refused before any measuring


def grouped_test_set(infos: list[dict[str, Any]]) -> dict[str, Any]:
    """The ``test_set`` of a result over models of several datasets: every group's, and their sum."""
    return {
        "source": "; ".join(info["source"] for info in infos) + " (each model on its own dataset's)",
        "images": sum(info["images"] for info in infos),
        "sample": any(info["sample"] for info in infos),
        "groups": infos,
    }


def _checked_description(row: dict[str, Any], descriptions: dict[Path, Described]) -> dict[str, Any]:
    """The row, or an error row when the bundle's ``model.json`` is corrupt (the device's runner only skips it);
    a bare file's row gets the format its embedded description names (the runner reads ``model.json`` only)."""
    # Every device names its rows by the paths it was given, the keys of ``descriptions``.
    described = descriptions.get(Path(row.get("path", "")), Described({}, bare=True))
    if described.bare:
        if row.get("format") is None:
            row["format"] = described.format
        return row
    if described.error is not None:
        kept = {
            key: row[key]
            for key in ("artifact", "path", "threads", "bytes", "gzip_bytes", "sha256")
            if key in row
        }
        return {**kept, "format": None, "status": "error", "error": described.error}
    return row


def _measure_device(
    target, artifacts: list[Path], test_set: Path, options: BenchOptions
) -> tuple[dict | None, str | None]:
    """One device's result, or its error: nothing a device does stops the others."""
    try:
        return target.run(artifacts, test_set, options), None
    except EdgeFMError as exc:
        return None, str(exc)
    except Exception as exc:  # noqa: BLE001 - a device's unforeseen failure is its error rows, not the fleet's end
        return None, f"{type(exc).__name__}: {exc}"


def _device_error_rows(
    artifacts: list[Path], error: str, descriptions: dict[Path, Described]
) -> list[dict[str, Any]]:
    return [
        {
            "artifact": runner.artifact_name(str(path)),
            "format": descriptions[path].format,
            "path": str(path),
            "status": "error",
            "error": error,
        }
        for path in artifacts
    ]


def compare_devices(result: dict[str, Any]) -> dict[str, Any]:
    """The fleet's rows as artifacts x devices at the first thread count (and the Keras baseline left out).

    Returns:
        ``{"devices": [names], "threads": n, "artifacts": [{"artifact", "format", "path", "cells":
        {device: {"status", "accuracy", "p50_ms", "error"}}}]}``; a device without a row for an
        artifact has no cell.
    """
    threads = result.get("options", {}).get("threads", [1])[0]
    devices = list(result.get("targets") or dict.fromkeys(r.get("target") for r in result["rows"]))
    by_path: dict[str, dict[str, Any]] = {}
    for row in result["rows"]:
        if row.get("format") == "keras" or row.get("threads") not in (None, threads):
            continue
        entry = by_path.setdefault(
            row.get("path") or row["artifact"],
            {"artifact": row["artifact"], "format": row.get("format"), "path": row.get("path"), "cells": {}},
        )
        entry["cells"][row.get("target")] = {
            "status": row.get("status"),
            "accuracy": row.get("accuracy"),
            "p50_ms": (row.get("latency") or {}).get("p50_ms"),
            "error": row.get("error"),
        }
    return {"devices": devices, "threads": threads, "artifacts": list(by_path.values())}


def add_accuracy_deltas(rows: list[dict[str, Any]]) -> str | None:
    """Sets each row's ``accuracy_delta`` against the float reference and returns its name.

    The reference is the Keras baseline if there is one, else the first fp32 artifact.
    """
    ok = [r for r in rows if r.get("status") == "ok"]
    reference = next((r for r in ok if r.get("format") == "keras"), None) or next(
        (r for r in ok if r.get("format") == "fp32"), None
    )
    for row in rows:
        if reference and row.get("status") == "ok":
            row["accuracy_delta"] = row["accuracy"] - reference["accuracy"]
    return reference["artifact"] if reference else None


def best_artifact(rows: list[dict[str, Any]], tolerance: float = 0.005) -> dict[str, Any] | None:
    """The smallest artifact whose accuracy is within ``tolerance`` of the most accurate one."""
    ok = [r for r in rows if r.get("status") == "ok" and r.get("format") != "keras"]
    if not ok:
        return None
    top = max(r["accuracy"] for r in ok)
    return min(
        (r for r in ok if r["accuracy"] >= top - tolerance), key=lambda r: (r["bytes"], -r["accuracy"])
    )


def below_min_accuracy(rows: list[dict[str, Any]], minimum: float) -> list[str]:
    """Artifacts that fail a ``--min-accuracy`` gate (errors fail it too)."""
    failing = []
    for row in rows:
        if row.get("status") != "ok":
            failing.append(f"{row['artifact']} ({row.get('error', 'error')})")
        elif row["accuracy"] < minimum:
            failing.append(f"{row['artifact']} ({row['accuracy']:.2%})")
    return list(dict.fromkeys(failing))


# What identifies a row and what it measured first: every table of rows starts with these.
ROW_KEYS = ("artifact", "format", "threads", "bytes", "gzip_bytes", "accuracy", "accuracy_delta")
CSV_COLUMNS = (
    *ROW_KEYS,
    "p50_ms",
    "p90_ms",
    "p99_ms",
    "mean_ms",
    "std_ms",
    "images_per_second",
    "init_ms",
    "peak_rss_mb",
    "status",
    "error",
    "path",
)


def flat_row(row: dict[str, Any]) -> dict[str, Any]:
    """A row with the latency figures lifted to the top level (for CSV and tables)."""
    flat = {k: v for k, v in row.items() if k != "latency"}
    for key, value in (row.get("latency") or {}).items():
        flat[key] = value
    return flat


def write_results(
    result: dict[str, Any],
    json_path: Path | str | None = None,
    csv_path: Path | str | None = None,
    public: bool = False,
) -> None:
    """Writes the result as JSON (in the envelope of :mod:`edge_fm.result_files`) and/or CSV (atomically).

    ``public``: the JSON is committed with the project, so it may name no path of this machine (a
    run's own ``bench.json`` names its artifacts where they are).
    """
    from edge_fm.io import write_bytes_atomic
    from edge_fm.result_files import write_result_file

    if json_path:
        results = {key: value for key, value in result.items() if key not in ("command", "environment")}
        write_result_file(
            json_path, "bench", results, result.get("command", ""), result.get("environment", {}), public
        )
    if csv_path:
        text = io.StringIO()
        # A fleet's rows say which device measured them: that column comes first.
        columns = ("target", *CSV_COLUMNS) if any("target" in row for row in result["rows"]) else CSV_COLUMNS
        writer = csv.DictWriter(text, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for row in result["rows"]:
            writer.writerow(flat_row(row))
        write_bytes_atomic(Path(csv_path), text.getvalue().encode())

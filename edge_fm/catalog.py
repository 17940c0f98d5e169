"""A folder of shipped models (``models/``): benchmark them in one run, judge their targets, and
rewrite their model cards and the accuracy-size-latency plot from what was measured.

A folder is a catalog when its sub-folders hold ``provenance.json`` files (written by
:mod:`edge_fm.ship`). A model whose artifact is too large to keep in the folder is measured from
where its export wrote it; on a machine without that file its previous row is carried over, marked
``remeasured: false`` with the machine that measured it, and no target is judged on it.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edge_fm.bench import BenchOptions, bench
from edge_fm.cards import folder_forms, model_card, runs_on_rows
from edge_fm.io import atomic_path, read_json, write_bytes_atomic
from edge_fm.ship import CARD, PROVENANCE

# The targets of edge-fm's own shipped models, on the test split, judged in each benchmark run.
ACCURACY_TARGETS = {"mlp": 0.88, "cnn-2conv": 0.92, "cnn-3conv-bn": 0.94, "vgg-gap": 0.938, "mobilenetv2": 0.93,
                    "edge-cnn": 0.95, "edge-cnn-tiny": 0.94}
PAPER_ARCHS = ("mlp", "cnn-2conv", "cnn-3conv-bn", "vgg-gap", "mobilenetv2", "resnet50")
REFERENCE = "cnn-3conv-bn"  # the edge family's size and latency targets compare with its artifact, in the same run
TINY_MAX_BYTES = 100_000  # "at most 100 KB", read strictly (1 KB = 1,000 bytes)


def is_catalog(path: Path | str) -> bool:
    """True when ``path`` is a folder of shipped models (sub-folders with a provenance record)."""
    path = Path(path)
    return path.is_dir() and any(path.glob(f"*/{PROVENANCE}"))


def read_provenances(models_dir: Path | str) -> dict[str, dict]:
    """Model name -> its ``provenance.json``, for every model of the folder."""
    return {p.parent.name: read_json(p) for p in sorted(Path(models_dir).glob(f"*/{PROVENANCE}"))}


def bench_catalog(models_dir: Path | str, options: BenchOptions, data_dir: Path | str | None = None,
                  previous: dict | None = None, sample: bool = False) -> dict[str, Any]:
    """Benchmarks every model of a catalog in one run and rewrites their cards.

    Args:
        models_dir: The catalog.
        options: How to measure (threads, runs...); the first thread count's rows go into the cards.
        data_dir: Where the full dataset is.
        previous: An earlier result of this function, whose rows of models that cannot be measured
            here are carried over.
        sample: Score on the embedded sample instead of the test split (for a smoke run).

    Returns:
        The bench result, its rows named by model, with the targets judged (``checks``).
    """
    models_dir = Path(models_dir)
    provenances = read_provenances(models_dir)
    away = {name: Path(p["artifact"].get("exported_to", "")) for name, p in provenances.items()
            if not p.get("artifact_shipped", True)}
    present = {name: path for name, path in away.items() if path.is_file()}
    # The shipped artifact itself: a model folder also holds its mobile and mcu forms, which are not catalog rows.
    in_folder = [models_dir / name / "model.tflite" for name, p in provenances.items() if p.get("artifact_shipped", True)]
    result = bench([*in_folder, *present.values()], "local", options, data_dir=data_dir, sample=sample)
    by_path = {path.resolve(): name for name, path in present.items()}
    for row in result["rows"]:
        path = Path(row["path"])
        row["model"] = by_path.get(path.resolve(), path.parent.name)
        row["shipped"] = row["model"] not in away
        row["remeasured"] = True
    result["rows"] += carried_rows(previous, sorted(set(away) - set(present)))
    for row in result["rows"]:
        provenance = provenances[row["model"]]
        row["arch"] = provenance["train"]["config"]["arch"]
        row["float_test_accuracy"] = provenance["train"]["metrics"].get("test", {}).get("accuracy")
    ok = [row for row in result["rows"] if row.get("status") == "ok"]
    result["checks"] = checks([row for row in ok if row["threads"] == options.threads[0]])
    write_cards(models_dir, ok, provenances, result["environment"], result["test_set"]["source"], result["checks"],
                options.threads[0])
    return result


_ANNOTATIONS = ("note", "arch", "float_test_accuracy")


def carried_rows(previous: dict | None, names: Sequence[str]) -> list[dict]:
    """The previous rows of models that cannot be measured here, marked with the machine that measured them."""
    if not previous:
        return []
    # Only what the runner measured travels: annotations are recomputed from today's provenance.
    kept = [{key: value for key, value in row.items() if key not in _ANNOTATIONS}
            for row in previous.get("rows", []) if row.get("model") in names]
    for row in kept:
        row["remeasured"] = False
        row.setdefault("measured_in", previous.get("started"))
        row.setdefault("measured_on", previous.get("environment", {}))
    return kept


def write_cards(models_dir: Path, rows: Sequence[dict], provenances: dict[str, dict], environment: dict,
                test_source: str, model_checks: Sequence[dict], threads: int) -> None:
    """Rewrites ``MODEL_CARD.md`` of every model with a row at ``threads``.

    A row carried over from an earlier run states that run's machine, and no target is judged on it.
    """
    for row in rows:
        if row["threads"] != threads:
            continue
        name = row["model"]
        description = read_json(models_dir / name / "model.json")
        judged = () if "measured_on" in row else [c for c in model_checks if c["model"] == name]
        forms = folder_forms(models_dir / name)
        card = model_card(name, provenances[name], description, row, row.get("measured_on", environment), test_source, judged,
                          forms, runs_on_rows(models_dir / name, forms))
        write_bytes_atomic(models_dir / name / CARD, card.encode())


def _met(measured, target, passes) -> bool | None:
    """``passes(measured, target)``, or None when either side was not measured."""
    return None if measured is None or target is None else bool(passes(measured, target))


def checks(rows: Sequence[dict]) -> list[dict]:
    """Every target of the shipped models against what one benchmark run measured.

    A target whose inputs are missing (a model not in the folder, or not remeasured) is ``met: None``.
    """
    by_name = {row["model"]: row for row in rows if row.get("remeasured", True)}

    def value(name: str, key: str):
        row = by_name.get(name)
        return None if row is None else row["latency"]["p50_ms"] if key == "p50" else row[key]

    out = []

    def check(model: str, what: str, measured, target, passes) -> None:
        out.append({"model": model, "check": what, "measured": measured, "target": target,
                    "met": _met(measured, target, passes)})

    for name, target in ACCURACY_TARGETS.items():
        check(name, "int8 test accuracy", value(name, "accuracy"), target, operator.ge)
    papers = [by_name[name]["accuracy"] for name in PAPER_ARCHS if name in by_name]
    ref_bytes, ref_p50 = value(REFERENCE, "bytes"), value(REFERENCE, "p50")
    check("edge-cnn", "accuracy above every shipped paper model", value("edge-cnn", "accuracy"), max(papers, default=None),
          operator.gt)
    check("edge-cnn", f"bytes below {REFERENCE}'s", value("edge-cnn", "bytes"), ref_bytes, operator.lt)
    check("edge-cnn", f"p50 below {REFERENCE}'s", value("edge-cnn", "p50"), ref_p50, operator.lt)
    check("edge-cnn-tiny", "bytes at most 100 KB", value("edge-cnn-tiny", "bytes"), TINY_MAX_BYTES, operator.le)
    check("edge-cnn-tiny", f"p50 at most 1/4 of {REFERENCE}'s", value("edge-cnn-tiny", "p50"),
          None if ref_p50 is None else ref_p50 / 4, operator.le)
    return out


def measure(paths: Sequence[Path | str], target, options: BenchOptions, baseline: Path | str | None = None,
            data_dir: Path | str | None = None, sample: bool = False, previous: dict | None = None) -> dict[str, Any]:
    """``edge-fm bench``: a single catalog measured here goes through :func:`bench_catalog` (its cards are
    rewritten); anything else through :func:`edge_fm.bench.bench`."""
    if len(paths) == 1 and is_catalog(paths[0]) and getattr(target, "name", target) == "local" and baseline is None:
        return bench_catalog(paths[0], options, data_dir, previous, sample)
    return bench(list(paths), target, options, baseline, data_dir, sample)


def row_name(row: dict) -> str:
    """A row's model name in a catalog, else its artifact's name."""
    return row.get("model") or row["artifact"]


def pareto_front(rows: Sequence[dict]) -> set[str]:
    """Names of the rows no other row beats on accuracy (up), bytes (down) and p50 latency (down) at once."""
    def point(row):
        return row["accuracy"], -row["bytes"], -row["latency"]["p50_ms"]

    front = set()
    for row in rows:
        mine = point(row)
        dominated = any(all(o >= m for o, m in zip(point(other), mine)) and point(other) != mine for other in rows)
        if not dominated:
            front.add(row_name(row))
    return front


def plot_front(rows: Sequence[dict], path: Path | str) -> None:
    """Draws accuracy against size and against p50 latency, one marker per model, the front filled.

    Each model has its own colour and marker, named in one legend, so labels never overlap.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    rows = sorted(rows, key=lambda row: row["bytes"])
    front = pareto_front(rows)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.8), sharey=True)
    axis_specs = ((axes[0], lambda row: row["bytes"] / 1000, "size of the .tflite (KB, log scale)"),
                  (axes[1], lambda row: row["latency"]["p50_ms"], "p50 latency, batch 1 (ms, log scale)"))
    markers = "osD^vP*Xhp"
    for ax, x_of, x_label in axis_specs:
        for index, row in enumerate(rows):
            on_front = row_name(row) in front
            name = row_name(row) + ("" if row.get("shipped", True) else " (artifact not in models/)")
            ax.scatter(x_of(row), row["accuracy"] * 100, s=70, marker=markers[index % len(markers)],
                       color=f"C{index % 10}", facecolors=f"C{index % 10}" if on_front else "none",
                       linewidths=1.5, label=name + (" - on the front" if on_front else ""))
        ax.set_xscale("log")
        # Plain numbers: matplotlib's 2x10^2-style minor labels collide on a short log axis.
        ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel(x_label)
        ax.grid(True, alpha=0.3)
    axes[0].set_ylabel("test accuracy (%)")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(4, len(labels)), fontsize=8, frameon=False)
    threads = rows[0]["threads"] if rows else 1
    fig.suptitle(f"Accuracy against size and latency, {threads} thread (filled: on the front, where no other model is "
                 "more accurate, smaller and faster at once)", fontsize=10)
    fig.tight_layout(rect=(0, 0.14 if len(labels) > 4 else 0.08, 1, 1))
    with atomic_path(Path(path)) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def previous_result(path: Path | str | None) -> dict | None:
    """The bench result a new one will replace (its rows that cannot be remeasured are carried over)."""
    if path is None or not Path(path).is_file():
        return None
    try:
        return read_json(path)
    except ValueError:  # not a result file: nothing to carry over
        return None

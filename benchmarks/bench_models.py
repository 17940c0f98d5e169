"""Benchmark every shipped model in one run, write the results table, the model cards and the plot.

Runs `edge-fm bench models/` (1 thread, batch 1, the full test split), then writes
benchmarks/results/models_bench.json, models/<name>/MODEL_CARD.md from each model's provenance and
its measured row, and benchmarks/results/models_front.png (accuracy against size and latency).

A model whose artifact is too large to ship (provenance ``artifact_shipped: false``) is measured in the
same run from the run directory it was exported to; on a machine without that run (a fresh clone)
its last committed row is kept, flagged ``remeasured: false``.

Usage (from the repository root):
    python benchmarks/bench_models.py --data-dir ../shared/data/fashion-mnist
"""

from __future__ import annotations

import argparse
import operator
import os
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from edge_fm.bench import BenchOptions, bench
from edge_fm.io import read_json, write_bytes_atomic, write_json
from edge_fm.report import cpu_text, epochs_text

REPO = Path(__file__).resolve().parents[1]
MODELS = REPO / "models"
RESULTS = Path(__file__).parent / "results"

# Issue 5's targets for the shipped int8 artifacts, on the test split, by architecture.
ACCURACY_TARGETS = {"mlp": 0.88, "cnn-2conv": 0.92, "cnn-3conv-bn": 0.94, "vgg-gap": 0.938, "mobilenetv2": 0.93,
                    "edge-cnn": 0.95, "edge-cnn-tiny": 0.94}
PAPER_ARCHS = ("mlp", "cnn-2conv", "cnn-3conv-bn", "vgg-gap", "mobilenetv2", "resnet50")
REFERENCE = "cnn-3conv-bn"  # the edge family must beat its int8 artifact, measured in the same run
TINY_MAX_BYTES = 100_000  # "<= 100 KB", read strictly (1 KB = 1,000 bytes)

LIMITATIONS = (
    "Trained and tested on Fashion-MNIST only: 28x28 grey images of a single centred garment, light on a "
    "black background. Photos must be converted as model.json describes (grey, inverted if the background "
    "is light, padded square, 28x28); accuracy on real photos is not measured and will be lower. Ten classes "
    "only; anything else is still forced into one of them."
)


def artifact_line(provenance: dict, row: dict) -> str:
    size = f"{provenance['chosen_format']}, {row['bytes']:,} bytes ({row['gzip_bytes']:,} gzip)"
    if provenance.get("artifact_shipped", True):
        return f"`model.tflite`, {size}"
    return f"NOT SHIPPED: {size}, at `{provenance['artifact']['path']}` ({provenance['not_shipped_reason']})"


def qat_line(provenance: dict) -> str:
    epochs = provenance["qat_metrics"].get("epochs_run")
    images = provenance.get("qat_train_images")
    return epochs_text(epochs) + (f" on {images:,} training images" if images else "")


def shown_in_recipe(key: str, value, config: dict) -> bool:
    """Whether a config field belongs in the card's recipe: set, and in force (distillation needs a teacher)."""
    if key in ("arch", "data") or value in (None, (), [], {}, 0.0):
        return False
    return config.get("teacher") is not None or not key.startswith("distill_")


def refused_text(provenance: dict) -> str:
    """The candidates the export refused, and why: a user may want the format that is missing."""
    return "".join(f" Not a candidate: {fmt}, refused by the export ({reason.removesuffix('; nothing was written.')})."
                   for fmt, reason in provenance.get("failed_candidates", {}).items())


def _check_value(what: str, value) -> str:
    """A check's measured or target value in the card's units."""
    if "accuracy" in what:
        return f"{value * 100:.2f}%"
    return f"{value:.3f} ms" if what.startswith("p50") else f"{value:,} bytes"


def targets_text(name: str, model_checks: Sequence[dict]) -> str:
    """The card's paragraph on this model's targets, as this benchmark run judged them; a miss is said plainly."""
    mine = [c for c in model_checks if c["model"] == name and c["met"] is not None]
    if not mine:
        return ""
    parts = [f"{c['check']}: {_check_value(c['check'], c['measured'])} against {_check_value(c['check'], c['target'])}, "
             f"{'met' if c['met'] else '**missed**'}" for c in mine]
    missed = " A latency ratio holds for the CPU measured only: see the README on latency and the CPU." \
        if any(not c["met"] and c["check"].startswith("p50") for c in mine) else ""
    return f"\n\n**Targets** (issue 5, judged in the same benchmark run): {'; '.join(parts)}.{missed}"


def model_card(name: str, provenance: dict, row: dict, environment: dict, test_source: str,
               model_checks: Sequence[dict] = ()) -> str:
    train = provenance["train_metrics"]
    config = provenance["train_config"]
    float_test = train.get("test", {}).get("accuracy")
    latency = row["latency"]
    recipe = ", ".join(f"{k}={v}" for k, v in config.items() if shown_in_recipe(k, v, config))
    return f"""# {name}

| | |
|---|---|
| architecture | `{config['arch']}` ({train.get('params', 0):,} parameters, {train.get('macs', 0) / 1e6:.2f} M MACs/image) |
| artifact | {artifact_line(provenance, row)} |
| test accuracy, float Keras model | {float_test * 100:.2f}% |
| test accuracy, this int8 artifact | {row['accuracy'] * 100:.2f}% ({test_source}) |
| latency, batch 1, {row['threads']} thread | p50 {latency['p50_ms']:.3f} ms, p90 {latency['p90_ms']:.3f} ms ({cpu_text(environment)}, {environment['interpreter']} {environment['interpreter_version']}) |
| peak memory of the measuring process | {row['peak_rss_mb']:.0f} MB |
| training | {epochs_text(train['epochs_run'])} in {train.get('training_seconds', 0):.0f} s on {train.get('device')}, then QAT ({qat_line(provenance)}) |

**Made by**: `{provenance.get('train_command') or 'see the recipe'}`, then `{provenance.get('ship_command', 'benchmarks/ship_models.py')}`.

**Recipe** (the run's config.json): {recipe}.{(chr(10) + chr(10) + "**Note**: " + provenance["note"]) if provenance.get("note") else ""}

**How the artifact was chosen**: {provenance['choice_rule']}. Validation accuracy:
{', '.join(f"{k} {v * 100:.2f}%" for k, v in provenance['validation_accuracy'].items())}. Test accuracy of each
candidate, measured after the choice: {', '.join(f"{k} {v * 100:.2f}%" for k, v in provenance.get('candidates_test_accuracy', {}).items()) or 'not recorded'}.{refused_text(provenance)}{targets_text(name, model_checks)}

**Limitations**: {LIMITATIONS}

Regenerate: `python benchmarks/bench_models.py --data-dir DIR` (numbers from `benchmarks/results/models_bench.json`).
"""


def _met(measured, target, passes) -> bool | None:
    """``passes(measured, target)``, or None when either side was not measured."""
    return None if measured is None or target is None else bool(passes(measured, target))


def checks(rows: list[dict]) -> list[dict]:
    """Every target of the shipped models against what this benchmark run measured.

    A check whose inputs are missing (a model not shipped yet) is recorded as ``met: None``.
    """
    by_arch = {row["arch"]: row for row in rows}

    def value(arch: str, key: str):
        row = by_arch.get(arch)
        return None if row is None else row["latency"]["p50_ms"] if key == "p50" else row[key]

    out = []

    def check(model: str, what: str, measured, target, passes) -> None:
        out.append({"model": model, "check": what, "measured": measured, "target": target,
                    "met": _met(measured, target, passes)})

    for arch, target in ACCURACY_TARGETS.items():
        check(arch, "int8 test accuracy", value(arch, "accuracy"), target, operator.ge)
    papers = [by_arch[a]["accuracy"] for a in PAPER_ARCHS if a in by_arch]
    ref_bytes, ref_p50 = value(REFERENCE, "bytes"), value(REFERENCE, "p50")
    check("edge-cnn", "accuracy above every shipped paper model", value("edge-cnn", "accuracy"), max(papers, default=None),
          operator.gt)
    check("edge-cnn", f"bytes below {REFERENCE}'s", value("edge-cnn", "bytes"), ref_bytes, operator.lt)
    check("edge-cnn", f"p50 below {REFERENCE}'s", value("edge-cnn", "p50"), ref_p50, operator.lt)
    check("edge-cnn-tiny", "bytes at most 100 KB", value("edge-cnn-tiny", "bytes"), TINY_MAX_BYTES, operator.le)
    check("edge-cnn-tiny", f"p50 at most 1/4 of {REFERENCE}'s", value("edge-cnn-tiny", "p50"),
          None if ref_p50 is None else ref_p50 / 4, operator.le)
    return out


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, key, label in ((axes[0], "kb", "size of the .tflite (KB, log scale)"), (axes[1], "p50", "p50 latency, 1 thread (ms, log scale)")):
        for row in rows:
            x = row["bytes"] / 1024 if key == "kb" else row["latency"]["p50_ms"]
            shipped = row["shipped"]
            ax.scatter(x, row["accuracy"] * 100, s=40, facecolors=None if shipped else "none", edgecolors="C0")
            label = row["model"] if shipped else f"{row['model']} (not shipped)"
            ax.annotate(label, (x, row["accuracy"] * 100), textcoords="offset points", xytext=(4, 4), fontsize=8)
        ax.set_xscale("log")
        # Plain numbers: matplotlib's 2x10^2-style minor labels collide on a short log axis.
        ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel(label)
        ax.set_ylabel("test accuracy (%)")
        ax.grid(True, alpha=0.3)
    fig.suptitle("Shipped int8 artifacts: accuracy against size and latency (benchmarks/results/models_bench.json)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def unshipped_artifacts(provenances: dict[str, dict]) -> dict[str, Path]:
    """Model name -> its .tflite for models whose artifact is too large for models/ (see ship_models.py)."""
    return {name: Path(p["artifact"]["path"]) for name, p in provenances.items() if not p.get("artifact_shipped", True)}


def earlier_rows(names: list[str]) -> list[dict]:
    """The last committed rows of unshipped models whose artifact is not on this machine (a fresh clone).

    They keep their numbers, flagged ``remeasured: False`` with the run that measured them and that
    run's environment (``measured_on``): its CPU may not be this one.
    """
    path = RESULTS / "models_bench.json"
    if not path.exists():
        return []
    previous = read_json(path)
    kept = [dict(row) for row in previous["rows"] if row.get("model") in names]
    for row in kept:
        row["remeasured"] = False
        row.setdefault("measured_in", previous.get("started"))
        row.setdefault("measured_on", previous["environment"])
    return kept


def write_cards(rows: list[dict], provenances: dict, environment: dict, test_source: str, models_dir: Path,
                model_checks: Sequence[dict] = ()) -> None:
    """One MODEL_CARD.md per row; a row carried over from an earlier run states that run's CPU, not this one,
    and no target is judged on it (its numbers are not from this run)."""
    for row in rows:
        judged = () if "measured_on" in row else model_checks
        card = model_card(row["model"], provenances[row["model"]], row, row.get("measured_on", environment), test_source, judged)
        write_bytes_atomic(models_dir / row["model"] / "MODEL_CARD.md", card.encode())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--min-seconds", type=float, default=2.0)
    args = parser.parse_args(argv)
    provenances = {p.parent.name: read_json(p) for p in sorted(MODELS.glob("*/provenance.json"))}
    unshipped = unshipped_artifacts(provenances)
    present = {name: path for name, path in unshipped.items() if path.exists()}
    by_path = {path.resolve(): name for name, path in present.items()}
    result = bench([MODELS, *present.values()], "local", BenchOptions(threads=(1,), runs=args.runs, min_seconds=args.min_seconds),
                   data_dir=args.data_dir)
    result["command"] = "python " + " ".join(shlex.quote(a) for a in sys.argv)
    for row in result["rows"]:
        path = Path(row["path"])
        row["model"] = by_path.get(path.resolve(), path.parent.name)
        row["shipped"] = row["model"] not in unshipped
        row["remeasured"] = True
        row["path"] = os.path.relpath(path, REPO)
    result["rows"] += earlier_rows(sorted(set(unshipped) - set(present)))
    ok = [r for r in result["rows"] if r["status"] == "ok"]
    for row in result["rows"]:
        provenance = provenances[row["model"]]
        row["arch"] = provenance["train_config"]["arch"]
        row["float_test_accuracy"] = provenance["train_metrics"]["test"]["accuracy"]
        row["note"] = provenance.get("note", "")
    result["checks"] = checks(ok)
    write_json(RESULTS / "models_bench.json", result)
    write_cards(ok, provenances, result["environment"], result["test_set"]["source"], MODELS, result["checks"])
    if ok:
        plot(ok, RESULTS / "models_front.png")
    return 0 if len(ok) == len(result["rows"]) else 1


if __name__ == "__main__":
    raise SystemExit(main())

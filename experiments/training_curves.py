"""Training curves of long runs: what each epoch reached on validation, and what it cost.

A run's curve says how far it got and how long it took on this CPU, shipped or not: what the next
attempt is planned from. This reads finished training runs
(``edge_fm.train.runs.Run``: config, per-epoch history, final metrics) and writes one row per run.
The test accuracy in a row is the one ``edge-fm train`` printed at the end of the run (float Keras
model); nothing here reads the test split, and no integer artifact was exported or scored.

Usage (from the repository root):
    python experiments/training_curves.py runs/resnet50-train-1 --out experiments/results/resnet50_curves.json
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import sys
from pathlib import Path

from edge_fm.runner import cpu_model
from edge_fm.train.runs import Run

EPOCH_FIELDS = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy", "learning_rate", "seconds")


def curve_row(run_dir: Path) -> dict:
    """The config in force, the per-epoch curve and the final figures of one finished training run."""
    run = Run(run_dir)
    history = json.loads((run.path / "history.json").read_text())
    metrics = run.metrics
    return {
        "run": f"runs/{run.name}",
        "config": run.train_config.to_dict(),
        "epochs": [{key: row[key] for key in EPOCH_FIELDS} for row in history],
        "best_val_accuracy": max(row["val_accuracy"] for row in history),
        "final_val_accuracy": history[-1]["val_accuracy"],
        "test_accuracy_float": metrics["test"]["accuracy"],
        "training_seconds": metrics["training_seconds"],
        "device": metrics["device"],
        "precision_policy": metrics.get("precision_policy"),
        "params": metrics["params"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="finished training runs")
    parser.add_argument("--out", type=Path, required=True, help="the JSON file to write")
    parser.add_argument("--note", default="", help="what the runs were for, in a sentence")
    args = parser.parse_args(argv)
    rows = [curve_row(path) for path in args.runs]
    from edge_fm.result_files import write_result_file

    write_result_file(
        args.out,
        "training-curves",
        {"note": args.note, "rows": rows},
        shlex.join(["python", "experiments/training_curves.py", *(sys.argv[1:] if argv is None else argv)]),
        {"cpu": cpu_model(), "python": platform.python_version(), "machine": platform.machine()},
    )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

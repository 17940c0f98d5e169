"""Trains architectures with their `paper` preset on the full dataset and records the results.

Usage (from the repository root):
    python benchmarks/train_paper_presets.py mlp cnn-2conv --data-dir DATA_DIR
    python benchmarks/train_paper_presets.py --summarize-only

Each run lands in runs/<arch>-train-N (not committed); its metrics.json and config.json are
copied to benchmarks/results/<arch>-paper.metrics.json and .config.json with the command, and
benchmarks/results/paper_presets.json tabulates every recorded architecture against its paper
(target: the paper's accuracy minus one point, on the test split). Each file's environment is the
device the run trained on and its TensorFlow version, as the run recorded them.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

import edge_fm
from edge_fm.io import read_json
from edge_fm.result_files import read_result_file, write_result_file

RESULTS = Path(__file__).parent / "results"
TOLERANCE = 0.01  # "within one point" of the paper


def train_one(arch: str, data_dir: str | None, runs_dir: str) -> dict:
    """Trains ``arch`` with its paper preset and writes its metrics and config to the results."""
    config = edge_fm.config_for(arch, "paper")
    run_dir = edge_fm.train_model(config, data_dir=data_dir, runs_dir=runs_dir)
    metrics = read_json(run_dir / "metrics.json")
    metrics["run_dir"] = str(run_dir)
    command = "python " + " ".join(shlex.quote(a) for a in sys.argv)
    environment = _environment([metrics])
    write_result_file(RESULTS / f"{arch}-paper.metrics.json", "train-metrics", metrics, command, environment)
    write_result_file(
        RESULTS / f"{arch}-paper.config.json",
        "train-config",
        read_json(run_dir / "config.json"),
        command,
        environment,
    )
    return metrics


def _environment(metrics: list[dict]) -> dict:
    """Where the runs trained: their device and TensorFlow version, as each run's metrics recorded them."""
    return {
        key: "; ".join(dict.fromkeys(str(m[key]) for m in metrics if key in m))
        for key in ("device", "tensorflow")
        if any(key in m for m in metrics)
    }


def summarize() -> list[dict]:
    """Tabulates every ``*-paper.metrics.json`` against its paper into ``paper_presets.json``."""
    rows, runs = [], []
    for path in sorted(RESULTS.glob("*-paper.metrics.json")):
        recorded = read_result_file(path, "train-metrics")
        metrics = {**recorded["results"], "command": recorded["command"]}
        runs.append(recorded["results"])
        spec = edge_fm.zoo.get_spec(metrics["arch"])
        accuracy = metrics["test"]["accuracy"]
        target = spec.paper_accuracy - TOLERANCE
        rows.append(
            {
                "arch": metrics["arch"],
                "paper": spec.paper,
                "paper_accuracy": spec.paper_accuracy,
                "test_accuracy": accuracy,
                "target": round(target, 4),
                "meets_target": accuracy >= target,
                "best_val_accuracy": metrics["val"]["accuracy"],
                "epochs_run": metrics["epochs_run"],
                "best_epoch": metrics["best_epoch"],
                "training_seconds": metrics["training_seconds"],
                "params": metrics["params"],
                "macs": metrics["macs"],
                "device": metrics["device"],
                "command": metrics["command"],
                "metrics_file": path.name,
            }
        )
    command = "python benchmarks/train_paper_presets.py --summarize-only"
    write_result_file(RESULTS / "paper_presets.json", "paper-presets", rows, command, _environment(runs))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("archs", nargs="*", help="architectures to train")
    parser.add_argument("--data-dir", default=None, help="folder of the four Fashion-MNIST IDX files")
    parser.add_argument("--runs-dir", default="runs")
    parser.add_argument("--summarize-only", action="store_true", help="only rebuild paper_presets.json")
    args = parser.parse_args(argv)
    if not args.summarize_only:
        for arch in args.archs:
            metrics = train_one(arch, args.data_dir, args.runs_dir)
            print(
                f"{arch}: test accuracy {metrics['test']['accuracy']:.4f} ({metrics['run_dir']})", flush=True
            )
    for row in summarize():
        verdict = "meets" if row["meets_target"] else "MISSES"
        print(
            f"{row['arch']}: {row['test_accuracy']:.2%} vs paper {row['paper_accuracy']:.2%} -> "
            f"{verdict} target {row['target']:.2%}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

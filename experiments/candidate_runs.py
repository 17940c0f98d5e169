"""The validation record of trained candidates that were judged by a ship rule, shipped or not.

A candidate that is not shipped leaves no folder under models/, and its run directories are not in
git; this writes what the decision read (validation figures only, never the test split) into a
committed JSON file, so the account of it in docs/design comes from one.

For each export bundle given (a ``runs/<arch>-<format>-N`` directory), the row holds the bundle's
accuracy on the validation images its parity check used, the Keras model's on the same images, its
size, and the training (and QAT) run it came from: options, epochs, teacher, final validation
accuracy, parameters, MACs and training time.

Usage (from the repository root; needs the run directories):
    python experiments/candidate_runs.py runs/fullconv/edge-cnn-qat-int8-1 runs/fullconv/edge-cnn-int8-1 \\
        --out experiments/results/edge_cnn_candidates.json
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from edge_fm.errors import EdgeFMError
from edge_fm.export.bundles import read_description
from edge_fm.io import read_json
from edge_fm.result_files import write_result_file
from edge_fm.train.runs import read_manifest, require_run

RESULTS = Path(__file__).parent / "results"
TRAIN_KEYS = ("params", "macs", "epochs_run", "best_epoch", "training_seconds", "device")


def run_record(run: Path) -> dict:
    """What a training or QAT run's decision may read: its config and validation metrics."""
    config, metrics = read_json(require_run(run) / "config.json"), read_json(run / "metrics.json")
    record = {"run": str(run), "validation_accuracy": metrics["val"]["accuracy"]}
    record.update({k: metrics[k] for k in TRAIN_KEYS if k in metrics})
    if metrics.get("stage", "train") == "train":
        record.update({k: config.get(k) for k in ("arch", "arch_options", "preset", "epochs", "teacher")})
    return record


def bundle_row(bundle: Path) -> dict:
    """One export bundle and the runs it came from (its manifest's lineage, nearest first)."""
    if not (bundle / "model.json").is_file():
        raise EdgeFMError(
            f"{bundle} is not an export bundle (no model.json); pass a runs/<arch>-<format>-N directory."
        )
    description, manifest = read_description(bundle), read_manifest(bundle)
    parity = description["export"]["parity"]
    lineage = {step["stage"]: Path(step["run"]) for step in manifest.get("lineage", [])}
    if "train" not in lineage:
        raise EdgeFMError(
            f"{bundle}'s manifest names no training run in its lineage; pass a bundle made by `edge-fm export`."
        )
    row = {
        "bundle": str(bundle),
        "format": manifest["format"],
        "bytes": description["artifact"]["bytes"],
        "sha256": description["artifact"]["sha256"],
        "validation_images": parity["images"],
        "tflite_validation_accuracy": parity["tflite_accuracy"],
        "keras_validation_accuracy": parity["keras_accuracy"],
        "train": run_record(lineage["train"]),
    }
    if "qat" in lineage:
        row["qat"] = run_record(lineage["qat"])
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundles", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, default=RESULTS / "edge_cnn_candidates.json")
    args = parser.parse_args(argv)
    try:
        rows = [bundle_row(bundle) for bundle in args.bundles]
    except (EdgeFMError, OSError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    write_result_file(
        args.out,
        "candidate-runs",
        {
            "what": "validation figures of trained candidates judged by a ship rule (no test figures)",
            "rows": rows,
        },
        "python experiments/candidate_runs.py " + shlex.join(sys.argv[1:] if argv is None else argv),
    )
    for row in rows:
        print(
            f"{row['bundle']:40s} {row['format']:9s} validation {row['tflite_validation_accuracy']:.4f} "
            f"on {row['validation_images']} images, {row['bytes']:,} bytes"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

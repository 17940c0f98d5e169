"""The full optimization chain on one architecture, as a table of TFLite artifacts.

Trains (or reuses) a float model, prunes it, runs QAT and pruning-preserving QAT, exports every
format, and scores each artifact with the LiteRT interpreter on the full 10,000-image test split.

Usage (from the repository root):
    python benchmarks/optimize_chain.py --arch cnn-2conv --data-dir DATA_DIR
    python benchmarks/optimize_chain.py --train-run runs/cnn-2conv-train-3 --data-dir ...

Writes benchmarks/results/optimize_chain_<arch>.json. Rows: fp32, fp16, dynamic, int8,
pruned+int8, qat-int8, pruned+qat-int8, each with test accuracy, bytes, gzip bytes.
"""

from __future__ import annotations

import argparse
import platform
import shlex
import sys
import time
from pathlib import Path

import edge_fm
from edge_fm.export.bundles import read_description
from edge_fm.export.exporter import export
from edge_fm.io import read_json
from edge_fm.optimize.compress import OptimizeConfig, optimize
from edge_fm.result_files import write_result_file
from edge_fm.runner import TFLiteModel, cpu_model

RESULTS = Path(__file__).parent / "results"
QAT_TOLERANCE = 0.003  # the QAT int8 artifact must stay within 0.3 points of its float model


def score_artifact(bundle: Path, images, labels) -> dict:
    """Accuracy of a bundle's model.tflite on the given images through the LiteRT interpreter."""
    model = TFLiteModel(model_path=str(bundle / "model.tflite"))
    probs = model.predict_proba(images)
    return edge_fm.classification_metrics(labels, probs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="cnn-2conv")
    parser.add_argument("--train-run", default=None, help="reuse this finished training run")
    parser.add_argument("--sparsity", type=float, default=0.5)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--runs-dir", default="runs")
    args = parser.parse_args(argv)
    started = time.time()

    train_run = (
        Path(args.train_run)
        if args.train_run
        else edge_fm.train_model(
            edge_fm.config_for(args.arch, "paper"), data_dir=args.data_dir, runs_dir=args.runs_dir
        )
    )
    arch = edge_fm.load_config(edge_fm.TrainConfig, train_run / "config.json").arch
    pruned = optimize(
        OptimizeConfig("prune", str(train_run), target_sparsity=args.sparsity), args.data_dir, args.runs_dir
    )
    qat = optimize(OptimizeConfig("qat", str(train_run)), args.data_dir, args.runs_dir)
    pqat = optimize(OptimizeConfig("qat", str(pruned)), args.data_dir, args.runs_dir)

    plan = [
        ("fp32", train_run, "fp32"),
        ("fp16", train_run, "fp16"),
        ("dynamic", train_run, "dynamic"),
        ("int8", train_run, "int8"),
        ("pruned+int8", pruned, "int8"),
        ("qat-int8", qat, "qat-int8"),
        ("pruned+qat-int8", pqat, "qat-int8"),
    ]
    test_images, test_labels = edge_fm.load_split("test", args.data_dir)
    float_accuracy = read_json(train_run / "metrics.json")["test"]["accuracy"]
    rows = []
    for label, source, fmt in plan:
        row = {"artifact": label, "format": fmt, "source_run": str(source)}
        try:
            bundle = export(source, fmt, runs_dir=args.runs_dir, data_dir=args.data_dir)
            description = read_description(bundle)
            scores = score_artifact(bundle, test_images, test_labels)
            row.update(
                {
                    "bundle": str(bundle),
                    "test_accuracy": scores["accuracy"],
                    "bytes": description["artifact"]["bytes"],
                    "gzip_bytes": description["artifact"]["gzip_bytes"],
                    "integer_only": description["export"]["integer_only"],
                    "parity": description["export"]["parity"],
                    "source_sparsity": read_json(Path(source) / "metrics.json")
                    .get("sparsity", {})
                    .get("overall", 0.0),
                    "status": "ok",
                }
            )
        except edge_fm.EdgeFMError as exc:  # one failure never aborts the table
            row.update({"status": "error", "error": str(exc)})
        rows.append(row)
        print(
            row["artifact"],
            row.get("test_accuracy"),
            row.get("bytes"),
            row.get("gzip_bytes"),
            row["status"],
            flush=True,
        )

    qat_row = next(r for r in rows if r["artifact"] == "qat-int8")
    result = {
        "arch": arch,
        "float_model": {"run": str(train_run), "test_accuracy": float_accuracy},
        "sparsity_target": args.sparsity,
        "rows": rows,
        "checks": {
            "qat_int8_within_0.3_points_of_float": qat_row.get("status") == "ok"
            and qat_row["test_accuracy"] >= float_accuracy - QAT_TOLERANCE,
            "pruned_gzip_smaller_than_dense": _gzip(rows, "pruned+int8") < _gzip(rows, "int8"),
        },
        "seconds": round(time.time() - started, 1),
    }
    write_result_file(
        RESULTS / f"optimize_chain_{arch}.json",
        "optimize-chain",
        result,
        "python " + " ".join(shlex.quote(a) for a in sys.argv),
        {"description": f"{platform.machine()}, {cpu_model()}"},
    )
    print(result["checks"], flush=True)
    return 0


def _gzip(rows, label) -> float:
    row = next(r for r in rows if r["artifact"] == label)
    return row.get("gzip_bytes", float("inf"))


if __name__ == "__main__":
    raise SystemExit(main())

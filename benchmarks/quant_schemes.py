"""Quantization schemes side by side: int8 (per-channel), int8-per-tensor and int16x8 of the same runs.

Each run is exported in every scheme through `edge-fm export` (calibration images from the run's own
training images, the parity gate on its validation images), then every artifact, with the fp32 one as
the float reference, is measured by `edge-fm bench` here: test accuracy, size and latency (batch 1).

The committed result is of two short runs, `edge-fm train ARCH --preset quick --epochs 2 --data-dir DATA_DIR`
for cnn-2conv and edge-cnn-tiny (5,000 training images, 2 epochs; recorded under "trained"): their accuracies
are low, what the table compares is the schemes.

Usage (from the repository root):
    python benchmarks/quant_schemes.py RUN [RUN ...] --data-dir DATA_DIR [--calibration 500]
Writes benchmarks/results/quant_schemes.json.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
from pathlib import Path

from edge_fm import BenchOptions, Run, bench_artifacts, export_run
from edge_fm.bench.benchmark import write_results
from edge_fm.io import KB

RESULTS = Path(__file__).parent / "results"
SCHEMES = ("fp32", "int8", "int8-per-tensor", "int16x8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="finished training runs")
    parser.add_argument("--data-dir", type=Path, default=None, help="Folder of the Fashion-MNIST IDX files.")
    parser.add_argument(
        "--calibration", type=int, default=500, help="Calibration images from the training split."
    )
    parser.add_argument("--threads", default="1", help="Interpreter thread counts of the latency rows.")
    parser.add_argument("--out", type=Path, default=RESULTS / "quant_schemes.json")
    args = parser.parse_args(argv)

    trained = {}
    with tempfile.TemporaryDirectory(prefix="edge-fm-schemes-") as tmp:
        bundles = []
        for run_dir in args.runs:
            run = Run(run_dir)
            config = run.train_config
            trained[config.arch] = {
                "preset": config.preset,
                "epochs": config.epochs,
                "max_train": config.max_train,
                "data": config.data,
                "val_accuracy": run.metrics["val"]["accuracy"],
            }
            for scheme in SCHEMES:
                bundles.append(
                    export_run(
                        run_dir,
                        scheme,
                        representative_size=args.calibration,
                        parity_images=None,
                        runs_dir=tmp,
                        data_dir=args.data_dir,
                    )
                )
        options = BenchOptions(threads=tuple(int(t) for t in args.threads.split(",")))
        result = bench_artifacts(bundles, "local", options, data_dir=args.data_dir)
    for row in result["rows"]:
        row["path"] = Path(row["path"]).parent.name  # the temporary bundle folder, without its private prefix
    # The data folder and the runs are this machine's: the record names them as the README does.
    runs = {str(run_dir): f"runs/{run_dir.name}" for run_dir in args.runs}
    words = [
        "DATA_DIR" if args.data_dir and word == str(args.data_dir) else runs.get(word, word)
        for word in (argv if argv is not None else sys.argv[1:])
    ]
    result["trained"] = trained
    result["calibration_images"] = args.calibration
    result["command"] = shlex.join(["python", "benchmarks/quant_schemes.py", *words])
    write_results(result, args.out, public=True)
    for row in result["rows"]:
        if row["status"] == "ok":
            print(
                f"{row['architecture']:<14} {row['format']:<16} {row['bytes'] / KB:7.1f} KB  "
                f"acc {row['accuracy']:.2%}  p50 {row['latency']['p50_ms']:.3f} ms"
            )
        else:
            print(f"{row.get('architecture', row['artifact'])} {row.get('format')}: error {row['error']}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

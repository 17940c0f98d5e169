"""Where int8 conversion loses accuracy: each model's int8 error, op by op.

For each run: the Keras model's and its int8 conversion's accuracy on the whole validation split
(a training run converted post-training, calibrated as `edge-fm export -f int8` calibrates; a QAT
run converted as `-f qat-int8`), and TFLite's quantization debugger over the first validation
images, which gives every int8 op's own output error in units of its quantization step (rounding
alone gives about 0.29). The op at the top is where the accuracy goes. Validation images only;
the test split is not read.

Usage (from the repository root):
    python experiments/int8_error.py runs/cnn-3conv-bn-train-2 --data-dir DATA_DIR
Writes experiments/results/int8_error.json.
"""

from __future__ import annotations

import argparse
import platform
import shlex
import sys
import time
from pathlib import Path

from edge_fm.export.exporter import (
    REPRESENTATIVE_SIZE,
    convert,
    get_format,
    representative_images,
)
from edge_fm.export.quant_debug import int8_error_by_op
from edge_fm.result_files import environment, write_result_file
from edge_fm.runner import TFLiteModel, cpu_model
from edge_fm.train.evaluate import predict_proba
from edge_fm.train.runs import Run

RESULTS = Path(__file__).parent / "results"
TOP_OPS = 5


def measure(run_dir: str, data_dir: str | None, debug_images: int) -> dict:
    """One run's Keras and int8 validation accuracy and its worst int8 ops."""
    run = Run(run_dir)
    config, stage = run.train_config, run.stage
    dataset = run.dataset(data_dir)
    model = run.model_to_convert()
    fmt = "qat-int8" if run.quantization_aware else "int8"
    calibration = representative_images(dataset.x_train, REPRESENTATIVE_SIZE, config.seed)
    int8 = TFLiteModel(model_content=convert(model, get_format(fmt), "int8", calibration))
    ops = int8_error_by_op(model, calibration, dataset.x_val[:debug_images], fmt)
    return {
        "run": run_dir,
        "arch": config.arch,
        "stage": stage,
        "format": fmt,
        "validation_images": len(dataset.y_val),
        "keras_accuracy": float((predict_proba(model, dataset.x_val).argmax(1) == dataset.y_val).mean()),
        "int8_accuracy": float((int8.predict_proba(dataset.x_val).argmax(1) == dataset.y_val).mean()),
        "debug_images": min(debug_images, len(dataset.y_val)),
        "ops": len(ops),
        "worst_ops": ops[:TOP_OPS],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "runs", nargs="+", help="finished training runs (post-training int8) or QAT runs (qat-int8)"
    )
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--debug-images", type=int, default=100, help="validation images the debugger runs")
    parser.add_argument("--out", type=Path, default=RESULTS / "int8_error.json")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    rows = [measure(run, args.data_dir, args.debug_images) for run in args.runs]
    write_result_file(
        args.out,
        "int8-error",
        {"rows": rows, "seconds": time.perf_counter() - started},
        "python experiments/int8_error.py " + shlex.join(sys.argv[1:] if argv is None else argv),
        environment(description=f"{platform.machine()}, {cpu_model()}"),
    )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

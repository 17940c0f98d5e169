"""The Keras baseline of a benchmark: a run's own model measured through TensorFlow, in a child process.

The runner measures .tflite artifacts; this measures the float Keras model they came from the same
way (one process per thread count, the same test file), so a table shows what the export gained.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from edge_fm import runner
from edge_fm.bench.options import BenchOptions
from edge_fm.bench.targets import last_line


def measure_keras_baseline(
    run_dir: Path | str, test_set: Path, options: BenchOptions
) -> list[dict[str, Any]]:
    """Rows for a run's Keras model measured through TensorFlow, in a child process (like the
    runner's), one per thread count, so the gain of the TFLite artifacts is visible."""
    from edge_fm.train.runs import require_run

    run_dir = require_run(run_dir)
    rows = []
    for threads in options.threads:
        command = [
            sys.executable,
            "-m",
            "edge_fm.bench.keras_baseline",
            "--keras-baseline",
            str(run_dir),
            str(test_set),
            str(threads),
            json.dumps(options.as_runner_options()),
        ]
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=options.worst_case_seconds(1) + 120
        )
        if done.returncode == 0:
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        else:
            rows.append(
                {
                    "artifact": f"{run_dir.name} (keras)",
                    "format": "keras",
                    "threads": threads,
                    "path": str(run_dir),
                    "status": "error",
                    "error": last_line(done.stderr),
                }
            )
    return rows


def _keras_baseline_row(run_dir: str, test_set: str, threads: int, options: dict[str, Any]) -> dict[str, Any]:
    from edge_fm.compat import tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    from edge_fm.train.runs import Run

    run = Run(run_dir)
    images, labels = runner.load_test_set(test_set)
    model_path = run.model_path
    row: dict[str, Any] = {
        "artifact": f"{Path(run_dir).name} (keras)",
        "format": "keras",
        "path": run_dir,
        "threads": threads,
        **runner.file_sizes(str(model_path)),
        "rss_before_model_mb": runner.current_rss_mb(),
    }
    t0 = time.perf_counter()
    model = run.model()
    # A traced function is what a fair TensorFlow deployment would call (not eager Python).
    shape = [int(d) for d in model.input_shape[1:]]  # the data's image shape (28x28x1 for Fashion-MNIST)
    call = tf.function(
        lambda x: model(x, training=False), input_signature=[tf.TensorSpec([1, *shape], tf.float32)]
    )
    one = tf.constant(images[:1].reshape(1, *shape).astype(np.float32))
    row["init_ms"] = (time.perf_counter() - t0) * 1000.0
    t0 = time.perf_counter()
    call(one).numpy()
    row["first_inference_ms"] = (time.perf_counter() - t0) * 1000.0
    row["warmup_runs"] = runner.warm_up(lambda: call(one).numpy(), options["warmup"], options["max_seconds"])
    timings = runner.time_invocations(
        lambda: call(one).numpy(), options["runs"], options["min_seconds"], options["max_seconds"]
    )
    row["latency"] = runner.summarize_latency(timings)
    row["peak_rss_mb"] = runner.peak_rss_mb()
    t0 = time.perf_counter()
    probs = model.predict(
        images.reshape(-1, *shape).astype(np.float32), batch_size=options["batch_size"], verbose=0
    )
    row["accuracy_seconds"] = time.perf_counter() - t0
    predicted = probs.argmax(axis=1)
    row.update(
        accuracy=float(np.mean(predicted == labels)),
        examples=int(len(labels)),
        confusion_matrix=runner.confusion_matrix(labels, predicted, probs.shape[1]),
        status="ok",
        interpreter=f"tensorflow {tf.__version__}",
    )
    return row


def _main(argv: list[str]) -> int:
    # The child side of measure_keras_baseline.
    if len(argv) == 5 and argv[0] == "--keras-baseline":
        from edge_fm.compat import native_stderr_silenced

        with native_stderr_silenced():
            row = _keras_baseline_row(argv[1], argv[2], int(argv[3]), json.loads(argv[4]))
        print(json.dumps(row, default=float))
        return 0
    print(
        "usage: python -m edge_fm.bench.keras_baseline --keras-baseline RUN TEST_NPZ THREADS OPTIONS_JSON",
        file=sys.stderr,
    )
    return 2


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))

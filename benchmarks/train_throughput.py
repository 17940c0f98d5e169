"""Training throughput (images/s) of the large architectures on this CPU, by the options that matter.

Each configuration runs in a child process of its own (TensorFlow's thread pools are fixed at start)
and trains the product's model (``edge_fm.train.trainer.build_compiled_model``: the same builder, optimizer
and precision policy as ``edge-fm train``) with ``model.fit`` on in-memory uint8 images of the
training shape. Random pixels and labels: the cost of a step does not depend on them. The first
``--warmup`` steps (graph tracing, oneDNN's kernel selection) are not timed.

Usage (from the repository root, on an otherwise idle machine):
    python benchmarks/train_throughput.py                 # the default grid below
    python benchmarks/train_throughput.py --arch resnet50 --batch 256 --precision mixed_bfloat16 --threads 2
Writes benchmarks/results/train_throughput.json.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULT = REPO / "benchmarks" / "results" / "train_throughput.json"
# (arch, arch options) as the long runs train them.
ARCHS = {
    "resnet50": {"input_size": 32, "weights": None},
    "mobilenetv2": {"input_size": 32, "weights": None},
}
DEFAULT_GRID = {"batch": [64, 256], "precision": ["float32", "mixed_bfloat16"], "threads": [2, 1]}
EPOCH_IMAGES = 55_000  # the training split once 5,000 validation images are carved out


def measure(arch: str, batch: int, precision: str, threads: int, steps: int, warmup: int) -> dict:
    """Images/s of ``steps`` timed training steps (in this process; threads must be set before TF starts)."""
    import numpy as np

    from edge_fm.train.config import TrainConfig
    from edge_fm.train.trainer import build_compiled_model

    mixed = precision != "float32"
    config = TrainConfig(
        arch=arch,
        arch_options=ARCHS[arch],
        batch_size=batch,
        optimizer="adam",
        mixed_precision=mixed,
        mixed_dtype=precision.removeprefix("mixed_") if mixed else "float16",
    )
    model = build_compiled_model(config, steps_per_epoch=steps + warmup)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(batch * (steps + warmup), 28, 28, 1), dtype=np.uint8)
    y = np.eye(10, dtype="float32")[rng.integers(0, 10, size=len(x))]  # one-hot, as the training loss takes

    from edge_fm.compat import keras

    ends: list[float] = []  # the wall time at the end of every step
    callback = keras.callbacks.LambdaCallback(on_train_batch_end=lambda *_: ends.append(time.perf_counter()))
    model.fit(x, y, batch_size=batch, epochs=1, shuffle=False, verbose=0, callbacks=[callback])
    timed = ends[warmup - 1 :]
    seconds = timed[-1] - timed[0]
    images_per_s = batch * (len(timed) - 1) / seconds
    return {
        "arch": arch,
        "batch": batch,
        "precision": precision,
        "threads": threads,
        "timed_steps": len(timed) - 1,
        "seconds": round(seconds, 2),
        "images_per_s": round(images_per_s, 1),
        "epoch_minutes": round(EPOCH_IMAGES / images_per_s / 60, 1),
    }


def _child(args: argparse.Namespace) -> int:
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.threads[0])
    tf.config.threading.set_inter_op_parallelism_threads(1)
    row = measure(args.arch[0], args.batch[0], args.precision[0], args.threads[0], args.steps, args.warmup)
    print("ROW " + json.dumps(row))
    return 0


def _cpu_flags() -> list[str]:
    wanted = ("avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile", "amx_int8")
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    flags = next(
        (line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), []
    )
    return [flag for flag in wanted if flag in flags]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", nargs="+", default=["resnet50", "mobilenetv2"], choices=sorted(ARCHS))
    parser.add_argument("--batch", nargs="+", type=int, default=DEFAULT_GRID["batch"])
    parser.add_argument(
        "--precision",
        nargs="+",
        default=DEFAULT_GRID["precision"],
        choices=["float32", "mixed_bfloat16", "mixed_float16"],
    )
    parser.add_argument("--threads", nargs="+", type=int, default=DEFAULT_GRID["threads"])
    parser.add_argument("--steps", type=int, default=12, help="timed steps per configuration")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=RESULT)
    args = parser.parse_args(argv)
    if args.child:
        return _child(args)
    rows = []
    for arch, batch, precision, threads in itertools.product(
        args.arch, args.batch, args.precision, args.threads
    ):
        command = [
            sys.executable,
            __file__,
            "--child",
            "--arch",
            arch,
            "--batch",
            str(batch),
            "--precision",
            precision,
            "--threads",
            str(threads),
            "--steps",
            str(args.steps),
            "--warmup",
            str(args.warmup),
        ]
        env = {
            **os.environ,
            "TF_CPP_MIN_LOG_LEVEL": "2",
            "TF_NUM_INTRAOP_THREADS": str(threads),
            "OMP_NUM_THREADS": str(threads),
        }
        done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=REPO)
        line = next((ln for ln in done.stdout.splitlines() if ln.startswith("ROW ")), None)
        row = (
            json.loads(line[4:])
            if line
            else {
                "arch": arch,
                "batch": batch,
                "precision": precision,
                "threads": threads,
                "error": done.stderr.strip().splitlines()[-1:],
            }
        )
        print(json.dumps(row), flush=True)
        rows.append(row)
    import tensorflow as tf

    from edge_fm.result_files import write_result_file
    from edge_fm.runner import cpu_model

    environment = {
        "cpu": cpu_model(),
        "cpu_flags": _cpu_flags(),
        "cores": os.cpu_count(),
        "tensorflow": tf.__version__,
        "python": platform.python_version(),
    }
    result = {
        "method": "model.fit on in-memory random uint8 images, one child process per row; images/s over the "
        "timed steps after the warm-up; epoch_minutes for a 55,000-image training split",
        "rows": rows,
    }
    command = shlex.join(
        ["python", "benchmarks/train_throughput.py", *(argv if argv is not None else sys.argv[1:])]
    )
    write_result_file(args.out, "train-throughput", result, command, environment)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

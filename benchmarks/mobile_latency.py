"""Latency of the mobile form against the plain int8 artifact, side by side.

The mobile form adds what the clients need: a uint8-to-int8 step at the input and at the output,
and a first layer that reads three channels. This measures what that costs: both artifacts are
loaded in one child process per pair (the process type of ``edge_fm/runner.py``: LiteRT, batch 1,
input set once, one ``invoke()`` per timed run) and timed in alternating blocks, so drifts of the
machine fall on both alike. The target is a mobile p50 within 5% of the int8 one.

Usage (from the repository root):
    python benchmarks/mobile_latency.py INT8_BUNDLE MOBILE_BUNDLE [INT8_BUNDLE MOBILE_BUNDLE ...]
    python benchmarks/mobile_latency.py --shipped      # every models/<name> against models/<name>/mobile
Writes benchmarks/results/mobile_latency.json.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
RESULT = REPO / "benchmarks" / "results" / "mobile_latency.json"
TARGET_RATIO = 1.05


def _artifact(path: Path) -> Path:
    return path / "model.tflite" if path.is_dir() else path


def time_pair(int8: Path, mobile: Path, threads: int, blocks: int, runs_per_block: int, warmup: int) -> dict:
    """Interleaved timings of two artifacts in this process; p50s and their ratio."""
    from edge_fm.runner import TFLiteModel, summarize_latency

    models = {}
    for name, path in (("int8", int8), ("mobile", mobile)):
        model = TFLiteModel(model_path=str(path), num_threads=threads)
        model.interpreter.set_tensor(
            model.input["index"], np.zeros(model.input["shape"], model.input["dtype"])
        )
        for _ in range(warmup):
            model.interpreter.invoke()
        models[name] = model.interpreter.invoke
    timings = {name: [] for name in models}
    for _ in range(blocks):
        for name, invoke in models.items():
            for _ in range(runs_per_block):
                t0 = time.perf_counter()
                invoke()
                timings[name].append(time.perf_counter() - t0)
    latency = {name: summarize_latency(values) for name, values in timings.items()}
    ratio = latency["mobile"]["p50_ms"] / latency["int8"]["p50_ms"]
    return {
        "int8": str(int8),
        "mobile": str(mobile),
        "threads": threads,
        "latency": latency,
        "p50_ratio": ratio,
        "target_ratio": TARGET_RATIO,
        "within_target": bool(ratio <= TARGET_RATIO),
        "status": "ok",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Mobile form vs int8 artifact: p50 latency side by side.")
    parser.add_argument(
        "artifacts", nargs="*", type=Path, help="pairs: int8 bundle (or .tflite), then its mobile form"
    )
    parser.add_argument("--shipped", action="store_true", help="every shipped model against its mobile form")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--blocks", type=int, default=40, help="alternating blocks per artifact")
    parser.add_argument("--runs-per-block", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--json", type=Path, default=RESULT)
    parser.add_argument(
        "--shared-cpu", action="store_true", help="note in the result that the CPU was shared with other work"
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if len(args.artifacts) % 2 or not (args.artifacts or args.shipped):
        parser.error("give the artifacts in pairs: int8, then mobile (or --shipped)")
    pairs = [(_artifact(a), _artifact(b)) for a, b in zip(args.artifacts[::2], args.artifacts[1::2])]
    if args.shipped:
        models = REPO / "models"
        if Path.cwd().resolve() == REPO:
            models = Path("models")  # rows name the files as the repository does
        pairs += [
            (folder / "model.tflite", folder / "mobile" / "model.tflite")
            for folder in sorted(p.parent.parent for p in models.glob("*/mobile/model.tflite"))
        ]
    options = [
        f"--threads={args.threads}",
        f"--blocks={args.blocks}",
        f"--runs-per-block={args.runs_per_block}",
        f"--warmup={args.warmup}",
    ]
    if args.child:
        int8, mobile = pairs[0]
        print(
            json.dumps(time_pair(int8, mobile, args.threads, args.blocks, args.runs_per_block, args.warmup))
        )
        return 0
    from edge_fm.result_files import write_result_file

    rows = []
    for int8, mobile in pairs:
        # One fresh process per pair, as the runner measures each artifact in a child of its own.
        done = subprocess.run(
            [sys.executable, __file__, str(int8), str(mobile), "--child", *options],
            capture_output=True,
            text=True,
        )
        if done.returncode == 0:
            row = json.loads(done.stdout.strip().splitlines()[-1])
        else:
            lines = done.stderr.strip().splitlines()
            row = {
                "int8": str(int8),
                "mobile": str(mobile),
                "status": "error",
                "error": lines[-1] if lines else str(done.returncode),
            }
        row = {"model": int8.parent.name if int8.name == "model.tflite" else int8.stem, **row}
        rows.append(row)
        print(json.dumps({k: row.get(k) for k in ("model", "status", "p50_ratio", "within_target")}))
    command = shlex.join(
        [
            "python",
            "benchmarks/mobile_latency.py",
            *map(str, args.artifacts),
            *(["--shipped"] if args.shipped else []),
            *(["--shared-cpu"] if args.shared_cpu else []),
            *options,
        ]
    )
    note = (
        "timed on a CPU shared with other work: the two artifacts of a pair alternate in blocks, so load "
        "falls on both and the ratio stays fair, while the absolute times are slower than on a quiet machine"
    )
    results = {"options": options, "note": note if args.shared_cpu else None, "rows": rows}
    write_result_file(args.json, "mobile-latency", results, command)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Throughput of `edge-fm sweep` with two trials at once against one, on this machine's cores.

The same small grid (tiny-cnn on the embedded sample, epochs 1 and 2 x seeds 0 and 1, int8 only:
4 trials) runs twice on Ray started in-process: one trial at a time with every core each, then two
at a time with half the cores each (TensorFlow's threads set to match). Each sweep starts from an
empty folder, so nothing is reused; the wall time includes Ray's start.

Usage (from the repository root; needs the cluster extra):
    python benchmarks/sweep_concurrency.py

Writes benchmarks/results/sweep_concurrency.json: one row per concurrency (wall seconds, trials
per minute, mean seconds of a trial) and the throughput ratio of two trials at once over one.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path

from edge_fm.io import read_json
from edge_fm.pipeline.sweep import RayOptions, run_sweep
from edge_fm.pipeline.sweep_spec import SWEEP_JSON, SweepSpec
from edge_fm.result_files import write_result_file
from edge_fm.runner import cpu_model
from edge_fm.train.runs import library_versions

RESULTS = Path(__file__).parent / "results"
GRID = SweepSpec(
    archs=("tiny-cnn",), settings={"epochs": (1, 2), "seed": (0, 1)}, formats=("int8",), sample=True
)


def measure(concurrency: int, cores: int) -> dict:
    """One sweep of the grid at ``concurrency`` trials at once, in a fresh folder."""
    threads = max(1, cores // concurrency)
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="edge-fm-sweep-bench-") as tmp:
        started = time.perf_counter()
        sweep_dir = run_sweep(GRID, tmp, RayOptions(concurrency=concurrency, threads=threads))
        seconds = time.perf_counter() - started
        summary = read_json(sweep_dir / SWEEP_JSON)
    trials = summary["trials"].values()
    ok = [t for t in trials if t["status"] == "ok"]
    return {
        "concurrency": concurrency,
        "threads_per_trial": threads,
        "trials": len(trials),
        "trials_ok": len(ok),
        "seconds": round(seconds, 1),
        "trials_per_minute": round(60 * len(trials) / seconds, 3),
        "trial_seconds_mean": round(sum(t["seconds"] for t in ok) / max(1, len(ok)), 1),
        "load_average_before": round(load_before, 2),
        "load_average_after": round(os.getloadavg()[0], 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(RESULTS / "sweep_concurrency.json"))
    args = parser.parse_args(argv)
    cores = os.cpu_count() or 1
    rows = [measure(1, cores), measure(2, cores)]
    ratio = rows[1]["trials_per_minute"] / rows[0]["trials_per_minute"]
    environment = {
        "cpu": cpu_model(),
        "cores": cores,
        "machine": platform.machine(),
        "os": platform.platform(),
        **library_versions(),
        "ray": _version("ray"),
    }
    result = {
        "question": "How much faster does a sweep go with two trials at once than with one, on this machine?",
        "grid": GRID.as_dict(),
        "rows": rows,
        "throughput_ratio_2_over_1": round(ratio, 3),
        "note": (
            "Wall time of the whole sweep, Ray's start included. The load averages show what else ran on the "
            "machine: figures measured on a shared machine are noisier than on an idle one."
        ),
        "measured": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    command = shlex.join(
        ["python", "benchmarks/sweep_concurrency.py", *(argv if argv is not None else sys.argv[1:])]
    )
    write_result_file(args.out, "sweep-concurrency", result, command, environment)
    for row in rows:
        print(
            f"{row['concurrency']} at once x {row['threads_per_trial']} thread(s): {row['seconds']:.0f} s, "
            f"{row['trials_per_minute']:.2f} trials/min"
        )
    print(f"throughput ratio (2 at once / 1): {ratio:.2f} -> {args.out}")
    return 0


def _version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


if __name__ == "__main__":
    sys.exit(main())

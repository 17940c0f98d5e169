"""Trains architectures with their `paper` preset on the full dataset and commits their metrics.

Usage (from the repository root):
    python benchmarks/train_paper_presets.py mlp cnn-2conv --data-dir ../shared/data/fashion-mnist

Each run lands in runs/<arch>-train-N (not committed); its metrics.json and config.json are
copied to benchmarks/results/<arch>-paper.metrics.json and .config.json, with the command.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

import edge_fm
from edge_fm.io import read_json, write_json

RESULTS = Path(__file__).parent / "results"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("archs", nargs="+", help="architectures to train")
    parser.add_argument("--data-dir", default=None, help="folder of the four Fashion-MNIST IDX files")
    parser.add_argument("--runs-dir", default="runs")
    args = parser.parse_args(argv)
    for arch in args.archs:
        config = edge_fm.config_for(arch, "paper")
        run_dir = edge_fm.train(config, data_dir=args.data_dir, runs_dir=args.runs_dir)
        metrics = read_json(run_dir / "metrics.json")
        metrics["run_dir"] = str(run_dir)
        metrics["command"] = "python " + " ".join(shlex.quote(a) for a in sys.argv)
        write_json(RESULTS / f"{arch}-paper.metrics.json", metrics)
        write_json(RESULTS / f"{arch}-paper.config.json", read_json(run_dir / "config.json"))
        print(f"{arch}: test accuracy {metrics['test']['accuracy']:.4f} ({run_dir})", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Rewrites the model cards and measurement records of models/ from the committed benchmark result,
without measuring again.

``edge-fm bench models/ --cards --json benchmarks/results/models_bench.json`` measures the shipped
models and writes their cards and ``measurement.json`` files; this script writes the same files from
that JSON alone (after a change to the card template, say). The same JSON gives the same bytes.

Usage (from the repository root):
    python tools/refresh_cards.py                       # models/ from benchmarks/results/models_bench.json
    python tools/refresh_cards.py --models-dir models --bench benchmarks/results/models_bench.json
"""

from __future__ import annotations

import argparse
from pathlib import Path

from edge_fm.bench.measurements import read_bench
from edge_fm.shipping.card_refresh import refresh_cards

REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models-dir", type=Path, default=REPO / "models")
    parser.add_argument("--bench", type=Path, default=REPO / "benchmarks" / "results" / "models_bench.json")
    args = parser.parse_args(argv)
    for card in refresh_cards(args.models_dir, read_bench(args.bench)):
        print(f"wrote {card} and its {card.parent.name}/measurement.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

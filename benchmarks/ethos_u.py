"""Every shipped int8 model compiled by Arm's Vela for Ethos-U NPUs: memory, placement and speed, estimated.

The rows are ``edge-fm bench --target vela:CONFIG`` rows (one per model and configuration): SRAM and
off-chip memory, operators on the NPU and those left to the CPU (with Vela's reason), MACs, cycles and
inferences per second at the configuration's clock. Every figure is Vela's compile-time estimate, not a
measurement on a device. A model whose artifact is not kept in the folder is left out and named.

Usage (from the repository root; needs `pip install 'edge-fm[npu]'`):
    python benchmarks/ethos_u.py [--config ethos-u55-128 --config ethos-u65-256]
Writes benchmarks/results/ethos_u.json.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

from edge_fm.bench.benchmark import write_results
from edge_fm.bench.vela_target import VelaTarget
from edge_fm.export.bundles import model_file
from edge_fm.export.vela import DEFAULT_CONFIGS, ESTIMATE_NOTE, config_names
from edge_fm.io import KB
from edge_fm.shipping.catalog import read_provenances

REPO = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models-dir", type=Path, default=REPO / "models")
    parser.add_argument(
        "--config", action="append", choices=config_names(), help="Ethos-U configuration (repeatable)."
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "ethos_u.json")
    args = parser.parse_args(argv)

    names = sorted(read_provenances(args.models_dir))
    artifacts = [model_file(args.models_dir / name) for name in names if model_file(args.models_dir / name)]
    started = time.time()
    rows, environment = [], {}
    for config in args.config or DEFAULT_CONFIGS:
        result = VelaTarget(config).run(artifacts)
        environment = {
            key: value for key, value in result["environment"].items() if key != "accelerator_config"
        }
        for row in result["rows"]:
            row["model"] = Path(row["path"]).parent.name
            row["path"] = Path(row["path"]).resolve().relative_to(REPO).as_posix()
            rows.append(row)
    missing = [name for name in names if model_file(args.models_dir / name) is None]
    result = {
        "target": "vela",
        "environment": environment,
        "rows": rows,
        "note": ESTIMATE_NOTE,
        "not_compiled": {
            name: "its artifact is not kept in the models folder (too large to ship)" for name in missing
        },
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "seconds": round(time.time() - started, 1),
        "command": shlex.join(
            ["python", "benchmarks/ethos_u.py", *(argv if argv is not None else sys.argv[1:])]
        ),
    }
    write_results(result, args.out, public=True)
    for row in rows:
        if row["status"] == "ok":
            cpu = ", ".join(op["op"] for op in row["cpu_ops"]) or "none"
            print(
                f"{row['target']:<20} {row['model']:<14} SRAM {row['sram_bytes'] / KB:7.1f} KB  off-chip "
                f"{row['off_chip_bytes'] / KB:7.1f} KB  NPU ops {row['npu_ops']:3d}  CPU ops {cpu:<16} "
                f"{row['inferences_per_second']:7.0f} inf/s (est.)"
            )
        else:
            print(f"{row['target']:<20} {row['model']:<14} error: {row['error']}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

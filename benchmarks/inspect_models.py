"""The worst-quantized layers of every shipped model, as `edge-fm inspect` names them from the artifact alone.

For each bundle of models/ this runs :func:`edge_fm.bench.inspection.inspect_artifact` (no runtimes:
only the ops and the layer-wise error). The shipped models' training runs are not in the repository,
so the error is the float-twin measure: activation rounding and clipping, accumulated along the
network, against the artifact's own weights in float; the weights' own rounding is not included.
Each row keeps the check that the twin is the same network (its top-1 agreement with the artifact
and both accuracies on the same validation images) and the ops ranked by the error each adds.

Usage (from the repository root):
    python benchmarks/inspect_models.py --data-dir DATA_DIR [--images 200]
Writes benchmarks/results/inspect_models.json.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

from edge_fm.bench.inspection import DEBUG_IMAGES, inspect_artifact
from edge_fm.export.bundles import model_file
from edge_fm.result_files import write_result_file

REPO = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results"
KEPT_LAYERS = 10  # ranked layers kept per model in the JSON


def _shown(path: Path) -> str:
    """A path as the results show it: from the repository's root when inside it."""
    try:
        return path.resolve().relative_to(REPO).as_posix()
    except ValueError:
        return str(path)


def _row(name: str, path: Path, report: dict, seconds: float) -> dict:
    errors = report["errors"]
    row = {
        "model": name,
        "path": _shown(path / "model.tflite"),
        "format": report["artifact"]["format"],
        "ops": report["summary"]["ops"],
        "status": errors["status"],
        "seconds": round(seconds, 1),
    }
    if errors["status"] != "measured":
        return {**row, "reason": errors["reason"]}
    outputs = [layer for layer in errors["layers"] if layer.get("graph_output")]
    return {
        **row,
        "method": errors["method"],
        "measures": errors.get("measures"),
        "images": errors["images"],
        "data": errors["data"],
        "twin": errors.get("twin"),
        "layers_measured": len(errors["layers"]),
        "output_layer": outputs[0] if outputs else None,
        "worst": errors["layers"][:KEPT_LAYERS],
    }


def _images_note(rows: list[dict], images: int) -> str:
    """Whether every measured model was given the images asked for (a small split gives fewer)."""
    fewer = [row["model"] for row in rows if row["status"] == "measured" and row["images"] < images]
    return (
        f"fewer images than --images for {', '.join(fewer)}"
        if fewer
        else "no model was given fewer images than --images"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models-dir", type=Path, default=REPO / "models")
    parser.add_argument("--data-dir", type=Path, default=None, help="Folder of the Fashion-MNIST IDX files.")
    parser.add_argument("--images", type=int, default=DEBUG_IMAGES, help="Validation images per model.")
    parser.add_argument("--out", type=Path, default=RESULTS / "inspect_models.json")
    args = parser.parse_args(argv)

    started = time.time()
    rows = []
    names = sorted(
        p.parent.name for p in args.models_dir.glob("*/model.json") if not p.parent.name.startswith(".")
    )
    for name in names:
        if model_file(args.models_dir / name) is None:
            rows.append({"model": name, "status": "not measured", "reason": "no model.tflite in the bundle"})
            continue
        began = time.time()
        report = inspect_artifact(
            args.models_dir / name, data_dir=args.data_dir, images=args.images, runtimes=[]
        )
        rows.append(_row(name, args.models_dir / name, report, time.time() - began))
        row = rows[-1]
        if row["status"] == "measured":
            worst = ", ".join(
                f"{layer['op']} {layer['added_rmse_per_scale']:+.2f}" for layer in row["worst"][:3]
            )
            print(
                f"{name:<14} twin agreement {row['twin']['agreement']:.1%}  worst: {worst}  ({row['seconds']} s)"
            )
        else:
            print(f"{name:<14} not measured: {row['reason']}")
    words = argv if argv is not None else sys.argv[1:]
    results = {
        "rows": rows,
        "images": args.images,
        "note": _images_note(rows, args.images),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "seconds": round(time.time() - started, 1),
    }
    command = shlex.join(["python", "benchmarks/inspect_models.py", *map(str, words)])
    command = command.replace(str(args.data_dir), "DATA_DIR") if args.data_dir else command
    # Only results written among the committed ones must hold no path of this machine.
    public = args.out.resolve().parent == RESULTS.resolve()
    write_result_file(args.out, "inspect-models", results, command, public=public)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

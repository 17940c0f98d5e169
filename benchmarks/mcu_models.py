"""Every shipped model under TensorFlow Lite for Microcontrollers: does it run, in how much arena and
flash, how accurately, and does it agree with LiteRT's reference kernels.

The rows are ``edge-fm bench --target tflm`` rows (the same schema as every bench result): a model TFLM
cannot run (mobilenetv2's GELU head) is an error row naming the op; a model whose artifact is not kept
in the folder (too large to ship) or is larger than every board's flash is an error row saying so,
with its size. No latency is recorded: TFLM timed on this computer says nothing of a
microcontroller's speed.

Usage (from the repository root; needs `pip install 'edge-fm[mcu]'`):
    python benchmarks/mcu_models.py --data-dir DATA_DIR [--images 1000]
Writes benchmarks/results/mcu_models.json.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from edge_fm.bench.benchmark import bench, write_results
from edge_fm.bench.targets import TflmTarget
from edge_fm.export.tflm import BOARDS, DEFAULT_CHECK_IMAGES
from edge_fm.shipping.catalog import read_provenances

REPO = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results"


def _largest_flash() -> int:
    return max(board.flash_bytes for board in BOARDS)


def _fits_a_board(artifact: Path) -> bool:
    """Whether a model's artifact is in its folder and no larger than the largest flash checked."""
    return artifact.is_file() and artifact.stat().st_size <= _largest_flash()


def unchecked_rows(models_dir: Path) -> list[dict]:
    """Error rows for the models not run under TFLM: an artifact the folder does not hold (too large to
    ship), or one larger than every board's flash (no microcontroller checked holds it)."""
    largest, rows = _largest_flash(), []
    for name, provenance in read_provenances(models_dir).items():
        artifact = models_dir / name / "model.tflite"
        if _fits_a_board(artifact):
            continue
        kept = artifact.is_file()
        size = artifact.stat().st_size if kept else provenance.get("artifact", {}).get("bytes")
        reasons = [] if kept else [f"the artifact is not kept in {models_dir.name}/ (too large to ship)"]
        if size and size > largest:
            reasons.append(f"at {size:,} bytes it exceeds the largest flash checked ({largest:,} bytes)")
        rows.append(
            {
                "artifact": name,
                "model": name,
                "path": _shown(models_dir / name),
                "bytes": size,
                "status": "error",
                "error": "not checked: " + "; ".join(reasons),
            }
        )
    return rows


def _shown(path: Path) -> str:
    """A path inside the repository as the repository names it (models/mlp/model.tflite)."""
    try:
        return path.resolve().relative_to(REPO).as_posix()
    except ValueError:
        return str(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models-dir", type=Path, default=REPO / "models")
    parser.add_argument("--data-dir", type=Path, default=None, help="Folder of the Fashion-MNIST IDX files.")
    parser.add_argument("--images", type=int, default=DEFAULT_CHECK_IMAGES, help="Test images per model.")
    parser.add_argument("--out", type=Path, default=RESULTS / "mcu_models.json")
    args = parser.parse_args(argv)

    # Each model's own int8 artifact, not the other forms a model folder may hold (a mobile/ one, say).
    artifacts = [
        args.models_dir / name / "model.tflite"
        for name in read_provenances(args.models_dir)
        if _fits_a_board(args.models_dir / name / "model.tflite")
    ]
    result = bench(artifacts, TflmTarget(images=args.images), data_dir=args.data_dir)
    for row in result["rows"]:
        row["model"] = Path(row["path"]).parent.name
        row["path"] = _shown(Path(row["path"]))
    result["rows"] += unchecked_rows(args.models_dir)
    result["rows"].sort(key=lambda row: row["model"])
    # The data folder is this machine's: the record names it as the README does.
    words = [
        "DATA_DIR" if args.data_dir and word == str(args.data_dir) else word
        for word in (argv if argv is not None else sys.argv[1:])
    ]
    result["command"] = shlex.join(["python", "benchmarks/mcu_models.py", *words])
    write_results(result, args.out, public=True)
    for row in result["rows"]:
        if row["status"] == "ok":
            print(
                f"{row['model']:<14} flash {row['flash_bytes']:>9,} B  arena {row['arena_bytes']:>7,} B "
                f"(min {row['arena_min_bytes']:,})  acc {row['accuracy']:.2%}  agree "
                f"{row['agreement_with_litert_reference']:.2%}"
                f"  identical {row['identical_outputs_to_litert_reference']:.1%}  {row['check_seconds']} s"
            )
        else:
            print(f"{row['model']:<14} error: {row['error']}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

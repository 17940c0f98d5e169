"""Mobile artifacts in the real clients: MediaPipe Tasks' ImageClassifier against the LiteRT
interpreter, on the whole test split.

For each mobile artifact (a bundle whose ``model.json`` says ``"target": "mobile"``; by default every
one under ``models/``), MediaPipe classifies every test image, given as RGB bytes with equal
channels, from its own environment (``.cache/mediapipe-venv``, built on first use, no TensorFlow);
LiteRT runs the same bytes. A row records the top-1 agreement, the largest score difference, the
label names MediaPipe read from the metadata, and both accuracies. One failing artifact is a row
with its error; the others still run. With ``--record`` each bundle's ``model.json`` lists the check
among the clients it was checked with (:func:`edge_fm.export.mobile.record_client_check`).

Usage (from the repository root):
    python benchmarks/mobile_clients.py [BUNDLE_OR_FOLDER ...] --data-dir DATA_DIR [--record]
Writes benchmarks/results/mobile_clients.json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "clients"))
from environments import ClientUnavailable, client_python  # noqa: E402

from edge_fm import CLASS_NAMES, load_split  # noqa: E402
from edge_fm.export.mobile import grey_to_rgb, record_client_check  # noqa: E402
from edge_fm.result_files import environment, write_result_file  # noqa: E402
from edge_fm.runner import TFLiteModel  # noqa: E402

RESULT = REPO / "benchmarks" / "results" / "mobile_clients.json"
CLIENT = "MediaPipe Tasks ImageClassifier"


def mobile_bundles(places: list[Path]) -> list[Path]:
    """Bundle folders with ``"target": "mobile"`` in their model.json, found under ``places``."""
    found = []
    for place in places:
        for description in sorted(place.rglob("model.json")) if place.is_dir() else []:
            if (
                json.loads(description.read_text()).get("target") == "mobile"
                and (description.parent / "model.tflite").is_file()
            ):
                found.append(description.parent)
    return found


def compare(bundle: Path, images: np.ndarray, labels: np.ndarray, python: Path) -> dict:
    model = bundle / "model.tflite"
    rgb = grey_to_rgb(images)
    with tempfile.TemporaryDirectory() as scratch:
        batch = Path(scratch) / "images.npy"
        np.save(batch, rgb)
        done = subprocess.run(
            [str(python), str(REPO / "tests" / "clients" / "mediapipe_classify.py"), str(model), str(batch)],
            capture_output=True,
            text=True,
        )
    if done.returncode != 0:
        raise RuntimeError(
            done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}"
        )
    client = json.loads(done.stdout)
    runner = TFLiteModel(model_path=str(model))
    reference = np.concatenate([runner.predict_proba(rgb[i : i + 1]) for i in range(len(rgb))])
    top = np.array(client["top1"])
    holds_best = reference[np.arange(len(top)), top] == reference.max(axis=1)
    return {
        "artifact": bundle.name if bundle.name != "mobile" else bundle.parent.name,
        "path": str(bundle),
        "sha256": hashlib.sha256(model.read_bytes()).hexdigest(),
        "images": int(len(images)),
        "top1_agreement": float(np.mean(top == reference.argmax(1))),
        "top1_holds_litert_best_score": float(np.mean(holds_best)),
        "max_score_difference": float(np.abs(np.array(client["scores"]) - reference).max()),
        "label_names_from_metadata": client["label_names"] == list(CLASS_NAMES),
        "mediapipe_accuracy": float(np.mean(top == labels)),
        "litert_accuracy": float(np.mean(reference.argmax(1) == labels)),
        "mediapipe_version": client["mediapipe_version"],
        "status": "ok",
    }


def _command(args: argparse.Namespace) -> str:
    """This run's command line, the dataset folder written as DATA_DIR (it differs per machine)."""
    words = [
        "python",
        "benchmarks/mobile_clients.py",
        *(
            str(p.relative_to(REPO)) if p.is_absolute() and p.is_relative_to(REPO) else str(p)
            for p in args.places
        ),
    ]
    words += ["--data-dir", "DATA_DIR"] if args.data_dir else []
    words += [f"--limit={args.limit}"] if args.limit else []
    return shlex.join([*words, *(["--record"] if args.record else [])])


def _client_check(row: dict, limit: int | None) -> dict:
    """What a bundle's model.json records of this check."""
    return {
        "client": CLIENT,
        "version": f"mediapipe {row['mediapipe_version']}",
        "images": row["images"],
        "data": f"Fashion-MNIST test split{f', first {limit}' if limit else ' (all)'}, as RGB bytes with "
        "equal channels",
        "top1_agreement_with_litert": row["top1_agreement"],
        "top1_holds_litert_best_score": row["top1_holds_litert_best_score"],
        "max_score_difference": row["max_score_difference"],
        "label_names_from_metadata": row["label_names_from_metadata"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Mobile artifacts in MediaPipe Tasks vs the LiteRT interpreter."
    )
    parser.add_argument(
        "places", nargs="*", type=Path, default=[REPO / "models"], help="bundles or folders holding them"
    )
    parser.add_argument("--data-dir", default=None, help="folder of the Fashion-MNIST IDX files")
    parser.add_argument("--limit", type=int, default=None, help="first N test images only (default: all)")
    parser.add_argument("--json", type=Path, default=RESULT)
    parser.add_argument("--record", action="store_true", help="list each check in its bundle's model.json")
    args = parser.parse_args(argv)
    bundles = mobile_bundles(args.places)
    if not bundles:
        print(
            f"no mobile bundles under {', '.join(map(str, args.places))}: export them with the mobile form first",
            file=sys.stderr,
        )
        return 2
    try:
        python = client_python("mediapipe")
    except ClientUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    images, labels = load_split("test", args.data_dir)
    images, labels = images[: args.limit], labels[: args.limit]
    rows, started = [], time.time()
    for bundle in bundles:
        try:
            row = compare(bundle, images, labels, python)
        except Exception as exc:  # noqa: BLE001 - one failing artifact is a row, not the end of the table
            row = {
                "artifact": bundle.name,
                "path": str(bundle),
                "status": "error",
                "error": f"{type(exc).__name__}: {exc}",
            }
        rows.append(row)
        if args.record and row["status"] == "ok":
            record_client_check(bundle, _client_check(row, args.limit))
        print(
            json.dumps(
                {k: row.get(k) for k in ("artifact", "status", "top1_agreement", "max_score_difference")}
            )
        )
    write_result_file(
        args.json,
        "mobile-clients",
        {"seconds": round(time.time() - started, 1), "rows": rows},
        _command(args),
        environment(client=CLIENT, python=platform.python_version()),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

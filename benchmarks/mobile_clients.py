"""Mobile artifacts in the real clients: MediaPipe Tasks' ImageClassifier (Python, and with --web the
npm package in headless Chromium) against the LiteRT interpreter, on the whole test split.

For each mobile artifact (a bundle whose ``model.json`` says ``"target": "mobile"``; by default every
one under ``models/``), MediaPipe classifies every test image, given as RGB bytes with equal
channels, from its own environment (``.cache/mediapipe-venv``, built on first use, no TensorFlow);
LiteRT runs the same bytes. A row records the top-1 agreement, the largest score difference, the
label names MediaPipe read from the metadata, and both accuracies. One failing artifact is a row
with its error; the others still run. With ``--record`` each bundle's ``model.json`` lists the check
among the clients it was checked with (:func:`edge_fm.export.mobile.record_client_check`).

With ``--web``, MediaPipe Tasks for the Web (``@mediapipe/tasks-vision``, pinned in
``tests/clients/mediapipe-web/``, installed from npm into ``.cache/mediapipe-web``) classifies the same
images in headless Chromium, on a plain page with an import map and the WASM served from 127.0.0.1
(``tests/clients/mediapipe_web.py``), each image an ImageData at the model's input size:

- each mobile form on the CPU delegate (a row each), and on the GPU delegate (WebGL on SwiftShader,
  Chromium's software renderer) for its first images: whether it runs there, or the error;
- each mobile GPU form found (``"target": "mobile-gpu"``, ``edge-fm export RUN --for mobile-gpu``) on
  the GPU and the CPU delegate;
- MediaPipe's own resize: for each shipped mobile form, the first ``--resize-images`` test images
  enlarged to each of ``RESIZE_SIZES`` (Pillow, bilinear or nearest) and given to MediaPipe as they
  are, against ``edge-fm predict`` of the same PNG files with the int8 file beside the form
  (:func:`edge_fm.show.predict.classify_files`) and against MediaPipe given the 28x28 original.

Usage (from the repository root):
    python benchmarks/mobile_clients.py [BUNDLE_OR_FOLDER ...] --data-dir DATA_DIR [--record] [--web]
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
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "clients"))
from environments import ClientUnavailable, client_python, web_package  # noqa: E402
from mediapipe_web import CLIENT as WEB_CLIENT  # noqa: E402
from mediapipe_web import short_error, web_client  # noqa: E402

from edge_fm import CLASS_NAMES, load_split  # noqa: E402
from edge_fm.export.mobile import grey_to_rgb, record_client_check  # noqa: E402
from edge_fm.export.mobile_gpu import TARGET as GPU_TARGET  # noqa: E402
from edge_fm.result_files import environment, write_result_file  # noqa: E402
from edge_fm.runner import TFLiteModel  # noqa: E402
from edge_fm.show.predict import classify_files  # noqa: E402

RESULT = REPO / "benchmarks" / "results" / "mobile_clients.json"
CLIENT = "MediaPipe Tasks ImageClassifier"
RESIZE_IMAGES = 1000  # test images of the resize study
GPU_PROBE_IMAGES = 20  # images a mobile form is tried on with the GPU delegate
RESIZE_SIZES = (
    28,
    56,
    84,
    100,
    112,
)  # sides given to MediaPipe: the input size, whole multiples of it, and 100
UPSCALING = {"bilinear": Image.Resampling.BILINEAR, "nearest": Image.Resampling.NEAREST}


def mobile_bundles(places: list[Path], target: str = "mobile") -> list[Path]:
    """Bundle folders with ``"target": target`` in their model.json, found under ``places``."""
    found = []
    for place in places:
        descriptions = sorted(place.rglob("model.json")) if place.is_dir() else []
        if place.is_dir() and (place / "model.json").is_file():
            descriptions = [place / "model.json"]
        for description in descriptions:
            if (
                json.loads(description.read_text()).get("target") == target
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


# ---------------------------------------------------------------- MediaPipe Tasks for the Web


def _name(bundle: Path) -> str:
    return bundle.parent.name if bundle.name == "mobile" else bundle.name


def web_row(client, bundle: Path, form: str, delegate: str, images: np.ndarray, labels: np.ndarray) -> dict:
    """One form on one delegate in the browser, against LiteRT on the same pixels."""
    model = bundle / "model.tflite"
    rgb = grey_to_rgb(images)
    row = {
        "artifact": _name(bundle),
        "path": _relative(bundle),
        "form": form,
        "delegate": delegate,
        "sha256": hashlib.sha256(model.read_bytes()).hexdigest(),
        "images": int(len(images)),
    }
    result = client.classify(model, rgb, delegate)
    if result["error_count"]:
        return {
            **row,
            "status": "error",
            "classified": row["images"] - result["error_count"],
            "error": short_error(result["errors"][0]),
        }
    runner = TFLiteModel(model_path=str(model))
    pixels = rgb.astype(np.float32) if form == GPU_TARGET else rgb
    reference = np.concatenate([runner.predict_proba(pixels[i : i + 1]) for i in range(len(pixels))])
    top = np.array(result["top1"])
    return {
        **row,
        "status": "ok",
        "top1_agreement": float(np.mean(top == reference.argmax(1))),
        "top1_holds_litert_best_score": float(
            np.mean(reference[np.arange(len(top)), top] == reference.max(axis=1))
        ),
        "max_score_difference": float(np.abs(np.array(result["scores"]) - reference).max()),
        "label_names_from_metadata": result["label_names"] == list(CLASS_NAMES),
        "mediapipe_accuracy": float(np.mean(top == labels)),
        "litert_accuracy": float(np.mean(reference.argmax(1) == labels)),
        "ms_per_image": result["milliseconds"] / len(images),
    }


def web_rows(client, mobile: list[Path], gpu: list[Path], images, labels) -> list[dict]:
    """Every mobile form on the CPU delegate (and tried on the GPU one), every mobile GPU form on both."""
    rows = []
    jobs = [(bundle, "mobile", "CPU", len(images)) for bundle in mobile]
    jobs += [(bundle, "mobile", "GPU", GPU_PROBE_IMAGES) for bundle in mobile]
    jobs += [(bundle, GPU_TARGET, delegate, len(images)) for bundle in gpu for delegate in ("GPU", "CPU")]
    for bundle, form, delegate, count in jobs:
        row = web_row(client, bundle, form, delegate, images[:count], labels[:count])
        rows.append(row)
        print(
            json.dumps({k: row.get(k) for k in ("artifact", "form", "delegate", "status", "top1_agreement")})
        )
    return rows


def resize_rows(client, mobile: list[Path], images: np.ndarray, labels: np.ndarray) -> list[dict]:
    """MediaPipe's own resize against edge-fm predict's, on images enlarged to each of RESIZE_SIZES."""
    shipped = [
        bundle for bundle in mobile if bundle.name == "mobile" and (bundle.parent / "model.tflite").is_file()
    ]
    grey = images.reshape(len(images), 28, 28)
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        exact = {
            bundle: client.classify(bundle / "model.tflite", grey_to_rgb(images))["top1"]
            for bundle in shipped
        }
        for size in RESIZE_SIZES:
            for upscaling in UPSCALING if size != 28 else ["none"]:
                pictures = [
                    Image.fromarray(image).convert("RGB").resize((size, size), UPSCALING.get(upscaling, 0))
                    for image in grey
                ]
                files = []
                for i, picture in enumerate(pictures):
                    files.append(Path(scratch) / f"{size}-{upscaling}-{i}.png")
                    picture.save(files[-1])
                rgb = np.stack([np.asarray(picture) for picture in pictures])
                for bundle in shipped:
                    predicted = _predicted(bundle.parent, files)
                    top = np.array(client.classify(bundle / "model.tflite", rgb)["top1"])
                    rows.append(
                        {
                            "artifact": _name(bundle),
                            "size": size,
                            "upscaling": upscaling,
                            "images": int(len(images)),
                            "agreement_with_predict": float(np.mean(top == predicted)),
                            "agreement_with_input_size": float(np.mean(top == np.array(exact[bundle]))),
                            "mediapipe_accuracy": float(np.mean(top == labels)),
                            "predict_accuracy": float(np.mean(predicted == labels)),
                        }
                    )
                    print(
                        json.dumps(
                            {
                                k: rows[-1][k]
                                for k in ("artifact", "size", "upscaling", "agreement_with_predict")
                            }
                        )
                    )
    return rows


def _predicted(model: Path, files: list[Path]) -> np.ndarray:
    """``edge-fm predict``'s top class of each file (equal probabilities: the first in label order)."""
    probabilities = np.zeros((len(files), len(CLASS_NAMES)))
    for row, result in enumerate(classify_files(model, files, len(CLASS_NAMES))):
        for name, probability in result.top:
            probabilities[row, CLASS_NAMES.index(name)] = probability
    return probabilities.argmax(1)


def _web_checks(client, row: dict) -> dict:
    """What a mobile form's model.json records of its browser check on one delegate."""
    check = {
        "client": WEB_CLIENT if row["delegate"] == "CPU" else f"{WEB_CLIENT}, GPU delegate",
        "version": client.version,
        "delegate": row["delegate"],
        "browser": f"Chromium {client.browser_version}",
        "images": row["images"],
    }
    if row["delegate"] == "GPU":
        check["webgl"] = _webgl_text(client.webgl_renderer)
    if row["status"] != "ok":
        return {**check, "classified": row["classified"], "error": row["error"]}
    return {
        **check,
        "data": f"Fashion-MNIST test split, first {row['images']}, as RGB ImageData with equal channels",
        "top1_agreement_with_litert": row["top1_agreement"],
        "top1_holds_litert_best_score": row["top1_holds_litert_best_score"],
        "max_score_difference": row["max_score_difference"],
        "label_names_from_metadata": row["label_names_from_metadata"],
    }


def _webgl_text(renderer: str | None) -> str:
    if renderer and "SwiftShader" in renderer:
        return "software WebGL (SwiftShader)"
    return f"WebGL on {renderer}" if renderer else "no WebGL"


def run_web(args: argparse.Namespace, mobile: list[Path], images, labels) -> dict:
    """The --web part of the result: the rows, the resize study and what ran them."""
    gpu = mobile_bundles(args.places, GPU_TARGET)
    with web_client(web_package()) as client:
        rows = web_rows(client, mobile, gpu, images, labels)
        resize = resize_rows(client, mobile, images[: args.resize_images], labels[: args.resize_images])
        if args.record:
            for row in rows:
                if row["form"] == "mobile":
                    record_client_check(REPO / row["path"], _web_checks(client, row))
        return {
            "client": WEB_CLIENT,
            "version": client.version,
            "browser": f"Chromium {client.browser_version}",
            "webgl_renderer": client.webgl_renderer,
            "page": "tests/clients/mediapipe-web/index.html: an import map, no bundler; the package's ESM file and "
            "wasm/ folder, the models and the images served from 127.0.0.1",
            "refused_requests": sorted(set(client.blocked)),
            "gpu_forms": [_gpu_form(bundle) for bundle in gpu],
            "rows": rows,
            "resize": {
                "images": int(len(images[: args.resize_images])),
                "sizes": list(RESIZE_SIZES),
                "how": "each 28x28 test image enlarged with Pillow (bilinear, or nearest: each pixel a block) "
                "and saved as PNG; MediaPipe (CPU delegate, mobile form) gets the enlarged RGB pixels and "
                "resizes them itself; edge-fm predict reads the PNG file with the int8 file beside the mobile "
                "form (same outputs on grey images), its top class the first in label order among equal "
                "probabilities, as MediaPipe's; agreement_with_input_size compares MediaPipe with itself "
                "given the 28x28 original",
                "rows": resize,
            },
        }


def _gpu_form(bundle: Path) -> dict:
    """How a mobile GPU form was made: its run's architecture and recipe, and the export's checks."""
    from edge_fm.export.bundles import read_description
    from edge_fm.train.runs import Run

    description = read_description(bundle)
    record = description["mobile_gpu"]
    config = Run(record["made_from"]["run"]).train_config
    recipe = f"{config.preset} preset, " if config.preset else ""
    return {
        "artifact": _name(bundle),
        "made_with": f"{config.arch} trained with the {recipe}{config.epochs} epochs on "
        f"{config.max_train or 'all':,} training images, then `edge-fm export RUN --for mobile-gpu`; top-1 "
        f"agreement with its Keras model {record['parity']['agreement']:.2%} on {record['parity']['images']:,} "
        f"validation images, test accuracy {record['test_accuracy']:.2%}",
        "test_accuracy": record["test_accuracy"],
        "parity": record["parity"],
    }


def _relative(path: Path) -> str:
    path = path.resolve()
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


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
    words += ["--web"] if args.web else []
    words += (
        [f"--resize-images={args.resize_images}"] if args.web and args.resize_images != RESIZE_IMAGES else []
    )
    words += ["--json", _repo_relative(args.json)] if args.json.resolve() != RESULT else []
    return shlex.join([*words, *(["--record"] if args.record else [])])


def _repo_relative(path: Path) -> str:
    path = path.resolve()
    return path.relative_to(REPO).as_posix() if path.is_relative_to(REPO) else str(path)


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
    parser.add_argument(
        "--web",
        action="store_true",
        help="also MediaPipe Tasks for the Web in headless Chromium (npm, Playwright)",
    )
    parser.add_argument(
        "--resize-images", type=int, default=RESIZE_IMAGES, help="test images of the --web resize study"
    )
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
    web = None
    if args.web:
        try:
            web = run_web(args, bundles, images, labels)
        except ClientUnavailable as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 3
    write_result_file(
        args.json,
        "mobile-clients",
        {"seconds": round(time.time() - started, 1), "rows": rows, **({"web": web} if web else {})},
        _command(args),
        environment(client=CLIENT, python=platform.python_version()),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

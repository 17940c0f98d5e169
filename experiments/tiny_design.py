"""The latency side of the edge-cnn family's design: int8 latency of candidate shapes, before any training.

The targets: edge-cnn-tiny's p50 at most a quarter of cnn-3conv-bn's int8 p50, and edge-cnn's below it,
each measured in one run. Latency does not depend on the trained weight values, so each candidate shape is
built with random weights, converted to full-integer int8 (calibrated on random pixels) and timed with 1 thread,
batch 1, against the shipped cnn-3conv-bn artifact in the same process. Timing is interleaved in
rounds (every model once per round), so a slow spell on a shared machine hits all of them alike and
the ratios stay comparable. The accuracy of a shape is a separate, trained question.

Usage (from the repository root; a minute or two):
    python experiments/tiny_design.py                   # edge-cnn-tiny: experiments/results/tiny_design.json
    python experiments/tiny_design.py --arch edge-cnn   # experiments/results/edge_cnn_design.json
    python experiments/tiny_design.py --artifacts runs/<run>/model.tflite --out <file>.json   # trained files
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

import numpy as np

from edge_fm.export.exporter import convert, get_format
from edge_fm.result_files import write_result_file
from edge_fm.runner import TFLiteModel, summarize_latency, time_invocations
from edge_fm.train.metrics import shape_text
from edge_fm.zoo import count_macs, create_model

REPO = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results"
REFERENCE = REPO / "models" / "cnn-3conv-bn" / "model.tflite"
REFERENCE_NAME = "cnn-3conv-bn (shipped int8)"

# Each architecture's options for each candidate (the full-resolution stem's width, stage widths, blocks, block
# kind), with a remark for the table; the row's name is made from the options, so the two cannot disagree.
TINY_CANDIDATES = [
    (
        {"stem": 32, "widths": [32, 64, 128], "blocks": [1, 2, 2], "block": "separable"},
        "the first edge-cnn-tiny",
    ),
    ({"stem": 16, "widths": [32, 64, 128], "blocks": [1, 2, 2], "block": "separable"}, ""),
    (
        {"stem": 16, "widths": [32, 64, 128], "blocks": [1, 2, 3], "block": "separable"},
        "the previous edge-cnn-tiny",
    ),
    ({"stem": 16, "widths": [32, 64, 160], "blocks": [1, 2, 2], "block": "separable"}, ""),
    ({"stem": 16, "widths": [32, 64, 128], "blocks": [1, 3, 3], "block": "separable"}, ""),
    ({"stem": 24, "widths": [24, 64, 128], "blocks": [1, 2, 2], "block": "separable"}, ""),
    # Full 3x3 convs: on a CPU with AVX-512 VNNI the int8 GEMM of a full conv gains far more than a
    # depthwise conv does (docs/design/full-convolutions.md), so few, full convs after an early pool.
    (
        {"stem": 16, "widths": [16, 32, 64], "blocks": [0, 2, 2], "block": "conv"},
        "shipped edge-cnn-tiny, the default",
    ),
    ({"stem": 16, "widths": [16, 32, 64], "blocks": [0, 3, 2], "block": "conv"}, ""),
    ({"stem": 16, "widths": [16, 40, 64], "blocks": [0, 2, 2], "block": "conv"}, ""),
    ({"stem": 16, "widths": [16, 32, 72], "blocks": [0, 2, 2], "block": "conv"}, ""),
    ({"stem": 16, "widths": [16, 32, 64], "blocks": [1, 2, 2], "block": "conv"}, ""),
]
EDGE_CNN_CANDIDATES = [
    (
        {"stem": 32, "widths": [64, 128, 256], "blocks": [2, 3, 3], "block": "separable"},
        "shipped edge-cnn, the default",
    ),
    (
        {"stem": 24, "widths": [24, 64, 128], "blocks": [0, 3, 2], "block": "conv"},
        "trained, plain and distilled",
    ),
    # A 28x28 stage of full convs: the separable edge-cnn, which has one, is the more accurate.
    ({"stem": 32, "widths": [32, 64, 128], "blocks": [1, 2, 2], "block": "conv"}, ""),
    ({"stem": 32, "widths": [32, 64, 128], "blocks": [1, 3, 2], "block": "conv"}, ""),
    ({"stem": 32, "widths": [32, 64, 128], "blocks": [1, 3, 3], "block": "conv"}, ""),
    ({"stem": 32, "widths": [32, 64, 128], "blocks": [2, 3, 2], "block": "conv"}, ""),
    ({"stem": 24, "widths": [24, 80, 160], "blocks": [0, 3, 2], "block": "conv"}, ""),
    ({"stem": 32, "widths": [32, 80, 160], "blocks": [1, 3, 2], "block": "conv"}, ""),
    ({"stem": 24, "widths": [24, 64, 128], "blocks": [1, 3, 2], "block": "conv"}, ""),
    ({"stem": 32, "widths": [32, 64, 160], "blocks": [1, 2, 2], "block": "conv"}, ""),
    ({"stem": 32, "widths": [32, 64, 128], "blocks": [1, 2, 3], "block": "conv"}, ""),
    ({"stem": 24, "widths": [24, 48, 128], "blocks": [1, 3, 2], "block": "conv"}, ""),
    ({"stem": 16, "widths": [16, 64, 128], "blocks": [1, 3, 2], "block": "conv"}, ""),
    # Deeper and thinner, at about the MACs of the first full-conv shape trained.
    ({"stem": 24, "widths": [24, 48, 96], "blocks": [1, 4, 3], "block": "conv"}, ""),
    ({"stem": 16, "widths": [16, 48, 96], "blocks": [1, 4, 4], "block": "conv"}, "trained"),
    ({"stem": 24, "widths": [24, 48, 128], "blocks": [1, 4, 2], "block": "conv"}, ""),
    # The deeper shape above with the latency room it left spent on depth or on width, most cheaply at 7x7.
    ({"stem": 16, "widths": [16, 48, 112], "blocks": [1, 4, 4], "block": "conv"}, "trained"),
    ({"stem": 16, "widths": [16, 48, 96], "blocks": [1, 4, 5], "block": "conv"}, ""),
    ({"stem": 16, "widths": [16, 48, 96], "blocks": [1, 5, 5], "block": "conv"}, ""),
    ({"stem": 16, "widths": [16, 56, 112], "blocks": [1, 4, 4], "block": "conv"}, ""),
    ({"stem": 16, "widths": [16, 48, 128], "blocks": [1, 4, 4], "block": "conv"}, ""),
    # Hybrids: full convs at 28x28, where a separable block's depthwise pass costs most per MAC,
    # and the separable model's wide 14x14 and 7x7 stages, which carried its accuracy.
    (
        {
            "stem": 16,
            "widths": [16, 128, 256],
            "blocks": [1, 3, 3],
            "block": ["conv", "separable", "separable"],
        },
        "trained",
    ),
    (
        {
            "stem": 24,
            "widths": [24, 128, 256],
            "blocks": [1, 3, 3],
            "block": ["conv", "separable", "separable"],
        },
        "",
    ),
    (
        {
            "stem": 32,
            "widths": [32, 128, 256],
            "blocks": [1, 3, 3],
            "block": ["conv", "separable", "separable"],
        },
        "",
    ),
    (
        {
            "stem": 24,
            "widths": [24, 96, 256],
            "blocks": [1, 2, 3],
            "block": ["conv", "separable", "separable"],
        },
        "",
    ),
    ({"stem": 24, "widths": [24, 64, 256], "blocks": [1, 3, 3], "block": ["conv", "conv", "separable"]}, ""),
    ({"stem": 16, "widths": [16, 48, 256], "blocks": [1, 4, 3], "block": ["conv", "conv", "separable"]}, ""),
]
CANDIDATES = {"edge-cnn-tiny": TINY_CANDIDATES, "edge-cnn": EDGE_CNN_CANDIDATES}
OUT = {"edge-cnn-tiny": "tiny_design.json", "edge-cnn": "edge_cnn_design.json"}


def candidate_name(options: dict, remark: str = "") -> str:
    """E.g. 'stem 16, widths 16/32/64, blocks 0/2/2, conv blocks (shipped edge-cnn-tiny, the default)'."""
    return f"{shape_text(options)} ({remark})" if remark else shape_text(options)


def int8_candidate(arch: str, options: dict, calibration: np.ndarray) -> tuple[bytes, dict]:
    """The int8 flatbuffer of one shape, and its parameter and MAC counts."""
    model = create_model(arch, **options)
    shape = {"params": int(model.count_params()), "macs": count_macs(model)}
    return convert(model, get_format("int8"), "int8", calibration), shape


def interleaved_latency(
    models: dict[str, bytes], rounds: int, runs_per_round: int, warmup: int
) -> dict[str, dict]:
    """p50 etc. per model, each timed ``runs_per_round`` times in each of ``rounds`` rounds."""
    image = np.random.default_rng(1).integers(0, 256, (1, 28, 28, 1), dtype=np.uint8)
    invokes = {}
    for name, content in models.items():
        model = TFLiteModel(model_content=content, num_threads=1)
        model.interpreter.set_tensor(model.input["index"], model.quantize_input(image))
        invokes[name] = model.interpreter.invoke
    timings: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(rounds):
        for name, invoke in invokes.items():
            for _ in range(warmup):
                invoke()
            timings[name] += time_invocations(
                invoke, runs_per_round, min_seconds=0.0, max_seconds=float("inf")
            )
    return {name: summarize_latency(values) for name, values in timings.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--runs-per-round", type=int, default=100)
    parser.add_argument("--arch", choices=sorted(CANDIDATES), default="edge-cnn-tiny")
    parser.add_argument(
        "--artifacts",
        type=Path,
        nargs="+",
        default=None,
        help="time these trained .tflite files instead of the shapes (latency only: no accuracy is read)",
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="default: experiments/results/" + " or ".join(OUT.values())
    )
    args = parser.parse_args(argv)
    if args.artifacts and not args.out:
        parser.error("--artifacts needs --out (the shape tables are not overwritten)")
    out = args.out or RESULTS / OUT[args.arch]
    models = {REFERENCE_NAME: REFERENCE.read_bytes()}
    options_of, shapes = {}, {}
    if args.artifacts:
        missing = [str(path) for path in args.artifacts if not path.is_file()]
        if missing:
            parser.error(f"no such .tflite file: {', '.join(missing)}")
        models.update({str(path): path.read_bytes() for path in args.artifacts})
    else:
        calibration = np.random.default_rng(0).integers(0, 256, (64, 28, 28, 1), dtype=np.uint8)
        for options, remark in CANDIDATES[args.arch]:
            name = candidate_name(options, remark)
            options_of[name] = options
            models[name], shapes[name] = int8_candidate(args.arch, options, calibration)
    latency = interleaved_latency(models, args.rounds, args.runs_per_round, warmup=10)
    reference_p50 = latency[REFERENCE_NAME]["p50_ms"]
    rows = []
    for name, content in models.items():
        options = options_of.get(name)
        shape = shapes.get(name, {})
        rows.append(
            {
                "candidate": name,
                "arch_options": options,
                "params": shape.get("params"),
                "macs": shape.get("macs"),
                "int8_bytes_without_metadata": len(content) if options else None,
                "bytes": len(content),
                "p50_ms": latency[name]["p50_ms"],
                "p90_ms": latency[name]["p90_ms"],
                "p50_ratio_to_cnn_3conv_bn": latency[name]["p50_ms"] / reference_p50,
            }
        )
        print(
            f"{name:70s} p50 {latency[name]['p50_ms']:.4f} ms  ratio {rows[-1]['p50_ratio_to_cnn_3conv_bn']:.3f}"
        )
    write_result_file(
        out,
        "shape-latency",
        {
            "what": (
                "int8 latency of trained artifacts"
                if args.artifacts
                else f"int8 latency of {args.arch} shapes with random weights"
            )
            + ", against the shipped cnn-3conv-bn",
            "arch": None if args.artifacts else args.arch,
            "threads": 1,
            "batch": 1,
            "rounds": args.rounds,
            "runs_per_round": args.runs_per_round,
            "rows": rows,
        },
        shlex.join(["python", "experiments/tiny_design.py", *(sys.argv[1:] if argv is None else argv)]),
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Puts the committed result files written before the envelope into it, without measuring again.

Every JSON under benchmarks/results/ and experiments/results/ becomes ``{"schema", "command",
"environment", "results"}`` (see ``edge_fm/result_files.py``), as the scripts now write them: the
command and the environment move out of the results, a one-line machine description joins the
environment as ``description``, and every figure stays as it was. Two things are dropped or
rewritten because a result file must not name the machine that measured: the host name, and an
artifact's absolute path (written relative to the repository, as the command named it). A file
already in the envelope is left as it is, so the conversion can run again.

Usage (from the repository root):
    python tools/envelope_results.py            # convert, and print what changed
    python tools/envelope_results.py --check    # exit 1 naming every file not in the envelope
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any

from edge_fm.io import read_json, write_json
from edge_fm.result_files import envelope, kind_of, without_host_names

REPO = Path(__file__).resolve().parents[1]
RESULT_DIRS = ("benchmarks/results", "experiments/results")
# File -> kind, for files that do not say theirs; a result of `edge-fm bench --json` is `bench`.
KINDS = {
    "arm_emulated.json": "arm-emulated",
    "decode_memory.json": "decode-memory",
    "demo_timings.json": "demo-timings",
    "ethos_u.json": "bench",
    "mcu_models.json": "bench",
    "mobile_clients.json": "mobile-clients",
    "mobile_latency.json": "mobile-latency",
    "models_bench.json": "bench",
    "optimize_chain_cnn-2conv.json": "optimize-chain",
    "paper_presets.json": "paper-presets",
    "quant_schemes.json": "bench",
    "runner_quality.json": "runner-quality",
    "sweep_concurrency.json": "sweep-concurrency",
    "cnn-3conv-bn_artifacts_latency.json": "bench",
    "distribute_noise.json": "distribute-noise",
    "edge_cnn_candidates.json": "candidate-runs",
    "edge_cnn_design.json": "shape-latency",
    "edge_cnn_fullconv_candidate.json": "bench",
    "edge_cnn_trained_latency.json": "shape-latency",
    "int8_error.json": "int8-error",
    "int8_error_converter_fold.json": "int8-error",
    "tiny_design.json": "shape-latency",
}
# Results that did not record their command; experiments/README.md names it.
COMMANDS = {
    "edge_cnn_fullconv_candidate.json": "edge-fm bench models/cnn-3conv-bn models/edge-cnn "
    "runs/fullconv/edge-cnn-qat-int8-1 runs/fullconv/edge-cnn-int8-1 --threads 1 --runs 200 --min-seconds 2 "
    "--json experiments/results/edge_cnn_fullconv_candidate.json --data-dir DATA_DIR",
    "cnn-3conv-bn_artifacts_latency.json": "edge-fm bench cnn-3conv-bn-previous.tflite "
    "models/cnn-3conv-bn/model.tflite --sample --min-seconds 3 "
    "--json experiments/results/cnn-3conv-bn_artifacts_latency.json",
}
# One-line descriptions of the machine, which the scripts wrote beside their figures.
DESCRIPTIONS = ("machine", "host")
ENVIRONMENT_KEYS = ("python", "pillow")  # versions a script wrote beside its figures
_ABSOLUTE_ARTIFACT = re.compile(r"^/.*?/(models/[^/]+/[^/]+\.tflite)$")


def kind_for(name: str, value: Any) -> str:
    """The kind of a committed file: what it says, its name's entry in :data:`KINDS`, or a paper run's copy."""
    if isinstance(value, dict) and isinstance(value.get("schema"), str):
        return value["schema"].split("/")[1]
    if name.endswith("-paper.metrics.json"):
        return "train-metrics"
    if name.endswith("-paper.config.json"):
        return "train-config"
    return KINDS[name]


def relative_artifacts(value: Any) -> Any:
    """``value`` with absolute paths of a shipped model's files written from ``models/`` on."""
    if isinstance(value, dict):
        return {key: relative_artifacts(item) for key, item in value.items()}
    if isinstance(value, list):
        return [relative_artifacts(item) for item in value]
    if isinstance(value, str):
        match = _ABSOLUTE_ARTIFACT.match(value)
        return match.group(1) if match else value
    return value


def paper_environment(folder: Path, runs: list[dict]) -> dict[str, str]:
    """The device and TensorFlow version the paper runs trained on (as benchmarks/train_paper_presets.py
    records them), from their metrics files."""
    metrics = []
    for run in runs:
        value = read_json(folder / run["metrics_file"])
        metrics.append(value["results"] if kind_of(value) else value)
    return {
        key: "; ".join(dict.fromkeys(str(m[key]) for m in metrics if key in m))
        for key in ("device", "tensorflow")
        if any(key in m for m in metrics)
    }


def convert(path: Path) -> dict[str, Any] | None:
    """The envelope of the file at ``path``, or None when it is one already."""
    value = read_json(path)
    if kind_of(value) and "results" in value:
        return None
    kind = kind_for(path.name, value)
    value = relative_artifacts(without_host_names(value))
    if kind == "paper-presets":  # a list of rows, each with the command of its training
        command = "python benchmarks/train_paper_presets.py --summarize-only"
        return envelope(kind, value, command, paper_environment(path.parent, value))
    results = dict(value)
    results.pop("schema", None)
    command = results.pop("command", "") or COMMANDS.get(path.name, "")
    environment = dict(results.pop("environment", None) or {})
    if kind == "arm-emulated":  # the x86_64 host ran the command; the emulated aarch64 is measured
        environment = results.pop("x86_64_environment")
    for key in DESCRIPTIONS:
        if key in results:
            environment["description"] = results.pop(key)
    for key in ENVIRONMENT_KEYS:
        if key in results:
            environment[key] = results.pop(key)
    if kind in ("train-metrics", "train-config"):
        metrics = value if kind == "train-metrics" else _paper_metrics(path)
        command = command or metrics.get("command", "")
        environment = {key: str(metrics[key]) for key in ("device", "tensorflow") if key in metrics}
    return envelope(kind, results, command, environment)


def _paper_metrics(config_path: Path) -> dict:
    value = read_json(config_path.with_name(config_path.name.replace(".config.json", ".metrics.json")))
    return {**value["results"], "command": value["command"]} if kind_of(value) else value


def result_files(root: Path) -> list[Path]:
    """Every committed result JSON, metrics files before the files that read them."""
    files = [path for folder in RESULT_DIRS for path in sorted((root / folder).glob("*.json"))]
    return sorted(files, key=lambda path: (not path.name.endswith(".metrics.json"), str(path)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 naming every file not in the envelope")
    parser.add_argument("--root", type=Path, default=REPO)
    args = parser.parse_args(argv)
    pending = []
    for path in result_files(args.root):
        if args.check:
            value = read_json(path)
            if not (kind_of(value) and "results" in value):
                pending.append(path)
            continue
        converted = convert(path)
        if converted is not None:
            write_json(path, converted)
            print(f"{path.relative_to(args.root)}: {converted['schema']}")
    for path in pending:
        print(f"{path.relative_to(args.root)} is not in the result envelope", file=sys.stderr)
    return 1 if pending else 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The result tables of README.md and docs/, generated from the committed JSON.

Each table sits in a document between ``<!-- table:NAME -->`` and ``<!-- /table:NAME -->``; this
script rewrites what is between the markers, so every number in those tables comes from a JSON file
under benchmarks/results/ or experiments/results/. A data directory recorded in a command is shown
as ``--data-dir DATA_DIR``: it was a local copy of the dataset, and a reader has their own.

Usage (from the repository root):
    python tools/tables.py            # rewrite the tables in README.md and docs/
    python tools/tables.py --check    # exit 1 and name every stale table (the tests run this)
"""

from __future__ import annotations

import argparse
import hashlib
import re
import statistics
import sys
from pathlib import Path
from typing import Callable

from edge_fm.export.bundles import DESCRIPTION_FILE, read_description
from edge_fm.export.recorded_forms import kept_entry
from edge_fm.io import KB
from edge_fm.result_files import flat, read_result_file
from edge_fm.train.metrics import cpu_text, shape_text

REPO = Path(__file__).resolve().parents[1]
# Where result JSON lives: the product's benchmarks, then the one-off studies.
RESULT_DIRS = ("benchmarks/results", "experiments/results")
MARKER = re.compile(r"(<!-- table:([\w-]+) -->\n)(.*?)(<!-- /table:\2 -->)", re.S)


def documents(root: Path) -> list[Path]:
    """The documents that may hold generated tables: README.md and every Markdown file under docs/."""
    return [path for path in [root / "README.md", *sorted((root / "docs").rglob("*.md"))] if path.is_file()]


def _load(root: Path, name: str):
    """A result file's figures, with its ``command`` and ``environment`` beside them (a list of rows
    stays a list), or None when no result folder holds it."""
    for folder in RESULT_DIRS:
        path = root / folder / name
        if path.exists():
            recorded = read_result_file(path)
            return flat(recorded) if isinstance(recorded["results"], dict) else recorded["results"]
    return None


def _machine(result: dict) -> str:
    """The one-line description of the machine a result file records (``x86_64, AMD EPYC``)."""
    return result["environment"]["description"]


def _pct(value) -> str:
    return "-" if value is None else f"{value * 100:.2f}%"


def public_command(command: str) -> str:
    """The command as a reader can run it: a recorded data directory becomes ``DATA_DIR``."""
    return re.sub(r"(--data-dir[ =])(\S+)", r"\1DATA_DIR", command)


def paper_presets(root: Path) -> str | None:
    result = _load(root, "paper_presets.json")
    if not result:
        return None
    lines = [
        "| architecture | paper | target | test accuracy | epochs (best) | training time | trained on |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in sorted(result, key=lambda r: r["paper_accuracy"]):
        lines.append(
            f"| `{row['arch']}` | {_pct(row['paper_accuracy'])} | {_pct(row['target'])} | "
            f"{_pct(row['test_accuracy'])} | "
            f"{row['epochs_run']} ({row['best_epoch']}) | {row['training_seconds']:.0f} s | "
            f"{row['device'].removeprefix('CPU: ')} |"
        )
    commands = "; ".join(f"`{public_command(c)}`" for c in dict.fromkeys(row["command"] for row in result))
    return "\n".join(lines + ["", f"Commands run: {commands}."])


def optimize_chain(root: Path) -> str | None:
    result = _load(root, "optimize_chain_cnn-2conv.json")
    if not result:
        return None
    lines = [
        f"Float Keras model: {_pct(result['float_model']['test_accuracy'])} on the test split; pruning target "
        f"{result['sparsity_target']:.0%}; {_machine(result)}.",
        "",
        "| artifact | test accuracy | bytes | gzip bytes | integer-only | status |",
        "|---|---|---|---|---|---|",
    ]
    for row in result["rows"]:
        lines.append(
            f"| {row['artifact']} | {_pct(row.get('test_accuracy'))} | {row.get('bytes', '-'):,} | "
            f"{row.get('gzip_bytes', '-'):,} | {'yes' if row.get('integer_only') else 'no'} | {row['status']} |"
        )
    checks = ", ".join(f"{name}: {'met' if ok else 'NOT met'}" for name, ok in result["checks"].items())
    return "\n".join(
        lines
        + [
            "",
            f"Checks: {checks}. Command run: `{public_command(result['command'])}` ({result['seconds']:.0f} s).",
        ]
    )


def runner_quality(root: Path) -> str | None:
    result = _load(root, "runner_quality.json")
    if not result:
        return None
    lat, acc = result["latency"], result["accuracy_pass"]
    return "\n".join(
        [
            "| check | measured | target | met |",
            "|---|---|---|---|",
            f"| runner p50 vs bare `invoke()` loop (medians of {lat.get('rounds', 1)} alternated "
            f"rounds of {lat['runs_each']} runs) | "
            f"{lat['runner_p50_ms']:.4f} ms vs "
            f"{lat['bare_invoke_p50_ms']:.4f} ms ({lat['overhead'] * 100:+.1f}%) | {lat['target']} | "
            f"{'yes' if lat['met'] else 'no'} |",
            f"| accuracy pass over {acc['images']:,} test images ({result['format']}, {result['bytes']:,} bytes) | "
            f"{acc['runner_seconds']:.2f} s | {acc['target']} | {'yes' if acc['met'] else 'no'} |",
            "",
            f"Machine: {_machine(result)}; {result['environment']['interpreter']} "
            f"{result['environment']['interpreter_version']}. "
            f"Command run: `{public_command(result['command'])}`.",
        ]
    )


def arm_emulated(root: Path) -> str | None:
    result = _load(root, "arm_emulated.json")
    if not result:
        return None
    env = result["aarch64_environment"]
    cpus = result["cpus"]
    lines = [
        f"aarch64: {env['os']}, Python {env['python']}, {env['interpreter']} {env['interpreter_version']}, "
        f"numpy {env['numpy']}; {result['qemu']}.",
        "",
        "| artifact | format | x86_64 accuracy | "
        + " | ".join(f"{cpu} ({what})" for cpu, what in cpus.items())
        + " |",
        "|---|---|---|" + "---|" * len(cpus),
    ]
    for row in result["rows"]:
        cells = []
        for cpu in cpus:
            entry = row["aarch64"][cpu]
            cells.append(
                f"{_pct(entry['accuracy'])} ({entry['difference'] * 100:+.2f} pt)"
                if entry["status"] == "ok"
                else f"{entry['status']}: {entry.get('error', '')}"
            )
        lines.append(
            f"| {row['artifact']}{replaced_since(root, row)} | {row['format']} | {_pct(row['x86_64_accuracy'])} | "
            + " | ".join(cells)
            + " |"
        )
    note = result["note"][0].upper() + result["note"][1:]
    return "\n".join(
        lines
        + [
            "",
            f"Largest difference on the Raspberry Pi CPUs: "
            f"{result['max_accuracy_difference_on_pi_cpus'] * 100:.2f} points. {note}; no emulated timing "
            f"is shown here. Command run: `{public_command(result['command'])}` ({result['seconds']:.0f} s).",
        ]
    )


def replaced_since(root: Path, row: dict) -> str:
    """A note for a row measured on a models/ artifact whose file in models/ is no longer the one measured."""
    path = Path(row["path"])
    if path.parent.parent.name != "models":
        return ""
    shipped = root / "models" / path.parent.name / path.name
    if shipped.exists() and hashlib.sha256(shipped.read_bytes()).hexdigest() == row["sha256"]:
        return ""
    return f" (an earlier artifact, sha256 {row['sha256'][:12]}; models/{path.parent.name} holds another now)"


def _shipped_status(row: dict) -> str:
    if row["shipped"]:
        return "shipped"
    measured = (
        ""
        if row["remeasured"]
        else f"; numbers from the run of {row['measured_in']}, {cpu_text(row['measured_on'])}"
    )
    return f"not shipped (too large for models/{measured})"


def _kept_as_record(form: Path) -> bool:
    return (form / DESCRIPTION_FILE).is_file() and kept_entry(read_description(form)) is not None


def shipped_mobile_forms(root: Path) -> str | None:
    """The shipped mobile forms: sizes and parity from each form's model.json, MediaPipe's agreement and
    the latency ratio from their benchmark JSON."""
    clients, latency = _load(root, "mobile_clients.json"), _load(root, "mobile_latency.json")
    if not clients or not latency:
        return None
    # A form kept as its record (resnet50's) is checked on its own, once its command has made the file.
    kept = [form.parent.name for form in sorted((root / "models").glob("*/mobile")) if _kept_as_record(form)]
    more = [_load(root, f"mobile_clients_{name}.json") for name in kept]
    more = [result for result in more if result]
    timed = {row["model"]: row for row in latency["rows"] if row.get("status") == "ok"}
    lines = [
        "| model | format | grey conversion | int8 bytes | mobile bytes | outputs vs int8 (LiteRT) | "
        "MediaPipe top-1 = LiteRT | MediaPipe accuracy | p50 int8 ms | p50 mobile ms | ratio |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in sorted(
        clients["rows"] + [r for result in more for r in result["rows"]], key=lambda r: r["artifact"]
    ):
        if row.get("status") != "ok":
            continue
        folder = root / "models" / row["artifact"]
        main, mobile = read_description(folder), read_description(folder / "mobile")
        parity = mobile["mobile"]["parity"]
        outputs = "identical" if parity["identical_to_int8"] else f"top-1 {parity['top1_agreement']:.2%}"
        pair = timed.get(row["artifact"])
        times = (
            f"{pair['latency']['int8']['p50_ms']:.3f} | {pair['latency']['mobile']['p50_ms']:.3f} | "
            f"{pair['p50_ratio']:.3f}"
            if pair
            else "- | - | -"
        )
        lines.append(
            f"| `{row['artifact']}` | {main['format']} | {mobile['mobile']['grey_conversion']['method']} | "
            f"{main['artifact']['bytes']:,} | {mobile['artifact']['bytes']:,} | {outputs} ({parity['images']:,} "
            f"images) | {row['top1_agreement']:.2%} | {row['mediapipe_accuracy']:.2%} | {times} |"
        )
    env = latency["environment"]
    return "\n".join(
        lines
        + [
            "",
            f"MediaPipe on {clients['rows'][0]['images']:,} test images (`{public_command(clients['command'])}`"
            + "".join(f"; `{public_command(result['command'])}`" for result in more)
            + f"); latency {env.get('cpu', '')}, one thread (`{public_command(latency['command'])}`).",
        ]
    )


def shipped_models(root: Path) -> str | None:
    """The shipped models and their targets; each model's recipe notes are in its MODEL_CARD.md."""
    result = _load(root, "models_bench.json")
    if not result:
        return None
    env = result["environment"]
    targets = {c["model"]: c["target"] for c in result["checks"] if c["check"] == "int8 test accuracy"}
    lines = [
        "| model | format | test accuracy (int8) | target | float model | bytes | gzip bytes | "
        "p50 ms | p90 ms | images/s | status |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in sorted(result["rows"], key=lambda r: r.get("accuracy") or 0):
        if row["status"] != "ok":
            lines.append(
                f"| `{row['model']}` | - | - | - | - | - | - | - | - | - | {row['status']}: {row.get('error', '')} |"
            )
            continue
        lat = row["latency"]
        lines.append(
            f"| [`{row['model']}`](models/{row['model']}/MODEL_CARD.md) | {row['format']} | {_pct(row['accuracy'])} | "
            f"{_pct(targets.get(row['arch']))} | {_pct(row['float_test_accuracy'])} | "
            f"{row['bytes']:,} | {row['gzip_bytes']:,} | "
            f"{lat['p50_ms']:.3f} | {lat['p90_ms']:.3f} | {lat['images_per_second']:,.0f} | {_shipped_status(row)} |"
        )
    missed = [f"`{c['model']}` {c['check']}" for c in result["checks"] if c["met"] is False]
    return "\n".join(
        lines
        + [
            "",
            f"1 thread, batch 1, {result['test_set']['source']}; {cpu_text(env)}, {env['interpreter']} "
            f"{env['interpreter_version']}, Python {env['python']}. Command run: "
            f"`{public_command(result['command'])}`. "
            f"Targets missed in this run: {', '.join(missed) or 'none'} "
            "([every target](docs/results.md#targets-of-the-shipped-models)).",
        ]
    )


def demo_timings(root: Path) -> str | None:
    """How long a user waits for a report and for the web demo."""
    result = _load(root, "demo_timings.json")
    if not result:
        return None
    rows = [
        *(
            [
                (
                    "`" + result["quickstart_pipeline"]["command"] + "` (the quickstart)",
                    result["quickstart_pipeline"],
                )
            ]
            if "quickstart_pipeline" in result
            else []
        ),
        (
            "`" + result["report_of_a_run"]["command"] + "` (the quickstart's pipeline run)",
            result["report_of_a_run"],
        ),
        ("`edge-fm report models/`", result["report_of_models"]),
        ("`edge-fm serve models/`: start to first page", result["serve_first_page"]),
        ("the demo's answer after a click on a test image (Chromium)", result["first_answer_after_a_click"]),
    ]
    lines = ["| what | median | runs | target |", "|---|---|---|---|"]
    for label, row in rows:
        target = (
            f"{row['target_s']:.0f} s: {'met' if row['met'] else '**missed**'}" if "target_s" in row else "-"
        )
        lines.append(
            f"| {label} | {row['median_s']:.2f} s | {', '.join(f'{v:.2f}' for v in row['runs_s'])} | {target} |"
        )
    return "\n".join(
        lines
        + [
            "",
            f"Whole commands in fresh processes, imports included; {_machine(result).strip()}. "
            f"Command run: `{public_command(result['command'])}`.",
        ]
    )


def shipped_targets(root: Path) -> str | None:
    """Every target of the shipped models as the benchmark run judged it."""
    result = _load(root, "models_bench.json")
    if not result:
        return None
    verdict = {True: "met", False: "**missed**", None: "not measured (model not shipped)"}

    def number(value):
        return "-" if value is None else f"{value:,.4f}" if isinstance(value, float) else f"{value:,}"

    lines = ["| model | check | measured | target | result |", "|---|---|---|---|---|"]
    for c in result["checks"]:
        if c["check"] == "int8 test accuracy" and c["met"] is None:
            continue
        lines.append(
            f"| `{c['model']}` | {c['check']} | {number(c['measured'])} | {number(c['target'])} | {verdict[c['met']]} |"
        )
    return "\n".join(lines + ["", f"From `{public_command(result['command'])}` ({result['started']})."])


def _shape_design(root: Path, file: str, arch: str) -> str | None:
    """The table of one experiments/tiny_design.py result: candidate shapes timed against cnn-3conv-bn."""
    result = _load(root, file)
    if not result:
        return None
    lines = [
        f"| {arch} shape (random weights, int8) | parameters | MACs/image | bytes (no metadata) "
        "| p50 ms | p50 / cnn-3conv-bn's |",
        "|---|---|---|---|---|---|",
    ]
    reference = next(row for row in result["rows"] if row["arch_options"] is None)
    for row in (r for r in result["rows"] if r is not reference):
        lines.append(
            f"| {row['candidate']} | {row['params']:,} | {row['macs'] / 1e6:.2f} M | "
            f"{row['int8_bytes_without_metadata']:,} | "
            f"{row['p50_ms']:.4f} | {row['p50_ratio_to_cnn_3conv_bn']:.3f} |"
        )
    env = result["environment"]
    return "\n".join(
        lines
        + [
            "",
            f"Reference: {reference['candidate']}, p50 {reference['p50_ms']:.4f} ms in the same run. "
            f"{result['threads']} thread, batch 1, {result['rounds']} interleaved rounds of {result['runs_per_round']} "
            f"runs per model; {cpu_text(env)}, {env['interpreter']} {env['interpreter_version']}. "
            f"Command run: `{public_command(result['command'])}`.",
        ]
    )


def tiny_design(root: Path) -> str | None:
    return _shape_design(root, "tiny_design.json", "edge-cnn-tiny")


def edge_cnn_design(root: Path) -> str | None:
    return _shape_design(root, "edge_cnn_design.json", "edge-cnn")


def _span(values: list[float], fmt: str) -> str:
    low, high = format(min(values), fmt), format(max(values), fmt)
    return low if low == high else f"{low}-{high}"


def _block_kind(options: dict) -> str:
    kinds = {options["block"]} if isinstance(options["block"], str) else set(options["block"])
    return kinds.pop() if len(kinds) == 1 else "mixed"


def block_throughput(root: Path) -> str | None:
    """int8 MACs per microsecond of the timed shapes, by block kind: how fast each kind runs on the timing CPU."""
    lines = [
        "| shapes timed | block kind | shapes | MACs per µs, median (range) | p50 / cnn-3conv-bn's (range) |",
        "|---|---|---|---|---|",
    ]
    commands, environment = [], None
    for file, arch in (("tiny_design.json", "edge-cnn-tiny"), ("edge_cnn_design.json", "edge-cnn")):
        result = _load(root, file)
        if not result:
            return None
        commands.append(result["command"])
        environment = result["environment"]
        by_kind: dict[str, list[dict]] = {}
        for row in (r for r in result["rows"] if r["arch_options"] is not None):
            by_kind.setdefault(_block_kind(row["arch_options"]), []).append(row)
        for kind, rows in sorted(
            by_kind.items(), key=lambda item: ("separable", "mixed", "conv").index(item[0])
        ):
            speed = [row["macs"] / (row["p50_ms"] * 1000) for row in rows]
            ratio = [row["p50_ratio_to_cnn_3conv_bn"] for row in rows]
            lines.append(
                f"| `{arch}` | {kind} | {len(rows)} | {statistics.median(speed):,.0f} ({_span(speed, ',.0f')}) | "
                f"{_span(ratio, '.3f')} |"
            )
    return "\n".join(
        lines
        + [
            "",
            f"Random weights, int8, 1 thread, batch 1; {cpu_text(environment)}. From the shape tables in "
            f"[results](../results.md#shapes-of-the-edge-family), made by "
            + " and ".join(f"`{public_command(c)}`" for c in commands)
            + ".",
        ]
    )


def _trained_latency(root: Path) -> tuple[dict[str, float], dict | None]:
    """p50 / cnn-3conv-bn's per timed trained artifact, keyed by its bundle directory, and the run's JSON."""
    result = _load(root, "edge_cnn_trained_latency.json")
    if not result:
        return {}, None
    ratios = {
        str(Path(row["candidate"]).parent): row["p50_ratio_to_cnn_3conv_bn"]
        for row in result["rows"]
        if row["arch_options"] is None and row["candidate"].endswith(".tflite")
    }
    return ratios, result


def _candidate_row(
    name: str,
    shape: str,
    epochs: int,
    distilled: bool,
    params: int,
    float_val: float,
    formats: list[tuple[float | None, float | None]],
) -> str:
    """A row of the candidates table; ``formats`` is (validation accuracy, p50 ratio) for qat-int8 and int8."""
    timed = ", ".join("-" if ratio is None else f"{ratio:.3f}" for _, ratio in formats)
    return (
        f"| {name} | {shape} | {epochs} | {'yes' if distilled else '-'} | {params:,} | {_pct(float_val)} | "
        + " | ".join(_pct(accuracy) for accuracy, _ in formats)
        + f" | {timed} |"
    )


def _reference_row(reference: dict, ratios: dict[str, float]) -> str:
    """The shipped edge-cnn the candidates were compared with, as the candidates' JSON records it."""
    train, chosen = reference["train"], reference["chosen_format"]
    shape = shape_text(train["arch_options"]) if train["arch_options"] else "the architecture's default shape"
    formats = [
        (
            reference["tflite_validation_accuracy"].get(name),
            ratios.get(f"models/{reference['model']}") if name == chosen else None,
        )
        for name in ("qat-int8", "int8")
    ]
    return _candidate_row(
        f"shipped `{reference['model']}` ({chosen})",
        shape,
        train["epochs_run"],
        bool(train["teacher"]),
        train["params"],
        train["validation_accuracy"],
        formats,
    )


def edge_cnn_candidates(root: Path) -> str | None:
    """One row per trained faster edge-cnn shape: its validation figures and the latency of its artifacts."""
    result = _load(root, "edge_cnn_candidates.json")
    if not result:
        return None
    ratios, latency = _trained_latency(root)
    runs: dict[str, dict] = {}
    for row in result["rows"]:  # the bundles of one training run (its qat-int8 and int8 exports) share a row
        runs.setdefault(row["train"]["run"], {})[row["format"]] = row
    lines = [
        "| training run | shape | epochs | distilled | params | float model | qat-int8 | int8 | "
        "p50 / cnn-3conv-bn's (qat-int8, int8) |",
        "|---|---|---|---|---|---|---|---|---|",
        _reference_row(result["reference"], ratios),
    ]
    for run, bundles in runs.items():
        train = next(iter(bundles.values()))["train"]
        formats = [
            (bundles[name]["tflite_validation_accuracy"], ratios.get(bundles[name]["bundle"]))
            if name in bundles
            else (None, None)
            for name in ("qat-int8", "int8")
        ]
        lines.append(
            _candidate_row(
                f"`{run}`",
                shape_text(train["arch_options"]),
                train["epochs_run"],
                bool(train["teacher"]),
                train["params"],
                train["validation_accuracy"],
                formats,
            )
        )
    images = {row["validation_images"] for row in result["rows"]}
    footer = (
        f"Accuracy on the whole validation split ({', '.join(f'{n:,}' for n in sorted(images))} images). "
        f"Command run: `{public_command(result['command'])}` (it needs the run directories, which are not in git)."
    )
    if latency:
        footer += (
            f" Latency of the trained artifacts, 1 thread, batch 1, interleaved with the shipped `cnn-3conv-bn` "
            f"({latency['rounds']} rounds of {latency['runs_per_round']} runs; {cpu_text(latency['environment'])}): "
            f"`{public_command(latency['command'])}`."
        )
    return "\n".join(lines + ["", footer])


def _folded_layers(tensor: str) -> str:
    """The Keras layers a TFLite tensor was made from: ``model/layer/...;model/other/...`` -> ``layer + other``
    (a QAT wrapper's ``quant_`` prefix dropped)."""
    names = [part.split("/")[1].removeprefix("quant_") for part in tensor.split(";") if part.count("/") >= 2]
    return " + ".join(f"`{name}`" for name in dict.fromkeys(names)) or f"`{tensor}`"


def _int8_error(root: Path, file: str) -> str | None:
    """The table of one experiments/int8_error.py result: each run's int8 accuracy and its worst int8 ops."""
    result = _load(root, file)
    if not result:
        return None
    lines = [
        "| run | int8 format | Keras model | int8 artifact | worst int8 op (the layers in it) | "
        "its error | next worst |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in result["rows"]:
        ops = row["worst_ops"]  # a QAT model may leave the debugger fewer than two ops, or none
        worst = (
            f"{ops[0]['op']} ({_folded_layers(ops[0]['tensor'])}) | {ops[0]['rmse_per_scale']:.1f} steps"
            if ops
            else "- | -"
        )
        following = f"{ops[1]['rmse_per_scale']:.2f} steps ({ops[1]['op']})" if len(ops) > 1 else "-"
        lines.append(
            f"| `{row['run']}` | {row['format']} | {_pct(row['keras_accuracy'])} | {_pct(row['int8_accuracy'])} | "
            f"{worst} | {following} |"
        )
    return "\n".join(
        lines
        + [
            "",
            f"Accuracy on the {result['rows'][0]['validation_images']:,} validation images; an op's error is "
            f"the RMS error of its own output over {result['rows'][0]['debug_images']} of them, in quantization "
            f"steps (rounding alone gives about 0.29); for a QAT run, only the ops whose int8 ranges "
            f"QAT did not train are checked. {_machine(result)}. Command run: `{public_command(result['command'])}` "
            f"({result['seconds']:.0f} s).",
        ]
    )


def int8_error(root: Path) -> str | None:
    return _int8_error(root, "int8_error.json")


def train_throughput(root: Path) -> str | None:
    result = _load(root, "train_throughput.json")
    if not result:
        return None
    env = result["environment"]
    lines = [
        "| architecture | batch | precision | threads | images/s | minutes per 55,000-image epoch |",
        "|---|---|---|---|---|---|",
    ]
    for row in result["rows"]:
        lines.append(
            f"| `{row['arch']}` | {row['batch']} | {row['precision']} | {row['threads']} | "
            f"{row['images_per_s']:.0f} | {row['epoch_minutes']:.1f} |"
        )
    cpu = (
        f"{env['cpu']} ({', '.join(env['cpu_flags'])}), {env['cores']} cores, TensorFlow {env['tensorflow']}."
    )
    return "\n".join(
        lines + ["", f"{cpu} {result['conditions']} Command run: `{public_command(result['command'])}`."]
    )


def own_data_scale(root: Path) -> str | None:
    """A folder of 20,000 JPEG files: decoding into the cache, a warm start, training from the cache."""
    result = _load(root, "own_data_scale.json")
    if not result:
        return None
    env, decode, warm, training = (
        result["environment"],
        result["decode"],
        result["warm_start"],
        result["training"],
    )
    repetitions = training["repetitions"]
    target = result["target"]["cache_vs_memory_at_least"]
    lines = [
        "| step | figure |",
        "|---|---|",
        f"| first load: list, decode and cache {result['folder']['files']:,} JPEG files | "
        f"{decode['images_per_second']:,.0f} images/s ({decode['load_seconds']:.1f} s); cache "
        f"{decode['cache_bytes'] / 1e6:.1f} MB on disk |",
        f"| second load, cache warm (a new process) | {warm['load_seconds']:.2f} s "
        f"({warm['process_seconds']:.2f} s with Python and the imports) |",
        f"| training from the memory-mapped cache (`make_pipeline`) | "
        f"{training['cache_images_per_second_median']:,.0f} images/s (median of {len(repetitions)}) |",
        f"| training from the same arrays in memory (`model.fit`) | "
        f"{training['memory_images_per_second_median']:,.0f} images/s (median of {len(repetitions)}) |",
        f"| cache / memory, median of the repetitions' ratios | {result['cache_vs_memory']:.3f} "
        f"(range {training['ratio_range'][0]:.3f} to {training['ratio_range'][1]:.3f}); target {target}: "
        f"{'met' if result['met'] else '**missed**'} |",
        "",
        "| repetition | cache images/s | memory images/s | ratio | load average (1 min) at the two starts |",
        "|---|---|---|---|---|",
    ]
    for row in repetitions:
        lines.append(
            f"| {row['repetition']} | {row['cache']['images_per_second']:,.0f} | "
            f"{row['memory']['images_per_second']:,.0f} | {row['ratio']:.3f} | "
            f"{row['cache']['load_average']['start'][0]:.2f}, {row['memory']['load_average']['start'][0]:.2f} |"
        )
    load = result["load_average"]
    return "\n".join(
        lines
        + [
            "",
            f"{env['cpu']} ({env['cpu_detail']}), {env['cores']} cores, TensorFlow {env['tensorflow']}, shared "
            f"with other work: load average (1, 5, 15 min) {', '.join(f'{v:.2f}' for v in load['start'])} "
            f"at the start, {', '.join(f'{v:.2f}' for v in load['end'])} at the end. Each figure in a fresh "
            "child process, cache and memory interleaved. Command run: "
            f"`{public_command(result['command'])}`.",
        ]
    )


def int8_error_converter_fold(root: Path) -> str | None:
    return _int8_error(root, "int8_error_converter_fold.json")


def quant_schemes(root: Path) -> str | None:
    """int8, int8-per-tensor and int16x8 of the same runs beside fp32: test accuracy, size, p50."""
    result = _load(root, "quant_schemes.json")
    if not result:
        return None
    lines = [
        "| architecture | format | test accuracy | Δ vs fp32 | KB | p50 ms |",
        "|---|---|---|---|---|---|",
    ]
    fp32 = {
        row["architecture"]: row
        for row in result["rows"]
        if row.get("format") == "fp32" and row["status"] == "ok"
    }
    for row in result["rows"]:
        if row["status"] != "ok":
            lines.append(
                f"| `{row.get('architecture')}` | {row.get('format')} | error: {row['error']} | | | |"
            )
            continue
        delta = (
            (row["accuracy"] - fp32[row["architecture"]]["accuracy"]) * 100
            if row["architecture"] in fp32
            else None
        )
        lines.append(
            f"| `{row['architecture']}` | {row['format']} | {_pct(row['accuracy'])} | "
            f"{'-' if delta is None else f'{delta:+.2f} pt'} | {row['bytes'] / KB:.1f} | "
            f"{row['latency']['p50_ms']:.3f} |"
        )
    trained = "; ".join(
        f"`{arch}`: {t['preset']} preset, {t['epochs']} epochs on {t['max_train']:,} training images "
        f"(validation {_pct(t['val_accuracy'])})"
        for arch, t in result["trained"].items()
    )
    return "\n".join(
        lines
        + [
            "",
            f"Runs: {trained}. Calibration: {result['calibration_images']} training images. "
            f"Accuracy on the {result['test_set']['source']}; p50 batch 1, "
            f"{result['options']['threads'][0]} thread, {cpu_text(result['environment'])}. "
            f"Command run: `{public_command(result['command'])}` ({result['seconds']:.0f} s).",
        ]
    )


def inspect_models(root: Path) -> str | None:
    """The three worst-quantized layers of each shipped model by the float-twin measure, with the twin's check."""
    result = _load(root, "inspect_models.json")
    if not result:
        return None
    lines = [
        "| model | format | twin agrees, top-1 (counting int8 ties) | accuracy int8 / twin | "
        "worst layers: op (layers in it), error it adds / its RMSE, in steps | output RMSE |",
        "|---|---|---|---|---|---|",
    ]
    measures = None
    for row in result["rows"]:
        if row["status"] != "measured":
            lines.append(
                f"| {row['model']} | {row.get('format') or '-'} | not measured: {row['reason']} | | | |"
            )
            continue
        measures = row["measures"]
        twin = row["twin"]
        worst = "; ".join(
            f"{layer['op']} ({'output' if layer['graph_output'] else _folded_layers(layer['tensor'])}) "
            f"{layer['added_rmse_per_scale']:+.2f} / {layer['rmse_per_scale']:.2f}"
            + (f", {layer['clipped_share']:.0%} clipped" if layer["clipped_share"] >= 0.01 else "")
            for layer in row["worst"][:3]
        )
        lines.append(
            f"| {row['model']} | {row['format']} | {_pct(twin['agreement'])} ({_pct(twin['agreement_counting_ties'])}) "
            f"| {_pct(twin['int8_accuracy'])} / "
            f"{_pct(twin['twin_accuracy'])} | {worst} | {row['output_layer']['rmse_per_scale']:.2f} |"
        )
    first = next(row for row in result["rows"] if row["status"] == "measured")
    return "\n".join(
        lines
        + [
            "",
            f"Measures {measures}. Error in units of each op's output quantization step (rounding alone gives "
            f"0.29); an op's added error is its RMSE minus its inputs' share. {first['images']} images per model: "
            f"{first['data']}; {result['note']}. LiteRT's built-in kernels, {cpu_text(result['environment'])}, "
            f"{result['environment']['cpu_count']} cores, "
            f"ai-edge-litert {result['environment']['ai_edge_litert']}. Command run: "
            f"`{public_command(result['command'])}` ({result['seconds']:.0f} s).",
        ]
    )


def ethos_u(root: Path) -> str | None:
    """Vela's Ethos-U estimates of the shipped int8 models, per configuration."""
    result = _load(root, "ethos_u.json")
    if not result:
        return None
    lines = [
        "| model | configuration | SRAM KB | weights KB (where) | NPU ops | ops left to the CPU "
        "| inferences/s (est.) |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in result["rows"]:
        config = row["target"].removeprefix("vela:")
        if row["status"] != "ok":
            lines.append(f"| {row['model']} | {config} | error: {row['error']} | | | | |")
            continue
        cpu = ", ".join(op["op"] for op in row["cpu_ops"]) or "none"
        lines.append(
            f"| {row['model']} | {config} at {row['clock_hz'] / 1e6:.0f} MHz | {row['sram_bytes'] / KB:.1f} | "
            f"{row['off_chip_bytes'] / KB:.1f} ({row['weights_storage']}) | {row['npu_ops']} | {cpu} | "
            f"{row['inferences_per_second']:,.0f} |"
        )
    missing = "; ".join(f"{name}: {why}" for name, why in result.get("not_compiled", {}).items())
    return "\n".join(
        lines
        + [
            "",
            f"{result['note'][0].upper()}{result['note'][1:]} (ethos-u-vela "
            f"{result['environment']['interpreter_version']}).{' Not compiled: ' + missing + '.' if missing else ''} "
            f"Command run: `{public_command(result['command'])}`.",
        ]
    )


def _web(root: Path) -> tuple[dict, dict] | None:
    result = _load(root, "mobile_clients.json")
    return (result, result["web"]) if result and result.get("web") else None


def mediapipe_web(root: Path) -> str | None:
    """The mobile forms in MediaPipe Tasks for the Web, per delegate, against LiteRT on the same pixels."""
    found = _web(root)
    if not found:
        return None
    result, web = found
    lines = [
        "| model | form | delegate | images | top-1 = LiteRT | largest score difference | MediaPipe accuracy |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in web["rows"]:
        head = f"| `{row['artifact']}` | {row['form']} | {row['delegate']} | {row['images']:,} |"
        if row["status"] != "ok":
            lines.append(f"{head} fails: {row['error']} ({row['classified']} classified) | | |")
            continue
        lines.append(
            f"{head} {_pct(row['top1_agreement'])} | {row['max_score_difference']:.2g} | "
            f"{_pct(row['mediapipe_accuracy'])} |"
        )
    gpu = "; ".join(f"`{form['artifact']}`: {form['made_with']}" for form in web.get("gpu_forms", []))
    renderer = web["webgl_renderer"] or "none"
    webgl = "SwiftShader, Chromium's software renderer" if "SwiftShader" in renderer else renderer
    page = web["page"].split(":")[0]
    return "\n".join(
        lines
        + [
            "",
            f"{web['version']} in headless {web['browser']} (`{page}`), WebGL on {webgl}; "
            f"{cpu_text(result['environment'])}. {('GPU forms: ' + gpu + '. ') if gpu else ''}"
            f"Command run: `{public_command(result['command'])}`.",
        ]
    )


def mediapipe_resize(root: Path) -> str | None:
    """MediaPipe's own resize: images larger than the input given to MediaPipe, against edge-fm predict."""
    found = _web(root)
    if not found:
        return None
    result, web = found
    resize = web["resize"]
    groups: dict[tuple[int, str], list[dict]] = {}
    for row in resize["rows"]:
        groups.setdefault((row["size"], row["upscaling"]), []).append(row)

    def span(rows: list[dict], key: str) -> str:
        values = [row[key] for row in rows]
        low, high = min(values), max(values)
        return _pct(low) if low == high else f"{_pct(low)} to {_pct(high)}"

    lines = [
        "| image given to MediaPipe | enlarged by | top-1 = edge-fm predict | top-1 = MediaPipe at 28x28 "
        "| MediaPipe accuracy | edge-fm predict accuracy |",
        "|---|---|---|---|---|---|",
    ]
    for (size, upscaling), rows in groups.items():
        lines.append(
            f"| {size}x{size} | {upscaling} | {span(rows, 'agreement_with_predict')} | "
            f"{span(rows, 'agreement_with_input_size')} | {span(rows, 'mediapipe_accuracy')} | "
            f"{span(rows, 'predict_accuracy')} |"
        )
    models = sorted({row["artifact"] for row in resize["rows"]})
    return "\n".join(
        lines
        + [
            "",
            f"Ranges over the {len(models)} shipped mobile forms, the first {resize['images']:,} test images, "
            f"{web['version']} (CPU delegate) in {web['browser']}. Command run: `{public_command(result['command'])}`.",
        ]
    )


TABLES: dict[str, Callable[[Path], str | None]] = {
    "paper-presets": paper_presets,
    "optimize-chain": optimize_chain,
    "runner-quality": runner_quality,
    "arm-emulated": arm_emulated,
    "shipped-models": shipped_models,
    "shipped-targets": shipped_targets,
    "demo-timings": demo_timings,
    "tiny-design": tiny_design,
    "edge-cnn-design": edge_cnn_design,
    "block-throughput": block_throughput,
    "edge-cnn-candidates": edge_cnn_candidates,
    "train-throughput": train_throughput,
    "shipped-mobile-forms": shipped_mobile_forms,
    "int8-error": int8_error,
    "int8-error-converter-fold": int8_error_converter_fold,
    "quant-schemes": quant_schemes,
    "ethos-u": ethos_u,
    "inspect-models": inspect_models,
    "mediapipe-web": mediapipe_web,
    "mediapipe-resize": mediapipe_resize,
    "own-data-scale": own_data_scale,
}


def render(text: str, tables: dict[str, str | None]) -> str:
    """``text`` with every known table whose JSON exists written between its markers."""

    def fill(match: re.Match) -> str:
        table = tables.get(match.group(2))
        return match.group(0) if table is None else match.group(1) + table + "\n" + match.group(4)

    return MARKER.sub(fill, text)


def problems(root: Path, tables: dict[str, str | None]) -> list[str]:
    """What ``--check`` reports: stale or unknown sections, and tables whose JSON exists but no document shows."""
    found, report = set(), []
    for path in documents(root):
        text, name = path.read_text(), path.relative_to(root).as_posix()
        for match in MARKER.finditer(text):
            table = match.group(2)
            found.add(table)
            if table not in tables:
                report.append(f"{name}: unknown table '{table}' (known: {', '.join(tables)})")
            elif tables[table] is None:
                report.append(f"{name}: table '{table}' has no result JSON to be generated from")
            elif match.group(3) != tables[table] + "\n":
                report.append(f"{name}: table '{table}' is out of date with its JSON")
    report += [
        f"table '{table}' has its JSON but is in no document"
        for table, text in tables.items()
        if text is not None and table not in found
    ]
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check", action="store_true", help="exit 1 and name every table that is not what the JSON gives"
    )
    parser.add_argument(
        "--root", type=Path, default=REPO, help="the repository to read and write (default: this one)"
    )
    args = parser.parse_args(argv)
    tables = {name: make(args.root) for name, make in TABLES.items()}
    if args.check:
        report = problems(args.root, tables)
        for line in report:
            print(line, file=sys.stderr)
        if report:
            print("run `python tools/tables.py` to regenerate the tables", file=sys.stderr)
        return 1 if report else 0
    for path in documents(args.root):
        text = path.read_text()
        if render(text, tables) != text:
            path.write_text(render(text, tables))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The README's result tables, generated from the committed JSON under benchmarks/results/.

Each table sits in README.md between ``<!-- table:NAME -->`` and ``<!-- /table:NAME -->``; this
script rewrites what is between the markers, so every number in the README comes from a JSON file.

Usage (from the repository root):
    python benchmarks/tables.py            # rewrite README.md
    python benchmarks/tables.py --check    # exit 1 if README.md is out of date (the tests run this)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
from pathlib import Path

from edge_fm.report import cpu_text, shape_text

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
README = REPO / "README.md"


def _load(name: str):
    path = RESULTS / name
    return json.loads(path.read_text()) if path.exists() else None


def _pct(value) -> str:
    return "-" if value is None else f"{value * 100:.2f}%"


def paper_presets() -> str | None:
    result = _load("paper_presets.json")
    if not result:
        return None
    lines = ["| architecture | paper | target | test accuracy | epochs (best) | training time |", "|---|---|---|---|---|---|"]
    for row in sorted(result, key=lambda r: r["paper_accuracy"]):
        lines.append(f"| `{row['arch']}` | {_pct(row['paper_accuracy'])} | {_pct(row['target'])} | {_pct(row['test_accuracy'])} | "
                     f"{row['epochs_run']} ({row['best_epoch']}) | {row['training_seconds']:.0f} s |")
    return "\n".join(lines)


def optimize_chain() -> str | None:
    result = _load("optimize_chain_cnn-2conv.json")
    if not result:
        return None
    lines = [f"Float Keras model: {_pct(result['float_model']['test_accuracy'])} on the test split; pruning target "
             f"{result['sparsity_target']:.0%}; {result['machine']}.", "",
             "| artifact | test accuracy | bytes | gzip bytes | integer-only | status |", "|---|---|---|---|---|---|"]
    for row in result["rows"]:
        lines.append(f"| {row['artifact']} | {_pct(row.get('test_accuracy'))} | {row.get('bytes', '-'):,} | "
                     f"{row.get('gzip_bytes', '-'):,} | {'yes' if row.get('integer_only') else 'no'} | {row['status']} |")
    checks = ", ".join(f"{name}: {'met' if ok else 'NOT met'}" for name, ok in result["checks"].items())
    return "\n".join(lines + ["", f"Checks: {checks}. Command run: `{result['command']}` ({result['seconds']:.0f} s)."])


def runner_quality() -> str | None:
    result = _load("runner_quality.json")
    if not result:
        return None
    lat, acc = result["latency"], result["accuracy_pass"]
    return "\n".join([
        "| check | measured | target | met |", "|---|---|---|---|",
        f"| runner p50 vs bare `invoke()` loop ({lat['runs_each']} runs each) | {lat['runner_p50_ms']:.4f} ms vs "
        f"{lat['bare_invoke_p50_ms']:.4f} ms ({lat['overhead'] * 100:+.1f}%) | {lat['target']} | {'yes' if lat['met'] else 'no'} |",
        f"| accuracy pass over {acc['images']:,} test images ({result['format']}, {result['bytes']:,} bytes) | "
        f"{acc['runner_seconds']:.2f} s | {acc['target']} | {'yes' if acc['met'] else 'no'} |",
        "", f"Machine: {result['machine']}; {result['environment']['interpreter']} {result['environment']['interpreter_version']}. "
        f"Command run: `{result['command']}`.",
    ])


def arm_emulated() -> str | None:
    result = _load("arm_emulated.json")
    if not result:
        return None
    env = result["aarch64_environment"]
    cpus = result["cpus"]
    lines = [f"aarch64: {env['os']}, Python {env['python']}, {env['interpreter']} {env['interpreter_version']}, "
             f"numpy {env['numpy']}; {result['qemu']}.", "",
             "| artifact | format | x86_64 accuracy | " + " | ".join(f"{cpu} ({what})" for cpu, what in cpus.items()) + " |",
             "|---|---|---|" + "---|" * len(cpus)]
    for row in result["rows"]:
        cells = []
        for cpu in cpus:
            entry = row["aarch64"][cpu]
            cells.append(f"{_pct(entry['accuracy'])} ({entry['difference'] * 100:+.2f} pt)" if entry["status"] == "ok"
                         else f"{entry['status']}: {entry.get('error', '')}")
        lines.append(f"| {row['artifact']}{_replaced_since(row)} | {row['format']} | {_pct(row['x86_64_accuracy'])} | "
                     + " | ".join(cells) + " |")
    note = result["note"][0].upper() + result["note"][1:]
    return "\n".join(lines + ["", f"Largest difference on the Raspberry Pi CPUs: "
                              f"{result['max_accuracy_difference_on_pi_cpus'] * 100:.2f} points. {note}; no emulated timing "
                              f"is shown here. Command run: `{result['command']}` ({result['seconds']:.0f} s)."])


def _replaced_since(row: dict) -> str:
    """A note for a row of a shipped model whose models/ artifact has changed since the run measured it."""
    path = Path(row["path"])
    if path.parent.parent.name != "models":
        return ""
    shipped = REPO / "models" / path.parent.name / path.name
    if shipped.exists() and hashlib.sha256(shipped.read_bytes()).hexdigest() == row["sha256"]:
        return ""
    return f" (an earlier artifact, sha256 {row['sha256'][:12]}; not the one in models/ now)"


def _shipped_status(row: dict) -> str:
    if row["shipped"]:
        return "shipped"
    measured = "" if row["remeasured"] else f"; numbers from the run of {row['measured_in']}, {cpu_text(row['measured_on'])}"
    return f"not shipped (too large for models/{measured})"


def shipped_models() -> str | None:
    result = _load("models_bench.json")
    if not result:
        return None
    env = result["environment"]
    targets = {c["model"]: c["target"] for c in result["checks"] if c["check"] == "int8 test accuracy"}
    lines = ["| model | format | test accuracy (int8) | target | float model | bytes | gzip bytes | p50 ms | p90 ms | images/s | status |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in sorted(result["rows"], key=lambda r: r.get("accuracy") or 0):
        if row["status"] != "ok":
            lines.append(f"| `{row['model']}` | - | - | - | - | - | - | - | - | - | {row['status']}: {row.get('error', '')} |")
            continue
        lat = row["latency"]
        lines.append(f"| `{row['model']}` | {row['format']} | {_pct(row['accuracy'])} | {_pct(targets.get(row['arch']))} | "
                     f"{_pct(row['float_test_accuracy'])} | {row['bytes']:,} | {row['gzip_bytes']:,} | {lat['p50_ms']:.3f} | "
                     f"{lat['p90_ms']:.3f} | {lat['images_per_second']:,.0f} | {_shipped_status(row)} |")
    verdict = {True: "met", False: "**missed**", None: "not measured (model not shipped)"}

    def number(value):
        return "-" if value is None else f"{value:,.4f}" if isinstance(value, float) else f"{value:,}"

    lines += ["", "| model | check | measured | target | result |", "|---|---|---|---|---|"]
    for c in result["checks"]:
        if c["check"] == "int8 test accuracy" and c["met"] is None:
            continue
        lines.append(f"| `{c['model']}` | {c['check']} | {number(c['measured'])} | {number(c['target'])} | {verdict[c['met']]} |")
    notes = [f"- `{r['model']}`: {r['note']}" for r in result["rows"] if r.get("note")]
    return "\n".join(lines + ["", f"1 thread, batch 1, {result['test_set']['source']}; {cpu_text(env)}, {env['interpreter']} "
                              f"{env['interpreter_version']}, Python {env['python']}. Command run: `{result['command']}`.",
                              *([""] + notes if notes else [])])


def _shape_design(file: str, arch: str) -> str | None:
    """The table of one benchmarks/tiny_design.py result: candidate shapes timed against cnn-3conv-bn."""
    result = _load(file)
    if not result:
        return None
    lines = [f"| {arch} shape (random weights, int8) | parameters | MACs/image | bytes (no metadata) | p50 ms | p50 / cnn-3conv-bn's |",
             "|---|---|---|---|---|---|"]
    reference = next(row for row in result["rows"] if row["arch_options"] is None)
    for row in (r for r in result["rows"] if r is not reference):
        lines.append(f"| {row['candidate']} | {row['params']:,} | {row['macs'] / 1e6:.2f} M | {row['int8_bytes_without_metadata']:,} | "
                     f"{row['p50_ms']:.4f} | {row['p50_ratio_to_cnn_3conv_bn']:.3f} |")
    env = result["environment"]
    return "\n".join(lines + ["", f"Reference: {reference['candidate']}, p50 {reference['p50_ms']:.4f} ms in the same run. "
                              f"{result['threads']} thread, batch 1, {result['rounds']} interleaved rounds of {result['runs_per_round']} "
                              f"runs per model; {cpu_text(env)}, {env['interpreter']} {env['interpreter_version']}. "
                              f"Command run: `{result['command']}`."])


def tiny_design() -> str | None:
    return _shape_design("tiny_design.json", "edge-cnn-tiny")


def edge_cnn_design() -> str | None:
    return _shape_design("edge_cnn_design.json", "edge-cnn")


def _trained_latency() -> tuple[dict[str, float], dict | None]:
    """p50 / cnn-3conv-bn's per timed trained artifact, keyed by its bundle directory, and the run's JSON."""
    result = _load("edge_cnn_trained_latency.json")
    if not result:
        return {}, None
    ratios = {str(Path(row["candidate"]).parent): row["p50_ratio_to_cnn_3conv_bn"]
              for row in result["rows"] if row["arch_options"] is None and row["candidate"].endswith(".tflite")}
    return ratios, result


def _candidate_row(run: str, shape: str, epochs: int, teacher: str | None, params: int, float_val: float,
                   formats: list[tuple[float | None, float | None]]) -> str:
    """A row of the candidates table; ``formats`` is (validation accuracy, p50 ratio) for qat-int8 and int8."""
    timed = ", ".join("-" if ratio is None else f"{ratio:.3f}" for _, ratio in formats)
    return (f"| {run} | {shape} | {epochs} | {f'`{teacher}`' if teacher else '-'} | {params:,} | {_pct(float_val)} | "
            + " | ".join(_pct(accuracy) for accuracy, _ in formats) + f" | {timed} |")


def _shipped_edge_cnn_row(ratios: dict[str, float]) -> str:
    """The shipped edge-cnn, the bar the candidates are judged against, from its provenance.json."""
    shipped = json.loads((REPO / "models" / "edge-cnn" / "provenance.json").read_text())
    config, metrics, chosen = shipped["train_config"], shipped["train_metrics"], shipped["chosen_format"]
    shape = shape_text(config["arch_options"]) if config["arch_options"] else "the architecture's default shape"
    formats = [(shipped["validation_accuracy"].get(name), ratios.get("models/edge-cnn") if name == chosen else None)
               for name in ("qat-int8", "int8")]
    return _candidate_row(f"`{shipped['train_run']}` (shipped `edge-cnn`, {chosen})", shape, metrics["epochs_run"],
                          config["teacher"], metrics["params"], metrics["val"]["accuracy"], formats)


def edge_cnn_candidates() -> str | None:
    """One row per trained edge-cnn candidate: its validation figures (all a ship rule read) and trained latency."""
    result = _load("edge_cnn_candidates.json")
    if not result:
        return None
    ratios, latency = _trained_latency()
    runs: dict[str, dict] = {}
    for row in result["rows"]:  # the bundles of one training run (its qat-int8 and int8 exports) share a row
        runs.setdefault(row["train"]["run"], {})[row["format"]] = row
    lines = ["| training run | shape | epochs | teacher | params | float model | qat-int8 | int8 | p50 / cnn-3conv-bn's (qat-int8, int8) |",
             "|---|---|---|---|---|---|---|---|---|", _shipped_edge_cnn_row(ratios)]
    for run, bundles in runs.items():
        train = next(iter(bundles.values()))["train"]
        formats = [(bundles[name]["tflite_validation_accuracy"], ratios.get(bundles[name]["bundle"])) if name in bundles
                   else (None, None) for name in ("qat-int8", "int8")]
        lines.append(_candidate_row(f"`{run}`", shape_text(train["arch_options"]), train["epochs_run"], train["teacher"],
                                    train["params"], train["validation_accuracy"], formats))
    images = {row["validation_images"] for row in result["rows"]}
    footer = (f"Accuracy on the whole validation split ({', '.join(f'{n:,}' for n in sorted(images))} images); no test "
              f"figure is read here. Command run: `{result['command']}` (it needs the run directories, which are not in git).")
    if latency:
        footer += (f" Latency of the trained artifacts, 1 thread, batch 1, interleaved with the shipped `cnn-3conv-bn` "
                   f"({latency['rounds']} rounds of {latency['runs_per_round']} runs; {cpu_text(latency['environment'])}): "
                   f"`{latency['command']}`.")
    return "\n".join(lines + ["", footer])


def _folded_layers(tensor: str) -> str:
    """The Keras layers a TFLite tensor was made from: ``model/layer/...;model/other/...`` -> ``layer + other``
    (a QAT wrapper's ``quant_`` prefix dropped)."""
    names = [part.split("/")[1].removeprefix("quant_") for part in tensor.split(";") if part.count("/") >= 2]
    return " + ".join(f"`{name}`" for name in dict.fromkeys(names)) or f"`{tensor}`"


def int8_error() -> str | None:
    result = _load("int8_error.json")
    if not result:
        return None
    lines = ["| run | int8 format | Keras model | int8 artifact | worst int8 op (the layers in it) | its error | next worst |",
             "|---|---|---|---|---|---|---|"]
    for row in result["rows"]:
        ops = row["worst_ops"]  # a QAT model may leave the debugger fewer than two ops, or none
        worst = f"{ops[0]['op']} ({_folded_layers(ops[0]['tensor'])}) | {ops[0]['rmse_per_scale']:.1f} steps" if ops else "- | -"
        following = f"{ops[1]['rmse_per_scale']:.2f} steps ({ops[1]['op']})" if len(ops) > 1 else "-"
        lines.append(f"| `{row['run']}` | {row['format']} | {_pct(row['keras_accuracy'])} | {_pct(row['int8_accuracy'])} | "
                     f"{worst} | {following} |")
    return "\n".join(lines + ["", f"Accuracy on the {result['rows'][0]['validation_images']:,} validation images; an op's error is "
                              f"the RMS error of its own output over {result['rows'][0]['debug_images']} of them, in quantization "
                              f"steps (rounding alone gives about 0.29); for a QAT run, only the ops whose int8 ranges "
                              f"QAT did not train are checked. {result['machine']}. Command run: `{result['command']}` "
                              f"({result['seconds']:.0f} s)."])


TABLES = {"paper-presets": paper_presets, "optimize-chain": optimize_chain, "runner-quality": runner_quality,
          "arm-emulated": arm_emulated, "int8-error": int8_error,
          "shipped-models": shipped_models, "tiny-design": tiny_design,
          "edge-cnn-design": edge_cnn_design, "edge-cnn-candidates": edge_cnn_candidates}


def render(readme: str) -> str:
    for name, make in TABLES.items():
        table = make()
        if table is None:
            continue
        pattern = re.compile(rf"(<!-- table:{name} -->\n)(?:.*?\n)?(<!-- /table:{name} -->)", re.S)
        readme = pattern.sub(lambda m: m.group(1) + table + "\n" + m.group(2), readme)
    return readme


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if README.md is not what the JSON gives")
    args = parser.parse_args(argv)
    current = README.read_text()
    wanted = render(current)
    if args.check:
        if wanted != current:
            print("README.md tables are out of date: run `python benchmarks/tables.py`", file=sys.stderr)
            return 1
        return 0
    README.write_text(wanted)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

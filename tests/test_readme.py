"""The README's promises: its numbers come from the committed JSON, its quickstart is the pipeline."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_readme_tables_are_generated_from_the_results_json(benchmark_script):
    tables = benchmark_script("tables")
    readme = (REPO / "README.md").read_text()
    assert tables.render(readme) == readme, "run `python benchmarks/tables.py`"
    for name, make in tables.TABLES.items():
        if make() is not None:
            assert f"<!-- table:{name} -->" in readme, name
    for name in re.findall(r"<!-- table:([\w-]+) -->", readme):  # no block left empty for want of its JSON
        assert name in tables.TABLES and tables.TABLES[name]() is not None, name


def test_quickstart_has_two_commands_and_the_second_is_what_ci_runs():
    readme = (REPO / "README.md").read_text()
    block = re.search(r"## Quickstart.*?```bash\n(.*?)```", readme, re.S).group(1)
    commands = [line for line in block.splitlines() if line and not line.startswith("#")]
    assert len(commands) == 2
    assert "edge-fm pipeline cnn-2conv --sample" in commands[0]
    assert commands[1] in (REPO / ".ci" / "run").read_text()


def test_a_measured_row_says_when_the_shipped_artifact_has_changed_since(benchmark_script, tmp_path, monkeypatch):
    tables = benchmark_script("tables")
    monkeypatch.setattr(tables, "REPO", tmp_path)
    (tmp_path / "models" / "tiny").mkdir(parents=True)
    (tmp_path / "models" / "tiny" / "model.tflite").write_bytes(b"now")
    # The path is where the measuring machine's checkout was, not this one.
    row = {"path": "/elsewhere/models/tiny/model.tflite", "sha256": hashlib.sha256(b"now").hexdigest()}
    assert tables._replaced_since(row) == ""
    row["sha256"] = hashlib.sha256(b"before").hexdigest()
    assert tables._replaced_since(row) == f" (an earlier artifact, sha256 {row['sha256'][:12]}; not the one in models/ now)"
    assert tables._replaced_since({"path": "/elsewhere/runs/mlp-fp32-1/model.tflite", "sha256": "x"}) == ""


def test_the_candidates_table_joins_a_runs_two_exports_and_their_timed_latency(benchmark_script, tmp_path, monkeypatch):
    tables = benchmark_script("tables")
    monkeypatch.setattr(tables, "RESULTS", tmp_path / "results")
    monkeypatch.setattr(tables, "REPO", tmp_path)
    (tmp_path / "results").mkdir()
    (tmp_path / "models" / "edge-cnn").mkdir(parents=True)
    shape = {"stem": 16, "widths": [16, 128, 256], "blocks": [1, 3, 3], "block": ["conv", "separable", "separable"]}
    train = {"run": "runs/x/edge-cnn-train-1", "arch_options": shape, "epochs_run": 60, "teacher": None,
             "params": 220266, "validation_accuracy": 0.9458}
    rows = [{"bundle": f"runs/x/edge-cnn-{name}-1", "format": name, "validation_images": 5000,
             "tflite_validation_accuracy": accuracy, "train": train} for name, accuracy in (("qat-int8", 0.9458), ("int8", 0.9444))]
    (tmp_path / "results" / "edge_cnn_candidates.json").write_text(json.dumps({"command": "candidate_runs ...", "rows": rows}))
    timed = [{"candidate": "cnn-3conv-bn (shipped int8)", "arch_options": None, "p50_ratio_to_cnn_3conv_bn": 1.0},
             {"candidate": "runs/x/edge-cnn-int8-1/model.tflite", "arch_options": None, "p50_ratio_to_cnn_3conv_bn": 0.759},
             {"candidate": "models/edge-cnn/model.tflite", "arch_options": None, "p50_ratio_to_cnn_3conv_bn": 1.183}]
    (tmp_path / "results" / "edge_cnn_trained_latency.json").write_text(json.dumps(
        {"command": "tiny_design --artifacts ...", "rounds": 2, "runs_per_round": 5, "environment": {"cpu": "x86"}, "rows": timed}))
    (tmp_path / "models" / "edge-cnn" / "provenance.json").write_text(json.dumps({
        "train_run": "runs/s17/edge-cnn-train-1", "chosen_format": "int8", "validation_accuracy": {"qat-int8": 0.951, "int8": 0.952},
        "train_config": {"arch_options": {}, "teacher": None},
        "train_metrics": {"epochs_run": 60, "params": 232778, "val": {"accuracy": 0.9512}}}))
    lines = tables.edge_cnn_candidates().splitlines()
    shipped, candidate = lines[2], lines[3]
    assert shipped.startswith("| `runs/s17/edge-cnn-train-1` (shipped `edge-cnn`, int8) | the architecture's default shape |")
    assert shipped.endswith("| 95.12% | 95.10% | 95.20% | -, 1.183 |")
    assert candidate == ("| `runs/x/edge-cnn-train-1` | stem 16, widths 16/128/256, blocks 1/3/3, conv/separable/separable blocks | "
                         "60 | - | 220,266 | 94.58% | 94.58% | 94.44% | -, 0.759 |")
    assert len(lines) == 6 and "candidate_runs ..." in lines[5] and "tiny_design --artifacts ..." in lines[5]

"""The README's promises: its numbers come from the committed JSON, its quickstart is the pipeline."""

from __future__ import annotations

import hashlib
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

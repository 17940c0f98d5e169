"""The README's promises: its numbers come from the committed JSON, its quickstart is the pipeline."""

from __future__ import annotations

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

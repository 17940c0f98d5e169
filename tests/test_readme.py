"""The README and docs/: a short user guide whose numbers come from the committed JSON and whose links resolve."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TABLES = REPO / "tools" / "tables.py"
README_MAX_LINES = 230


def _tables(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(TABLES), *args], capture_output=True, text=True, cwd=REPO, timeout=300
    )


def _documents() -> list[Path]:
    return [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md")), REPO / "experiments" / "README.md"]


def test_generated_tables_in_readme_and_docs_match_the_results_json():
    done = _tables("--check")
    assert done.returncode == 0, done.stderr


def test_every_committed_result_file_is_in_the_envelope_and_names_no_private_path():
    from edge_fm.result_files import private_strings, read_result_file

    files = [
        path
        for folder in ("benchmarks", "experiments")
        for path in (REPO / folder / "results").glob("*.json")
    ]
    files += list((REPO / "models").glob("*/measurement.json"))  # the shipped models' figures
    assert len(files) > 20
    for path in files:
        recorded = read_result_file(path)  # refuses a file without schema, command, environment and results
        assert recorded["command"], path.name
        assert not private_strings(recorded), (path.name, private_strings(recorded)[:3])
        assert '"hostname"' not in path.read_text(), f"{path.name} names the host that measured it"


def test_a_result_file_is_written_in_the_envelope_and_refuses_a_private_path(tmp_path):
    import pytest

    from edge_fm.errors import EdgeFMError
    from edge_fm.result_files import read_result_file, write_result_file

    path = write_result_file(tmp_path / "x.json", "x", {"rows": [1]}, "python benchmarks/x.py")
    written = json.loads(path.read_text())
    assert (
        list(written) == ["schema", "command", "environment", "results"]
        and written["schema"] == "edge-fm/x/1"
    )
    assert written["environment"]["cpu"] and "hostname" not in written["environment"]
    device = {
        "cpu": "Cortex-A76",
        "hostname": "pi-kitchen",
    }  # a device's environment, as the runner reports it
    shared = write_result_file(
        tmp_path / "z.json", "bench", {"rows": []}, "edge-fm bench", device, public=False
    )
    assert json.loads(shared.read_text())["environment"] == {"cpu": "Cortex-A76"}
    fleet = {"environments": {"local": {"cpu": "x", "hostname": "my-laptop"}, "ssh://pi@pi": device}}
    written = write_result_file(tmp_path / "f.json", "bench", fleet, "edge-fm bench", {}, public=False)
    assert "my-laptop" not in written.read_text() and "pi-kitchen" not in written.read_text()
    assert read_result_file(path, "x")["results"] == {"rows": [1]}
    for private in ("/work/main/models/mlp/model.tflite", "--data-dir ../shared/data", "runs/long/x"):
        with pytest.raises(EdgeFMError, match="a path of this machine"):
            write_result_file(tmp_path / "y.json", "x", {"path": private}, "python benchmarks/x.py")
    assert not (tmp_path / "y.json").exists()
    (tmp_path / "bare.json").write_text('{"rows": []}')
    with pytest.raises(EdgeFMError, match="not an edge-fm result file"):
        read_result_file(tmp_path / "bare.json")
    with pytest.raises(EdgeFMError, match="holds x results, not bench results"):
        read_result_file(path, "bench")


def test_readme_is_a_short_guide():
    lines = (REPO / "README.md").read_text().splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; move detail to docs/"


def _anchors(markdown: str) -> set[str]:
    """GitHub's anchors for a Markdown file's headings: lower case, punctuation dropped, spaces as hyphens."""
    headings = re.findall(r"^#+\s+(.*)$", re.sub(r"```.*?```", "", markdown, flags=re.S), re.M)
    return {re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-") for heading in headings}


def test_every_relative_link_in_readme_and_docs_resolves():
    broken = []
    for document in _documents():
        text = re.sub(r"```.*?```", "", document.read_text(), flags=re.S)
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target):
                continue
            path, _, anchor = target.partition("#")
            resolved = (document.parent / path).resolve() if path else document
            if not resolved.exists():
                broken.append(f"{document.relative_to(REPO)}: {target} (no such file)")
            elif anchor and resolved.suffix == ".md" and anchor not in _anchors(resolved.read_text()):
                broken.append(f"{document.relative_to(REPO)}: {target} (no such heading)")
    assert not broken, "\n".join(broken)


def test_every_repository_file_a_document_names_exists():
    # A file named in backquotes (`edge_fm/data/images.py`) goes stale when code moves, as a link does.
    pattern = r"`((?:edge_fm|benchmarks|tools|experiments|tests)/[\w./-]+)`"
    missing = [
        f"{document.relative_to(REPO)}: {name}"
        for document in _documents()
        for name in re.findall(pattern, document.read_text())
        if not (REPO / name).exists()
    ]
    assert not missing, "\n".join(missing)


def test_quickstart_has_two_commands_and_the_second_is_what_ci_runs():
    readme = (REPO / "README.md").read_text()
    block = re.search(r"## Quickstart.*?```bash\n(.*?)```", readme, re.S).group(1)
    commands = [line for line in block.splitlines() if line and not line.startswith("#")]
    assert len(commands) == 2
    assert "edge-fm pipeline cnn-2conv --sample" in commands[0]
    assert commands[1] in (REPO / ".ci" / "run").read_text()


def _enveloped(kind: str, value: dict) -> dict:
    """A result file as the scripts write it: the command and the environment beside the results.
    Not checked for private paths: the test gives one on purpose, which the tables must hide."""
    from edge_fm.result_files import envelope

    results = {k: v for k, v in value.items() if k not in ("command", "environment")}
    return envelope(kind, results, value["command"], value.get("environment", {}), public=False)


def _arm_result(rows: list[dict]) -> dict:
    return {
        "aarch64_environment": {
            "os": "Debian 12",
            "python": "3.11",
            "interpreter": "ai_edge_litert",
            "interpreter_version": "2.3",
            "numpy": "2",
        },
        "qemu": "qemu 7.2",
        "cpus": {"cortex-a72": "Raspberry Pi 4"},
        "rows": rows,
        "note": "emulated",
        "max_accuracy_difference_on_pi_cpus": 0.0,
        "seconds": 1.0,
        "command": "python benchmarks/arm_emulated.py models/tiny --data-dir /home/me/private/fashion-mnist",
    }


def _arm_row(artifact: str, path: str, sha256: str) -> dict:
    return {
        "artifact": artifact,
        "format": "int8",
        "x86_64_accuracy": 0.9,
        "path": path,
        "sha256": sha256,
        "aarch64": {"cortex-a72": {"status": "ok", "accuracy": 0.9, "difference": 0.0}},
    }


def _candidates(root: Path) -> None:
    """A candidates study: one training run's two exports, one timed, against a reference model."""
    shape = {
        "stem": 16,
        "widths": [16, 128, 256],
        "blocks": [1, 3, 3],
        "block": ["conv", "separable", "separable"],
    }
    train = {
        "run": "runs/x/edge-cnn-train-1",
        "arch_options": shape,
        "epochs_run": 60,
        "teacher": None,
        "params": 220266,
        "validation_accuracy": 0.9458,
    }
    rows = [
        {
            "bundle": f"runs/x/edge-cnn-{name}-1",
            "format": name,
            "validation_images": 5000,
            "tflite_validation_accuracy": accuracy,
            "train": train,
        }
        for name, accuracy in (("qat-int8", 0.9458), ("int8", 0.9444))
    ]
    reference = {
        "model": "edge-cnn",
        "chosen_format": "int8",
        "tflite_validation_accuracy": {"qat-int8": 0.951, "int8": 0.952},
        "train": {
            "arch_options": {},
            "teacher": "runs/y/teacher",
            "epochs_run": 60,
            "params": 232778,
            "validation_accuracy": 0.9512,
        },
    }
    timed = [
        {"candidate": "cnn-3conv-bn (shipped int8)", "arch_options": None, "p50_ratio_to_cnn_3conv_bn": 1.0},
        {
            "candidate": "runs/x/edge-cnn-int8-1/model.tflite",
            "arch_options": None,
            "p50_ratio_to_cnn_3conv_bn": 0.759,
        },
        {
            "candidate": "models/edge-cnn/model.tflite",
            "arch_options": None,
            "p50_ratio_to_cnn_3conv_bn": 1.183,
        },
    ]
    (root / "experiments" / "results" / "edge_cnn_candidates.json").write_text(
        json.dumps(
            _enveloped(
                "candidate-runs",
                {"command": "python experiments/candidate_runs.py ...", "reference": reference, "rows": rows},
            )
        )
    )
    (root / "experiments" / "results" / "edge_cnn_trained_latency.json").write_text(
        json.dumps(
            _enveloped(
                "shape-latency",
                {
                    "command": "python experiments/tiny_design.py --artifacts ...",
                    "rounds": 2,
                    "runs_per_round": 5,
                    "environment": {"cpu": "x86"},
                    "rows": timed,
                },
            )
        )
    )


def test_tables_check_names_stale_and_unknown_sections_and_a_rewrite_fills_them(tmp_path):
    for folder in ("benchmarks/results", "experiments/results", "models/tiny", "docs"):
        (tmp_path / folder).mkdir(parents=True)
    shutil.copy(REPO / "benchmarks" / "results" / "runner_quality.json", tmp_path / "benchmarks" / "results")
    (tmp_path / "models" / "tiny" / "model.tflite").write_bytes(b"now")
    before = hashlib.sha256(b"before").hexdigest()
    (tmp_path / "benchmarks" / "results" / "arm_emulated.json").write_text(
        json.dumps(
            _enveloped(
                "arm-emulated",
                _arm_result(
                    [
                        # The path is where the measuring machine's checkout was, not this one.
                        _arm_row(
                            "same", "/elsewhere/models/tiny/model.tflite", hashlib.sha256(b"now").hexdigest()
                        ),
                        _arm_row("replaced", "/elsewhere/models/tiny/model.tflite", before),
                        _arm_row("a run", "/elsewhere/runs/mlp-fp32-1/model.tflite", "x"),
                    ]
                ),
            )
        )
    )
    _candidates(tmp_path)
    sections = "".join(
        f"<!-- table:{name} -->\nold\n<!-- /table:{name} -->\n"
        for name in ("runner-quality", "arm-emulated", "edge-cnn-candidates", "no-such-table")
    )
    (tmp_path / "README.md").write_text("# x\n")
    (tmp_path / "docs" / "results.md").write_text(sections)

    done = _tables("--check", "--root", str(tmp_path))
    assert done.returncode == 1
    for name in ("runner-quality", "arm-emulated", "edge-cnn-candidates"):
        assert f"docs/results.md: table '{name}' is out of date" in done.stderr, done.stderr
    assert "docs/results.md: unknown table 'no-such-table'" in done.stderr

    done = _tables("--root", str(tmp_path))
    assert done.returncode == 0, done.stderr
    text = (tmp_path / "docs" / "results.md").read_text()
    assert "\nold\n" in text.split("<!-- table:no-such-table -->")[1]  # an unknown section is left as it is
    assert "../shared" not in text and "/home/me" not in text and "--data-dir DATA_DIR" in text
    assert "| same | int8 |" in text and "| a run | int8 |" in text
    assert (
        f"| replaced (an earlier artifact, sha256 {before[:12]}; models/tiny holds another now) | int8 |"
        in text
    )
    candidates = text.split("<!-- table:edge-cnn-candidates -->\n")[1].splitlines()
    assert candidates[2] == (
        "| shipped `edge-cnn` (int8) | the architecture's default shape | 60 | yes | 232,778 | 95.12% | "
        "95.10% | 95.20% | -, 1.183 |"
    )
    assert candidates[3] == (
        "| `runs/x/edge-cnn-train-1` | stem 16, widths 16/128/256, blocks 1/3/3, conv/separable/separable blocks | "
        "60 | - | 220,266 | 94.58% | 94.58% | 94.44% | -, 0.759 |"
    )
    assert "candidate_runs.py ..." in candidates[5] and "tiny_design.py --artifacts ..." in candidates[5]


def test_a_benchmark_scripts_bench_result_refuses_a_private_path(tmp_path):
    """The scripts under benchmarks/ write committed bench results with ``public=True``: a row that names
    an artifact by its absolute path is refused, not committed."""
    import pytest

    from edge_fm.bench.benchmark import write_results
    from edge_fm.errors import EdgeFMError

    result = {"rows": [{"path": "/home/someone/models/mlp/model.tflite"}], "command": "python x.py"}
    write_results(result, tmp_path / "own.json")  # a user's own file names its artifacts where they are
    with pytest.raises(EdgeFMError, match="a path of this machine"):
        write_results(result, tmp_path / "committed.json", public=True)

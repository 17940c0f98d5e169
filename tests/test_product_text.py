"""Everything the project ships speaks to its users: no trace of how the work was organised.

Every text file git knows of (tracked, or new and not ignored) is scanned for references to the
internal process: numbered stops, plans or issues, work sessions, run directories grouped by
session (``runs/s17/``), commit ids used as references, and, in what users read (README, docs,
model cards, the CLI's help), the developers' local dataset folder ``../shared``.

The one exception is narrow: pytest's fixture scope (``scope="session"``, "session-scoped") is
pytest's own term, not a work session, and is removed from a line before it is scanned. A
hexadecimal id right after "sha256" is a file's hash, not a commit, and is removed likewise.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import typer
from typer.testing import CliRunner

from edge_fm.cli import app

REPO = Path(__file__).resolve().parents[1]
THIS_FILE = Path(__file__).resolve()

PROCESS_PATTERNS = {
    "a numbered stop": re.compile(r"\bstop \d+\b|\bstops \d+", re.I),
    "a plan id": re.compile(r"\bplans? [0-9a-f]{7,}\b", re.I),
    "an issue number": re.compile(r"\bissue \d+\b", re.I),
    "a per-session run directory": re.compile(r"runs/s\d+/"),
    "a work session": re.compile(r"\bsessions?\b", re.I),
    "a commit id": re.compile(r"\bcommits? [0-9a-f]{7,40}\b", re.I),
}
# pytest's fixture scope, and a file's hash after "sha256" (with or without quotes, colon or backticks).
ALLOWED = re.compile(r"""scope=["']session["']|\bsession-scoped\b|sha256[\s:=`"']*[0-9a-f]+""", re.I)
# In prose, any other 7-40 digit hex word with a digit and a letter is a commit id.
BARE_HEX = re.compile(r"\b(?=[0-9a-f]*[0-9])(?=[0-9a-f]*[a-f])[0-9a-f]{7,40}\b")
PRIVATE_PATH = re.compile(r"\.\./shared")
# The shipped models' records (bundles, cards, provenance, their benchmark).
SHIPPED_RECORDS = re.compile(r"^models/|^benchmarks/results/models_bench\.json$")


def _project_files() -> list[str]:
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    return sorted(
        {name for name in listed if (REPO / name).is_file() and (REPO / name).resolve() != THIS_FILE}
    )


def _text(name: str) -> str | None:
    try:
        return (REPO / name).read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        return None  # a binary file: a model, an image


def _read_by_users(name: str) -> bool:
    return (
        name in ("README.md", "experiments/README.md")
        or name.startswith("docs/")
        or re.fullmatch(r"models/[^/]+/MODEL_CARD\.md", name) is not None
    )


def offences(name: str, text: str) -> list[str]:
    """``file:line: what (the words)`` for every trace of the internal process in one file's text."""
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        line = ALLOWED.sub("", line)
        checks = dict(PROCESS_PATTERNS)
        if name.endswith(".md") or name == "<cli help>":
            checks["a commit id in prose"] = BARE_HEX
        if _read_by_users(name) or name == "<cli help>":
            checks["the developers' local ../shared folder"] = PRIVATE_PATH
        for what, pattern in checks.items():
            for match in pattern.finditer(line):
                found.append(f"{name}:{number}: {what}: {match.group(0)!r}")
    return found


def _scan(names: list[str]) -> list[str]:
    found = []
    for name in names:
        text = _text(name)
        if text is not None:
            found += offences(name, text)
    return found


def test_project_files_speak_to_users():
    found = _scan([name for name in _project_files() if not SHIPPED_RECORDS.search(name)])
    assert not found, "process talk in product text:\n" + "\n".join(found)


def test_shipped_model_records_speak_to_users():
    names = [name for name in _project_files() if SHIPPED_RECORDS.search(name)]
    assert any(name.endswith("MODEL_CARD.md") for name in names)
    found = _scan(names)
    assert not found, "process talk in the shipped models' records (regenerate them):\n" + "\n".join(found)


def _command_paths(command, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command's words under ``command`` (a Typer-built click command; a group has ``commands``)."""
    paths = [path]
    for name, sub in getattr(command, "commands", {}).items():
        paths += _command_paths(sub, (*path, name))
    return paths


def test_cli_help_speaks_to_users():
    runner = CliRunner()
    paths = _command_paths(typer.main.get_command(app))
    assert len(paths) > 5
    found = []
    for path in paths:
        result = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "200", "TERM": "dumb"})
        assert result.exit_code == 0, result.output
        found += [
            f"edge-fm {' '.join(path)} --help{offence.removeprefix('<cli help>')}"
            for offence in offences("<cli help>", result.output)
        ]
    assert not found, "process talk in the CLI's help:\n" + "\n".join(found)


def test_the_scan_finds_each_kind_of_process_talk():
    text = "\n".join(
        [
            "Shipped until stop 18.",
            "under plan 2fa93fb",
            "Issue 5's targets",
            "runs/s17/edge-cnn-train-1",
            "this session's CPU",
            "in the run of commit d80b3b0",
            "as in d80b3b0's run",
            "see ../shared/data",
        ]
    )
    found = offences("docs/x.md", text)
    assert {int(line.split(":")[1]) for line in found} == set(range(1, 9)), found
    allowed = (
        'sha256 dc4ee9b7b890; sha256 `4e63dc51986d4216...`; @pytest.fixture(scope="session"), session-scoped'
    )
    assert offences("docs/x.md", allowed) == []
    assert (
        offences("edge_fm/x.py", "data_dir = '../shared/data'") == []
    )  # a private path only matters where users read


def test_cli_help_paragraphs_are_not_broken_mid_sentence():
    # Typer keeps a docstring's line breaks, so a wrapped paragraph prints cut at the source's width.
    broken = []
    for path in _command_paths(typer.main.get_command(app)):
        command = typer.main.get_command(app)
        for word in path:
            command = command.commands[word]
        for paragraph in (command.help or "").split("\n\n"):
            prose = [
                line for line in paragraph.strip().split("\n") if not line.startswith(("Example", "Needs"))
            ]
            if len(prose) > 1:
                broken.append(f"edge-fm {' '.join(path)}: {prose[0][:60]}...")
    assert not broken, "help paragraphs wrapped in the source:\n" + "\n".join(broken)

"""The package's shape: its stages stand as floors, each importing only from its own floor or below, and
no module grows past what a reader holds at once."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "edge_fm"
MAX_LINES = 500

# Lowest first, in the order the pipeline reads: a module may import from its own floor and the floors
# below, never from one above (the report does not import the shipping stage, the exporter not the bench).
FLOORS = (
    {"errors", "records"},
    {"io", "runner", "swap", "compat"},  # the Keras shim silences TensorFlow's start-up as the runner does
    {"data", "result_files"},
    {"zoo"},
    {"train"},
    {"optimize"},
    {"export"},
    {"bench"},
    {"show"},
    {"shipping"},
    {"pipeline"},
    {"__init__"},  # the public API, which names every stage's operations
    {"cli"},  # a thin layer over the API
)
# Generated code (the TFLite Metadata schema's Python, see its README) and the stand-alone runner, a single
# file that is copied to a device alone.
EXEMPT_FROM_LENGTH = ("export/vendor/", "runner.py")


def _sources() -> list[Path]:
    return sorted(path for path in PACKAGE.rglob("*.py") if "vendor" not in path.relative_to(PACKAGE).parts)


def _unit(module: str) -> str:
    """``edge_fm.export.mobile`` -> ``export``; ``edge_fm`` -> ``__init__``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _imports(path: Path) -> set[str]:
    """The edge_fm modules a file imports, at its top or inside a function."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module == "edge_fm":
            names.update(filter(None, (_from_the_package(alias.name) for alias in node.names)))
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return {name for name in names if name == "edge_fm" or name.startswith("edge_fm.")}


def _from_the_package(name: str) -> str | None:
    """What ``from edge_fm import name`` loads: a module (``runner``), a name of the public API, or None for
    the version, which comes from the installed package's metadata and imports no stage (so any stage may
    read it)."""
    if (PACKAGE / f"{name}.py").is_file() or (PACKAGE / name).is_dir():
        return f"edge_fm.{name}"
    return None if name == "__version__" else "edge_fm"


def _floor(unit: str) -> int:
    return next(number for number, units in enumerate(FLOORS) if unit in units)


def test_every_stage_has_a_floor():
    units = {path.relative_to(PACKAGE).parts[0].removesuffix(".py") for path in _sources()}
    placed = set().union(*FLOORS)
    assert units <= placed, f"give these a floor in FLOORS: {sorted(units - placed)}"


def test_imports_only_go_down():
    upward = []
    for path in _sources():
        module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")
        here = _floor(_unit(module)) if module != "edge_fm" else _floor("__init__")
        for name in _imports(path):
            if _floor(_unit(name)) > here:
                upward.append(f"{module} imports {name}")
    assert not upward, upward


def test_no_module_is_longer_than_a_reader_holds():
    long = {
        str(path.relative_to(PACKAGE)): length
        for path in PACKAGE.rglob("*.py")
        if not str(path.relative_to(PACKAGE)).startswith(EXEMPT_FROM_LENGTH)
        and (length := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert not long, long

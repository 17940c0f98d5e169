"""edge-fm: train, optimize, export and benchmark small Fashion-MNIST classifiers for the edge.

The public API; the CLI and the scripts in ``benchmarks/`` import from here.

Example:
    >>> import edge_fm
    >>> run_dir = edge_fm.train_model(edge_fm.config_for("cnn-2conv", "quick", data="sample"))  # doctest: +SKIP
    >>> edge_fm.Run(run_dir).metrics["sample_test"]["accuracy"]  # doctest: +SKIP

The names do not hide the modules of the package: ``edge_fm.train`` is the training module,
``edge_fm.train_model`` its function (likewise ``optimize_run``, ``export_run``, ``bench_artifacts``).
"""

from __future__ import annotations

import importlib
import os
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("edge-fm")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+local"

from edge_fm.config import TrainConfig, from_dict, load_config, parse_overrides  # noqa: E402
from edge_fm.data import (  # noqa: E402
    CLASS_NAMES,
    Dataset,
    fetch,
    info,
    load_dataset,
    load_split,
    make_sample,
    read_idx,
    resolve_data_dir,
    stratified_split,
    write_idx,
)
from edge_fm.errors import EdgeFMError  # noqa: E402
from edge_fm.report import classification_metrics, confusion_matrix  # noqa: E402

# The names below load TensorFlow (seconds); they are imported on first use (PEP 562), so what
# needs only LiteRT (`edge-fm serve`, the device runner) starts without it. Set here as in
# edge_fm.compat, so that whichever module reaches TensorFlow first, tf.keras is Keras 2.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
_LAZY = {
    "evaluate_run": ("edge_fm.evaluate", "evaluate_run"),
    "predict_proba": ("edge_fm.evaluate", "predict_proba"),
    "PRESET_NAMES": ("edge_fm.presets", "PRESET_NAMES"),
    "preset": ("edge_fm.presets", "preset"),
    "Run": ("edge_fm.runs", "Run"),
    "Reporter": ("edge_fm.train", "Reporter"),
    "config_for": ("edge_fm.train", "config_for"),
    "resume": ("edge_fm.train", "resume"),
    "train_model": ("edge_fm.train", "train"),
    "optimize_run": ("edge_fm.optimize", "optimize"),
    "OptimizeConfig": ("edge_fm.config", "OptimizeConfig"),
    "export_run": ("edge_fm.export", "export"),
    "export_mobile": ("edge_fm.mobile", "export_mobile"),
    "export_mcu": ("edge_fm.mcu", "export_mcu"),
    "tflm_report": ("edge_fm.mcu", "tflm_report"),
    "export_ethos_u": ("edge_fm.vela", "export_ethos_u"),
    "inspect_artifact": ("edge_fm.inspection", "inspect_artifact"),
    "runs_on": ("edge_fm.runtimes", "runs_on"),
    "bench_artifacts": ("edge_fm.bench", "bench"),
    "bench_fleet": ("edge_fm.bench", "bench_fleet"),
    "BenchOptions": ("edge_fm.bench", "BenchOptions"),
    "ship": ("edge_fm.ship", "ship"),
    "ShipConfig": ("edge_fm.ship", "ShipConfig"),
    "bench_catalog": ("edge_fm.catalog", "bench_catalog"),
    "model_card": ("edge_fm.cards", "model_card"),
    "build_report": ("edge_fm.html_report", "build_report"),
    "explain_files": ("edge_fm.explain", "explain_files"),
    "run_pipeline": ("edge_fm.pipeline", "run_pipeline"),
    "PipelineConfig": ("edge_fm.pipeline", "PipelineConfig"),
    "run_sweep": ("edge_fm.sweep", "run_sweep"),
    **{name: ("edge_fm.zoo", name) for name in
       ("EdgeFMWarning", "count_macs", "create_model", "describe_model", "list_models", "register_model")},
}


def __getattr__(name: str):
    if name in _LAZY:
        module, attribute = _LAZY[name]
        value = getattr(importlib.import_module(module), attribute)
        globals()[name] = value
        return value
    try:  # a submodule (edge_fm.train is the training module), as eager imports used to bind it
        return importlib.import_module(f"{__name__}.{name}")
    except ModuleNotFoundError as exc:
        if exc.name != f"{__name__}.{name}":
            raise
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


__all__ = [
    "BenchOptions",
    "OptimizeConfig",
    "PipelineConfig",
    "ShipConfig",
    "bench_artifacts",
    "bench_catalog",
    "bench_fleet",
    "build_report",
    "explain_files",
    "export_run",
    "export_mcu",
    "export_mobile",
    "export_ethos_u",
    "inspect_artifact",
    "runs_on",
    "model_card",
    "optimize_run",
    "run_pipeline",
    "run_sweep",
    "ship",
    "tflm_report",
    "CLASS_NAMES",
    "Dataset",
    "EdgeFMError",
    "EdgeFMWarning",
    "PRESET_NAMES",
    "Reporter",
    "Run",
    "TrainConfig",
    "__version__",
    "classification_metrics",
    "config_for",
    "confusion_matrix",
    "count_macs",
    "create_model",
    "describe_model",
    "evaluate_run",
    "fetch",
    "from_dict",
    "info",
    "list_models",
    "load_config",
    "load_dataset",
    "load_split",
    "make_sample",
    "parse_overrides",
    "predict_proba",
    "preset",
    "read_idx",
    "register_model",
    "resolve_data_dir",
    "resume",
    "stratified_split",
    "train_model",
    "write_idx",
]

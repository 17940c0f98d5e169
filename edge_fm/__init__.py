"""edge-fm: train, optimize, export and benchmark small Fashion-MNIST classifiers for the edge.

The public API; the CLI and the scripts in ``benchmarks/`` import from here.

Example:
    >>> import edge_fm
    >>> run_dir = edge_fm.train_model(edge_fm.config_for("cnn-2conv", "quick", data="sample"))  # doctest: +SKIP
    >>> edge_fm.Run(run_dir).metrics["sample_test"]["accuracy"]  # doctest: +SKIP

The names do not hide the modules of the package: ``edge_fm.train`` is the training module,
``edge_fm.train_model`` its function.
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

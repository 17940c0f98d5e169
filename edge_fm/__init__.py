"""edge-fm: train, optimize, export and benchmark small Fashion-MNIST classifiers for the edge.

The public API; the CLI and the scripts in ``benchmarks/`` import from here.

Example:
    >>> import edge_fm
    >>> run_dir = edge_fm.train(edge_fm.config_for("cnn-2conv", "quick", data="sample"))  # doctest: +SKIP
"""

from __future__ import annotations

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
from edge_fm.presets import PRESET_NAMES, preset  # noqa: E402
from edge_fm.report import classification_metrics, confusion_matrix  # noqa: E402
from edge_fm.train import Reporter, config_for, evaluate, load_model, predict, resume, train  # noqa: E402
from edge_fm.zoo import EdgeFMWarning, count_macs, create_model, describe_model, list_models, register_model  # noqa: E402

__all__ = [
    "CLASS_NAMES",
    "Dataset",
    "EdgeFMError",
    "EdgeFMWarning",
    "PRESET_NAMES",
    "Reporter",
    "TrainConfig",
    "__version__",
    "classification_metrics",
    "config_for",
    "confusion_matrix",
    "count_macs",
    "create_model",
    "describe_model",
    "evaluate",
    "fetch",
    "from_dict",
    "info",
    "list_models",
    "load_config",
    "load_dataset",
    "load_model",
    "load_split",
    "make_sample",
    "parse_overrides",
    "predict",
    "preset",
    "read_idx",
    "register_model",
    "resolve_data_dir",
    "resume",
    "stratified_split",
    "train",
    "write_idx",
]

"""edge-fm: train, optimize, export and benchmark small Fashion-MNIST classifiers for the edge.

``import edge_fm`` gives the names a program using edge-fm needs (``__all__``): each is the function
or class of the stage module that owns it, loaded on first use (PEP 562), so ``import edge_fm`` is
fast and loads TensorFlow only when a name needs it. The CLI calls the library's operations through
these names; option parsers and constants it takes from their own modules. The repository's own
scripts (``benchmarks/``, ``experiments/``, ``tools/``) import from the modules where each part lives,
not from here: they measure or maintain those parts, and name them where they are.

Example:
    >>> import edge_fm
    >>> run_dir = edge_fm.train_model(edge_fm.config_for("cnn-2conv", "quick", data="sample"))  # doctest: +SKIP
    >>> edge_fm.Run(run_dir).metrics["sample_test"]["accuracy"]  # doctest: +SKIP

The package is laid out by stage, as the pipeline reads: ``data``, ``zoo``, ``train``, ``optimize``,
``export``, ``bench``, ``show``, ``shipping``, ``pipeline`` and ``cli``, each importing only the stages
below it. The names do not hide those packages: ``edge_fm.train`` is the training stage,
``edge_fm.train_model`` its function (likewise ``optimize_run``, ``export_run``, ``bench_artifacts``).
"""

from __future__ import annotations

import importlib
import os

# Every name is imported on first use (PEP 562): those that load TensorFlow take seconds, so what
# needs only LiteRT (`edge-fm serve`, the device runner) starts without it, and the console script
# reaches its Ctrl-C handling before any stage module loads. Set here as in
# edge_fm.compat, so that whichever module reaches TensorFlow first, tf.keras is Keras 2.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
_LAZY = {
    **{
        name: ("edge_fm.data.datasets", name)
        for name in (
            "CLASS_NAMES",
            "DataIdentity",
            "Dataset",
            "info",
            "load_dataset",
            "load_split",
            "make_sample",
            "read_idx",
            "resolve_data_dir",
            "stratified_split",
            "write_idx",
        )
    },
    "fetch": ("edge_fm.data.download", "fetch"),
    **{name: ("edge_fm.data.sources", name) for name in ("DataOptions", "load_data", "parse_image_size")},
    "EdgeFMError": ("edge_fm.errors", "EdgeFMError"),
    **{
        name: ("edge_fm.train.config", name)
        for name in ("TrainConfig", "from_dict", "load_config", "parse_overrides")
    },
    **{name: ("edge_fm.train.metrics", name) for name in ("classification_metrics", "confusion_matrix")},
    "evaluate_run": ("edge_fm.train.evaluate", "evaluate_run"),
    "predict_proba": ("edge_fm.train.evaluate", "predict_proba"),
    "PRESET_NAMES": ("edge_fm.train.presets", "PRESET_NAMES"),
    "preset": ("edge_fm.train.presets", "preset"),
    "Run": ("edge_fm.train.runs", "Run"),
    "Reporter": ("edge_fm.train.trainer", "Reporter"),
    "config_for": ("edge_fm.train.trainer", "config_for"),
    "resume": ("edge_fm.train.trainer", "resume"),
    "train_model": ("edge_fm.train.trainer", "train"),
    "optimize_run": ("edge_fm.optimize.compress", "optimize"),
    "OptimizeConfig": ("edge_fm.train.config", "OptimizeConfig"),
    "export_run": ("edge_fm.export.exporter", "export"),
    "export_mobile": ("edge_fm.export.mobile", "export_mobile"),
    "export_mobile_gpu": ("edge_fm.export.mobile_gpu", "export_mobile_gpu"),
    "export_mcu": ("edge_fm.export.mcu", "export_mcu"),
    "tflm_report": ("edge_fm.export.tflm", "tflm_report"),
    "export_ethos_u": ("edge_fm.export.vela", "export_ethos_u"),
    "ethos_u_text": ("edge_fm.export.vela", "ethos_u_text"),
    "check_export_request": ("edge_fm.export.forms", "check_export_request"),
    "inspect_artifact": ("edge_fm.bench.inspection", "inspect_artifact"),
    "runs_on": ("edge_fm.export.runtimes", "runs_on"),
    "bench_artifacts": ("edge_fm.bench.benchmark", "bench"),
    "BenchOptions": ("edge_fm.bench.benchmark", "BenchOptions"),
    "ship": ("edge_fm.shipping.ship", "ship"),
    "ShipConfig": ("edge_fm.shipping.ship", "ShipConfig"),
    "bench_catalog": ("edge_fm.shipping.catalog", "bench_catalog"),
    "model_card": ("edge_fm.shipping.cards", "model_card"),
    "build_report": ("edge_fm.show.html_report", "build_report"),
    "explain_files": ("edge_fm.show.explain", "explain_files"),
    "run_pipeline": ("edge_fm.pipeline.pipeline", "run_pipeline"),
    "resume_pipeline": ("edge_fm.pipeline.pipeline", "resume_pipeline"),
    "recorded_bench": ("edge_fm.pipeline.pipeline", "recorded_bench"),
    "stopped_pipeline": ("edge_fm.pipeline.pipeline", "stopped_pipeline"),
    "PipelineConfig": ("edge_fm.pipeline.pipeline", "PipelineConfig"),
    "run_sweep": ("edge_fm.pipeline.sweep", "run_sweep"),
    "parse_threads": ("edge_fm.bench.benchmark", "parse_threads"),
    "below_min_accuracy": ("edge_fm.bench.benchmark", "below_min_accuracy"),
    "write_results": ("edge_fm.bench.benchmark", "write_results"),
    "compare_devices": ("edge_fm.bench.benchmark", "compare_devices"),
    "flat_row": ("edge_fm.bench.benchmark", "flat_row"),
    "parse_target": ("edge_fm.bench.targets", "parse_target"),
    "Bundle": ("edge_fm.export.bundles", "Bundle"),
    "training_run_of": ("edge_fm.export.source_runs", "training_run_of"),
    "check_run_formats": ("edge_fm.export.exporter", "check_run_formats"),
    "get_format": ("edge_fm.export.formats", "get_format"),
    "FormOptions": ("edge_fm.export.form_options", "FormOptions"),
    "export_form": ("edge_fm.export.forms", "export_form"),
    "get_form": ("edge_fm.export.forms", "get_form"),
    "optimize_chain": ("edge_fm.optimize.compress", "optimize_chain"),
    "resume_optimize": ("edge_fm.optimize.compress", "resume_optimize"),
    "read_pipeline": ("edge_fm.pipeline.pipeline", "read_pipeline"),
    "RayOptions": ("edge_fm.pipeline.sweep", "RayOptions"),
    "resume_sweep": ("edge_fm.pipeline.sweep", "resume_sweep"),
    "build_sweep_spec": ("edge_fm.pipeline.sweep_spec", "build_spec"),
    "SweepOptions": ("edge_fm.pipeline.sweep_spec", "SweepOptions"),
    "read_sweep": ("edge_fm.pipeline.sweep_summary", "read_sweep"),
    "measure_artifacts": ("edge_fm.shipping.catalog", "measure"),
    "previous_result": ("edge_fm.shipping.catalog", "previous_result"),
    "check_cards_request": ("edge_fm.shipping.catalog", "check_cards_request"),
    "refresh_cards": ("edge_fm.shipping.card_refresh", "refresh_cards"),
    "plot_front": ("edge_fm.show.figures", "plot_front"),
    "ReportOptions": ("edge_fm.show.html_report", "ReportOptions"),
    "classify_files": ("edge_fm.show.predict", "classify_files"),
    "classify_test_split": ("edge_fm.show.predict", "classify_test_split"),
    "evaluate_artifact": ("edge_fm.show.predict", "evaluate_artifact"),
    "ServeConfig": ("edge_fm.show.serve", "ServeConfig"),
    "serve_in_fresh_process": ("edge_fm.show.serve", "serve_in_fresh_process"),
    "epochs_text": ("edge_fm.train.metrics", "epochs_text"),
    **{
        name: ("edge_fm.zoo", name)
        for name in (
            "EdgeFMWarning",
            "count_macs",
            "create_model",
            "describe_model",
            "list_models",
            "register_model",
        )
    },
}


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("edge-fm")
    except PackageNotFoundError:  # running from a source tree that was not installed
        return "0.0.0+local"


def __getattr__(name: str):
    if name == "__version__":
        globals()[name] = _version()
        return globals()[name]
    if name in _LAZY:
        module, attribute = _LAZY[name]
        value = getattr(importlib.import_module(module), attribute)
        globals()[name] = value
        return value
    try:  # a stage package: edge_fm.train is the training stage, as `import edge_fm.train` binds it
        return importlib.import_module(f"{__name__}.{name}")
    except ModuleNotFoundError as exc:
        if exc.name != f"{__name__}.{name}":
            raise
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


__all__ = [
    "parse_threads",
    "training_run_of",
    "check_run_formats",
    "below_min_accuracy",
    "write_results",
    "compare_devices",
    "flat_row",
    "parse_target",
    "Bundle",
    "get_format",
    "FormOptions",
    "export_form",
    "get_form",
    "optimize_chain",
    "resume_optimize",
    "read_pipeline",
    "RayOptions",
    "resume_sweep",
    "build_sweep_spec",
    "SweepOptions",
    "read_sweep",
    "measure_artifacts",
    "previous_result",
    "check_cards_request",
    "refresh_cards",
    "plot_front",
    "ReportOptions",
    "classify_files",
    "classify_test_split",
    "ServeConfig",
    "serve_in_fresh_process",
    "epochs_text",
    "BenchOptions",
    "OptimizeConfig",
    "PipelineConfig",
    "ShipConfig",
    "bench_artifacts",
    "bench_catalog",
    "build_report",
    "explain_files",
    "export_run",
    "export_mcu",
    "export_mobile",
    "export_mobile_gpu",
    "export_ethos_u",
    "inspect_artifact",
    "runs_on",
    "model_card",
    "optimize_run",
    "run_pipeline",
    "resume_pipeline",
    "recorded_bench",
    "stopped_pipeline",
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
    "evaluate_artifact",
    "evaluate_run",
    "fetch",
    "from_dict",
    "info",
    "list_models",
    "load_config",
    "load_dataset",
    "load_data",
    "DataOptions",
    "DataIdentity",
    "parse_image_size",
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

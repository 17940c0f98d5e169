"""The optimization stage: magnitude pruning, int8 quantization-aware training (QAT) and
pruning-preserving QAT, each a model-to-model step fine-tuned with the training machinery.

Each call takes a finished run directory and writes a new one (``<arch>-prune-N``,
``<arch>-qat-N`` or ``<arch>-pqat-N``) whose manifest names its parent, so an artifact's lineage
can be read back to the training run.

Example:
    >>> pruned = optimize(OptimizeConfig(method="prune", parent="runs/cnn-2conv-train-1"))  # doctest: +SKIP
    >>> qat = optimize(OptimizeConfig(method="qat", parent=str(pruned)))  # pruning-preserving  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

# First: importing TensorFlow through the shim hides its start-up log lines; tfmot imports it too.
from edge_fm.compat import keras  # isort: skip
import tensorflow_model_optimization as tfmot  # isort: skip
from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import (  # isort: skip
    default_8bit_quantize_configs,
)

from edge_fm.data.datasets import Dataset
from edge_fm.errors import EdgeFMError
from edge_fm.io import write_json
from edge_fm.train.callbacks import NullReporter, Reporter
from edge_fm.train.config import OptimizeConfig, TrainConfig
from edge_fm.train.distribute import ONE_DEVICE
from edge_fm.train.evaluate import score_model
from edge_fm.train.runs import CONFIG, METRICS_FILE, Run, new_run_dir, write_manifest
from edge_fm.train.trainer import compile_model, finish_run, fit_model, save_model
from edge_fm.zoo import count_macs
from edge_fm.zoo.fold import fold_batch_norms_into_dense, follows_linear_conv

_PRUNABLE = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.Dense)
# Layers tfmot's 8-bit registry does not know but that sit between quantized layers: their
# output is quantized (so the converted graph stays integer) and their arithmetic left alone.
_OUTPUT_ONLY = (keras.layers.Rescaling, keras.layers.Resizing, keras.layers.Normalization)


# Training-config fields that decide the train/validation/test split: a fine-tune keeps the parent's.
_SPLIT_FIELDS = {"data", "val_size", "seed"}
# Fine-tuning defaults: a few epochs at a tenth of the parent's peak rate, annealed.
# The parent's starting point (init_from) and its frozen epochs belong to the parent's training alone.
_FINE_TUNE_DEFAULTS = {
    "epochs": 4,
    "schedule": "cosine",
    "warmup_epochs": 0.0,
    "early_stopping": 0,
    "init_from": None,
    "freeze_epochs": 0,
}
# Fine-tunes run on one replica whatever strategy trained the parent: tfmot's pruning step and
# QAT's quantizer ranges are not distribution-aware (QAT's ranges change with the device count).
ONE_REPLICA = "none"


def fine_tune_config(config: OptimizeConfig) -> TrainConfig:
    """The parent's training config with the fine-tuning defaults and ``config.fine_tune`` applied."""
    parent = Run(config.parent).train_config
    split_keys = sorted(set(config.fine_tune) & _SPLIT_FIELDS)
    if split_keys:
        # A different split would put the parent's training images into validation and test.
        raise EdgeFMError(
            f"fine-tuning cannot change {', '.join(split_keys)}: the split must stay the parent's; "
            "drop those settings (max_train may be set to fine-tune on a subset)."
        )
    if config.fine_tune.get("distribute", ONE_REPLICA) != ONE_REPLICA:
        raise EdgeFMError(
            "pruning and QAT fine-tunes run on one replica (tfmot's wrappers are not distribution-aware); "
            "drop the distribute setting."
        )
    values = {
        **_FINE_TUNE_DEFAULTS,
        "learning_rate": parent.learning_rate / 10,
        **config.fine_tune,
        "distribute": ONE_REPLICA,
    }
    values["min_learning_rate"] = min(parent.min_learning_rate, values["learning_rate"] / 10)
    return dataclasses.replace(parent, **values)


def optimize(
    config: OptimizeConfig,
    data_dir: Path | str | None = None,
    runs_dir: Path | str = "runs",
    reporter: Reporter | None = None,
    data: Path | str | None = None,
) -> Path:
    """Runs one optimization step and returns its new run directory.

    Args:
        config: What to do and to which run.
        data_dir: Where the full dataset is (default: where the parent read it).
        runs_dir: Parent of the run directories.
        reporter: Receives fine-tuning progress.
        data: Where the parent's own data is now, when it has moved (see :meth:`Run.dataset`); the new
            run records this place.

    Returns:
        The run directory, holding ``model.h5`` (stripped of pruning wrappers),
        ``metrics.json`` with the parent's figures beside the
        new ones, ``history.json``, ``config.json`` and ``manifest.json``.

    Raises:
        EdgeFMError: The parent is not a finished run, or a QAT run is given to QAT again.
    """
    parent = Run(config.parent)
    if not parent.finished:
        raise EdgeFMError(f"{parent.path} has not finished; finish or resume it first.")
    if parent.quantization_aware:
        raise EdgeFMError(f"{parent.path} is already quantization-aware; optimize its parent instead.")
    preserve = config.preserve_sparsity if config.preserve_sparsity is not None else parent.stage == "prune"
    stage = "prune" if config.method == "prune" else ("pqat" if preserve else "qat")
    tune = fine_tune_config(config)
    # The fine-tuning config carries the parent's split (source, val_size, seed), so validation and
    # test are the parent's; a fine_tune max_train lets a heavy network fine-tune on a subset.
    dataset = parent.dataset(data_dir, tune, parent.continued_on(data))
    run_dir = new_run_dir(runs_dir, f"{tune.arch}-{stage}")
    resolved = dataclasses.replace(config, parent=str(parent.path), preserve_sparsity=preserve)
    write_json(
        run_dir / CONFIG,
        {"stage": stage, "optimize": dataclasses.asdict(resolved), "fine_tune": tune.to_dict()},
    )
    return _optimize_in(run_dir, stage, resolved, tune, dataset, reporter or NullReporter())


def resume_optimize(
    run_dir: Path | str,
    data_dir: Path | str | None = None,
    reporter: Reporter | None = None,
    data: Path | str | None = None,
) -> Path:
    """Continues an interrupted optimization run from its last completed epoch (``data``: as :func:`optimize`),
    and a prune-then-QAT chain to its end: the QAT step is started, or resumed, after its pruning.

    Returns:
        The last step's run directory.
    """
    run = Run(run_dir)
    config, tune = run.optimize_config, run.train_config
    finished = run.path
    if run.finished:
        following = _chained_qat(run.path) if config.then_qat else None
        if following is not None:  # the pruning finished and its QAT step had begun: that one goes on
            return resume_optimize(following, data_dir, reporter, data)
        if not config.then_qat:
            raise EdgeFMError(
                f"{run.path} already finished (it has {METRICS_FILE}); start a new run instead."
            )
    else:
        parent = Run(config.parent)
        dataset = parent.dataset(data_dir, tune, parent.continued_on(data))
        finished = _optimize_in(run.path, run.stage, config, tune, dataset, reporter or NullReporter())
    if not config.then_qat:
        return finished
    qat = OptimizeConfig(
        "qat", str(finished), fold_batch_norms=config.fold_batch_norms, fine_tune=dict(config.fine_tune)
    )
    return optimize(qat, data_dir, finished.parent, reporter=reporter, data=data)  # data: where it is now


def _chained_qat(pruned: Path) -> Path | None:
    """The QAT run a chain started from ``pruned`` beside it, if any."""
    for candidate in sorted(pruned.parent.glob("*-pqat-*")) + sorted(pruned.parent.glob("*-qat-*")):
        if (candidate / CONFIG).is_file():
            step = Run(candidate).optimize_config
            if step.method == "qat" and Path(step.parent).resolve() == pruned.resolve():
                return candidate
    return None


def optimize_chain(
    run_dir: Path | str,
    prune: float | None = None,
    qat: bool = False,
    keep_first_last: bool = True,
    fold_batch_norms: bool = True,
    fine_tune: dict[str, Any] | None = None,
    data_dir: Path | str | None = None,
    runs_dir: Path | str = "runs",
    reporter: Reporter | None = None,
    on_step: Callable[[Path], None] = lambda run_dir: None,
    data: Path | str | None = None,
) -> Path:
    """Prunes, then quantization-aware-trains, a run: each step a new run directory, the next step's parent.

    Args:
        run_dir: A finished training (or pruning) run.
        prune: Magnitude-prune to this sparsity (0-1); None skips pruning.
        qat: Quantization-aware int8 fine-tuning (pruning-preserving after pruning).
        keep_first_last: Keep the first and last layers dense when pruning.
        fold_batch_norms: QAT: fold batch norms that feed a Dense into it first.
        fine_tune: Fine-tuning config fields of each step (epochs, learning_rate...).
        data_dir, runs_dir, reporter: As :func:`optimize` takes them.
        on_step: Called with each finished step's run directory.
        data: Where the run's own data is now, when it has moved; later steps read it where the
            first step recorded it.

    Returns:
        The last step's run directory.

    Raises:
        EdgeFMError: Nothing to do (neither step asked for), or a step's own errors.
    """
    if prune is None and not qat:
        raise EdgeFMError("nothing to do: pass --prune SPARSITY, --qat, or both.")
    parent = Path(run_dir)
    steps = []
    if prune is not None:
        steps.append(
            lambda source: OptimizeConfig(
                "prune",
                str(source),
                target_sparsity=prune,
                keep_first_last=keep_first_last,
                fold_batch_norms=fold_batch_norms,
                fine_tune=dict(fine_tune or {}),
                then_qat=qat,
            )
        )
    if qat:
        steps.append(
            lambda source: OptimizeConfig(
                "qat", str(source), fold_batch_norms=fold_batch_norms, fine_tune=dict(fine_tune or {})
            )
        )
    for step in steps:
        parent = optimize(step(parent), data_dir, runs_dir, reporter=reporter, data=data)
        data = None  # the step recorded where the data is
        on_step(parent)
    return parent


def _optimize_in(
    run_dir: Path, stage: str, config: OptimizeConfig, tune: TrainConfig, dataset: Dataset, reporter: Reporter
) -> Path:
    write_manifest(run_dir, stage, parent=config.parent, status="running")
    parent = Run(config.parent)
    base = parent.float_model()
    steps_per_epoch = math.ceil(len(dataset.x_train) / tune.batch_size)
    extra: tuple = ()
    if config.method == "prune":
        total = steps_per_epoch * tune.epochs
        model = prune_low_magnitude(
            base, config.target_sparsity, int(config.pruning_end * total), config.keep_first_last
        )
        extra = (tfmot.sparsity.keras.UpdatePruningStep(),)
    else:
        model = quantize_aware(
            base, preserve_sparsity=stage == "pqat", fold_batch_norms=config.fold_batch_norms
        )
    compile_model(model, tune, steps_per_epoch)
    fit = fit_model(model, tune, dataset, run_dir, reporter, extra_callbacks=extra)
    if config.method == "prune":
        model = tfmot.sparsity.keras.strip_pruning(model)
    save_model(model, run_dir)
    parent_metrics = parent.metrics
    scores = score_model(model, dataset)
    key = "test" if "test" in scores else "sample_test"
    metrics: dict[str, Any] = {
        "arch": tune.arch,
        "stage": stage,
        "parent": config.parent,
        **scores,
        "parent_scores": {
            "val_accuracy": parent_metrics["val"]["accuracy"],
            f"{key}_accuracy": parent_metrics[key]["accuracy"],
        },
        "epochs_run": len(fit.history),
        "training_seconds": fit.seconds,
        "sparsity": weight_sparsity(model),
        "params": int(model.count_params()),
        "distribute": {
            **ONE_DEVICE.record(tune.batch_size),
            "note": "pruning and QAT fine-tunes run on one replica, whatever strategy trained the parent",
        },
    }
    if stage != "prune":
        metrics["macs"] = parent_metrics.get("macs")
    else:
        metrics["macs"] = count_macs(model)
    finish_run(run_dir, stage, metrics, dataset, parent=config.parent)
    return run_dir


def prune_low_magnitude(
    model: keras.Model, target_sparsity: float, end_step: int, keep_first_last: bool = True
) -> keras.Model:
    """Wraps the model's convolution and dense layers for magnitude pruning; returns a new model.

    Sparsity ramps from 0 to ``target_sparsity`` over ``end_step`` steps along tfmot's
    polynomial-decay schedule; the ``UpdatePruningStep`` callback must run during fit.

    Args:
        model: A float Keras model.
        target_sparsity: Final fraction of zero weights in each pruned layer.
        end_step: Training step at which the target is reached.
        keep_first_last: Leave the first and last prunable layers dense: they are small and the
            most sensitive.
    """
    prunable = [layer.name for layer in model.layers if isinstance(layer, _PRUNABLE)]
    targets = set(prunable[1:-1] if keep_first_last and len(prunable) > 2 else prunable)
    schedule = tfmot.sparsity.keras.PolynomialDecay(
        initial_sparsity=0.0,
        final_sparsity=target_sparsity,
        begin_step=0,
        end_step=max(1, end_step),
        frequency=max(1, min(100, end_step // 10)),
    )

    def wrap(layer):
        if layer.name in targets:
            return tfmot.sparsity.keras.prune_low_magnitude(layer, pruning_schedule=schedule)
        return layer

    return keras.models.clone_model(model, clone_function=wrap)


def quantize_aware(
    model: keras.Model, preserve_sparsity: bool = False, fold_batch_norms: bool = True
) -> keras.Model:
    """Returns a quantization-aware (int8) copy of ``model``, every layer included.

    Conv + batch-norm pairs are folded by tfmot's transforms; the in-model preprocessing layers
    (rescaling, resizing, normalization) and batch-norms that follow an activation get
    output-only quantization, so the whole graph converts to integer ops.

    Args:
        model: A float Keras model (flat: no nested models).
        preserve_sparsity: Use tfmot's pruning-preserving scheme so zero weights stay zero.
        fold_batch_norms: First fold each batch norm that feeds a Dense into it
            (``fold_batch_norms_into_dense``), so QAT trains the weights that ship.
    """
    quantize = tfmot.quantization.keras
    if fold_batch_norms:
        model = fold_batch_norms_into_dense(model)

    def annotate(layer):
        if isinstance(layer, _OUTPUT_ONLY) or (
            isinstance(layer, keras.layers.BatchNormalization) and not follows_linear_conv(layer)
        ):
            return quantize.quantize_annotate_layer(
                layer, default_8bit_quantize_configs.Default8BitOutputQuantizeConfig()
            )
        return quantize.quantize_annotate_layer(layer)

    annotated = keras.models.clone_model(model, clone_function=annotate)
    scheme = (
        tfmot.experimental.combine.Default8BitPrunePreserveQuantizeScheme() if preserve_sparsity else None
    )
    with quantize.quantize_scope():
        applied = quantize.quantize_apply(annotated, scheme) if scheme else quantize.quantize_apply(annotated)
    return pin_input_range(applied)


RAW_PIXEL_MAX = 255.0  # every zoo model takes raw pixels 0-255


def pin_input_range(model: keras.Model) -> keras.Model:
    """Starts the input quantizer's range at raw pixels' 0-255, so the int8 input is ``q = pixel - 128``.

    tfmot's input quantizer keeps the smallest and largest value it sees; on data whose brightest
    pixel is 254 the input scale would be 254/255, which the mobile form cannot take as bytes. As
    pixels never leave 0-255, a range that starts there stays there.
    """
    for layer in model.layers:
        fed_by = layer.inbound_nodes[0].inbound_layers if layer.inbound_nodes else None
        if type(layer).__name__ == "QuantizeLayer" and isinstance(fed_by, keras.layers.InputLayer):
            for weight in layer.weights:
                if weight.name.split("/")[-1].startswith(f"{layer.name}_max"):
                    weight.assign(RAW_PIXEL_MAX)
    return model


def weight_sparsity(model: keras.Model) -> dict[str, Any]:
    """Fraction of exactly-zero weights per kernel and overall (kernels only; biases are tiny).

    Reads the variables rather than layer attributes, because QAT wrappers replace a layer's
    ``kernel`` attribute with its fake-quantized tensor.
    """
    per_layer, zeros, total = {}, 0, 0
    for layer in model.layers:
        for weight in layer.weights:
            name = weight.name.split("/")[-1].split(":")[0]
            if name not in ("kernel", "depthwise_kernel"):
                continue
            values = np.asarray(weight.numpy())
            per_layer[layer.name] = round(float(np.mean(values == 0)), 4)
            zeros += int(np.sum(values == 0))
            total += values.size
    return {"overall": round(zeros / max(1, total), 4), "layers": per_layer}

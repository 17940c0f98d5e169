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
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow_model_optimization as tfmot
from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import (
    default_8bit_quantize_configs,
)

from edge_fm.compat import keras
from edge_fm.config import TrainConfig, from_dict
from edge_fm.errors import EdgeFMError, unknown_choice
from edge_fm.io import read_json, write_json
from edge_fm.runs import CONFIG, new_run_dir, require_run, write_manifest
from edge_fm.train import (
    METRICS_FILE,
    NullReporter,
    Reporter,
    compile_model,
    finish_run,
    fit_model,
    load_model,
    load_run_data,
    run_train_config,
    save_model,
    score_model,
)
from edge_fm.zoo import count_macs, create_model

METHODS = ("prune", "qat")
QAT_STAGES = ("qat", "pqat")  # stages whose model is quantization-aware
_PRUNABLE = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.Dense)
# Layers tfmot's 8-bit registry does not know but that sit between quantized layers: their
# output is quantized (so the converted graph stays integer) and their arithmetic left alone.
_OUTPUT_ONLY = (keras.layers.Rescaling, keras.layers.Resizing, keras.layers.Normalization)


@dataclasses.dataclass(frozen=True)
class OptimizeConfig:
    """One optimization step; saved as ``config.json`` of its run with the fine-tuning config."""

    method: str  # 'prune' or 'qat'
    parent: str  # run directory the step starts from
    target_sparsity: float = 0.5  # prune: fraction of zero weights reached
    keep_first_last: bool = True  # prune: leave the first and last prunable layers dense
    pruning_end: float = 0.7  # prune: fraction of fine-tuning steps over which sparsity ramps up
    preserve_sparsity: bool | None = None  # qat: keep zeros (None: when the parent was pruned)
    fold_batch_norms: bool = True  # qat: fold batch norms that feed a Dense into it first
    fine_tune: dict = dataclasses.field(default_factory=dict)  # overrides of the parent's training config

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise unknown_choice("optimization method", self.method, METHODS)
        if not 0.0 < self.target_sparsity < 1.0:
            raise EdgeFMError(f"target sparsity must be in (0, 1), got {self.target_sparsity!r}.")
        if not 0.0 < self.pruning_end <= 1.0:
            raise EdgeFMError(f"pruning_end must be in (0, 1], got {self.pruning_end!r}.")
        object.__setattr__(self, "fine_tune", dict(self.fine_tune))


# Training-config fields that decide the train/validation/test split: a fine-tune keeps the parent's.
_SPLIT_FIELDS = {"data", "val_size", "seed"}
# Fine-tuning defaults: a few epochs at a tenth of the parent's peak rate, annealed.
_FINE_TUNE_DEFAULTS = {"epochs": 4, "schedule": "cosine", "warmup_epochs": 0.0, "early_stopping": 0}


def run_stage(run_dir: Path | str) -> str:
    """The stage that made a run (``train``, ``prune``, ``qat`` or ``pqat``)."""
    values = read_json(Path(run_dir) / CONFIG)
    return values.get("stage", "train")


def load_model_to_convert(run_dir: Path | str) -> keras.Model:
    """The model a run's TFLite artifact is converted from: a QAT run's quantization-aware model,
    any other run's model rebuilt in float32 with its batch norms before a Dense folded away
    (``fold_batch_norms_into_dense``: exact, and it spares weight quantization what the converter's
    own fold costs)."""
    if run_stage(run_dir) in QAT_STAGES:
        return load_model(run_dir)
    return fold_batch_norms_into_dense(load_float_model(run_dir), scale_into_producer=True)


def fine_tune_config(config: OptimizeConfig) -> TrainConfig:
    """The parent's training config with the fine-tuning defaults and ``config.fine_tune`` applied."""
    parent = run_train_config(config.parent)
    split_keys = sorted(set(config.fine_tune) & _SPLIT_FIELDS)
    if split_keys:
        # A different split would put the parent's training images into validation and test.
        raise EdgeFMError(f"fine-tuning cannot change {', '.join(split_keys)}: the split must stay the parent's; "
                          "drop those settings (max_train may be set to fine-tune on a subset).")
    values = {**_FINE_TUNE_DEFAULTS, "learning_rate": parent.learning_rate / 10, **config.fine_tune}
    values["min_learning_rate"] = min(parent.min_learning_rate, values["learning_rate"] / 10)
    return dataclasses.replace(parent, **values)


def optimize(
    config: OptimizeConfig,
    data_dir: Path | str | None = None,
    runs_dir: Path | str = "runs",
    reporter: Reporter | None = None,
) -> Path:
    """Runs one optimization step and returns its new run directory.

    Args:
        config: What to do and to which run.
        data_dir: Where the full dataset is (default: where the parent read it).
        runs_dir: Parent of the run directories.
        reporter: Receives fine-tuning progress.

    Returns:
        The run directory, holding ``model.h5`` (stripped of pruning wrappers),
        ``metrics.json`` with the parent's figures beside the
        new ones, ``history.json``, ``config.json`` and ``manifest.json``.

    Raises:
        EdgeFMError: The parent is not a finished run, or a QAT run is given to QAT again.
    """
    parent = require_run(config.parent)
    if not (parent / METRICS_FILE).exists():
        raise EdgeFMError(f"{parent} has not finished; finish or resume it first.")
    parent_stage = run_stage(parent)
    if parent_stage in QAT_STAGES:
        raise EdgeFMError(f"{parent} is already quantization-aware; optimize its parent instead.")
    preserve = config.preserve_sparsity if config.preserve_sparsity is not None else parent_stage == "prune"
    stage = "prune" if config.method == "prune" else ("pqat" if preserve else "qat")
    tune = fine_tune_config(config)
    # The fine-tuning config carries the parent's split (source, val_size, seed), so validation and
    # test are the parent's; a fine_tune max_train lets a heavy network fine-tune on a subset.
    dataset = load_run_data(parent, tune, data_dir)
    run_dir = new_run_dir(runs_dir, f"{tune.arch}-{stage}")
    resolved = dataclasses.replace(config, parent=str(parent), preserve_sparsity=preserve)
    write_json(run_dir / CONFIG, {"stage": stage, "optimize": dataclasses.asdict(resolved), "fine_tune": tune.to_dict()})
    return _optimize_in(run_dir, stage, resolved, tune, dataset, reporter or NullReporter())


def resume_optimize(run_dir: Path | str, data_dir: Path | str | None = None, reporter: Reporter | None = None) -> Path:
    """Continues an interrupted optimization run from its last completed epoch."""
    run_dir = require_run(run_dir)
    if (run_dir / METRICS_FILE).exists():
        raise EdgeFMError(f"{run_dir} already finished (it has {METRICS_FILE}); start a new run instead.")
    values = read_json(run_dir / CONFIG)
    # A run recorded before QAT folded batch norms did not fold them: resume it as it started.
    config = from_dict(OptimizeConfig, {"fold_batch_norms": False, **values["optimize"]})
    tune = from_dict(TrainConfig, values["fine_tune"])
    dataset = load_run_data(config.parent, tune, data_dir)
    return _optimize_in(run_dir, values["stage"], config, tune, dataset, reporter or NullReporter())


def _optimize_in(run_dir, stage, config, tune, dataset, reporter) -> Path:
    write_manifest(run_dir, stage, parent=config.parent, status="running")
    base = load_float_model(config.parent)
    steps_per_epoch = math.ceil(len(dataset.x_train) / tune.batch_size)
    extra: tuple = ()
    if config.method == "prune":
        total = steps_per_epoch * tune.epochs
        model = prune_low_magnitude(base, config.target_sparsity, int(config.pruning_end * total), config.keep_first_last)
        extra = (tfmot.sparsity.keras.UpdatePruningStep(),)
    else:
        model = quantize_aware(base, preserve_sparsity=stage == "pqat", fold_batch_norms=config.fold_batch_norms)
    compile_model(model, tune, steps_per_epoch)
    fit = fit_model(model, tune, dataset, run_dir, reporter, extra_callbacks=extra)
    if config.method == "prune":
        model = tfmot.sparsity.keras.strip_pruning(model)
    save_model(model, run_dir)
    parent_metrics = read_json(Path(config.parent) / METRICS_FILE)
    scores = score_model(model, dataset)
    key = "test" if "test" in scores else "sample_test"
    metrics: dict[str, Any] = {
        "arch": tune.arch,
        "stage": stage,
        "parent": config.parent,
        **scores,
        "parent_scores": {"val_accuracy": parent_metrics["val"]["accuracy"], f"{key}_accuracy": parent_metrics[key]["accuracy"]},
        "epochs_run": len(fit.history),
        "training_seconds": fit.seconds,
        "sparsity": weight_sparsity(model),
        "params": int(model.count_params()),
    }
    if stage != "prune":
        metrics["macs"] = parent_metrics.get("macs")
    else:
        metrics["macs"] = count_macs(model)
    finish_run(run_dir, stage, metrics, dataset, parent=config.parent)
    return run_dir


def load_float_model(run_dir: Path | str) -> keras.Model:
    """Loads a run's model as a float32 Keras model of its registered architecture.

    The architecture is rebuilt from the run's config and the saved weights copied in, so a
    model trained under mixed precision comes back in float32, as pruning and QAT need.
    """
    saved = load_model(run_dir)
    config = run_train_config(run_dir)
    model = create_model(config.arch, **config.arch_options)
    model.set_weights(saved.get_weights())
    return model


def prune_low_magnitude(model: keras.Model, target_sparsity: float, end_step: int, keep_first_last: bool = True) -> keras.Model:
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
        initial_sparsity=0.0, final_sparsity=target_sparsity, begin_step=0, end_step=max(1, end_step),
        frequency=max(1, min(100, end_step // 10)),
    )

    def wrap(layer):
        if layer.name in targets:
            return tfmot.sparsity.keras.prune_low_magnitude(layer, pruning_schedule=schedule)
        return layer

    return keras.models.clone_model(model, clone_function=wrap)


def quantize_aware(model: keras.Model, preserve_sparsity: bool = False, fold_batch_norms: bool = True) -> keras.Model:
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
            isinstance(layer, keras.layers.BatchNormalization) and not _follows_linear_conv(layer)
        ):
            return quantize.quantize_annotate_layer(layer, default_8bit_quantize_configs.Default8BitOutputQuantizeConfig())
        return quantize.quantize_annotate_layer(layer)

    annotated = keras.models.clone_model(model, clone_function=annotate)
    scheme = tfmot.experimental.combine.Default8BitPrunePreserveQuantizeScheme() if preserve_sparsity else None
    with quantize.quantize_scope():
        return quantize.quantize_apply(annotated, scheme) if scheme else quantize.quantize_apply(annotated)


def fold_batch_norms_into_dense(model: keras.Model, scale_into_producer: bool = False) -> keras.Model:
    """Returns ``model`` with every batch norm that feeds only a Dense (through dropout) folded away.

    Why before QAT: QAT fake-quantizes an unfolded batch norm's output but not its multipliers,
    which are rounded to int8 only at conversion; when they span 1000:1 (mobilenetv2's head) most
    round to zero. Folded first, QAT sees and trains the weights that ship.

    By default both the multipliers and the shift go forward into the next Dense, scaling its input
    rows. With ``scale_into_producer``, where the batch norm follows a Dense with a ReLU (or no
    activation) and every multiplier is positive, the multipliers go back into that Dense's output
    columns instead (ReLU(a*z) = a*ReLU(z) for a > 0) and only the shift goes forward. That suits
    post-training int8, which gives each output column of a Dense its own scale: the converter's
    own forward fold left the papers' CNN head at 46% as int8. QAT keeps the forward fold: tfmot
    gives a Dense's weights one scale in all, so the columns' spread costs it as much (measured on
    cnn-3conv-bn: validation 92.04% with the multipliers in the columns, 92.36% in the rows).

    Exact at inference (dropout is then the identity); ``model`` itself is left unchanged, and a
    model with nothing to fold is returned as is.
    """
    config = model.get_config()
    by_name = {layer["name"]: layer for layer in config["layers"]}
    consumers: dict[str, list[str]] = {}
    for layer in config["layers"]:
        for source in _inbound_names(layer):
            consumers.setdefault(source, []).append(layer["name"])
    outputs = {entry[0] for entry in config["output_layers"]}
    folds = {}
    for layer in model.layers:
        dense = _dense_fed_by(layer, consumers, by_name, outputs)
        if dense is not None:
            folds[layer.name] = dense
    if not folds:
        return model

    column_scales, row_folds = {}, {}
    for bn_name, dense in folds.items():
        scale, shift = _batch_norm_affine(model.get_layer(bn_name))
        producer = _inbound_names(by_name[bn_name])[0]
        if scale_into_producer and np.all(scale > 0) and _passes_positive_scale(by_name[producer], consumers, outputs):
            column_scales[producer], scale = scale, None
        row_folds[dense] = (scale, shift)
    folded = keras.Model.from_config(_without_layers(config, folds, by_name, consumers))
    for layer in folded.layers:
        weights = model.get_layer(layer.name).get_weights()
        if layer.name in column_scales:
            weights = [w * column_scales[layer.name] for w in weights]  # kernel columns and bias
        if layer.name in row_folds:
            # Dense(a*x + c) = x @ (a[:, None] * W) + (c @ W + b)
            (scale, shift), (kernel, bias) = row_folds[layer.name], weights
            weights = [kernel if scale is None else scale[:, None] * kernel, shift @ kernel + bias]
        layer.set_weights(weights)
    return folded


def _without_layers(config: dict, removed, by_name, consumers) -> dict:
    # The functional config with each removed (single-input) layer's consumers fed by its input.
    for name in removed:
        source = _inbound_names(by_name[name])[0]
        for consumer in consumers[name]:
            for node in by_name[consumer]["inbound_nodes"]:
                for entry in node:
                    if entry[0] == name:
                        entry[0] = source
    config["layers"] = [layer for layer in config["layers"] if layer["name"] not in removed]
    return config


def _inbound_names(layer_config: dict) -> list[str]:
    return [entry[0] for node in layer_config["inbound_nodes"] for entry in node]


def _dense_fed_by(layer, consumers, by_name, outputs) -> str | None:
    # The Dense that alone consumes this batch norm's output, possibly through dropout, or None.
    if not isinstance(layer, keras.layers.BatchNormalization):
        return None
    if list(np.atleast_1d(layer.axis)) not in ([-1], [len(layer.input_shape) - 1]):
        return None
    name = layer.name
    while True:
        following = consumers.get(name, [])
        if len(following) != 1 or name in outputs:  # an output would change with the fold
            return None
        name = following[0]
        kind = by_name[name]["class_name"]
        if kind == "Dense":
            # Without a bias the batch norm's shift has nowhere to go.
            return name if by_name[name]["config"]["use_bias"] else None
        if kind != "Dropout":
            return None


def _batch_norm_affine(bn):
    # Inference-time batch norm as a*x + c, with a = gamma / sqrt(var + eps).
    values = dict(zip((w.name.split("/")[-1].split(":")[0] for w in bn.weights), bn.get_weights()))
    scale = values.get("gamma", 1.0) / np.sqrt(values["moving_variance"] + bn.epsilon)
    return scale, values.get("beta", 0.0) - values["moving_mean"] * scale


def _passes_positive_scale(producer: dict, consumers, outputs) -> bool:
    # A Dense read only by the batch norm, whose activation lets a positive per-unit scale through.
    name = producer["name"]
    return (producer["class_name"] == "Dense" and len(consumers.get(name, [])) == 1 and name not in outputs
            and producer["config"].get("activation") in ("relu", "linear"))


def _follows_linear_conv(layer) -> bool:
    # tfmot folds BN into the convolution before it only when nothing sits between them.
    previous = layer._inbound_nodes[0].inbound_layers  # noqa: SLF001 - Keras exposes no public graph API
    previous = previous[0] if isinstance(previous, list) else previous
    conv = isinstance(previous, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D))
    return conv and getattr(previous.activation, "__name__", "") == "linear"


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

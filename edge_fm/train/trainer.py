"""The training stage: fits a model with early stopping and per-epoch checkpoints (a run resumes
where it stopped) and writes a run directory that records everything.

The input pipeline and its augmentations live in :mod:`edge_fm.train.augment`, the learning-rate
schedules in :mod:`edge_fm.train.schedules`, scoring in :mod:`edge_fm.train.evaluate`; runs are read back
through :class:`edge_fm.train.runs.Run`.

Example:
    >>> from edge_fm import TrainConfig, train_model
    >>> run_dir = train_model(TrainConfig(arch="cnn-2conv", data="sample", epochs=2))  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import math
import shutil
import time
from pathlib import Path
from typing import Any

from edge_fm.compat import GPUS, keras, tf
from edge_fm.data.datasets import Dataset
from edge_fm.errors import EdgeFMError
from edge_fm.io import atomic_path, deliberate_hdf5, read_json, write_json
from edge_fm.train.augment import make_pipeline
from edge_fm.train.balance import CHOICES, class_weights, weights_record
from edge_fm.train.callbacks import (
    BestWeights,
    FreezeLayers,
    HistoryWriter,
    NullReporter,
    Reporter,
    ReporterCallback,
)
from edge_fm.train.config import DATA_SOURCES, TrainConfig, from_dict
from edge_fm.train.device import describe_devices
from edge_fm.train.distribute import (
    ONE_DEVICE,
    Placement,
    check_global_batch,
    distribute_pipeline,
    resolve_placement,
    writable_run_dir,
)
from edge_fm.train.evaluate import score_model
from edge_fm.train.memory import check_fits
from edge_fm.train.runs import (
    CONFIG,
    HISTORY_FILE,
    METRICS_FILE,
    MODEL_FILE,
    Run,
    data_record,
    dataset_for,
    fit_to_data,
    new_run_dir,
    write_manifest,
)
from edge_fm.train.schedules import build_optimizer
from edge_fm.train.transfer import Transfer, adopt_source, initialise
from edge_fm.zoo import check_options, count_macs, create_model
from edge_fm.zoo.backbones import weights_to_follow

BEST_WEIGHTS = "best.weights.h5"
CHECKPOINT_DIR = "checkpoint"
BN_RESIDUE = 0.01  # the most a batch norm's starting statistics may weigh at the end of a run


def add_l2_penalty(model: keras.Model, l2: float) -> None:
    """Adds ``l2 * sum(kernel**2)`` over every kernel of the model (nested ones too) to its loss."""
    kernels = [w for w in model.trainable_weights if "kernel" in w.name]
    if l2 and kernels:
        model.add_loss(lambda: l2 * tf.add_n([tf.reduce_sum(tf.square(k)) for k in kernels]))


def check_teacher(config: TrainConfig) -> None:
    """Checks that ``config.teacher``, if any, is a finished run trained on the student's split.

    Raises:
        EdgeFMError: Not a finished run, or a run whose split differs: a teacher that trained on the
            student's validation images would make every choice made on them optimistic.
    """
    if not config.teacher:
        return
    taught = Run(config.teacher).require_model().train_config
    ours = (config.data, config.resolved_val_size, config.seed)
    theirs = (taught.data, taught.resolved_val_size, taught.seed)
    if ours != theirs:
        raise EdgeFMError(
            f"teacher {config.teacher} used a different split (data, val_size, seed = {theirs}; "
            f"the student's: {ours}); train the student with the teacher's split or pick another teacher."
        )


def load_teacher(config: TrainConfig) -> keras.Model | None:
    """The frozen model of ``config.teacher`` (checked by :func:`check_teacher`), or None."""
    check_teacher(config)
    if not config.teacher:
        return None
    teacher = Run(config.teacher).model()
    teacher.trainable = False
    return teacher


# ---------------------------------------------------------------- the stage


def train(
    config: TrainConfig,
    data_dir: Path | str | None = None,
    runs_dir: Path | str = "runs",
    reporter: Reporter | None = None,
) -> Path:
    """Trains ``config.arch`` and returns the new run directory.

    The run directory ``runs_dir/<arch>-train-N`` receives ``config.json`` before any work, a
    checkpoint every epoch, and at the end ``model.h5``, ``history.json``, ``metrics.json``
    and ``manifest.json``.

    Args:
        config: The resolved training configuration.
        data_dir: Where the full dataset is (ignored for ``config.data == "sample"``).
        runs_dir: Parent of the run directories.
        reporter: Receives progress (see :class:`Reporter`).

    Under a multi-worker strategy (``config.distribute``) only the chief (the first worker) writes
    the run directory; every other worker trains in a temporary directory that is removed.

    Returns:
        The run directory; None on a worker that is not the chief.

    Raises:
        EdgeFMError: Bad configuration or data.
    """
    check_options(config.arch, config.arch_options)  # fail before the data is read
    check_teacher(config)
    # Before TensorFlow runs anything: a multi-worker strategy can only be set up first.
    placement = resolve_placement(config.distribute)
    check_global_batch(config.batch_size, placement)
    config = adopt_source(config)
    if config.class_weight not in CHOICES:  # a weights file, found again wherever the run is resumed
        config = dataclasses.replace(config, class_weight=str(Path(config.class_weight).absolute()))
    dataset = dataset_for(config, data_dir)
    config = fit_to_data(config, dataset)
    if dataset.identity is not None and dataset.identity.kind != "fashion-mnist":
        # The absolute path (or a tfds: name): a later stage run from another folder reads the same data.
        config = dataclasses.replace(config, data=dataset.identity.source)
    # Checked and built before the run directory exists, so that a bad option value leaves no half-made run.
    class_weights(config.class_weight, dataset.y_train, dataset.class_names)
    model, transfer = prepare_model(config, dataset, placement)
    if not GPUS:  # on a GPU the activations live in its memory, which TensorFlow's own error guards
        # This machine holds its workers' share of the global batch.
        batch = max(1, min(config.batch_size, len(dataset.x_train)) // placement.workers)
        check_fits(model, batch, dataset.image_shape, config.arch, placement.workers)
    run_dir = None
    if placement.is_chief:
        run_dir = new_run_dir(runs_dir, f"{config.arch}-train")
        write_json(run_dir / CONFIG, config.to_dict())
        write_manifest(run_dir, "train", data=data_record(dataset), status="running")
    return _fit_and_record(run_dir, config, dataset, reporter or NullReporter(), placement, (model, transfer))


def resume(
    run_dir: Path | str,
    data_dir: Path | str | None = None,
    reporter: Reporter | None = None,
    distribute: str | None = None,
    data: Path | str | None = None,
) -> Path | None:
    """Continues an interrupted training run from its last completed epoch.

    The run goes on under the strategy it was started with; under ``multi-worker`` every worker
    is given the same ``run_dir`` (a shared folder, or a copy at the same path) and resumes from
    the chief's checkpoint.

    Args:
        run_dir: The run directory of the interrupted run.
        data_dir: Where the full dataset is; defaults to where the run read it.
        reporter: Receives progress.
        distribute: The strategy asked for on the command line, checked against the run's (None: the run's).
        data: Where the run's own data is now, when it has moved (see :meth:`Run.dataset`).

    Returns:
        The same run directory, now complete; None on a worker that is not the chief.

    Raises:
        EdgeFMError: Not a run directory, a run that already finished, or another strategy than the run's.
    """
    run = Run(run_dir)
    if run.finished:
        raise EdgeFMError(f"{run.path} already finished (it has {METRICS_FILE}); start a new run instead.")
    if run.stage != "train":
        raise EdgeFMError(
            f"{run.path} is a {run.stage} run; continue it with `edge-fm optimize --resume {run.path}`."
        )
    config = run.train_config
    if distribute is not None and distribute != config.distribute:
        raise EdgeFMError(
            f"{run.path} was started with --distribute {config.distribute} and resumes with it; "
            f"drop --distribute {distribute}."
        )
    placement = resolve_placement(config.distribute)
    check_global_batch(config.batch_size, placement)
    return _fit_and_record(
        run.path,
        config,
        run.dataset(data_dir, data=run.continued_on(data)),
        reporter or NullReporter(),
        placement,
    )


def epoch_steps(config: TrainConfig, dataset: Dataset) -> int:
    """Batches in one epoch of ``dataset``'s training split."""
    return math.ceil(len(dataset.x_train) / config.batch_size)


def prepare_model(
    config: TrainConfig, dataset: Dataset, placement: Placement = ONE_DEVICE
) -> tuple[keras.Model, Transfer]:
    """The compiled model a training run starts from, with its starting weights (``--init-from``) copied in."""
    with placement.scope():
        model = build_compiled_model(config, epoch_steps(config, dataset))
        return model, initialise(model, config, dataset)


def build_compiled_model(config: TrainConfig, steps_per_epoch: int) -> keras.Model:
    """Builds ``config.arch`` (mixed precision on a GPU) and compiles it (see :func:`compile_model`).

    Call it inside a strategy's scope to train the model distributed.
    """
    keras.utils.set_random_seed(config.seed)
    model = build_model(config)
    if _starts_from_scratch(config):
        settle_batch_norms(model, steps_per_epoch * config.epochs)
    return compile_model(model, config, steps_per_epoch)


def _starts_from_scratch(config: TrainConfig) -> bool:
    """Whether a run's batch norms start at mean 0, variance 1 with the builder's momentum: no weights
    copied in (``--init-from``, pretrained weights) and no momentum the user chose."""
    options = config.arch_options
    pretrained = config.init_from is not None or options.get("weights") not in (None, "none")
    return not pretrained and "bn_momentum" not in options


def settle_batch_norms(model: keras.Model, steps: int, residue: float = BN_RESIDUE) -> None:
    """Lowers the batch norms' momentum where a run is too short for their running statistics to settle.

    A running statistic starts at mean 0, variance 1 and keeps ``momentum ** steps`` of that start
    after ``steps`` updates: at Keras' 0.99, 70% of it after 35 steps (a few hundred images for 5
    epochs), and the model then predicts at chance in inference while training well. The momentum is
    set so that the start weighs at most ``residue`` at the end; it is never raised, so runs of 459
    steps or more keep theirs.
    """
    settled = residue ** (1.0 / max(steps, 1))
    for layer in model.submodules:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = min(layer.momentum, settled)


def build_model(config: TrainConfig) -> keras.Model:
    """Builds ``config.arch``, uncompiled, under mixed precision when the config (or a GPU) asks for it."""
    keras.mixed_precision.set_global_policy(precision_policy(config))
    try:
        return create_model(config.arch, **config.arch_options)
    finally:
        keras.mixed_precision.set_global_policy("float32")


def precision_policy(config: TrainConfig) -> str:
    """The Keras dtype policy a run trains under: mixed (``mixed_float16`` or ``mixed_bfloat16``, by
    ``mixed_dtype``) on a GPU or when set, else ``float32``."""
    mixed = bool(GPUS) if config.mixed_precision is None else config.mixed_precision
    return f"mixed_{config.mixed_dtype}" if mixed else "float32"


def one_device_copy(model: keras.Model, config: TrainConfig) -> keras.Model:
    """A new, undistributed model of ``config.arch`` holding ``model``'s weights.

    Scoring and saving a plain copy keep the run's files and figures independent of the strategy
    that trained it. Under a multi-worker strategy every worker must call this together: reading
    the batch-norm statistics averages them across the workers.
    """
    with weights_to_follow():  # the trained weights replace any pretrained ones: none are fetched
        copy = build_model(config)
    copy.set_weights(model.get_weights())
    return copy


def compile_model(model: keras.Model, config: TrainConfig, steps_per_epoch: int) -> keras.Model:
    """Compiles ``model`` in place with the configured optimizer, schedule, loss and L2; returns it."""
    add_l2_penalty(model, config.l2)
    model.compile(
        optimizer=build_optimizer(config, steps_per_epoch),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=config.label_smoothing),
        metrics=["accuracy"],
    )
    return model


@dataclasses.dataclass(frozen=True)
class FitResult:
    """What :func:`fit_model` did: per-epoch history, the best epoch and the time spent."""

    history: list[dict]
    best_epoch: int | None
    restored_best: bool
    seconds: float
    class_weights: dict[str, float] | None = None


def fit_model(
    model: keras.Model,
    config: TrainConfig,
    dataset: Dataset,
    run_dir: Path,
    reporter: Reporter,
    extra_callbacks: tuple = (),
    placement: Placement = ONE_DEVICE,
) -> FitResult:
    """Fits a compiled model with the stage's machinery; every stage that trains goes through here.

    Writes ``history.json`` every epoch, keeps the best weights on ``config.monitor``, stops
    early after ``config.early_stopping`` flat epochs and restores the best weights then, and
    checkpoints every epoch so that a later call on the same ``run_dir`` resumes. Under a
    strategy (``placement``, the model built in its scope) the pipelines are split among its replicas.
    """
    steps_per_epoch = epoch_steps(config, dataset)
    history_path = run_dir / HISTORY_FILE
    history = read_json(history_path) if history_path.exists() else []
    best = BestWeights(run_dir / BEST_WEIGHTS, config.monitor, config.early_stopping, history)
    writer = HistoryWriter(history_path, history, placement)
    callbacks = [
        *extra_callbacks,
        writer,
        best,
        ReporterCallback(reporter),
        # Last, so history.json is never behind the checkpoint: a resume may redo an epoch, never skip one.
        keras.callbacks.BackupAndRestore(str(run_dir / CHECKPOINT_DIR), delete_checkpoint=False),
    ]
    teacher = load_teacher(config)
    weights = class_weights(config.class_weight, dataset.y_train, dataset.class_names)
    done = len(history)
    if done:
        # Seeded draws restart in a new process: a resume would replay the run's first epochs, the
        # same order and the same augmented images, instead of showing the network new ones.
        keras.utils.set_random_seed(config.seed + done)
    reporter.start(run_dir, config, dataset.describe(), steps_per_epoch, done)
    started = time.perf_counter()
    training = make_pipeline(
        dataset.x_train,
        dataset.y_train,
        config,
        training=True,
        teacher=teacher,
        first_epoch=done,
        num_classes=dataset.num_classes,
        class_weights=weights,
    )
    model.fit(
        distribute_pipeline(training, placement),
        validation_data=distribute_pipeline(
            make_pipeline(
                dataset.x_val, dataset.y_val, config, training=False, num_classes=dataset.num_classes
            ),
            placement,
        ),
        epochs=config.epochs,
        verbose=0,
        callbacks=callbacks,
    )
    reporter.message(f"training ended after {time.perf_counter() - started:.1f} s, its start-up included")
    restored = bool(config.early_stopping and best.best_epoch and (run_dir / BEST_WEIGHTS).exists())
    if restored:
        model.load_weights(str(run_dir / BEST_WEIGHTS))
        reporter.message(f"restored the weights of epoch {best.best_epoch} (best {config.monitor})")
    # Summed per epoch, so a resumed run counts the epochs of its earlier process too.
    seconds = sum(entry["seconds"] for entry in writer.history)
    return FitResult(
        writer.history,
        best.best_epoch or None,
        restored,
        round(seconds, 2),
        weights_record(weights, dataset.class_names),
    )


def finish_run(run_dir: Path, stage: str, metrics: dict, dataset: Dataset, parent: str | None = None) -> None:
    """Writes ``metrics.json``, drops the resume checkpoint and writes the final manifest."""
    write_json(run_dir / METRICS_FILE, metrics)
    # The model and metrics are safely written: the resume checkpoint has served its purpose.
    shutil.rmtree(run_dir / CHECKPOINT_DIR, ignore_errors=True)
    write_manifest(run_dir, stage, parent=parent, data=data_record(dataset), status="complete")


def save_model(model: keras.Model, run_dir: Path) -> None:
    """Saves ``model`` as the run's model file (HDF5, without optimizer state), atomically."""
    with atomic_path(run_dir / MODEL_FILE) as tmp, deliberate_hdf5():
        model.save(str(tmp), include_optimizer=False)


def _fit_and_record(
    run_dir: Path | None,
    config: TrainConfig,
    dataset: Dataset,
    reporter: Reporter,
    placement: Placement = ONE_DEVICE,
    prepared: tuple[keras.Model, Transfer] | None = None,
) -> Path | None:
    """Fits the prepared model (built from ``config`` when not given, as on resume) and writes the run's results.

    Only the chief writes ``run_dir``; another worker trains in a temporary copy and returns None.
    """
    with writable_run_dir(run_dir, placement) as out:
        if not placement.is_chief:
            reporter.message(
                "not the chief: this worker trains in a temporary copy of the run, removed at the end"
            )
        model, transfer = prepared or prepare_model(config, dataset, placement)
        freeze = (FreezeLayers(transfer.layers, config.freeze_epochs),) if config.freeze_epochs else ()
        fit = fit_model(model, config, dataset, out, reporter, extra_callbacks=freeze, placement=placement)
        if placement.distributed:
            model = one_device_copy(model, config)
    if not placement.is_chief:
        return None
    save_model(model, run_dir)
    metrics = {
        "arch": config.arch,
        "preset": config.preset,
        **score_model(model, dataset),
        "epochs_run": len(fit.history),
        "best_epoch": fit.best_epoch,
        "restored_best": fit.restored_best,
        "training_seconds": fit.seconds,
        "params": int(model.count_params()),
        "macs": count_macs(model),
        "tensorflow": tf.__version__,
        "device": describe_devices(fit.history),
        "mixed_precision": any(layer.dtype_policy.name.startswith("mixed_") for layer in model.layers),
        "precision_policy": precision_policy(config),
        # Float32 even under mixed precision (the softmax is kept in float32): what an app receives.
        "output_dtype": model.outputs[0].dtype.name,
        "distribute": placement.record(config.batch_size),
        "class_weights": fit.class_weights,
        "init": transfer.record(),
    }
    finish_run(run_dir, "train", metrics, dataset)
    return run_dir


def config_for(arch: str, preset_name: str = "quick", **overrides: Any) -> TrainConfig:
    """Builds a :class:`TrainConfig` from an architecture's preset plus overrides.

    ``arch_options`` given in ``overrides`` are merged into the preset's, not substituted; with a
    dataset path as ``data`` the preset's ``input_size`` is left out.

    Example:
        >>> config_for("cnn-2conv", "quick", data="sample").epochs  # doctest: +SKIP
        3
    """
    from edge_fm.train.presets import preset

    values = preset(arch, preset_name)
    preset_options = values.pop("arch_options", {})
    if overrides.get("data", "full") not in DATA_SOURCES:
        # A preset's input size adapts Fashion-MNIST's 28x28 to a backbone; other data runs at its
        # own size (--image-size), unless the user sets input_size (see fit_to_data).
        preset_options = {k: v for k, v in preset_options.items() if k != "input_size"}
    options = {**preset_options, **overrides.pop("arch_options", {})}
    return from_dict(TrainConfig, {"arch": arch, **values, **overrides, "arch_options": options})


__all__ = [
    "NullReporter",
    "Reporter",
    "build_compiled_model",
    "build_model",
    "prepare_model",
    "compile_model",
    "config_for",
    "fit_model",
    "resume",
    "train",
]

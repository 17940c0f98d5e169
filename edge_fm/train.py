"""The training stage: a tf.data pipeline with the papers' augmentations, schedules, early
stopping, per-epoch checkpoints with resume, and a run directory that records everything.

Example:
    >>> from edge_fm import TrainConfig, train
    >>> run_dir = train(TrainConfig(arch="cnn-2conv", data="sample", epochs=2))  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import os
import shutil
import time
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from edge_fm import data as data_lib
from edge_fm.compat import GPUS, keras, tf
from edge_fm.config import TrainConfig, from_dict, load_config
from edge_fm.errors import EdgeFMError
from edge_fm.io import atomic_path, read_json, write_json
from edge_fm.report import classification_metrics
from edge_fm.runner import cpu_model  # the runner's copy: it also reads a Raspberry Pi's Model line
from edge_fm.runs import CONFIG, new_run_dir, require_run, write_manifest
from edge_fm.zoo import check_options, count_macs, create_model

# HDF5, not .keras: tf_keras cannot read back the QAT wrappers of tfmot from .keras files.
MODEL_FILE = "model.h5"
HISTORY_FILE = "history.json"
METRICS_FILE = "metrics.json"
BEST_WEIGHTS = "best.weights.h5"
CHECKPOINT_DIR = "checkpoint"
AUTOTUNE = tf.data.AUTOTUNE


class Reporter(Protocol):
    """Receives progress; the CLI renders it, the library never prints."""

    def start(self, run_dir: Path, config: TrainConfig, data: str, steps_per_epoch: int, initial_epoch: int) -> None:
        """Training is about to start (``initial_epoch`` > 0 when resuming)."""

    def step(self, step: int, logs: dict[str, float]) -> None:
        """A batch finished (``step`` counts from 1 within the epoch)."""

    def epoch(self, epoch: int, logs: dict[str, float]) -> None:
        """An epoch finished (``epoch`` counts from 1)."""

    def message(self, text: str) -> None:
        """Something worth telling the user."""


class NullReporter:
    """A reporter that ignores everything."""

    def start(self, *args: Any) -> None:
        pass

    def step(self, *args: Any) -> None:
        pass

    def epoch(self, *args: Any) -> None:
        pass

    def message(self, *args: Any) -> None:
        pass


# ---------------------------------------------------------------- schedules and optimizers


class TriangularCyclical(keras.optimizers.schedules.LearningRateSchedule):
    """Smith's triangular cyclical learning rate: linear up from ``base`` to ``peak`` and back."""

    def __init__(self, base: float, peak: float, half_cycle_steps: float):
        self.base, self.peak, self.half_cycle_steps = float(base), float(peak), float(half_cycle_steps)

    def __call__(self, step):
        position = tf.cast(step, tf.float32) / self.half_cycle_steps
        cycle = tf.floor(1.0 + position / 2.0)
        distance = tf.abs(position - 2.0 * cycle + 1.0)
        return self.base + (self.peak - self.base) * tf.maximum(0.0, 1.0 - distance)

    def get_config(self) -> dict[str, float]:
        return {"base": self.base, "peak": self.peak, "half_cycle_steps": self.half_cycle_steps}


def build_schedule(cfg: TrainConfig, steps_per_epoch: int):
    """Returns the learning rate (a float or a Keras schedule) that ``cfg.schedule`` names."""
    peak = cfg.learning_rate
    total = max(1, cfg.epochs * steps_per_epoch)
    floor_fraction = min(1.0, cfg.min_learning_rate / peak)
    schedules = keras.optimizers.schedules
    if cfg.schedule == "exponential":
        return schedules.ExponentialDecay(peak, decay_steps=steps_per_epoch, decay_rate=cfg.decay_rate)
    if cfg.schedule == "cyclical":
        return TriangularCyclical(cfg.min_learning_rate, peak, cfg.cycle_epochs * steps_per_epoch / 2)
    if cfg.schedule == "cosine":
        warmup = int(cfg.warmup_epochs * steps_per_epoch)
        return schedules.CosineDecay(
            cfg.min_learning_rate if warmup else peak,
            decay_steps=max(1, total - warmup),
            alpha=floor_fraction,
            warmup_target=peak if warmup else None,
            warmup_steps=warmup,
        )
    if cfg.schedule == "onecycle":
        # One cycle (Smith): warm up from peak/25 over the first 30% (or warmup_epochs), then
        # cosine-anneal to the floor.
        warmup = int(cfg.warmup_epochs * steps_per_epoch) or int(0.3 * total)
        return schedules.CosineDecay(
            peak / 25, decay_steps=max(1, total - warmup), alpha=floor_fraction, warmup_target=peak, warmup_steps=warmup
        )
    return peak


def build_optimizer(cfg: TrainConfig, steps_per_epoch: int) -> keras.optimizers.Optimizer:
    """Returns the optimizer of ``cfg`` with its schedule; biases and BN parameters are not decayed."""
    rate = build_schedule(cfg, steps_per_epoch)
    decay = cfg.weight_decay or None
    if cfg.optimizer == "adamw":
        optimizer = keras.optimizers.AdamW(rate, weight_decay=cfg.weight_decay)
    elif cfg.optimizer == "sgd":
        optimizer = keras.optimizers.SGD(rate, momentum=cfg.momentum, nesterov=True, weight_decay=decay)
    else:
        optimizer = keras.optimizers.Adam(rate, weight_decay=decay)
    if cfg.weight_decay:
        optimizer.exclude_from_weight_decay(var_names=["bias", "gamma", "beta"])
    return optimizer


def current_learning_rate(optimizer) -> float:
    """The learning rate the optimizer applies at its current step."""
    optimizer = getattr(optimizer, "inner_optimizer", optimizer)  # mixed precision wraps it
    rate = optimizer._learning_rate  # noqa: SLF001 - the public property hides the schedule
    if isinstance(rate, keras.optimizers.schedules.LearningRateSchedule):
        rate = rate(optimizer.iterations)
    return float(keras.backend.get_value(rate))


def add_l2_penalty(model: keras.Model, l2: float) -> None:
    """Adds ``l2 * sum(kernel**2)`` over every kernel of the model (nested ones too) to its loss."""
    kernels = [w for w in model.trainable_weights if "kernel" in w.name]
    if l2 and kernels:
        model.add_loss(lambda: l2 * tf.add_n([tf.reduce_sum(tf.square(k)) for k in kernels]))


# ---------------------------------------------------------------- input pipeline and augmentation


def make_pipeline(images: np.ndarray, labels: np.ndarray, cfg: TrainConfig, training: bool,
                  teacher: keras.Model | None = None, first_epoch: int = 0) -> tf.data.Dataset:
    """Batches raw uint8 images into float32 0-255 tensors with one-hot labels.

    Training pipelines shuffle every epoch and augment whole batches in parallel; the model
    itself scales the pixels, so evaluation sees exactly what a deployed model sees. With a
    ``teacher``, training targets mix in its softened predictions (see :func:`distilled_targets`).
    ``first_epoch``, the epochs a resumed run has already done, moves the shuffle's seed on.
    """
    dataset = tf.data.Dataset.from_tensor_slices((images, labels))
    if training:
        dataset = dataset.shuffle(len(images), seed=cfg.seed + first_epoch, reshuffle_each_iteration=True)
    dataset = dataset.batch(cfg.batch_size).map(_to_float_one_hot, num_parallel_calls=AUTOTUNE)
    if training and cfg.augment:
        dataset = dataset.map(lambda x, y: (augment_batch(x, cfg), y), num_parallel_calls=AUTOTUNE)
    if training and teacher is not None:
        # After augmentation: the teacher labels the very image the student sees.
        dataset = dataset.map(lambda x, y: (x, distilled_targets(teacher, x, y, cfg)))
    return dataset.prefetch(AUTOTUNE)


def distilled_targets(teacher: keras.Model, images: tf.Tensor, one_hot: tf.Tensor, cfg: TrainConfig) -> tf.Tensor:
    """``(1 - w) * one_hot + w * softmax(log(p_teacher) / T)``: knowledge distillation through the targets.

    The student keeps its plain cross-entropy, so every architecture, QAT and pruning train the same
    way; a temperature above 1 passes on more of the teacher's view of which classes look alike.
    """
    probabilities = tf.cast(teacher(images, training=False), tf.float32)
    softened = tf.nn.softmax(tf.math.log(tf.maximum(probabilities, 1e-7)) / cfg.distill_temperature)
    return (1.0 - cfg.distill_weight) * one_hot + cfg.distill_weight * softened


def check_teacher(config: TrainConfig) -> None:
    """Checks that ``config.teacher``, if any, is a finished run trained on the student's split.

    Raises:
        EdgeFMError: Not a finished run, or a run whose split differs: a teacher that trained on the
            student's validation images would make every choice made on them optimistic.
    """
    if not config.teacher:
        return
    taught = run_train_config(require_finished_run(config.teacher))
    ours = (config.data, config.resolved_val_size, config.seed)
    theirs = (taught.data, taught.resolved_val_size, taught.seed)
    if ours != theirs:
        raise EdgeFMError(f"teacher {config.teacher} used a different split (data, val_size, seed = {theirs}; "
                          f"the student's: {ours}); train the student with the teacher's split or pick another teacher.")


def load_teacher(config: TrainConfig) -> keras.Model | None:
    """The frozen model of ``config.teacher`` (checked by :func:`check_teacher`), or None."""
    check_teacher(config)
    if not config.teacher:
        return None
    teacher = load_model(config.teacher)
    teacher.trainable = False
    return teacher


def _to_float_one_hot(images, labels):
    return tf.cast(images, tf.float32), tf.one_hot(tf.cast(labels, tf.int32), data_lib.NUM_CLASSES)


def augment_batch(images: tf.Tensor, cfg: TrainConfig) -> tf.Tensor:
    """Applies the augmentations named in ``cfg.augment`` to a float batch, each image drawn anew.

    Args:
        images: ``(N, H, W, C)`` float32 pixels, 0-255.
        cfg: Which augmentations, and their strengths.
    """
    if "flip" in cfg.augment:
        images = tf.image.random_flip_left_right(images)
    if "affine" in cfg.augment or "crop" in cfg.augment:
        images = _random_affine(images, cfg)
    if "erasing" in cfg.augment:
        images = _random_erasing(images, cfg.erasing_prob)
    return images


def _random_affine(images: tf.Tensor, cfg: TrainConfig) -> tf.Tensor:
    # One projective warp per image composes rotation, shear, zoom, shift and the integer shift
    # that a random crop of a zero-padded image amounts to (the background is 0).
    n = tf.shape(images)[0]
    side = tf.cast(tf.shape(images)[1], tf.float32)
    zeros = tf.zeros([n])

    def uniform(limit):
        return tf.random.uniform([n], -limit, limit)

    affine = "affine" in cfg.augment
    angle = uniform(math.radians(cfg.rotation)) if affine else zeros
    shear = uniform(math.radians(cfg.shear)) if affine else zeros
    zoom = 1.0 + uniform(cfg.zoom) if affine else zeros + 1.0
    shift_x = uniform(cfg.shift * side) if affine else zeros
    shift_y = uniform(cfg.shift * side) if affine else zeros
    if "crop" in cfg.augment and cfg.crop_padding:
        pad = cfg.crop_padding
        shift_x += tf.cast(tf.random.uniform([n], -pad, pad + 1, dtype=tf.int32), tf.float32)
        shift_y += tf.cast(tf.random.uniform([n], -pad, pad + 1, dtype=tf.int32), tf.float32)
    # The op maps each output pixel to an input location: in = A (out - c) + c + shift.
    cos, sin, tan = tf.cos(angle), tf.sin(angle), tf.tan(shear)
    a00, a01 = cos / zoom, (cos * tan - sin) / zoom
    a10, a11 = sin / zoom, (sin * tan + cos) / zoom
    center = (side - 1.0) / 2.0
    a02 = center - a00 * center - a01 * center + shift_x
    a12 = center - a10 * center - a11 * center + shift_y
    transforms = tf.stack([a00, a01, a02, a10, a11, a12, zeros, zeros], axis=1)
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=images,
        transforms=transforms,
        output_shape=tf.shape(images)[1:3],
        fill_value=0.0,
        interpolation="BILINEAR",
        fill_mode="CONSTANT",
    )


def _random_erasing(images: tf.Tensor, probability: float) -> tf.Tensor:
    # Random erasing (Zhong et al. 2017): a rectangle of 2-25% of the area, aspect 0.3-3.3,
    # filled with noise, in a random place of a random subset of the images.
    shape = tf.shape(images)
    n, height, width = shape[0], shape[1], shape[2]
    h, w = tf.cast(height, tf.float32), tf.cast(width, tf.float32)
    area = tf.random.uniform([n], 0.02, 0.25) * h * w
    aspect = tf.exp(tf.random.uniform([n], math.log(0.3), math.log(3.3)))
    box_h = tf.clip_by_value(tf.round(tf.sqrt(area * aspect)), 1.0, h)
    box_w = tf.clip_by_value(tf.round(tf.sqrt(area / aspect)), 1.0, w)
    top = tf.floor(tf.random.uniform([n]) * (h - box_h + 1.0))
    left = tf.floor(tf.random.uniform([n]) * (w - box_w + 1.0))
    rows = tf.range(h)[None, :]
    cols = tf.range(w)[None, :]
    in_rows = (rows >= top[:, None]) & (rows < (top + box_h)[:, None])
    in_cols = (cols >= left[:, None]) & (cols < (left + box_w)[:, None])
    chosen = tf.random.uniform([n]) < probability
    mask = in_rows[:, :, None] & in_cols[:, None, :] & chosen[:, None, None]
    noise = tf.random.uniform(shape, 0.0, 255.0)
    return tf.where(mask[..., None], noise, images)


# ---------------------------------------------------------------- callbacks


class _HistoryWriter(keras.callbacks.Callback):
    """Writes ``history.json`` after every epoch, replacing epochs that a resume runs again."""

    def __init__(self, path: Path, previous: list[dict]):
        super().__init__()
        self.path, self.history = path, previous
        self.device = describe_device()
        self._started = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self._started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        entry = {"epoch": epoch + 1, **{k: float(v) for k, v in (logs or {}).items()}}
        entry["learning_rate"] = current_learning_rate(self.model.optimizer)
        entry["seconds"] = round(time.perf_counter() - self._started, 3)
        entry["device"] = self.device  # a resumed part may run with another thread count
        self.history = [h for h in self.history if h["epoch"] <= epoch] + [entry]
        write_json(self.path, self.history)


class _BestWeights(keras.callbacks.Callback):
    """Keeps the best weights on the monitored metric and stops after ``patience`` flat epochs.

    Unlike Keras' EarlyStopping its state comes from ``history.json``, so a resumed run keeps
    counting patience where the interrupted one left off.
    """

    def __init__(self, path: Path, monitor: str, patience: int, history: list[dict]):
        super().__init__()
        self.path, self.monitor, self.patience = path, monitor, patience
        self.sign = 1.0 if monitor.endswith("loss") else -1.0  # minimise loss, maximise accuracy
        self.best, self.best_epoch, self.wait = math.inf, 0, 0
        for entry in history:
            self._update(entry["epoch"], entry.get(monitor))

    def _update(self, epoch: int, value: float | None) -> bool:
        if value is None:
            return False
        if self.sign * value < self.best:
            self.best, self.best_epoch, self.wait = self.sign * value, epoch, 0
            return True
        self.wait += 1
        return False

    def on_epoch_end(self, epoch, logs=None):
        if self._update(epoch + 1, (logs or {}).get(self.monitor)):
            with atomic_path(self.path) as tmp:
                self.model.save_weights(str(tmp))
        if self.patience and self.wait >= self.patience:
            self.model.stop_training = True


class _ReporterCallback(keras.callbacks.Callback):
    def __init__(self, reporter: Reporter):
        super().__init__()
        self.reporter = reporter

    def on_train_batch_end(self, batch, logs=None):
        self.reporter.step(batch + 1, {k: float(v) for k, v in (logs or {}).items()})

    def on_epoch_end(self, epoch, logs=None):
        self.reporter.epoch(epoch + 1, {k: float(v) for k, v in (logs or {}).items()})


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

    Returns:
        The run directory.

    Raises:
        EdgeFMError: Bad configuration or data.
    """
    check_options(config.arch, config.arch_options)  # fail before the data is read
    check_teacher(config)
    dataset = _load_data(config, data_dir)
    # Built before the run directory exists, so that a bad option value leaves no half-made run.
    model = build_compiled_model(config, epoch_steps(config, dataset))
    run_dir = new_run_dir(runs_dir, f"{config.arch}-train")
    write_json(run_dir / CONFIG, config.to_dict())
    write_manifest(run_dir, "train", data=data_record(dataset), status="running")
    return _fit_and_record(run_dir, config, dataset, reporter or NullReporter(), model)


def resume(run_dir: Path | str, data_dir: Path | str | None = None, reporter: Reporter | None = None) -> Path:
    """Continues an interrupted training run from its last completed epoch.

    Args:
        run_dir: The run directory of the interrupted run.
        data_dir: Where the full dataset is; defaults to where the run read it.
        reporter: Receives progress.

    Returns:
        The same run directory, now complete.

    Raises:
        EdgeFMError: Not a run directory, or a run that already finished.
    """
    run_dir = require_run(run_dir)
    if (run_dir / METRICS_FILE).exists():
        raise EdgeFMError(f"{run_dir} already finished (it has {METRICS_FILE}); start a new run instead.")
    config = load_config(TrainConfig, run_dir / CONFIG)
    dataset = load_run_data(run_dir, config, data_dir)
    return _fit_and_record(run_dir, config, dataset, reporter or NullReporter())


def load_run_data(run_dir: Path, config: TrainConfig, data_dir: Path | str | None = None) -> data_lib.Dataset:
    """The dataset a run used (same source, split and seed), read from ``data_dir`` or where the run read it."""
    manifest = Path(run_dir) / "manifest.json"
    recorded = read_json(manifest).get("data", {}) if manifest.exists() else {}
    return _load_data(config, data_dir or recorded.get("location"))


def _load_data(config: TrainConfig, data_dir) -> data_lib.Dataset:
    return data_lib.load_dataset(
        config.data, data_dir, val_size=config.resolved_val_size, seed=config.seed, max_train=config.max_train
    )


def data_record(dataset: data_lib.Dataset) -> dict[str, Any]:
    return {
        "source": dataset.source,
        "location": dataset.location,
        "description": dataset.describe(),
        "train": len(dataset.x_train),
        "val": len(dataset.x_val),
        "test": len(dataset.x_test),
    }


def epoch_steps(config: TrainConfig, dataset: data_lib.Dataset) -> int:
    """Batches in one epoch of ``dataset``'s training split."""
    return math.ceil(len(dataset.x_train) / config.batch_size)


def build_compiled_model(config: TrainConfig, steps_per_epoch: int) -> keras.Model:
    """Builds ``config.arch`` (mixed precision on a GPU) and compiles it (see :func:`compile_model`)."""
    keras.utils.set_random_seed(config.seed)
    mixed = bool(GPUS) if config.mixed_precision is None else config.mixed_precision
    keras.mixed_precision.set_global_policy("mixed_float16" if mixed else "float32")
    try:
        model = create_model(config.arch, **config.arch_options)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    return compile_model(model, config, steps_per_epoch)


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


def fit_model(
    model: keras.Model,
    config: TrainConfig,
    dataset: data_lib.Dataset,
    run_dir: Path,
    reporter: Reporter,
    extra_callbacks: tuple = (),
) -> FitResult:
    """Fits a compiled model with the stage's machinery; every stage that trains goes through here.

    Writes ``history.json`` every epoch, keeps the best weights on ``config.monitor``, stops
    early after ``config.early_stopping`` flat epochs and restores the best weights then, and
    checkpoints every epoch so that a later call on the same ``run_dir`` resumes.
    """
    steps_per_epoch = epoch_steps(config, dataset)
    history_path = run_dir / HISTORY_FILE
    history = read_json(history_path) if history_path.exists() else []
    best = _BestWeights(run_dir / BEST_WEIGHTS, config.monitor, config.early_stopping, history)
    writer = _HistoryWriter(history_path, history)
    callbacks = [
        *extra_callbacks,
        writer,
        best,
        _ReporterCallback(reporter),
        # Last, so history.json is never behind the checkpoint: a resume may redo an epoch, never skip one.
        keras.callbacks.BackupAndRestore(str(run_dir / CHECKPOINT_DIR), delete_checkpoint=False),
    ]
    teacher = load_teacher(config)
    done = len(history)
    if done:
        # Seeded draws restart in a new process: a resume would replay the run's first epochs, the
        # same order and the same augmented images, instead of showing the network new ones.
        keras.utils.set_random_seed(config.seed + done)
    reporter.start(run_dir, config, dataset.describe(), steps_per_epoch, done)
    started = time.perf_counter()
    model.fit(
        make_pipeline(dataset.x_train, dataset.y_train, config, training=True, teacher=teacher, first_epoch=done),
        validation_data=make_pipeline(dataset.x_val, dataset.y_val, config, training=False),
        epochs=config.epochs,
        verbose=0,
        callbacks=callbacks,
    )
    reporter.message(f"trained in {time.perf_counter() - started:.1f} s")
    restored = bool(config.early_stopping and best.best_epoch and (run_dir / BEST_WEIGHTS).exists())
    if restored:
        model.load_weights(str(run_dir / BEST_WEIGHTS))
        reporter.message(f"restored the weights of epoch {best.best_epoch} (best {config.monitor})")
    # Summed per epoch, so a resumed run counts the epochs of its earlier process too.
    seconds = sum(entry["seconds"] for entry in writer.history)
    return FitResult(writer.history, best.best_epoch or None, restored, round(seconds, 2))


def finish_run(run_dir: Path, stage: str, metrics: dict, dataset: data_lib.Dataset, parent: str | None = None) -> None:
    """Writes ``metrics.json``, drops the resume checkpoint and writes the final manifest."""
    write_json(run_dir / METRICS_FILE, metrics)
    # The model and metrics are safely written: the resume checkpoint has served its purpose.
    shutil.rmtree(run_dir / CHECKPOINT_DIR, ignore_errors=True)
    write_manifest(run_dir, stage, parent=parent, data=data_record(dataset), status="complete")


def save_model(model: keras.Model, run_dir: Path) -> None:
    """Saves ``model`` as the run's model file (HDF5, without optimizer state), atomically."""
    with atomic_path(run_dir / MODEL_FILE) as tmp:
        model.save(str(tmp), include_optimizer=False)


def _fit_and_record(run_dir: Path, config: TrainConfig, dataset: data_lib.Dataset, reporter: Reporter,
                    model: keras.Model | None = None) -> Path:
    """Fits ``model`` (built from ``config`` when not given, as on resume) and writes the run's results."""
    if model is None:
        model = build_compiled_model(config, epoch_steps(config, dataset))
    fit = fit_model(model, config, dataset, run_dir, reporter)
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
        "mixed_precision": any(layer.dtype_policy.name == "mixed_float16" for layer in model.layers),
    }
    finish_run(run_dir, "train", metrics, dataset)
    return run_dir


def score_model(model: keras.Model, dataset: data_lib.Dataset) -> dict[str, Any]:
    """Scores a model on the validation and test splits, with the test figure keyed honestly.

    Returns:
        ``data``, ``evaluated_on``, ``val`` (accuracy, loss, examples) and ``test`` (or
        ``sample_test`` for the embedded sample) with the full classification metrics.
    """
    val = classification_metrics(dataset.y_val, predict(model, dataset.x_val))
    test = classification_metrics(dataset.y_test, predict(model, dataset.x_test))
    return {
        "data": dataset.describe(),
        "evaluated_on": "embedded sample held-out images (NOT the test set)" if dataset.is_sample else "test split",
        evaluation_key(dataset): test,
        "val": {"accuracy": val["accuracy"], "loss": val["loss"], "examples": val["examples"]},
    }


def evaluation_key(dataset: data_lib.Dataset) -> str:
    """``"test"`` for the real test split, ``"sample_test"`` for the embedded sample's held-out part.

    The sample's figure is never presented as test-set accuracy, so it has its own key.
    """
    return "sample_test" if dataset.is_sample else "test"


def predict(model: keras.Model, images: np.ndarray, batch_size: int = 512) -> np.ndarray:
    """Class probabilities for raw uint8 images."""
    dataset = tf.data.Dataset.from_tensor_slices(images).batch(batch_size).map(lambda x: tf.cast(x, tf.float32))
    return model.predict(dataset, verbose=0)


def describe_device() -> str:
    """The device training ran on: the GPU's name, else the CPU model, core count and, when TensorFlow
    was held to fewer threads than cores, that thread count (it changes the training time severalfold)."""
    if GPUS:
        details = tf.config.experimental.get_device_details(GPUS[0])
        return f"GPU: {details.get('device_name', GPUS[0].name)}"
    cores, threads = _cores(), intra_op_threads()
    held = f", TensorFlow held to {threads} thread{'s' if threads > 1 else ''}" if threads < cores else ""
    return f"CPU: {cpu_model()} ({cores} cores{held})"


def describe_devices(history: list[dict]) -> str:
    """The device of each stretch of epochs in ``history`` (one line when a single device ran them all).

    Epochs from before devices were recorded are named as such rather than credited to this process.
    """
    stretches = [(device, [e["epoch"] for e in group])
                 for device, group in itertools.groupby(history, key=lambda e: e.get("device", "device not recorded"))]
    if len(stretches) <= 1:
        return stretches[0][0] if stretches else describe_device()
    spans = [f"epochs {epochs[0]}-{epochs[-1]}" if len(epochs) > 1 else f"epoch {epochs[0]}" for _, epochs in stretches]
    return "; ".join(f"{device} for {span}" for (device, _), span in zip(stretches, spans))


def intra_op_threads() -> int:
    """TensorFlow's intra-op thread count: set in code, else by TF_NUM_INTRAOP_THREADS, else all cores."""
    try:
        from_env = int(os.environ.get("TF_NUM_INTRAOP_THREADS", "0"))
    except ValueError:
        from_env = 0
    return tf.config.threading.get_intra_op_parallelism_threads() or from_env or _cores()


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def load_model(run_dir: Path | str) -> keras.Model:
    """Loads the trained model of a run.

    Raises:
        EdgeFMError: Not a run, or a run that has not finished.
    """
    path = require_finished_run(run_dir) / MODEL_FILE
    import tensorflow_model_optimization as tfmot  # QAT models need its layer classes in scope

    with tfmot.quantization.keras.quantize_scope():
        return keras.models.load_model(str(path), compile=False, custom_objects={"TriangularCyclical": TriangularCyclical})


def require_finished_run(run_dir: Path | str) -> Path:
    """Checks that ``run_dir`` is a run that saved its model; returns it as a Path.

    Raises:
        EdgeFMError: Not a run, or a run that has not finished (with the command that finishes it).
    """
    run_dir = require_run(run_dir)
    if not (run_dir / MODEL_FILE).is_file():
        raise EdgeFMError(f"{run_dir} has no {MODEL_FILE}: the run did not finish; continue it with `edge-fm train --resume {run_dir}`.")
    return run_dir


def run_train_config(run_dir: Path | str) -> TrainConfig:
    """The training config in force in a run: a training run's own, an optimize run's fine-tuning one."""
    values = read_json(Path(run_dir) / CONFIG)
    return from_dict(TrainConfig, values["fine_tune"] if "fine_tune" in values else values)


def evaluate(run_dir: Path | str, data_dir: Path | str | None = None, split: str = "test") -> dict[str, Any]:
    """Scores a run's model on its data's test (or validation) split.

    Args:
        run_dir: A finished training run.
        data_dir: Where the full dataset is; defaults to where the run read it.
        split: ``"test"`` or ``"val"`` (the run's own validation split, same seed).

    Returns:
        The :func:`~edge_fm.report.classification_metrics` dict, plus ``data`` and ``split``.
    """
    if split not in ("test", "val"):
        raise EdgeFMError(f"unknown split {split!r}; use 'test' or 'val'.")
    model = load_model(run_dir)
    dataset = load_run_data(run_dir, run_train_config(run_dir), data_dir)
    images, labels = (dataset.x_test, dataset.y_test) if split == "test" else (dataset.x_val, dataset.y_val)
    result = classification_metrics(labels, predict(model, images))
    result["data"] = dataset.describe()
    result["split"] = evaluation_key(dataset) if split == "test" else "val"
    return result


def config_for(arch: str, preset_name: str = "quick", **overrides: Any) -> TrainConfig:
    """Builds a :class:`TrainConfig` from an architecture's preset plus overrides.

    ``arch_options`` given in ``overrides`` are merged into the preset's, not substituted.

    Example:
        >>> config_for("cnn-2conv", "quick", data="sample").epochs  # doctest: +SKIP
        3
    """
    from edge_fm.presets import preset

    values = preset(arch, preset_name)
    options = {**values.pop("arch_options", {}), **overrides.pop("arch_options", {})}
    return from_dict(TrainConfig, {"arch": arch, **values, **overrides, "arch_options": options})


__all__ = [
    "NullReporter",
    "Reporter",
    "TriangularCyclical",
    "augment_batch",
    "build_compiled_model",
    "build_optimizer",
    "build_schedule",
    "config_for",
    "evaluate",
    "load_model",
    "make_pipeline",
    "predict",
    "resume",
    "train",
]

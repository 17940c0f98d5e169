"""Learning-rate schedules and the optimizer a training config names.

Example:
    >>> config = TrainConfig(arch="cnn-2conv", schedule="cosine")
    >>> optimizer = build_optimizer(config, steps_per_epoch=430)  # doctest: +SKIP
"""

from __future__ import annotations

from edge_fm.compat import keras, tf
from edge_fm.train.config import TrainConfig


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
            peak / 25,
            decay_steps=max(1, total - warmup),
            alpha=floor_fraction,
            warmup_target=peak,
            warmup_steps=warmup,
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

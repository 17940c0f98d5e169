"""The Keras callbacks of a training run: the per-epoch history file, the best weights kept on disk
(early stopping's restore point), and progress handed to the caller's reporter."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import TYPE_CHECKING

from edge_fm.compat import keras
from edge_fm.io import atomic_path, write_json
from edge_fm.train.device import describe_device
from edge_fm.train.distribute import ONE_DEVICE, Placement
from edge_fm.train.schedules import current_learning_rate

if TYPE_CHECKING:
    from edge_fm.train.trainer import Reporter


class HistoryWriter(keras.callbacks.Callback):
    """Writes ``history.json`` after every epoch, replacing epochs that a resume runs again."""

    def __init__(self, path: Path, previous: list[dict], placement: Placement = ONE_DEVICE):
        super().__init__()
        self.path, self.history = path, previous
        self.device = describe_device()
        if placement.distributed:
            workers = f" on {placement.workers} workers" if placement.workers > 1 else ""
            self.device += (
                f"; {placement.kind}, {placement.replicas} "
                f"replica{'s' if placement.replicas > 1 else ''}{workers}"
            )
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


class BestWeights(keras.callbacks.Callback):
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


class ReporterCallback(keras.callbacks.Callback):
    def __init__(self, reporter: Reporter):
        super().__init__()
        self.reporter = reporter

    def on_train_batch_end(self, batch, logs=None):
        self.reporter.step(batch + 1, {k: float(v) for k, v in (logs or {}).items()})

    def on_epoch_end(self, epoch, logs=None):
        self.reporter.epoch(epoch + 1, {k: float(v) for k, v in (logs or {}).items()})

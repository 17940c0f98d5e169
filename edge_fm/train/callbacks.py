"""The Keras callbacks of a training run: the per-epoch history file, the best weights kept on disk
(early stopping's restore point), and progress handed to the caller's reporter."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from edge_fm.compat import keras
from edge_fm.io import atomic_path, write_json
from edge_fm.train.device import describe_device
from edge_fm.train.distribute import ONE_DEVICE, Placement
from edge_fm.train.schedules import current_learning_rate

if TYPE_CHECKING:
    from edge_fm.train.config import TrainConfig


class Reporter(Protocol):
    """Receives progress; the CLI renders it, the library never prints."""

    def start(
        self, run_dir: Path, config: TrainConfig, data: str, steps_per_epoch: int, initial_epoch: int
    ) -> None:
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


class FreezeLayers(keras.callbacks.Callback):
    """Keeps the named (pretrained) layers frozen for the first ``epochs`` epochs, then trains them.

    Frozen batch norms run in inference mode, so the new head learns on the pretrained features
    as they are. The state follows the epoch number alone, so a resumed run freezes or not as the
    uninterrupted run would have. A layer frozen before (the layers ResNet50 keeps frozen) stays so.
    """

    def __init__(self, names: tuple[str, ...], epochs: int):
        super().__init__()
        self.names, self.epochs = names, epochs
        self._frozen: bool | None = None
        self._trainable: dict[str, bool] = {}

    def on_train_begin(self, logs=None):
        self._trainable = {name: self.model.get_layer(name).trainable for name in self.names}
        # The optimizer's slots for every variable now, while all are trainable: it makes them once.
        optimizer = getattr(self.model.optimizer, "inner_optimizer", self.model.optimizer)
        optimizer.build(self.model.trainable_variables)

    def on_epoch_begin(self, epoch, logs=None):
        frozen = epoch < self.epochs
        if frozen == self._frozen:
            return
        for name, trainable in self._trainable.items():
            self.model.get_layer(name).trainable = trainable and not frozen
        self._frozen = frozen
        # The compiled step captured the trainable variables: trace it again for the new set.
        self.model.make_train_function(force=True)

    def on_train_end(self, logs=None):
        # A run shorter than its frozen epochs saves its layers as they are meant to be, trainable.
        for name, trainable in self._trainable.items():
            self.model.get_layer(name).trainable = trainable

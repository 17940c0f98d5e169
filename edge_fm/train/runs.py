"""Run directories: made (never overwritten), described by their manifests, and read back.

A run directory holds ``config.json``, the stage's outputs (``model.h5``, ``history.json``,
``metrics.json``) and ``manifest.json``. :class:`Run` is the one reader of all of it: a run's
stage, configs, metrics, lineage, model and data split.

Example:
    >>> run = Run("runs/cnn-2conv-train-1")  # doctest: +SKIP
    >>> model, dataset = run.model(), run.dataset()  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import platform
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge_fm.data.datasets import IMAGE_SHAPE, NUM_CLASSES, Dataset
from edge_fm.data.sources import DEFAULT_DATA, load_data
from edge_fm.errors import EdgeFMError
from edge_fm.io import make_dirs, read_json, sha256_file, write_json
from edge_fm.train.config import OptimizeConfig, TrainConfig, from_dict

if TYPE_CHECKING:
    from edge_fm.compat import keras

MANIFEST = "manifest.json"
CONFIG = "config.json"
# HDF5, not .keras: tf_keras cannot read back the QAT wrappers of tfmot from .keras files.
MODEL_FILE = "model.h5"
HISTORY_FILE = "history.json"
METRICS_FILE = "metrics.json"
QAT_STAGES = ("qat", "pqat")  # stages whose model is quantization-aware
_VERSIONED = ("edge-fm", "tensorflow", "tf-keras", "tensorflow-model-optimization", "ai-edge-litert", "numpy")


def new_run_dir(root: Path | str, name: str) -> Path:
    """Creates ``root/name-N`` with the first free N (1, 2, ...) and returns it.

    ``mkdir`` without ``exist_ok`` makes the claim atomic, so two runs started together never
    share a directory.
    """
    root = make_dirs(root, "runs folder")
    n = 1 + max((_suffix(p.name, name) for p in root.glob(f"{name}-*")), default=0)
    while True:
        candidate = root / f"{name}-{n}"
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            n += 1


def latest_run_dir(root: Path | str, name: str) -> Path | None:
    """The newest ``root/name-N`` (the highest N), or None: what :func:`new_run_dir` made last."""
    found = [p for p in Path(root).glob(f"{name}-*") if _suffix(p.name, name)]
    return max(found, key=lambda p: _suffix(p.name, name)) if found else None


def _suffix(dirname: str, name: str) -> int:
    tail = dirname[len(name) + 1 :]
    return int(tail) if tail.isdigit() else 0


def library_versions() -> dict[str, str]:
    """Versions of Python and the libraries that shape an artifact."""
    versions = {"python": platform.python_version()}
    for dist in _VERSIONED:
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[dist] = "not installed"
    return versions


def write_manifest(
    run_dir: Path, stage: str, parent: str | None = None, name: str | None = None, **extra: Any
) -> dict:
    """Writes ``manifest.json``: every file of the run with its bytes and SHA-256, and its lineage.

    Args:
        run_dir: The run directory.
        stage: The stage that produced the run (``train``, ``optimize``, ``export``...).
        parent: The run this one was derived from, if any.
        name: The run's name, when ``run_dir`` is a temporary folder renamed into place later.
        **extra: More fields to record (e.g. the data used).

    Returns:
        The manifest written.
    """
    run_dir = Path(run_dir)
    files = {}
    for path in sorted(p for p in run_dir.rglob("*") if p.is_file()):
        rel = path.relative_to(run_dir).as_posix()
        if rel == MANIFEST or path.name.startswith(".tmp-"):
            continue
        files[rel] = {"bytes": path.stat().st_size, "sha256": sha256_file(path)}
    manifest = {
        "run": name or run_dir.name,
        "stage": stage,
        "parent": parent,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "versions": library_versions(),
        **extra,
        "files": files,
    }
    write_json(run_dir / MANIFEST, manifest)
    return manifest


def record_files(folder: Path | str, names: Sequence[str]) -> None:
    """Brings the ``manifest.json`` entries of ``names``, files written since the manifest was, to their
    bytes and SHA-256 now; the rest of the record stays. A folder without a manifest is left as it is."""
    folder = Path(folder)
    if not (folder / MANIFEST).is_file():
        return
    manifest = read_manifest(folder)
    files = dict(manifest.get("files", {}))
    for name in names:
        if (folder / name).is_file():
            files[name] = {"bytes": (folder / name).stat().st_size, "sha256": sha256_file(folder / name)}
    write_json(folder / MANIFEST, {**manifest, "files": dict(sorted(files.items()))})


def require_run(run_dir: Path | str) -> Path:
    """Checks that ``run_dir`` is a run directory (it has a config.json).

    Raises:
        EdgeFMError: The directory does not exist or is not a run.
    """
    run_dir = Path(run_dir)
    if not (run_dir / CONFIG).is_file():
        what = "does not exist" if not run_dir.exists() else "has no config.json"
        raise EdgeFMError(
            f"{run_dir} {what}: pass a run directory made by `edge-fm train` (e.g. runs/cnn-2conv-train-1)."
        )
    return run_dir


def read_manifest(run_dir: Path) -> dict:
    """Reads a run's manifest."""
    return read_json(Path(run_dir) / MANIFEST)


def model_sha256(manifest: dict) -> str | None:
    """The SHA-256 of the run's Keras model as its manifest lists it (None where it lists none)."""
    return (manifest.get("files", {}).get(MODEL_FILE) or {}).get("sha256")


def run_places(recorded: str, near: Path | None = None) -> tuple[Path, ...]:
    """Where a run a record names may be: the path as recorded (relative to the folder the command ran
    in; records hold the path of their day), then the run of that name in ``near`` and beside it (runs
    are made side by side in one runs folder)."""
    name = Path(recorded).name
    return (Path(recorded), *((near / name, near.parent / name) if near is not None else ()))


def _parent_dir(run_dir: Path, recorded: str | None) -> Path | None:
    """Where a run's recorded parent is (see :func:`run_places`); the recorded path when none is found."""
    if not recorded:
        return None
    return next(
        (place for place in run_places(recorded, run_dir) if (place / MANIFEST).exists()), Path(recorded)
    )


def data_record(dataset: Dataset) -> dict[str, Any]:
    """The manifest's ``data`` entry: where a run read its data, how it was split, and its identity."""
    record = {
        "source": dataset.source,
        "location": dataset.location,
        "description": dataset.describe(),
        "train": len(dataset.x_train),
        "val": len(dataset.x_val),
        "test": len(dataset.x_test),
    }
    if dataset.identity is not None:
        record["identity"] = dataset.identity.as_record()
    return record


def dataset_for(config: TrainConfig, data_dir: Path | str | None = None) -> Dataset:
    """The data a training config names: its source, split into train and validation with its seed."""
    name = DEFAULT_DATA if config.data == "full" else config.data
    return load_data(name, data_dir, config.data_options)


def fit_to_data(config: TrainConfig, dataset: Dataset) -> TrainConfig:
    """The config with its architecture built for the data's input shape and class count.

    Fashion-MNIST's shape and ten classes leave the config as it is; other data records
    ``input_shape`` and ``num_classes`` in ``arch_options``, so every later stage rebuilds the same
    model. On a dataset of the user's own, an architecture that resizes inside the model
    (``input_size``) runs at the data's size unless ``input_size`` was set: ``--image-size``
    chooses the size, once, for the data and the model alike.
    """
    from edge_fm.zoo.registry import get_spec

    options = dict(config.arch_options)
    shape, classes = dataset.image_shape, dataset.num_classes
    if shape != IMAGE_SHAPE or classes != NUM_CLASSES:
        options.update(input_shape=list(shape), num_classes=classes)
        if "input_size" in get_spec(config.arch).options():
            options.setdefault("input_size", None)
    if options == config.arch_options:
        return config
    return dataclasses.replace(config, arch_options=options)


class Run:
    """A run directory, read: every stage, command and benchmark reads runs through here.

    Example:
        >>> run = Run("runs/cnn-2conv-qat-1")  # doctest: +SKIP
        >>> run.stage, run.train_config.arch, run.dataset().describe()  # doctest: +SKIP

    Raises:
        EdgeFMError: ``path`` is not a run directory (see :func:`require_run`).
    """

    def __init__(self, path: Path | str):
        self.path = require_run(path)

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r})"

    @property
    def name(self) -> str:
        """The run directory's name, e.g. ``cnn-2conv-train-1``."""
        return self.path.name

    @property
    def stage(self) -> str:
        """The stage that made the run: ``train``, ``prune``, ``qat`` or ``pqat``."""
        return self._saved_config().get("stage", "train")

    @property
    def quantization_aware(self) -> bool:
        """True when the run's model was trained quantization-aware (a ``qat`` or ``pqat`` run)."""
        return self.stage in QAT_STAGES

    @property
    def config(self) -> TrainConfig | OptimizeConfig:
        """The run's own config: :class:`TrainConfig` (training) or :class:`OptimizeConfig` (optimization)."""
        return self.optimize_config if "optimize" in self._saved_config() else self.train_config

    @property
    def train_config(self) -> TrainConfig:
        """The training config in force: a training run's own, an optimization run's fine-tuning one."""
        values = self._saved_config()
        return from_dict(TrainConfig, values.get("fine_tune", values))

    @property
    def optimize_config(self) -> OptimizeConfig:
        """An optimization run's step.

        Raises:
            EdgeFMError: The run is a training run.
        """
        values = self._saved_config()
        if "optimize" not in values:
            raise EdgeFMError(
                f"{self.path} is a {self.stage} run, not an optimization run; pass a run made by `edge-fm optimize`."
            )
        # A run recorded before QAT folded batch norms did not fold them.
        return from_dict(OptimizeConfig, {"fold_batch_norms": False, **values["optimize"]})

    @property
    def finished(self) -> bool:
        """True once the run wrote its metrics (its last step)."""
        return (self.path / METRICS_FILE).is_file()

    @property
    def metrics(self) -> dict[str, Any]:
        """The run's ``metrics.json``."""
        return read_json(self.path / METRICS_FILE)

    @property
    def manifest(self) -> dict[str, Any]:
        """The run's ``manifest.json`` (empty while the run has none)."""
        return read_manifest(self.path) if (self.path / MANIFEST).is_file() else {}

    def lineage(self) -> list[dict[str, str]]:
        """The chain of runs this one comes from, itself first, read from the manifests."""
        chain, current = [], self.path
        while current and (current / MANIFEST).exists():
            manifest = read_manifest(current)
            chain.append({"run": str(current), "stage": manifest.get("stage", "?")})
            current = _parent_dir(current, manifest.get("parent"))
        return chain

    @property
    def data_identity(self) -> dict[str, Any]:
        """The identity of the data the run read, as its manifest records it (empty for older runs)."""
        return self.manifest.get("data", {}).get("identity") or {}

    def dataset(
        self,
        data_dir: Path | str | None = None,
        config: TrainConfig | None = None,
        data: Path | str | None = None,
    ) -> Dataset:
        """The data the run trained on (same source, split and seed), read from ``data_dir`` or where the run read it.

        Args:
            data_dir: Where the full dataset is; default: where the run read it.
            config: A training config that keeps this run's split (a fine-tuning one); default: the run's.
            data: Where the run's data is now (a ``--data`` value: a moved copy, or other data of the
                run's classes), read with the run's data options so that its splits are the run's.

        Raises:
            EdgeFMError: The data changed since training, or ``data`` holds other classes (one line).
        """
        config = config or self.train_config
        if data is not None:
            return self._data_elsewhere(data, data_dir, config)
        recorded = self.manifest.get("data", {})
        identity = self.data_identity
        if identity.get("kind", "fashion-mnist") not in ("fashion-mnist", "tfds") and identity.get("source"):
            # Read where the run read it, which an optimization step given --data records in place of
            # the place its parent's config names.
            self._check_data_is_there(identity)
            return self._data_elsewhere(None, data_dir, config)
        dataset = dataset_for(config, data_dir or recorded.get("location"))
        if identity.get("kind") == "tfds" and dataset.identity is not None:
            if dataset.identity.fingerprint != identity.get("fingerprint"):
                raise EdgeFMError(
                    f"{self.path} was trained on {identity.get('source')} ({identity.get('fingerprint', '?')[:19]}), "
                    f"but that data is now {dataset.identity.fingerprint[:19]}: its files changed; "
                    "train a new run on the data as it is."
                )
        return dataset

    def continued_on(self, data: Path | str | None) -> Path | str | None:
        """``data`` for work that continues this run (resume, optimization, shipping), which must train on
        the run's own data: refused for a run of Fashion-MNIST, whose place ``--data-dir`` gives. (Its
        own data read from ``data`` is checked to be the same files, by fingerprint.)

        Raises:
            EdgeFMError: ``data`` given for a Fashion-MNIST run.
        """
        if data is not None and self.data_identity.get("kind", "fashion-mnist") == "fashion-mnist":
            raise EdgeFMError(
                f"--data {data}: {self.path} was trained on Fashion-MNIST; --data names where a run's own "
                "data moved (for Fashion-MNIST's files, pass --data-dir)."
            )
        return data

    def _check_data_is_there(self, identity: dict[str, Any]) -> None:
        """Refuses, naming the run, data of the user's own that is no longer where the run read it."""
        source = identity["source"]
        if not Path(source).exists():
            raise EdgeFMError(
                f"{self.path} was trained on {source}, which is no longer there: put the data back, or pass "
                "--data with where it is now."
            )

    def _data_elsewhere(self, data: Path | str | None, data_dir, config: TrainConfig) -> Dataset:
        """The run's data read from ``data`` (None: its own data's recorded place), split as the run split it."""
        from edge_fm.data import datasets as fmnist
        from edge_fm.data.reference import check_classes, load_recorded

        identity = self.data_identity
        if identity.get("kind", "fashion-mnist") != "fashion-mnist":
            # The bundles' rule: the recorded options give the splits, the classes must be the run's.
            record = {**identity, "options": dataclasses.asdict(config.data_options)}
            return load_recorded(record, data, str(self.path))
        dataset = load_data(str(data), data_dir, config.data_options)
        check_classes(dataset.class_names, fmnist.CLASS_NAMES, str(self.path), data)
        return dataset

    @property
    def model_path(self) -> Path:
        """Where the run saves its model (see :meth:`require_model`)."""
        return self.path / MODEL_FILE

    def require_model(self) -> Run:
        """Checks that the run finished: its model saved and its metrics written (a run stopped between
        the two saved a model it never scored); returns the run.

        Raises:
            EdgeFMError: The run did not finish (with the command that finishes it).
        """
        missing = MODEL_FILE if not self.model_path.is_file() else None if self.finished else METRICS_FILE
        if missing is not None:
            command = "train" if self.stage == "train" else "optimize"
            raise EdgeFMError(
                f"{self.path} has no {missing}: the run did not finish; continue it with `edge-fm "
                f"{command} --resume {self.path}`."
            )
        return self

    def model(self) -> keras.Model:
        """The run's trained model as saved (quantization-aware for a QAT run), uncompiled.

        Raises:
            EdgeFMError: The run did not finish, or its model file cannot be read.
        """
        path = self.require_model().model_path
        # TensorFlow and tfmot take seconds to load: only when a model is read (the CLI imports this module).
        # The shim first: importing TensorFlow through it hides its start-up log lines; tfmot imports it too.
        from edge_fm.compat import keras  # isort: skip
        import tensorflow_model_optimization as tfmot  # isort: skip

        from edge_fm.train.schedules import TriangularCyclical

        try:
            with tfmot.quantization.keras.quantize_scope():  # QAT models need its layer classes in scope
                return keras.models.load_model(
                    str(path), compile=False, custom_objects={"TriangularCyclical": TriangularCyclical}
                )
        except OSError as exc:  # h5py: "file signature not found", a truncated file
            raise EdgeFMError(
                f"{path} cannot be read as a Keras model ({_first_line(exc)}): the file is damaged; "
                "copy it again from where it was made, or train the run again."
            ) from None

    def float_model(self) -> keras.Model:
        """The run's model as a float32 model of its registered architecture.

        The architecture is rebuilt from the run's config and the saved weights copied in, so a
        model trained under mixed precision comes back in float32, as pruning and QAT need.
        """
        saved = self.model()
        config = self.train_config
        from edge_fm.zoo import create_model
        from edge_fm.zoo.backbones import weights_to_follow

        with weights_to_follow():  # the saved weights replace any pretrained ones: none are fetched
            model = create_model(config.arch, **config.arch_options)
        model.set_weights(saved.get_weights())
        return model

    def model_to_convert(self) -> keras.Model:
        """The model the run's TFLite artifact is converted from.

        A QAT run's quantization-aware model; any other run's float model with its batch norms
        before a Dense folded away (``fold_batch_norms_into_dense``: exact, and it spares weight
        quantization what the converter's own fold costs).
        """
        if self.quantization_aware:
            return self.model()
        from edge_fm.zoo.fold import fold_batch_norms_into_dense

        return fold_batch_norms_into_dense(self.float_model(), scale_into_producer=True)

    def _saved_config(self) -> dict[str, Any]:
        return read_json(self.path / CONFIG)


def _first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]

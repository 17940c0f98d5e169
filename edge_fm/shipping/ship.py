"""Shipping a trained model: choose its integer format on the validation split, bundle it with a model
card and a provenance record in a models folder (``models/NAME/``).

The candidates are the QAT run's ``qat-int8`` export and the training run's post-training ``int8``
export. Each is scored by the export's parity check on the run's whole validation split (on the
export's default 1,000 images the standard error, about 0.75 points, is larger than the gaps being
decided); the better one ships. The test split is never read here: ``edge-fm bench models/`` scores
it afterwards and completes the card.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from typing import Any, Callable

from edge_fm.errors import EdgeFMError
from edge_fm.export.bundles import (
    DESCRIPTION_FILE,
    LABELS_FILE,
    MODEL_FILE,
    PROVENANCE_FILE,
    RUN_CONFIG,
    read_description,
)
from edge_fm.io import check_output_dir, read_json, write_bytes_atomic, write_json
from edge_fm.shipping.cards import LICENSE, model_card
from edge_fm.swap import recover_folder, replace_folder, staging_path
from edge_fm.train.runs import Run, library_versions, write_manifest

BUNDLE_FILES = (MODEL_FILE, LABELS_FILE, DESCRIPTION_FILE)
PROVENANCE = PROVENANCE_FILE
CARD = "MODEL_CARD.md"
CANDIDATES = ("qat-int8", "int8")  # the integer formats a shipped model is chosen from, in tie-break order
SELECTION_RULE = (
    "the candidate with the higher accuracy on the training run's whole validation split "
    "(ties: qat-int8); the test split is not read"
)


@dataclasses.dataclass(frozen=True)
class ShipConfig:
    """What to ship and where; saved in the shipped folder's ``provenance.json``."""

    train_run: str  # finished training run the model comes from
    name: str  # folder name under models_dir
    models_dir: str = "models"  # the folder of shipped models
    qat_run: str | None = None  # finished QAT run of train_run to reuse (None: run QAT now)
    qat_epochs: int | None = None  # epochs of the QAT fine-tune (None: the optimize stage's default)
    qat_learning_rate: float | None = None  # peak learning rate of the QAT fine-tune (None: its default)
    qat_max_train: int | None = None  # QAT on this many training images (None: all)
    max_artifact_bytes: int = 5_000_000  # a larger artifact keeps its card but stays out of the folder
    note: str = ""  # one or two sentences for the card: what a user should know about this model
    train_command: str = ""  # the command that made train_run, for the card

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name or self.name.startswith("."):
            raise EdgeFMError(f"--name {self.name!r}: give a plain folder name, e.g. --name cnn-2conv.")
        if self.qat_epochs is not None and self.qat_epochs < 1:
            raise EdgeFMError(f"--qat-epochs {self.qat_epochs}: give at least 1.")
        if self.max_artifact_bytes < 1:
            raise EdgeFMError(f"max_artifact_bytes {self.max_artifact_bytes}: give a positive size.")


def _qat_run_of(train: Run, qat_run: str) -> Run:
    """``--qat-run``, refused unless it is a finished quantization-aware run made from ``train``.

    Raises:
        EdgeFMError: Another stage, or a QAT run of another training run.
    """
    qat = Run(qat_run).require_model()
    if not qat.quantization_aware:
        raise EdgeFMError(
            f"--qat-run {qat.path} is a {qat.stage} run: pass a QAT run of {train.path} (`edge-fm optimize "
            f"{train.path} --qat`), or leave --qat-run out to run QAT now."
        )
    ancestors = [step["run"] for step in qat.lineage()[1:]]
    if train.path.resolve() not in [Path(run).resolve() for run in ancestors]:
        raise EdgeFMError(
            f"--qat-run {qat.path} was not made from {train.path} (its runs: "
            f"{', '.join(ancestors) or 'none recorded'}): pass a QAT run of "
            f"{train.path}, or leave --qat-run out to run QAT now."
        )
    return qat


def choose(validation_accuracy: dict[str, float]) -> str:
    """The format with the best validation accuracy; ties go to the first in ``CANDIDATES`` order."""
    return max(validation_accuracy, key=lambda fmt: (validation_accuracy[fmt], -CANDIDATES.index(fmt)))


def ship(
    config: ShipConfig,
    data_dir: Path | str | None = None,
    runs_dir: Path | str = "runs",
    command: str = "",
    log: Callable[[str], None] = lambda message: None,
    data: Path | str | None = None,
) -> Path:
    """Takes a training run through QAT and both integer exports, and ships the better one.

    Writes ``models_dir/name/``: the bundle (``model.tflite``, ``labels.txt``, ``model.json``),
    ``provenance.json``, ``MODEL_CARD.md`` and ``manifest.json``. The folder is assembled beside the
    target and swapped in at the end, so an error leaves the shipped model as it was.

    Args:
        config: What to ship.
        data_dir: Where the full dataset is (default: where the training run read it).
        runs_dir: Where the QAT run and the exports are written.
        command: The command line that called this, for the provenance record.
        log: Receives a line per step.
        data: Where the training run's own data is now, when it has moved from where the run read it.

    Returns:
        The shipped folder.

    Raises:
        EdgeFMError: The training run is missing or unfinished, or every candidate export failed.
    """
    from edge_fm.export.exporter import export
    from edge_fm.optimize.compress import optimize
    from edge_fm.train.config import OptimizeConfig

    train = Run(config.train_run).require_model()
    if train.stage != "train":
        raise EdgeFMError(
            f"{train.path} is a {train.stage} run: pass the training run (its QAT run goes in --qat-run)."
        )
    if not train.finished:
        raise EdgeFMError(
            f"{train.path} has no metrics.json: finish it first with `edge-fm train --resume {train.path}`."
        )
    train.continued_on(data)
    qat = _qat_run_of(train, config.qat_run) if config.qat_run else None
    check_output_dir(config.models_dir, "--models-dir")  # before minutes of QAT, not after
    if qat is None:
        log(f"quantization-aware training of {train.path}")
        qat = Run(
            optimize(
                OptimizeConfig("qat", str(train.path), fine_tune=_fine_tune(config)),
                data_dir,
                runs_dir,
                data=data,
            )
        )
    bundles, refused = {}, {}
    for fmt, source in (("qat-int8", qat), ("int8", train)):
        log(f"exporting {fmt} from {source.path}, scored on the whole validation split")
        try:
            bundles[fmt] = Path(
                export(source.path, fmt, runs_dir=runs_dir, data_dir=data_dir, parity_images=None, data=data)
            )
        except EdgeFMError as exc:  # a failed parity check leaves the other candidate, and is recorded
            refused[fmt] = str(exc)
            log(f"{fmt} refused: {exc}")
    if not bundles:
        raise EdgeFMError(f"no candidate of {train.path} passed its export: {' '.join(refused.values())}")
    descriptions = {fmt: read_description(path) for fmt, path in bundles.items()}
    validation = {fmt: d["export"]["parity"]["tflite_accuracy"] for fmt, d in descriptions.items()}
    chosen = choose(validation)
    provenance = provenance_record(
        config, train, qat, chosen, descriptions, refused, command, bundles[chosen]
    )
    target = _write_folder(config, bundles[chosen], descriptions[chosen], provenance)
    log(f"shipped {chosen} ({validation[chosen]:.2%} on validation) to {target}")
    return target


def _fine_tune(config: ShipConfig) -> dict[str, Any]:
    settings = {
        "epochs": config.qat_epochs,
        "learning_rate": config.qat_learning_rate,
        "max_train": config.qat_max_train,
    }
    return {key: value for key, value in settings.items() if value is not None}


def provenance_record(
    config: ShipConfig,
    train: Run,
    qat: Run,
    chosen: str,
    descriptions: dict[str, dict],
    refused: dict[str, str],
    command: str,
    bundle: Path,
) -> dict[str, Any]:
    """What produced a shipped artifact: commands, resolved configs, metrics, data, versions, the selection."""
    description = descriptions[chosen]
    artifact = description["artifact"]
    shipped = artifact["bytes"] <= config.max_artifact_bytes
    train_metrics, qat_metrics = train.metrics, qat.metrics
    return {
        "name": config.name,
        "license": LICENSE,
        "note": config.note,
        "chosen_format": chosen,
        "artifact_shipped": shipped,
        "not_shipped_reason": ""
        if shipped
        else (
            f"It is above the {config.max_artifact_bytes:,}-byte limit per artifact of this folder; the commands "
            "below rebuild it."
        ),
        # Where the export wrote the artifact: an artifact too large for the folder is benchmarked from there.
        "artifact": {
            "bytes": artifact["bytes"],
            "sha256": artifact["sha256"],
            "exported_to": str(bundle / MODEL_FILE),
        },
        "selection": {
            "rule": SELECTION_RULE,
            "validation_images": description["export"]["parity"]["images"],
            "validation_accuracy": {
                fmt: d["export"]["parity"]["tflite_accuracy"] for fmt, d in descriptions.items()
            },
            "refused": {
                fmt: reason.removesuffix("; nothing was written.") for fmt, reason in refused.items()
            },
        },
        "commands": {"train": config.train_command, "ship": command},
        "train": {
            "run": train.name,
            "config": read_json(train.path / RUN_CONFIG),
            "metrics": {
                key: train_metrics[key]
                for key in (
                    "test",
                    "val",
                    "epochs_run",
                    "best_epoch",
                    "training_seconds",
                    "device",
                    "params",
                    "macs",
                )
                if key in train_metrics
            },
        },
        "qat": {
            "run": qat.name,
            "config": read_json(qat.path / RUN_CONFIG).get("optimize", {}),
            "metrics": {
                key: qat_metrics[key]
                for key in ("val", "epochs_run", "training_seconds")
                if key in qat_metrics
            },
            "train_images": qat.manifest.get("data", {}).get("train"),
        },
        # The training run's data: the export's is the QAT step's, a subset with --qat-max-train.
        "data": train.manifest.get("data", {}).get("description") or description["source"]["data"],
        "versions": library_versions(),
    }


def _write_folder(config: ShipConfig, bundle: Path, description: dict, provenance: dict) -> Path:
    models = Path(config.models_dir)
    target = models / config.name
    staging = staging_path(target)
    try:
        models.mkdir(parents=True, exist_ok=True)
        recover_folder(target)  # what a killed ship of this name left: the previous model back, no leftovers
        staging.mkdir()
    except OSError as exc:
        raise EdgeFMError(
            f"cannot write the models folder {models} ({exc.strerror}): pass a writable --models-dir."
        ) from exc
    try:
        for file in BUNDLE_FILES if provenance["artifact_shipped"] else BUNDLE_FILES[1:]:
            shutil.copy2(bundle / file, staging / file)
        write_json(staging / PROVENANCE, provenance)
        # Runtimes are checked by `bench --cards`; a folder that keeps no model has none to check.
        runs_on = None if provenance["artifact_shipped"] else []
        card = model_card(config.name, provenance, description, runs_on=runs_on)
        write_bytes_atomic(staging / CARD, card.encode())
        write_manifest(
            staging, "ship", parent=str(bundle), run=config.name
        )  # named as it will be, not as staged
        replace_folder(staging, target)
    except BaseException:
        recover_folder(target)  # the previous model stays (or is put back); the new one goes
        raise
    return target

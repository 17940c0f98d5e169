"""Transfer learning: a run that starts from the weights of a model edge-fm trained on other data.

``--init-from RUN`` builds the source run's architecture, with its options, for the new data's
input shape and class count, and copies every layer's weights from the source by name, except
the classifier (``logits``), which starts anew when the classes differ. The copied layers may stay
frozen for the first ``freeze_epochs`` epochs, so the new head learns before the backbone moves
(:class:`edge_fm.train.callbacks.FreezeLayers`); the same holds for the backbone of a Keras
application loaded with ``--weights``.

Example:
    >>> source = "runs/edge-cnn-tiny-train-1"
    >>> config = adopt_source(TrainConfig(arch="edge-cnn-tiny", init_from=source))  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from edge_fm.data.datasets import Dataset
from edge_fm.errors import EdgeFMError
from edge_fm.train.config import TrainConfig
from edge_fm.train.runs import Run

if TYPE_CHECKING:
    from edge_fm.compat import keras

HEAD = "logits"  # the classifier every zoo model ends with (edge_fm.zoo.layers.classifier)
# Options that follow the new data (or the transfer itself) rather than the source run.
_DATA_OPTIONS = ("input_shape", "num_classes", "weights")


@dataclasses.dataclass(frozen=True)
class Transfer:
    """Where a model's starting weights came from, and which layers hold them.

    Attributes:
        source: The run (``--init-from``) or weights (``imagenet``, a file) the model started from;
            None when it started from random weights.
        layers: The layers that received pretrained weights: the ones ``freeze_epochs`` freezes.
        new_head: True when the classifier started anew (other classes than the source's).
    """

    source: str | None = None
    layers: tuple[str, ...] = ()
    new_head: bool = False

    def record(self) -> dict[str, Any] | None:
        """What a run's metrics record of it (None: random initialisation)."""
        if self.source is None:
            return None
        return {"source": self.source, "layers": len(self.layers), "new_head": self.new_head}


def source_run(path: str) -> Run:
    """The finished, float training run ``--init-from`` names.

    Raises:
        EdgeFMError: Not a finished run, or a quantization-aware one (its wrapped layers are not the
            architecture's: start from the run it was fine-tuned from).
    """
    run = Run(path).require_model()
    if run.quantization_aware:
        parent = run.optimize_config.parent
        raise EdgeFMError(
            f"--init-from {run.path} is a {run.stage} run, whose layers are quantization wrappers: pass the run "
            f"it was fine-tuned from ({parent})."
        )
    return run


def adopt_source(config: TrainConfig) -> TrainConfig:
    """``config`` with the source run's architecture and options (the new data's shape comes later).

    Raises:
        EdgeFMError: Another architecture than the source's, or ``--weights`` as well (two starting points).
    """
    if not config.init_from:
        return config
    run = source_run(config.init_from)
    source = run.train_config
    if config.arch != source.arch:
        raise EdgeFMError(
            f"--init-from {config.init_from} trained {source.arch}, not {config.arch}: train {source.arch} "
            "(or omit the architecture)."
        )
    if config.arch_options.get("weights") is not None:
        raise EdgeFMError("--weights and --init-from both give the starting weights: pass one of them.")
    options = {k: v for k, v in source.arch_options.items() if k not in _DATA_OPTIONS}
    options.update({k: v for k, v in config.arch_options.items() if k not in options and k != "weights"})
    # The absolute path: a resume or a later stage run from another folder finds the same source.
    return dataclasses.replace(config, arch_options=options, init_from=str(run.path.absolute()))


def initialise(model: keras.Model, config: TrainConfig, dataset: Dataset) -> Transfer:
    """Copies the source run's weights into ``model`` (built for ``config``) and says what it copied.

    Without ``init_from`` nothing is copied; the transfer then names the pretrained backbone of a
    Keras application (``--weights``), if any.

    Raises:
        EdgeFMError: Images of other channels than the source's, a layer whose weights have another
            shape (a dense layer after a flatten, on images of another size), or ``freeze_epochs``
            with nothing pretrained to freeze.
    """
    if not config.init_from:
        pretrained = getattr(model, "pretrained", None)  # --weights: the backbone's, under a new head
        transfer = Transfer(pretrained, tuple(getattr(model, "backbone_layers", ())), pretrained is not None)
    else:
        transfer = _copy_from(model, source_run(config.init_from), dataset)
    if config.freeze_epochs and not transfer.layers:
        raise EdgeFMError(
            f"freeze_epochs={config.freeze_epochs} freezes pretrained layers, and this model has none: "
            "pass --init-from RUN or --weights, or drop freeze_epochs."
        )
    return transfer


def _copy_from(model: keras.Model, run: Run, dataset: Dataset) -> Transfer:
    source = run.float_model()
    source_channels, channels = int(source.input_shape[-1]), int(model.input_shape[-1])
    if source_channels != channels:
        colour = {1: "grey", 3: "RGB"}
        raise EdgeFMError(
            f"--init-from {run.path} was trained on {colour[source_channels]} images ({source_channels} channel"
            f"{'s' if source_channels > 1 else ''}), this data is {colour[channels]}: pass --channels "
            f"{source_channels}."
        )
    source_classes = tuple(run.manifest.get("data", {}).get("identity", {}).get("class_names") or ())
    keep_head = source_classes == tuple(dataset.class_names) or (
        not source_classes and run.train_config.data in ("full", "sample") and _is_fashion(dataset)
    )
    by_name = {layer.name: layer for layer in source.layers}
    copied = []
    for layer in model.layers:
        if not layer.weights or (layer.name == HEAD and not keep_head):
            continue
        origin = by_name.get(layer.name)
        if origin is None:
            raise EdgeFMError(
                f"--init-from {run.path} has no layer {layer.name!r}: train the same architecture."
            )
        _check_shapes(layer, origin, run, source)
        layer.set_weights(origin.get_weights())
        copied.append(layer.name)
    return Transfer(str(run.path), tuple(name for name in copied if name != HEAD), not keep_head)


def _is_fashion(dataset: Dataset) -> bool:
    return dataset.identity is None or dataset.identity.kind == "fashion-mnist"


def _check_shapes(layer, origin, run: Run, source) -> None:
    for ours, theirs in zip(layer.weights, origin.weights):
        if tuple(ours.shape) != tuple(theirs.shape):
            height, width = source.input_shape[1:3]
            raise EdgeFMError(
                f"--init-from {run.path}: layer {layer.name!r} holds {tuple(theirs.shape)} weights there but needs "
                f"{tuple(ours.shape)} for this data; its size depends on the image size: pass --image-size "
                f"{width}x{height} (the source's), or start from an architecture with global pooling (edge-cnn)."
            )

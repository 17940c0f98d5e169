"""ImageNet-shaped backbones from Keras applications: MobileNetV2 (93-93.76%) and ResNet50 (91.75%)."""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path

from edge_fm.compat import keras
from edge_fm.data.datasets import IMAGE_SHAPE, NUM_CLASSES
from edge_fm.errors import EdgeFMError
from edge_fm.zoo.layers import check_input_shape, classifier, layers, preprocess, raw_input
from edge_fm.zoo.registry import register_model

# Activations of mobilenetv2's head; ReLU6 and ReLU run everywhere, GELU not under TFLite Micro.
HEAD_ACTIVATIONS = ("relu6", "relu", "gelu")


class EdgeFMWarning(UserWarning):
    """Something the user should know that does not stop the work."""


# Keras fetches ImageNet weights from here into its cache (~/.keras/models) on first use.
WEIGHTS_URL = "https://storage.googleapis.com/tensorflow/keras-applications/"
MIN_SIDE = 32  # Keras' own minimum input side for both applications
MOBILENET_SIDES = (96, 128, 160, 192, 224)  # sides with weights of their own; others load the 224 ones


def keras_cache() -> Path:
    """The folder where Keras keeps downloaded weights (``~/.keras/models``)."""
    return Path.home() / ".keras" / "models"


def imagenet_file(name: str, alpha: float = 1.0, side: int | None = 224) -> tuple[str, str]:
    """The file name and address of the ImageNet weights (without top) Keras loads for a backbone."""
    if name == "resnet50":
        return "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5", f"{WEIGHTS_URL}resnet/"
    rows = side if side in MOBILENET_SIDES else 224
    file = f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{float(alpha)}_{rows}_no_top.h5"
    return file, f"{WEIGHTS_URL}mobilenet_v2/"


_SKIP_PRETRAINED = threading.local()  # set while a model is rebuilt to receive saved weights


@contextlib.contextmanager
def weights_to_follow():
    """Builds backbones without loading their pretrained weights: the caller copies saved weights in.

    The model is built exactly as its ``weights`` option says (the same preprocessing, the same
    layers left trainable), so a run's model is rebuilt, for export or fine-tuning, without
    fetching ImageNet weights it is about to overwrite.
    """
    previous = getattr(_SKIP_PRETRAINED, "on", False)
    _SKIP_PRETRAINED.on = True
    try:
        yield
    finally:
        _SKIP_PRETRAINED.on = previous


def _backbone(factory, name: str, weights: str | None, **kwargs):
    """Builds a Keras application without its top, with random, ImageNet or a file's weights.

    Callers pass ``input_tensor``: the application's layers then join the caller's graph
    directly instead of forming a nested model, which tfmot's pruning and quantization need.

    Returns:
        The application and where its weights came from (None, ``"imagenet"`` or the file).

    Raises:
        EdgeFMError: ImageNet weights neither in Keras' cache nor downloadable (the message names the
            file to fetch and the folder to put it in), or a weights file that is missing or does not fit.
    """
    if weights is None or getattr(_SKIP_PRETRAINED, "on", False):
        return factory(include_top=False, weights=None, **kwargs), weights
    if weights == "imagenet":
        file, folder_url = imagenet_file(name, kwargs.get("alpha", 1.0), _square_side(kwargs["input_shape"]))
        try:
            return factory(include_top=False, weights="imagenet", **kwargs), "imagenet"
        except Exception as exc:  # noqa: BLE001 - any download or file failure means: no weights
            raise EdgeFMError(
                f"{name}: ImageNet weights are not in Keras' cache and could not be fetched "
                f"({_reason(exc)}): download {folder_url}{file} into {keras_cache()}/, or pass "
                "--weights FILE (a Keras weights file) or --weights none."
            ) from None
    path = Path(weights).expanduser()
    if not path.is_file():
        raise EdgeFMError(
            f"--weights {weights}: no such file; pass 'imagenet', 'none' or a Keras weights file (.h5) "
            f"of {name} without its top."
        )
    try:
        return factory(include_top=False, weights=str(path), **kwargs), str(path)
    except Exception as exc:  # noqa: BLE001 - a wrong or corrupt file fails in many ways
        raise EdgeFMError(
            f"--weights {path} does not hold {name} weights of this shape ({_reason(exc)}): pass the "
            f"weights of a {name} without its top, built with the same options."
        ) from None


def _square_side(shape) -> int | None:
    return int(shape[0]) if shape[0] == shape[1] else None


def _reason(exc: Exception) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:160]}"


def check_weights(name: str, weights: str | None) -> None:
    """Refuses a ``weights`` value that is neither None, ``"imagenet"`` nor a path, before any build."""
    if weights is not None and (not isinstance(weights, str) or not weights):
        raise EdgeFMError(f"{name} weights must be 'imagenet', none or a weights file, not {weights!r}.")


def _network_shape(name: str, input_shape, input_size: int | None, num_classes: int) -> tuple[int, int, int]:
    """The shape the backbone runs at: ``input_size`` squared when the model resizes, else the input's."""
    if input_size is not None:
        if input_size < MIN_SIDE:
            raise EdgeFMError(f"{name} input size {input_size} is too small; use {MIN_SIDE} or more.")
        check_input_shape(name, input_shape, 1, num_classes)
        return input_size, input_size, 3
    check_input_shape(name, input_shape, MIN_SIDE, num_classes)
    return int(input_shape[0]), int(input_shape[1]), 3


@register_model(
    "mobilenetv2",
    paper="cnn-94.38-mobilenetv2-93.76.txt",
    paper_accuracy=0.9376,
    description="Keras MobileNetV2 (alpha, input size) with a GAP-dense head",
)
def mobilenetv2(
    *,
    alpha: float = 1.0,
    input_size: int | None = 32,
    weights: str | None = None,
    head_units: int = 128,
    head_activation: str = "relu6",
    dropout: float = 0.5,
    bn_momentum: float = 0.99,
    input_shape: tuple[int, ...] = IMAGE_SHAPE,
    num_classes: int = NUM_CLASSES,
) -> keras.Model:
    """Builds MobileNetV2 on the (resized, grey-to-RGB) image, with the paper's GAP-dense head.

    Args:
        alpha: Width multiplier of the backbone.
        input_size: Side the image is resized to inside the model (32 or more); None: the image's
            own size (at least 32x32), as for data other than Fashion-MNIST unless set.
        weights: ``None`` (train from scratch), ``"imagenet"`` (Keras' cache, else downloaded; with
            neither, an error that names the file to fetch) or the path of a Keras weights file of
            MobileNetV2 without its top.
        head_units: Width of the dense layer after global average pooling (0: none).
        head_activation: Activation of that layer: ``relu6`` (default) or ``relu``, which every
            runtime has (TFLite Micro included), or ``gelu``, which TFLite Micro does not run.
        dropout: Dropout before the classifier.
        bn_momentum: Momentum of every batch-norm's moving averages. Keras' 0.999 suits ImageNet's
            long schedules; on a few thousand steps the averages would still be mostly their
            initial values and inference would fail, so 0.99 by default.
    """
    check_weights("mobilenetv2", weights)
    network = _network_shape("mobilenetv2", input_shape, input_size, num_classes)
    if alpha <= 0:
        raise EdgeFMError(f"mobilenetv2 alpha {alpha} must be positive, e.g. 0.35, 0.5 or 1.0.")
    if head_activation not in HEAD_ACTIVATIONS:
        raise EdgeFMError(
            f"mobilenetv2 head_activation {head_activation!r} is not one of {', '.join(HEAD_ACTIVATIONS)}."
        )
    inputs = raw_input(shape=input_shape)
    # MobileNetV2 was trained on pixels scaled to [-1, 1].
    x = preprocess(inputs, size=input_size, rgb=True, scale=1 / 127.5, offset=-1.0)
    base, loaded = _backbone(
        keras.applications.MobileNetV2,
        "mobilenetv2",
        weights,
        input_tensor=x,
        input_shape=network,
        alpha=alpha,
    )
    for layer in base.layers:
        if isinstance(layer, layers.BatchNormalization):
            layer.momentum = bn_momentum
    x = base.output
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    if head_units:
        if head_activation == "gelu":
            x = layers.Dense(head_units, activation="gelu", name="head_dense")(x)
        else:  # a ReLU layer, as the backbone's own ReLU6s, which converters fuse into the dense layer
            x = layers.Dense(head_units, name="head_dense")(x)
            x = layers.ReLU(max_value=6.0 if head_activation == "relu6" else None, name="head_relu")(x)
        x = layers.BatchNormalization(name="head_bn")(x)
    x = layers.Dropout(dropout, name="head_drop")(x)
    model = keras.Model(inputs, classifier(x, num_classes=num_classes), name="mobilenetv2")
    model.pretrained = loaded
    # The layers that hold pretrained weights, which a run may freeze for its first epochs.
    model.backbone_layers = tuple(layer.name for layer in base.layers if layer.weights) if loaded else ()
    return model


@register_model(
    "resnet50",
    paper="resnet50-transfer-dash-91.75.txt",
    paper_accuracy=0.9175,
    description="Keras ResNet50 transfer, GAP-256-128-10 head",
)
def resnet50(
    *,
    input_size: int | None = 224,
    weights: str | None = None,
    trainable_layers: int = 10,
    head: tuple[int, ...] = (256, 128),
    input_shape: tuple[int, ...] = IMAGE_SHAPE,
    num_classes: int = NUM_CLASSES,
) -> keras.Model:
    """Builds ResNet50 on the resized, grey-to-RGB image with the paper's GAP-256-128-10 head.

    With ImageNet weights (or a weights file) only the last ``trainable_layers`` layers of the
    backbone are trained, as in the paper; without them the whole network trains.

    Args:
        input_size: Side the image is resized to inside the model (paper: 224; 32 or more); None:
            the image's own size (at least 32x32), as for data other than Fashion-MNIST unless set.
        weights: ``None`` (from scratch), ``"imagenet"`` (Keras' cache, else downloaded; with
            neither, an error that names the file to fetch) or the path of a Keras weights file of
            ResNet50 without its top; the ``paper`` preset asks for ImageNet weights, as the paper did.
        trainable_layers: Backbone layers left trainable when pretrained weights are used.
        head: Widths of the ReLU dense layers after global average pooling.
    """
    check_weights("resnet50", weights)
    network = _network_shape("resnet50", input_shape, input_size, num_classes)
    inputs = raw_input(shape=input_shape)
    if weights is not None:
        # Caffe-style preprocessing, which the ImageNet weights expect: 0-255 minus channel means.
        x = preprocess(inputs, size=input_size, rgb=True, scale=1.0, channel_mean=(103.939, 116.779, 123.68))
    else:
        x = preprocess(inputs, size=input_size, rgb=True)
    base, loaded = _backbone(
        keras.applications.ResNet50, "resnet50", weights, input_tensor=x, input_shape=network
    )
    if loaded:
        for layer in base.layers[: max(0, len(base.layers) - trainable_layers)]:
            layer.trainable = False
    x = base.output
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    for i, width in enumerate(head, start=1):
        x = layers.Dense(width, activation="relu", name=f"head_dense{i}")(x)
    model = keras.Model(inputs, classifier(x, num_classes=num_classes), name="resnet50")
    model.pretrained = loaded
    # The layers that hold pretrained weights, which a run may freeze for its first epochs.
    model.backbone_layers = tuple(layer.name for layer in base.layers if layer.weights) if loaded else ()
    return model

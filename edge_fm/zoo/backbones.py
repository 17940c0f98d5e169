"""ImageNet-shaped backbones from Keras applications: MobileNetV2 (93-93.76%) and ResNet50 (91.75%)."""

from __future__ import annotations

import warnings

from edge_fm.compat import keras
from edge_fm.errors import EdgeFMError
from edge_fm.zoo.layers import classifier, layers, preprocess, raw_input
from edge_fm.zoo.registry import register_model

# Activations of mobilenetv2's head; ReLU6 and ReLU run everywhere, GELU not under TFLite Micro.
HEAD_ACTIVATIONS = ("relu6", "relu", "gelu")


class EdgeFMWarning(UserWarning):
    """Something the user should know that does not stop the work (e.g. weights not available)."""


def _backbone(factory, weights: str | None, **kwargs):
    """Builds a Keras application without its top, falling back to random weights when needed.

    Callers pass ``input_tensor``: the application's layers then join the caller's graph
    directly instead of forming a nested model, which tfmot's pruning and quantization need.
    """
    if weights not in (None, "imagenet"):
        raise EdgeFMError(f"weights must be None or 'imagenet', not {weights!r}.")
    if weights == "imagenet":
        try:
            return factory(include_top=False, weights="imagenet", **kwargs), "imagenet"
        except Exception as exc:  # noqa: BLE001 - any download or file failure means: no weights
            warnings.warn(
                f"ImageNet weights unavailable ({type(exc).__name__}: {str(exc)[:120]}); "
                "training from scratch instead. Put the Keras weights file in ~/.keras/models to use them.",
                EdgeFMWarning,
                stacklevel=3,
            )
    return factory(include_top=False, weights=None, **kwargs), None


@register_model(
    "mobilenetv2",
    paper="cnn-94.38-mobilenetv2-93.76.txt",
    paper_accuracy=0.9376,
    description="Keras MobileNetV2 (alpha, input size) with a GAP-dense head",
)
def mobilenetv2(
    *,
    alpha: float = 1.0,
    input_size: int = 32,
    weights: str | None = None,
    head_units: int = 128,
    head_activation: str = "relu6",
    dropout: float = 0.5,
    bn_momentum: float = 0.99,
) -> keras.Model:
    """Builds MobileNetV2 on the resized, grey-to-RGB image, with the paper's GAP-dense head.

    Args:
        alpha: Width multiplier of the backbone.
        input_size: Side the 28x28 image is resized to (32 or more).
        weights: ``None`` (train from scratch) or ``"imagenet"`` (used when the weights file can be
            loaded; otherwise a warning and random weights).
        head_units: Width of the dense layer after global average pooling (0: none).
        head_activation: Activation of that layer: ``relu6`` (default) or ``relu``, which every
            runtime has (TFLite Micro included), or ``gelu``, which TFLite Micro does not run.
        dropout: Dropout before the classifier.
        bn_momentum: Momentum of every batch-norm's moving averages. Keras' 0.999 suits ImageNet's
            long schedules; on a few thousand steps the averages would still be mostly their
            initial values and inference would fail, so 0.99 by default.
    """
    if input_size < 32:
        raise EdgeFMError(f"mobilenetv2 input size {input_size} is too small; use 32 or more.")
    if alpha <= 0:
        raise EdgeFMError(f"mobilenetv2 alpha {alpha} must be positive, e.g. 0.35, 0.5 or 1.0.")
    if head_activation not in HEAD_ACTIVATIONS:
        raise EdgeFMError(
            f"mobilenetv2 head_activation {head_activation!r} is not one of {', '.join(HEAD_ACTIVATIONS)}."
        )
    inputs = raw_input()
    # MobileNetV2 was trained on pixels scaled to [-1, 1].
    x = preprocess(inputs, size=input_size, rgb=True, scale=1 / 127.5, offset=-1.0)
    base, loaded = _backbone(
        keras.applications.MobileNetV2,
        weights,
        input_tensor=x,
        input_shape=(input_size, input_size, 3),
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
    model = keras.Model(inputs, classifier(x), name="mobilenetv2")
    model.pretrained = loaded
    return model


@register_model(
    "resnet50",
    paper="resnet50-transfer-dash-91.75.txt",
    paper_accuracy=0.9175,
    description="Keras ResNet50 transfer, GAP-256-128-10 head",
)
def resnet50(
    *,
    input_size: int = 224,
    weights: str | None = None,
    trainable_layers: int = 10,
    head: tuple[int, ...] = (256, 128),
) -> keras.Model:
    """Builds ResNet50 on the resized, grey-to-RGB image with the paper's GAP-256-128-10 head.

    With ImageNet weights only the last ``trainable_layers`` layers of the backbone are trained,
    as in the paper; without them the whole network trains.

    Args:
        input_size: Side the 28x28 image is resized to (paper: 224; 32 or more).
        weights: ``None`` (from scratch) or ``"imagenet"`` (when loadable, else a warning and
            random weights); the ``paper`` preset asks for ImageNet weights, as the paper did.
        trainable_layers: Backbone layers left trainable when ImageNet weights are used.
        head: Widths of the ReLU dense layers after global average pooling.
    """
    if input_size < 32:
        raise EdgeFMError(f"resnet50 input size {input_size} is too small; use 32 or more.")
    inputs = raw_input()
    if weights == "imagenet":
        # Caffe-style preprocessing, which the ImageNet weights expect: 0-255 minus channel means.
        x = preprocess(inputs, size=input_size, rgb=True, scale=1.0, channel_mean=(103.939, 116.779, 123.68))
    else:
        x = preprocess(inputs, size=input_size, rgb=True)
    base, loaded = _backbone(
        keras.applications.ResNet50, weights, input_tensor=x, input_shape=(input_size, input_size, 3)
    )
    if loaded:
        for layer in base.layers[: max(0, len(base.layers) - trainable_layers)]:
            layer.trainable = False
    x = base.output
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    for i, width in enumerate(head, start=1):
        x = layers.Dense(width, activation="relu", name=f"head_dense{i}")(x)
    model = keras.Model(inputs, classifier(x), name="resnet50")
    model.pretrained = loaded
    return model

"""Building blocks shared by the zoo: in-model preprocessing, the classifier head, MAC counting."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from edge_fm.compat import keras
from edge_fm.data.datasets import IMAGE_SHAPE, NUM_CLASSES
from edge_fm.errors import EdgeFMError

layers = keras.layers


def raw_input(name: str = "image", shape: Sequence[int] = IMAGE_SHAPE) -> keras.layers.Layer:
    """The input every zoo model takes: a raw image with values 0-255, ``28x28x1`` by default.

    Args:
        name: The input's name.
        shape: ``(height, width, channels)`` of the data the model is built for.
    """
    return keras.Input(shape=tuple(int(d) for d in shape), name=name)


def check_input_shape(name: str, shape: Sequence[int], minimum: int, num_classes: int) -> None:
    """Refuses an input shape or class count an architecture cannot be built for, in one line.

    Args:
        name: The architecture, for the message.
        shape: ``(height, width, channels)``.
        minimum: The smallest side the architecture's pooling leaves at least one pixel of.
        num_classes: Classes of the output.

    Raises:
        EdgeFMError: A side under ``minimum``, channels other than 1 or 3, or fewer than 2 classes.
    """
    if len(shape) != 3 or shape[2] not in (1, 3):
        raise EdgeFMError(f"{name}: input shape {tuple(shape)} must be (height, width, 1 or 3).")
    if min(shape[:2]) < minimum:
        raise EdgeFMError(
            f"{name} needs images of at least {minimum}x{minimum} pixels, got {shape[1]}x{shape[0]}; "
            f"pass --image-size {minimum} (or more)."
        )
    if num_classes < 2:
        raise EdgeFMError(f"{name}: a classifier needs at least 2 classes, got {num_classes}.")


def preprocess(
    x,
    size: int | None = None,
    rgb: bool = False,
    scale: float = 1.0 / 255.0,
    offset: float = 0.0,
    channel_mean: Sequence[float] | None = None,
):
    """Maps raw 0-255 pixels to what a network expects, inside the model.

    Keeping this in the graph means an exported artifact takes camera-like pixels and an app needs
    no preprocessing code of its own beyond bringing the image to the model's input size.

    Args:
        x: The raw input tensor.
        size: Side of the network's input; the image is resized bilinearly when its own height
            and width are not ``size`` (None: the network runs at the input's size).
        rgb: Repeat a grey channel three times (for ImageNet-shaped backbones); RGB input is kept.
        scale: Multiplier applied to the raw pixels.
        offset: Added after scaling.
        channel_mean: Per-channel mean subtracted after scaling (Caffe-style backbones).
    """
    height, width, channels = (int(d) for d in x.shape[1:])
    x = layers.Rescaling(scale, offset, name="rescale")(x)
    if size is not None and (size, size) != (height, width):
        x = layers.Resizing(size, size, interpolation="bilinear", name="resize")(x)
    if rgb and channels == 1:
        x = layers.Concatenate(name="grey_to_rgb")([x, x, x])
    if channel_mean is not None:
        x = layers.Normalization(
            mean=list(channel_mean), variance=[1.0] * len(channel_mean), name="channel_mean"
        )(x)
    return x


def classifier(x, name: str = "logits", num_classes: int = NUM_CLASSES):
    """The output: a dense layer (10-way by default), then a softmax kept in float32 under mixed precision.

    The dense layer is the head that a run started from another dataset's model replaces.
    """
    x = layers.Dense(num_classes, name=name)(x)
    return layers.Activation("softmax", dtype="float32", name="probs")(x)


def count_macs(model: keras.Model) -> int:
    """Multiply-accumulates for one image, computed from the built model's layers.

    Counts convolutions (standard, depthwise, separable) and dense layers, which dominate the
    cost; batch-norm, activations and pooling are left out, as is usual for MAC figures.
    """
    total = 0
    for layer in _leaf_layers(model):
        total += _layer_macs(layer)
    return int(total)


def count_activations(model: keras.Model) -> int:
    """Output values of every layer for one image: what a training step keeps for its backward pass."""
    total = 0
    for layer in _leaf_layers(model):
        try:
            total += int(np.prod(_shape(layer.output_shape)))
        except (AttributeError, RuntimeError, TypeError):  # no single, fully known output shape
            continue
    return total


def _leaf_layers(model):
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _leaf_layers(layer)
        else:
            yield layer


def _layer_macs(layer) -> int:
    if isinstance(layer, layers.DepthwiseConv2D):
        kh, kw = layer.kernel_size
        out = _shape(layer.output_shape)
        return int(np.prod(out)) * kh * kw
    if isinstance(layer, layers.SeparableConv2D):
        kh, kw = layer.kernel_size
        cin = _shape(layer.input_shape)[-1]
        out = _shape(layer.output_shape)
        depth = out[0] * out[1] * cin * layer.depth_multiplier * kh * kw
        return int(depth + out[0] * out[1] * cin * layer.depth_multiplier * out[2])
    if isinstance(layer, layers.Conv2D):
        kh, kw = layer.kernel_size
        cin = _shape(layer.input_shape)[-1]
        out = _shape(layer.output_shape)
        return int(np.prod(out)) * kh * kw * cin // layer.groups
    if isinstance(layer, layers.Dense):
        inp = _shape(layer.input_shape)
        return int(np.prod(inp)) * layer.units
    return 0


def _shape(shape) -> tuple[int, ...]:
    # Layers called once report a tuple; a list means several call sites, all alike here.
    if isinstance(shape, list):
        shape = shape[0]
    return tuple(int(d) for d in shape[1:])

"""Building blocks shared by the zoo: in-model preprocessing, the classifier head, MAC counting."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from edge_fm.compat import keras
from edge_fm.data.datasets import IMAGE_SHAPE, NUM_CLASSES
from edge_fm.errors import EdgeFMError

layers = keras.layers


def raw_input(name: str = "image") -> keras.layers.Layer:
    """The input every zoo model takes: a raw ``28x28x1`` image with values 0-255."""
    return keras.Input(shape=IMAGE_SHAPE, name=name)


def preprocess(
    x,
    size: int = 28,
    rgb: bool = False,
    scale: float = 1.0 / 255.0,
    offset: float = 0.0,
    channel_mean: Sequence[float] | None = None,
):
    """Maps raw 0-255 pixels to what a network expects, inside the model.

    Keeping this in the graph means an exported artifact takes camera-like pixels and an app needs
    no preprocessing code of its own beyond resizing to 28x28 grey.

    Args:
        x: The raw input tensor.
        size: Side of the network's input; the image is resized bilinearly when it is not 28.
        rgb: Repeat the grey channel three times (for ImageNet-shaped backbones).
        scale: Multiplier applied to the raw pixels.
        offset: Added after scaling.
        channel_mean: Per-channel mean subtracted after scaling (Caffe-style backbones).
    """
    x = layers.Rescaling(scale, offset, name="rescale")(x)
    if size != IMAGE_SHAPE[0]:
        if size < 32 and rgb:
            raise EdgeFMError(f"input size {size} is too small for this backbone; use 32 or more.")
        x = layers.Resizing(size, size, interpolation="bilinear", name="resize")(x)
    if rgb:
        x = layers.Concatenate(name="grey_to_rgb")([x, x, x])
    if channel_mean is not None:
        x = layers.Normalization(
            mean=list(channel_mean), variance=[1.0] * len(channel_mean), name="channel_mean"
        )(x)
    return x


def classifier(x, name: str = "logits"):
    """The 10-way output: a dense layer, then a softmax kept in float32 under mixed precision."""
    x = layers.Dense(NUM_CLASSES, name=name)(x)
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

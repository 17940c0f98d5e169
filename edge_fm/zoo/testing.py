"""A tiny architecture that exists to keep the test suite fast; not for real use."""

from __future__ import annotations

from edge_fm.compat import keras
from edge_fm.zoo.layers import classifier, layers, preprocess, raw_input
from edge_fm.zoo.registry import register_model


@register_model("tiny-cnn", description="16/32-filter CNN for fast tests", testing=True)
def tiny_cnn(*, width: int = 16) -> keras.Model:
    """Builds a one-conv network with a few thousand parameters.

    Args:
        width: Filters of the convolution.
    """
    inputs = raw_input()
    x = preprocess(inputs)
    x = layers.Conv2D(width, 3, strides=2, padding="same", activation="relu", name="conv1")(x)
    # A fast-moving average, so the few steps of a test already give usable inference statistics.
    x = layers.BatchNormalization(momentum=0.9, name="bn1")(x)
    x = layers.Conv2D(width * 2, 3, strides=2, padding="same", activation="relu", name="conv2")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inputs, classifier(x), name="tiny_cnn")

"""A tiny architecture that exists to keep the test suite fast; not for real use."""

from __future__ import annotations

from edge_fm.compat import keras
from edge_fm.data.datasets import IMAGE_SHAPE, NUM_CLASSES
from edge_fm.zoo.layers import check_input_shape, classifier, layers, preprocess, raw_input
from edge_fm.zoo.registry import register_model


@register_model("tiny-cnn", description="16/32-filter CNN for fast tests", testing=True)
def tiny_cnn(
    *, width: int = 16, input_shape: tuple[int, ...] = IMAGE_SHAPE, num_classes: int = NUM_CLASSES
) -> keras.Model:
    """Builds a two-conv network of about 20k parameters.

    The first convolution is followed directly by batch-norm, so tests also exercise the
    conv + BN folding of quantization-aware training.

    Args:
        width: Filters of the first convolution (the second has twice as many).
    """
    check_input_shape("tiny-cnn", input_shape, 4, num_classes)  # two 2x2 pools
    inputs = raw_input(shape=input_shape)
    x = preprocess(inputs)
    x = layers.Conv2D(width, 3, padding="same", use_bias=False, name="conv1")(x)
    # A fast-moving average, so the few steps of a test already give usable inference statistics.
    x = layers.BatchNormalization(momentum=0.9, name="bn1")(x)
    x = layers.ReLU(name="relu1")(x)
    x = layers.MaxPooling2D(2, name="pool1")(x)
    x = layers.Conv2D(width * 2, 3, padding="same", activation="relu", name="conv2")(x)
    x = layers.MaxPooling2D(2, name="pool2")(x)
    x = layers.Flatten(name="flatten")(x)
    return keras.Model(inputs, classifier(x, num_classes=num_classes), name="tiny_cnn")

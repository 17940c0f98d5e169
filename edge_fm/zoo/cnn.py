"""Plain convolutional networks from the papers: the 2-conv CNN (92%) and the BN CNN (94.38%)."""

from __future__ import annotations

from edge_fm.compat import keras
from edge_fm.data.datasets import IMAGE_SHAPE, NUM_CLASSES
from edge_fm.errors import EdgeFMError
from edge_fm.zoo.layers import check_input_shape, classifier, layers, preprocess, raw_input
from edge_fm.zoo.registry import register_model


@register_model(
    "cnn-2conv",
    paper="cnn-ann-92-88.txt",
    paper_accuracy=0.92,
    description="conv32-pool-conv64-pool-dense128, dropout",
)
def cnn_2conv(
    *,
    filters: tuple[int, int] = (32, 64),
    dense: int = 128,
    dropout: float = 0.25,
    dense_dropout: float = 0.5,
    input_shape: tuple[int, ...] = IMAGE_SHAPE,
    num_classes: int = NUM_CLASSES,
) -> keras.Model:
    """Builds the paper's two-convolution CNN.

    The paper gives the widths (32, 64), ReLU, max-pooling and dropout after each pooling step and
    a fully connected layer before the softmax; it leaves kernel size, dropout rates and the dense
    width unstated, so this uses the common 3x3 / 0.25 / 128 / 0.5.

    Args:
        filters: Filters of the two 3x3 convolutions.
        dense: Width of the hidden dense layer.
        dropout: Dropout after each pooling step.
        dense_dropout: Dropout after the dense layer.
    """
    check_input_shape("cnn-2conv", input_shape, 2 ** len(filters), num_classes)  # a 2x2 pool per conv
    inputs = raw_input(shape=input_shape)
    x = preprocess(inputs)
    for i, width in enumerate(filters, start=1):
        x = layers.Conv2D(width, 3, padding="same", activation="relu", name=f"conv{i}")(x)
        x = layers.MaxPooling2D(2, name=f"pool{i}")(x)
        x = layers.Dropout(dropout, name=f"drop{i}")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(dense, activation="relu", name="dense")(x)
    x = layers.Dropout(dense_dropout, name="dense_drop")(x)
    return keras.Model(inputs, classifier(x, num_classes=num_classes), name="cnn_2conv")


@register_model(
    "cnn-3conv-bn",
    paper="cnn-94.38-mobilenetv2-93.76.txt",
    paper_accuracy=0.9438,
    description="conv64/128/256 with BN, pool, dropout; dense128-BN",
)
def cnn_3conv_bn(
    *,
    filters: tuple[int, int, int] = (64, 128, 256),
    dropouts: tuple[float, float, float] = (0.2, 0.3, 0.4),
    dense: int = 128,
    dense_dropout: float = 0.5,
    input_size: int | None = 28,
    rgb: bool = False,
    input_shape: tuple[int, ...] = IMAGE_SHAPE,
    num_classes: int = NUM_CLASSES,
) -> keras.Model:
    """Builds the paper's BN CNN: three blocks of conv -> ReLU -> BN -> 2x2 max-pool -> dropout.

    The paper resized to 64x64 RGB; ``input_size=64, rgb=True`` reproduces that at about five
    times the cost. Kernel size and padding are unstated there; 3x3 'same' is used.

    Args:
        filters: Filters of the three 3x3 convolutions.
        dropouts: Dropout after each block.
        dense: Width of the dense layer of the head.
        dense_dropout: Dropout after the head's dense layer.
        input_size: Side the image is resized to inside the model (None: the image's own size,
            as for data other than Fashion-MNIST unless set).
        rgb: Repeat a grey channel to three channels.
    """
    minimum = 2 ** len(filters)  # a 2x2 pool per conv
    if input_size is not None and input_size < minimum:
        raise EdgeFMError(f"cnn-3conv-bn input size {input_size} is too small; use {minimum} or more.")
    # The input itself may be smaller when the model resizes it; else it is what the convs see.
    check_input_shape("cnn-3conv-bn", input_shape, 1 if input_size else minimum, num_classes)
    inputs = raw_input(shape=input_shape)
    x = preprocess(inputs, size=input_size, rgb=rgb)
    for i, (width, rate) in enumerate(zip(filters, dropouts), start=1):
        x = layers.Conv2D(width, 3, padding="same", activation="relu", name=f"conv{i}")(x)
        x = layers.BatchNormalization(name=f"bn{i}")(x)
        x = layers.MaxPooling2D(2, name=f"pool{i}")(x)
        x = layers.Dropout(rate, name=f"drop{i}")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(dense, activation="relu", name="dense")(x)
    x = layers.BatchNormalization(name="dense_bn")(x)
    x = layers.Dropout(dense_dropout, name="dense_drop")(x)
    return keras.Model(inputs, classifier(x, num_classes=num_classes), name="cnn_3conv_bn")

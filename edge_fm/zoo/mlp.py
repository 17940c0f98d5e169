"""The multilayer perceptron of Patel & Subramanian (``cnn-ann-92-88.txt``): 784-128-64-10, 88%."""

from __future__ import annotations

from edge_fm.compat import keras
from edge_fm.data.datasets import IMAGE_SHAPE, NUM_CLASSES
from edge_fm.zoo.layers import check_input_shape, classifier, layers, preprocess, raw_input
from edge_fm.zoo.registry import register_model


@register_model(
    "mlp",
    paper="cnn-ann-92-88.txt",
    paper_accuracy=0.88,
    description="MLP 784-128-64-10, ReLU, dropout 0.25",
)
def mlp(
    *,
    hidden: tuple[int, ...] = (128, 64),
    dropout: float = 0.25,
    input_shape: tuple[int, ...] = IMAGE_SHAPE,
    num_classes: int = NUM_CLASSES,
) -> keras.Model:
    """Builds the paper's ANN: flattened pixels, two ReLU hidden layers each followed by dropout.

    Args:
        hidden: Widths of the hidden layers.
        dropout: Dropout rate after each hidden layer.
    """
    check_input_shape("mlp", input_shape, 1, num_classes)
    inputs = raw_input(shape=input_shape)
    x = layers.Flatten(name="flatten")(preprocess(inputs))
    for i, width in enumerate(hidden, start=1):
        x = layers.Dense(width, activation="relu", name=f"dense{i}")(x)
        x = layers.Dropout(dropout, name=f"drop{i}")(x)
    return keras.Model(inputs, classifier(x, num_classes=num_classes), name="mlp")

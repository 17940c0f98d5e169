"""The VGG-style network with global average pooling of Guo, Li & Czartoryski (94.05%, ~198k params)."""

from __future__ import annotations

from edge_fm.compat import keras
from edge_fm.data.datasets import IMAGE_SHAPE, NUM_CLASSES
from edge_fm.errors import EdgeFMError
from edge_fm.zoo.layers import check_input_shape, classifier, layers, preprocess, raw_input
from edge_fm.zoo.registry import register_model


@register_model(
    "vgg-gap",
    paper="vgg-gap-94.05-198k-params.txt",
    paper_accuracy=0.9405,
    description="VGG stacks of 3x3 conv-BN-ReLU, He-normal, GAP head",
)
def vgg_gap(
    *,
    stages: tuple[tuple[int, ...], ...] = ((32, 32), (64, 64), (96, 96)),
    dropouts: tuple[float, ...] = (0.1, 0.2, 0.3),
    input_shape: tuple[int, ...] = IMAGE_SHAPE,
    num_classes: int = NUM_CLASSES,
) -> keras.Model:
    """Builds a VGG-style net: stacked 3x3 convs with BN and ReLU, pooling and dropout per stage, GAP.

    The paper states 3x3 kernels, BN in all layers, ReLU, He-normal initialisation, dropout of
    0.1-0.3 after conv/pool stages and GAP + softmax instead of dense layers, with 198,351
    parameters, but not the layer list; these default widths give a net of about that size.

    Args:
        stages: Filters of the convolutions of each stage; a 2x2 max-pool ends every stage but the last.
        dropouts: Dropout after each stage.
    """
    if len(dropouts) != len(stages) or not stages:
        raise EdgeFMError(
            f"vgg-gap needs one dropout rate per stage: got {len(stages)} stage(s) and {len(dropouts)} rate(s); "
            "pass both, e.g. --arch-opt stages=[[32],[64]] --arch-opt dropouts=[0.1,0.2]."
        )
    check_input_shape("vgg-gap", input_shape, 2 ** (len(stages) - 1), num_classes)  # a pool between stages
    inputs = raw_input(shape=input_shape)
    x = preprocess(inputs)
    for s, (widths, rate) in enumerate(zip(stages, dropouts), start=1):
        for c, width in enumerate(widths, start=1):
            # Bias is redundant before batch-norm, which adds its own shift.
            x = layers.Conv2D(
                width, 3, padding="same", use_bias=False, kernel_initializer="he_normal", name=f"conv{s}_{c}"
            )(x)
            x = layers.BatchNormalization(name=f"bn{s}_{c}")(x)
            x = layers.ReLU(name=f"relu{s}_{c}")(x)
        if s < len(stages):
            x = layers.MaxPooling2D(2, name=f"pool{s}")(x)
        x = layers.Dropout(rate, name=f"drop{s}")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inputs, classifier(x, num_classes=num_classes), name="vgg_gap")

"""The edge-cnn family: compact nets of edge-fm's own for the accuracy/size/latency front.

Both are a 3x3 stem conv, then stages of residual blocks (residual where the width does not
change) with a 2x2 max-pool between stages, and a global-average-pooling head. A block is either
depthwise-separable (a 3x3 depthwise conv, then a 1x1 pointwise conv, each with batch norm), about
a ninth of a full 3x3 conv in weights and multiply-accumulates, or a full 3x3 conv with batch norm;
the kind is chosen for all stages or per stage.
Fewer MACs are not always less time: on a CPU with AVX-512 VNNI, int8 shapes of full convs run two
to 2.6 times more MACs per microsecond than separable ones (docs/design/full-convolutions.md), so the
shipped edge-cnn-tiny uses full convs. The stem is a plain conv because a depthwise conv on one
channel learns little.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

from edge_fm.compat import keras
from edge_fm.data.datasets import IMAGE_SHAPE, NUM_CLASSES
from edge_fm.errors import EdgeFMError, unknown_choice
from edge_fm.zoo.layers import check_input_shape, classifier, layers, preprocess, raw_input
from edge_fm.zoo.registry import register_model


def _conv_bn_relu(x, filters: int, name: str, kernel: int = 3):
    x = layers.Conv2D(
        filters, kernel, padding="same", use_bias=False, kernel_initializer="he_normal", name=name
    )(x)
    x = layers.BatchNormalization(name=f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x)


def _residual_relu(x, shortcut, name: str):
    """The end of every block: add the block's input where the width did not change, then ReLU."""
    if shortcut.shape[-1] == x.shape[-1]:
        x = layers.Add(name=f"{name}_add")([x, shortcut])
    return layers.ReLU(name=f"{name}_relu")(x)


def separable_block(x, filters: int, name: str):
    """depthwise 3x3 -> BN -> ReLU -> pointwise 1x1 -> BN (-> + input) -> ReLU."""
    shortcut = x
    x = layers.DepthwiseConv2D(3, padding="same", use_bias=False, name=f"{name}_dw")(x)
    x = layers.BatchNormalization(name=f"{name}_dw_bn")(x)
    x = layers.ReLU(name=f"{name}_dw_relu")(x)
    x = layers.Conv2D(filters, 1, use_bias=False, kernel_initializer="he_normal", name=f"{name}_pw")(x)
    x = layers.BatchNormalization(name=f"{name}_pw_bn")(x)
    return _residual_relu(x, shortcut, name)


def conv_block(x, filters: int, name: str):
    """3x3 conv -> BN (-> + input) -> ReLU: a full conv, for CPUs whose int8 GEMM outruns depthwise."""
    shortcut = x
    x = layers.Conv2D(
        filters, 3, padding="same", use_bias=False, kernel_initializer="he_normal", name=f"{name}_conv"
    )(x)
    x = layers.BatchNormalization(name=f"{name}_bn")(x)
    return _residual_relu(x, shortcut, name)


BLOCKS = {"separable": separable_block, "conv": conv_block}


def stage_blocks(block: str | Sequence[str], stages: int, name: str) -> list[str]:
    """One block kind per stage: a single kind for all, or a list with one per stage."""
    kinds = [block] * stages if isinstance(block, str) else list(block)
    if len(kinds) != stages:
        raise EdgeFMError(
            f"{name} needs one block kind for all stages or one per stage ({stages}); got {kinds}."
        )
    for kind in kinds:
        if kind not in BLOCKS:
            raise unknown_choice(f"{name} block", kind, BLOCKS)
    return kinds


def build_edge_cnn(
    name: str,
    *,
    stem: int,
    widths: tuple[int, ...],
    blocks: tuple[int, ...],
    dropout: float,
    block: str | Sequence[str],
    input_shape: tuple[int, ...] = IMAGE_SHAPE,
    num_classes: int = NUM_CLASSES,
) -> keras.Model:
    """Builds the family member ``name``; each member registers this with its own defaults.

    Args:
        name: The member's registry name, which also names the Keras model and the messages.
        stem: Filters of the full-resolution 3x3 stem conv.
        widths: Channels of each stage (28x28, 14x14, 7x7).
        blocks: Blocks per stage; 0 leaves the stage to the stem and its pool.
        dropout: Dropout before the classifier.
        block: 'separable' (depthwise + pointwise) or 'conv' (a full 3x3 conv), for every stage, or a
            list with one per stage (e.g. a full conv at 28x28, where depthwise is slowest per MAC, then separable).
        input_shape, num_classes: As every registered builder (:func:`~edge_fm.zoo.registry.register_model`).
    """
    if len(widths) != len(blocks) or min(blocks) < 0 or max(blocks) < 1:
        raise EdgeFMError(
            f"{name} needs one block count (>= 0, not all 0) per stage width; "
            f"got widths {list(widths)} and blocks {list(blocks)}."
        )
    kinds = stage_blocks(block, len(widths), name)
    # Each stage after the first halves the side: at least one pixel must reach the last.
    check_input_shape(name, input_shape, 2 ** (len(widths) - 1), num_classes)
    inputs = raw_input(shape=input_shape)
    x = _conv_bn_relu(preprocess(inputs), stem, "stem")
    for s, (width, count, kind) in enumerate(zip(widths, blocks, kinds), start=1):
        if s > 1:
            x = layers.MaxPooling2D(2, name=f"pool{s - 1}")(x)
        for b in range(1, count + 1):
            x = BLOCKS[kind](x, width, f"s{s}b{b}")
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    if dropout:
        x = layers.Dropout(dropout, name="drop")(x)
    return keras.Model(inputs, classifier(x, num_classes=num_classes), name=name.replace("-", "_"))


# The members: each one's description and its defaults of build_edge_cnn's options.
MEMBERS = {
    # The accurate member: about a third of cnn-3conv-bn's weights and fewer MACs.
    "edge-cnn": (
        "edge-fm's accurate net: separable residual stages 64/128/256, GAP",
        dict(stem=32, widths=(64, 128, 256), blocks=(2, 3, 3), dropout=0.2, block="separable"),
    ),
    # The small member: under 100 KB as int8, a few million MACs per image. Shaped for int8 latency
    # (experiments/tiny_design.py): at 28x28 every channel costs the most, so only the 16-filter stem
    # runs there, and the blocks are full 3x3 convs, the fastest per MAC on the AVX-512 VNNI CPU it
    # was timed on (docs/design/full-convolutions.md). The previous, separable shape (stem 16, widths
    # 32/64/128, blocks 1/2/3, block 'separable') was the faster one on another CPU.
    "edge-cnn-tiny": (
        "edge-fm's small net: a 16-filter stem, pool, full-conv residual stages 32 and 64, GAP",
        dict(stem=16, widths=(16, 32, 64), blocks=(0, 2, 2), dropout=0.1, block="conv"),
    ),
}


def _register_members() -> None:
    for name, (description, defaults) in MEMBERS.items():
        register_model(name, description=description)(functools.partial(build_edge_cnn, name, **defaults))


_register_members()

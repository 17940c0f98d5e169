"""Batch-norm folding: a batch norm that feeds a Dense becomes part of that Dense's weights.

Example:
    >>> folded = fold_batch_norms_into_dense(model)  # doctest: +SKIP
"""

from __future__ import annotations

import numpy as np

from edge_fm.compat import keras


def fold_batch_norms_into_dense(model: keras.Model, scale_into_producer: bool = False) -> keras.Model:
    """Returns ``model`` with every batch norm that feeds only a Dense (through dropout) folded away.

    Why before QAT: QAT fake-quantizes an unfolded batch norm's output but not its multipliers,
    which are rounded to int8 only at conversion; when they span 1000:1 (mobilenetv2's head) most
    round to zero. Folded first, QAT sees and trains the weights that ship.

    By default both the multipliers and the shift go forward into the next Dense, scaling its input
    rows. With ``scale_into_producer``, where the batch norm follows a Dense with a ReLU (or no
    activation) and every multiplier is positive, the multipliers go back into that Dense's output
    columns instead (ReLU(a*z) = a*ReLU(z) for a > 0) and only the shift goes forward. That suits
    post-training int8, which gives each output column of a Dense its own scale: the converter's
    own forward fold left the papers' CNN head at 46% as int8. QAT keeps the forward fold: tfmot
    gives a Dense's weights one scale in all, so the columns' spread costs it as much (measured on
    cnn-3conv-bn: validation 92.04% with the multipliers in the columns, 92.36% in the rows).

    Exact at inference (dropout is then the identity); ``model`` itself is left unchanged, and a
    model with nothing to fold is returned as is.
    """
    config = model.get_config()
    by_name = {layer["name"]: layer for layer in config["layers"]}
    consumers: dict[str, list[str]] = {}
    for layer in config["layers"]:
        for source in _inbound_names(layer):
            consumers.setdefault(source, []).append(layer["name"])
    outputs = {entry[0] for entry in config["output_layers"]}
    folds = {}
    for layer in model.layers:
        dense = _dense_fed_by(layer, consumers, by_name, outputs)
        if dense is not None:
            folds[layer.name] = dense
    if not folds:
        return model

    column_scales, row_folds = {}, {}
    for bn_name, dense in folds.items():
        scale, shift = _batch_norm_affine(model.get_layer(bn_name))
        producer = _inbound_names(by_name[bn_name])[0]
        if (
            scale_into_producer
            and np.all(scale > 0)
            and _passes_positive_scale(by_name[producer], consumers, outputs)
        ):
            column_scales[producer], scale = scale, None
        row_folds[dense] = (scale, shift)
    folded = keras.Model.from_config(_without_layers(config, folds, by_name, consumers))
    for layer in folded.layers:
        weights = model.get_layer(layer.name).get_weights()
        if layer.name in column_scales:
            weights = [w * column_scales[layer.name] for w in weights]  # kernel columns and bias
        if layer.name in row_folds:
            # Dense(a*x + c) = x @ (a[:, None] * W) + (c @ W + b)
            (scale, shift), (kernel, bias) = row_folds[layer.name], weights
            weights = [kernel if scale is None else scale[:, None] * kernel, shift @ kernel + bias]
        layer.set_weights(weights)
    return folded


def _without_layers(config: dict, removed, by_name, consumers) -> dict:
    # The functional config with each removed (single-input) layer's consumers fed by its input.
    for name in removed:
        source = _inbound_names(by_name[name])[0]
        for consumer in consumers[name]:
            for node in by_name[consumer]["inbound_nodes"]:
                for entry in node:
                    if entry[0] == name:
                        entry[0] = source
    config["layers"] = [layer for layer in config["layers"] if layer["name"] not in removed]
    return config


def _inbound_names(layer_config: dict) -> list[str]:
    return [entry[0] for node in layer_config["inbound_nodes"] for entry in node]


def _dense_fed_by(layer, consumers, by_name, outputs) -> str | None:
    # The Dense that alone consumes this batch norm's output, possibly through dropout, or None.
    if not isinstance(layer, keras.layers.BatchNormalization):
        return None
    if list(np.atleast_1d(layer.axis)) not in ([-1], [len(layer.input_shape) - 1]):
        return None
    name = layer.name
    while True:
        following = consumers.get(name, [])
        if len(following) != 1 or name in outputs:  # an output would change with the fold
            return None
        name = following[0]
        kind = by_name[name]["class_name"]
        if kind == "Dense":
            # Without a bias the batch norm's shift has nowhere to go.
            return name if by_name[name]["config"]["use_bias"] else None
        if kind != "Dropout":
            return None


def _batch_norm_affine(bn):
    # Inference-time batch norm as a*x + c, with a = gamma / sqrt(var + eps).
    values = dict(zip((w.name.split("/")[-1].split(":")[0] for w in bn.weights), bn.get_weights()))
    scale = values.get("gamma", 1.0) / np.sqrt(values["moving_variance"] + bn.epsilon)
    return scale, values.get("beta", 0.0) - values["moving_mean"] * scale


def _passes_positive_scale(producer: dict, consumers, outputs) -> bool:
    # A Dense read only by the batch norm, whose activation lets a positive per-unit scale through.
    name = producer["name"]
    return (
        producer["class_name"] == "Dense"
        and len(consumers.get(name, [])) == 1
        and name not in outputs
        and producer["config"].get("activation") in ("relu", "linear")
    )


def follows_linear_conv(layer) -> bool:
    """True when ``layer`` (a batch norm) directly follows a convolution without an activation:
    tfmot folds such a batch norm into that convolution itself, only then."""
    previous = layer._inbound_nodes[0].inbound_layers  # noqa: SLF001 - Keras exposes no public graph API
    previous = previous[0] if isinstance(previous, list) else previous
    conv = isinstance(previous, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D))
    return conv and getattr(previous.activation, "__name__", "") == "linear"

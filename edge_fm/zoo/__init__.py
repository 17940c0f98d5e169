"""The model zoo: a registry of architectures, one module per family.

Example:
    >>> from edge_fm.zoo import create_model, list_models, describe_model
    >>> list_models()  # doctest: +SKIP
    ['cnn-2conv', 'cnn-3conv-bn', 'mlp', 'mobilenetv2', 'resnet50', 'vgg-gap']
"""

from __future__ import annotations

from typing import Any

from edge_fm.zoo import backbones, cnn, edge, mlp, testing, vgg  # noqa: F401  (registers the families)
from edge_fm.zoo.backbones import EdgeFMWarning
from edge_fm.zoo.layers import count_macs
from edge_fm.zoo.registry import ModelSpec, check_options, create_model, get_spec, list_models, register_model


def describe_model(name: str, **options: Any) -> dict[str, Any]:
    """Builds ``name`` and returns what the zoo table shows of it.

    Returns:
        A dict with the name, description, parameter count, MACs per image, the network's input
        size (after in-model resizing), the paper and the paper's accuracy.
    """
    spec = get_spec(name)
    model = create_model(name, **options)
    return {
        "name": name,
        "description": spec.description,
        "params": int(model.count_params()),
        "macs": count_macs(model),
        "input_size": _network_input_size(model),
        "paper": spec.paper,
        "paper_accuracy": spec.paper_accuracy,
    }


def _network_input_size(model) -> str:
    for layer in model.layers:
        if layer.name == "resize":
            return f"{layer.height}x{layer.width}"
    height, width = model.input_shape[1:3]
    return f"{height}x{width}"


__all__ = [
    "EdgeFMWarning",
    "ModelSpec",
    "check_options",
    "count_macs",
    "create_model",
    "describe_model",
    "get_spec",
    "list_models",
    "register_model",
]

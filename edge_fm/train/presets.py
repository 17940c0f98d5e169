"""Training presets per architecture: ``paper`` (that paper's recipe) and ``quick`` (a smoke run).

Where a paper leaves a value unstated the preset uses a common default and says so in a comment;
every value is overridable (``edge-fm train ARCH --set key=value``).
"""

from __future__ import annotations

from typing import Any

from edge_fm.errors import EdgeFMError, unknown_choice
from edge_fm.zoo import get_spec

PRESET_NAMES = ("paper", "quick")

# A smoke run: a few epochs on at most 5,000 training images, so any architecture finishes in a
# minute or two on a laptop CPU. It checks the plumbing, not the accuracy.
_QUICK: dict[str, Any] = {"epochs": 5, "batch_size": 64, "max_train": 5000, "learning_rate": 1e-3}

_PAPER: dict[str, dict[str, Any]] = {
    # cnn-ann-92-88.txt: Adam 0.003, up to 25 epochs, early stopping on validation loss, 80/20
    # split. Batch size and patience are unstated: 64 and 5.
    "mlp": {
        "epochs": 25,
        "optimizer": "adam",
        "learning_rate": 3e-3,
        "batch_size": 64,
        "val_size": 12000,
        "early_stopping": 5,
        "monitor": "val_loss",
    },
    # Same paper: Adam 0.001, otherwise as the MLP.
    "cnn-2conv": {
        "epochs": 25,
        "optimizer": "adam",
        "learning_rate": 1e-3,
        "batch_size": 64,
        "val_size": 12000,
        "early_stopping": 5,
        "monitor": "val_loss",
    },
    # cnn-94.38-mobilenetv2-93.76.txt: Adam 0.001, label smoothing 0.1, 138 epochs with the best
    # at 113 (patience 25 inferred). The paper's 64x64 RGB input is an arch option (see zoo).
    "cnn-3conv-bn": {
        "epochs": 150,
        "optimizer": "adam",
        "learning_rate": 1e-3,
        "batch_size": 64,
        "label_smoothing": 0.1,
        "early_stopping": 25,
        "monitor": "val_loss",
    },
    # vgg-gap-94.05-198k-params.txt: Adam, batch 32, 100 epochs, horizontal flip + random crop.
    # Learning rate unstated: 0.001.
    "vgg-gap": {
        "epochs": 100,
        "optimizer": "adam",
        "learning_rate": 1e-3,
        "batch_size": 32,
        "augment": ("crop", "flip"),
        "crop_padding": 2,
    },
    # mobilenetv2-transfer-93.txt: 32x32, AdamW with cyclical learning rates, label smoothing 0.1,
    # batch 128, 30 epochs with early stopping, rotation/shift/shear/zoom augmentation, L2 in the
    # head. Unstated values (learning rates, decay, L2, patience) are common defaults.
    "mobilenetv2": {
        "arch_options": {"alpha": 1.0, "input_size": 32, "weights": None},
        "epochs": 30,
        "optimizer": "adamw",
        "learning_rate": 2e-3,
        "min_learning_rate": 1e-4,
        "schedule": "cyclical",
        "cycle_epochs": 6.0,
        "weight_decay": 1e-4,
        "label_smoothing": 0.1,
        "batch_size": 128,
        "augment": ("affine",),
        "early_stopping": 8,
        "monitor": "val_loss",
    },
    # resnet50-transfer-dash-91.75.txt: 224x224 RGB, ImageNet weights with the last 10 layers
    # trainable, Adam 0.001 with exponential decay, batch 16, 10 epochs, flip/rotation/zoom.
    "resnet50": {
        "arch_options": {"input_size": 224, "weights": "imagenet", "trainable_layers": 10},
        "epochs": 10,
        "optimizer": "adam",
        "learning_rate": 1e-3,
        "schedule": "exponential",
        "decay_rate": 0.9,
        "batch_size": 16,
        "augment": ("flip", "affine"),
        "shift": 0.0,
        "shear": 0.0,
    },
    # No paper: edge-fm's own recipe for its family ('paper' is each architecture's reference
    # recipe). Label-safe augmentation, label smoothing, AdamW with one-cycle; no early stopping
    # because a one-cycle schedule is meant to run to its end.
    "edge-cnn": {
        "epochs": 40,
        "optimizer": "adamw",
        "learning_rate": 3e-3,
        "weight_decay": 5e-4,
        "schedule": "onecycle",
        "warmup_epochs": 2.0,
        "batch_size": 128,
        "label_smoothing": 0.1,
        "augment": ("crop", "flip", "erasing"),
        "crop_padding": 2,
        "early_stopping": 0,
    },
    "edge-cnn-tiny": {
        "epochs": 40,
        "optimizer": "adamw",
        "learning_rate": 4e-3,
        "weight_decay": 2e-4,
        "schedule": "onecycle",
        "warmup_epochs": 2.0,
        "batch_size": 128,
        "label_smoothing": 0.1,
        "augment": ("crop", "flip"),
        "crop_padding": 2,
        "early_stopping": 0,
    },
    "tiny-cnn": {"epochs": 5, "learning_rate": 3e-3, "batch_size": 64},
}

# Architectures too heavy for a smoke run at their full size get a smaller input for 'quick'.
_QUICK_ARCH_OPTIONS: dict[str, dict[str, Any]] = {"resnet50": {"input_size": 32}}


def preset(arch: str, name: str) -> dict[str, Any]:
    """Returns the config values of preset ``name`` for architecture ``arch``.

    Raises:
        EdgeFMError: Unknown architecture or preset.
    """
    get_spec(arch)  # raises with the list of known architectures
    if name == "quick":
        values = dict(_QUICK)
        if arch in _QUICK_ARCH_OPTIONS:
            values["arch_options"] = dict(_QUICK_ARCH_OPTIONS[arch])
    elif name == "paper":
        if arch not in _PAPER:
            raise EdgeFMError(f"architecture {arch!r} has no paper preset; use --preset quick.")
        values = dict(_PAPER[arch])
    else:
        raise unknown_choice("preset", name, PRESET_NAMES)
    values["preset"] = name
    return values

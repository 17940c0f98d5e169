"""The training stage: configs, presets, the training loop, run directories and evaluation."""

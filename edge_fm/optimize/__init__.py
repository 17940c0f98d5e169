"""The optimization stage: pruning and quantization-aware training, model to model."""

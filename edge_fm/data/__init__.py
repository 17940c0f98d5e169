"""Datasets: Fashion-MNIST's IDX files, splits and the embedded sample."""

"""Whole pipelines: train, optimize, export, bench and report in one call, and sweeps of them."""

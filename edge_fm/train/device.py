"""The device a training run ran on, as its metrics and model card name it."""

from __future__ import annotations

import itertools
import os

from edge_fm.compat import GPUS, tf
from edge_fm.runner import cpu_model  # the runner's copy: it also reads a Raspberry Pi's Model line


def describe_device() -> str:
    """The device training ran on: the GPU's name, else the CPU model, core count and, when TensorFlow
    was held to fewer threads than cores, that thread count (it changes the training time severalfold)."""
    if GPUS:
        details = tf.config.experimental.get_device_details(GPUS[0])
        return f"GPU: {details.get('device_name', GPUS[0].name)}"
    cores, threads = _cores(), intra_op_threads()
    held = f", TensorFlow held to {threads} thread{'s' if threads > 1 else ''}" if threads < cores else ""
    return f"CPU: {cpu_model()} ({cores} cores{held})"


def describe_devices(history: list[dict]) -> str:
    """The device of each stretch of epochs in ``history`` (one line when a single device ran them all).

    Epochs from before devices were recorded are named as such rather than credited to this process.
    """
    stretches = [
        (device, [e["epoch"] for e in group])
        for device, group in itertools.groupby(history, key=lambda e: e.get("device", "device not recorded"))
    ]
    if len(stretches) <= 1:
        return stretches[0][0] if stretches else describe_device()
    spans = [
        f"epochs {epochs[0]}-{epochs[-1]}" if len(epochs) > 1 else f"epoch {epochs[0]}"
        for _, epochs in stretches
    ]
    return "; ".join(f"{device} for {span}" for (device, _), span in zip(stretches, spans))


def intra_op_threads() -> int:
    """TensorFlow's intra-op thread count: set in code, else by TF_NUM_INTRAOP_THREADS, else all cores."""
    try:
        from_env = int(os.environ.get("TF_NUM_INTRAOP_THREADS", "0"))
    except ValueError:
        from_env = 0
    return tf.config.threading.get_intra_op_parallelism_threads() or from_env or _cores()


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1

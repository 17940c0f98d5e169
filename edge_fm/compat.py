"""The one Keras import shim.

tensorflow-model-optimization 0.8 works only with the Keras 2 API, which TensorFlow 2.16+ ships
as the separate ``tf_keras`` package. Every module imports ``keras`` (and ``tf``) from here so that
the whole package, and tfmot, agree on one Keras.
"""

from __future__ import annotations

import os

# Must be set before TensorFlow is first imported, or tf.keras resolves to Keras 3.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from edge_fm.runner import native_stderr_silenced  # noqa: E402

with native_stderr_silenced():
    import tensorflow as tf  # noqa: E402
    import tf_keras as keras  # noqa: E402

    tf.get_logger().setLevel("ERROR")
    # Probing devices triggers the CUDA start-up messages; do it here, while they are hidden.
    GPUS = tf.config.list_physical_devices("GPU")

__all__ = ["GPUS", "keras", "native_stderr_silenced", "tf"]

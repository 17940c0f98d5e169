"""The one Keras import shim.

tensorflow-model-optimization 0.8 works only with the Keras 2 API, which TensorFlow 2.16+ ships
as the separate ``tf_keras`` package. Every module imports ``keras`` (and ``tf``) from here so that
the whole package, and tfmot, agree on one Keras.
"""

from __future__ import annotations

import contextlib
import os
import sys

# Must be set before TensorFlow is first imported, or tf.keras resolves to Keras 3.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@contextlib.contextmanager
def native_stderr_silenced():
    """Hides what native code writes to stderr (fd 2) inside the block.

    TensorFlow's C++ start-up lines (oneDNN, CUDA probing) and the TFLite converter's summaries
    go straight to fd 2, past Python and before absl logging is configured, so no environment
    variable hides them; they would break the CLI's promise of one clear line on errors.
    Python-level exceptions are unaffected.
    """
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, ValueError, OSError):
        yield
        return
    sys.stderr.flush()
    saved = os.dup(fd)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    try:
        yield
    finally:
        os.dup2(saved, fd)
        os.close(saved)
        os.close(devnull)


with native_stderr_silenced():
    import tensorflow as tf  # noqa: E402
    import tf_keras as keras  # noqa: E402

    tf.get_logger().setLevel("ERROR")
    # Probing devices triggers the CUDA start-up messages; do it here, while they are hidden.
    GPUS = tf.config.list_physical_devices("GPU")

__all__ = ["GPUS", "keras", "native_stderr_silenced", "tf"]

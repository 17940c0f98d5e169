"""The training input pipeline: batches of raw pixels, the papers' augmentations, drawn anew for
every image, and the targets a teacher's predictions soften.

Example:
    >>> batches = make_pipeline(images, labels, TrainConfig(arch="cnn-2conv"), training=True)  # doctest: +SKIP
"""

from __future__ import annotations

import math

import numpy as np

from edge_fm.compat import keras, tf
from edge_fm.data.datasets import NUM_CLASSES
from edge_fm.train.config import TrainConfig

AUTOTUNE = tf.data.AUTOTUNE


def make_pipeline(
    images: np.ndarray,
    labels: np.ndarray,
    cfg: TrainConfig,
    training: bool,
    teacher: keras.Model | None = None,
    first_epoch: int = 0,
    num_classes: int = NUM_CLASSES,
    class_weights: np.ndarray | None = None,
) -> tf.data.Dataset:
    """Batches raw uint8 images into float32 0-255 tensors with one-hot labels.

    Training pipelines shuffle every epoch and augment whole batches in parallel; the model
    itself scales the pixels, so evaluation sees exactly what a deployed model sees. With a
    ``teacher``, training targets mix in its softened predictions (see :func:`distilled_targets`).
    ``first_epoch``, the epochs a resumed run has already done, moves the shuffle's seed on.
    With ``class_weights`` (one per class) each training image carries its class's weight as a
    sample weight, which scales its loss. The arrays may be memory-mapped: tf.data reads them
    as tensors, batch by batch, with no Python object per image.
    """
    seed = cfg.seed + first_epoch if training else None
    dataset = _image_batches(images, labels, cfg.batch_size, seed)
    weights = None if class_weights is None or not training else tf.constant(class_weights, tf.float32)

    def to_tensors(x, y):
        y = tf.cast(y, tf.int32)
        batch = (tf.cast(x, tf.float32), tf.one_hot(y, num_classes))
        return batch if weights is None else (*batch, tf.gather(weights, y))

    dataset = dataset.map(to_tensors, num_parallel_calls=AUTOTUNE)
    if training and cfg.augment:
        dataset = dataset.map(lambda x, *rest: (augment_batch(x, cfg), *rest), num_parallel_calls=AUTOTUNE)
    if training and teacher is not None:
        # After augmentation: the teacher labels the very image the student sees.
        dataset = dataset.map(lambda x, y, *rest: (x, distilled_targets(teacher, x, y, cfg), *rest))
    return dataset.prefetch(AUTOTUNE)


def _image_batches(
    images: np.ndarray, labels: np.ndarray, batch_size: int, seed: int | None
) -> tf.data.Dataset:
    """Batches of ``(uint8 images, labels)``, shuffled every epoch when ``seed`` is given.

    In-memory arrays become one tensor. A memory-mapped array (the decoded-image cache) stays on
    disk: the pipeline shuffles and batches indices and reads each batch's images from the map in
    a parallel map, so a folder larger than memory trains; the index order is the one the
    in-memory pipeline draws with the same seed.
    """
    if not isinstance(images, np.memmap):
        dataset = tf.data.Dataset.from_tensor_slices((images, labels))
        if seed is not None:
            dataset = dataset.shuffle(len(images), seed=seed, reshuffle_each_iteration=True)
        return dataset.batch(batch_size)
    label_table = tf.constant(np.asarray(labels))
    shape = images.shape[1:]

    def load(index):
        batch = tf.numpy_function(lambda i: _gather(images, i), [index], tf.uint8, stateful=False)
        batch.set_shape((None, *shape))
        return batch, tf.gather(label_table, index)

    dataset = tf.data.Dataset.range(len(images))
    if seed is not None:
        dataset = dataset.shuffle(len(images), seed=seed, reshuffle_each_iteration=True)
    return dataset.batch(batch_size).map(load, num_parallel_calls=AUTOTUNE)


def _gather(images: np.ndarray, index: np.ndarray) -> np.ndarray:
    """``images[index]`` as one ``numpy.take`` on the map, into a plain array: about a quarter cheaper
    per batch than fancy indexing, which goes through the memmap subclass's slicing machinery."""
    return np.asarray(np.take(images, index, axis=0))


def distilled_targets(
    teacher: keras.Model, images: tf.Tensor, one_hot: tf.Tensor, cfg: TrainConfig
) -> tf.Tensor:
    """``(1 - w) * one_hot + w * softmax(log(p_teacher) / T)``: knowledge distillation through the targets.

    The student keeps its plain cross-entropy, so every architecture, QAT and pruning train the same
    way; a temperature above 1 passes on more of the teacher's view of which classes look alike.
    """
    probabilities = tf.cast(teacher(images, training=False), tf.float32)
    softened = tf.nn.softmax(tf.math.log(tf.maximum(probabilities, 1e-7)) / cfg.distill_temperature)
    return (1.0 - cfg.distill_weight) * one_hot + cfg.distill_weight * softened


def augment_batch(images: tf.Tensor, cfg: TrainConfig) -> tf.Tensor:
    """Applies the augmentations named in ``cfg.augment`` to a float batch, each image drawn anew.

    Args:
        images: ``(N, H, W, C)`` float32 pixels, 0-255.
        cfg: Which augmentations, and their strengths.
    """
    if "flip" in cfg.augment:
        images = tf.image.random_flip_left_right(images)
    if "affine" in cfg.augment or "crop" in cfg.augment:
        images = _random_affine(images, cfg)
    if "erasing" in cfg.augment:
        images = _random_erasing(images, cfg.erasing_prob)
    return images


def _random_affine(images: tf.Tensor, cfg: TrainConfig) -> tf.Tensor:
    # One projective warp per image composes rotation, shear, zoom, shift and the integer shift
    # that a random crop of a zero-padded image amounts to (the background is 0).
    n = tf.shape(images)[0]
    side = tf.cast(tf.shape(images)[1], tf.float32)
    zeros = tf.zeros([n])

    def uniform(limit):
        return tf.random.uniform([n], -limit, limit)

    affine = "affine" in cfg.augment
    angle = uniform(math.radians(cfg.rotation)) if affine else zeros
    shear = uniform(math.radians(cfg.shear)) if affine else zeros
    zoom = 1.0 + uniform(cfg.zoom) if affine else zeros + 1.0
    shift_x = uniform(cfg.shift * side) if affine else zeros
    shift_y = uniform(cfg.shift * side) if affine else zeros
    if "crop" in cfg.augment and cfg.crop_padding:
        pad = cfg.crop_padding
        shift_x += tf.cast(tf.random.uniform([n], -pad, pad + 1, dtype=tf.int32), tf.float32)
        shift_y += tf.cast(tf.random.uniform([n], -pad, pad + 1, dtype=tf.int32), tf.float32)
    # The op maps each output pixel to an input location: in = A (out - c) + c + shift.
    cos, sin, tan = tf.cos(angle), tf.sin(angle), tf.tan(shear)
    a00, a01 = cos / zoom, (cos * tan - sin) / zoom
    a10, a11 = sin / zoom, (sin * tan + cos) / zoom
    center = (side - 1.0) / 2.0
    a02 = center - a00 * center - a01 * center + shift_x
    a12 = center - a10 * center - a11 * center + shift_y
    transforms = tf.stack([a00, a01, a02, a10, a11, a12, zeros, zeros], axis=1)
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=images,
        transforms=transforms,
        output_shape=tf.shape(images)[1:3],
        fill_value=0.0,
        interpolation="BILINEAR",
        fill_mode="CONSTANT",
    )


def _random_erasing(images: tf.Tensor, probability: float) -> tf.Tensor:
    # Random erasing (Zhong et al. 2017): a rectangle of 2-25% of the area, aspect 0.3-3.3,
    # filled with noise, in a random place of a random subset of the images.
    shape = tf.shape(images)
    n, height, width = shape[0], shape[1], shape[2]
    h, w = tf.cast(height, tf.float32), tf.cast(width, tf.float32)
    area = tf.random.uniform([n], 0.02, 0.25) * h * w
    aspect = tf.exp(tf.random.uniform([n], math.log(0.3), math.log(3.3)))
    box_h = tf.clip_by_value(tf.round(tf.sqrt(area * aspect)), 1.0, h)
    box_w = tf.clip_by_value(tf.round(tf.sqrt(area / aspect)), 1.0, w)
    top = tf.floor(tf.random.uniform([n]) * (h - box_h + 1.0))
    left = tf.floor(tf.random.uniform([n]) * (w - box_w + 1.0))
    rows = tf.range(h)[None, :]
    cols = tf.range(w)[None, :]
    in_rows = (rows >= top[:, None]) & (rows < (top + box_h)[:, None])
    in_cols = (cols >= left[:, None]) & (cols < (left + box_w)[:, None])
    chosen = tf.random.uniform([n]) < probability
    mask = in_rows[:, :, None] & in_cols[:, None, :] & chosen[:, None, None]
    noise = tf.random.uniform(shape, 0.0, 255.0)
    return tf.where(mask[..., None], noise, images)

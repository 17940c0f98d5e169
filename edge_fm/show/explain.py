"""Where a model looks: Grad-CAM of a Keras model, occlusion sensitivity of any model (a .tflite too).

Grad-CAM (Selvaraju et al., 2017) weighs the last convolutional feature maps by the gradient of
the class score; it needs the float Keras model. Occlusion sensitivity (Zeiler and Fergus, 2014)
greys out one patch at a time and records how much the class probability drops; it needs only
the model's answers, so it explains the deployed int8 artifact as it runs in LiteRT. Both give a
map of the image's size (28x28 for Fashion-MNIST), highest where the evidence for the class is.

This module loads no TensorFlow unless :func:`grad_cam` is called, so the web demo
(:mod:`edge_fm.show.serve`) can explain .tflite files with LiteRT alone.

Example:
    >>> model, labels = load_artifact("models/edge-cnn")  # doctest: +SKIP
    >>> heat = occlusion_map(model, pixels, class_index=7)  # doctest: +SKIP
"""

from __future__ import annotations

import collections
import dataclasses
import io
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from edge_fm.errors import EdgeFMError

OCCLUSION_PATCH = (
    4  # pixels per side of the grey patch: about one seventh of the image, the size of a garment detail
)
OCCLUSION_STRIDE = 2  # patch step; 13 x 13 positions, answered in one batch
OCCLUSION_FILL = 0  # the patch is background black, as Fashion-MNIST's background is
# Anchors of the heat colours (black-red-yellow-white, as matplotlib's "inferno" runs), so the
# demo colours maps without loading matplotlib.
_CONV_FOLLOWERS = (
    "BatchNormalization",
    "ReLU",
    "Activation",
    "LeakyReLU",
)  # layers that keep a convolution's maps
_HEAT_ANCHORS = np.array(
    [[0, 0, 4], [87, 16, 110], [188, 55, 84], [249, 142, 9], [252, 255, 164]], dtype=np.float64
)


def occlusion_map(
    model,
    image: np.ndarray,
    class_index: int,
    patch: int | None = None,
    stride: int | None = None,
    fill: int = OCCLUSION_FILL,
) -> np.ndarray:
    """Occlusion sensitivity of one image for one class, from the model's answers alone.

    Args:
        model: Anything with ``predict_proba(uint8 images (N, height, width, channels)) -> (N, classes)``:
            a :class:`~edge_fm.runner.TFLiteModel` (the deployed artifact) or a wrapped Keras model.
        image: ``(height, width)`` or ``(height, width, channels)`` uint8 pixels, as the model takes them.
        class_index: The class whose probability is watched.
        patch: Side of the square patch, in pixels (default: a seventh of the shorter side, 4 at 28).
        stride: Step between patch positions (default: half the patch).
        fill: Pixel value of the patch.

    Returns:
        ``(height, width)`` float map: per pixel, the mean drop of the class probability over the
        patches that cover it (negative where hiding a pixel raises the probability).
    """
    pixels = np.asarray(image, dtype=np.uint8)
    pixels = pixels[..., None] if pixels.ndim == 2 else pixels
    height, width = pixels.shape[:2]
    patch = patch or max(OCCLUSION_PATCH, round(OCCLUSION_PATCH * min(height, width) / 28))
    stride = stride or max(1, patch * OCCLUSION_STRIDE // OCCLUSION_PATCH)
    corners = [
        (top, left) for top in _positions(height, patch, stride) for left in _positions(width, patch, stride)
    ]
    batch = np.repeat(pixels[None], len(corners) + 1, axis=0)
    for index, (top, left) in enumerate(corners, start=1):  # index 0 stays the untouched image
        batch[index, top : top + patch, left : left + patch] = fill
    probs = np.asarray(model.predict_proba(batch))[:, class_index]
    drop, cover = np.zeros((height, width)), np.zeros((height, width))
    for (top, left), prob in zip(corners, probs[1:]):
        drop[top : top + patch, left : left + patch] += probs[0] - prob
        cover[top : top + patch, left : left + patch] += 1
    return drop / np.maximum(cover, 1)


def _positions(size: int, patch: int, stride: int) -> list[int]:
    # The last position is always included, so the right and bottom edges are covered too.
    starts = list(range(0, size - patch + 1, stride))
    return starts if starts[-1] == size - patch else [*starts, size - patch]


def last_conv_layer(model) -> str:
    """Grad-CAM's feature maps: the last convolution's output, after its batch norm and activation if any.

    Pooling is not followed: its gradient reaches one pixel in four, which leaves sparse maps.

    Raises:
        EdgeFMError: The model has no convolution (an MLP): Grad-CAM does not apply.
    """
    convs = [index for index, layer in enumerate(model.layers) if _is_convolutional(layer)]
    if not convs:
        raise EdgeFMError(
            f"model {model.name!r} has no convolutional feature maps, so Grad-CAM does not apply; "
            "use occlusion (explain its .tflite bundle)."
        )
    chosen = model.layers[convs[-1]]
    for layer in model.layers[convs[-1] + 1 :]:
        if type(getattr(layer, "layer", layer)).__name__ not in _CONV_FOLLOWERS or not _spatial(layer):
            break
        chosen = layer
    return chosen.name


def _is_convolutional(layer) -> bool:
    inner = getattr(layer, "layer", layer)  # a quantization-aware wrapper holds the real layer
    return "Conv" in type(inner).__name__ or any(
        _is_convolutional(sub) for sub in getattr(inner, "layers", [])
    )


def _spatial(layer) -> bool:
    shape = getattr(layer, "output_shape", None)
    return isinstance(shape, tuple) and len(shape) == 4 and min(shape[1:3]) > 1


def grad_cam(
    model,
    images: np.ndarray,
    class_indices: Sequence[int],
    layer: str | None = None,
    per_position: bool = True,
) -> np.ndarray:
    """Grad-CAM maps of a Keras model (loads TensorFlow).

    The class score differentiated is the logit before the final softmax when the model ends in
    one (the probability saturates near 1, where its gradient vanishes).

    By default the gradient weighs each feature map position by position (the HiResCAM form,
    Draelos and Carin, 2020) instead of by its spatial mean. For a model that averages its last
    maps (global pooling: vgg-gap, the edge family) both are the same map; for one that flattens
    them into a dense layer (cnn-2conv), the mean cancels out and about half the original maps
    come out empty (measured on a small CNN), while the per-position form shows what the dense
    layer actually weighs.

    Args:
        model: A float Keras classifier taking raw uint8-valued images.
        images: ``(N, height, width[, channels])`` uint8 pixels, as the model takes them.
        class_indices: The class explained, per image.
        layer: The feature-map layer; default :func:`last_conv_layer`.
        per_position: False for the original Grad-CAM weights (the gradient's spatial mean).

    Returns:
        ``(N, height, width)`` float maps, non-negative, upsampled bilinearly to the image size.

    Raises:
        EdgeFMError: The model has no convolutional layer.
    """
    from edge_fm.compat import keras, tf

    feature_layer = model.get_layer(layer or last_conv_layer(model))
    last = model.layers[-1]
    ends_in_softmax = getattr(getattr(last, "activation", None), "__name__", "") == "softmax" and not hasattr(
        last, "kernel"
    )
    score_tensor = last.input if ends_in_softmax else model.output
    probe = keras.Model(model.inputs, [feature_layer.output, score_tensor])
    shape = [int(d) for d in model.input_shape[1:]]
    batch = tf.convert_to_tensor(np.asarray(images, dtype=np.float32).reshape(-1, *shape))
    with tf.GradientTape() as tape:
        features, scores = probe(batch, training=False)
        chosen = tf.gather(scores, tf.constant(list(class_indices)), axis=1, batch_dims=1)
    gradients = tape.gradient(chosen, features)
    weights = gradients if per_position else tf.reduce_mean(gradients, axis=(1, 2), keepdims=True)
    cams = tf.nn.relu(tf.reduce_sum(weights * features, axis=-1))[..., None]
    return tf.image.resize(cams, shape[:2], method="bilinear").numpy()[..., 0].astype(np.float64)


def map_correlation(first: np.ndarray, second: np.ndarray) -> float:
    """Pearson correlation of two maps, pixel by pixel; NaN when either is flat (no signal to compare)."""
    a, b = np.asarray(first, np.float64).ravel(), np.asarray(second, np.float64).ravel()
    if a.std() == 0 or b.std() == 0:
        return math.nan
    return float(np.corrcoef(a, b)[0, 1])


def evidence(heat: np.ndarray) -> np.ndarray:
    """A map scaled to 0-1 with counter-evidence (negative values) cut: what the overlays show."""
    positive = np.clip(np.asarray(heat, np.float64), 0, None)
    top = positive.max()
    return positive / top if top > 0 else positive


def heat_colours(values: np.ndarray) -> np.ndarray:
    """0-1 values -> uint8 RGB, black-red-yellow-white (as matplotlib's "inferno")."""
    values = np.clip(np.asarray(values, np.float64), 0, 1)
    stops = np.linspace(0, 1, len(_HEAT_ANCHORS))
    channels = [np.interp(values, stops, _HEAT_ANCHORS[:, c]) for c in range(3)]
    return np.stack(channels, axis=-1).round().astype(np.uint8)


def overlay(image: np.ndarray, heat: np.ndarray, alpha: float = 0.55) -> np.ndarray:
    """The image (grey, or RGB) under its heat map: ``(height, width, 3)`` uint8 RGB."""
    heat = np.asarray(heat)
    pixels = np.asarray(image, np.float64).reshape(*heat.shape, -1)
    grey = pixels if pixels.shape[-1] == 3 else np.repeat(pixels[..., :1], 3, axis=-1)
    colour = heat_colours(evidence(heat)).astype(np.float64)
    return ((1 - alpha) * grey + alpha * colour).round().clip(0, 255).astype(np.uint8)


def png_bytes(pixels: np.ndarray, scale: int = 8) -> bytes:
    """A small image as PNG, enlarged ``scale`` times with square pixels (the model's own view)."""
    from PIL import Image

    array = np.asarray(pixels, dtype=np.uint8)
    picture = Image.fromarray(
        array.reshape(array.shape[:2]) if array.ndim == 3 and array.shape[2] == 1 else array
    )
    picture = picture.resize((picture.width * scale, picture.height * scale), Image.Resampling.NEAREST)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


# ---------------------------------------------------------------- `edge-fm explain`


@dataclasses.dataclass(frozen=True)
class Explanation:
    """One image explained: its top classes, the method, and where the overlay was written (or why not)."""

    image: str
    top: list[tuple[str, float]]  # (class name, probability), best first
    method: str  # "occlusion" or "grad-cam"
    overlay: str | None = None  # the PNG written
    error: str | None = None


class KerasAnswers:
    """A Keras model behind the ``predict_proba`` interface that occlusion and scoring use."""

    def __init__(self, model):
        self.model = model

    def predict_proba(self, images: np.ndarray) -> np.ndarray:
        from edge_fm.train.evaluate import predict_proba

        shape = [int(d) for d in self.model.input_shape[1:]]
        return predict_proba(self.model, np.asarray(images).reshape(-1, *shape))


def overlay_stems(images: Sequence[Path | str]) -> list[str]:
    """A distinct file name stem per image: its own, or, where images share one (the same name in
    different class folders), its folder's name in front, then a number if still taken."""
    stems = [Path(path).stem for path in images]
    shared = {stem for stem, count in collections.Counter(stems).items() if count > 1}
    names: list[str] = []
    taken: set[str] = set()
    for path, stem in zip(images, stems):
        base = f"{Path(path).parent.name}-{stem}" if stem in shared else stem
        name, number = base, 2
        while name in taken:
            name, number = f"{base}-{number}", number + 1
        names.append(name)
        taken.add(name)
    return names


def explain_files(
    model_path: Path | str, images: Sequence[Path | str], out_dir: Path | str, top: int = 3, scale: int = 8
) -> list[Explanation]:
    """Explains image files: Grad-CAM for a training run, occlusion for a .tflite file or bundle.

    Images are preprocessed as ``edge-fm predict`` does (:class:`edge_fm.show.predict.ImagePolicy`);
    each overlay is written to ``out_dir/<image name>.<method>.png`` (images of the same name from
    different folders: ``<folder>-<image name>``, see :func:`overlay_stems`). An unreadable image gets
    an error entry and the others go on.

    Args:
        model_path: A run directory (with ``model.h5``), a .tflite file or an export bundle.
        images: Image files.
        out_dir: Folder for the overlays (created).
        top: Classes kept per image.
        scale: Enlargement of the overlay (the model's input size).

    Raises:
        EdgeFMError: The model cannot be read, or ``out_dir`` cannot be written.
    """
    from edge_fm.io import check_output_dir, make_dirs, write_bytes_atomic

    explainer = _explainer_for(Path(model_path))
    out_dir = check_output_dir(out_dir, "--out")  # made with the first overlay: no empty folder if none is
    results = []
    for path, stem in zip(images, overlay_stems(images)):
        try:
            pixels, _ = explainer.policy.read(path)
        except EdgeFMError as exc:
            results.append(Explanation(str(path), [], explainer.method, error=str(exc)))
            continue
        probs = np.asarray(explainer.answers.predict_proba(pixels[None]))[0]
        order = np.argsort(-probs, kind="stable")[:top]  # equal probabilities in label order, as predict
        heat = explainer.heat(pixels, int(order[0]))
        target = make_dirs(out_dir, "--out") / f"{stem}.{explainer.method}.png"
        write_bytes_atomic(target, png_bytes(overlay(pixels, heat), scale))
        results.append(
            Explanation(
                str(path),
                [(explainer.labels[i], float(probs[i])) for i in order],
                explainer.method,
                str(target),
            )
        )
    return results


@dataclasses.dataclass(frozen=True)
class _Explainer:
    method: str
    answers: object
    labels: list[str]
    heat: object  # (pixels, class index) -> (height, width) map
    policy: object  # how an image file becomes the model's input (edge_fm.show.predict.ImagePolicy)


def _explainer_for(path: Path) -> _Explainer:
    from edge_fm.export.bundles import kind_of
    from edge_fm.show.predict import ImagePolicy, load_described, policy_of

    if kind_of(path) == "run":
        from edge_fm.train.runs import Run

        run = Run(path)
        model = run.model() if run.quantization_aware else run.float_model()
        last_conv_layer(model)  # fails now, before any image, for a model without feature maps
        config = run.train_config
        labels = list((run.manifest.get("data", {}).get("identity") or {}).get("class_names") or ())
        policy = ImagePolicy()
        if "input_shape" in config.arch_options:  # a model of its own data: its size, channels and resize
            height, width, channels = (int(d) for d in config.arch_options["input_shape"])
            policy = ImagePolicy((height, width), channels, config.resize, False)
        return _Explainer(
            "grad-cam",
            KerasAnswers(model),
            labels or _fashion_names(),
            lambda pixels, index: grad_cam(model, pixels[None], [index])[0],
            policy,
        )
    artifact, labels, description = load_described(path)
    policy = policy_of(description)
    return _Explainer(
        "occlusion",
        artifact,
        labels,
        lambda pixels, index: occlusion_map(artifact, pixels, index),
        dataclasses.replace(policy, channels=int(artifact.input["shape"][-1]))
        if not policy.garment
        else policy,
    )


def _fashion_names() -> list[str]:
    from edge_fm.data.datasets import CLASS_NAMES

    return list(CLASS_NAMES)

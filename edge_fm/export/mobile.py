"""The mobile form of an integer export: what MediaPipe Tasks, the TFLite Task Library and
Android Studio's ML Model Binding load as they are.

Those clients hand a model camera pixels: an RGB image of bytes. They refuse an int8 input tensor
and need the standard TFLite Metadata (labels, normalization, color space). The mobile form
therefore takes ``uint8 [1, H, W, 3]`` raw RGB pixels (scale 1, zero point 0), gives uint8
probabilities, and carries the standard metadata (with the labels of the model's data) next to
edge-fm's own entries.

It is made in one way, from the finished int8 artifact, so it exists for any integer export,
including shipped models whose training run is elsewhere:

    int8 .tflite -> :func:`edge_fm.export.tflite_rgb.rgb_form` (RGB uint8 input, luma folded into the
    first layer's integer weights, uint8 output) -> :mod:`edge_fm.export.tflite_metadata` (standard
    metadata, labels packed in) -> a bundle, checked against the int8 artifact on test images.

On a grey image (three equal channels) the mobile form of a grey model gives the int8 artifact's
outputs bit for bit; a colour image is classified as its ITU-R BT.601 luma. A model trained on RGB
images takes the bytes as they are, with the int8 artifact's outputs on every image.

Example:
    >>> bundle = export_mobile("models/edge-cnn-tiny", FormOptions(out="edge-cnn-tiny-mobile"))  # doctest: +SKIP
    >>> bundle = export_mobile("runs/cnn-2conv-qat-1", FormOptions("qat-int8"))  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edge_fm import __version__
from edge_fm.data import datasets as data_lib
from edge_fm.data.reference import model_test_split, recorded_data
from edge_fm.errors import EdgeFMError
from edge_fm.export import tflite_file
from edge_fm.export.bundles import (
    LABELS_FILE,
    Bundle,
    check_new_folder,
    is_run,
    model_file,
    new_folder,
    update_description,
    write_bundle,
)
from edge_fm.export.form_options import FormOptions
from edge_fm.export.parity import within_share
from edge_fm.export.tflite_metadata import (
    WRITTEN_METADATA,
    ImageClassifierInfo,
    build_metadata,
    labels_file,
    populate,
)
from edge_fm.export.tflite_rgb import GREY_WEIGHTS, RgbForm, rgb_form
from edge_fm.runner import grey_to_rgb  # re-exported: the tests and clients feed grey images as RGB

__all__ = [
    "GREY_WEIGHTS",
    "export_mobile",
    "ship_mobile_form",
    "record_client_check",
    "grey_to_rgb",
    "read_int8_source",
]

MOBILE_FOLDER = "mobile"  # where a shipped model keeps its mobile form: models/<name>/mobile/
# The mobile form must keep the int8 artifact's answers: it differs from it only in how the input
# bytes reach the first layer, which is exact on grey images. Anything less is a conversion bug.
MIN_AGREEMENT_WITH_INT8 = 0.99
MAX_ACCURACY_DROP_FROM_INT8 = 0.005
MADE_FOR = (
    "MediaPipe Tasks ImageClassifier",
    "TFLite Task Library ImageClassifier",
    "Android Studio ML Model Binding",
)


# ---------------------------------------------------------------- the stage


def export_mobile(source: Path | str, options: FormOptions = FormOptions()) -> Path:
    """Makes the mobile form of an integer export and returns its bundle folder.

    The bundle (``runs/<name>-mobile-N/``, or ``out``) holds ``model.tflite`` (uint8 RGB input,
    uint8 probabilities, standard TFLite Metadata with the labels packed in, and edge-fm's own
    description), ``labels.txt``, ``model.json`` (the input and output an app feeds and reads, and
    a ``mobile`` record: how the grey conversion entered the graph, the check against the int8
    artifact, the clients checked) and ``manifest.json``.

    Args:
        source: A training or QAT run (its int8 artifact is exported first, as
            :func:`edge_fm.export.exporter.export` does), or an int8 export bundle or .tflite file
            (e.g. ``models/edge-cnn-tiny``), used as it is.
        options: ``format_name`` (for a run: ``int8`` or ``qat-int8``, default ``qat-int8`` for a QAT
            run, else ``int8``; for a bundle: omit it, or name the bundle's own format),
            ``representative_size`` (a run's int8 export), ``parity_images`` (test images the form is
            checked on against the int8 artifact, and validation images of a run's export parity check;
            None: the whole split), ``out``, ``runs_dir``, ``data_dir``, ``progress`` and ``data`` (a
            bundle of other data than Fashion-MNIST: where that data is, when not where its
            ``model.json`` says).

    Returns:
        The bundle folder.

    Raises:
        EdgeFMError: A float format or model, a run of the wrong kind for the format, a graph the
            RGB form cannot take, a failed check against the int8 artifact (then nothing is
            written), or a bad path.
    """
    source = Path(source)
    if options.out is not None:
        check_new_folder(options.out)
    if is_run(source):
        from edge_fm.export.exporter import export_integer, run_test_images  # TensorFlow: a run only

        int8_path = export_integer(source, options, "the mobile form")
        images, labels, images_source = run_test_images(
            source, options.data_dir, options.parity_images, options.data
        )
    else:
        int8_path = source
        int8 = read_int8_source(source)  # refuse a float model before loading any data
        _check_format(int8, options.format_name)
        split = model_test_split(
            int8.description, options.data, options.data_dir, what=str(source), labels=int8.labels
        ).first(options.parity_images)
        images, labels, images_source = split.images, split.labels, split.checked_on
    int8 = read_int8_source(int8_path)
    form, parity = checked_form(int8, images, labels, images_source, options.say)
    bundle = new_folder(options.out, options.runs_dir, f"{int8.name}-mobile")
    options.say(f"writing {bundle}")
    final, description = form_file(int8, form, parity)
    return _write_bundle(bundle, int8, final, description)


def checked_form(int8: Bundle, images, labels, images_source: str, say) -> tuple[RgbForm, dict[str, Any]]:
    """The RGB form of ``int8`` and its check against it on the images; nothing if the check fails.

    Raises:
        EdgeFMError: The form disagrees with the int8 artifact.
    """
    say(f"converting {int8.path} to RGB uint8 input")
    form = rgb_form(int8.flatbuffer)
    say(f"checking it against {int8.path} on {len(labels)} test images")
    parity = compare_with_int8(form.tflite, int8.flatbuffer, images, labels)
    parity["data"] = images_source
    if not parity["passed"]:
        raise EdgeFMError(
            f"the mobile form of {int8.path} disagrees with it: top-1 agreement "
            f"{parity['top1_agreement']:.2%}, accuracy "
            f"{parity['mobile_accuracy']:.2%} vs {parity['int8_accuracy']:.2%} on {parity['images']} test images "
            f"({parity['rule']}); nothing was written. Re-export the int8 artifact and try again."
        )
    return form, parity


def ship_mobile_form(
    model_folder: Path | str,
    data_dir: Path | str | None = None,
    progress: Callable[[str], None] | None = None,
) -> Path:
    """Writes the mobile form of a shipped model next to it, in ``<model_folder>/mobile/``.

    The same as ``edge-fm export MODEL_FOLDER --for mobile --out MODEL_FOLDER/mobile
    --parity-images 10000``: made from ``<model_folder>/model.tflite`` (left unchanged) and checked
    against it on the whole test split.

    Raises:
        EdgeFMError: The folder holds no int8 model, or ``mobile/`` already holds files.
    """
    folder = Path(model_folder)
    if model_file(folder) is None or not folder.is_dir():
        raise EdgeFMError(
            f"{folder} holds no model.tflite: pass a shipped model's folder (e.g. models/edge-cnn-tiny)."
        )
    return export_mobile(
        folder,
        FormOptions(parity_images=None, data_dir=data_dir, out=folder / MOBILE_FOLDER, progress=progress),
    )


def _check_format(int8: Bundle, format_name: str | None) -> None:
    own = int8.description.get("format")
    if format_name is not None and format_name != own:
        raise EdgeFMError(
            f"{int8.path} is already exported ({own or 'format unknown'}), so there is nothing to export "
            f"as {format_name}: drop the format to make the mobile form of the file as it is."
        )


# ---------------------------------------------------------------- reading the int8 artifact


def read_int8_source(source: Path | str) -> Bundle:
    """Reads an int8 export bundle (a folder with ``model.tflite``) or a .tflite file.

    Its description and labels are the bundle's, else those embedded in the file.

    Raises:
        EdgeFMError: The path holds no .tflite file, or its model does not take int8 grey images.
    """
    if model_file(source) is None:
        what = "holds no .tflite model" if Path(source).exists() else "does not exist"
        raise EdgeFMError(
            f"{source} {what}: pass a run, an int8 export bundle (a folder with "
            "model.tflite, e.g. models/edge-cnn-tiny) or an int8 .tflite file."
        )
    int8 = Bundle.open(source, embedded=True)
    if int8.description.get("target") == "mobile":
        raise EdgeFMError(f"{int8.path} is already a mobile form: pass the int8 bundle it was made from.")
    return dataclasses.replace(int8, labels=int8.checked_labels(fallback=data_lib.CLASS_NAMES))


# ---------------------------------------------------------------- the check


def compare_with_int8(mobile: bytes, int8: bytes, images: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """Runs the mobile form on the images as RGB (grey ones repeated) and the int8 artifact on them as they are.

    Returns:
        ``images``, ``runtime``, ``identical_to_int8`` (every probability equal),
        ``top1_agreement``, ``max_probability_difference``, both accuracies, the rule and ``passed``.
    """
    from edge_fm.runner import TFLiteModel

    mobile_runner = TFLiteModel(model_content=mobile)
    mobile_probs = mobile_runner.predict_proba(images)  # grey images are fed as RGB with equal channels
    int8_probs = TFLiteModel(model_content=int8).predict_proba(images)
    int8_accuracy = float(np.mean(int8_probs.argmax(1) == labels))
    mobile_accuracy = float(np.mean(mobile_probs.argmax(1) == labels))
    agreement = float(np.mean(int8_probs.argmax(1) == mobile_probs.argmax(1)))
    rule = (
        f"top-1 agreement with the int8 artifact >= {MIN_AGREEMENT_WITH_INT8:.0%} and accuracy within "
        f"{MAX_ACCURACY_DROP_FROM_INT8 * 100:g} point of it"
    )
    if len(labels) * MAX_ACCURACY_DROP_FROM_INT8 < 1:  # a half point is less than one image: one is allowed
        rule += f" (one image of {len(labels)})"
    flips = int(np.sum(int8_probs.argmax(1) != mobile_probs.argmax(1)))
    lost = int(np.sum(int8_probs.argmax(1) == labels)) - int(np.sum(mobile_probs.argmax(1) == labels))
    passed = within_share(flips, len(labels), 1 - MIN_AGREEMENT_WITH_INT8) and within_share(
        lost, len(labels), MAX_ACCURACY_DROP_FROM_INT8
    )
    return {
        "images": int(len(labels)),
        "runtime": f"{mobile_runner.package} {mobile_runner.package_version}",
        "identical_to_int8": bool(np.array_equal(int8_probs, mobile_probs)),
        "top1_agreement": agreement,
        "max_probability_difference": float(np.abs(int8_probs - mobile_probs).max()) if len(labels) else 0.0,
        "int8_accuracy": int8_accuracy,
        "mobile_accuracy": mobile_accuracy,
        "rule": rule,
        "passed": bool(passed),
    }


# ---------------------------------------------------------------- the bundle


def form_file(
    int8: Bundle, form: RgbForm, parity: dict[str, Any], made_from_file: str | None = None
) -> tuple[bytes, dict[str, Any]]:
    """The mobile form's final .tflite bytes (its description and the standard metadata inside) and ``model.json``.

    ``made_from_file`` names the int8 file in the description (default: its path as given).
    """
    name = f"{int8.name}-mobile"
    description = {key: value for key, value in int8.description.items() if key not in ("artifact", "mcu")}
    description.update({"name": name, "target": "mobile", "labels": list(int8.labels)})
    description.update(_io_description(form.tflite, description))
    int8_export = int8.description.get("export") or {}
    description["export"] = {
        **({"parity": int8_export["parity"]} if "parity" in int8_export else {}),
        **tflite_file.inspect(form.tflite),
    }
    description["mobile"] = {
        "made_from": {
            "file": made_from_file or int8.path.as_posix(),
            "name": int8.name,
            "format": int8.description.get("format"),
            "bytes": len(int8.flatbuffer),
            "sha256": hashlib.sha256(int8.flatbuffer).hexdigest(),
        },
        "grey_conversion": _grey_conversion(form),
        "parity": parity,
        "identical_to_int8": parity["identical_to_int8"],
        "standard_metadata": WRITTEN_METADATA,
        "made_for": list(MADE_FOR),
        "clients": [
            {
                "client": "LiteRT interpreter",
                "version": parity["runtime"],
                "images": parity["images"],
                "data": parity["data"],
                "top1_agreement_with_int8": parity["top1_agreement"],
                "identical_to_int8": parity["identical_to_int8"],
            }
        ],
    }
    tflite = tflite_file.with_description(form.tflite, description)
    final = populate(
        tflite, build_metadata(standard_info(description)), {LABELS_FILE: labels_file(int8.labels)}
    )
    return final, description


def _write_bundle(bundle: Path, int8: Bundle, final: bytes, description: dict[str, Any]) -> Path:
    parent = (int8.folder or int8.path).as_posix()
    return write_bundle(
        bundle,
        final,
        description,
        int8.labels,
        {
            "stage": "export",
            "parent": parent,
            "format": description.get("format"),
            "target": "mobile",
            "status": "complete",
        },
    )


def _grey_conversion(form: RgbForm) -> dict[str, Any]:
    how = {
        "fold-conv": "folded into the first convolution's int8 kernel: no added op",
        "fold-dense": "folded into the first dense layer's int8 weights: no added op",
        "drop-repeat": "the in-model grey-to-RGB repeat removed, the first convolution's kernels summed and refolded",
        "luma-conv": "a fixed 1x1 int8 convolution in front of the network",
        "rgb": "none: the model was trained on RGB images and takes the bytes as they are",
    }[form.method]
    return {
        "method": form.method,
        "how": how,
        "layer": form.layer,
        "weights": list(GREY_WEIGHTS),
        "split": "each int8 weight split into R, G, B integers that sum to it exactly (largest remainder)",
        "clipped_weights": form.clipped_weights,
        "bridge": form.bridge,
    }


def _io_description(tflite: bytes, description: dict[str, Any]) -> dict[str, Any]:
    """The ``input`` and ``output`` of ``model.json``, read off the finished graph."""
    from edge_fm.runner import TFLiteModel

    probe = TFLiteModel(model_content=tflite)
    (in_scale, in_zero), (out_scale, out_zero) = probe.input["quantization"], probe.output["quantization"]
    return {
        "input": {
            "name": probe.input["name"],
            "shape": [int(d) for d in probe.input["shape"]],
            "dtype": np.dtype(probe.input["dtype"]).name,
            "layout": "NHWC (batch, height, width, channels)",
            "channels": "RGB",
            "scale": float(in_scale),
            "zero_point": int(in_zero),
            "pixel_range": [0, 255],
            "preprocessing": _mobile_steps(recorded_data(description)),
        },
        "output": {
            "name": probe.output["name"],
            "shape": [int(d) for d in probe.output["shape"]],
            "dtype": np.dtype(probe.output["dtype"]).name,
            "scale": float(out_scale),
            "zero_point": int(out_zero),
            "meaning": "probability of each class, in the order of labels.txt; dequantize: p = (q - "
            "zero_point) * scale",
        },
    }


def _mobile_steps(record: dict[str, Any] | None) -> list[str]:
    """What an app does to an image before the mobile form: Fashion-MNIST's garment steps, or its data's resize."""
    feed = "feed the bytes as they are: no scaling, no quantization (scale 1, zero point 0)"
    if record is None:
        return [
            "give the image as RGB bytes (three channels, 0-255); the model turns it grey itself "
            f"({GREY_WEIGHTS[0]} R + {GREY_WEIGHTS[1]} G + {GREY_WEIGHTS[2]} B)",
            "the model expects a light garment on a black background: invert a photo of a dark object on a "
            "light background (pixel = 255 - pixel)",
            "crop to the object, center it and pad to a square with black (0), then resize to 28x28 "
            "(MediaPipe and the Task Library resize for you)",
            feed,
        ]
    height, width, channels = record["image_shape"]
    pad = (record.get("options") or {}).get("resize", "pad") == "pad"
    return [
        "give the image as RGB bytes (three channels, 0-255)"
        + (
            ""
            if channels == 3
            else f"; the model turns it grey itself ({GREY_WEIGHTS[0]} R + {GREY_WEIGHTS[1]} G + {GREY_WEIGHTS[2]} B)"
        ),
        f"resize to {width}x{height}"
        + (", keeping the aspect ratio and padding with black (0)" if pad else " (stretch)")
        + ", as the training images were (MediaPipe and the Task Library resize for you)",
        feed,
    ]


def standard_info(description: dict[str, Any]) -> ImageClassifierInfo:
    """What the standard metadata says of a mobile artifact."""
    parity = description["mobile"]["parity"]
    architecture = description.get("architecture") or description["name"]
    quantization = description.get("quantization") or "int8"
    record = recorded_data(description)
    if record is None:
        what = (
            f"Fashion-MNIST clothing classifier ({architecture}, {quantization}) made with edge-fm: "
            f"{len(description['labels'])} classes from a 28x28 RGB image of a light garment on a black background, "
            "turned grey inside the model."
        )
    else:
        height, width, channels = record["image_shape"]
        colour = "RGB image" if channels == 3 else "RGB image, turned grey inside the model"
        what = (
            f"Image classifier ({architecture}, {quantization}) made with edge-fm from {record['kind']} data "
            f"{record['fingerprint'][:19]}: {len(description['labels'])} classes from a {width}x{height} {colour}."
        )
    return ImageClassifierInfo(
        name=description["name"],
        description=f"{what} Test accuracy {parity['mobile_accuracy']:.2%} on {parity['images']} images.",
        labels=tuple(description["labels"]),
        version=f"{description['name']} (edge-fm {__version__})",
        author="edge-fm",
        license="MIT",
    )


# ---------------------------------------------------------------- client checks


def record_client_check(bundle: Path | str, check: dict[str, Any]) -> dict[str, Any]:
    """Adds one client's check of a mobile bundle to its ``model.json`` and rewrites ``manifest.json``.

    A check done with the client's own runtime (e.g. MediaPipe Tasks in an app's environment) is
    recorded next to the LiteRT check of the export; an earlier check of the same client is replaced.

    Args:
        bundle: A mobile bundle.
        check: ``client`` (its name), ``version``, ``images`` and what was found.

    Returns:
        The updated ``model.json``.

    Raises:
        EdgeFMError: Not a mobile bundle, or the check does not name its client.
    """
    bundle = Path(bundle)
    description = Bundle.open(bundle).description if model_file(bundle) is not None else {}
    if description.get("target") != "mobile":
        raise EdgeFMError(
            f"{bundle} is not a mobile bundle: make one with `edge-fm export BUNDLE --for mobile`."
        )
    if not check.get("client"):
        raise EdgeFMError("a client check must name its client ('client').")
    clients = [c for c in description["mobile"].get("clients", []) if c.get("client") != check["client"]]
    description["mobile"]["clients"] = [*clients, dict(check)]
    update_description(bundle, description)
    return description

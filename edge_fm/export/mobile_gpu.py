"""The mobile GPU form: what GPU delegates (MediaPipe Tasks' ``delegate: "GPU"``, LiteRT's GPU delegate) run.

The mobile form (:mod:`edge_fm.export.mobile`) is integer: its uint8 output is what MediaPipe's CPU path
dequantizes, but MediaPipe's GPU path hands its post-processing float tensors, and there the uint8 form
fails (``TensorsDequantizationCalculator: Unsupported input tensor type: Float32``). GPU delegates
compute in floating point anyway, so this form is the float model itself, with:

- float16 weights (the ``fp16`` export format: half the bytes, what a GPU delegate computes in);
- float32 RGB input, raw pixel values 0-255, turned grey inside the model by a fixed 1x1 convolution
  with the luma weights (0.299 R + 0.587 G + 0.114 B), and float32 probabilities out;
- the same standard TFLite Metadata as the mobile form (:mod:`edge_fm.export.tflite_metadata`: an RGB
  image input with normalization mean 0, std 1, so clients feed pixel values as they are; the labels
  packed in), and edge-fm's own description.

It is converted from the float Keras model, so it is made from a training (or pruning) run, not
from an int8 bundle, and it is checked against that Keras model like any float export (top-1
agreement on validation images, :func:`edge_fm.export.parity.parity_check`).

Example:
    >>> bundle = export_mobile_gpu("runs/edge-cnn-tiny-train-1", FormOptions(out="tiny-mobile-gpu"))  # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edge_fm import __version__
from edge_fm.data.datasets import CLASS_NAMES
from edge_fm.errors import EdgeFMError
from edge_fm.export.bundles import LABELS_FILE, check_new_folder, is_run, model_file, new_folder, write_bundle
from edge_fm.export.form_options import FormOptions
from edge_fm.export.luma import GREY_WEIGHTS

TARGET = "mobile-gpu"  # model.json's "target" and the manifest's
GPU_FOLDER = "mobile-gpu"  # where a shipped model would keep its mobile GPU form: models/<name>/mobile-gpu/
FORMAT = "fp16"  # the export format whose conversion the form uses
MADE_FOR = (
    'MediaPipe Tasks ImageClassifier with delegate "GPU" (Android, iOS, Web)',
    "LiteRT's GPU delegate",
)


def export_mobile_gpu(source: Path | str, options: FormOptions = FormOptions()) -> Path:
    """Makes the mobile GPU form of a run's float model and returns its bundle folder.

    The bundle (``runs/<name>-fp16-mobile-gpu-N/``, or ``out``) holds ``model.tflite`` (float32 RGB
    input, float16 weights, float32 probabilities, standard TFLite Metadata with the labels packed in,
    and edge-fm's own description), ``labels.txt``, ``model.json`` (the input and output an app feeds
    and reads, and a ``mobile_gpu`` record: the check against the Keras model, the test accuracy) and
    ``manifest.json``.

    Args:
        source: A finished training or pruning run (its float Keras model is converted).
        options: ``format_name`` (omit it, or ``fp16``: the form's own format), ``parity_images``
            (validation images of the check against the Keras model, and test images of the accuracy it
            records; None: the whole splits), ``out``, ``runs_dir``, ``data_dir`` (default: where the run
            read it) and ``progress``.

    Raises:
        EdgeFMError: An export bundle or .tflite file (they hold no float model), a quantization-aware
            run, another format, a failed check against the Keras model (nothing is written then), or a
            bad path.
    """
    from edge_fm.export.converter import convert
    from edge_fm.export.formats import get_format
    from edge_fm.export.parity import parity_check
    from edge_fm.train.evaluate import predict_proba
    from edge_fm.train.runs import Run

    run = Run(_require_float_run(source))
    if options.format_name not in (None, FORMAT):
        raise EdgeFMError(
            f"the {TARGET} form is float16 weights with float32 input and output; drop -f {options.format_name} "
            f"(or give -f {FORMAT})."
        )
    if run.quantization_aware:
        parent = next((step["run"] for step in run.lineage()[1:]), None)
        raise EdgeFMError(
            f"{run.path} is a quantization-aware ({run.stage}) run; the {TARGET} form is converted from a float "
            f"model: pass the run it was fine-tuned from{f' ({parent})' if parent else ''}."
        )
    if options.out is not None:
        check_new_folder(options.out)
    dataset = run.dataset(options.data_dir, data=options.data)
    model = run.model_to_convert()
    fmt = get_format(FORMAT)
    options.say(f"converting {run.path} to float16 weights with float32 RGB input")
    tflite = convert(rgb_model(model), fmt, "float32")
    val_images, val_labels = dataset.x_val[: options.parity_images], dataset.y_val[: options.parity_images]
    options.say(f"checking it against the Keras model on {len(val_labels)} validation images")
    form_probs = _form_probabilities(tflite, val_images)
    parity = parity_check(predict_proba(model, val_images), form_probs, val_labels, fmt)
    if not parity["passed"]:
        raise EdgeFMError(
            f"the {TARGET} form of {run.path} disagrees with its Keras model: top-1 agreement "
            f"{parity['agreement']:.2%} on {parity['images']} validation images ({parity['rule']}); nothing was "
            "written."
        )
    test_images, test_labels = (
        dataset.x_test[: options.parity_images],
        dataset.y_test[: options.parity_images],
    )
    test_accuracy = float(np.mean(_form_probabilities(tflite, test_images).argmax(1) == test_labels))
    description = _description(run, dataset, fmt, tflite, parity, test_accuracy, len(test_labels))
    bundle = new_folder(options.out, options.runs_dir, description["name"])
    options.say(f"writing {bundle}")
    return _write_bundle(bundle, run, tflite, description)


def _require_float_run(source: Path | str) -> Path:
    """``source`` when it is a run; an export bundle or .tflite file is refused (no float model in it)."""
    source = Path(source)
    if is_run(source) or model_file(source) is None:
        return source  # a run, or not a bundle: Run() names what is wrong with it
    from edge_fm.export.bundles import Bundle

    origin = _float_run_of((Bundle.open(source, embedded=True).description.get("source") or {}).get("run"))
    hint = f" ({origin})" if origin else ""
    raise EdgeFMError(
        f"{source} is an exported model, which holds no float model; the {TARGET} form is converted from a "
        f"training run's float Keras model: pass that run{hint}."
    )


def _float_run_of(recorded: str | None) -> str | None:
    """The float run a bundle's recorded source stands for: the source itself, or, for a
    quantization-aware run found here, the run it was fine-tuned from."""
    if not recorded or not is_run(Path(recorded)):
        return recorded
    from edge_fm.train.runs import Run

    run = Run(recorded)
    if not run.quantization_aware:
        return recorded
    return next((step["run"] for step in run.lineage()[1:]), recorded)


# ---------------------------------------------------------------- the graph


def rgb_model(model):
    """``model`` behind a float32 RGB input: a fixed 1x1 convolution with the luma weights makes the grey image.

    A model that already takes three channels is returned as it is.
    """
    from edge_fm.compat import keras

    height, width, channels = (int(d) for d in model.input_shape[1:])
    if channels == 3:
        return model
    image = keras.Input((height, width, 3), name="image", dtype="float32")
    luma = keras.layers.Conv2D(1, 1, use_bias=False, trainable=False, name="rgb_to_grey")
    grey = luma(image)
    luma.set_weights([np.array(GREY_WEIGHTS, np.float32).reshape(1, 1, 3, 1)])
    return keras.Model(image, model(grey), name=f"{model.name}_rgb")


def _form_probabilities(tflite: bytes, images: np.ndarray) -> np.ndarray:
    """The form's probabilities for grey (or RGB) uint8 images, given as RGB float pixel values (grey
    ones with three equal channels, see :func:`edge_fm.runner.model_pixels`)."""
    from edge_fm.runner import TFLiteModel

    return TFLiteModel(model_content=tflite).predict_proba(images)


# ---------------------------------------------------------------- the bundle


def _description(
    run, dataset, fmt, tflite: bytes, parity: dict, test_accuracy: float, test_count: int
) -> dict:
    from edge_fm.export.exporter import artifact_name, describe_artifact
    from edge_fm.export.tflite_file import inspect
    from edge_fm.export.tflite_metadata import WRITTEN_METADATA
    from edge_fm.runner import TFLiteModel

    probe = TFLiteModel(model_content=tflite)
    description = describe_artifact(
        probe, run.train_config.arch, fmt, "float32", run.path, run.stage, dataset
    )
    grey = dataset.x_val.shape[-1] != 3  # grey images: the form adds the luma convolution
    description.update(
        {
            "name": f"{artifact_name(run.train_config.arch, run.stage, fmt)}-{TARGET}",
            "target": TARGET,
            "labels": list(dataset.class_names),
            **_io_description(probe, grey, fashion=tuple(dataset.class_names) == CLASS_NAMES),
            "export": {"parity": parity, **inspect(tflite)},
        }
    )
    description["mobile_gpu"] = {
        "made_from": {"run": str(run.path), "stage": run.stage, "model": "the run's float Keras model"},
        "weights": "float16 (dequantized to float32 by CPU interpreters; GPU delegates compute in float16)",
        "grey_conversion": (
            {"how": "a fixed 1x1 convolution in front of the network", "weights": list(GREY_WEIGHTS)}
            if grey
            else None
        ),
        "parity": parity,
        "test_accuracy": test_accuracy,
        "test_images": test_count,
        "standard_metadata": WRITTEN_METADATA,
        "made_for": list(MADE_FOR),
        "why": "MediaPipe's GPU path gives its post-processing float tensors: the uint8 output of the mobile "
        "form fails there, this form's float32 output does not",
    }
    return description


def _io_description(probe, grey: bool, fashion: bool) -> dict[str, Any]:
    """The ``input`` and ``output`` of ``model.json``, read off the finished graph.

    ``grey``: the model turns RGB grey itself; ``fashion``: a Fashion-MNIST model (light garments on black).
    """
    steps = [
        "give the image as RGB pixel values 0-255 in float32"
        + (
            f"; the model turns it grey itself ({GREY_WEIGHTS[0]} R + {GREY_WEIGHTS[1]} G + {GREY_WEIGHTS[2]} B)"
            if grey
            else ""
        ),
        *(
            [
                "the model expects a light garment on a black background: invert a photo of a dark object on a "
                "light background (pixel = 255 - pixel)"
            ]
            if fashion
            else []
        ),
        "crop to the object, center it and pad to a square with black (0), then resize to the input size with an "
        "averaging filter (MediaPipe resizes other sizes by its own method, which changes some answers)",
        "no scaling or normalization (the standard metadata says mean 0, std 1)",
    ]
    return {
        "input": {
            "name": probe.input["name"],
            "shape": [int(d) for d in probe.input["shape"]],
            "dtype": "float32",
            "layout": "NHWC (batch, height, width, channels)",
            "channels": "RGB",
            "scale": None,
            "zero_point": None,
            "pixel_range": [0, 255],
            "preprocessing": steps,
        },
        "output": {
            "name": probe.output["name"],
            "shape": [int(d) for d in probe.output["shape"]],
            "dtype": "float32",
            "scale": None,
            "zero_point": None,
            "meaning": "probability of each class, in the order of labels.txt",
        },
    }


def _write_bundle(bundle: Path, run, tflite: bytes, description: dict) -> Path:
    from edge_fm.export.tflite_file import embed_metadata
    from edge_fm.export.tflite_metadata import build_metadata, labels_file, populate

    labels = description["labels"]
    final = populate(
        embed_metadata(tflite, description, labels),
        build_metadata(standard_info(description)),
        {LABELS_FILE: labels_file(labels)},
    )
    return write_bundle(
        bundle,
        final,
        description,
        labels,
        {
            "stage": "export",
            "parent": str(run.path),
            "lineage": run.lineage(),
            "format": FORMAT,
            "target": TARGET,
            "status": "complete",
        },
    )


def standard_info(description: dict[str, Any]):
    """What the standard metadata says of a mobile GPU artifact."""
    from edge_fm.export.tflite_metadata import ImageClassifierInfo

    record = description["mobile_gpu"]
    height, width = description["input"]["shape"][1:3]
    return ImageClassifierInfo(
        name=description["name"],
        description=(
            f"Image classifier ({description['architecture']}, float16 weights, for GPU delegates) made with "
            f"edge-fm: {len(description['labels'])} classes from a {height}x{width} RGB image"
            f"{', turned grey inside the model' if record['grey_conversion'] else ''}. Test accuracy "
            f"{record['test_accuracy']:.2%} on {record['test_images']} images."
        ),
        labels=tuple(description["labels"]),
        version=f"{description['name']} (edge-fm {__version__})",
        author="edge-fm",
        license="MIT",
        input_description="Image to classify, RGB pixel values 0-255 as float32.",
    )

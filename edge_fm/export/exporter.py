"""The export stage: TFLite artifacts a mobile app can embed, driven by one table of formats.

An export writes a bundle directory (``runs/<arch>-<format>-N/``, see :mod:`edge_fm.export.bundles`)
with the artifact, its labels and its description (everything an app needs to call the model
without reading Python), and embeds the labels and that description in the .tflite file's own metadata. A parity
check against the Keras model guards every export.

Example:
    >>> bundle = export("runs/cnn-2conv-qat-1", "qat-int8")  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edge_fm.data.reference import RECORD_KEY, data_record
from edge_fm.errors import EdgeFMError
from edge_fm.export.bundles import kind_of, write_bundle
from edge_fm.export.converter import convert, representative_images  # noqa: F401 (re-exported)
from edge_fm.export.form_options import REPRESENTATIVE_SIZE, FormOptions
from edge_fm.export.formats import FORMATS, IO_DTYPES, ExportFormat, format_names, get_format  # noqa: F401 (re-exported)
from edge_fm.export.parity import parity_check
from edge_fm.export.tflite_file import embed_metadata, inspect
from edge_fm.io import check_output_dir
from edge_fm.runner import RunnerError, TFLiteModel
from edge_fm.train.evaluate import predict_proba
from edge_fm.train.runs import Run, model_sha256, new_run_dir

# ---------------------------------------------------------------- the stage


def export(
    run_dir: Path | str,
    format_name: str,
    io_dtype: str | None = None,
    representative_size: int = REPRESENTATIVE_SIZE,
    parity_images: int | None = 1000,
    runs_dir: Path | str = "runs",
    data_dir: Path | str | None = None,
    calibration_dir: Path | str | None = None,
    data: Path | str | None = None,
) -> Path:
    """Exports a run's model as a TFLite bundle and returns the bundle directory.

    Args:
        run_dir: A finished training or optimization run.
        format_name: One of :func:`format_names`.
        io_dtype: Input/output dtype for integer formats (default ``int8``).
        representative_size: Calibration images drawn from the training split (integer formats).
        parity_images: Validation images the parity check uses (None: the whole validation split).
        runs_dir: Where the bundle directory is created.
        data_dir: Where the full dataset is (default: where the run read it).
        calibration_dir: Calibrate integer formats on up to ``representative_size`` images of this
            folder instead of training images (see :mod:`edge_fm.export.calibration`).
        data: Where the run's own data is now, when it moved (see :meth:`Run.dataset`).

    Returns:
        The bundle directory with ``model.tflite``, ``labels.txt``, ``model.json`` and ``manifest.json``.

    Raises:
        EdgeFMError: Unknown format or dtype, a non-QAT run for ``qat-int8``, a failed
            conversion or a failed parity check (then no bundle is left behind).
    """
    fmt = get_format(format_name)
    io_dtype = io_dtype or fmt.io_dtypes[0]
    if io_dtype not in fmt.io_dtypes:
        raise EdgeFMError(
            f"format {fmt.name} takes input/output dtype {' or '.join(fmt.io_dtypes)}, not {io_dtype!r}."
        )
    for option, value in (("--parity-images", parity_images), ("--calibration", representative_size)):
        if value is not None and value < 1:
            raise EdgeFMError(f"{option} {value}: give at least 1.")
    check_output_dir(runs_dir, "--runs-dir")  # before the conversion, not after it
    run = Run(run_dir)
    _check_stage(run, fmt)
    config = run.train_config
    dataset = run.dataset(data_dir, data=data)
    model = run.model_to_convert()
    if fmt.integer and calibration_dir is not None:
        from edge_fm.export.calibration import folder_images

        own = dataset.identity is not None and dataset.identity.kind != "fashion-mnist"
        shape = dataset.image_shape if own else None  # a model of its own data: read as its training images
        calibration = folder_images(calibration_dir, representative_size, shape, config.resize)
    else:
        calibration = (
            representative_images(dataset.x_train, representative_size, config.seed) if fmt.integer else None
        )
    flatbuffer = convert(model, fmt, io_dtype, calibration)

    check_images, check_labels = dataset.x_val[:parity_images], dataset.y_val[:parity_images]
    try:
        tflite_probs = TFLiteModel(model_content=flatbuffer).predict_proba(check_images)
    except RunnerError as exc:  # e.g. an op whose kernel does not take the format's types
        raise EdgeFMError(
            f"the {fmt.name} artifact does not run under LiteRT: {exc}; nothing was written."
        ) from None
    parity = parity_check(predict_proba(model, check_images), tflite_probs, check_labels, fmt)
    if not parity["passed"]:
        raise EdgeFMError(
            f"parity check failed for {fmt.name}: {parity['rule']} not met (agreement {parity['agreement']:.2%}, "
            f"TFLite accuracy {parity['tflite_accuracy']:.2%} vs Keras {parity['keras_accuracy']:.2%} on "
            f"{parity['images']} validation images); nothing was written."
        )

    probe = TFLiteModel(model_content=flatbuffer)
    description = describe_artifact(
        probe, config.arch, fmt, io_dtype, run.path, run.stage, dataset, config.data_options
    )
    description["export"] = {"parity": parity, **inspect(flatbuffer)}
    final = embed_metadata(flatbuffer, description, list(dataset.class_names))
    bundle = new_run_dir(runs_dir, artifact_name(config.arch, run.stage, fmt))
    return write_bundle(
        bundle,
        final,
        description,
        dataset.class_names,
        {
            "stage": "export",
            "parent": str(run.path),
            "lineage": run.lineage(),
            "format": fmt.name,
            "status": "complete",
        },
    )


def run_test_images(
    run_dir: Path | str, data_dir, count: int | None, data: Path | str | None = None
) -> tuple[np.ndarray, np.ndarray, str]:
    """The first ``count`` test images of a run's dataset (None: all), their labels, and what they are:
    what a form made from the run is checked on (``data``: where the run's own data is now)."""
    dataset = Run(run_dir).dataset(data_dir, data=data)
    images, labels = dataset.x_test[:count], dataset.y_test[:count]
    return images, labels, f"{dataset.describe()}: test split, first {len(labels)}"


def export_integer(
    run_dir: Path | str, options: FormOptions, form_title: str, io_dtype: str | None = "int8"
) -> Path:
    """Exports a run's integer artifact for a form (mobile, mcu, Ethos-U) to start from, and returns its bundle.

    Args:
        run_dir: A finished training or QAT run.
        options: The form's options; this reads ``format_name`` (default: ``qat-int8`` for a QAT run,
            else ``int8``), ``representative_size``, ``parity_images``, ``runs_dir``, ``data_dir``,
            ``data`` and ``progress``.
        form_title: The form, for the error (``the mobile form``).
        io_dtype: The artifact's input/output dtype (None: the format's default).

    Raises:
        EdgeFMError: A float format, or whatever :func:`export` refuses.
    """
    run = Run(run_dir)
    fmt = get_format(options.format_name or ("qat-int8" if run.quantization_aware else "int8"))
    if not fmt.integer:
        raise EdgeFMError(
            f"{form_title} is an integer export; format {fmt.name} is not one: export with "
            "`-f int8` or `-f qat-int8`."
        )
    options.say(f"exporting {run.path} as {fmt.name}")
    return export(
        run.path,
        fmt.name,
        io_dtype,
        options.representative_size or REPRESENTATIVE_SIZE,
        options.parity_images,
        options.runs_dir,
        options.data_dir,
        data=options.data,
    )


def describe_artifact(
    model: TFLiteModel, arch, fmt: ExportFormat, io_dtype, run_dir, stage, dataset, options=None
) -> dict[str, Any]:
    """The ``model.json`` description of an artifact (what an app needs to call it).

    A model of a dataset other than Fashion-MNIST also records that dataset (``data``: its
    identity and the options that reproduce its splits; see :mod:`edge_fm.data.reference`).
    """
    from edge_fm.data.options import DataOptions

    scale, zero_point = model.input["quantization"]
    out_scale, out_zero = model.output["quantization"]
    integer_io = io_dtype != "float32"
    record = data_record(dataset, options or DataOptions())
    quantize = (
        "quantize: q = round(pixel / scale) + zero_point, clamped to the dtype"
        if integer_io
        else "feed as float32 pixel values 0-255"
    )
    description = {
        "name": artifact_name(arch, stage, fmt),
        "architecture": arch,
        "format": fmt.name,
        "quantization": fmt.quantization,
        "input": {
            "name": model.input["name"],
            "shape": [int(d) for d in model.input["shape"]],
            "dtype": io_dtype,
            "layout": "NHWC (batch, height, width, channels)",
            "scale": float(scale) if integer_io else None,
            "zero_point": int(zero_point) if integer_io else None,
            "pixel_range": [0, 255],
            "preprocessing": [*input_steps(record), quantize],
        },
        "output": {
            "name": model.output["name"],
            "shape": [int(d) for d in model.output["shape"]],
            "dtype": io_dtype,
            "scale": float(out_scale) if integer_io else None,
            "zero_point": int(out_zero) if integer_io else None,
            "meaning": "probability of each class, in the order of labels.txt"
            + ("; dequantize: p = (q - zero_point) * scale" if integer_io else ""),
        },
        "labels": list(dataset.class_names),
        "source": {"run": str(run_dir), "stage": stage, "data": dataset.describe(), **_model_hash(run_dir)},
    }
    if record is not None:
        description[RECORD_KEY] = record
    return description


def _model_hash(run_dir) -> dict[str, str]:
    """The sha256 of the run's Keras model, as its manifest lists it: what ties a bundle to the one run it
    came from, wherever runs of the same name are (empty for a run without one)."""
    sha256 = model_sha256(Run(run_dir).manifest)
    return {"model_sha256": sha256} if sha256 else {}


def check_run_formats(run_dir: Path | str, names: Sequence[str]) -> None:
    """Refuses, before any export, a format the run cannot give (qat-int8 of a run without QAT, a plain
    integer format of a QAT run); a path that is not a run is left to the export to refuse.

    Raises:
        EdgeFMError: An unknown format, or one of another kind of run than ``run_dir``.
    """
    formats = [get_format(name) for name in names]
    if kind_of(run_dir) == "run":
        for fmt in formats:
            _check_stage(Run(run_dir), fmt)


def _check_stage(run: Run, fmt: ExportFormat) -> None:
    if fmt.needs_qat != run.quantization_aware:
        hint = "run `edge-fm optimize RUN --qat` first" if fmt.needs_qat else "export it as qat-int8"
        raise EdgeFMError(
            f"{run.path} is a {run.stage} run; format {fmt.name} needs "
            f"{'a QAT' if fmt.needs_qat else 'a non-QAT'} run ({hint})."
        )


def input_steps(record: dict[str, Any] | None) -> list[str]:
    """How an image becomes the model's input: Fashion-MNIST's garment steps, or the data's own resize."""
    if record is None:
        return [
            "convert to greyscale (one channel)",
            "if the object is dark on a light background (a photo), invert: pixel = 255 - pixel",
            "pad to a square with black (0), then resize to 28x28",
            "keep raw pixel values 0-255 (the model scales them itself)",
        ]
    height, width, channels = record["image_shape"]
    policy = (record.get("options") or {}).get("resize", "pad")
    fit = (
        f"keep the aspect ratio: resize to fit {width}x{height} and pad with black (0), centred"
        if policy == "pad"
        else f"resize to {width}x{height} (stretch, aspect ratio not kept)"
    )
    return [
        "convert to greyscale (one channel)"
        if channels == 1
        else "give RGB (three channels, in R, G, B order)",
        f"{fit}; bilinear",
        "keep raw pixel values 0-255 (the model scales them itself)",
    ]


def artifact_name(arch: str, stage: str, fmt: ExportFormat) -> str:
    """``cnn-2conv-int8``, or ``cnn-2conv-pruned-int8`` when the source was pruned."""
    return f"{arch}-{'pruned-' if stage in ('prune', 'pqat') else ''}{fmt.name}"

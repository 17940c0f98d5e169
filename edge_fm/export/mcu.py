"""The microcontroller form of an integer export, proven under TensorFlow Lite for Microcontrollers.

The form is a bundle with the int8 model, its firmware sources (:mod:`edge_fm.export.firmware`)
and an ``mcu`` record of how the model fares under TFLM (:mod:`edge_fm.export.tflm`): it runs, in
what arena, on which boards it fits, and how it agrees with LiteRT's reference kernels.

Example:
    >>> bundle = export_mcu("models/mlp", FormOptions(data_dir="data/fashion-mnist"))  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from edge_fm.errors import EdgeFMError, unknown_choice
from edge_fm.export.bundles import (
    FIRMWARE_FOLDER,
    Bundle,
    check_new_folder,
    is_run,
    model_file,
    new_folder,
    write_bundle,
)
from edge_fm.export.firmware import C_ARRAY_MODES, c_identifier, firmware_sources, roles
from edge_fm.export.form_options import FormOptions
from edge_fm.export.tflm import (
    ARENA_PROBE_MAX,
    INSTALL_HINT,
    MIN_REFERENCE_AGREEMENT,
    Arena,
    TflmModel,
    TflmReport,
    check_int8_model,
    find_arena,
    model_ops,
    refusal,
    tflm_report,
    unsupported_ops,
)
from edge_fm.io import make_dirs, write_bytes_atomic

# ---------------------------------------------------------------- reading the model


def read_model(source: Path | str) -> Bundle:
    """Reads an int8 export bundle (a folder with ``model.tflite``) or a .tflite file.

    Its description is the bundle's ``model.json`` (empty for a bare .tflite file); its labels are
    ``labels.txt``, else those embedded in the file, else the description's, else Fashion-MNIST's.

    Raises:
        EdgeFMError: The path is missing or holds no .tflite file, or the model is not int8 in and out.
    """
    source = Path(source)
    path = model_file(source)
    if path is None:
        hint = (
            "it is a training run: pass it with a format, e.g. `-f int8`"
            if is_run(source)
            else "pass an int8 export bundle (a folder with model.tflite, e.g. models/mlp) or a .tflite file"
        )
        what = "holds no .tflite model" if source.exists() else "does not exist"
        raise EdgeFMError(f"{source} {what}: {hint}.")
    check_int8_model(path.read_bytes(), path)
    model = Bundle.open(source, embedded=True)
    description = model.description if model.has_sidecar else {}
    from edge_fm.data.datasets import CLASS_NAMES

    labels = model.checked_labels(fallback=CLASS_NAMES)
    return dataclasses.replace(model, description=description, labels=labels)


# ---------------------------------------------------------------- firmware files


def _io_quantization(flatbuffer: bytes) -> dict[str, float]:
    interpreter = TflmModel(flatbuffer, ARENA_PROBE_MAX).interpreter
    source = interpreter.get_input_details(0)["quantization_parameters"]
    target = interpreter.get_output_details(0)["quantization_parameters"]
    return {
        "input_scale": float(source["scales"][0]),
        "input_zero_point": int(source["zero_points"][0]),
        "output_scale": float(target["scales"][0]),
        "output_zero_point": int(target["zero_points"][0]),
    }


def mcu_files(
    source: Path | str,
    out_dir: Path | str,
    name: str | None = None,
    arena: Arena | None = None,
    c_array_mode: str = "source",
) -> dict[str, Path]:
    """Writes the files a firmware build needs for an int8 model, each atomically.

    ``<name>_model_data.h/.cc`` (the model as an aligned C array and its length),
    ``<name>_op_resolver.h`` (a ``MicroMutableOpResolver<N>`` with exactly the model's ops),
    ``<name>_model_settings.h`` (arena size, quantization, labels) and ``<name>_example.cc``
    (the calls a sketch makes).

    Args:
        source: An int8 export bundle or .tflite file.
        out_dir: Where the files go (created if needed).
        name: The C name of the model (default: the model's name, e.g. ``mlp_qat_int8``).
        arena: The arena found earlier (default: found now, under TFLM).
        c_array_mode: ``source`` (the C array) or ``script`` (a script that writes it from the form's
            model.tflite at build time; see :func:`edge_fm.export.firmware.firmware_sources`).

    Returns:
        File role (``model_data_h``, ``model_data_cc`` or ``model_data_script``, ``op_resolver``,
        ``settings``, ``example``) -> path.

    Raises:
        EdgeFMError: Not an int8 model, an op TFLM lacks, TFLM not installed, or an unwritable folder.
    """
    model = read_model(source)
    texts = firmware_texts(model, name, arena, c_array_mode, Path(out_dir).name)
    out_dir = make_dirs(out_dir, "firmware folder")
    for filename, text in texts.items():
        write_bytes_atomic(out_dir / filename, text.encode())
    return {role: out_dir / filename for role, filename in zip(roles(c_array_mode), texts)}


def firmware_texts(
    model: Bundle,
    name: str | None = None,
    arena: Arena | None = None,
    c_array_mode: str = "source",
    folder: str = FIRMWARE_FOLDER,
) -> dict[str, str]:
    """The firmware files of an int8 model read by :func:`read_model`, by file name (see :func:`mcu_files`).

    Raises:
        EdgeFMError: An op TFLM lacks, or TFLM not installed.
    """
    missing, error = unsupported_ops(model.flatbuffer)
    if missing:
        raise EdgeFMError(refusal(missing))
    if error:
        raise EdgeFMError(f"TFLM could not load {model.path}: {error}")
    arena = arena or find_arena(model.flatbuffer)
    return firmware_sources(
        name or model.name,
        model.flatbuffer,
        model.labels,
        model_ops(model.flatbuffer),
        arena,
        _io_quantization(model.flatbuffer),
        c_identifier(name or model.name),
        c_array_mode,
        folder,
        _input_note(model.description),
    )


def _input_note(description: dict) -> str:
    """What the model's input shows: Fashion-MNIST's garments, or its own data, resized by its policy."""
    from edge_fm.data.reference import recorded_data, short_name

    record = recorded_data(description)
    if record is None:
        return ", light object on black (Fashion-MNIST)"
    resize = (record.get("options") or {}).get("resize", "pad")
    how = "aspect kept, padded with black" if resize == "pad" else "stretched"
    return f" of {short_name(record)}, resized as in training ({how})"


# ---------------------------------------------------------------- the stage


def check_images(
    model: Bundle, count: int | None, data_dir: Path | str | None, data: str | Path | None
) -> tuple[np.ndarray, np.ndarray, str]:
    """The first ``count`` test images of the model's data (None: all), their labels, and what they are.

    A model made from other data than Fashion-MNIST is checked on that data's test split (its
    ``model.json`` names it; ``data`` says where it is when it moved).
    """
    from edge_fm.data.reference import model_test_split

    if count is not None and count < 1:
        raise EdgeFMError(f"check images {count}: give at least 1.")
    what = str(model.folder or model.path)
    split = model_test_split(model.description, data, data_dir, False, what, model.labels).first(count)
    return split.images, split.labels, split.checked_on


def export_mcu(source: Path | str, options: FormOptions = FormOptions()) -> Path:
    """Makes the microcontroller form of a model and returns its bundle folder.

    The bundle (``runs/<name>-mcu-N/``, or ``out``) holds the int8 ``model.tflite``, ``labels.txt``,
    ``model.json`` with an ``mcu`` record (runs under TFLM, arena, flash, agreement with LiteRT's
    reference kernels and accuracy on the images checked, boards it fits on), ``manifest.json``
    and ``firmware/`` (see :func:`mcu_files`).

    Args:
        source: A training or QAT run (exported first as ``options.format_name``), or an int8 export
            bundle or .tflite file (e.g. ``models/mlp``), used as it is.
        options: ``format_name`` (for a run: ``int8`` or ``qat-int8``, default ``qat-int8`` for a QAT
            run, else ``int8``), ``parity_images`` (test images checked under TFLM, and validation images
            of a run's export parity check; None: all), ``representative_size`` (a run's int8 export),
            ``c_array_mode`` (``source``: the C array in ``firmware/``; ``script``: a script in
            ``firmware/`` writes it from ``model.tflite`` at build time), ``out``, ``runs_dir``,
            ``data_dir``, ``progress`` and ``data`` (a bundle of other data than Fashion-MNIST: where
            that data is, when not where its ``model.json`` says).

    Raises:
        EdgeFMError: An unknown ``c_array_mode``, a float format or model, an op TFLM lacks (nothing is
            written for the MCU), agreement with the reference below 99%, or a bad path.
    """
    source = Path(source)
    if options.c_array_mode not in C_ARRAY_MODES:
        raise unknown_choice("--c-array", options.c_array_mode, C_ARRAY_MODES)
    if options.out is not None:
        check_new_folder(options.out)
    elif is_run(source):
        make_dirs(options.runs_dir, "runs folder")
    test_images, test_labels, images_source, parent = _source_model(source, options)
    model = read_model(parent)
    options.say(f"running {model.name} under TFLM on {len(test_labels)} test images")
    report = tflm_report(model.path, test_images, test_labels, images_source)
    if not report.runs_under_tflm:
        raise EdgeFMError(report.error)
    if report.agreement_with_litert_reference < MIN_REFERENCE_AGREEMENT:
        raise EdgeFMError(
            f"TFLM agrees with LiteRT's reference kernels on only {report.agreement_with_litert_reference:.2%} of "
            f"{report.images} images (at least {MIN_REFERENCE_AGREEMENT:.0%} expected): the tflite-micro build "
            f"{report.tflm_version} computes this model differently; try another build ({INSTALL_HINT})."
        )
    bundle = new_folder(options.out, options.runs_dir, f"{model.name}-mcu")
    options.say(f"writing {bundle}")
    return _write_bundle(bundle, model, report, parent, options.c_array_mode)


def _source_model(source: Path, options: FormOptions) -> tuple[np.ndarray, np.ndarray, str, Path]:
    """The int8 model to use (exported first from a run) and the test images to check it on."""
    if not is_run(source):
        if options.format_name is not None:
            raise EdgeFMError(
                f"{source} is not a run, so there is nothing to export as {options.format_name}: drop the "
                "format to use the model as it is."
            )
        model = read_model(source)  # refuse a float or uint8 model before loading any data
        return (*check_images(model, options.parity_images, options.data_dir, options.data), source)
    from edge_fm.export.exporter import export_integer, run_test_images

    exported = export_integer(source, options, "the microcontroller form")
    return (*run_test_images(source, options.data_dir, options.parity_images, options.data), exported)


def _write_bundle(bundle: Path, model: Bundle, report: TflmReport, parent: Path, c_array_mode: str) -> Path:
    texts = firmware_texts(model, model.name, report.arena, c_array_mode)
    description = dict(model.description) or {"name": model.name, "labels": list(model.labels)}
    description["target"] = "mcu"
    description["mcu"] = {
        **report.as_dict(),
        "firmware": {
            role: f"{FIRMWARE_FOLDER}/{filename}" for role, filename in zip(roles(c_array_mode), texts)
        },
    }
    return write_bundle(
        bundle,
        model.flatbuffer,
        description,
        model.labels,
        {
            "stage": "export",
            "parent": str(parent),
            "format": description.get("format"),
            "target": "mcu",
            "status": "complete",
        },
        files={f"{FIRMWARE_FOLDER}/{filename}": text.encode() for filename, text in texts.items()},
    )

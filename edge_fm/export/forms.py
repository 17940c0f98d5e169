"""Export forms: what an artifact becomes for one kind of client, one table row each.

An integer form starts from a training run (its int8 artifact is exported first) or from an int8
bundle and is checked against the int8 artifact (a shipped form kept as its record alone is made again
into its folder: :mod:`edge_fm.export.recorded_forms`); the mobile GPU form starts from a training run's
float model and is checked against it. Each writes a bundle (:func:`edge_fm.export.bundles.write_bundle`).
:data:`FORMS` sits beside the export formats (:data:`edge_fm.export.formats.FORMATS`): the CLI's
``--for`` choices and :func:`export_form` read it.

Example:
    >>> bundle = export_form("models/edge-cnn-tiny", "mobile", FormOptions(out="tiny-mobile"))  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

from edge_fm.errors import EdgeFMError, NameTable
from edge_fm.export.form_options import FormOptions
from edge_fm.export.formats import FORMATS, get_format
from edge_fm.export.mcu import export_mcu
from edge_fm.export.mobile import export_mobile
from edge_fm.export.mobile_gpu import export_mobile_gpu
from edge_fm.export.recorded_forms import complete_form_refusal, is_record_only, rebuild_mobile_form
from edge_fm.export.vela import config_names, export_ethos_u_form, get_config


@dataclasses.dataclass(frozen=True)
class Form:
    """One export form: its ``--for`` name, what it is, and the function that makes it."""

    name: str  # what `edge-fm export --for` takes
    summary: str  # what it gives a client (the --for help)
    export: Callable[[Path | str, FormOptions], Path]  # called with the source and the options
    also_called: tuple[str, ...] = ()  # what users may type for it instead, answered with its name
    takes_format: bool = True  # made from an integer export of -f's format (mobile-gpu: from the float model)
    io: str = "int8"  # the input and output it fixes (so --io-dtype is not for it)


def _mobile(source: Path | str, options: FormOptions) -> Path:
    """The mobile form; into a folder that holds a form's record alone, that form made again."""
    out = options.out
    if out is not None and is_record_only(out):
        return rebuild_mobile_form(source, out, options.data_dir, options.data, options.progress)
    refusal = complete_form_refusal(out) if out is not None else None
    if refusal:
        raise EdgeFMError(refusal)
    return export_mobile(source, options)


FORMS = NameTable(
    "--for target",
    (
        Form(
            "mobile",
            "uint8 RGB input, standard metadata",
            _mobile,
            ("phone", "android", "ios", "app", "mediapipe", "tflite"),
            io="uint8 RGB",
        ),
        Form(
            "mobile-gpu",
            "float32 RGB input, float16 weights, standard metadata: for GPU delegates",
            export_mobile_gpu,
            ("gpu", "phone-gpu"),
            takes_format=False,
            io="float32 RGB",
        ),
        Form(
            "mcu",
            "TFLM firmware files, checked under TFLM",
            export_mcu,
            ("tflm", "microcontroller", "arduino", "esp32", "stm32", "cortex-m"),
        ),
        Form(
            "ethos-u",
            "compiled by Arm's Vela with its estimate; needs --accelerator-config",
            export_ethos_u_form,
            ("ethos", "ethosu", "vela", "npu"),
        ),
    ),
    {"none": "is the plain export, not a form: call export(run, format) (edge-fm export RUN -f FORMAT)."},
)


def forms_help() -> str:
    """The ``--for`` choices with what each gives a client, for the command line's help."""
    return "; ".join(["none", *(f"{form.name} ({form.summary})" for form in FORMS)]) + "."


def get_form(name: str) -> Form:
    """The form called ``name``; ``none`` (the command line's plain export) and an unknown name are refused."""
    return FORMS.get(name)


def export_form(source: Path | str, form: str, options: FormOptions = FormOptions()) -> Path:
    """Makes form ``form`` of a run or an int8 bundle and returns its bundle folder.

    Raises:
        EdgeFMError: An unknown form, or whatever the form refuses (nothing is written then).
    """
    return get_form(form).export(source, options)


def formats_help() -> str:
    """The ``-f`` choices, from the format table."""
    return f"{', '.join(FORMATS.names()[:-1])} or {FORMATS.names()[-1]} (repeatable); with --for it may be left out."


def io_dtypes_help() -> str:
    """The input/output dtypes of the integer formats, from the format table (the first is the default)."""
    integer = [fmt for fmt in FORMATS if fmt.integer]
    usual = integer[0].io_dtypes
    others = [f"{fmt.name}: {' or '.join(fmt.io_dtypes)}" for fmt in integer if fmt.io_dtypes != usual]
    return (
        f"Input/output dtype of integer formats: {', '.join(usual[:-1])} or {usual[-1]}"
        + (f" ({'; '.join(others)})" if others else "")
        + "; the first is the default."
    )


def accelerator_configs_help() -> str:
    """The Ethos-U configurations ``--for ethos-u`` compiles for, from Vela's table."""
    names = config_names()
    return f"With --for ethos-u: the Ethos-U configuration Vela compiles for: {', '.join(names[:-1])} or {names[-1]}."


def check_export_request(
    target: str,
    formats,
    options: FormOptions = FormOptions(),
    io_dtype: str | None = None,
    calibration_dir=None,
) -> None:
    """Refuses, before any work, an export whose options do not go together: no format and no form, an
    unknown form, ``--out`` for several bundles, an option of one form given to another, an
    ``io_dtype`` for a form (each fixes its own), an unknown Ethos-U configuration, and a calibration
    folder that is not for a plain integer export or holds no image.

    Args:
        target: The form (``none``: a plain export of each format).
        formats: The formats asked for (``-f``).
        options: The form's options (``out``, ``c_array_mode`` and ``accelerator_config`` are read).
        io_dtype: The input/output dtype of a plain export.
        calibration_dir: A folder of calibration images of a plain export.
    """
    formats = list(formats or [])
    form = None if target == "none" else get_form(target)
    if form is None and not formats:
        raise EdgeFMError(
            f"give a format to export (e.g. -f int8); only --for ({', '.join(FORMS.names())}) goes without one."
        )
    if options.out is not None and (form is None or len(formats) > 1):
        raise EdgeFMError("--out names one bundle of a form: use it with --for and at most one format.")
    if options.c_array_mode != "source" and target != "mcu":
        raise EdgeFMError("--c-array is for the microcontroller form: use it with --for mcu, or drop it.")
    if form is not None and io_dtype is not None:
        fixed = ", ".join(f"{each.name}: {each.io}" for each in FORMS)
        raise EdgeFMError(
            f"--io-dtype is for plain exports: the {form.name} form fixes its own ({fixed}); drop it."
        )
    _check_accelerator(target, options.accelerator_config)
    if calibration_dir is not None:
        _check_calibration_folder(form, formats, calibration_dir)


def _check_accelerator(target: str, accelerator_config: str | None) -> None:
    if (accelerator_config is not None) != (target == "ethos-u"):
        raise EdgeFMError(
            "--for ethos-u and --accelerator-config go together (e.g. --for ethos-u --accelerator-config "
            "ethos-u55-128)."
        )
    if target == "ethos-u":
        get_config(accelerator_config)


def _check_calibration_folder(form: Form | None, formats: list[str], calibration_dir) -> None:
    from edge_fm.export.calibration import folder_images

    if form is not None or not all(get_format(name).integer for name in formats):
        raise EdgeFMError(
            "--calibration-dir calibrates integer formats of a plain export (-f int8, int8-per-tensor, int16x8): "
            "drop it, or export only integer formats without --for."
        )
    folder_images(calibration_dir, 1)  # a folder without images is refused before any work

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
from edge_fm.export.mcu import export_mcu
from edge_fm.export.mobile import export_mobile
from edge_fm.export.mobile_gpu import export_mobile_gpu
from edge_fm.export.recorded_forms import complete_form_refusal, is_record_only, rebuild_mobile_form
from edge_fm.export.vela import export_ethos_u_form


@dataclasses.dataclass(frozen=True)
class Form:
    """One export form: its ``--for`` name, what it is, and the function that makes it."""

    name: str  # what `edge-fm export --for` takes
    summary: str  # what it gives a client (the --for help)
    export: Callable[[Path | str, FormOptions], Path]  # called with the source and the options
    also_called: tuple[str, ...] = ()  # what users may type for it instead, answered with its name
    takes_format: bool = True  # made from an integer export of -f's format (mobile-gpu: from the float model)


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
        ),
        Form(
            "mobile-gpu",
            "float32 RGB input, float16 weights, standard metadata: for GPU delegates",
            export_mobile_gpu,
            ("gpu", "phone-gpu"),
            takes_format=False,
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


def check_form_options(target: str, accelerator_config: str | None, calibration_dir, formats) -> None:
    """Refuses, before any work, an Ethos-U option without its form, an unknown configuration, and a
    calibration folder that is not for a plain integer export or holds no image."""
    from edge_fm.export.calibration import folder_images
    from edge_fm.export.formats import get_format
    from edge_fm.export.vela import get_config

    if (accelerator_config is not None) != (target == "ethos-u"):
        raise EdgeFMError(
            "--for ethos-u and --accelerator-config go together (e.g. --for ethos-u --accelerator-config "
            "ethos-u55-128)."
        )
    if target == "ethos-u":
        get_config(accelerator_config)
    if calibration_dir is None:
        return
    if target != "none" or not all(get_format(name).integer for name in formats or []):
        raise EdgeFMError(
            "--calibration-dir calibrates integer formats of a plain export (-f int8, int8-per-tensor, int16x8): "
            "drop it, or export only integer formats without --for."
        )
    folder_images(calibration_dir, 1)  # a folder without images is refused before any work

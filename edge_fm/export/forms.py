"""Export forms: what an int8 artifact becomes for one kind of client, one table row each.

A form starts from a training run (its int8 artifact is exported first) or from an int8 bundle,
makes the form, checks it against the int8 artifact, and writes a bundle
(:func:`edge_fm.export.bundles.write_bundle`). :data:`FORMS` sits beside the export formats
(:data:`edge_fm.export.formats.FORMATS`): the CLI's ``--for`` choices and :func:`export_form` read it.

Example:
    >>> bundle = export_form("models/edge-cnn-tiny", "mobile", out="edge-cnn-tiny-mobile")  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

from edge_fm.errors import unknown_choice
from edge_fm.export.mcu import export_mcu
from edge_fm.export.mobile import export_mobile


@dataclasses.dataclass(frozen=True)
class FormOptions:
    """What every form's export takes (see :func:`export_form`)."""

    format_name: str | None = None  # for a run: int8 or qat-int8 (default by the run); for a bundle: none
    out: Path | str | None = None  # the bundle folder (default: a new runs_dir/<name>-<form>-N)
    runs_dir: Path | str = "runs"  # where new bundles (and a run's int8 export) are created
    data_dir: Path | str | None = None  # where the full dataset is
    representative_size: int | None = None  # calibration images of a run's int8 export
    parity_images: int | None = 1000  # images each check runs on
    progress: Callable[[str], None] | None = None  # called with a line at each step
    c_array_mode: str = "source"  # mcu: the model's C array in the form, or a script writing it at build time


@dataclasses.dataclass(frozen=True)
class Form:
    """One export form: its ``--for`` name, what it is, and the function that makes it."""

    name: str  # what `edge-fm export --for` takes
    title: str  # the form in a sentence
    summary: str  # what it gives a client
    make: Callable[[Path | str, FormOptions], Path]


def _mobile(source: Path | str, options: FormOptions) -> Path:
    return export_mobile(
        source,
        options.format_name,
        options.representative_size,
        options.parity_images,
        options.runs_dir,
        options.data_dir,
        options.out,
        options.progress,
    )


def _mcu(source: Path | str, options: FormOptions) -> Path:
    return export_mcu(
        source,
        options.format_name,
        out=options.out,
        runs_dir=options.runs_dir,
        data_dir=options.data_dir,
        images=options.parity_images,
        representative_size=options.representative_size,
        parity_images=options.parity_images,
        progress=options.progress,
        c_array_mode=options.c_array_mode,
    )


FORMS: tuple[Form, ...] = (
    Form("mobile", "the mobile form", "uint8 RGB input, standard metadata", _mobile),
    Form("mcu", "the microcontroller form", "TFLM firmware files, checked under TFLM", _mcu),
)


def form_names() -> list[str]:
    """The forms' names, in table order."""
    return [form.name for form in FORMS]


def get_form(name: str) -> Form:
    """The form called ``name``.

    Raises:
        EdgeFMError: An unknown name, with the known ones.
    """
    for form in FORMS:
        if form.name == name:
            return form
    raise unknown_choice("--for target", name, ["none", *form_names()])


def export_form(source: Path | str, form: str, options: FormOptions = FormOptions()) -> Path:
    """Makes form ``form`` of a run or an int8 bundle and returns its bundle folder.

    Raises:
        EdgeFMError: An unknown form, or whatever the form refuses (nothing is written then).
    """
    return get_form(form).make(source, options)

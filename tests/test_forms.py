"""The table of export forms: names looked up in one place, ``none`` (the plain export) refused as a form,
and the command line's ``--for`` choices and help read from the table."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_fm.cli import main
from edge_fm.errors import EdgeFMError
from edge_fm.export.forms import FORMS, export_form, forms_help, get_form

REPO = Path(__file__).resolve().parents[1]


def test_a_form_is_found_by_name_and_none_is_not_a_form():
    assert [form.name for form in FORMS] == ["mobile", "mobile-gpu", "mcu", "ethos-u"]
    assert get_form("mcu").name == "mcu"
    with pytest.raises(EdgeFMError, match="Did you mean 'mobile'"):
        get_form("mobil")
    # What users call a client is answered with the form that serves it, not the closest spelling.
    for word, form in (
        ("phone", "mobile"),
        ("Android", "mobile"),
        ("microcontroller", "mcu"),
        ("npu", "ethos-u"),
        ("MCU", "mcu"),
        ("Ethos-U", "ethos-u"),
    ):
        with pytest.raises(EdgeFMError, match=f"unknown --for target '{word}'. Did you mean '{form}'"):
            get_form(word)
    # The library's caller gets the plain export's name, not "unknown ... Did you mean 'none'".
    with pytest.raises(EdgeFMError, match="'none' is the plain export, not a form: call export"):
        export_form(REPO / "models" / "mlp", "none")


def test_the_for_help_lists_every_form_with_its_summary():
    text = forms_help()
    assert text.startswith("none; ") and all(f"{form.name} ({form.summary})" in text for form in FORMS)


def test_an_unknown_for_target_is_one_line_naming_the_forms(capsys):
    assert main(["export", str(REPO / "models" / "mlp"), "--for", "nosuch"]) == 1
    err = capsys.readouterr().err.strip()
    assert err == "error: unknown --for target 'nosuch'. Known: ethos-u, mcu, mobile, mobile-gpu, none."


def test_the_export_help_names_what_the_tables_hold():
    """-f, --io-dtype and --accelerator-config list the format and Vela tables, not a copy of them."""
    from edge_fm.export.formats import FORMATS
    from edge_fm.export.forms import accelerator_configs_help, formats_help, io_dtypes_help
    from edge_fm.export.vela import config_names

    assert all(name in formats_help() for name in FORMATS.names())
    assert all(name in accelerator_configs_help() for name in config_names()) and len(config_names()) > 2
    assert "int16x8: int16 or float32" in io_dtypes_help()


def test_the_export_options_give_the_librarys_form_options_by_name():
    from pathlib import Path

    from edge_fm.cli.options import DEFAULT_EXPORT, ExportOptions
    from edge_fm.export.form_options import FormOptions

    assert DEFAULT_EXPORT.form_options("int8", None, None) == FormOptions(
        format_name="int8", runs_dir=Path("runs")
    )
    given = ExportOptions(out=Path("o"), parity_images=7, c_array="script", calibration=9)
    assert given.form_options(None, "d", "photos") == FormOptions(
        out=Path("o"),
        runs_dir=Path("runs"),
        data_dir="d",
        representative_size=9,
        parity_images=7,
        c_array_mode="script",
        data="photos",
    )

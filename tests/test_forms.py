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

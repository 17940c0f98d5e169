"""A model card's forms section: the app and microcontroller forms beside a shipped model, as the card tells them.

:func:`folder_forms` reads the ``mobile/`` and ``mcu/`` bundles of a model's folder (or why it has no
microcontroller form); :func:`forms_text` writes the card's table of files and a note per form.
"""

from __future__ import annotations

from collections.abc import Sequence

from edge_fm.export.boards import fitting_boards
from edge_fm.export.recorded_forms import kept_entry


def folder_forms(folder) -> list[dict]:
    """The app and microcontroller forms beside a shipped model: ``mobile/`` and ``mcu/`` bundles.

    A folder without a microcontroller form says why when the model has an op TFLM lacks.

    Raises:
        EdgeFMError: Such a folder, and TFLM is not installed: its card would lose that sentence.
    """
    from pathlib import Path

    from edge_fm.export.bundles import DESCRIPTION_FILE, MODEL_FILE, read_description

    folder = Path(folder)
    forms = []
    for kind in ("mobile", "mcu"):
        if (folder / kind / DESCRIPTION_FILE).is_file():
            forms.append({"kind": kind, "path": f"{kind}/", "description": read_description(folder / kind)})
    if not any(form["kind"] == "mcu" for form in forms) and (folder / MODEL_FILE).is_file():
        reason = _too_big_for_boards((folder / MODEL_FILE).stat().st_size) or _tflm_refusal(
            folder / MODEL_FILE
        )
        forms.append({"kind": "no-mcu", "reason": reason, "folder": folder.name})
    elif not forms and (folder / DESCRIPTION_FILE).is_file():  # an artifact too large for the folder itself
        reason = _too_big_for_boards(read_description(folder).get("artifact", {}).get("bytes", 0))
        if reason:
            forms.append({"kind": "no-mcu", "reason": reason, "folder": folder.name})
    return forms


def _too_big_for_boards(size: int) -> str:
    """Why no microcontroller form, when the model alone (``size`` bytes) is larger than every board's flash."""
    from edge_fm.export.runtimes import larger_than_every_flash

    reason = larger_than_every_flash(size)
    return f"{reason}: no microcontroller holds it." if reason else ""


def _tflm_refusal(path) -> str:
    from edge_fm.errors import EdgeFMError
    from edge_fm.export.tflm import refusal, unsupported_ops

    try:
        missing, _ = unsupported_ops(path.read_bytes())
    except EdgeFMError as exc:  # not installed: refuse rather than write a card that lost its reason
        raise EdgeFMError(
            f"{path.parent.name} has no microcontroller form, and its card says why only where TFLM can check: "
            f"{exc}"
        ) from None
    return refusal(missing) if missing else ""


def forms_text(description: dict, forms: Sequence[dict], shipped: bool = True) -> str:
    main = description
    where = "" if shipped else " (not in this folder: the commands below rebuild it)"
    lines = [
        "| file | for | input | output | size |",
        "|---|---|---|---|---|",
        f"| `model.tflite`{where} | LiteRT / TFLite on a CPU: Python, a Raspberry Pi, a server | "
        f"{_io_text(main['input'])} | "
        f"{main['output']['dtype']} `{main['output']['shape']}` | {main['artifact']['bytes']:,} bytes |",
    ]
    notes = []
    for form in forms:
        if form["kind"] == "mobile":
            mobile = form["description"]
            kept = kept_entry(mobile)
            stored = f" (not stored: `{kept['command']}` makes it)" if kept else ""
            lines.append(
                f"| `mobile/model.tflite`{stored} | apps: MediaPipe Tasks `ImageClassifier` (Android, iOS, Web), "
                f"the TFLite Task Library, Android Studio's ML Model Binding; standard TFLite metadata with the "
                f"labels | "
                f"{_io_text(mobile['input'])} | {mobile['output']['dtype']} `{mobile['output']['shape']}` | "
                f"{mobile['artifact']['bytes']:,} bytes |"
            )
            notes.append(_mobile_note(mobile["mobile"]))
            if kept:
                notes.append(
                    f"The mobile form is kept as its record: {kept['why']}. `{kept['command']}` makes it from "
                    f"`model.tflite`, checks it on the first {mobile['mobile']['parity']['images']:,} test images of "
                    "its data (`--data-dir` or `$EDGE_FM_DATA` for Fashion-MNIST), and puts it in `mobile/` only if "
                    f"its SHA-256 is the recorded `{mobile['artifact']['sha256']}`."
                )
        elif form["kind"] == "mcu":
            mcu = form["description"]["mcu"]
            script = mcu.get("firmware", {}).get("model_data_script")
            holds = (
                f"a script that writes the model's C array at build time (`python3 mcu/{script}`)"
                if script
                else "the model as a C array"
            )
            lines.append(
                f"| `mcu/` | microcontrollers with TensorFlow Lite for Microcontrollers: `mcu/firmware/` holds "
                f"{holds}, the op resolver, the arena size and an example | "
                f"{_io_text(form['description']['input'])} | {form['description']['output']['dtype']} | "
                f"{mcu['flash_bytes']:,} bytes of flash, a {mcu['arena_bytes']:,}-byte tensor arena |"
            )
            notes.append(_mcu_note(mcu))
        elif form["reason"]:
            notes.append(f"No microcontroller form. {form['reason'][0].upper()}{form['reason'][1:]}")
        else:
            notes.append(
                f"No microcontroller form in this folder: `edge-fm export models/{form['folder']} --for mcu --out DIR` "
                "makes one (or names the op TFLM lacks)."
            )
    return "\n".join(lines) + ("\n\n" + "\n\n".join(notes) if notes else "")


def _io_text(spec: dict) -> str:
    channels = f" {spec['channels']}" if spec.get("channels") else ""
    return f"{spec['dtype']}{channels} `{spec['shape']}`"


def _client_check_text(check: dict) -> str:
    """One client's check of the mobile form: its agreement, or the error it failed with."""
    if check.get("error"):
        return f"{check['client']} ({check['version']}) does not run it: {check['error']}"
    agreement = check.get("top1_agreement_with_litert", check.get("top1_agreement_with_int8", 0))
    return (
        f"{check['client']} ({check['version']}) agreed on {agreement:.2%} of {check['images']:,} test images"
    )


def _mobile_note(mobile: dict) -> str:
    parity = mobile["parity"]
    checks = [_client_check_text(c) for c in mobile.get("clients", [])]
    conversion = mobile["grey_conversion"]
    takes = (
        "takes RGB bytes as they are (the model was trained on RGB images)"
        if conversion.get("method") == "rgb"
        else f"takes RGB bytes and turns them grey inside the graph ({conversion['how']})"
    )
    return (
        f"The mobile form {takes}; "
        f"on {parity['images']:,} test images its outputs are "
        f"{'identical to' if parity['identical_to_int8'] else 'within the parity rule of'} `model.tflite`'s. "
        + ("Checked in: " + "; ".join(checks) + "." if checks else "")
    )


def _mcu_note(mcu: dict) -> str:
    boards = fitting_boards(mcu["fits_on"])
    return (
        f"Under TFLM {mcu['tflite_micro_version']} the model runs unchanged: top-1 agreement with LiteRT's reference "
        f"kernels {mcu['agreement_with_litert_reference']:.2%} and accuracy {mcu['accuracy']:.2%} on "
        f"{mcu['checked_on']['images']:,} test images. Model and arena fit (a fit check only: the firmware needs room "
        f"too): {boards}. No latency is claimed: time the example on the board."
    )

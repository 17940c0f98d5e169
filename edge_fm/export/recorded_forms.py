"""A shipped form kept as its record alone, and rebuilt byte for byte from the shipped int8 artifact.

A mobile form is about as large as its model. For a model that large (ResNet50: 24.8 MB), a second
copy would double the shipped folder, so its ``mobile/`` folder keeps the record only: ``model.json``
(what was checked, the clients it ran in, and the SHA-256 of the form's ``.tflite``), ``labels.txt``
and ``manifest.json``. The command that made the form, given that folder as ``--out``, makes the same
bytes again and puts ``model.tflite`` in place only when its SHA-256 is the recorded one:

    edge-fm export models/resnet50 --for mobile --out models/resnet50/mobile

:func:`keep_as_record` marks a form so (its ``model.json`` then says how to make the file, and the
model card says so); the repository then leaves out its ``model.tflite`` (``.gitignore``).

Example:
    >>> keep_as_record("models/resnet50/mobile")  # doctest: +SKIP
    >>> is_record_only("models/resnet50/mobile")  # doctest: +SKIP
    True
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

from edge_fm.data.reference import model_test_split
from edge_fm.errors import EdgeFMError
from edge_fm.export.bundles import DESCRIPTION_FILE, MODEL_FILE, read_description, update_description
from edge_fm.export.mobile import checked_form, form_file, read_int8_source
from edge_fm.io import sha256_file, write_bytes_atomic

KEPT_KEY = "kept_as_record"  # model.json's entry of a form whose file is not stored


def kept_entry(description: dict) -> dict | None:
    """A form's ``kept_as_record`` entry (the command that makes its file, and why it is not stored), or None."""
    return description.get(KEPT_KEY)


def keep_as_record(folder: Path | str) -> dict:
    """Marks a shipped mobile form (``<model>/mobile``) as kept by its record, and returns the entry.

    The entry gives the command that makes the file again, and why it is not stored.
    """
    folder = Path(folder)
    description = read_description(folder)
    entry = {
        "command": f"edge-fm export {folder.parent.as_posix()} --for mobile --out {folder.as_posix()}",
        "why": f"its {description['artifact']['bytes']:,}-byte file, as large as the model, would double the "
        "shipped folder",
    }
    update_description(folder, {**description, KEPT_KEY: entry})
    return entry


def _recorded(record: dict, folder: Path) -> tuple[dict, int, str]:
    """What a form's record must hold to make the form again: its source, check images and runtime."""
    try:
        mobile = record["mobile"]
        made_from = {"file": str(mobile["made_from"]["file"]), "sha256": str(mobile["made_from"]["sha256"])}
        return made_from, int(mobile["parity"]["images"]), str(mobile["parity"]["runtime"])
    except (KeyError, TypeError, ValueError):
        raise EdgeFMError(
            f"{folder / DESCRIPTION_FILE} is not a whole record of a mobile form (mobile.made_from and "
            f"mobile.parity are needed): restore it (`git checkout -- {folder}`), or export to a new folder."
        ) from None


def complete_form_refusal(folder: Path | str) -> str | None:
    """The one line refusing ``--out`` when it already holds a recorded form with its file; None otherwise."""
    folder = Path(folder)
    if not (folder / MODEL_FILE).is_file() or not (folder / DESCRIPTION_FILE).is_file():
        return None
    recorded = read_description(folder).get("artifact", {}).get("sha256")
    if not recorded:
        return None
    same = sha256_file(folder / MODEL_FILE) == recorded
    state = "the SHA-256 its record gives" if same else "a SHA-256 that differs from its record"
    return (
        f"--out {folder} already holds its mobile form ({MODEL_FILE} with {state}): nothing to make; "
        "choose a new folder for another export."
    )


def is_record_only(folder: Path | str) -> bool:
    """Whether ``folder`` holds a form's record (``model.json``) without its ``model.tflite``."""
    folder = Path(folder)
    return (folder / DESCRIPTION_FILE).is_file() and not (folder / MODEL_FILE).exists()


def rebuild_mobile_form(
    source: Path | str,
    folder: Path | str,
    data_dir: Path | str | None = None,
    data: str | Path | None = None,
    progress: Callable[[str], None] | None = None,
) -> Path:
    """Makes the mobile form recorded in ``folder`` from ``source`` again, and puts it in place.

    The form is made as :func:`edge_fm.export.mobile.export_mobile` made it (same int8 artifact, same
    test images for its check), under the name its record gives the int8 file, so the bytes are the
    same wherever the command runs.

    Raises:
        EdgeFMError: ``folder`` records a form of another artifact or of another kind, or the bytes
            made differ from the recorded ones (then nothing is written).
    """
    say = progress or (lambda line: None)
    folder = Path(folder)
    record = read_description(folder)
    if record.get("target") != "mobile" or "sha256" not in record.get("artifact", {}):
        raise EdgeFMError(
            f"--out {folder} holds a model.json that records no mobile form: choose a new folder "
            "(bundles are never overwritten)."
        )
    made_from, count, recorded_runtime = _recorded(record, folder)
    int8 = read_int8_source(source)
    if hashlib.sha256(int8.flatbuffer).hexdigest() != made_from["sha256"]:
        raise EdgeFMError(
            f"--out {folder} records the mobile form of another artifact ({made_from['file']}, sha256 "
            f"{made_from['sha256'][:12]}...): pass that artifact, or choose a new folder."
        )
    split = model_test_split(int8.description, data, data_dir, what=str(source), labels=int8.labels)
    split = split.first(count)
    form, parity = checked_form(int8, split.images, split.labels, split.checked_on, say)
    # The form embeds the name of the file it was made from: the record's name keeps the bytes path-independent.
    final, _ = form_file(int8, form, parity, made_from_file=made_from["file"])
    made, recorded = hashlib.sha256(final).hexdigest(), record["artifact"]["sha256"]
    if made != recorded:
        raise EdgeFMError(
            f"the mobile form made now differs from the one recorded in {folder} (sha256 {made[:12]}... vs "
            f"{recorded[:12]}...; checked with {parity['runtime']}, recorded with "
            f"{recorded_runtime}): nothing was written. Install the versions in "
            "pyproject.toml, or export to a new folder."
        )
    say(f"writing {folder / MODEL_FILE} (sha256 as recorded)")
    write_bytes_atomic(folder / MODEL_FILE, final)
    return folder

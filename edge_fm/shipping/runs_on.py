"""A model card's "runs on" table: CPU, GPU delegate, Ethos-U (estimates), TFLM, and MediaPipe's forms per delegate.

Each row says how it is known: measured here, estimated (Vela), or a static check (LiteRT's analyzer);
see :func:`edge_fm.export.runtimes.runs_on`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from edge_fm.export.bundles import MODEL_FILE


def runs_on_rows(folder: Path | str, forms: Sequence[dict] = ()) -> list[dict]:
    """The card's "runs on" rows of a shipped model's folder, with its forms (``card_forms.folder_forms``).

    Each row is ``runtime``, ``answer`` and ``how`` (measured, estimated or a static check). A runtime whose
    tool is not installed says so in its row.
    """
    from edge_fm.export.runtimes import runs_on, summary_rows

    artifact = Path(folder) / MODEL_FILE
    if not artifact.is_file():
        return []
    rows = summary_rows(runs_on(artifact))
    mobile = next((form for form in forms if form["kind"] == "mobile"), None)
    if mobile:
        rows += mediapipe_rows(Path(folder), mobile)
    return rows


def mediapipe_rows(folder: Path, mobile: dict) -> list[dict]:
    """MediaPipe Tasks' rows: which form each delegate takes, with the client checks recorded in the forms.

    The CPU delegate takes the mobile form (``mobile/``, int8 with uint8 input and output); the GPU
    delegate takes the mobile GPU form (float16 weights, float32 input and output): MediaPipe's GPU
    post-processing refuses the mobile form's uint8 output, as its recorded GPU check says.
    """
    from edge_fm.export.bundles import DESCRIPTION_FILE, read_description
    from edge_fm.export.mobile_gpu import GPU_FOLDER
    from edge_fm.export.runtimes import MEASURED

    file = f"`{mobile['path']}{MODEL_FILE}`"
    checks = [
        c for c in mobile["description"]["mobile"].get("clients", []) if c["client"].startswith("MediaPipe")
    ]
    on_cpu = [c for c in checks if c.get("delegate", "CPU") == "CPU"]
    on_gpu = [c for c in checks if c.get("delegate") == "GPU"]
    cpu_answer = "; ".join(
        f"{c['client']} ({c['version']}): top-1 agreement with LiteRT {c['top1_agreement_with_litert']:.2%} on "
        f"{c['images']:,} test images"
        for c in on_cpu
    )
    rows = [
        {
            "runtime": "MediaPipe Tasks (apps)",
            "how": MEASURED if on_cpu else "not checked",
            "answer": f"CPU delegate: {file}, the int8 mobile form"
            + (f"; {cpu_answer}" if cpu_answer else " (not yet checked in MediaPipe)"),
        }
    ]
    gpu_form = folder / GPU_FOLDER
    if (gpu_form / DESCRIPTION_FILE).is_file():
        record = read_description(gpu_form)["mobile_gpu"]
        answer = (
            f"GPU delegate: `{GPU_FOLDER}/{MODEL_FILE}`, the mobile GPU form (float16 weights, float32 input and "
            f"output); top-1 agreement with the float model {record['parity']['agreement']:.2%}"
        )
    else:
        answer = (
            "GPU delegate: the mobile GPU form (float16 weights, float32 input and output), made from the training "
            "run with `edge-fm export RUN --for mobile-gpu`; not in this folder"
        )
    refusals = [
        f"{file} fails there ({c['client'].split(',')[0]}, {c['version']}, {c.get('webgl', 'WebGL')}): {c['error']}"
        for c in on_gpu
        if c.get("error")
    ]
    rows.append(
        {
            "runtime": "MediaPipe Tasks GPU delegate (apps)",
            "how": MEASURED if refusals or (gpu_form / DESCRIPTION_FILE).is_file() else "not checked",
            "answer": "; ".join([answer, *refusals]),
        }
    )
    return rows


def runs_on_text(rows: Sequence[dict] | None) -> str:
    """The rows as the card's Markdown table, with what each way of knowing means (None: not checked yet)."""
    if rows is None:
        return (
            "Not checked yet: `edge-fm bench models/ --cards` checks what each runtime runs of the artifact."
        )
    if not rows:
        return (
            f"Not checked: this folder holds no `{MODEL_FILE}` to check; `edge-fm inspect ARTIFACT` tells what each "
            "runtime runs of an artifact."
        )
    lines = ["| runtime | what runs | how it is known |", "|---|---|---|"]
    lines += [f"| {row['runtime']} | {row['answer'].replace('|', '/')} | {row['how']} |" for row in rows]
    return (
        "\n".join(lines)
        + "\n\nMeasured: run here (LiteRT's interpreter with XNNPACK, TFLM's interpreter, MediaPipe's clients; "
        "in the browser on Chromium's software WebGL). Estimated: Arm's Vela compiler for the named Ethos-U "
        "configuration, not a device. Static check: LiteRT's model analyzer."
    )

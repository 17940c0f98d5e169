"""A model card's "runs on" table: CPU, GPU delegate, Ethos-U (estimates), TFLM, and MediaPipe's mobile form.

Each row says how it is known: measured here, estimated (Vela), or a static check (LiteRT's analyzer);
see :func:`edge_fm.export.runtimes.runs_on`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from edge_fm.export.bundles import MODEL_FILE


def runs_on_rows(folder: Path | str, forms: Sequence[dict] = ()) -> list[dict]:
    """The card's "runs on" rows of a shipped model's folder, with its forms (``edge_fm.shipping.cards.folder_forms``).

    Each row is ``runtime``, ``answer`` and ``how`` (measured, estimated or a static check). A runtime whose
    tool is not installed says so in its row.
    """
    from edge_fm.export.runtimes import MEASURED, runs_on, summary_rows

    artifact = Path(folder) / MODEL_FILE
    if not artifact.is_file():
        return []
    rows = summary_rows(runs_on(artifact))
    mobile = next((form for form in forms if form["kind"] == "mobile"), None)
    if mobile:
        file = f"`{mobile['path']}{MODEL_FILE}`"
        checked = [
            client
            for client in mobile["description"]["mobile"].get("clients", [])
            if client["client"].startswith("MediaPipe")
        ]
        answer = "; ".join(
            f"{file} on {c['client']} ({c['version']}, CPU): top-1 agreement with LiteRT "
            f"{c['top1_agreement_with_litert']:.2%} on {c['images']:,} test images"
            for c in checked
        )
        rows.append(
            {
                "runtime": "MediaPipe Tasks (apps)",
                "how": MEASURED if checked else "not checked",
                "answer": answer or f"{file} (not yet checked in MediaPipe)",
            }
        )
    return rows


def runs_on_text(rows: Sequence[dict]) -> str:
    """The rows as the card's Markdown table, with what each way of knowing means."""
    if not rows:
        return (
            f"Not checked: this folder holds no `{MODEL_FILE}` to check; `edge-fm inspect ARTIFACT` tells what each "
            "runtime runs of an artifact."
        )
    lines = ["| runtime | what runs | how it is known |", "|---|---|---|"]
    lines += [f"| {row['runtime']} | {row['answer'].replace('|', '/')} | {row['how']} |" for row in rows]
    return (
        "\n".join(lines)
        + "\n\nMeasured: run here (LiteRT's interpreter with XNNPACK, TFLM's interpreter). Estimated: "
        "Arm's Vela compiler for the named Ethos-U configuration, not a device. Static check: LiteRT's model analyzer."
    )

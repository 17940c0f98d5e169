"""``edge-fm inspect``: an artifact's ops, where quantization loses accuracy, and what each runtime runs."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Table

from edge_fm.cli.common import app, command, console
from edge_fm.cli.options import DataDirOption
from edge_fm.errors import EdgeFMError
from edge_fm.io import KB


@command(app, "inspect")
def inspect_command(
    artifact: Annotated[
        Path, typer.Argument(help="A .tflite file or an export bundle (e.g. models/edge-cnn-tiny).")
    ],
    source: Annotated[
        Optional[Path],
        typer.Option(
            help="The float run the artifact was exported from (default: the one its model.json names, if it "
            "is here).",
        ),
    ] = None,
    keep_float: Annotated[
        Optional[str],
        typer.Option(
            help="Op kinds or layer tensors to keep in float, comma-separated (e.g. CONV_2D): writes the mixed "
            "artifact and what it buys.",
        ),
    ] = None,
    images: Annotated[
        int, typer.Option(min=1, help="Validation images the layer-wise error is measured on.")
    ] = 200,
    calibration: Annotated[
        Optional[int],
        typer.Option(
            min=1, help="Calibration images, as the export drew them (default: the exporter's 500)."
        ),
    ] = None,
    runtimes: Annotated[
        str,
        typer.Option(help="Runtimes to ask, comma-separated: cpu, gpu, ethos-u, tflm ('none' for none)."),
    ] = "cpu,gpu,ethos-u,tflm",
    accelerator_config: Annotated[
        Optional[list[str]],
        typer.Option(
            "--accelerator-config",
            help="Ethos-U configuration Vela estimates (repeatable; default ethos-u55-128 and ethos-u65-256).",
        ),
    ] = None,
    out: Annotated[
        Optional[Path],
        typer.Option(
            help="With --keep-float: the mixed bundle's folder (default: a new RUNS_DIR/<name>-mixed-N)."
        ),
    ] = None,
    runs_dir: Annotated[Path, typer.Option(help="Where the --keep-float bundle is created.")] = Path("runs"),
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the whole report as JSON instead of tables.")
    ] = False,
    data_dir: DataDirOption = None,
) -> None:
    """Per op: kind, shapes, MACs, quantization; the layers quantization hurts most; what each runtime runs.

    The layer-wise error: with the float source run, TensorFlow's QuantizationDebugger (each layer's own error, weights' rounding included); without it (or for qat-int8), the artifact against its float twin (activation rounding and clipping, accumulated along the network, against the artifact's own weights in float; the weights' own rounding is not included). Ethos-U figures are Vela's estimates.

    Example: edge-fm inspect models/edge-cnn-tiny
    Example: edge-fm inspect runs/cnn-2conv-int8-1 --keep-float FULLY_CONNECTED --json
    """
    from edge_fm import inspect_artifact

    asked = (
        []
        if runtimes.strip() in ("", "none")
        else [name.strip() for name in runtimes.split(",") if name.strip()]
    )
    kept = [name.strip() for name in (keep_float or "").split(",") if name.strip()]
    if keep_float is not None and not kept:
        raise EdgeFMError(
            "--keep-float: name at least one op kind or layer tensor, e.g. --keep-float CONV_2D."
        )
    status = console.status("inspecting") if not as_json else None
    with status or contextlib.nullcontext():
        report = inspect_artifact(
            artifact,
            source,
            data_dir,
            images,
            calibration,
            kept,
            out,
            runs_dir,
            asked,
            accelerator_config,
            progress=(lambda line: status.update(line)) if status else None,
        )
    if as_json:
        console.print_json(json.dumps(report, default=str))
        return
    print_inspection(report)


def print_inspection(report: dict) -> None:
    """The inspection's tables: op kinds, ops, the worst-quantized layers, the runtimes, --keep-float."""
    art, summary = report["artifact"], report["summary"]
    console.print(
        f"[bold]{escape(art['name'])}[/] ({art.get('format') or 'unknown format'}): {art['bytes'] / KB:.1f} KB, "
        f"{summary['ops']} ops, {summary['params']:,} parameters, {summary['macs'] / 1e6:.2f} M MACs; "
        f"{summary['quantization']}",
        highlight=False,
    )
    table = Table(
        "op kind", "count", "MACs", "share", "params", "weights", "activations", title="ops by kind"
    )
    for kind in report["kinds"]:
        table.add_row(
            kind["op"],
            str(kind["count"]),
            f"{kind['macs'] / 1e6:.3f} M",
            f"{kind['macs_share']:.1%}",
            f"{kind['params']:,}",
            ", ".join(kind["schemes"]) or "-",
            ", ".join(kind["activations"]),
        )
    console.print(table)
    table = Table(
        "#", "op", "output", "MACs", "share", "weights (scales)", "output scale", "layer", title="ops"
    )
    for op in report["ops"]:
        table.add_row(
            str(op["index"]),
            op["op"],
            "x".join(map(str, op["output_shape"])),
            f"{op['macs']:,}",
            f"{op['macs_share']:.1%}",
            _weights_text(op),
            _activations_text(op),
            escape(op["name"][:60]),
        )
    console.print(table)
    _print_errors(report.get("errors", {}))
    if rows := report.get("runs_on"):
        table = Table("runtime", "what runs", "how", title="what each runtime runs")
        for row in rows:
            table.add_row(row["runtime"], escape(row["answer"]), row["how"])
        console.print(table)
    if kept := report.get("keep_float"):
        q, m = kept["quantized"], kept["mixed"]
        console.print(
            f"keeping {', '.join(kept['kept_float_ops'] + kept['kept_float_layers'])} in float: accuracy "
            f"{q['accuracy']:.2%} -> {m['accuracy']:.2%} ({kept['accuracy_gain'] * 100:+.2f} pt; Keras "
            f"{kept['keras_accuracy']:.2%}) on {kept['images']} validation images, size {q['bytes'] / KB:.1f} -> "
            f"{m['bytes'] / KB:.1f} KB (the debugger's models: float input and output, no metadata), p50 "
            f"{q['p50_ms']:.3f} -> {m['p50_ms']:.3f} ms; mixed artifact: [bold]{escape(kept['bundle'])}[/] "
            f"({kept['bundle_bytes'] / KB:.1f} KB with its metadata)",
            highlight=False,
        )


def _weights_text(op: dict) -> str:
    weights = op["weights"]
    if not weights:
        return op["weights_dtype"] or "-"
    return f"{weights['scheme']} ({weights['scales']}; {weights['scale_min']:.2e}-{weights['scale_max']:.2e})"


def _activations_text(op: dict) -> str:
    act = op["activations"]
    if not act:
        return op["activations_dtype"]
    return f"{act['dtype']} {act['scale_min']:.3g}"


# The measures of each layer-wise ranking (float twin, QuantizationDebugger): header, the layer's field, format.
TWIN_MEASURES = (
    ("adds (steps)", "added_rmse_per_scale", "+.3f"),
    ("RMSE (steps)", "rmse_per_scale", ".3f"),
    ("mean |err| (steps)", "mean_abs_error_per_scale", ".3f"),
    ("clipped", "clipped_share", ".2%"),
)
DEBUGGER_MEASURES = (
    ("RMSE (steps)", "rmse_per_scale", ".3f"),
    ("max |err| (steps)", "max_abs_error_per_scale", ".2f"),
    ("bias (steps)", "mean_error_per_scale", "+.3f"),
)
DRIFT = 0.5  # a layer's RMSE over its float values' RMS above which the twin comparison reads as drift


def _print_twin_errors(errors: dict) -> None:
    """The float-twin measure's ranking, captioned with what it measures."""
    twin = errors["twin"]
    _print_layer_ranking(
        errors,
        f"worst-quantized layers of {errors['format']} by the error each adds ({errors['images']} "
        "validation images)",
        TWIN_MEASURES,
        caption=f"Measures {errors['measures']}.",
    )
    drifted = [layer for layer in errors["layers"][:10] if layer.get("relative_error", 0) > DRIFT]
    if drifted:
        console.print(
            f"{len(drifted)} of these layers differ from the twin by more than {DRIFT:.0%} of the activations' own "
            "size: there the ranking shows where the int8 network drifts from its float twin fastest, not an "
            "error each layer adds on its own.",
            highlight=False,
        )
    console.print(
        f"{_rounding_text(errors)} The twin agrees with the artifact on {twin['agreement']:.1%} of top-1 answers "
        f"({twin['agreement_counting_ties']:.1%} counting tied int8 outputs; accuracy {twin['int8_accuracy']:.1%} "
        f"int8, {twin['twin_accuracy']:.1%} twin). How: {errors['how']}. Data: {errors['data']}.",
        highlight=False,
    )


def _print_errors(errors: dict) -> None:
    if errors.get("method") == "float twin":
        _print_twin_errors(errors)
    elif errors.get("status") == "measured":
        _print_layer_ranking(
            errors,
            f"layers that lose most to {errors['format']} ({errors['images']} validation images)",
            DEBUGGER_MEASURES,
        )
        console.print(
            f"{_rounding_text(errors)} {errors['how']}, source run {errors['source_run']}.", highlight=False
        )
    elif errors:
        console.print(
            f"[yellow]layer-wise error not measured:[/] {escape(errors['reason'])}", highlight=False
        )


def _print_layer_ranking(
    errors: dict, title: str, measures: tuple[tuple[str, str, str], ...], caption: str | None = None
) -> None:
    """The ten layers the error ranks worst: rank, op, each measure, the layer's tensor."""
    table = Table("rank", "op", *(header for header, _, _ in measures), "layer", title=title, caption=caption)
    for rank, layer in enumerate(errors["layers"][:10], 1):
        cells = [format(layer[field], spec) for _, field, spec in measures]
        table.add_row(str(rank), layer["op"], *cells, escape(layer["tensor"][:70]))
    console.print(table)


def _rounding_text(errors: dict) -> str:
    """The yardstick both rankings are read against: the error rounding alone gives."""
    return f"{errors['note']}; rounding alone gives {errors['rounding_rmse']:.2f} steps RMSE."

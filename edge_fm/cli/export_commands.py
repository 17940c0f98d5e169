"""``edge-fm export``: formats and forms."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from edge_fm.cli.common import (
    app,
    command,
    console,
    print_error,
)
from edge_fm.cli.options import DEFAULT_EXPORT, DataDirOption, ExportOptions, MovedDataOption
from edge_fm.errors import EdgeFMError
from edge_fm.export.forms import formats_help, forms_help
from edge_fm.io import KB


@command(app, "export")
def export_command(
    run_dir: Annotated[
        Path,
        typer.Argument(
            help="A finished training or optimization run; with --for mobile, mcu or ethos-u also an int8 "
            "export bundle or .tflite (e.g. models/edge-cnn-tiny); --for mobile-gpu takes a training run."
        ),
    ],
    formats: Annotated[
        Optional[list[str]],
        typer.Option("--format", "-f", help=formats_help()),
    ] = None,
    target: Annotated[str, typer.Option("--for", help=forms_help())] = "none",
    export: ExportOptions = DEFAULT_EXPORT,
    data_dir: DataDirOption = None,
    data: MovedDataOption = None,
) -> None:
    """Export a run as TFLite bundles (model.tflite, labels.txt, model.json) after a parity check.

    Example: edge-fm export runs/cnn-2conv-qat-1 --format qat-int8 --io-dtype uint8
    Example: edge-fm export runs/cnn-2conv-train-1 -f int8-per-tensor -f int16x8 --calibration 1000
    Example: edge-fm export runs/cnn-2conv-train-1 -f int8 --for mcu
    Example: edge-fm export models/cnn-3conv-bn --for mcu --c-array script --out cnn-3conv-bn-mcu
    Example: edge-fm export models/edge-cnn-tiny --for mobile --out edge-cnn-tiny-mobile
    Example: edge-fm export runs/edge-cnn-tiny-pipeline-1/edge-cnn-tiny-qat-1 --for mobile
    Example: edge-fm export runs/edge-cnn-tiny-train-1 --for mobile-gpu --out edge-cnn-tiny-mobile-gpu
    Example: edge-fm export models/edge-cnn-tiny --for ethos-u --accelerator-config ethos-u55-128
    """
    from edge_fm import Bundle, check_export_request, check_run_formats, ethos_u_text, get_form

    check_export_request(
        target, formats, export.form_options(None, data_dir, data), export.io_dtype, export.calibration_dir
    )
    if target == "none" or get_form(target).takes_format:  # the other forms refuse -f themselves
        check_run_formats(run_dir, formats or [])  # every format checked against the run before any work
    table = Table("format", "bundle", "KB", "gzip KB", "int-only", "parity on validation images", "ops")
    failures, form_lines = [], []
    for name in formats or [None]:
        try:
            bundle = _export_for(target, run_dir, name, export, data_dir, data)
        except EdgeFMError as exc:
            failures.append(str(exc))
            print_error(str(exc))
            continue
        description = Bundle.open(bundle).description
        if "mobile" in description:
            form_lines.append(_mobile_line(bundle, description["mobile"]))
            continue
        if "mobile_gpu" in description:
            form_lines.append(_mobile_gpu_line(bundle, description["mobile_gpu"]))
            continue
        if "ethos_u" in description:
            form_lines.append(f"{bundle}: {ethos_u_text(description['ethos_u'])}")
            continue
        artifact, report = description["artifact"], description.get("export")
        if report and "parity" in report:  # a bare .tflite given for --for mcu has no export record
            parity = report["parity"]
            table.add_row(
                name or description.get("format", ""),
                str(bundle),
                f"{artifact['bytes'] / KB:.1f}",
                f"{artifact['gzip_bytes'] / KB:.1f}",
                "yes" if report["integer_only"] else "no",
                f"agree {parity['agreement']:.1%}, acc {parity['tflite_accuracy']:.1%} vs Keras "
                f"{parity['keras_accuracy']:.1%} ({parity['images']:,})",
                " ".join(report["ops"]),
            )
        if "mcu" in description:
            form_lines.append(_mcu_line(bundle, description["mcu"]))
    if table.row_count:
        console.print(table)
    for line in form_lines:
        console.print(line, highlight=False)
    if failures:
        raise typer.Exit(1)


def _export_for(
    target: str, run_dir: Path, name: str | None, options: ExportOptions, data_dir, data: str | None
) -> Path:
    """One export of ``edge-fm export``: format ``name`` as a plain bundle, or in the form ``--for`` names."""
    if target != "none":
        from edge_fm import export_form

        return export_form(run_dir, target, options.form_options(name, data_dir, data))
    from edge_fm import export_run

    return export_run(
        run_dir,
        name,
        options.io_dtype,
        options.calibration,
        options.parity_images,
        runs_dir=options.runs_dir,
        data_dir=data_dir,
        calibration_dir=options.calibration_dir,
        data=data,
    )


def _mobile_line(bundle: Path, record: dict) -> str:
    parity = record["parity"]
    same = (
        "identical outputs"
        if parity["identical_to_int8"]
        else f"top-1 agreement {parity['top1_agreement']:.2%}"
    )
    return (
        f"{bundle}: uint8 RGB input, standard metadata; {same} to the int8 artifact on {parity['images']:,} "
        + (
            f"test images (accuracy {parity['mobile_accuracy']:.2%}); RGB bytes as they are (a model of RGB images)"
            if record["grey_conversion"]["method"] == "rgb"
            else f"grey test images (accuracy {parity['mobile_accuracy']:.2%}); grey conversion: "
            f"{record['grey_conversion']['method']}"
        )
    )


def _mobile_gpu_line(bundle: Path, record: dict) -> str:
    parity = record["parity"]
    return (
        f"{bundle}: float32 RGB input, float16 weights, standard metadata, for GPU delegates; top-1 agreement "
        f"{parity['agreement']:.2%} with the Keras model on {parity['images']:,} validation images; test accuracy "
        f"{record['test_accuracy']:.2%} on {record['test_images']:,} images"
    )


def _mcu_line(bundle: Path, record: dict) -> str:
    from edge_fm.export.boards import fitting_boards
    from edge_fm.export.bundles import FIRMWARE_FOLDER

    fits = fitting_boards(record["fits_on"])
    return (
        f"{bundle}: runs under TFLM {record['tflite_micro_version']}; arena {record['arena_bytes']:,} B "
        f"({record['arena']['min_bytes']:,} B found + margin), flash {record['flash_bytes']:,} B; top-1 agreement with "
        f"LiteRT's reference kernels {record['agreement_with_litert_reference']:.2%} and accuracy "
        f"{record['accuracy']:.2%} on {record['checked_on']['images']} test images; model and arena fit: {fits} "
        f"(firmware needs room too); firmware files in {bundle / FIRMWARE_FOLDER}"
        + (
            f"; write the model's C array with `python3 {bundle / script}` before building"
            if (script := record["firmware"].get("model_data_script"))
            else ""
        )
    )

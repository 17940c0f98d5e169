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
from edge_fm.cli.options import (
    DataDirOption,
    MovedDataOption,
)
from edge_fm.errors import EdgeFMError
from edge_fm.export.forms import forms_help
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
        typer.Option(
            "--format",
            "-f",
            help="fp32, fp16, dynamic, int8, int8-per-tensor, int16x8 or qat-int8 (repeatable); omit it for a "
            "bundle.",
        ),
    ] = None,
    io_dtype: Annotated[
        Optional[str],
        typer.Option(
            help="Input/output dtype of integer formats: int8, uint8 or float32 (int16x8: int16 or float32)."
        ),
    ] = None,
    representative: Annotated[
        int,
        typer.Option(
            "--calibration",
            "--representative",
            min=1,
            help="Calibration images of integer formats, drawn from the training images of the run's dataset.",
        ),
    ] = 500,
    calibration_dir: Annotated[
        Optional[Path],
        typer.Option(
            help="Calibrate integer formats on the images of this folder (up to --calibration of them) instead "
            "of training images."
        ),
    ] = None,
    data_dir: DataDirOption = None,
    data: MovedDataOption = None,
    runs_dir: Annotated[Path, typer.Option(help="Where bundle directories are created.")] = Path("runs"),
    target: Annotated[
        str,
        typer.Option(
            "--for",
            help=forms_help(),
        ),
    ] = "none",
    out: Annotated[
        Optional[Path],
        typer.Option(
            help="With --for: the bundle folder to create (default: a new RUNS_DIR/<name>-<form>-N)."
        ),
    ] = None,
    parity_images: Annotated[
        int,
        typer.Option(
            min=1,
            help="Images the parity checks run on (mobile: test images against the int8 artifact; mcu: "
            "test images under TFLM against LiteRT's reference kernels).",
        ),
    ] = 1000,
    c_array: Annotated[
        str,
        typer.Option(
            help="With --for mcu: 'source' puts the model's C array in firmware/; 'script' puts there a Python "
            "script that writes it from model.tflite at build time (the array is ~6x the model's size).",
        ),
    ] = "source",
    accelerator_config: Annotated[
        Optional[str],
        typer.Option(
            help="With --for ethos-u: the Ethos-U configuration Vela compiles for, e.g. ethos-u55-128 or "
            "ethos-u65-256.",
        ),
    ] = None,
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
    from edge_fm import Bundle, check_form_options, check_run_formats, ethos_u_text, get_form

    if target != "none":
        get_form(target)
    if not formats and target == "none":
        raise EdgeFMError(
            "give a format to export (e.g. -f int8); only --for (mobile, mobile-gpu, mcu, ethos-u) goes without one."
        )
    if out is not None and (target == "none" or len(formats or []) > 1):
        raise EdgeFMError("--out names one bundle of a form: use it with --for and at most one format.")
    if c_array != "source" and target != "mcu":
        raise EdgeFMError("--c-array is for the microcontroller form: use it with --for mcu, or drop it.")
    check_form_options(target, accelerator_config, calibration_dir, formats)
    if target == "none" or get_form(target).takes_format:  # the other forms refuse -f themselves
        check_run_formats(run_dir, formats or [])  # every format checked against the run before any work
    if target != "none" and io_dtype is not None:
        raise EdgeFMError(
            f"--io-dtype is for plain exports: the {target} form fixes its own (mobile: uint8 RGB, mobile-gpu: float32 RGB, mcu: int8); drop it."
        )
    table = Table("format", "bundle", "KB", "gzip KB", "int-only", "parity", "ops")
    failures, form_lines = [], []
    for name in formats or [None]:
        try:
            bundle = _export_for(
                target,
                run_dir,
                name,
                io_dtype,
                representative,
                runs_dir,
                data_dir,
                out,
                parity_images,
                c_array,
                accelerator_config,
                calibration_dir,
                data,
            )
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
                f"agree {parity['agreement']:.1%}, acc {parity['tflite_accuracy']:.1%} vs "
                f"{parity['keras_accuracy']:.1%}",
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
    target: str,
    run_dir: Path,
    name: str | None,
    io_dtype,
    representative: int,
    runs_dir: Path,
    data_dir,
    out: Path | None = None,
    parity_images: int = 1000,
    c_array: str = "source",
    accelerator_config: str | None = None,
    calibration_dir: Path | None = None,
    data: str | None = None,
) -> Path:
    """One export of ``edge-fm export``, in the form ``--for`` names."""
    if target != "none":
        from edge_fm import FormOptions, export_form

        options = FormOptions(
            format_name=name,
            out=out,
            runs_dir=runs_dir,
            data_dir=data_dir,
            representative_size=representative,
            parity_images=parity_images,
            c_array_mode=c_array,
            accelerator_config=accelerator_config,
            data=data,
        )
        return export_form(run_dir, target, options)
    from edge_fm import export_run as export

    return export(
        run_dir,
        name,
        io_dtype,
        representative,
        parity_images,
        runs_dir=runs_dir,
        data_dir=data_dir,
        calibration_dir=calibration_dir,
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

    fits = fitting_boards(record["fits_on"])
    return (
        f"{bundle}: runs under TFLM {record['tflite_micro_version']}; arena {record['arena_bytes']:,} B "
        f"({record['arena']['min_bytes']:,} B found + margin), flash {record['flash_bytes']:,} B; top-1 agreement with "
        f"LiteRT's reference kernels {record['agreement_with_litert_reference']:.2%} and accuracy "
        f"{record['accuracy']:.2%} on {record['checked_on']['images']} test images; model and arena fit: {fits} "
        f"(firmware needs room too); firmware files in {bundle / 'firmware'}"
        + (
            f"; write the model's C array with `python3 {bundle / script}` before building"
            if (script := record["firmware"].get("model_data_script"))
            else ""
        )
    )

"""``edge-fm predict``, ``report``, ``explain`` and ``serve``: what a model answers and does."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from edge_fm.cli.common import (
    app,
    command,
    console,
    print_answers,
)
from edge_fm.cli.options import (
    BenchResultOption,
    DataDirOption,
    MovedDataOption,
    TopOption,
)
from edge_fm.errors import EdgeFMError


@command(app, "predict")
def predict_command(
    artifact: Annotated[Path, typer.Argument(help="A .tflite file or an export bundle directory.")],
    images: Annotated[
        Optional[list[Path]],
        typer.Argument(help="Image files (PNG, JPEG; any size, colour or grey); or none, with --data."),
    ] = None,
    top: TopOption = 3,
    data: Annotated[
        Optional[str],
        typer.Option(
            help="Classify the first --count images of the model's own test split instead of files: where "
            "its data is (fashion-mnist for a Fashion-MNIST model).",
        ),
    ] = None,
    count: Annotated[int, typer.Option(min=1, help="With --data: test images classified.")] = 10,
    data_dir: DataDirOption = None,
) -> None:
    """Classify image files (or the model's own test images) with an exported artifact; print the top classes.

    Example: edge-fm predict models/edge-cnn/model.tflite shoe.jpg shirt.png
    Example: edge-fm predict runs/edge-cnn-tiny-int8-1 --data photos/ --count 5
    """
    from edge_fm import classify_files, classify_test_split

    if images and data is not None:
        raise EdgeFMError("give image files or --data (the model's test images), not both.")
    if not images and data is None:
        raise EdgeFMError(
            "no image to classify: give image files, or --data for the model's own test images."
        )
    if data is not None:
        results = classify_test_split(artifact, data, data_dir, count, top)
    else:
        results = classify_files(artifact, images, top)
    failed = print_answers(results, _prediction_line)
    if data is not None:
        right = sum(result.top[0][0] == result.label for result in results)
        console.print(f"{right} of {len(results)} right (top-1)", highlight=False)
    if failed:
        raise typer.Exit(1)


def _prediction_line(result, classes: str) -> str:
    note = " (light background, inverted)" if result.inverted else ""
    truth = f" (true class: {result.label})" if result.label is not None else ""
    return f"{result.path}{truth}: [bold]{classes}[/]{note}"


@command(app, "report")
def report_command(
    target: Annotated[
        Path,
        typer.Argument(
            help="A run, an export bundle, a pipeline run, a bench result JSON or a folder of bundles."
        ),
    ],
    out: Annotated[
        Optional[Path],
        typer.Option(help="The HTML file (default: report.html inside the target folder)."),
    ] = None,
    data_dir: DataDirOption = None,
    sample: Annotated[
        bool, typer.Option("--sample", help="Score a bundle without its run on the embedded sample.")
    ] = False,
    images: Annotated[int, typer.Option(help="Images scored at most (a report takes seconds).")] = 2000,
    explained: Annotated[int, typer.Option(help="Images explained, one per class (0-10).")] = 10,
    bench: BenchResultOption = None,
    data: MovedDataOption = None,
) -> None:
    """Write one self-contained HTML page of what a model does: curves, confusion, gallery, Grad-CAM vs occlusion.

    Example: edge-fm report runs/cnn-2conv-pipeline-1
    Example: edge-fm report models/ --out models-report.html
    """
    from edge_fm import ReportOptions, build_report

    options = ReportOptions(data_dir, sample, images, explained, bench, data)
    with console.status("writing the report") as status:
        path = build_report(target, out, options, progress=lambda message: status.update(message))
    console.print(f"report: [bold]{path}[/]", highlight=False)


@command(app, "explain")
def explain_command(
    model: Annotated[
        Path, typer.Argument(help="A training run (Grad-CAM), or a .tflite file or bundle (occlusion).")
    ],
    images: Annotated[list[Path], typer.Argument(help="Image files (PNG, JPEG; any size, colour or grey).")],
    out: Annotated[Path, typer.Option(help="Folder for the heat-map overlays (PNG).")] = Path("explanations"),
    top: TopOption = 3,
) -> None:
    """Write a heat map of where the model looks, per image, and print its top classes.

    Example: edge-fm explain models/edge-cnn shoe.jpg shirt.png --out explained/
    """
    from edge_fm import explain_files

    failed = print_answers(
        explain_files(model, images, out, top),
        lambda result, classes: f"{result.image}: [bold]{classes}[/]  {result.method}: {result.overlay}",
    )
    if failed:
        raise typer.Exit(1)


@command(app, "serve")
def serve_command(
    path: Annotated[Path, typer.Argument(help="A bundle, a .tflite file or a folder of bundles.")] = Path(
        "models"
    ),
    host: Annotated[
        str, typer.Option(help="Address to bind; other than 127.0.0.1 needs --expose.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8050,
    expose: Annotated[
        bool,
        typer.Option("--expose", help="Confirm serving beyond this machine (add --key to require a key)."),
    ] = False,
    max_upload_mb: Annotated[
        float, typer.Option(help="Largest image file accepted, in MB (at most 100).")
    ] = 4.0,
    bench: BenchResultOption = None,
    key: Annotated[
        Optional[str],
        typer.Option(
            envvar="EDGE_FM_SERVE_KEY",
            show_envvar=True,
            help="Access key the browser must give as its password (any user name).",
        ),
    ] = None,
    data: MovedDataOption = None,
) -> None:
    """Serve a web demo: upload an image, see the class probabilities, the heat map, every model's answer.

    Needs the demo extra: pip install 'edge-fm\\[demo]'.
    Example: edge-fm serve models/ --port 8050
    Example: EDGE_FM_SERVE_KEY=... edge-fm serve models/ --host 0.0.0.0 --expose
    """
    from edge_fm import ServeConfig, serve_in_fresh_process

    serve_in_fresh_process(ServeConfig(path, host, port, expose, max_upload_mb, bench, key, data))

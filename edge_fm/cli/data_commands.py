"""``edge-fm data ...`` and ``edge-fm zoo``: the dataset and the architectures."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from edge_fm.cli.common import (
    app,
    command,
    console,
    data_app,
    err_console,
)
from edge_fm.cli.options import (
    DEFAULT_SOURCE,
    DataDirOption,
    DataSource,
)


@command(data_app, "fetch")
def data_fetch(
    data_dir: DataDirOption = None,
    url: Annotated[
        Optional[list[str]],
        typer.Option("--url", help="Base URL to download from instead of the official mirrors (repeatable)."),
    ] = None,
) -> None:
    """Download the four original Fashion-MNIST files and verify their SHA-256.

    Example: edge-fm data fetch --data-dir ~/data/fashion-mnist
    """
    from edge_fm.data import datasets as data
    from edge_fm.data.download import fetch

    target = data.resolve_data_dir(data_dir)
    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TimeRemainingColumn())
    with Progress(*columns, console=err_console, transient=False) as progress:
        tasks: dict[str, Any] = {}

        def report(name: str, done: int, total: int | None) -> None:
            if name not in tasks:
                tasks[name] = progress.add_task(name, total=total)
            progress.update(tasks[name], completed=done, total=total)

        paths = fetch(target, base_urls=url or data.MIRRORS, progress=report)
    console.print(f"[green]verified[/] {len(paths)} files in {target}")


@command(data_app, "info")
def data_info(
    source: DataSource = DEFAULT_SOURCE,
    data_dir: DataDirOption = None,
    seed: Annotated[int, typer.Option(help="Seed of the held-out test and validation splits.")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
) -> None:
    """Show a dataset: its kind, fingerprint, classes, images per class and split, image size.

    Without --data: Fashion-MNIST, with pixel statistics and the checksums of its files.

    Example: edge-fm data info --data photos/ --image-size 32
    """
    from edge_fm.data import datasets as data_module

    if source.data not in (None, "fashion-mnist"):
        _source_info(source.data, data_dir, source.options(seed), as_json)
        return
    source.overrides()  # refuses --image-size and --channels for Fashion-MNIST
    data = data_module
    result = data.info(data_dir)
    if as_json:
        console.print_json(json.dumps(result))
        return
    console.print(f"data directory: [bold]{result['data_dir']}[/]")
    table = Table("class", *result["splits"], title="images per class")
    for name in data.CLASS_NAMES:
        table.add_row(name, *(str(s["per_class"][name]) for s in result["splits"].values()))
    table.add_row("[bold]total[/]", *(f"[bold]{s['images']}[/]" for s in result["splits"].values()))
    console.print(table)
    console.print(f"train pixel mean {result['pixel_mean']:.3f}, std {result['pixel_std']:.3f} (0-255 scale)")
    colour = "green" if result["published"] else "yellow"
    console.print(f"files: [{colour}]{result['release']}[/]", highlight=False)
    for name, entry in result["files"].items():
        verdict = "[green]matches[/]" if entry["matches_published"] else "[yellow]differs[/]"
        console.print(f"{name}: sha256 {entry['sha256'][:16]}… {verdict}", highlight=False)


def _source_info(data: str, data_dir, options, as_json: bool) -> None:
    from edge_fm.data.sources import load_data, summary

    # Bars only on a terminal: piped, even a finished transient bar leaves an empty line.
    bars = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        console=err_console,
        transient=True,
        disable=not err_console.is_terminal,
    )
    with bars as bar:
        tasks: dict[str, Any] = {}

        def report(task: str, done: int, total: int) -> None:
            if task not in tasks:
                tasks[task] = bar.add_task(task, total=total)
            bar.update(tasks[task], completed=done)

        dataset = load_data(data, data_dir, options, progress=report)
    record = summary(dataset)
    if as_json:
        console.print_json(json.dumps(record))
        return
    height, width, channels = record["image_shape"]
    console.print(f"{record['kind']} data: [bold]{record['source']}[/]")
    console.print(f"fingerprint {record['fingerprint']}")
    colour = "grey" if channels == 1 else "RGB"
    resized = f", other sizes resized ({record['resize']})" if record["resize"] else ""
    validation = f"; validation split: {record['val_split']}" if record.get("val_split") else ""
    console.print(
        f"images {width}x{height} {colour}{resized}; test split: {record['test_split']}{validation}"
    )
    table = Table("class", *record["counts"], title="images per class")
    for index, name in enumerate(record["class_names"]):
        table.add_row(name, *(str(counts[index]) for counts in record["counts"].values()))
    table.add_row("[bold]total[/]", *(f"[bold]{sum(c)}[/]" for c in record["counts"].values()))
    console.print(table)
    if record["skipped"]:
        console.print(
            f"[yellow]skipped {record['skipped']} file(s)[/]: " + "; ".join(record["skipped_examples"]),
            highlight=False,
        )


@command(data_app, "make-sample")
def data_make_sample(
    out_dir: Annotated[Path, typer.Argument(help="Folder to write the four sample IDX files to.")],
    data_dir: DataDirOption = None,
    per_class_train: Annotated[int, typer.Option(min=1, help="Training images per class.")] = 200,
    per_class_test: Annotated[int, typer.Option(min=1, help="Test images per class.")] = 100,
    seed: Annotated[int, typer.Option(help="Seed of the selection.")] = 0,
) -> None:
    """Write a stratified subset of the dataset as IDX files (how the embedded sample was made).

    Example: edge-fm data make-sample /tmp/sample --data-dir DATA_DIR
    """
    from edge_fm.data import datasets as data

    for path in data.make_sample(out_dir, data_dir, per_class_train, per_class_test, seed):
        console.print(str(path))


@command(app, "zoo")
def zoo_table(
    show_all: Annotated[bool, typer.Option("--all", help="Include test-only architectures.")] = False,
) -> None:
    """List the architectures with their parameters, MACs per image and the paper they reproduce.

    Example: edge-fm zoo
    """
    from edge_fm import describe_model, list_models

    table = Table("architecture", "params", "MACs/image", "input", "paper acc.", "description")
    table.columns[0].no_wrap = True
    for name in list_models(include_testing=show_all):
        row = describe_model(name)
        paper_acc = f"{row['paper_accuracy']:.2%}" if row["paper_accuracy"] else "-"
        table.add_row(
            name,
            f"{row['params']:,}",
            f"{row['macs'] / 1e6:.2f} M",
            row["input_size"],
            paper_acc,
            row["description"],
        )
    console.print(table)

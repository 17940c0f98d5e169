"""``edge-fm bench`` and the tables it prints (the pipeline prints them too)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Table

from edge_fm.cli.common import (
    app,
    command,
    command_line,
    console,
    err_console,
)
from edge_fm.cli.options import (
    DEFAULT_MEASUREMENT,
    DEFAULT_SSH,
    DataDirOption,
    Measurement,
    MovedDataOption,
    SshOptions,
)
from edge_fm.errors import EdgeFMError
from edge_fm.io import KB


def print_bench_table(result: dict, title: str | None = None) -> None:
    """The benchmark table: one row per artifact and thread count."""
    from edge_fm import flat_row

    if result["target"] == "tflm":
        return print_tflm_table(result, title)
    if result["target"].startswith("vela:"):
        return print_vela_table(result, title)
    columns = ("thr", "KB", "gzip KB", "accuracy", "Δ acc", "p50 ms", "p90 ms", "img/s", "peak MB", "status")
    _print_artifact_table(list(map(flat_row, result["rows"])), columns, _bench_cells, title)
    _print_failures(result["rows"])
    env = result["environment"]
    console.print(
        f"target {result['target']}: {env.get('cpu')} ({env.get('machine')}, {env.get('os')}), "
        f"{env.get('interpreter')} {env.get('interpreter_version')}, Python {env.get('python')}; "
        f"accuracy on {result['test_set']['source']}; Δ against {result['reference'] or 'no float reference'}",
        highlight=False,
    )


def _print_artifact_table(
    rows: list[dict], columns: Sequence[str], cells: Callable[[dict], list[str]], title: str | None
) -> None:
    """A table of one row per artifact: its name and format, then ``columns``, filled by ``cells(row)``."""
    table = Table("artifact", "format", *columns, title=title)
    for row in rows:
        table.add_row(escape(str(row["artifact"])), escape(str(row.get("format") or "?")), *cells(row))
    console.print(table)


def _status_cell(row: dict) -> str:
    """A measured row's status: ok, or error (the reason is printed under the table)."""
    return "[green]ok[/]" if row.get("status") == "ok" else "[red]error[/]"


def _bench_cells(row: dict) -> list[str]:
    """A flat bench row's figures; a failed row keeps its size but no measurement."""
    ok = row.get("status") == "ok"
    delta = row.get("accuracy_delta")
    return [
        str(row.get("threads", "")),
        f"{row['bytes'] / KB:.1f}" if "bytes" in row else "-",
        f"{row['gzip_bytes'] / KB:.1f}" if "gzip_bytes" in row else "-",
        f"{row['accuracy']:.2%}" if ok else "-",
        f"{delta * 100:+.2f} pt" if delta is not None else "-",
        f"{row['p50_ms']:.3f}" if ok else "-",
        f"{row['p90_ms']:.3f}" if ok else "-",
        f"{row['images_per_second']:.0f}" if ok else "-",
        f"{row['peak_rss_mb']:.0f}" if ok and row.get("peak_rss_mb") else "-",
        _status_cell(row),
    ]


def _print_failures(rows: list[dict]) -> None:
    """Each artifact that failed, once, on a line of its own under the table (a cell would cut the reason)."""
    failures = {}
    for row in rows:
        if row.get("status") != "ok":
            failures.setdefault(
                row.get("path") or row["artifact"], (row["artifact"], row.get("error") or "failed")
            )
    for path, (artifact, error) in failures.items():
        err_console.print(
            f"[bold red]error:[/] {escape(artifact)} ({escape(str(path))}): {escape(str(error))}",
            highlight=False,
            soft_wrap=True,
        )


def print_tflm_table(result: dict, title: str | None = None) -> None:
    """The TFLM benchmark table: accuracy, agreement, arena and flash; latency left empty on purpose."""
    columns = ("flash KB", "arena KB", "images", "accuracy", "agree w/ LiteRT ref", "latency", "status")
    _print_artifact_table(result["rows"], columns, _tflm_cells, title)
    _print_failures(result["rows"])
    env = result["environment"]
    console.print(
        f"target tflm: {env.get('interpreter')} {env.get('interpreter_version')} on {env.get('machine')} "
        f"({env.get('os')}), against {env.get('reference')}; first {env.get('images_per_artifact')} images of "
        f"{result['test_set']['source']}; arena = smallest that ran here + margin. Latency: {env.get('latency')}.",
        highlight=False,
    )


def _tflm_cells(row: dict) -> list[str]:
    """A TFLM row's figures; latency stays empty: TFLM timed here says nothing of a board's speed."""
    agreement = row.get("agreement_with_litert_reference")
    return [
        f"{row['bytes'] / KB:.1f}" if "bytes" in row else "-",
        f"{row['arena_bytes'] / KB:.1f}" if row.get("arena_bytes") else "-",
        str(row.get("examples") or "-"),
        f"{row['accuracy']:.2%}" if row.get("status") == "ok" else "-",
        f"{agreement:.2%}" if agreement is not None else "-",
        "-",
        _status_cell(row),
    ]


def print_vela_table(result: dict, title: str | None = None) -> None:
    """The Ethos-U estimate table (Vela): memory, placement, cycles; every figure an estimate."""
    columns = (
        "SRAM KB",
        "off-chip KB",
        "NPU ops",
        "CPU ops",
        "MACs",
        "cycles",
        "inf/s (est.)",
        "ms (est.)",
        "status",
    )
    _print_artifact_table(result["rows"], columns, _vela_cells, title)
    env = result["environment"]
    first = next((row for row in result["rows"] if row.get("status") == "ok"), None)
    clock = (
        f" at {first['clock_hz'] / 1e6:.0f} MHz ({first['system_config']}, {first['memory_mode']})"
        if first
        else ""
    )
    console.print(
        f"target {result['target']}{clock}: ethos-u-vela {env.get('interpreter_version')}; {env.get('note')}.",
        highlight=False,
    )


def _vela_cells(row: dict) -> list[str]:
    """A Vela row's estimates; a failed row says why in its status cell."""
    if row.get("status") != "ok":
        return ["-"] * 8 + [f"[red]error: {escape(str(row.get('error')))}[/]"]
    return [
        f"{row['sram_bytes'] / KB:.1f}",
        f"{row['off_chip_bytes'] / KB:.1f}",
        str(row["npu_ops"]),
        ", ".join(op["op"] for op in row.get("cpu_ops", [])) or "0",
        f"{row['macs'] / 1e6:.2f} M",
        f"{row['cycles']:,}",
        f"{row['inferences_per_second']:.0f}",
        f"{row['inference_ms']:.3f}",
        "[green]ok[/]",
    ]


@command(app, "bench")
def bench_command(
    artifacts: Annotated[
        list[Path], typer.Argument(help=".tflite files, export bundles, or folders of them (e.g. models/).")
    ],
    target: Annotated[
        Optional[list[str]],
        typer.Option(
            help="`local`, `ssh://user@host[:port]` (a Raspberry Pi, say), `tflm` (TensorFlow Lite "
            "for Microcontrollers here: accuracy, arena, flash; no latency), or `vela:ethos-u55-128` (Arm "
            "Vela's Ethos-U estimate: memory, NPU/CPU ops, cycles; needs the npu extra). Repeat it to measure "
            "on several devices at once, one benchmark per device at a time."
        ),
    ] = None,
    compare: Annotated[
        bool,
        typer.Option(
            "--compare", help="With several --target: also print artifacts x devices (p50 and accuracy)."
        ),
    ] = False,
    tflm_images: Annotated[
        Optional[int],
        typer.Option(
            help="With --target tflm: test images per artifact (TFLM here takes up to ~70 ms an image; default 1000)."
        ),
    ] = None,
    timing: Measurement = DEFAULT_MEASUREMENT,
    baseline: Annotated[
        Optional[Path], typer.Option(help="Also measure this run's Keras model through TensorFlow (local).")
    ] = None,
    min_accuracy: Annotated[
        Optional[float], typer.Option(help="Fail (exit 1) if any artifact is below this accuracy (0-1).")
    ] = None,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Write the full result here.")] = None,
    csv_out: Annotated[Optional[Path], typer.Option("--csv", help="Write the table here as CSV.")] = None,
    sample: Annotated[
        bool, typer.Option("--sample", help="Score on the embedded sample (not the test set).")
    ] = False,
    data_dir: DataDirOption = None,
    data: MovedDataOption = None,
    ssh: SshOptions = DEFAULT_SSH,
    ssh_timeout: Annotated[int, typer.Option(help="SSH connect timeout in seconds.")] = 10,
    plot: Annotated[
        Optional[Path], typer.Option(help="Draw accuracy against size and latency (PNG) here.")
    ] = None,
    cards: Annotated[
        bool,
        typer.Option(
            "--cards",
            help="With a folder of shipped models measured here: rewrite their model cards from it.",
        ),
    ] = False,
) -> None:
    """Measure accuracy, size, latency and memory of TFLite artifacts, here or on a device over SSH.

    Given a folder of shipped models (made by `edge-fm ship`), measured here, its rows are named by model and the models' targets judged; --cards also rewrites their model cards. A row it cannot remeasure is carried over from the --json file it replaces.

    Example: edge-fm bench models/ --cards --json benchmarks/results/models_bench.json --plot benchmarks/results/models_front.png
    Example: edge-fm bench runs/cnn-2conv-int8-1 --target ssh://pi@raspberrypi.local --baseline runs/cnn-2conv-train-1
    Example: edge-fm bench models/ --target tflm --tflm-images 500
    Example: edge-fm bench models/ --target vela:ethos-u55-128
    Example: edge-fm bench models/ --target ssh://pi@pi-a.local --target ssh://pi@pi-b.local --compare --json fleet.json
    """
    from edge_fm import (
        check_cards_request,
        plot_front,
        previous_result,
        refresh_cards,
        write_results,
    )
    from edge_fm import measure_artifacts as measure
    from edge_fm.io import check_output_file

    if min_accuracy is not None and not 0 <= min_accuracy <= 1:
        raise EdgeFMError(f"--min-accuracy {min_accuracy}: give a fraction between 0 and 1, e.g. 0.9.")
    for path, option in ((json_out, "--json"), (csv_out, "--csv"), (plot, "--plot")):
        if path is not None:
            check_output_file(path, option)  # before minutes of measuring, not after
    options = timing.bench_options()
    targets = target or ["local"]
    if cards:
        check_cards_request(artifacts, targets, baseline)
    where = [ssh.target(t, ssh_timeout, tflm_images) for t in targets]
    if plot is not None:
        if len(where) > 1:
            raise EdgeFMError(
                "--plot draws one device's front: give one --target (or plot each device's result)."
            )
        if where[0].name == "tflm" or where[0].name.startswith("vela:"):
            raise EdgeFMError(
                f"--plot draws measured latency, which --target {where[0].name} does not give: drop --plot."
            )
    shown = where[0].name if len(where) == 1 else f"{len(where)} devices at once"
    with console.status(f"measuring on {shown}..."):
        result = measure(
            artifacts,
            where,
            options,
            baseline,
            data_dir,
            sample,
            previous_result(json_out),
            command=command_line("bench"),
            data=data,
        )
    if cards:
        refresh_cards(artifacts[0], result)
    if len(where) > 1:
        print_fleet_tables(result, compare)
    else:
        print_bench_table(result)
    write_results(result, json_out, csv_out)
    if plot is not None:
        plot_front(
            [r for r in result["rows"] if r.get("status") == "ok" and r["threads"] == options.threads[0]],
            plot,
        )
        console.print(f"plot: {plot}")
    failed = [r for r in result["rows"] if r.get("status") != "ok"]
    _bench_verdict(result["rows"], min_accuracy, failed)


def _bench_verdict(rows: list[dict], min_accuracy: Optional[float], failed: list[dict]) -> None:
    """The --min-accuracy gate, then a non-zero exit if any row failed."""
    from edge_fm import below_min_accuracy

    if min_accuracy is not None:
        # An artifact that failed is reported under the table; the gate speaks of the ones measured.
        failing = below_min_accuracy([row for row in rows if row.get("status") == "ok"], min_accuracy)
        if failing:
            raise EdgeFMError(
                f"{len(failing)} artifact(s) below --min-accuracy {min_accuracy:.2%}: {', '.join(failing)}."
            )
        measured = len({row["artifact"] for row in rows if row.get("status") == "ok"})
        if failed:
            console.print(
                f"the {measured} artifact(s) measured reach {min_accuracy:.2%}; the failed ones are named above"
            )
        else:
            console.print(f"[green]all artifacts reach {min_accuracy:.2%}[/]")
    if failed:
        raise typer.Exit(1)


def print_fleet_tables(result: dict, compare: bool = False) -> None:
    """A fleet's result: one table per device (its rows and environment), then artifacts x devices if asked."""
    from edge_fm import compare_devices

    keras = [row for row in result["rows"] if row.get("format") == "keras"]
    for device in result["targets"]:
        rows = [row for row in result["rows"] if row.get("target") == device and row.get("format") != "keras"]
        env = result["environments"].get(device)
        if env is None:  # the device failed as a whole: its error rows are in the JSON and the comparison
            console.print(
                f"[red]{escape(device)} failed[/] ({len(rows)} artifact(s) not measured): "
                f"{escape(result['errors'][device])}",
                highlight=False,
            )
            continue
        print_bench_table(
            {
                **result,
                "target": device,
                "rows": keras + rows,
                "environment": env,
                "reference": result["references"].get(device),
            },
            title=f"on {device}",
        )
    if not compare:
        return
    matrix = compare_devices(result)
    threads = matrix["threads"]
    title = f"p50 ms / accuracy per device ({threads} thread{'s' if threads != 1 else ''})"
    _print_artifact_table(
        matrix["artifacts"], matrix["devices"], lambda entry: _device_cells(entry, matrix["devices"]), title
    )


def _device_cells(entry: dict, devices: list[str]) -> list[str]:
    """An artifact's p50 and accuracy on each device (no latency for a device that measures none)."""
    cells = []
    for device in devices:
        cell = entry["cells"].get(device)
        if cell is None:
            cells.append("-")
        elif cell["status"] != "ok":
            cells.append("[red]error[/]")
        else:
            p50 = f"{cell['p50_ms']:.3f} ms" if cell["p50_ms"] is not None else "no latency"
            cells.append(f"{p50} / {cell['accuracy']:.2%}")
    return cells

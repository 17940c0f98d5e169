"""``edge-fm ship``, ``pipeline`` and ``sweep``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Table

from edge_fm.cli.bench_commands import print_bench_table
from edge_fm.cli.common import (
    RichReporter,
    app,
    command,
    command_line,
    console,
    err_console,
    ignored_with_resume,
)
from edge_fm.cli.options import (
    DEFAULT_SHIP,
    DEFAULT_SOURCE,
    DEFAULT_SSH,
    DataDirOption,
    DataSource,
    FineTuneEpochsOption,
    Measurement,
    MovedDataOption,
    PresetOption,
    SampleRunOption,
    ShipOptions,
    SshOptions,
    TrainSettingsOption,
    given_over,
)
from edge_fm.cli.sweep_options import (
    DEFAULT_CLUSTER,
    DEFAULT_MEASURES,
    DEFAULT_TRIALS,
    SweepCluster,
    SweepMeasures,
    SweepTrials,
)
from edge_fm.errors import EdgeFMError
from edge_fm.io import KB
from edge_fm.pipeline.pipeline import PIPELINE_BENCH

# The pipeline times every artifact it exports, so a little less long than `bench` does.
PIPELINE_MEASUREMENT = Measurement.of(PIPELINE_BENCH)


@command(app, "ship")
def ship_command(
    train_run: Annotated[
        Path, typer.Argument(help="Finished training run to ship (e.g. runs/edge-cnn-tiny-train-1).")
    ],
    name: Annotated[str, typer.Option(help="Folder name under the models folder, e.g. edge-cnn-tiny.")],
    options: ShipOptions = DEFAULT_SHIP,
    runs_dir: Annotated[Path, typer.Option(help="Where the QAT run and the exports are written.")] = Path(
        "runs"
    ),
    data_dir: DataDirOption = None,
    data: MovedDataOption = None,
) -> None:
    """Choose, bundle and document a model for shipping.

    Runs QAT (or takes --qat-run), exports qat-int8 and int8, keeps the one more accurate on the whole validation split (the test split is not read), and writes MODELS_DIR/NAME: the bundle, its model card and provenance. Then `edge-fm bench MODELS_DIR --cards` measures it and completes the card.

    Example: edge-fm ship runs/edge-cnn-tiny-train-1 --name edge-cnn-tiny --data-dir DATA_DIR
    """
    from edge_fm import ship

    config = options.config(train_run, name)
    target = ship(
        config,
        data_dir,
        runs_dir,
        command_line("ship"),
        log=lambda line: console.print(line, highlight=False),
        data=data,
    )
    console.print(f"[green]shipped[/] {target} (measure it with `edge-fm bench {options.models_dir}`)")


@command(app, "pipeline")
def pipeline_command(
    arch: Annotated[
        Optional[str], typer.Argument(help="Architecture (see `edge-fm zoo`); omit with --resume.")
    ] = None,
    preset: PresetOption = "quick",
    sample: SampleRunOption = False,
    prune: Annotated[
        Optional[float], typer.Option(help="Prune to this sparsity (0-1) before quantizing.")
    ] = None,
    qat: Annotated[
        bool, typer.Option("--qat", help="Add quantization-aware training and its qat-int8 artifact.")
    ] = False,
    formats: Annotated[
        Optional[list[str]],
        typer.Option(
            "--format", "-f", help="Export formats (repeatable; default fp32, int8, + qat-int8 with --qat)."
        ),
    ] = None,
    epochs: FineTuneEpochsOption = None,
    settings: TrainSettingsOption = None,
    target: Annotated[
        Optional[str],
        typer.Option(
            help="Where to benchmark: `local` (the default) or `ssh://user@host[:port]`; with --resume, "
            "the pipeline's own unless given."
        ),
    ] = None,
    timing: Measurement = PIPELINE_MEASUREMENT,
    ssh: SshOptions = DEFAULT_SSH,
    data_dir: DataDirOption = None,
    source: DataSource = DEFAULT_SOURCE,
    runs_dir: Annotated[Path, typer.Option(help="Where the pipeline's run directory is created.")] = Path(
        "runs"
    ),
    resume: Annotated[
        Optional[Path],
        typer.Option(
            help="Continue this stopped pipeline run: its finished stages are kept, with its config, and its "
            "target, SSH and timing options unless given."
        ),
    ] = None,
) -> None:
    """Train -> optimize -> export -> bench in one command, with a final table and the best artifact.

    With --data every stage uses that dataset: the exports are checked on its validation images, the benchmark and the report score its test split.

    Example: edge-fm pipeline cnn-2conv --sample --prune 0.5 --qat
    Example: edge-fm pipeline edge-cnn-tiny --data photos/ --image-size 32 --qat
    Example: edge-fm pipeline cnn-2conv --preset paper --qat --target ssh://pi@raspberrypi.local
    Example: edge-fm pipeline --resume runs/cnn-2conv-pipeline-1
    """
    from edge_fm import (
        PipelineConfig,
        read_pipeline,
        recorded_bench,
        resume_pipeline,
        run_pipeline,
        stopped_pipeline,
    )
    from edge_fm.train import config as config_lib

    if (arch is None) == (resume is None):
        raise EdgeFMError(
            "name an architecture (see `edge-fm zoo`), or pass --resume PIPELINE_DIR; not both."
        )
    if resume is not None:
        ignored_with_resume(
            **{
                "--preset": preset != "quick",
                "--sample": sample,
                "--prune": prune is not None,
                "--qat": qat,
                "--format": bool(formats),
                "--epochs": epochs is not None,
                "--set": bool(settings),
                "the data options": source != DEFAULT_SOURCE,
                "--runs-dir": runs_dir != Path("runs"),
            }
        )
        # What the pipeline recorded, each option given now replacing its own.
        recorded_target, recorded_ssh, recorded_timing = recorded_bench(resume)
        target = target or recorded_target
        ssh = given_over(SshOptions.of(recorded_ssh), ssh, DEFAULT_SSH)
        timing = given_over(Measurement.of(recorded_timing), timing, PIPELINE_MEASUREMENT)
    options = timing.bench_options()
    where = ssh.target(target or "local", 10)
    reporter = RichReporter(console)

    def log(message: str) -> None:
        reporter.stop()
        console.print(f"[bold cyan]>[/] {message}", highlight=False)

    try:
        if resume is not None:
            top = resume_pipeline(resume, where, options, data_dir, reporter=reporter, log=log)
        else:
            overrides = config_lib.parse_overrides(config_lib.TrainConfig, settings or [])
            sample, chosen = source.sample_and_overrides(sample)
            overrides.update(chosen)
            config = PipelineConfig(arch, preset, sample, prune, qat, tuple(formats or ()), overrides, epochs)
            top = run_pipeline(config, where, options, data_dir, runs_dir, reporter=reporter, log=log)
    except KeyboardInterrupt:
        reporter.stop()
        stopped = resume if resume is not None else stopped_pipeline(runs_dir, arch)
        err_console.print(
            "[bold red]interrupted:[/] continue with "
            f"`edge-fm pipeline --resume {escape(str(stopped or 'PIPELINE_DIR'))}`; its finished stages are kept."
        )
        raise typer.Exit(130) from None
    finally:
        reporter.stop()
    result = read_pipeline(top)
    record = result["record"]
    print_bench_table(result["bench"], title=f"{record['config']['arch']} pipeline on {record['target']}")
    best = record["best"]
    if best:
        console.print(
            f"best artifact ({best['rule']}): [bold green]{result['best_artifact']}[/] "
            f"{best['format']}, {best['accuracy']:.2%}, {best['bytes'] / KB:.1f} KB, p50 {best['p50_ms']:.3f} ms",
            highlight=False,
        )
    console.print(f"pipeline run directory: [bold]{top}[/] (pipeline.json links every stage)")
    if result["report"] is not None:
        console.print(f"report: [bold]{result['report']}[/] (open it in a browser)")


@command(app, "sweep")
def sweep_command(
    tried: SweepTrials = DEFAULT_TRIALS,
    sample: SampleRunOption = False,
    measures: SweepMeasures = DEFAULT_MEASURES,
    cluster: SweepCluster = DEFAULT_CLUSTER,
    resume: Annotated[
        Optional[Path], typer.Option(help="Continue this stopped sweep folder (finished trials are kept).")
    ] = None,
    source: DataSource = DEFAULT_SOURCE,
    runs_dir: Annotated[Path, typer.Option(help="Where the sweep folder (sweep-N) is created.")] = Path(
        "runs"
    ),
    data_dir: DataDirOption = None,
) -> None:
    """Run many pipelines (architectures x training options x optimizations) on Ray Tune; table, front and picks.

    Each trial is one `edge-fm pipeline` run in runs/sweep-N/trials/; the sweep writes sweep.json and sweep.csv (every artifact of every trial), front.png and the pick for each constraint. Stopped, it continues with --resume.

    A --spec file holds the same options: arch: \\[tiny-cnn, cnn-2conv], set: {epochs: \\[1, 2]}, prune: \\[0, 0.5], qat: \\[false, true], sample: true, constraints: {max_bytes: 100000}.

    Needs the cluster extra: pip install 'edge-fm\\[cluster]'.

    Example: edge-fm sweep --sample --arch tiny-cnn,cnn-2conv --set epochs=1,2 --prune 0,0.5 --qat both
    Example: edge-fm sweep --spec sweep.yaml --search optuna --trials 30 --address 10.0.0.5:6379
    Example: edge-fm sweep --resume runs/sweep-3
    Example: edge-fm sweep --sample --arch tiny-cnn,edge-cnn-tiny --bench-target ssh://pi@raspberrypi.local
    Example: edge-fm sweep --data photos/ --image-size 32 --arch edge-cnn-tiny --set epochs=5,10 --qat both
    """
    from edge_fm import SweepOptions, read_sweep, resume_sweep, run_sweep
    from edge_fm import build_sweep_spec as build_spec

    ray_options = cluster.ray_options()

    def log(message: str) -> None:
        console.print(f"[bold cyan]>[/] {escape(message)}", highlight=False)

    sample, chosen = source.sample_and_overrides(sample)
    if resume is not None:
        sweep_dir = resume_sweep(resume, ray_options, measures.limits(), data_dir, log)
    else:
        asked = SweepOptions(**tried.asked(), **measures.asked(), sample=sample, data=chosen)
        sweep_spec = build_spec(asked)
        sweep_dir = run_sweep(sweep_spec, runs_dir, ray_options, data_dir, log)
    summary = read_sweep(sweep_dir)
    _print_sweep(summary, sweep_dir)
    if summary["rows"] and not any(row.get("status") == "ok" for row in summary["rows"]):
        raise EdgeFMError(
            f"every trial failed (their errors are above): fix the cause, then `edge-fm sweep --resume {sweep_dir} --retry-errors`."
        )


def _print_sweep(summary: dict, sweep_dir: Path) -> None:
    table = Table(
        "trial",
        "format",
        "KB",
        "accuracy",
        "p50 ms",
        "front",
        "status",
        title="sweep: every artifact of every trial",
    )
    for row in summary["rows"]:
        ok = row.get("status") == "ok"
        table.add_row(
            row["trial"],
            row.get("format") or "-",
            f"{row['bytes'] / KB:.1f}" if ok else "-",
            f"{row['accuracy']:.2%}" if ok else "-",
            f"{row['latency']['p50_ms']:.3f}" if ok else "-",
            "[green]yes[/]" if row.get("front") else "",
            "[green]ok[/]" if ok else f"[red]error: {escape(str(row.get('error')))}[/]",
        )
    console.print(table)
    for pick in summary["picks"]:
        chosen = pick["artifact"]
        answer = (
            f"[bold green]{escape(pick['model'])}[/] {chosen['accuracy']:.2%}, {chosen['bytes'] / KB:.1f} KB, "
            f"p50 {chosen['p50_ms']:.3f} ms"
            if chosen
            else "[yellow]none qualifies[/]"
        )
        console.print(f"{pick['question']}: {answer}", highlight=False)
    source = summary.get("test_set", {}).get("source")
    if source:
        console.print(f"accuracy on {source}", highlight=False)
    console.print(f"sweep folder: [bold]{sweep_dir}[/] (sweep.json, sweep.csv, front.png)", highlight=False)
    if not summary["complete"]:
        console.print(
            f"[yellow]{summary['finished_trials']} of {summary['expected_trials']} trials finished:[/] "
            f"continue with `edge-fm sweep --resume {sweep_dir}`",
            highlight=False,
        )

"""``edge-fm train``, ``evaluate`` and ``optimize``."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from edge_fm.cli.common import (
    RichReporter,
    app,
    command,
    console,
    err_console,
    ignored_with_resume,
)
from edge_fm.cli.options import (
    DEFAULT_SOURCE,
    DEFAULT_TRAINING,
    DataDirOption,
    DataSource,
    FineTuneEpochsOption,
    MovedDataOption,
    PresetOption,
    RunsDirOption,
    SampleRunOption,
    TrainingOptions,
    TrainSettingsOption,
)
from edge_fm.errors import EdgeFMError


@command(app, "train")
def train_command(
    arch: Annotated[
        Optional[str],
        typer.Argument(
            help="Architecture (see `edge-fm zoo`); omit with --resume (and with --init-from: the source's)."
        ),
    ] = None,
    preset: PresetOption = "quick",
    sample: SampleRunOption = False,
    data_dir: DataDirOption = None,
    source: DataSource = DEFAULT_SOURCE,
    training: TrainingOptions = DEFAULT_TRAINING,
    init_from: Annotated[
        Optional[Path],
        typer.Option(
            help="Start from the weights of this finished train run, or of the run an export bundle came from "
            "(a new head for new classes); the architecture may then be omitted.",
        ),
    ] = None,
    weights: Annotated[
        Optional[str],
        typer.Option(
            help="mobilenetv2, resnet50: starting weights: imagenet (Keras' cache, else downloaded), none, "
            "or a Keras weights file of the backbone without its top.",
        ),
    ] = None,
    settings: TrainSettingsOption = None,
    arch_options: Annotated[
        Optional[list[str]],
        typer.Option(
            "--arch-opt", help="Architecture option as key=value (repeatable), e.g. --arch-opt alpha=0.5."
        ),
    ] = None,
    runs_dir: RunsDirOption = Path("runs"),
    resume: Annotated[
        Optional[Path],
        typer.Option(
            help="Continue this interrupted run directory (--data: where its data is now, if moved)."
        ),
    ] = None,
    distribute: Annotated[
        Optional[str],
        typer.Option(
            help="auto (mirrored over 2+ GPUs, else one device), none, mirrored, or multi-worker "
            "(cluster from $TF_CONFIG); --batch-size is then the global batch."
        ),
    ] = None,
) -> None:
    """Train an architecture and print its metrics; writes a new run directory.

    Example: edge-fm train cnn-2conv --preset paper --data-dir DATA_DIR --distribute mirrored

    Example: edge-fm train edge-cnn-tiny --data photos/ --image-size 32

    Example: edge-fm train --init-from runs/edge-cnn-tiny-train-1 --data photos/ --freeze-epochs 2
    """
    from edge_fm import config_for, training_run_of
    from edge_fm import resume as resume_run
    from edge_fm import train_model as train
    from edge_fm.train import config as config_lib

    reporter = RichReporter(console)
    if resume is not None:
        ignored_with_resume(
            **{
                "--preset": preset != "quick",
                "--sample": sample,
                "the training options": training != DEFAULT_TRAINING,
                "--init-from": init_from is not None,
                "--weights": weights is not None,
                "--set": bool(settings),
                "--arch-opt": bool(arch_options),
                "the data options": dataclasses.replace(source, data=None) != DEFAULT_SOURCE,
            }
        )
    try:
        if resume is not None:
            # --data with --resume: where the run's own data is now, when it has moved.
            run_dir = resume_run(resume, data_dir, reporter=reporter, distribute=distribute, data=source.data)
        else:
            init_run = None if init_from is None else training_run_of(init_from, "--init-from")
            if not arch and init_run is not None:
                from edge_fm import Run

                arch = Run(init_run).train_config.arch
            if not arch:
                raise EdgeFMError("name an architecture (see `edge-fm zoo`), or pass --resume RUN_DIR.")
            overrides = config_lib.parse_overrides(config_lib.TrainConfig, settings or [])
            given = {"distribute": distribute, "init_from": init_run}
            overrides.update({k: v for k, v in given.items() if v is not None})
            overrides.update(training.overrides())
            overrides.update(source.overrides(sample))
            overrides["arch_options"] = config_lib.parse_arch_options(arch_options or [])
            if weights is not None:
                # A file by its absolute path: a resumed run finds it from any folder.
                named = {"none": None, "imagenet": "imagenet"}
                key = weights.lower()
                overrides["arch_options"]["weights"] = (
                    named[key] if key in named else str(Path(weights).absolute())
                )
            config = config_for(arch, preset, **overrides)
            run_dir = train(config, data_dir, runs_dir, reporter=reporter)
    except KeyboardInterrupt:
        reporter.stop()
        err_console.print(
            "[bold red]interrupted:[/] continue with `edge-fm train --resume RUN_DIR` (the run printed above)."
        )
        raise typer.Exit(130) from None
    finally:
        reporter.stop()
    if run_dir is None:  # a multi-worker worker other than the chief
        console.print(
            "done: this worker is not the chief; the chief (the first worker) wrote the run directory."
        )
        return
    _print_metrics(_run_metrics(run_dir), run_dir)


def _print_metrics(metrics: dict, run_dir: Path) -> None:
    from edge_fm import epochs_text

    key = "test" if "test" in metrics else "sample_test"
    scores = metrics[key]
    where = "test split" if key == "test" else "embedded sample (held-out images; NOT test-set accuracy)"
    console.print(
        f"[bold]{metrics['arch']}[/]: accuracy [bold green]{scores['accuracy']:.2%}[/] on the {where}, "
        f"{_balanced_text(scores)}loss {scores['loss']:.4f}, macro F1 {scores['macro_f1']:.4f}; "
        f"validation accuracy {metrics['val']['accuracy']:.2%}",
        highlight=False,
    )
    _print_per_class(scores)
    console.print(
        f"{epochs_text(metrics['epochs_run'])} in {metrics['training_seconds']:.1f} s on {metrics['device']}; "
        f"{metrics['params']:,} params, {metrics['macs'] / 1e6:.2f} M MACs/image",
        highlight=False,
    )
    console.print(f"run directory: [bold]{run_dir}[/]")


def _balanced_text(scores: dict) -> str:
    """``balanced accuracy 91.20% (lowest recall: Shirt 70.10%), ``; empty for metrics written before it."""
    if "balanced_accuracy" not in scores:
        return ""
    lowest = scores["lowest_recall"]
    return (
        f"balanced accuracy {scores['balanced_accuracy']:.2%} (lowest recall: {lowest['class']} "
        f"{lowest['recall']:.2%}), "
    )


def _print_per_class(scores: dict) -> None:
    table = Table("class", "precision", "recall", "F1", "images")
    for name, row in scores["per_class"].items():
        table.add_row(
            name, f"{row['precision']:.3f}", f"{row['recall']:.3f}", f"{row['f1']:.3f}", str(row["support"])
        )
    console.print(table)


@command(app, "evaluate")
def evaluate_command(
    run_dir: Annotated[
        Path, typer.Argument(help="A finished training run directory, or an export bundle (or its .tflite).")
    ],
    data_dir: DataDirOption = None,
    split: Annotated[str, typer.Option(help="'test' or 'val' (a run only).")] = "test",
    json_out: Annotated[
        Optional[Path], typer.Option("--json", help="Also write the metrics to this JSON file.")
    ] = None,
    data: MovedDataOption = None,
) -> None:
    """Score a run's model, or an exported bundle, on its data's test (or validation) split.

    Example: edge-fm evaluate runs/cnn-2conv-train-1
    Example: edge-fm evaluate runs/edge-cnn-tiny-int8-1 --data photos/
    """
    from edge_fm import evaluate_artifact, evaluate_run
    from edge_fm.export.bundles import MODEL_FILE
    from edge_fm.io import check_output_file, write_json

    if json_out:
        check_output_file(json_out, "--json")
    if run_dir.suffix == ".tflite" or (run_dir / MODEL_FILE).is_file():
        if split != "test":
            raise EdgeFMError(f"{run_dir} is an export bundle: it is scored on the test split; drop --split.")
        result = evaluate_artifact(run_dir, data, data_dir)
    else:
        result = evaluate_run(run_dir, data_dir, split, data)
    console.print(
        f"accuracy [bold green]{result['accuracy']:.2%}[/] on {result['split']} "
        f"({result['examples']} images; {result['data']}), "
        f"{_balanced_text(result)}loss {result['loss']:.4f}, macro F1 {result['macro_f1']:.4f}",
        highlight=False,
    )
    _print_per_class(result)
    if json_out:
        write_json(json_out, result)


@command(app, "optimize")
def optimize_command(
    run_dir: Annotated[
        Optional[Path], typer.Argument(help="A finished training (or pruning) run; omit with --resume.")
    ] = None,
    prune: Annotated[
        Optional[float], typer.Option(help="Magnitude-prune to this sparsity (0-1), e.g. 0.5.")
    ] = None,
    qat: Annotated[
        bool,
        typer.Option("--qat", help="Quantization-aware int8 fine-tuning (pruning-preserving after --prune)."),
    ] = False,
    prune_all: Annotated[
        bool,
        typer.Option("--prune-all", help="Also prune the first and last layers (kept dense by default)."),
    ] = False,
    fold_bn: Annotated[
        bool,
        typer.Option(
            "--fold-bn/--no-fold-bn",
            help="QAT: fold batch norms that feed a Dense into it first, so QAT trains the shipped weights.",
        ),
    ] = True,
    epochs: FineTuneEpochsOption = None,
    lr: Annotated[
        Optional[float],
        typer.Option(help="Peak fine-tuning learning rate (default: the parent's / 10)."),
    ] = None,
    settings: Annotated[
        Optional[list[str]],
        typer.Option("--set", help="Any fine-tuning config field as key=value (repeatable)."),
    ] = None,
    data_dir: DataDirOption = None,
    data: MovedDataOption = None,
    runs_dir: RunsDirOption = Path("runs"),
    resume: Annotated[
        Optional[Path], typer.Option(help="Continue this interrupted optimization run.")
    ] = None,
) -> None:
    """Prune and/or quantization-aware-train a run; each step writes a new run directory.

    Example: edge-fm optimize runs/cnn-2conv-train-1 --prune 0.5 --qat
    """
    from edge_fm import optimize_chain, resume_optimize
    from edge_fm.train import config as config_lib

    reporter = RichReporter(console)

    def step_done(step_dir: Path) -> None:
        reporter.stop()
        _print_step(step_dir)

    if resume is not None:
        ignored_with_resume(
            **{
                "RUN_DIR": run_dir is not None,
                "--prune": prune is not None,
                "--qat": qat,
                "--epochs": epochs is not None,
                "--lr": lr is not None,
                "--set": bool(settings),
                "--prune-all": prune_all,
                "--no-fold-bn": not fold_bn,
                "--runs-dir": runs_dir != Path("runs"),
            }
        )
    try:
        if resume is not None:
            _print_step(resume_optimize(resume, data_dir, reporter=reporter, data=data))
            return
        if run_dir is None:
            raise EdgeFMError("name a run directory to optimize, or pass --resume RUN_DIR.")
        fine_tune = config_lib.parse_overrides(config_lib.TrainConfig, settings or [])
        fine_tune.update({k: v for k, v in {"epochs": epochs, "learning_rate": lr}.items() if v is not None})
        optimize_chain(
            run_dir,
            prune,
            qat,
            not prune_all,
            fold_bn,
            fine_tune,
            data_dir,
            runs_dir,
            reporter,
            step_done,
            data,
        )
    except KeyboardInterrupt:
        reporter.stop()
        err_console.print(
            "[bold red]interrupted:[/] continue with `edge-fm optimize --resume RUN_DIR` (the step's run printed "
            "above; a prune-then-QAT chain goes on to its QAT step)."
        )
        raise typer.Exit(130) from None
    finally:
        reporter.stop()


def _run_metrics(run_dir: Path) -> dict:
    from edge_fm import Run

    return Run(run_dir).metrics


def _print_step(run_dir: Path) -> None:
    metrics = _run_metrics(run_dir)
    key = "test" if "test" in metrics else "sample_test"
    where = "test" if key == "test" else "sample (NOT test-set)"
    parent = metrics["parent_scores"]
    console.print(
        f"[bold]{metrics['stage']}[/] {run_dir}: val {metrics['val']['accuracy']:.2%} (parent "
        f"{parent['val_accuracy']:.2%}), "
        f"{where} {metrics[key]['accuracy']:.2%} (parent {parent[key + '_accuracy']:.2%}), "
        f"weight sparsity {metrics['sparsity']['overall']:.1%}",
        highlight=False,
    )
    layers = metrics["sparsity"]["layers"]
    if metrics["stage"] != "qat" and layers:
        console.print(
            "  per layer: " + ", ".join(f"{name} {value:.0%}" for name, value in layers.items()),
            highlight=False,
        )

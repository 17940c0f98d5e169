"""The ``edge-fm`` command line: a thin Typer layer over the library.

Each command parses its options, calls one library function and renders the result with rich.
Users' mistakes (:class:`~edge_fm.errors.EdgeFMError`, bad options) become one red line on
stderr and a non-zero exit code, never a traceback.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import warnings
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from edge_fm.errors import EdgeFMError
from edge_fm.pipeline import PIPELINE_BENCH
from edge_fm.runner import DEFAULTS as MEASURE

try:  # Typer >= 0.23 carries its own copy of Click
    from typer.exceptions import TyperException as _UsageError
except ImportError:  # older Typer raises Click's own exceptions
    from click.exceptions import ClickException as _UsageError

app = typer.Typer(
    name="edge-fm",
    help="Train, optimize, export and benchmark tiny Fashion-MNIST classifiers for the edge.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
data_app = typer.Typer(help="Get and inspect the Fashion-MNIST data.", no_args_is_help=True)
app.add_typer(data_app, name="data")

# soft_wrap: a long line stays one line (paths and figures are not broken) when piped.
# Piped output has no width; 160 columns keep the wide tables (bench, export) readable in logs.
_PIPE_WIDTH = None if sys.stdout.isatty() or os.environ.get("COLUMNS") else 160
console = Console(soft_wrap=True, width=_PIPE_WIDTH)
err_console = Console(stderr=True, soft_wrap=True)

DataDirOption = Annotated[
    Optional[Path],
    typer.Option("--data-dir", help="Folder of the four IDX files (default: $EDGE_FM_DATA, else the user cache)."),
]


def _command_line(command: str) -> str:
    """The command line as typed, for the records a command writes (empty when called from Python)."""
    import shlex

    return shlex.join(["edge-fm", *sys.argv[1:]]) if sys.argv[1:2] == [command] else ""


def _fails_cleanly(command):
    """Turns EdgeFMError (and Ctrl-C) into one red line and a non-zero exit."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except EdgeFMError as exc:
            _print_error(str(exc))
            raise typer.Exit(1) from None
        except OSError as exc:
            if exc.filename is None:
                raise
            # The system refused a file the library did not foresee (no space, no permission):
            # the user can fix that, so one line, not a traceback.
            _print_error(f"{exc.filename}: {(exc.strerror or str(exc)).lower()}; check the path, its permissions and free space.")
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            err_console.print("[bold red]interrupted[/]", highlight=False)
            raise typer.Exit(130) from None

    return wrapper


def _print_error(text: str) -> None:
    # Escaped: messages quote users' values, and "[16," or "[int, int]" would read as rich markup.
    err_console.print(f"[bold red]error:[/] {escape(text)}", highlight=False, soft_wrap=True)


def _show_warning(message, category, filename, lineno, file=None, line=None):
    err_console.print(f"[yellow]warning:[/] {escape(str(message))}", highlight=False, soft_wrap=True)


def _version_callback(value: bool) -> None:
    if value:
        from edge_fm import __version__

        console.print(f"edge-fm {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version_callback, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Train, optimize, export and benchmark tiny Fashion-MNIST classifiers for the edge."""
    warnings.showwarning = _show_warning


# ---------------------------------------------------------------- data


@data_app.command("fetch")
@_fails_cleanly
def data_fetch(
    data_dir: DataDirOption = None,
    url: Annotated[
        Optional[list[str]], typer.Option("--url", help="Base URL to download from instead of the official mirrors (repeatable).")
    ] = None,
) -> None:
    """Download the four original Fashion-MNIST files and verify their SHA-256.

    Example: edge-fm data fetch --data-dir ~/data/fashion-mnist
    """
    from edge_fm import data

    target = data.resolve_data_dir(data_dir)
    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TimeRemainingColumn())
    with Progress(*columns, console=err_console, transient=False) as progress:
        tasks: dict[str, Any] = {}

        def report(name: str, done: int, total: int | None) -> None:
            if name not in tasks:
                tasks[name] = progress.add_task(name, total=total)
            progress.update(tasks[name], completed=done, total=total)

        paths = data.fetch(target, base_urls=url or data.MIRRORS, progress=report)
    console.print(f"[green]verified[/] {len(paths)} files in {target}")


@data_app.command("info")
@_fails_cleanly
def data_info(
    data_dir: DataDirOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
) -> None:
    """Show where the data is, images per class and split, pixel statistics and checksums.

    Example: edge-fm data info --data-dir DATA_DIR
    """
    from edge_fm import data

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
    for name, entry in result["files"].items():
        verdict = "[green]matches the original release[/]" if entry["matches_original"] else "[yellow]differs from the original release[/]"
        console.print(f"{name}: sha256 {entry['sha256'][:16]}… {verdict}")


@data_app.command("make-sample")
@_fails_cleanly
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
    from edge_fm import data

    for path in data.make_sample(out_dir, data_dir, per_class_train, per_class_test, seed):
        console.print(str(path))


# ---------------------------------------------------------------- zoo


@app.command("zoo")
@_fails_cleanly
def zoo_table(
    show_all: Annotated[bool, typer.Option("--all", help="Include test-only architectures.")] = False,
) -> None:
    """List the architectures with their parameters, MACs per image and the paper they reproduce.

    Example: edge-fm zoo
    """
    from edge_fm.zoo import describe_model, list_models

    table = Table("architecture", "params", "MACs/image", "input", "paper acc.", "description")
    table.columns[0].no_wrap = True
    for name in list_models(include_testing=show_all):
        row = describe_model(name)
        paper_acc = f"{row['paper_accuracy']:.2%}" if row["paper_accuracy"] else "-"
        table.add_row(
            name, f"{row['params']:,}", f"{row['macs'] / 1e6:.2f} M", row["input_size"], paper_acc, row["description"]
        )
    console.print(table)


# ---------------------------------------------------------------- train and evaluate


class _RichReporter:
    """Renders training progress: live bars on a terminal, one plain line per epoch otherwise."""

    def __init__(self, out: Console):
        self.out = out
        self.progress: Progress | None = None
        self.epochs = 0

    def start(self, run_dir, config, data, steps_per_epoch, initial_epoch):
        self.epochs = config.epochs
        self.out.print(f"run [bold]{run_dir}[/]  ·  {config.arch} ({config.preset} preset)  ·  {data}")
        if initial_epoch:
            self.out.print(f"resuming after epoch {initial_epoch}")
        if self.out.is_terminal:
            self.progress = Progress(
                TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                TimeElapsedColumn(), TextColumn("{task.fields[metrics]}"), console=self.out,
            )
            self.progress.start()
            self.epoch_task = self.progress.add_task("epochs", total=config.epochs, completed=initial_epoch, metrics="")
            self.step_task = self.progress.add_task("steps", total=steps_per_epoch, metrics="")

    def step(self, step, logs):
        if self.progress:
            self.progress.update(self.step_task, completed=step, metrics=_format_logs(logs))

    def epoch(self, epoch, logs):
        if self.progress:
            self.progress.update(self.epoch_task, completed=epoch, metrics=_format_logs(logs))
            self.progress.reset(self.step_task)
        else:
            self.out.print(f"epoch {epoch}/{self.epochs}  {_format_logs(logs)}", highlight=False)

    def message(self, text):
        self.stop()
        self.out.print(text)

    def stop(self):
        if self.progress:
            self.progress.stop()
            self.progress = None


def _format_logs(logs: dict[str, float]) -> str:
    return "  ".join(f"{k} {v:.4f}" for k, v in logs.items())


@app.command("train")
@_fails_cleanly
def train_command(
    arch: Annotated[Optional[str], typer.Argument(help="Architecture (see `edge-fm zoo`); omit with --resume.")] = None,
    preset: Annotated[str, typer.Option(help="Recipe to start from: 'quick' (smoke run) or 'paper' (the paper's).")] = "quick",
    sample: Annotated[bool, typer.Option("--sample", help="Use the embedded sample instead of the full dataset.")] = False,
    data_dir: DataDirOption = None,
    epochs: Annotated[Optional[int], typer.Option(help="Maximum epochs.")] = None,
    batch_size: Annotated[Optional[int], typer.Option(help="Images per step.")] = None,
    lr: Annotated[Optional[float], typer.Option("--lr", help="Peak learning rate.")] = None,
    optimizer: Annotated[Optional[str], typer.Option(help="adam, adamw or sgd.")] = None,
    schedule: Annotated[Optional[str], typer.Option(help="constant, exponential, cyclical, cosine or onecycle.")] = None,
    augment: Annotated[Optional[str], typer.Option(help="Comma list of crop, flip, affine, erasing ('' for none).")] = None,
    val_size: Annotated[Optional[int], typer.Option(help="Validation images carved from the training split.")] = None,
    early_stopping: Annotated[Optional[int], typer.Option(help="Patience in epochs (0: off).")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Seed of split, initialisation and shuffling.")] = None,
    teacher: Annotated[
        Optional[Path], typer.Option(help="Distil from this finished train run (same split); see --set distill_weight, distill_temperature.")
    ] = None,
    settings: Annotated[
        Optional[list[str]], typer.Option("--set", help="Any config field as key=value (repeatable), e.g. --set label_smoothing=0.1.")
    ] = None,
    arch_options: Annotated[
        Optional[list[str]], typer.Option("--arch-opt", help="Architecture option as key=value (repeatable), e.g. --arch-opt alpha=0.5.")
    ] = None,
    runs_dir: Annotated[Path, typer.Option(help="Where run directories are created.")] = Path("runs"),
    resume: Annotated[Optional[Path], typer.Option(help="Continue this interrupted run directory.")] = None,
    distribute: Annotated[
        Optional[str], typer.Option(help="auto (mirrored over 2+ GPUs, else one device), none, mirrored, or multi-worker "
                                         "(cluster from $TF_CONFIG); --batch-size is then the global batch.")
    ] = None,
) -> None:
    """Train an architecture and print its metrics; writes a new run directory.

    Example: edge-fm train cnn-2conv --preset paper --data-dir DATA_DIR --distribute mirrored
    """
    from edge_fm import config as config_lib
    from edge_fm.train import config_for, resume as resume_run, train

    reporter = _RichReporter(console)
    try:
        if resume is not None:
            run_dir = resume_run(resume, data_dir, reporter=reporter, distribute=distribute)
        else:
            if not arch:
                raise EdgeFMError("name an architecture (see `edge-fm zoo`), or pass --resume RUN_DIR.")
            overrides = config_lib.parse_overrides(config_lib.TrainConfig, settings or [])
            given = {
                "epochs": epochs, "batch_size": batch_size, "learning_rate": lr, "optimizer": optimizer,
                "schedule": schedule, "val_size": val_size, "early_stopping": early_stopping, "seed": seed,
                "augment": None if augment is None else config_lib.parse_value(augment, tuple_field=True),
                "teacher": None if teacher is None else str(teacher), "distribute": distribute,
            }
            overrides.update({k: v for k, v in given.items() if v is not None})
            if sample:
                overrides["data"] = "sample"
            overrides["arch_options"] = config_lib.parse_arch_options(arch_options or [])
            config = config_for(arch, preset, **overrides)
            run_dir = train(config, data_dir, runs_dir, reporter=reporter)
    except KeyboardInterrupt:
        reporter.stop()
        err_console.print("[bold red]interrupted:[/] continue with `edge-fm train --resume RUN_DIR` (the run printed above).")
        raise typer.Exit(130) from None
    finally:
        reporter.stop()
    if run_dir is None:  # a multi-worker worker other than the chief
        console.print("done: this worker is not the chief; the chief (the first worker) wrote the run directory.")
        return
    _print_metrics(json.loads((run_dir / "metrics.json").read_text()), run_dir)


def _print_metrics(metrics: dict, run_dir: Path) -> None:
    from edge_fm.report import epochs_text

    key = "test" if "test" in metrics else "sample_test"
    scores = metrics[key]
    where = "test split" if key == "test" else "embedded sample (held-out images; NOT test-set accuracy)"
    console.print(
        f"[bold]{metrics['arch']}[/]: accuracy [bold green]{scores['accuracy']:.2%}[/] on the {where}, "
        f"loss {scores['loss']:.4f}, macro F1 {scores['macro_f1']:.4f}; validation accuracy {metrics['val']['accuracy']:.2%}",
        highlight=False,
    )
    _print_per_class(scores)
    console.print(
        f"{epochs_text(metrics['epochs_run'])} in {metrics['training_seconds']:.1f} s on {metrics['device']}; "
        f"{metrics['params']:,} params, {metrics['macs'] / 1e6:.2f} M MACs/image",
        highlight=False,
    )
    console.print(f"run directory: [bold]{run_dir}[/]")


def _print_per_class(scores: dict) -> None:
    table = Table("class", "precision", "recall", "F1", "images")
    for name, row in scores["per_class"].items():
        table.add_row(name, f"{row['precision']:.3f}", f"{row['recall']:.3f}", f"{row['f1']:.3f}", str(row["support"]))
    console.print(table)


@app.command("evaluate")
@_fails_cleanly
def evaluate_command(
    run_dir: Annotated[Path, typer.Argument(help="A finished training run directory.")],
    data_dir: DataDirOption = None,
    split: Annotated[str, typer.Option(help="'test' or 'val'.")] = "test",
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Also write the metrics to this JSON file.")] = None,
) -> None:
    """Score a run's model on the test (or validation) split.

    Example: edge-fm evaluate runs/cnn-2conv-train-1
    """
    from edge_fm.evaluate import evaluate_run
    from edge_fm.io import check_output_file, write_json

    if json_out:
        check_output_file(json_out, "--json")
    result = evaluate_run(run_dir, data_dir, split)
    console.print(
        f"accuracy [bold green]{result['accuracy']:.2%}[/] on {result['split']} ({result['examples']} images; {result['data']}), "
        f"loss {result['loss']:.4f}, macro F1 {result['macro_f1']:.4f}",
        highlight=False,
    )
    _print_per_class(result)
    if json_out:
        write_json(json_out, result)


# ---------------------------------------------------------------- optimize, export, predict


@app.command("optimize")
@_fails_cleanly
def optimize_command(
    run_dir: Annotated[Optional[Path], typer.Argument(help="A finished training (or pruning) run; omit with --resume.")] = None,
    prune: Annotated[Optional[float], typer.Option(help="Magnitude-prune to this sparsity (0-1), e.g. 0.5.")] = None,
    qat: Annotated[bool, typer.Option("--qat", help="Quantization-aware int8 fine-tuning (pruning-preserving after --prune).")] = False,
    prune_all: Annotated[bool, typer.Option("--prune-all", help="Also prune the first and last layers (kept dense by default).")] = False,
    fold_bn: Annotated[
        bool, typer.Option("--fold-bn/--no-fold-bn", help="QAT: fold batch norms that feed a Dense into it first, so QAT trains the shipped weights.")
    ] = True,
    epochs: Annotated[Optional[int], typer.Option(help="Fine-tuning epochs of each step (default 4).")] = None,
    lr: Annotated[Optional[float], typer.Option("--lr", help="Peak fine-tuning learning rate (default: the parent's / 10).")] = None,
    settings: Annotated[
        Optional[list[str]], typer.Option("--set", help="Any fine-tuning config field as key=value (repeatable).")
    ] = None,
    data_dir: DataDirOption = None,
    runs_dir: Annotated[Path, typer.Option(help="Where run directories are created.")] = Path("runs"),
    resume: Annotated[Optional[Path], typer.Option(help="Continue this interrupted optimization run.")] = None,
) -> None:
    """Prune and/or quantization-aware-train a run; each step writes a new run directory.

    Example: edge-fm optimize runs/cnn-2conv-train-1 --prune 0.5 --qat
    """
    from edge_fm import config as config_lib
    from edge_fm.optimize import OptimizeConfig, optimize, resume_optimize

    reporter = _RichReporter(console)
    try:
        if resume is not None:
            _print_step(resume_optimize(resume, data_dir, reporter=reporter))
            return
        if run_dir is None:
            raise EdgeFMError("name a run directory to optimize, or pass --resume RUN_DIR.")
        if prune is None and not qat:
            raise EdgeFMError("nothing to do: pass --prune SPARSITY, --qat, or both.")
        fine_tune = config_lib.parse_overrides(config_lib.TrainConfig, settings or [])
        fine_tune.update({k: v for k, v in {"epochs": epochs, "learning_rate": lr}.items() if v is not None})
        parent = run_dir
        if prune is not None:
            step = OptimizeConfig("prune", str(parent), target_sparsity=prune, keep_first_last=not prune_all, fine_tune=fine_tune)
            parent = optimize(step, data_dir, runs_dir, reporter=reporter)
            reporter.stop()
            _print_step(parent)
        if qat:
            step = OptimizeConfig("qat", str(parent), fold_batch_norms=fold_bn, fine_tune=fine_tune)
            parent = optimize(step, data_dir, runs_dir, reporter=reporter)
            reporter.stop()
            _print_step(parent)
    finally:
        reporter.stop()


def _print_step(run_dir: Path) -> None:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    key = "test" if "test" in metrics else "sample_test"
    where = "test" if key == "test" else "sample (NOT test-set)"
    parent = metrics["parent_scores"]
    console.print(
        f"[bold]{metrics['stage']}[/] {run_dir}: val {metrics['val']['accuracy']:.2%} (parent {parent['val_accuracy']:.2%}), "
        f"{where} {metrics[key]['accuracy']:.2%} (parent {parent[key + '_accuracy']:.2%}), "
        f"weight sparsity {metrics['sparsity']['overall']:.1%}",
        highlight=False,
    )
    layers = metrics["sparsity"]["layers"]
    if metrics["stage"] != "qat" and layers:
        console.print("  per layer: " + ", ".join(f"{name} {value:.0%}" for name, value in layers.items()), highlight=False)


@app.command("export")
@_fails_cleanly
def export_command(
    run_dir: Annotated[Path, typer.Argument(help="A finished training or optimization run; with --for mobile or mcu also an int8 export bundle or .tflite (e.g. models/edge-cnn-tiny).")],
    formats: Annotated[
        Optional[list[str]], typer.Option("--format", "-f", help="fp32, fp16, dynamic, int8, int8-per-tensor, int16x8 or qat-int8 (repeatable); omit it for a bundle.")
    ] = None,
    io_dtype: Annotated[Optional[str], typer.Option(help="Input/output dtype of integer formats: int8, uint8 or float32 (int16x8: int16 or float32).")] = None,
    representative: Annotated[int, typer.Option("--calibration", "--representative", min=1, help="Calibration images of integer formats, drawn from the training images of the run's dataset.")] = 500,
    calibration_dir: Annotated[Optional[Path], typer.Option(help="Calibrate integer formats on the images of this folder (up to --calibration of them) instead of training images.")] = None,
    data_dir: DataDirOption = None,
    runs_dir: Annotated[Path, typer.Option(help="Where bundle directories are created.")] = Path("runs"),
    target: Annotated[
        str, typer.Option("--for", help="none; mobile (uint8 RGB input, standard metadata); mcu (TFLM firmware files, checked under TFLM); ethos-u (compiled by Arm's Vela with its estimate; needs --accelerator-config).")
    ] = "none",
    out: Annotated[Optional[Path], typer.Option(help="With --for mobile, mcu or ethos-u: the bundle folder to create (default: a new RUNS_DIR/<name>-<form>-N).")] = None,
    parity_images: Annotated[int, typer.Option(help="Images the parity checks run on (mobile: test images against the int8 artifact; mcu: test images under TFLM against LiteRT's reference kernels).")] = 1000,
    c_array: Annotated[str, typer.Option("--c-array", help="With --for mcu: 'source' puts the model's C array in firmware/; 'script' puts there a Python script that writes it from model.tflite at build time (the array is ~6x the model's size).")] = "source",
    accelerator_config: Annotated[Optional[str], typer.Option("--accelerator-config", help="With --for ethos-u: the Ethos-U configuration Vela compiles for, e.g. ethos-u55-128 or ethos-u65-256.")] = None,
) -> None:
    """Export a run as TFLite bundles (model.tflite, labels.txt, model.json) after a parity check.

    Example: edge-fm export runs/cnn-2conv-qat-1 --format qat-int8 --io-dtype uint8
    Example: edge-fm export runs/cnn-2conv-train-1 -f int8-per-tensor -f int16x8 --calibration 1000
    Example: edge-fm export runs/cnn-2conv-train-1 -f int8 --for mcu
    Example: edge-fm export models/cnn-3conv-bn --for mcu --c-array script --out cnn-3conv-bn-mcu
    Example: edge-fm export models/edge-cnn-tiny --for mobile --out edge-cnn-tiny-mobile
    Example: edge-fm export models/edge-cnn-tiny --for ethos-u --accelerator-config ethos-u55-128
    """
    from edge_fm.errors import unknown_choice
    from edge_fm.export import get_format

    for name in formats or []:
        get_format(name)  # every name checked before any work
    if target not in EXPORT_TARGETS:
        raise unknown_choice("--for target", target, EXPORT_TARGETS)
    if not formats and target == "none":
        raise EdgeFMError("give a format to export (e.g. -f int8); only --for mobile, mcu or ethos-u take a bundle without one.")
    if out is not None and (target == "none" or len(formats or []) > 1):
        raise EdgeFMError("--out names one bundle of the mobile, mcu or ethos-u form: use it with --for and at most one format.")
    if c_array != "source" and target != "mcu":
        raise EdgeFMError("--c-array is for the microcontroller form: use it with --for mcu, or drop it.")
    if (accelerator_config is not None) != (target == "ethos-u"):
        raise EdgeFMError("--for ethos-u and --accelerator-config go together (e.g. --for ethos-u --accelerator-config ethos-u55-128).")
    if target == "ethos-u":
        from edge_fm.vela import get_config

        get_config(accelerator_config)  # an unknown config is refused before any work
    if calibration_dir is not None and (target != "none" or not all(get_format(name).integer for name in formats or [])):
        raise EdgeFMError("--calibration-dir calibrates integer formats of a plain export (-f int8, int8-per-tensor, int16x8): "
                          "drop it, or export only integer formats without --for.")
    if calibration_dir is not None:
        from edge_fm.calibration import folder_images

        folder_images(calibration_dir, 1)  # a folder without images is refused before any work
    if target != "none" and io_dtype is not None:
        raise EdgeFMError(f"--io-dtype is for plain exports: the {target} form fixes its own (mobile: uint8 RGB, mcu: int8); drop it.")
    table = Table("format", "bundle", "KB", "gzip KB", "int-only", "parity", "ops")
    failures, form_lines = [], []
    for name in formats or [None]:
        try:
            bundle = _export_for(target, run_dir, name, io_dtype, representative, runs_dir, data_dir, out, parity_images,
                                 c_array, accelerator_config, calibration_dir)
        except EdgeFMError as exc:
            failures.append(str(exc))
            _print_error(str(exc))
            continue
        description = json.loads((bundle / "model.json").read_text())
        if "mobile" in description:
            form_lines.append(_mobile_line(bundle, description["mobile"]))
            continue
        if "ethos_u" in description:
            form_lines.append(_ethos_u_line(bundle, description["ethos_u"]))
            continue
        artifact, report = description["artifact"], description.get("export")
        if report and "parity" in report:  # a bare .tflite given for --for mcu has no export record
            parity = report["parity"]
            table.add_row(
                name or description.get("format", ""), str(bundle), f"{artifact['bytes'] / 1024:.1f}",
                f"{artifact['gzip_bytes'] / 1024:.1f}", "yes" if report["integer_only"] else "no",
                f"agree {parity['agreement']:.1%}, acc {parity['tflite_accuracy']:.1%} vs {parity['keras_accuracy']:.1%}",
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


EXPORT_TARGETS = ("none", "mobile", "mcu", "ethos-u")


def _export_for(target: str, run_dir: Path, name: str | None, io_dtype, representative: int, runs_dir: Path, data_dir,
                out: Path | None = None, parity_images: int = 1000, c_array: str = "source",
                accelerator_config: str | None = None, calibration_dir: Path | None = None) -> Path:
    """One export of ``edge-fm export``, in the form ``--for`` names."""
    if target == "ethos-u":
        from edge_fm.export import export
        from edge_fm.vela import export_ethos_u

        source = export(run_dir, name, None, representative, parity_images, runs_dir, data_dir) if name else run_dir
        return export_ethos_u(source, accelerator_config, out, runs_dir)
    if target == "mobile":
        from edge_fm.mobile import export_mobile

        return export_mobile(run_dir, name, representative, parity_images, runs_dir, data_dir, out)
    if target == "mcu":
        from edge_fm.mcu import export_mcu

        return export_mcu(run_dir, name, out=out, runs_dir=runs_dir, data_dir=data_dir, images=parity_images,
                          representative_size=representative, parity_images=parity_images, c_array_mode=c_array)
    from edge_fm.export import export

    return export(run_dir, name, io_dtype, representative, parity_images, runs_dir=runs_dir, data_dir=data_dir,
                  calibration_dir=calibration_dir)


def _mobile_line(bundle: Path, record: dict) -> str:
    parity = record["parity"]
    same = "identical outputs" if parity["identical_to_int8"] else f"top-1 agreement {parity['top1_agreement']:.2%}"
    return (f"{bundle}: uint8 RGB input, standard metadata; {same} to the int8 artifact on {parity['images']:,} grey test "
            f"images (accuracy {parity['mobile_accuracy']:.2%}); luma {record['grey_conversion']['method']}")


def _ethos_u_line(bundle: Path, record: dict) -> str:
    from edge_fm.vela import VelaReport, cpu_ops_text

    fields = {f: record[f] for f in VelaReport.__dataclass_fields__}
    report = VelaReport(**{**fields, "cpu_ops": tuple(fields["cpu_ops"])})
    return (f"{bundle}: compiled by Vela {report.vela_version} for {report.config} ({report.system_config}, "
            f"{report.clock_hz / 1e6:.0f} MHz): SRAM {report.sram_bytes / 1024:.1f} KiB, {report.weights_storage} "
            f"{report.off_chip_bytes / 1024:.1f} KiB; {cpu_ops_text(report)}; {report.cycles:,} cycles, "
            f"{report.inferences_per_second:,.0f} inferences/s (estimate, not measured); model_vela.tflite is for "
            "TFLM's Ethos-U delegate")


def _mcu_line(bundle: Path, record: dict) -> str:
    fits = ", ".join(fit["board"] for fit in record["fits_on"] if fit["fits"]) or "none of the boards checked"
    return (f"{bundle}: runs under TFLM {record['tflite_micro_version']}; arena {record['arena_bytes']:,} B "
            f"({record['arena']['min_bytes']:,} B found + margin), flash {record['flash_bytes']:,} B; top-1 agreement with "
            f"LiteRT's reference kernels {record['agreement_with_litert_reference']:.2%} and accuracy "
            f"{record['accuracy']:.2%} on {record['checked_on']['images']} test images; model and arena fit: {fits} "
            f"(firmware needs room too); firmware files in {bundle / 'firmware'}"
            + (f"; write the model's C array with `python3 {bundle / script}` before building"
               if (script := record["firmware"].get("model_data_script")) else ""))


@app.command("predict")
@_fails_cleanly
def predict_command(
    artifact: Annotated[Path, typer.Argument(help="A .tflite file or an export bundle directory.")],
    images: Annotated[list[Path], typer.Argument(help="Image files (PNG, JPEG; any size, colour or grey).")],
    top: Annotated[int, typer.Option(min=1, max=10, help="Classes shown per image.")] = 3,
) -> None:
    """Classify image files with an exported artifact and print the top classes.

    Example: edge-fm predict models/edge-cnn/model.tflite shoe.jpg shirt.png
    """
    from edge_fm.predict import classify_files

    failed = 0
    for result in classify_files(artifact, images, top):
        if result.error:
            failed += 1
            _print_error(result.error)
            continue
        classes = ", ".join(f"{name} {p:.1%}" for name, p in result.top)
        note = " (light background, inverted)" if result.inverted else ""
        console.print(f"{result.path}: [bold]{classes}[/]{note}", highlight=False)
    if failed:
        raise typer.Exit(1)


@app.command("inspect")
@_fails_cleanly
def inspect_command(
    artifact: Annotated[Path, typer.Argument(help="A .tflite file or an export bundle (e.g. models/edge-cnn-tiny).")],
    source: Annotated[Optional[Path], typer.Option("--source", help="The float run the artifact was exported from (default: the one its model.json names, if it is here).")] = None,
    keep_float: Annotated[Optional[str], typer.Option("--keep-float", help="Op kinds or layer tensors to keep in float, comma-separated (e.g. CONV_2D): writes the mixed artifact and what it buys.")] = None,
    images: Annotated[int, typer.Option(min=1, help="Validation images the quantization debugger runs on.")] = 200,
    calibration: Annotated[Optional[int], typer.Option(min=1, help="Calibration images, as the export drew them (default: the exporter's 500).")] = None,
    runtimes: Annotated[str, typer.Option(help="Runtimes to ask, comma-separated: cpu, gpu, ethos-u, tflm ('none' for none).")] = "cpu,gpu,ethos-u,tflm",
    accelerator_config: Annotated[Optional[list[str]], typer.Option("--accelerator-config", help="Ethos-U configuration Vela estimates (repeatable; default ethos-u55-128 and ethos-u65-256).")] = None,
    out: Annotated[Optional[Path], typer.Option(help="With --keep-float: the mixed bundle's folder (default: a new RUNS_DIR/<name>-mixed-N).")] = None,
    runs_dir: Annotated[Path, typer.Option(help="Where the --keep-float bundle is created.")] = Path("runs"),
    as_json: Annotated[bool, typer.Option("--json", help="Print the whole report as JSON instead of tables.")] = False,
    data_dir: DataDirOption = None,
) -> None:
    """Per op: kind, shapes, MACs, quantization; the layers quantization hurts most; what each runtime runs.

    The layer-wise error (TensorFlow's QuantizationDebugger on validation images) needs the float source
    run; without it the rest is still reported. Ethos-U figures are Vela's estimates.

    Example: edge-fm inspect models/edge-cnn-tiny
    Example: edge-fm inspect runs/cnn-2conv-int8-1 --keep-float FULLY_CONNECTED --json
    """
    from edge_fm.inspection import inspect_artifact
    from edge_fm.runtimes import RUNTIMES

    from edge_fm.errors import unknown_choice

    asked = [] if runtimes.strip() in ("", "none") else [name.strip() for name in runtimes.split(",") if name.strip()]
    for name in asked:
        if name not in RUNTIMES:
            raise unknown_choice("runtime", name, RUNTIMES)
    if accelerator_config:
        from edge_fm.vela import get_config

        for name in accelerator_config:
            get_config(name)
    kept = [name.strip() for name in (keep_float or "").split(",") if name.strip()]
    if keep_float is not None and not kept:
        raise EdgeFMError("--keep-float: name at least one op kind or layer tensor, e.g. --keep-float CONV_2D.")
    status = console.status("inspecting") if not as_json else None
    with status or _nullcontext():
        report = inspect_artifact(artifact, source, data_dir, images, calibration, kept, out, runs_dir, asked,
                                  accelerator_config, progress=(lambda line: status.update(line)) if status else None)
    if as_json:
        console.print_json(json.dumps(report, default=str))
        return
    print_inspection(report)


def _nullcontext():
    import contextlib

    return contextlib.nullcontext()


def print_inspection(report: dict) -> None:
    """The inspection's tables: op kinds, ops, the worst-quantized layers, the runtimes, --keep-float."""
    art, summary = report["artifact"], report["summary"]
    console.print(f"[bold]{escape(art['name'])}[/] ({art.get('format') or 'unknown format'}): {art['bytes'] / 1024:.1f} KB, "
                  f"{summary['ops']} ops, {summary['params']:,} parameters, {summary['macs'] / 1e6:.2f} M MACs; "
                  f"{summary['quantization']}", highlight=False)
    table = Table("op kind", "count", "MACs", "share", "params", "weights", "activations", title="ops by kind")
    for kind in report["kinds"]:
        table.add_row(kind["op"], str(kind["count"]), f"{kind['macs'] / 1e6:.3f} M", f"{kind['macs_share']:.1%}",
                      f"{kind['params']:,}", ", ".join(kind["schemes"]) or "-", ", ".join(kind["activations"]))
    console.print(table)
    table = Table("#", "op", "output", "MACs", "share", "weights (scales)", "output scale", "layer", title="ops")
    for op in report["ops"]:
        weights = op["weights"]
        scales = (f"{weights['scheme']} ({weights['scales']}; {weights['scale_min']:.2e}-{weights['scale_max']:.2e})"
                  if weights else (op["weights_dtype"] or "-"))
        act = op["activations"]
        table.add_row(str(op["index"]), op["op"], "x".join(map(str, op["output_shape"])), f"{op['macs']:,}",
                      f"{op['macs_share']:.1%}", scales, f"{act['dtype']} {act['scale']:.3g}" if act and act["scales"] == 1 and "scale" in act
                      else (f"{act['dtype']} {act['scale_min']:.3g}" if act else op["activations_dtype"]), escape(op["name"][:60]))
    console.print(table)
    errors = report.get("errors", {})
    if errors.get("status") == "measured":
        table = Table("rank", "op", "RMSE (steps)", "max |err| (steps)", "bias (steps)", "layer",
                      title=f"layers that lose most to {errors['format']} ({errors['images']} validation images)")
        for rank, layer in enumerate(errors["layers"][:10], 1):
            table.add_row(str(rank), layer["op"], f"{layer['rmse_per_scale']:.3f}", f"{layer['max_abs_error_per_scale']:.2f}",
                          f"{layer['mean_error_per_scale']:+.3f}", escape(layer["tensor"][:70]))
        console.print(table)
        console.print(f"{errors['note']}; rounding alone gives {errors['rounding_rmse']:.2f} steps RMSE. "
                      f"{errors['how']}, source run {errors['source_run']}.", highlight=False)
    elif errors:
        console.print(f"[yellow]layer-wise error not measured:[/] {escape(errors['reason'])}", highlight=False)
    if rows := report.get("runs_on"):
        table = Table("runtime", "what runs", "how", title="what each runtime runs")
        for row in rows:
            table.add_row(row["runtime"], escape(row["answer"]), row["how"])
        console.print(table)
    if kept := report.get("keep_float"):
        q, m = kept["quantized"], kept["mixed"]
        console.print(
            f"keeping {', '.join(kept['kept_float_ops'] + kept['kept_float_layers'])} in float: accuracy "
            f"{q['accuracy']:.2%} -> {m['accuracy']:.2%} ({kept['accuracy_gain'] * 100:+.2f} pt; Keras {kept['keras_accuracy']:.2%}) "
            f"on {kept['images']} validation images, size {q['bytes'] / 1024:.1f} -> {m['bytes'] / 1024:.1f} KB, "
            f"p50 {q['p50_ms']:.3f} -> {m['p50_ms']:.3f} ms; mixed artifact: [bold]{escape(kept['bundle'])}[/]",
            highlight=False)


# ---------------------------------------------------------------- report, explain, serve


@app.command("report")
@_fails_cleanly
def report_command(
    target: Annotated[Path, typer.Argument(help="A run, an export bundle, a pipeline run, a bench result JSON or a folder of bundles.")],
    out: Annotated[Optional[Path], typer.Option("--out", help="The HTML file (default: report.html inside the target folder).")] = None,
    data_dir: DataDirOption = None,
    sample: Annotated[bool, typer.Option("--sample", help="Score a bundle without its run on the embedded sample.")] = False,
    images: Annotated[int, typer.Option("--images", help="Images scored at most (a report takes seconds).")] = 2000,
    explained: Annotated[int, typer.Option("--explained", help="Images explained, one per class (0-10).")] = 10,
    bench: Annotated[Optional[Path], typer.Option("--bench", help="Bench result JSON with a folder's measured figures.")] = None,
) -> None:
    """Write one self-contained HTML page of what a model does: curves, confusion, gallery, Grad-CAM vs occlusion.

    Example: edge-fm report runs/cnn-2conv-pipeline-1
    Example: edge-fm report models/ --out models-report.html
    """
    from edge_fm.html_report import ReportOptions, build_report

    options = ReportOptions(data_dir, sample, images, explained, bench)
    with console.status("writing the report") as status:
        path = build_report(target, out, options, progress=lambda message: status.update(message))
    console.print(f"report: [bold]{path}[/]", highlight=False)


@app.command("explain")
@_fails_cleanly
def explain_command(
    model: Annotated[Path, typer.Argument(help="A training run (Grad-CAM), or a .tflite file or bundle (occlusion).")],
    images: Annotated[list[Path], typer.Argument(help="Image files (PNG, JPEG; any size, colour or grey).")],
    out: Annotated[Path, typer.Option("--out", help="Folder for the heat-map overlays (PNG).")] = Path("explanations"),
    top: Annotated[int, typer.Option(min=1, max=10, help="Classes shown per image.")] = 3,
) -> None:
    """Write a heat map of where the model looks, per image, and print its top classes.

    Example: edge-fm explain models/edge-cnn shoe.jpg shirt.png --out explained/
    """
    from edge_fm.explain import explain_files

    failed = 0
    for result in explain_files(model, images, out, top):
        if result.error:
            failed += 1
            _print_error(result.error)
            continue
        classes = ", ".join(f"{name} {p:.1%}" for name, p in result.top)
        console.print(f"{result.image}: [bold]{classes}[/]  {result.method}: {result.overlay}", highlight=False)
    if failed:
        raise typer.Exit(1)


@app.command("serve")
@_fails_cleanly
def serve_command(
    path: Annotated[Path, typer.Argument(help="A bundle, a .tflite file or a folder of bundles.")] = Path("models"),
    host: Annotated[str, typer.Option(help="Address to bind; other than 127.0.0.1 needs --expose.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8050,
    expose: Annotated[bool, typer.Option("--expose", help="Confirm serving beyond this machine (no authentication).")] = False,
    max_upload_mb: Annotated[float, typer.Option(help="Largest image file accepted, in MB.")] = 4.0,
    bench: Annotated[Optional[Path], typer.Option(help="Bench result JSON with the models' measured figures.")] = None,
) -> None:
    """Serve a web demo: upload an image, see the class probabilities, the heat map, every model's answer.

    Needs the demo extra: pip install 'edge-fm\\[demo]'.
    Example: edge-fm serve models/ --port 8050
    """
    from edge_fm.serve import ServeConfig, serve_in_fresh_process

    serve_in_fresh_process(ServeConfig(path, host, port, expose, max_upload_mb, bench))


# ---------------------------------------------------------------- bench and pipeline


def _bench_options(threads: str, runs: int, min_seconds: float, max_seconds: float, warmup: int):
    from edge_fm.bench import BenchOptions, parse_threads

    return BenchOptions(threads=parse_threads(threads), runs=runs, min_seconds=min_seconds, max_seconds=max_seconds, warmup=warmup)


def _target(target: str, ssh_key: Optional[Path], ssh_option: Optional[list[str]], remote_python: str, ssh_timeout: int,
            tflm_images: Optional[int] = None):
    from edge_fm.bench import parse_target

    return parse_target(target, identity=str(ssh_key) if ssh_key else None, ssh_options=tuple(ssh_option or ()),
                        python=remote_python, connect_timeout=ssh_timeout, tflm_images=tflm_images)


def print_bench_table(result: dict, title: str | None = None) -> None:
    """The benchmark table: one row per artifact and thread count."""
    from edge_fm.bench import flat_row

    if result["target"] == "tflm":
        return print_tflm_table(result, title)
    if result["target"].startswith("vela:"):
        return print_vela_table(result, title)

    table = Table("artifact", "format", "thr", "KB", "gzip KB", "accuracy", "Δ acc", "p50 ms", "p90 ms", "img/s", "peak MB",
                  "status", title=title)
    for row in map(flat_row, result["rows"]):
        ok = row.get("status") == "ok"
        delta = row.get("accuracy_delta")
        table.add_row(
            row["artifact"], row.get("format") or "?", str(row.get("threads", "")),
            f"{row['bytes'] / 1024:.1f}" if "bytes" in row else "-",
            f"{row['gzip_bytes'] / 1024:.1f}" if "gzip_bytes" in row else "-",
            f"{row['accuracy']:.2%}" if ok else "-",
            f"{delta * 100:+.2f} pt" if delta is not None else "-",
            f"{row['p50_ms']:.3f}" if ok else "-", f"{row['p90_ms']:.3f}" if ok else "-",
            f"{row['images_per_second']:.0f}" if ok else "-",
            f"{row['peak_rss_mb']:.0f}" if ok and row.get("peak_rss_mb") else "-",
            "[green]ok[/]" if ok else f"[red]error: {row.get('error')}[/]",
        )
    console.print(table)
    env = result["environment"]
    console.print(
        f"target {result['target']}: {env.get('cpu')} ({env.get('machine')}, {env.get('os')}), "
        f"{env.get('interpreter')} {env.get('interpreter_version')}, Python {env.get('python')}; "
        f"accuracy on {result['test_set']['source']}; Δ against {result['reference'] or 'no float reference'}",
        highlight=False,
    )


def print_tflm_table(result: dict, title: str | None = None) -> None:
    """The TFLM benchmark table: accuracy, agreement, arena and flash; latency left empty on purpose."""
    table = Table("artifact", "format", "flash KB", "arena KB", "images", "accuracy", "agree w/ LiteRT ref", "latency",
                  "status", title=title)
    for row in result["rows"]:
        ok = row.get("status") == "ok"
        table.add_row(
            row["artifact"], row.get("format") or "?", f"{row['bytes'] / 1024:.1f}" if "bytes" in row else "-",
            f"{row['arena_bytes'] / 1024:.1f}" if row.get("arena_bytes") else "-", str(row.get("examples") or "-"),
            f"{row['accuracy']:.2%}" if ok else "-",
            f"{row['agreement_with_litert_reference']:.2%}" if row.get("agreement_with_litert_reference") is not None else "-",
            "-",
            "[green]ok[/]" if ok else f"[red]error: {escape(str(row.get('error')))}[/]",
        )
    console.print(table)
    env = result["environment"]
    console.print(
        f"target tflm: {env.get('interpreter')} {env.get('interpreter_version')} on {env.get('machine')} "
        f"({env.get('os')}), against {env.get('reference')}; first {env.get('images_per_artifact')} images of "
        f"{result['test_set']['source']}; arena = smallest that ran here + margin. Latency: {env.get('latency')}.",
        highlight=False,
    )


def print_vela_table(result: dict, title: str | None = None) -> None:
    """The Ethos-U estimate table (Vela): memory, placement, cycles; every figure an estimate."""
    table = Table("artifact", "format", "SRAM KB", "off-chip KB", "NPU ops", "CPU ops", "MACs", "cycles", "inf/s (est.)",
                  "ms (est.)", "status", title=title)
    for row in result["rows"]:
        ok = row.get("status") == "ok"
        cpu = ", ".join(op["op"] for op in row.get("cpu_ops", [])) or "0"
        table.add_row(
            row["artifact"], row.get("format") or "?", f"{row['sram_bytes'] / 1024:.1f}" if ok else "-",
            f"{row['off_chip_bytes'] / 1024:.1f}" if ok else "-", str(row["npu_ops"]) if ok else "-", cpu if ok else "-",
            f"{row['macs'] / 1e6:.2f} M" if ok else "-", f"{row['cycles']:,}" if ok else "-",
            f"{row['inferences_per_second']:.0f}" if ok else "-", f"{row['inference_ms']:.3f}" if ok else "-",
            "[green]ok[/]" if ok else f"[red]error: {escape(str(row.get('error')))}[/]",
        )
    console.print(table)
    env = result["environment"]
    first = next((row for row in result["rows"] if row.get("status") == "ok"), None)
    clock = f" at {first['clock_hz'] / 1e6:.0f} MHz ({first['system_config']}, {first['memory_mode']})" if first else ""
    console.print(f"target {result['target']}{clock}: ethos-u-vela {env.get('interpreter_version')}; {env.get('note')}.",
                  highlight=False)


@app.command("bench")
@_fails_cleanly
def bench_command(
    artifacts: Annotated[list[Path], typer.Argument(help=".tflite files, export bundles, or folders of them (e.g. models/).")],
    target: Annotated[Optional[list[str]], typer.Option(help="`local`, `ssh://user@host[:port]` (a Raspberry Pi, say), `tflm` (TensorFlow Lite for Microcontrollers here: accuracy, arena, flash; no latency), or `vela:ethos-u55-128` (Arm Vela's Ethos-U estimate: memory, NPU/CPU ops, cycles; needs the npu extra). Repeat it to measure on several devices at once, one benchmark per device at a time.")] = None,
    compare: Annotated[bool, typer.Option("--compare", help="With several --target: also print artifacts x devices (p50 and accuracy).")] = False,
    tflm_images: Annotated[Optional[int], typer.Option(help="With --target tflm: test images per artifact (TFLM here takes up to ~70 ms an image; default 1000).")] = None,
    threads: Annotated[str, typer.Option(help="Interpreter thread counts, comma-separated.")] = MEASURE.threads,
    runs: Annotated[int, typer.Option(help="Minimum timed batch-1 runs per artifact.")] = MEASURE.runs,
    min_seconds: Annotated[float, typer.Option(help="Minimum timed seconds per artifact.")] = MEASURE.min_seconds,
    max_seconds: Annotated[float, typer.Option(help="Stop timing an artifact after this long.")] = MEASURE.max_seconds,
    warmup: Annotated[int, typer.Option(help="Untimed runs before timing.")] = MEASURE.warmup,
    baseline: Annotated[Optional[Path], typer.Option(help="Also measure this run's Keras model through TensorFlow (local).")] = None,
    min_accuracy: Annotated[Optional[float], typer.Option(help="Fail (exit 1) if any artifact is below this accuracy (0-1).")] = None,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Write the full result here.")] = None,
    csv_out: Annotated[Optional[Path], typer.Option("--csv", help="Write the table here as CSV.")] = None,
    sample: Annotated[bool, typer.Option("--sample", help="Score on the embedded sample (not the test set).")] = False,
    data_dir: DataDirOption = None,
    ssh_key: Annotated[Optional[Path], typer.Option(help="Private key for the SSH target.")] = None,
    ssh_option: Annotated[Optional[list[str]], typer.Option(help="Extra ssh -o option, e.g. UserKnownHostsFile=kh (repeatable).")] = None,
    remote_python: Annotated[str, typer.Option(help="Python command on the SSH host.")] = "python3",
    ssh_timeout: Annotated[int, typer.Option(help="SSH connect timeout in seconds.")] = 10,
    plot: Annotated[Optional[Path], typer.Option(help="Draw accuracy against size and latency (PNG) here.")] = None,
) -> None:
    """Measure accuracy, size, latency and memory of TFLite artifacts, here or on a device over SSH.

    Given a folder of shipped models (made by `edge-fm ship`), measured here, it also rewrites their
    model cards; a row it cannot remeasure is carried over from the --json file it replaces.

    Example: edge-fm bench models/ --json benchmarks/results/models_bench.json --plot benchmarks/results/models_front.png
    Example: edge-fm bench runs/cnn-2conv-int8-1 --target ssh://pi@raspberrypi.local --baseline runs/cnn-2conv-train-1
    Example: edge-fm bench models/ --target tflm --tflm-images 500
    Example: edge-fm bench models/ --target vela:ethos-u55-128
    Example: edge-fm bench models/ --target ssh://pi@pi-a.local --target ssh://pi@pi-b.local --compare --json fleet.json
    """
    from edge_fm.bench import bench_fleet, write_results
    from edge_fm.catalog import measure, plot_front, previous_result
    from edge_fm.io import check_output_file

    if min_accuracy is not None and not 0 <= min_accuracy <= 1:
        raise EdgeFMError(f"--min-accuracy {min_accuracy}: give a fraction between 0 and 1, e.g. 0.9.")
    for path, option in ((json_out, "--json"), (csv_out, "--csv"), (plot, "--plot")):
        if path is not None:
            check_output_file(path, option)  # before minutes of measuring, not after
    options = _bench_options(threads, runs, min_seconds, max_seconds, warmup)
    targets = target or ["local"]
    if len(targets) > 1:
        if plot is not None:
            raise EdgeFMError("--plot draws one device's front: give one --target (or plot each device's result).")
        fleet = [_target(t, ssh_key, ssh_option, remote_python, ssh_timeout, tflm_images) for t in targets]
        with console.status(f"measuring on {len(fleet)} devices at once..."):
            result = bench_fleet(artifacts, fleet, options, baseline, data_dir, sample)
        result["command"] = _command_line("bench")
        print_fleet_tables(result, compare)
        write_results(result, json_out, csv_out)
        failed = [r for r in result["rows"] if r.get("status") != "ok"]
        return _bench_verdict(result["rows"], min_accuracy, failed)
    where = _target(targets[0], ssh_key, ssh_option, remote_python, ssh_timeout, tflm_images)
    if plot is not None and (where.name == "tflm" or where.name.startswith("vela:")):
        raise EdgeFMError(f"--plot draws measured latency, which --target {where.name} does not give: drop --plot.")
    with console.status(f"measuring on {where.name}..."):
        result = measure(artifacts, where, options, baseline, data_dir, sample, previous_result(json_out))
    result["command"] = _command_line("bench")
    print_bench_table(result)
    write_results(result, json_out, csv_out)
    if plot is not None:
        plot_front([r for r in result["rows"] if r.get("status") == "ok" and r["threads"] == options.threads[0]], plot)
        console.print(f"plot: {plot}")
    failed = [r for r in result["rows"] if r.get("status") != "ok"]
    _bench_verdict(result["rows"], min_accuracy, failed)


def _bench_verdict(rows: list[dict], min_accuracy: Optional[float], failed: list[dict]) -> None:
    """The --min-accuracy gate, then a non-zero exit if any row failed."""
    from edge_fm.bench import below_min_accuracy

    if min_accuracy is not None:
        failing = below_min_accuracy(rows, min_accuracy)
        if failing:
            raise EdgeFMError(f"{len(failing)} artifact(s) below --min-accuracy {min_accuracy:.2%}: {', '.join(failing)}.")
        console.print(f"[green]all artifacts reach {min_accuracy:.2%}[/]")
    if failed:
        raise typer.Exit(1)


def print_fleet_tables(result: dict, compare: bool = False) -> None:
    """A fleet's result: one table per device (its rows and environment), then artifacts x devices if asked."""
    from edge_fm.bench import compare_devices

    keras = [row for row in result["rows"] if row.get("format") == "keras"]
    for device in result["targets"]:
        rows = [row for row in result["rows"] if row.get("target") == device and row.get("format") != "keras"]
        env = result["environments"].get(device)
        if env is None:  # the device failed as a whole: its error rows are in the JSON and the comparison
            console.print(f"[red]{escape(device)} failed[/] ({len(rows)} artifact(s) not measured): "
                          f"{escape(result['errors'][device])}", highlight=False)
            continue
        print_bench_table({**result, "target": device, "rows": keras + rows, "environment": env,
                           "reference": result["references"].get(device)}, title=f"on {device}")
    if not compare:
        return
    matrix = compare_devices(result)
    table = Table("artifact", "format", *matrix["devices"],
                  title=f"p50 ms / accuracy per device ({matrix['threads']} thread{'s' if matrix['threads'] != 1 else ''})")
    for entry in matrix["artifacts"]:
        cells = []
        for device in matrix["devices"]:
            cell = entry["cells"].get(device)
            if cell is None:
                cells.append("-")
            elif cell["status"] != "ok":
                cells.append("[red]error[/]")
            else:
                p50 = f"{cell['p50_ms']:.3f} ms" if cell["p50_ms"] is not None else "no latency"
                cells.append(f"{p50} / {cell['accuracy']:.2%}")
        table.add_row(entry["artifact"], entry["format"] or "?", *cells)
    console.print(table)


@app.command("ship")
@_fails_cleanly
def ship_command(
    train_run: Annotated[Path, typer.Argument(help="Finished training run to ship (e.g. runs/edge-cnn-tiny-train-1).")],
    name: Annotated[str, typer.Option(help="Folder name under the models folder, e.g. edge-cnn-tiny.")],
    models_dir: Annotated[Path, typer.Option(help="The folder of shipped models.")] = Path("models"),
    qat_run: Annotated[Optional[Path], typer.Option(help="Reuse this finished QAT run of TRAIN_RUN instead of running QAT.")] = None,
    qat_epochs: Annotated[Optional[int], typer.Option(help="Epochs of the QAT fine-tune (default: the optimize stage's).")] = None,
    qat_lr: Annotated[Optional[float], typer.Option("--qat-lr", help="Peak learning rate of the QAT fine-tune.")] = None,
    qat_max_train: Annotated[Optional[int], typer.Option(help="QAT on this many training images (a heavy network).")] = None,
    note: Annotated[str, typer.Option(help="A sentence or two for the model card: what a user should know.")] = "",
    train_command: Annotated[str, typer.Option(help="The command that made TRAIN_RUN, shown in the model card.")] = "",
    max_artifact_bytes: Annotated[int, typer.Option(help="A larger artifact keeps its card and provenance but stays out of the folder.")] = 5_000_000,
    runs_dir: Annotated[Path, typer.Option(help="Where the QAT run and the exports are written.")] = Path("runs"),
    data_dir: DataDirOption = None,
) -> None:
    """Choose, bundle and document a model for shipping.

    Runs QAT (or takes --qat-run), exports qat-int8 and int8, keeps the one more accurate on the whole
    validation split (the test split is not read), and writes MODELS_DIR/NAME: the bundle, its model card
    and provenance. Then `edge-fm bench MODELS_DIR` measures it and completes the card.

    Example: edge-fm ship runs/edge-cnn-tiny-train-1 --name edge-cnn-tiny --data-dir DATA_DIR
    """
    from edge_fm.ship import ShipConfig, ship

    config = ShipConfig(str(train_run), name, str(models_dir), str(qat_run) if qat_run else None, qat_epochs, qat_lr,
                        qat_max_train, max_artifact_bytes=max_artifact_bytes, note=note, train_command=train_command)
    target = ship(config, data_dir, runs_dir, _command_line("ship"), log=lambda line: console.print(line, highlight=False))
    console.print(f"[green]shipped[/] {target} (measure it with `edge-fm bench {models_dir}`)")


@app.command("pipeline")
@_fails_cleanly
def pipeline_command(
    arch: Annotated[str, typer.Argument(help="Architecture (see `edge-fm zoo`).")],
    preset: Annotated[str, typer.Option(help="'quick' (smoke run) or 'paper' (the paper's recipe).")] = "quick",
    sample: Annotated[bool, typer.Option("--sample", help="Train and score on the embedded sample (no download).")] = False,
    prune: Annotated[Optional[float], typer.Option(help="Prune to this sparsity (0-1) before quantizing.")] = None,
    qat: Annotated[bool, typer.Option("--qat", help="Add quantization-aware training and its qat-int8 artifact.")] = False,
    formats: Annotated[
        Optional[list[str]], typer.Option("--format", "-f", help="Export formats (repeatable; default fp32, int8, + qat-int8 with --qat).")
    ] = None,
    epochs: Annotated[Optional[int], typer.Option(help="Fine-tuning epochs of each optimization step.")] = None,
    settings: Annotated[Optional[list[str]], typer.Option("--set", help="Training config field as key=value (repeatable).")] = None,
    target: Annotated[str, typer.Option(help="Where to benchmark: `local` or `ssh://user@host[:port]`.")] = "local",
    threads: Annotated[str, typer.Option(help="Interpreter thread counts, comma-separated.")] = MEASURE.threads,
    runs: Annotated[int, typer.Option(help="Minimum timed runs per artifact.")] = PIPELINE_BENCH.runs,
    min_seconds: Annotated[float, typer.Option(help="Minimum timed seconds per artifact.")] = PIPELINE_BENCH.min_seconds,
    ssh_key: Annotated[Optional[Path], typer.Option(help="Private key for the SSH target.")] = None,
    ssh_option: Annotated[Optional[list[str]], typer.Option(help="Extra ssh -o option (repeatable).")] = None,
    remote_python: Annotated[str, typer.Option(help="Python command on the SSH host.")] = "python3",
    data_dir: DataDirOption = None,
    runs_dir: Annotated[Path, typer.Option(help="Where the pipeline's run directory is created.")] = Path("runs"),
) -> None:
    """Train -> optimize -> export -> bench in one command, with a final table and the best artifact.

    Example: edge-fm pipeline cnn-2conv --sample --prune 0.5 --qat
    Example: edge-fm pipeline cnn-2conv --preset paper --qat --target ssh://pi@raspberrypi.local
    """
    from edge_fm import config as config_lib
    from edge_fm.pipeline import PIPELINE_FILE, PipelineConfig, run_pipeline

    overrides = config_lib.parse_overrides(config_lib.TrainConfig, settings or [])
    config = PipelineConfig(arch, preset, sample, prune, qat, tuple(formats or ()), overrides, epochs)
    options = _bench_options(threads, runs, min_seconds, PIPELINE_BENCH.max_seconds, PIPELINE_BENCH.warmup)
    where = _target(target, ssh_key, ssh_option, remote_python, 10)
    reporter = _RichReporter(console)

    def log(message: str) -> None:
        reporter.stop()
        console.print(f"[bold cyan]>[/] {message}", highlight=False)

    try:
        top = run_pipeline(config, where, options, data_dir, runs_dir, reporter=reporter, log=log)
    finally:
        reporter.stop()
    record = json.loads((top / PIPELINE_FILE).read_text())
    print_bench_table(json.loads((top / "bench.json").read_text()), title=f"{arch} pipeline on {where.name}")
    best = record["best"]
    if best:
        console.print(
            f"best artifact ({best['rule']}): [bold green]{top / best['path'] / 'model.tflite'}[/] "
            f"{best['format']}, {best['accuracy']:.2%}, {best['bytes'] / 1024:.1f} KB, p50 {best['p50_ms']:.3f} ms",
            highlight=False,
        )
    console.print(f"pipeline run directory: [bold]{top}[/] (pipeline.json links every stage)")
    if (top / "report.html").is_file():
        console.print(f"report: [bold]{top / 'report.html'}[/] (open it in a browser)")


@app.command("sweep")
@_fails_cleanly
def sweep_command(
    spec: Annotated[Optional[Path], typer.Option("--spec", help="A YAML or JSON sweep spec; the options below override its entries.")] = None,
    arch: Annotated[Optional[str], typer.Option("--arch", help="Architectures, comma-separated, e.g. tiny-cnn,cnn-2conv.")] = None,
    settings: Annotated[
        Optional[list[str]], typer.Option("--set", help="Training field and the values to try, e.g. epochs=1,2 (repeatable; list fields take a|b).")
    ] = None,
    prune: Annotated[Optional[str], typer.Option(help="Sparsities to try, comma-separated; 0 is no pruning, e.g. 0,0.5.")] = None,
    qat: Annotated[Optional[str], typer.Option(help="Quantization-aware step: off, on or both.")] = None,
    formats: Annotated[
        Optional[list[str]], typer.Option("--format", "-f", help="Export formats of every trial (repeatable; default fp32, int8, + qat-int8 with QAT).")
    ] = None,
    preset: Annotated[Optional[str], typer.Option(help="Training preset: quick or paper.")] = None,
    sample: Annotated[bool, typer.Option("--sample", help="Train and score on the embedded sample (no download).")] = False,
    epochs: Annotated[Optional[int], typer.Option(help="Fine-tuning epochs of each optimization step.")] = None,
    search: Annotated[Optional[str], typer.Option(help="grid (every combination) or optuna (multi-objective search).")] = None,
    trials: Annotated[Optional[int], typer.Option(help="Trials of an Optuna search.")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Seed of the Optuna sampler.")] = None,
    bench_threads: Annotated[Optional[int], typer.Option(help="Interpreter threads of each latency measurement.")] = None,
    max_bytes: Annotated[Optional[int], typer.Option(help="Pick the most accurate artifact at most this size (bytes; default 100000).")] = None,
    min_accuracy: Annotated[Optional[float], typer.Option(help="Pick the fastest and the smallest at this accuracy or better (0-1; default 0.94).")] = None,
    max_p50_ms: Annotated[Optional[float], typer.Option(help="Also pick the most accurate at this p50 latency (ms) or faster.")] = None,
    bench_target: Annotated[Optional[str], typer.Option(help="Where every trial measures latency: local, or ssh://user@host[:port] (the device the model will run on; one trial at a time), so the front and picks are that device's.")] = None,
    bench_ssh_key: Annotated[Optional[Path], typer.Option(help="Private key for an SSH --bench-target.")] = None,
    bench_ssh_option: Annotated[Optional[list[str]], typer.Option(help="Extra ssh -o option for an SSH --bench-target (repeatable).")] = None,
    bench_python: Annotated[Optional[str], typer.Option(help="Python command on an SSH --bench-target (default python3).")] = None,
    address: Annotated[Optional[str], typer.Option(help="Run on this Ray cluster (head host:port, or auto) instead of starting Ray here.")] = None,
    concurrency: Annotated[Optional[int], typer.Option(help="Trials at once (default: every core / --threads-per-trial).")] = None,
    threads_per_trial: Annotated[Optional[int], typer.Option(help="Cores and TensorFlow threads of each trial (default: cores / concurrency).")] = None,
    resume: Annotated[Optional[Path], typer.Option(help="Continue this stopped sweep folder (finished trials are kept).")] = None,
    retry_errors: Annotated[bool, typer.Option("--retry-errors", help="With --resume: run the trials that failed again.")] = False,
    runs_dir: Annotated[Path, typer.Option(help="Where the sweep folder (sweep-N) is created.")] = Path("runs"),
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
    """
    from edge_fm.sweep import RayOptions, build_spec, read_sweep, resume_sweep, run_sweep

    ray_options = RayOptions(address, concurrency, threads_per_trial, retry_errors)

    def log(message: str) -> None:
        console.print(f"[bold cyan]>[/] {escape(message)}", highlight=False)

    if resume is not None:
        limits = {"max_bytes": max_bytes, "min_accuracy": min_accuracy, "max_p50_ms": max_p50_ms}
        sweep_dir = resume_sweep(resume, ray_options, limits, data_dir, log)
    else:
        sweep_spec = build_spec(spec, arch, settings, prune, qat, formats, preset, sample, epochs, search, trials, seed,
                                bench_threads, max_bytes, min_accuracy, max_p50_ms, bench_target,
                                str(bench_ssh_key) if bench_ssh_key else None, bench_ssh_option, bench_python)
        sweep_dir = run_sweep(sweep_spec, runs_dir, ray_options, data_dir, log)
    _print_sweep(read_sweep(sweep_dir), sweep_dir)


def _print_sweep(summary: dict, sweep_dir: Path) -> None:
    table = Table("trial", "format", "KB", "accuracy", "p50 ms", "front", "status", title="sweep: every artifact of every trial")
    for row in summary["rows"]:
        ok = row.get("status") == "ok"
        table.add_row(
            row["trial"], row.get("format") or "-", f"{row['bytes'] / 1000:.1f}" if ok else "-",
            f"{row['accuracy']:.2%}" if ok else "-", f"{row['latency']['p50_ms']:.3f}" if ok else "-",
            "[green]yes[/]" if row.get("front") else "", "[green]ok[/]" if ok else f"[red]error: {escape(str(row.get('error')))}[/]",
        )
    console.print(table)
    for pick in summary["picks"]:
        chosen = pick["artifact"]
        answer = (f"[bold green]{escape(pick['model'])}[/] {chosen['accuracy']:.2%}, {chosen['bytes'] / 1000:.1f} KB, "
                  f"p50 {chosen['p50_ms']:.3f} ms" if chosen else "[yellow]none qualifies[/]")
        console.print(f"{pick['question']}: {answer}", highlight=False)
    source = summary.get("test_set", {}).get("source")
    if source:
        console.print(f"accuracy on {source}", highlight=False)
    console.print(f"sweep folder: [bold]{sweep_dir}[/] (sweep.json, sweep.csv, front.png)", highlight=False)
    if not summary["complete"]:
        console.print(f"[yellow]{summary['finished_trials']} of {summary['expected_trials']} trials finished:[/] "
                      f"continue with `edge-fm sweep --resume {sweep_dir}`", highlight=False)


def main(argv: list[str] | None = None) -> int:
    """Runs the CLI; usage errors become one line on stderr (Click's box spans several)."""
    command = typer.main.get_command(app)
    try:
        # Without standalone mode, Click hands back the code of a typer.Exit instead of exiting.
        result = command.main(args=argv, prog_name="edge-fm", standalone_mode=False)
    except typer.Exit as exc:
        return exc.exit_code
    except typer.Abort:
        err_console.print("[bold red]aborted[/]")
        return 130
    except _UsageError as exc:
        context = getattr(exc, "ctx", None)
        where = context.command_path if context else "edge-fm"
        _print_error(f"{exc.format_message()} (see `{where} --help`)")
        return exc.exit_code
    return result if isinstance(result, int) else 0


def entry_point() -> None:
    """The console script."""
    sys.exit(main())

"""``edge-fm sweep``'s options in three option groups (see :func:`edge_fm.cli.options.with_option_groups`):
what the trials try, how they are measured and picked, and where they run."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated, Optional

import typer

from edge_fm.cli.options import FineTuneEpochsOption


@dataclasses.dataclass(frozen=True)
class SweepTrials:
    """What the trials try: the library's ``SweepOptions`` fields of these names (``--epochs``:
    ``fine_tune_epochs``)."""

    spec_file: Annotated[
        Optional[Path],
        typer.Option("--spec", help="A YAML or JSON sweep spec; the options below override its entries."),
    ] = None
    archs: Annotated[
        Optional[str], typer.Option("--arch", help="Architectures, comma-separated, e.g. tiny-cnn,cnn-2conv.")
    ] = None
    settings: Annotated[
        Optional[list[str]],
        typer.Option(
            "--set",
            help="Training field and the values to try, e.g. epochs=1,2 (repeatable; list fields take a|b).",
        ),
    ] = None
    prune: Annotated[
        Optional[str], typer.Option(help="Sparsities to try, comma-separated; 0 is no pruning, e.g. 0,0.5.")
    ] = None
    qat: Annotated[Optional[str], typer.Option(help="Quantization-aware step: off, on or both.")] = None
    formats: Annotated[
        Optional[list[str]],
        typer.Option(
            "--format",
            "-f",
            help="Export formats of every trial (repeatable; default fp32, int8, + qat-int8 with QAT).",
        ),
    ] = None
    preset: Annotated[Optional[str], typer.Option(help="Training preset: quick or paper.")] = None
    epochs: FineTuneEpochsOption = None
    search: Annotated[
        Optional[str], typer.Option(help="grid (every combination) or optuna (multi-objective search).")
    ] = None
    trials: Annotated[Optional[int], typer.Option(help="Trials of an Optuna search.")] = None
    seed: Annotated[Optional[int], typer.Option(help="Seed of the Optuna sampler.")] = None

    def asked(self) -> dict:
        """These options as ``SweepOptions`` fields."""
        fields = dataclasses.asdict(self)
        fields["fine_tune_epochs"] = fields.pop("epochs")
        return fields


@dataclasses.dataclass(frozen=True)
class SweepMeasures:
    """How every trial is measured (threads, target) and which artifacts are picked (the constraints)."""

    bench_threads: Annotated[
        Optional[int], typer.Option(help="Interpreter threads of each latency measurement.")
    ] = None
    max_bytes: Annotated[
        Optional[int],
        typer.Option(help="Pick the most accurate artifact at most this size (bytes; default 100000)."),
    ] = None
    min_accuracy: Annotated[
        Optional[float],
        typer.Option(
            help="Pick the fastest and the smallest at this accuracy or better (0-1; default 0.94)."
        ),
    ] = None
    max_p50_ms: Annotated[
        Optional[float], typer.Option(help="Also pick the most accurate at this p50 latency (ms) or faster.")
    ] = None
    bench_target: Annotated[
        Optional[str],
        typer.Option(
            help="Where every trial measures latency: local, or ssh://user@host[:port] (the device the model "
            "will run on; one trial at a time), so the front and picks are that device's."
        ),
    ] = None
    bench_ssh_key: Annotated[Optional[Path], typer.Option(help="Private key for an SSH --bench-target.")] = (
        None
    )
    bench_ssh_options: Annotated[
        Optional[list[str]],
        typer.Option(
            "--bench-ssh-option", help="Extra ssh -o option for an SSH --bench-target (repeatable)."
        ),
    ] = None
    bench_python: Annotated[
        Optional[str], typer.Option(help="Python command on an SSH --bench-target (default python3).")
    ] = None

    def limits(self) -> dict:
        """The pick constraints given (None: the spec's, else the default)."""
        return {"max_bytes": self.max_bytes, "min_accuracy": self.min_accuracy, "max_p50_ms": self.max_p50_ms}

    def asked(self) -> dict:
        """These options as ``SweepOptions`` fields."""
        fields = dataclasses.asdict(self)
        if self.bench_ssh_key is not None:
            fields["bench_ssh_key"] = str(self.bench_ssh_key)
        return fields


@dataclasses.dataclass(frozen=True)
class SweepCluster:
    """Where the trials run, and how many at once."""

    address: Annotated[
        Optional[str],
        typer.Option(help="Run on this Ray cluster (head host:port, or auto) instead of starting Ray here."),
    ] = None
    concurrency: Annotated[
        Optional[int], typer.Option(help="Trials at once (default: every core / --threads-per-trial).")
    ] = None
    threads_per_trial: Annotated[
        Optional[int],
        typer.Option(help="Cores and TensorFlow threads of each trial (default: cores / concurrency)."),
    ] = None
    retry_errors: Annotated[
        bool, typer.Option("--retry-errors", help="With --resume: run the trials that failed again.")
    ] = False

    def ray_options(self):
        """The library's RayOptions of these options."""
        from edge_fm import RayOptions

        return RayOptions(self.address, self.concurrency, self.threads_per_trial, self.retry_errors)


# The commands' defaults: every option left out.
DEFAULT_TRIALS = SweepTrials()
DEFAULT_MEASURES = SweepMeasures()
DEFAULT_CLUSTER = SweepCluster()

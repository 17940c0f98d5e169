"""The one-command pipeline: train -> optimize -> export -> bench, in one top-level run directory.

``runs/<arch>-pipeline-N/`` holds every stage's run directory, the benchmark (``bench.json``,
``bench.csv``), ``pipeline.json`` (the config, where each stage's output is, the best artifact),
``report.html`` (what ``edge-fm report`` writes for it) and a manifest over all of it.

Example:
    >>> top = run_pipeline(PipelineConfig("cnn-2conv", sample=True, prune=0.5, qat=True))  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any, Callable

from edge_fm.bench.benchmark import BenchOptions, LocalTarget, SshTarget, parse_target
from edge_fm.bench.measurements import read_bench
from edge_fm.bench.targets import target_options
from edge_fm.data.datasets import resolve_data_dir
from edge_fm.errors import EdgeFMError
from edge_fm.export.bundles import BENCH_FILE, MODEL_FILE, PIPELINE_FILE
from edge_fm.export.formats import get_format
from edge_fm.io import read_json, write_json
from edge_fm.pipeline.stages import STAGES, PipelineRun
from edge_fm.train.runs import latest_run_dir, new_run_dir, write_manifest

# Shorter timing than `edge-fm bench`: the pipeline ranks one run's artifacts against each other.
PIPELINE_BENCH = BenchOptions(runs=50, min_seconds=0.5)


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
    """What the pipeline does; saved in ``pipeline.json``.

    Attributes:
        arch: Architecture of the zoo.
        preset: Training preset (``quick`` or ``paper``).
        sample: Train and score on the embedded sample (outputs say so).
        prune: Target sparsity of a pruning step, or None for none.
        qat: Add a quantization-aware step (pruning-preserving after pruning) and its qat-int8 export.
        formats: Export formats; default fp32 and int8, plus qat-int8 with ``qat``. qat-int8 comes
            from the QAT run, the others from the last non-QAT model (pruned, if pruned).
        train_overrides: Training config fields to change (``--set``).
        fine_tune_epochs: Epochs of each optimization step (default: the optimize stage's).
        best_tolerance: The best artifact is the smallest within this accuracy of the top one.
    """

    arch: str
    preset: str = "quick"
    sample: bool = False
    prune: float | None = None
    qat: bool = False
    formats: tuple[str, ...] = ()
    train_overrides: dict = dataclasses.field(default_factory=dict)
    fine_tune_epochs: int | None = None
    best_tolerance: float = 0.005

    def __post_init__(self) -> None:
        formats = tuple(self.formats) or ("fp32", "int8") + (("qat-int8",) if self.qat else ())
        for name in formats:
            get_format(name)
        if "qat-int8" in formats and not self.qat:
            raise EdgeFMError("format qat-int8 needs a QAT step: add --qat.")
        if self.prune is not None and not 0 < self.prune < 1:
            raise EdgeFMError(
                f"--prune {self.prune}: give the target sparsity as a fraction in (0, 1), e.g. 0.5."
            )
        if self.fine_tune_epochs is not None and self.fine_tune_epochs < 1:
            raise EdgeFMError(f"--epochs {self.fine_tune_epochs}: fine-tuning needs at least 1 epoch.")
        object.__setattr__(self, "formats", formats)
        object.__setattr__(self, "train_overrides", dict(self.train_overrides))


def run_pipeline(
    config: PipelineConfig,
    target: str | LocalTarget | SshTarget = "local",
    bench_options: BenchOptions = PIPELINE_BENCH,
    data_dir: Path | str | None = None,
    runs_dir: Path | str = "runs",
    reporter=None,
    log: Callable[[str], None] = lambda message: None,
) -> Path:
    """Runs every stage the config wants (:data:`edge_fm.pipeline.stages.STAGES`) and returns the
    top-level run directory.

    The data folder is resolved once (the argument, ``$EDGE_FM_DATA``, the user cache) and every stage
    reads that one. A failed export (its parity check, say) becomes a recorded error and the others go
    on; a failed training or optimization step stops the pipeline with its error.

    Raises:
        EdgeFMError: Bad configuration, missing data, a failed stage or an unusable target.
    """
    train_config, target = _checked(config, target)
    top = new_run_dir(runs_dir, f"{config.arch}-pipeline")
    record: dict[str, Any] = {
        "config": dataclasses.asdict(config),
        **_target_record(target, bench_options),
        "status": "running",
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "stages": {},
    }
    write_json(top / PIPELINE_FILE, record)
    run = PipelineRun(
        config, train_config, top, resolve_data_dir(data_dir), target, bench_options, record, reporter, log
    )
    return _run_stages(run)


def _checked(config: PipelineConfig, target) -> tuple[Any, Any]:
    """The training config a pipeline makes and its bench target, both checked before any work: a bad
    option, or an unreachable device, is found now and not after training."""
    target = parse_target(target) if isinstance(target, str) else target
    train_config = train_config_of(config)
    target.check()
    return train_config, target


def train_config_of(config: PipelineConfig):
    """The training config a pipeline makes (preset, ``--set`` overrides, the sample), checked.

    Raises:
        EdgeFMError: A bad option value.
    """
    from edge_fm.train.trainer import config_for  # TensorFlow loads here, only when a pipeline runs

    overrides = {**config.train_overrides, **({"data": "sample"} if config.sample else {})}
    return config_for(config.arch, config.preset, **overrides)


def resume_pipeline(
    top: Path | str,
    target: str | LocalTarget | SshTarget | None = None,
    bench_options: BenchOptions | None = None,
    data_dir: Path | str | None = None,
    reporter=None,
    log: Callable[[str], None] = lambda message: None,
) -> Path:
    """Continues a stopped pipeline in its own folder with its recorded config: a finished stage's run
    is kept, an interrupted one resumes from its last epoch, the exports already made are kept, and
    the benchmark, the record and the report are made again, on ``target`` with ``bench_options``
    (None: the target, SSH options and timing the pipeline was started with).

    Raises:
        EdgeFMError: ``top`` is not a pipeline run, or it already finished.
    """
    top = Path(top)
    record = _stopped_record(top)
    config = PipelineConfig(**record["config"])
    started_for, target_record, recorded_timing = _bench_record(record)
    if target is None:
        target = parse_target(started_for, **target_record)
    train_config, target = _checked(config, target)
    if target.name != started_for:
        log(f"the benchmark runs on {target.name}; the pipeline was started for {started_for}")
    bench_options = recorded_timing if bench_options is None else bench_options
    record.update(
        _target_record(target, bench_options), status="running", resumed=time.strftime("%Y-%m-%dT%H:%M:%S%z")
    )
    record.pop("error", None)
    write_json(top / PIPELINE_FILE, record)
    run = PipelineRun(
        config, train_config, top, resolve_data_dir(data_dir), target, bench_options, record, reporter, log
    )
    return _run_stages(run)


def _target_record(target, bench_options: BenchOptions) -> dict[str, Any]:
    """Where and how the pipeline benchmarks, as ``pipeline.json`` keeps it for a resume."""
    return {
        "target": target.name,
        "target_options": target_options(target),
        "bench_options": dataclasses.asdict(bench_options),
    }


def _bench_record(record: dict[str, Any]) -> tuple[str, dict[str, Any], BenchOptions]:
    """What :func:`_target_record` kept: the target, its options and the timing (a record from before
    they were kept: its target reached as by default, the pipeline's default timing)."""
    timing = record.get("bench_options")
    return (
        record.get("target", "local"),
        dict(record.get("target_options", {})),
        BenchOptions(**{**timing, "threads": tuple(timing["threads"])}) if timing else PIPELINE_BENCH,
    )


def stopped_pipeline(runs_dir: Path | str, arch: str) -> Path | None:
    """The pipeline of ``arch`` started last in ``runs_dir``, when it stopped (what ``--resume`` takes)."""
    top = latest_run_dir(runs_dir, f"{arch}-pipeline")
    if top is None or not (top / PIPELINE_FILE).is_file():
        return None
    return None if read_json(top / PIPELINE_FILE).get("status") == "complete" else top


def recorded_bench(top: Path | str) -> tuple[str, dict[str, Any], BenchOptions]:
    """Where and how a stopped pipeline benchmarks: its target (``local``, ``ssh://user@host``, ...), the
    target's options (:func:`edge_fm.bench.targets.target_options`) and its timing, which ``--resume``
    uses unless told others.

    Raises:
        EdgeFMError: ``top`` is not a pipeline run, or it already finished.
    """
    return _bench_record(_stopped_record(Path(top)))


def _stopped_record(top: Path) -> dict[str, Any]:
    if not (top / PIPELINE_FILE).is_file():
        raise EdgeFMError(
            f"{top} is not a pipeline run (it has no {PIPELINE_FILE}): pass runs/<arch>-pipeline-N."
        )
    record = read_json(top / PIPELINE_FILE)
    if record.get("status") == "complete":
        raise EdgeFMError(f"{top} already finished; start a new pipeline instead.")
    return record


def _run_stages(run: PipelineRun) -> Path:
    config, top, record = run.config, run.top, run.record
    try:
        for stage in STAGES:
            if stage.wanted(config):
                stage.run(run)
    except (Exception, KeyboardInterrupt) as exc:
        # The record says the pipeline stopped, and why, rather than that it is still running.
        record.update(
            status="interrupted" if isinstance(exc, KeyboardInterrupt) else "failed",
            error=str(exc) or type(exc).__name__,
        )
        if top.is_dir():  # not when training refused before it began (the folder is then removed)
            write_json(top / PIPELINE_FILE, record)
        raise
    write_manifest(top, "pipeline", stages=record["stages"])
    return top


def read_pipeline(top: Path | str) -> dict[str, Any]:
    """What a finished pipeline run holds, for a caller to show.

    Returns:
        ``record`` (its ``pipeline.json``), ``bench`` (the bench result), ``best_artifact`` (the
        best artifact's .tflite file, or None) and ``report`` (its HTML page, or None).

    Raises:
        EdgeFMError: ``top`` is not a finished pipeline run.
    """
    from edge_fm.show.html_report import REPORT_FILE

    top = Path(top)
    record = read_json(top / PIPELINE_FILE)
    best = record.get("best")
    report = top / REPORT_FILE
    return {
        "record": record,
        "bench": read_bench(top / BENCH_FILE),
        "best_artifact": top / best["path"] / MODEL_FILE if best else None,
        "report": report if report.is_file() else None,
    }

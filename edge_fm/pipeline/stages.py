"""The pipeline's stages, in the order they run: train -> prune -> qat -> export -> bench -> record -> report.

Each stage is a row of :data:`STAGES`: its name, whether a config wants it, and a function that takes
the shared :class:`PipelineRun`, calls one library stage and records where its output went. Every
stage reads the data from the one folder the pipeline resolved at its start.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from pathlib import Path
from typing import Any, Callable

from edge_fm.bench.benchmark import BenchOptions, bench, best_artifact, write_results
from edge_fm.errors import EdgeFMError
from edge_fm.export.bundles import BENCH_FILE, BENCH_TABLE, MODEL_FILE, PIPELINE_FILE, is_run
from edge_fm.io import write_json


@dataclasses.dataclass
class PipelineRun:
    """What the stages share: the config, the run folder, where the data is, and what each stage made.

    Attributes:
        config: The pipeline's config (:class:`edge_fm.pipeline.pipeline.PipelineConfig`).
        train_config: The training config it makes (preset, ``--set`` overrides, the sample).
        top: The top-level run directory.
        data_dir: The data folder every stage reads (resolved once, before the first stage).
        target: Where the benchmark runs.
        bench_options: How the benchmark measures.
        record: ``pipeline.json`` as it is being written; ``record["stages"]`` names each output.
        trained, source, qat_run: The training run; the run the non-QAT exports come from (the
            pruned one after pruning); the QAT run.
        bundles, export_errors: The exports made, and each failed format's error.
    """

    config: Any
    train_config: Any
    top: Path
    data_dir: Path
    target: Any
    bench_options: BenchOptions
    record: dict[str, Any]
    reporter: Any = None
    log: Callable[[str], None] = lambda message: None
    trained: Path | None = None
    source: Path | None = None
    qat_run: Path | None = None
    bundles: list[Path] = dataclasses.field(default_factory=list)
    export_errors: dict[str, str] = dataclasses.field(default_factory=dict)

    def relative(self, path: Path) -> str:
        # Resolved on both sides: the benchmark reports absolute artifact paths, runs_dir may be relative.
        return str(Path(path).resolve().relative_to(self.top.resolve()))

    def made(self, stage: str, path: Path) -> None:
        """Records and logs a stage's output."""
        self.record["stages"][stage] = self.relative(path)
        self.save()
        self.log(f"{stage}: {path}")

    def save(self) -> None:
        """Writes ``pipeline.json`` as it stands (atomically), so that a pipeline killed at any point
        resumes with every output it recorded."""
        write_json(self.top / PIPELINE_FILE, self.record)

    def fine_tune(self) -> dict[str, int]:
        epochs = self.config.fine_tune_epochs
        return {"epochs": epochs} if epochs else {}


def _made_before(run: PipelineRun, *stages: str) -> tuple[Path | None, bool]:
    """A stage's run folder that an earlier, stopped attempt of this pipeline left, and whether it
    finished; ``(None, False)`` in a new pipeline."""
    from edge_fm.train.runs import Run

    found = sorted(p for stage in stages for p in run.top.glob(f"{run.config.arch}-{stage}-*") if is_run(p))
    return (found[-1], Run(found[-1]).finished) if found else (None, False)


def _train(run: PipelineRun) -> None:
    from edge_fm.train.trainer import resume, train  # TensorFlow loads only when a pipeline runs

    done, finished = _made_before(run, "train")
    if done is not None:
        run.trained = done if finished else resume(done, run.data_dir, reporter=run.reporter)
        run.source = run.trained
        run.made("train", run.trained)
        return
    try:
        run.trained = train(run.train_config, run.data_dir, run.top, reporter=run.reporter)
    except EdgeFMError:
        if [p.name for p in run.top.iterdir()] == [PIPELINE_FILE]:
            shutil.rmtree(run.top)  # refused before training began (bad split, say): leave no half-made run
        raise
    run.source = run.trained
    run.made("train", run.trained)


def _prune(run: PipelineRun) -> None:
    from edge_fm.optimize.compress import OptimizeConfig, optimize, resume_optimize

    done, finished = _made_before(run, "prune")
    if done is not None:
        run.source = done if finished else resume_optimize(done, run.data_dir, reporter=run.reporter)
        run.made("prune", run.source)
        return
    config = OptimizeConfig(
        "prune", str(run.trained), target_sparsity=run.config.prune, fine_tune=run.fine_tune()
    )
    run.source = optimize(config, run.data_dir, run.top, reporter=run.reporter)
    run.made("prune", run.source)


def _qat(run: PipelineRun) -> None:
    from edge_fm.optimize.compress import OptimizeConfig, optimize, resume_optimize

    done, finished = _made_before(run, "qat", "pqat")
    if done is not None:
        run.qat_run = done if finished else resume_optimize(done, run.data_dir, reporter=run.reporter)
        run.made("qat", run.qat_run)
        return
    config = OptimizeConfig("qat", str(run.source), fine_tune=run.fine_tune())
    run.qat_run = optimize(config, run.data_dir, run.top, reporter=run.reporter)
    run.made("qat", run.qat_run)


def _export(run: PipelineRun) -> None:
    """Every format: qat-int8 from the QAT run, the others from the last non-QAT model. A failed
    export (its parity check, say) becomes a recorded error and the others go on."""
    from edge_fm.export.exporter import export

    made = run.record["stages"].get("exports", {})
    for name in run.config.formats:
        if name in made and (run.top / made[name] / MODEL_FILE).is_file():  # a stopped attempt's export
            run.bundles.append(run.top / made[name])
            continue
        try:
            bundle = export(
                run.qat_run if name == "qat-int8" else run.source,
                name,
                runs_dir=run.top,
                data_dir=run.data_dir,
            )
        except EdgeFMError as exc:  # one format's failure does not sink the others
            run.export_errors[name] = str(exc)
            run.log(f"export {name} failed: {exc}")
            continue
        run.bundles.append(bundle)
        run.record["stages"].setdefault("exports", {})[name] = run.relative(bundle)
        run.save()
        run.log(f"export {name}: {bundle}")
    if not run.bundles:
        raise EdgeFMError(f"every export failed: {'; '.join(run.export_errors.values())}")


def _bench(run: PipelineRun) -> None:
    """Every export on the target against the trained model; the failed exports as error rows."""
    config = run.config
    result = bench(
        run.bundles,
        run.target,
        run.bench_options,
        baseline=run.trained,
        data_dir=run.data_dir,
        sample=config.sample,
    )
    for name, error in run.export_errors.items():
        result["rows"].append(
            {"artifact": f"{config.arch}-{name}", "format": name, "status": "error", "error": error}
        )
    write_results(result, run.top / BENCH_FILE, run.top / BENCH_TABLE)
    run.record["bench"] = {"json": BENCH_FILE, "csv": BENCH_TABLE, "test_set": result["test_set"]["source"]}
    run.record["best"] = _best(run, result)


def _best(run: PipelineRun, result: dict[str, Any]) -> dict[str, Any] | None:
    tolerance = run.config.best_tolerance
    best = best_artifact(result["rows"], tolerance)
    if best is None:
        return None
    return {
        "artifact": best["artifact"],
        "path": run.relative(Path(best["path"]).parent),
        "format": best["format"],
        "accuracy": best["accuracy"],
        "bytes": best["bytes"],
        "p50_ms": best["latency"]["p50_ms"],
        "rule": f"smallest artifact within {tolerance * 100:.1f} points of the most accurate",
    }


def _finish(run: PipelineRun) -> None:
    """``pipeline.json`` marked complete: what the report reads."""
    run.record.update(status="complete", finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    run.save()


def _report(run: PipelineRun) -> None:
    """The finished run's page (matplotlib, Jinja2); the pipeline's results stand without it."""
    from edge_fm.show.html_report import ReportOptions, build_report

    try:
        run.log(f"report: {build_report(run.top, options=ReportOptions(data_dir=run.data_dir))}")
    except EdgeFMError as exc:
        run.log(f"report failed: {exc}")


@dataclasses.dataclass(frozen=True)
class Stage:
    """One row of :data:`STAGES`."""

    name: str
    run: Callable[[PipelineRun], None]
    wanted: Callable[[Any], bool] = lambda config: True


STAGES = (
    Stage("train", _train),
    Stage("prune", _prune, lambda config: config.prune is not None),
    Stage("qat", _qat, lambda config: config.qat),
    Stage("export", _export),
    Stage("bench", _bench),
    Stage("record", _finish),
    Stage("report", _report),
)

"""``edge-fm report``: one self-contained HTML page that shows what a model does.

The target may be a training or optimization run, an export bundle, a pipeline run, a bench
result JSON, or a folder of bundles (``models/``). The page holds whichever apply: training
curves, the accuracy-size-latency front and its table, the confusion matrix and per-class
scores, a gallery of predictions, the confidence per class, and Grad-CAM of the float Keras
model beside occlusion sensitivity of the int8 .tflite on the same images.

Everything is inline (figures as base64 PNG data URIs, CSS in the page): the file can be mailed
or opened offline, and loads nothing from the network.

Example:
    >>> build_report("runs/cnn-2conv-pipeline-1")  # doctest: +SKIP
    PosixPath('runs/cnn-2conv-pipeline-1/report.html')
"""

from __future__ import annotations

import dataclasses
import math
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edge_fm.bench.measurements import bench_rows, folder_rows, read_bench
from edge_fm.data.datasets import CLASS_NAMES
from edge_fm.errors import EdgeFMError
from edge_fm.export.bundles import (
    BENCH_FILE,
    PIPELINE_FILE,
    Bundle,
    kind_of,
    read_description,
)
from edge_fm.export.source_runs import recorded_run, source_run
from edge_fm.io import KB, check_output_file, read_json, write_bytes_atomic
from edge_fm.show import figures
from edge_fm.show.explain import evidence, grad_cam, map_correlation, occlusion_map
from edge_fm.show.inspection_section import inspection_section
from edge_fm.show.report_runs import (
    bounded,
    curves,
    curves_of_lineage,
    data_uri,
    exported_artifact,
    float_ancestor,
    scored_images,
)
from edge_fm.train.metrics import classification_metrics

REPORT_FILE = "report.html"
TEMPLATE = "report.html.j2"


@dataclasses.dataclass(frozen=True)
class ReportOptions:
    """What a report scores and explains.

    Attributes:
        data_dir: Where the full dataset is (a bundle without its run is scored on its test split).
        data: Where a run's or bundle's own dataset is, when not where its record says.
        sample: Score a bundle without its run on the embedded sample's test images instead.
        max_images: At most this many images are scored (the report takes seconds, not minutes).
        explained: Images explained side by side, one per class in class order.
        bench: A bench result JSON whose figures a folder of bundles is shown with.
    """

    data_dir: Path | None = None
    sample: bool = False
    max_images: int = 2000
    explained: int = 10
    bench: Path | None = None
    data: str | None = None

    def __post_init__(self) -> None:
        if self.max_images < 10:
            raise EdgeFMError(f"--images {self.max_images}: score at least 10 images.")
        if not 0 <= self.explained <= 10:
            raise EdgeFMError(
                f"--explained {self.explained}: explain between 0 and 10 images (one per class, up to 10)."
            )


def default_output(target: Path | str) -> Path:
    """``report.html`` inside a target folder; ``<name>.html`` beside a bench result file."""
    target = Path(target)
    return target / REPORT_FILE if target.is_dir() else target.with_suffix(".html")


def target_kind(target: Path | str) -> str:
    """``pipeline``, ``bundle``, ``run``, ``bench`` or ``folder``.

    Raises:
        EdgeFMError: The path is none of them (with what is accepted).
    """
    path = Path(target)
    kind = kind_of(path)
    if kind in ("bench", "pipeline", "bundle", "run", "folder"):
        return kind
    if kind == "catalog":  # shipped models: a folder of bundles
        return "folder"
    what = "does not exist" if not path.exists() else "is not a report target"
    raise EdgeFMError(
        f"{path} {what}: pass a run, an export bundle, a pipeline run, a bench result JSON or a folder "
        "of bundles (e.g. models/)."
    )


def build_report(
    target: Path | str,
    out: Path | str | None = None,
    options: ReportOptions = ReportOptions(),
    progress: Callable[[str], None] = lambda message: None,
) -> Path:
    """Writes the report of ``target`` as one self-contained HTML file and returns its path.

    Args:
        target: A run, a bundle, a pipeline run, a bench result JSON or a folder of bundles.
        out: The HTML file; default :func:`default_output`.
        options: What to score and explain.
        progress: Called with a short line before each slow step.

    Raises:
        EdgeFMError: The target is not one of the above, its data is missing, or ``out`` cannot be written.
    """
    target = Path(target)
    kind = target_kind(target)
    if options.bench is not None and kind != "folder":
        raise EdgeFMError(
            f"--bench gives a folder of bundles (such as models/) its measured figures; {target} is a "
            f"{kind}: drop --bench."
        )
    out = check_output_file(Path(out) if out else default_output(target), "--out")
    started = time.perf_counter()
    page = _BUILDERS[kind](target, options, progress)
    page.update(
        kind=kind,
        target=str(target),
        generated=time.strftime("%Y-%m-%d %H:%M"),
        seconds=f"{time.perf_counter() - started:.1f}",
    )
    write_bytes_atomic(out, render(page).encode())
    return out


def render(page: dict[str, Any]) -> str:
    """The page from its template (autoescaped: names and paths come from users' files)."""
    import jinja2

    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("edge_fm", "templates"),
        autoescape=jinja2.select_autoescape(["html", "j2"]),
        undefined=jinja2.StrictUndefined,
    )
    environment.filters["percent"] = lambda value: "-" if value is None else f"{value:.2%}"
    environment.filters["kb"] = lambda value: "-" if value is None else f"{value / KB:.1f}"
    return environment.get_template(TEMPLATE).render(**page)


# ---------------------------------------------------------------- one builder per kind of target


def _run_page(path: Path, options: ReportOptions, progress) -> dict[str, Any]:
    from edge_fm.show.explain import KerasAnswers
    from edge_fm.train.runs import Run

    run = Run(path).require_model()
    page = _empty_page(f"{run.path.name}: {run.train_config.arch}, {run.stage} run")
    page["curves"] = curves(run)
    progress("scoring the run's model on its validation split")
    dataset = run.dataset(options.data_dir, data=options.data)
    images, labels = bounded(dataset.x_val, dataset.y_val, options.max_images)
    page["scored"] = f"{len(labels):,} images of the run's validation split ({dataset.describe()})"
    answers = KerasAnswers(run.model())
    _add_classification(page, f"Keras model of {run.path.name}", answers, images, labels, dataset.class_names)
    artifact = exported_artifact(run)
    _add_explanations(page, options, progress, images, labels, float_ancestor(run), artifact)
    return page


def _bundle_page(path: Path, options: ReportOptions, progress) -> dict[str, Any]:
    from edge_fm.show.predict import load_artifact

    bundle = Bundle.open(path)
    description = bundle.description
    model, labels_list = load_artifact(path)
    page = _empty_page(
        f"{path.name}: {description.get('architecture', 'model')}, {description.get('format', '.tflite')} bundle"
    )
    run = source_run(bundle.path, description, near=path)
    images, labels, page["scored"], _ = scored_images(run, options, description)
    if run is not None:
        page["curves"] = curves_of_lineage(run)
    _add_classification(
        page,
        f"{description.get('format', '.tflite')} artifact {path.name}",
        model,
        images,
        labels,
        labels_list,
    )
    _add_explanations(
        page,
        options,
        progress,
        images,
        labels,
        None if run is None else float_ancestor(run),
        (path, description.get("format", ".tflite"), model),
    )
    inspection_section(page, path, None if run is None else run.path, options.data_dir, progress)
    return page


def _pipeline_page(path: Path, options: ReportOptions, progress) -> dict[str, Any]:
    from edge_fm.show.predict import load_artifact

    record = read_json(path / PIPELINE_FILE)
    if record.get("status") != "complete":
        raise EdgeFMError(
            f"{path} has not finished (its record says {record.get('status', 'nothing')!r}): continue it with "
            f"`edge-fm pipeline --resume {path}`, which writes its report."
        )
    stages = record.get("stages", {})
    page = _empty_page(f"{path.name}: pipeline of {record.get('config', {}).get('arch', '?')}")
    run = recorded_run(stages.get("train"), path)
    if run is not None:
        page["curves"] = curves_of_lineage(
            recorded_run(stages.get("qat") or stages.get("prune") or stages.get("train"), path)
        )
    if (path / BENCH_FILE).is_file():
        _add_front(page, bench_rows(read_bench(path / BENCH_FILE)), f"{path / BENCH_FILE}")
    best = record.get("best") or {}
    exports = stages.get("exports", {})
    if best.get("path") and run is not None:
        bundle = path / best["path"]
        model, labels_list = load_artifact(bundle)
        images, labels, page["scored"], _ = scored_images(run, options)
        _add_classification(
            page, f"best artifact {best['artifact']} ({best['format']})", model, images, labels, labels_list
        )
        int8 = next(
            (
                exports[f]
                for f in (best.get("format"), "int8", "qat-int8")
                if f and "int8" in f and f in exports
            ),
            None,
        )
        artifact = None
        if int8 is not None:
            artifact = (
                path / int8,
                read_description(path / int8).get("format"),
                load_artifact(path / int8)[0],
            )
        source = recorded_run(stages.get("prune") or stages.get("train"), path)
        _add_explanations(page, options, progress, images, labels, source, artifact)
    return page


def _bench_page(path: Path, options: ReportOptions, progress) -> dict[str, Any]:
    result = read_bench(path)
    page = _empty_page(f"{path.name}: benchmark on {result.get('target', '?')}")
    rows = bench_rows(result)
    page["notes"].append(f"Test set: {result.get('test_set', {}).get('source', 'not recorded')}.")
    _add_front(page, rows, str(path))
    _add_recalls(page, rows, (result.get("test_set", {}).get("data") or {}).get("class_names"))
    return page


def _folder_page(path: Path, options: ReportOptions, progress) -> dict[str, Any]:
    rows, source = folder_rows(path, options.bench)
    page = _empty_page(f"{path.name}/: {len(rows)} bundles")
    _add_front(page, rows, source)
    _add_recalls(page, rows, _labels_of(rows))
    return page


def _labels_of(rows: list[dict]) -> list[str] | None:
    """The class names of the first readable bundle among ``rows`` (the models' own, in output order)."""
    for row in rows:
        try:
            labels = list(Bundle.open(row.get("path", "")).labels)
        except EdgeFMError:
            continue
        if labels:
            return labels
    return None


_BUILDERS = {
    "run": _run_page,
    "bundle": _bundle_page,
    "pipeline": _pipeline_page,
    "bench": _bench_page,
    "folder": _folder_page,
}


def _empty_page(title: str) -> dict[str, Any]:
    return {
        "title": title,
        "scored": None,
        "notes": [],
        "curves": [],
        "front": None,
        "classification": None,
        "gallery": None,
        "boxes": None,
        "explanations": None,
        "recalls": None,
        "inspection": None,
        "class_names": None,
    }


# ---------------------------------------------------------------- sections


def _add_classification(
    page: dict, what: str, model, images: np.ndarray, labels: np.ndarray, names: list[str] | None = None
) -> None:
    names = list(names or CLASS_NAMES)
    page["class_names"] = names
    probs = np.asarray(model.predict_proba(images))
    metrics = classification_metrics(labels, probs)
    page["classification"] = {
        "what": what,
        "accuracy": metrics["accuracy"],
        "macro_f1": metrics["macro_f1"],
        "examples": metrics["examples"],
        "per_class": [{"name": name, **scores} for name, scores in zip(names, metrics["per_class"].values())],
        "confusion": data_uri(
            figures.confusion_heatmap(metrics["confusion_matrix"], names, f"Confusion matrix: {what}")
        ),
    }
    page["gallery"] = data_uri(figures.prediction_gallery(images, labels, probs, names))
    page["boxes"] = data_uri(figures.confidence_boxes(labels, probs, names))


def _add_explanations(
    page: dict, options: ReportOptions, progress, images: np.ndarray, labels: np.ndarray, float_run, artifact
) -> None:
    """Grad-CAM of the float model beside occlusion of the artifact, on one image per class."""
    if options.explained == 0 or (float_run is None and artifact is None):
        return
    names = page.get("class_names") or list(CLASS_NAMES)
    chosen = [int(np.flatnonzero(labels == c)[0]) for c in range(options.explained) if np.any(labels == c)]
    picked, classes = images[chosen], labels[chosen]
    rows, notes, methods = [], [], []
    if float_run is not None:
        progress(f"Grad-CAM of the float Keras model of {float_run.path.name}")
        try:
            cams = grad_cam(float_run.float_model(), picked, classes.tolist())
            rows.append(("Grad-CAM, float", list(cams)))
            methods.append(f"Grad-CAM of the float Keras model of {float_run.path.name}")
        except EdgeFMError as exc:
            notes.append(str(exc))
    else:
        notes.append(
            "Grad-CAM needs the run of the float Keras model, which was not found beside this target."
        )
    if artifact is not None:
        path, fmt, model = artifact
        progress(f"occlusion sensitivity of {path.name} through LiteRT")
        methods.append(f"occlusion of the {fmt} .tflite {path.name}")
        rows.append(
            (f"occlusion, {fmt}", [occlusion_map(model, image, int(c)) for image, c in zip(picked, classes)])
        )
    else:
        notes.append(
            "No int8 .tflite of this run was found beside it; export one with `edge-fm export RUN int8`."
        )
    # Correlated as shown: the evidence for the class, counter-evidence cut (Grad-CAM has none).
    correlations = (
        [map_correlation(evidence(a), evidence(b)) for a, b in zip(rows[0][1], rows[1][1])]
        if len(rows) == 2
        else []
    )
    titles = [
        names[c] + (f"\nr = {r:.2f}" if correlations and not math.isnan(r) else "")
        for c, r in zip(classes, correlations or [math.nan] * len(classes))
    ]
    finite = [r for r in correlations if not math.isnan(r)]
    page["explanations"] = {
        "png": data_uri(figures.explanation_grid(picked, rows, titles)) if rows else None,
        "methods": methods,
        "correlations": [{"name": names[c], "r": r} for c, r in zip(classes, correlations)],
        "mean": (sum(finite) / len(finite)) if finite else None,
        "mean_over": len(finite),  # an image whose map is flat has no correlation (n/a)
        "notes": notes,
    }


def _add_front(page: dict, rows: list[dict], source: str) -> None:

    measured = [
        row
        for row in rows
        if row.get("accuracy") is not None and (row.get("latency") or {}).get("p50_ms") is not None
    ]
    unmeasured = [figures.row_name(row) for row in rows if row not in measured]
    front = figures.pareto_front(measured)
    png = None
    if measured:
        with tempfile.TemporaryDirectory(prefix="edge-fm-report-") as tmp:
            figures.plot_front(measured, Path(tmp) / "front.png")
            png = data_uri((Path(tmp) / "front.png").read_bytes())
    table = [
        {
            "name": figures.row_name(row),
            "format": row.get("format") or "-",
            "bytes": row.get("bytes"),
            "accuracy": row.get("accuracy"),
            "delta": row.get("accuracy_delta"),
            "p50": (row.get("latency") or {}).get("p50_ms"),
            "p90": (row.get("latency") or {}).get("p90_ms"),
            "threads": row.get("threads"),
            "front": figures.row_name(row) in front,
        }
        for row in sorted(rows, key=lambda r: (-(r.get("accuracy") or 0), r.get("bytes") or 0))
    ]
    page["front"] = {"png": png, "rows": table, "source": source, "unmeasured": unmeasured}


def _add_recalls(page: dict, rows: list[dict], names: list[str] | None = None) -> None:
    """Recall per class of each model, where its row carries a confusion matrix."""
    with_matrix = [row for row in rows if row.get("confusion_matrix")]
    if not with_matrix:
        return
    classes = len(with_matrix[0]["confusion_matrix"])
    names = list(names or CLASS_NAMES)
    names = names if len(names) == classes else [str(c) for c in range(classes)]

    series = []
    for row in with_matrix:
        matrix = np.asarray(row["confusion_matrix"], dtype=np.float64)
        series.append((figures.row_name(row), (np.diag(matrix) / np.maximum(matrix.sum(axis=1), 1)).tolist()))
    page["recalls"] = data_uri(
        figures.per_class_bars(
            series, names, "Recall per class of each model (from the benchmark's confusion matrices)"
        )
    )

"""`edge-fm report` and `edge-fm explain`: self-contained pages and heat maps, checked on their values."""

from __future__ import annotations

import base64
import html.parser
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from browser import chromium_page
from PIL import Image
from typer.testing import CliRunner

from edge_fm.cli import app
from edge_fm.errors import EdgeFMError
from edge_fm.show.explain import map_correlation, occlusion_map

REPO = Path(__file__).resolve().parents[1]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class _Page(html.parser.HTMLParser):
    """The parts of a page the tests read: every URL it references, its images, ids and table cells."""

    def __init__(self, text: str):
        super().__init__()
        self.urls, self.images, self.ids, self.scripts, self.cells = [], [], set(), 0, {}
        self._table, self._cell = None, None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.ids.add(attrs.get("id"))
        self.scripts += tag == "script"
        self.urls += [value for key, value in attrs.items() if key in ("src", "href") and value]
        if tag == "img":
            self.images.append(attrs.get("src", ""))
        if tag == "table":
            self._table = attrs.get("id")
            self.cells[self._table] = []
        if tag in ("td", "th") and self._table:
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.cells[self._table].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def _read(path: Path) -> _Page:
    page = _Page(path.read_text())
    assert page.scripts == 0
    for url in page.urls:  # nothing from the network: every image is inline
        assert url.startswith("data:image/png;base64,"), url
        assert base64.b64decode(url.split(",", 1)[1])[:8] == PNG_SIGNATURE
    return page


def _rows(cells: list[str], columns: int) -> list[list[str]]:
    return [cells[i : i + columns] for i in range(0, len(cells), columns)]


def test_occlusion_finds_the_evidence():
    class Watcher:  # "probability" of class 0: the brightness of the top-left 8x8 corner
        def predict_proba(self, images):
            corner = images[:, :8, :8, 0].mean(axis=(1, 2)) / 255
            return np.stack([corner, 1 - corner], axis=1)

    image = np.full((28, 28), 200, dtype=np.uint8)
    heat = occlusion_map(Watcher(), image, 0)
    assert heat[:8, :8].min() > 0 and heat[12:, 12:].max() == 0
    assert np.unravel_index(heat.argmax(), heat.shape) < (8, 8)
    assert map_correlation(heat, heat) == pytest.approx(1.0)
    assert np.isnan(map_correlation(heat, np.zeros_like(heat)))


def test_grad_cam_forms_agree_on_an_averaging_head_and_not_on_a_flattening_one(exported):
    from edge_fm.compat import keras
    from edge_fm.show.explain import grad_cam, last_conv_layer
    from edge_fm.train.runs import Run

    inputs = keras.Input((28, 28, 1))
    maps = keras.layers.Conv2D(8, 3, activation="relu", name="conv")(keras.layers.Rescaling(1 / 255)(inputs))
    logits = keras.layers.Dense(10, name="logits")(keras.layers.GlobalAveragePooling2D()(maps))
    averaging = keras.Model(inputs, keras.layers.Activation("softmax", name="probs")(logits))
    images = np.random.default_rng(0).integers(0, 256, (4, 28, 28, 1), dtype=np.uint8)
    assert last_conv_layer(averaging) == "conv"
    np.testing.assert_allclose(
        grad_cam(averaging, images, [1, 2, 3, 4]),
        grad_cam(averaging, images, [1, 2, 3, 4], per_position=False),
        rtol=1e-4,
        atol=1e-6,
    )

    flattening = Run(exported["train"]).float_model()  # tiny-cnn: conv maps flattened into a dense layer
    dataset = Run(exported["train"]).dataset()
    labels = dataset.y_test[:40].tolist()
    per_position = grad_cam(flattening, dataset.x_test[:40], labels)
    assert (per_position.reshape(40, -1).max(axis=1) > 0).all()  # every map shows some evidence
    assert not np.allclose(
        per_position, grad_cam(flattening, dataset.x_test[:40], labels, per_position=False)
    )


def test_report_of_a_bundle_scores_and_explains(exported, tmp_path, monkeypatch):
    from edge_fm.show import html_report
    from edge_fm.show.html_report import ReportOptions, build_report
    from edge_fm.show.predict import load_artifact
    from edge_fm.train.metrics import classification_metrics
    from edge_fm.train.runs import Run

    calls = []

    def first_map_flat(a, b):  # a flat map has no correlation: the page says so and averages the others
        calls.append(1)
        return float("nan") if len(calls) == 1 else map_correlation(a, b)

    monkeypatch.setattr(html_report, "map_correlation", first_map_flat)
    out = build_report(exported["int8"], tmp_path / "bundle.html", ReportOptions(max_images=300))
    page = _read(out)
    assert {
        "training",
        "classification",
        "gallery",
        "confidence",
        "explanations",
        "per-class",
        "correlations",
    } <= page.ids
    # Training curves, confusion matrix, gallery, box plot, explanation grid.
    assert len(page.images) == 5
    # The per-class table holds what LiteRT gives on the same 300 test images.
    dataset = Run(exported["train"]).dataset()
    model, _ = load_artifact(exported["int8"])
    expected = classification_metrics(dataset.y_test[:300], model.predict_proba(dataset.x_test[:300]))
    rows = _rows(page.cells["per-class"], 5)[1:]
    for row, (name, scores) in zip(rows, expected["per_class"].items()):
        assert row == [
            name,
            f"{scores['precision']:.3f}",
            f"{scores['recall']:.3f}",
            f"{scores['f1']:.3f}",
            str(scores["support"]),
        ]
    assert f"{expected['accuracy']:.2%}" in out.read_text()
    correlations = _rows(page.cells["correlations"], 10)[1]
    values = [float(v) for v in correlations if v != "n/a"]
    assert values and all(-1 <= v <= 1 for v in values) and correlations[0] == "n/a"
    flat = correlations.count("n/a")
    text = " ".join(out.read_text().split())
    assert f"over {len(values)} images ({flat} n/a: a flat map has no correlation)." in text
    assert "300 test images" in out.read_text()


def test_report_of_a_run_finds_its_int8_export(exported):
    from edge_fm.show.html_report import ReportOptions, build_report

    out = build_report(exported["train"], options=ReportOptions(max_images=200, explained=4))
    assert out == exported["train"] / "report.html"
    page = _read(out)
    assert {"training", "classification", "explanations"} <= page.ids
    text = out.read_text()
    assert "Grad-CAM of the float Keras model of " + exported["train"].name in text
    assert f"occlusion of the int8 .tflite {exported['int8'].name}" in text
    assert len(_rows(page.cells["correlations"], 4)[1]) == 4
    assert "200 images of the run&#39;s validation split" in text


def test_report_of_a_pipeline_has_every_section(exported, tmp_path):
    from edge_fm.bench.benchmark import BenchOptions, bench, write_results
    from edge_fm.show.html_report import ReportOptions, build_report

    top = tmp_path / "tiny-cnn-pipeline-1"
    for key in ("train", "fp32", "int8"):
        shutil.copytree(exported[key], top / exported[key].name)
    result = bench(
        [top / exported["fp32"].name, top / exported["int8"].name],
        "local",
        BenchOptions(runs=5, min_seconds=0.01, warmup=1),
        sample=True,
    )
    write_results(result, top / "bench.json")
    int8 = next(row for row in result["rows"] if row["format"] == "int8")
    (top / "pipeline.json").write_text(
        json.dumps(
            {
                "config": {"arch": "tiny-cnn"},
                "stages": {
                    "train": exported["train"].name,
                    "exports": {"fp32": exported["fp32"].name, "int8": exported["int8"].name},
                },
                "best": {"artifact": int8["artifact"], "path": exported["int8"].name, "format": "int8"},
                "status": "complete",
            }
        )
    )
    out = build_report(top, options=ReportOptions(max_images=200, explained=3))
    page = _read(out)
    assert {
        "training",
        "front",
        "front-table",
        "classification",
        "gallery",
        "confidence",
        "explanations",
    } <= page.ids
    assert len(page.images) == 6  # curves, front, confusion, gallery, box plot, explanations
    table = {row[0]: row for row in _rows(page.cells["front-table"], 9)[1:]}
    assert table[int8["artifact"]][3] == f"{int8['accuracy']:.2%}"


def test_report_of_a_folder_shows_measured_front(tmp_path):
    from edge_fm.bench.measurements import folder_rows
    from edge_fm.show.figures import pareto_front
    from edge_fm.show.html_report import build_report

    folder = tmp_path / "models"
    for name in ("edge-cnn-tiny", "cnn-2conv", "mlp"):
        shutil.copytree(REPO / "models" / name, folder / name)
    out = build_report(folder)
    page = _read(out)
    table = {row[0]: row for row in _rows(page.cells["front-table"], 9)[1:]}
    assert set(table) == {"edge-cnn-tiny", "cnn-2conv", "mlp"}
    assert (
        table["edge-cnn-tiny"][2]
        == f"{(folder / 'edge-cnn-tiny' / 'model.tflite').stat().st_size / 1000:.1f}"
    )
    rows, source = folder_rows(folder)
    assert "measurement.json" in source and all(
        row["accuracy"] > 0.8 and row["latency"]["p50_ms"] > 0 for row in rows
    )
    # The figures are the recorded JSON's, whatever the card's text says.
    card = folder / "mlp" / "MODEL_CARD.md"
    card.write_text(card.read_text().replace("test accuracy", "tested").replace("p50", "median"))
    assert folder_rows(folder)[0] == rows
    assert {name for name, row in table.items() if row[8] == "yes"} == pareto_front(rows)


def test_report_of_a_bench_result_marks_the_front(tmp_path):
    from edge_fm.bench.measurements import bench_rows, read_bench
    from edge_fm.show.figures import pareto_front
    from edge_fm.show.html_report import build_report

    result = REPO / "benchmarks" / "results" / "models_bench.json"
    out = build_report(result, tmp_path / "bench.html")
    page = _read(out)
    rows = bench_rows(read_bench(result))
    table = _rows(page.cells["front-table"], 9)[1:]
    assert len(table) == len(rows)
    assert {row[0] for row in table if row[8] == "yes"} == pareto_front(rows)
    assert "recall" in page.ids


def test_report_errors_are_one_line(tmp_path):
    from edge_fm.show.html_report import build_report

    with pytest.raises(EdgeFMError, match="not a report target"):
        build_report(tmp_path)
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    result = CliRunner().invoke(
        app,
        [
            "report",
            str(REPO / "benchmarks" / "results" / "models_bench.json"),
            "--out",
            str(blocker / "report.html"),
        ],
    )
    assert result.exit_code == 1, result.output
    assert "is a file, not a folder" in result.output and len(result.output.strip().splitlines()) == 1
    stopped = tmp_path / "tiny-cnn-pipeline-1"  # killed after training: its record still says running
    stopped.mkdir()
    (stopped / "pipeline.json").write_text(json.dumps({"config": {"arch": "tiny-cnn"}, "status": "running"}))
    with pytest.raises(EdgeFMError, match="has not finished .*'running'.*edge-fm pipeline --resume"):
        build_report(stopped)
    assert not (stopped / "report.html").exists()


def test_explain_cli_writes_overlays(exported, tmp_path):
    from edge_fm.data.datasets import load_split
    from edge_fm.show.predict import classify_files

    images, _ = load_split("test", Path(__file__).resolve().parents[1] / "edge_fm" / "data" / "sample")
    shirt = tmp_path / "shirt.png"
    Image.fromarray(images[3, :, :, 0]).save(shirt)
    result = CliRunner().invoke(
        app, ["explain", str(exported["int8"]), str(shirt), "--out", str(tmp_path / "out")]
    )
    assert result.exit_code == 0, result.output
    overlay = tmp_path / "out" / "shirt.occlusion.png"
    assert Image.open(overlay).size == (224, 224)
    best = classify_files(exported["int8"], [shirt], top=1)[0].top[0][0]
    assert re.search(rf"shirt\.png: {re.escape(best)} \d", result.output)

    # Images of one name in different class folders each keep their overlay.
    for index, folder in ((3, "shirts"), (0, "boots"), (1, "boots/more")):
        (tmp_path / folder).mkdir(parents=True)
        Image.fromarray(images[index, :, :, 0]).save(tmp_path / folder / "img_004.png")
    same_name = [str(tmp_path / folder / "img_004.png") for folder in ("shirts", "boots", "boots/more")]
    result = CliRunner().invoke(
        app, ["explain", str(exported["int8"]), *same_name, "--out", str(tmp_path / "same")]
    )
    assert result.exit_code == 0, result.output
    written = sorted(path.name for path in (tmp_path / "same").iterdir())
    assert written == [f"{name}-img_004.occlusion.png" for name in ("boots", "more", "shirts")]
    assert len({(tmp_path / "same" / name).read_bytes() for name in written}) == 3


@pytest.mark.slow
def test_report_in_chromium_loads_every_image_and_nothing_else(exported, tmp_path):
    from edge_fm.show.html_report import ReportOptions, build_report

    out = build_report(exported["int8"], tmp_path / "report.html", ReportOptions(max_images=200))
    requested = []
    with chromium_page() as page:
        page.context.on("request", lambda request: requested.append(request.url))
        page.goto(out.as_uri())
        page.wait_for_load_state("load")
        sizes = page.eval_on_selector_all("img", "images => images.map(i => [i.complete, i.naturalWidth])")
        page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
    assert len(sizes) == 5 and all(done and width > 0 for done, width in sizes)
    assert requested and all(url.startswith(("file://", "data:")) for url in requested), requested


def test_reading_a_runs_model_prints_none_of_tensorflows_start_up_lines(exported):
    import os
    import subprocess
    import sys

    environment = {key: value for key, value in os.environ.items() if not key.startswith("TF_")}
    code = f"from edge_fm.train.runs import Run; Run({str(exported['train'])!r}).model()"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=environment)
    assert done.returncode == 0, done.stderr
    assert "oneDNN" not in done.stderr and "InitializeLog" not in done.stderr, done.stderr


def test_class_names_in_scripts_no_font_draws_give_one_warning_not_one_per_glyph(monkeypatch):
    import warnings

    from matplotlib import font_manager

    from edge_fm.show import figures

    monkeypatch.setattr(figures, "_warned_fonts", [])
    installed = {font.name for font in font_manager.fontManager.ttflist}
    drawn = any(name in installed for name in figures.FALLBACK_FONTS)
    labels = ["vögel 鳥", "猫", "dog"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(2):  # a report draws several figures: one warning in all
            png = figures.confusion_heatmap([[3, 1, 0], [0, 4, 0], [1, 0, 2]], labels, "classes")
    assert png.startswith(b"\x89PNG")
    messages = [str(w.message) for w in caught]
    assert not [m for m in messages if "missing from font" in m], messages
    assert len([m for m in messages if "no installed font draws" in m]) == (0 if drawn else 1), messages


@pytest.mark.parametrize(
    "content, expected",
    [
        ('{"schema": "edge-fm/bench/1", "results": {"rows": [{"artifact": "zz"}]}}', "has no 'command'"),
        (
            '{"rows": [{"artifact": "x", "status": "ok", "accuracy": NaN, "bytes": 10, "latency": {"p50_ms": 1}}]}',
            "rows[0] is marked ok but its accuracy is nan",
        ),
        (
            '{"rows": [{"artifact": "x", "status": "ok", "threads": 1, "bytes": 10, "latency": {"p50_ms": "fast"}}]}',
            "rows[0] is marked ok but its latency.p50_ms is 'fast'",
        ),
    ],
)
def test_a_hand_made_bench_result_is_one_line(tmp_path, content, expected):
    result = tmp_path / "weird.json"
    result.write_text(content)
    outcome = CliRunner().invoke(app, ["report", str(result), "--out", str(tmp_path / "r.html")])
    assert outcome.exit_code == 1 and expected in outcome.output, outcome.output
    assert "Traceback" not in outcome.output and not (tmp_path / "r.html").exists()

"""The mobile form: RGB uint8 input, grey conversion in the graph, standard TFLite Metadata, and
proof in the real clients (MediaPipe Tasks, the TFLite Task Library) run from their own environments."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from shipped import record_only_forms, stored_mobile_forms
from typer.testing import CliRunner

from edge_fm.cli import app
from edge_fm.data.datasets import CLASS_NAMES, load_split
from edge_fm.errors import EdgeFMError
from edge_fm.export.exporter import convert, get_format
from edge_fm.export.form_options import FormOptions
from edge_fm.export.mobile import (
    GREY_WEIGHTS,
    compare_with_int8,
    export_mobile,
    grey_to_rgb,
    record_client_check,
    ship_mobile_form,
)
from edge_fm.export.tflite_file import read_metadata
from edge_fm.export.tflite_metadata import (
    ImageClassifierInfo,
    build_metadata,
    metadata_buffer,
    packed_files,
    populate,
)
from edge_fm.export.tflite_rgb import DROP_REPEAT, FOLD_CONV, FOLD_DENSE, LUMA_CONV, rgb_form
from edge_fm.runner import TFLiteModel
from edge_fm.zoo import create_model

REPO = Path(__file__).resolve().parents[1]
CLIENTS = Path(__file__).resolve().parent / "clients"
sys.path.insert(0, str(CLIENTS))
from environments import ClientUnavailable, client_python  # noqa: E402

CLIENT_IMAGES = 600


def _client(name: str) -> Path:
    try:
        return client_python(name)
    except ClientUnavailable as exc:
        if os.environ.get("CI"):
            pytest.fail(str(exc))
        pytest.skip(str(exc))


def _run_client(script: str, python: Path, model: Path, images: np.ndarray, tmp_path: Path) -> dict:
    batch = tmp_path / "images.npy"
    np.save(batch, images)
    done = subprocess.run(
        [str(python), str(CLIENTS / script), str(model), str(batch)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


def _litert_outputs(model: Path, images: np.ndarray) -> np.ndarray:
    """Probabilities from the LiteRT interpreter, one image at a time, as the clients run it."""
    runner = TFLiteModel(model_path=str(model))
    return np.concatenate([runner.predict_proba(images[i : i + 1]) for i in range(len(images))])


def _tinted(grey: np.ndarray) -> np.ndarray:
    """Coloured versions of grey images: each channel a different share of the grey value."""
    shares = np.array([1.0, 0.75, 0.35])
    grey = grey.reshape(*grey.shape[:3], 1).astype(np.float64)
    return np.clip(np.round(grey * shares), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def mobile_runs(tmp_path_factory):
    # Its own runs folder: the shared fixture's folder is benchmarked whole by other test files.
    return tmp_path_factory.mktemp("mobile-runs")


@pytest.fixture(scope="module")
def mobile_bundle(exported, data_dir, mobile_runs):
    return export_mobile(exported["train"], FormOptions("int8", parity_images=400, runs_dir=mobile_runs))


@pytest.fixture(scope="module")
def test_images(data_dir):
    images, labels = load_split("test", data_dir)
    return images[:CLIENT_IMAGES], labels[:CLIENT_IMAGES]


# ---------------------------------------------------------------- every zoo architecture


@pytest.mark.parametrize(
    ("arch", "options", "method"),
    [
        ("tiny-cnn", {}, FOLD_CONV),
        ("mlp", {}, FOLD_DENSE),
        ("cnn-2conv", {}, FOLD_CONV),
        # One of each method stays in the fast set; the larger builds run with the slow tests.
        pytest.param("cnn-3conv-bn", {}, FOLD_CONV, marks=pytest.mark.slow),
        ("cnn-3conv-bn", {"input_size": 32, "rgb": True}, DROP_REPEAT),
        pytest.param("vgg-gap", {}, FOLD_CONV, marks=pytest.mark.slow),
        pytest.param("edge-cnn-tiny", {}, FOLD_CONV, marks=pytest.mark.slow),
        pytest.param("edge-cnn", {}, FOLD_CONV, marks=pytest.mark.slow),
        pytest.param("mobilenetv2", {"alpha": 0.35, "head_units": 0}, DROP_REPEAT, marks=pytest.mark.slow),
        # Its repeat feeds a zero padding, not the convolution: the exact 1x1 luma convolution goes in front.
        pytest.param("resnet50", {}, LUMA_CONV, marks=pytest.mark.slow),
    ],
)
def test_every_zoo_architecture_exported_as_int8_takes_the_rgb_form(arch, options, method, test_images):
    """Untrained (random) weights: the int8 export of each architecture becomes an RGB form that
    gives the int8 outputs bit for bit on grey images, through the one graph-side luma split."""
    model = create_model(arch, **options)
    images = test_images[0][:200]
    # 50 calibration images: the ranges need not be good, only the same for both; each one costs ResNet50
    # a float pass in the calibrator (200 images: 50 s of conversion, 50: under 30 s).
    int8 = convert(model, get_format("int8"), "int8", images[:50])
    form = rgb_form(int8)
    assert form.method == method
    parity = compare_with_int8(form.tflite, int8, images, test_images[1][:200])
    assert parity["identical_to_int8"], parity


# ---------------------------------------------------------------- the standard metadata


def test_populate_adds_one_metadata_entry_and_packs_the_labels(exported):
    plain = (exported["int8"] / "model.tflite").read_bytes()
    info = ImageClassifierInfo(name="m", description="d", labels=("a", "b"))
    once = populate(plain, build_metadata(info), {"labels.txt": b"a\nb\n"})
    assert metadata_buffer(once)[4:8] == b"M001"
    assert packed_files(once) == {"labels.txt": b"a\nb\n"}
    # still a model the interpreter runs, with edge-fm's own entries kept
    assert TFLiteModel(model_content=once).predict_proba(np.zeros((1, 28, 28), np.uint8)).shape == (1, 10)
    assert read_metadata(once)["labels"] == list(CLASS_NAMES)
    with pytest.raises(EdgeFMError, match="already has files packed"):
        populate(once, build_metadata(info), {})
    with pytest.raises(EdgeFMError, match="color space"):
        ImageClassifierInfo(name="m", description="d", labels=("a",), color_space="BGR")


# ---------------------------------------------------------------- the export


def test_mobile_bundle_from_a_run_takes_rgb_bytes_and_equals_the_int8_artifact_on_grey(
    mobile_bundle, mobile_runs, test_images
):
    description = json.loads((mobile_bundle / "model.json").read_text())
    assert mobile_bundle.name.startswith("tiny-cnn-int8-mobile-") and description["target"] == "mobile"
    assert description["input"]["dtype"] == "uint8" and description["input"]["shape"] == [1, 28, 28, 3]
    assert (description["input"]["scale"], description["input"]["zero_point"]) == (1.0, 0)
    assert (description["output"]["dtype"], description["output"]["zero_point"]) == ("uint8", 0)
    record = description["mobile"]
    assert record["grey_conversion"]["method"] == FOLD_CONV and record["grey_conversion"]["weights"] == list(
        GREY_WEIGHTS
    )
    assert record["parity"]["images"] == 400 and record["identical_to_int8"] is True
    assert record["parity"]["top1_agreement"] == 1.0 and record["parity"]["max_probability_difference"] == 0.0
    assert [c["client"] for c in record["clients"]] == ["LiteRT interpreter"]
    # made from the int8 artifact the run's export wrote just before, in the same runs folder
    int8_file = Path(record["made_from"]["file"])
    assert int8_file.parent.name.startswith("tiny-cnn-int8-") and int8_file.parent.parent == mobile_runs
    assert {"DEQUANTIZE", "QUANTIZE"} <= set(
        description["export"]["ops"]
    ) and "CONCATENATION" not in description["export"]["ops"]
    assert (
        read_metadata(mobile_bundle / "model.tflite")["description"]["mobile"] == record
    )  # the embedded copy
    images, labels = test_images
    mobile = _litert_outputs(mobile_bundle / "model.tflite", grey_to_rgb(images))
    int8 = _litert_outputs(int8_file, images)
    np.testing.assert_array_equal(mobile, int8)  # same integers, bit for bit, on grey images
    assert (mobile.argmax(1) == labels).mean() > 0.6


def test_mobile_bundle_from_an_int8_bundle_leaves_it_unchanged(exported, data_dir, tmp_path):
    source = exported["int8"] / "model.tflite"
    before = source.read_bytes()
    bundle = export_mobile(
        exported["int8"], FormOptions(parity_images=500, data_dir=data_dir, out=tmp_path / "mobile")
    )
    assert source.read_bytes() == before
    assert sorted(p.name for p in bundle.iterdir()) == [
        "labels.txt",
        "manifest.json",
        "model.json",
        "model.tflite",
    ]
    description = json.loads((bundle / "model.json").read_text())
    assert description["name"] == f"{exported['int8'].name.rsplit('-', 1)[0]}-mobile"
    assert description["mobile"]["parity"]["data"] == "Fashion-MNIST test split, first 500"
    assert description["mobile"]["identical_to_int8"] is True
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert (
        manifest["target"] == "mobile"
        and manifest["files"]["model.tflite"]["sha256"] == description["artifact"]["sha256"]
    )
    with pytest.raises(EdgeFMError, match="already a mobile form"):
        export_mobile(bundle, FormOptions(data_dir=data_dir, out=tmp_path / "again"))
    with pytest.raises(EdgeFMError, match="not an empty folder"):
        export_mobile(exported["int8"], FormOptions(data_dir=data_dir, out=bundle))


def test_colour_images_classify_like_their_grey_conversion(mobile_bundle, exported, test_images):
    int8_file = json.loads((mobile_bundle / "model.json").read_text())["mobile"]["made_from"]["file"]
    colour = _tinted(test_images[0])
    luma = np.clip(np.round(colour.astype(np.float64) @ np.array(GREY_WEIGHTS)), 0, 255).astype(np.uint8)
    mobile = _litert_outputs(mobile_bundle / "model.tflite", colour).argmax(1)
    int8 = _litert_outputs(Path(int8_file), luma).argmax(1)
    assert (mobile == int8).mean() >= 0.97


def test_mobile_export_refuses_float_formats_the_wrong_run_and_a_float_bundle(exported, data_dir, tmp_path):
    with pytest.raises(EdgeFMError, match="integer export"):
        export_mobile(exported["train"], FormOptions("fp32", runs_dir=exported["root"]))
    with pytest.raises(EdgeFMError, match="needs a QAT run"):
        export_mobile(exported["train"], FormOptions("qat-int8", runs_dir=exported["root"]))
    with pytest.raises(EdgeFMError, match="needs an int8 image input"):
        export_mobile(exported["fp32"], FormOptions(data_dir=data_dir, out=tmp_path / "fp32"))
    with pytest.raises(EdgeFMError, match="nothing to export as qat-int8"):
        export_mobile(exported["int8"], FormOptions("qat-int8", data_dir=data_dir, out=tmp_path / "qat"))
    with pytest.raises(EdgeFMError, match="holds no .tflite model"):
        export_mobile(tmp_path, FormOptions(data_dir=data_dir))


def test_cli_exports_the_mobile_form_of_a_bundle_without_a_format(exported, data_dir, tmp_path):
    out = tmp_path / "cli-mobile"
    result = CliRunner().invoke(
        app,
        [
            "export",
            str(exported["int8"]),
            "--for",
            "mobile",
            "--out",
            str(out),
            "--parity-images",
            "300",
            "--data-dir",
            str(data_dir),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "identical outputs to the int8 artifact on 300 grey test images" in " ".join(result.output.split())
    assert json.loads((out / "model.json").read_text())["input"]["shape"] == [1, 28, 28, 3]
    refused = CliRunner().invoke(app, ["export", str(exported["int8"])])
    assert refused.exit_code == 1 and "give a format" in refused.output, refused.output


def test_ship_mobile_form_writes_the_mobile_folder_and_keeps_the_int8_file(tmp_path, data_dir):
    folder = tmp_path / "mlp"
    folder.mkdir()
    for name in ("model.tflite", "model.json", "labels.txt"):
        (folder / name).write_bytes((REPO / "models" / "mlp" / name).read_bytes())
    bundle = ship_mobile_form(folder, data_dir=data_dir)
    assert bundle == folder / "mobile"
    assert (folder / "model.tflite").read_bytes() == (REPO / "models" / "mlp" / "model.tflite").read_bytes()
    record = json.loads((bundle / "model.json").read_text())["mobile"]
    assert record["parity"]["images"] == 10_000 and record["identical_to_int8"] is True
    assert record["grey_conversion"]["method"] == FOLD_DENSE
    updated = record_client_check(
        bundle, {"client": "MediaPipe Tasks ImageClassifier", "version": "1", "images": 3}
    )
    assert [c["client"] for c in updated["mobile"]["clients"]] == [
        "LiteRT interpreter",
        "MediaPipe Tasks ImageClassifier",
    ]
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["files"]["model.json"]["bytes"] == (bundle / "model.json").stat().st_size
    with pytest.raises(EdgeFMError, match="not a mobile bundle"):
        record_client_check(folder, {"client": "x"})


# Models whose mobile form the repository stores (resnet50's is a record: its own test rebuilds it).
SHIPPED = [form.parent for form in stored_mobile_forms()]


@pytest.mark.parametrize("model", SHIPPED, ids=lambda p: p.name)
def test_shipped_mobile_form_is_made_from_the_shipped_int8_file(model):
    bundle = model / "mobile"
    description = json.loads((bundle / "model.json").read_text())
    tflite = (bundle / "model.tflite").read_bytes()
    record = description["mobile"]
    assert record["made_from"]["sha256"] == hashlib.sha256((model / "model.tflite").read_bytes()).hexdigest()
    assert description["artifact"]["sha256"] == hashlib.sha256(tflite).hexdigest()
    assert record["identical_to_int8"] is True and record["parity"]["images"] == 10_000
    assert description["input"]["shape"] == [1, 28, 28, 3] and description["input"]["dtype"] == "uint8"
    assert metadata_buffer(tflite)[4:8] == b"M001" and packed_files(tflite) == {
        "labels.txt": (bundle / "labels.txt").read_bytes()
    }
    assert (bundle / "labels.txt").read_text().splitlines() == list(CLASS_NAMES)


# ---------------------------------------------------------------- the real clients


def _check_client_result(result: dict, model: Path, images: np.ndarray, ties_by_index: bool = True) -> None:
    reference = _litert_outputs(model, images)
    assert result["count"] == len(images)
    top = np.array(result["top1"])
    best = reference.max(axis=1)
    # The client's top class holds LiteRT's top score on every image. MediaPipe orders a tie at
    # the top by index, as argmax does, so its top class is LiteRT's; the Task Library orders
    # ties its own way.
    assert np.all(reference[np.arange(len(top)), top] == best), "top-1 differs from the LiteRT interpreter"
    if ties_by_index:
        assert np.mean(top == reference.argmax(1)) == 1.0
    assert np.abs(np.array(result["scores"]) - reference).max() <= 0.5 / 256  # within the output's rounding
    assert result["label_names"] == list(CLASS_NAMES)


def test_mediapipe_image_classifier_agrees_with_litert(mobile_bundle, test_images, tmp_path):
    python = _client("mediapipe")
    model = mobile_bundle / "model.tflite"
    images = np.concatenate([grey_to_rgb(test_images[0]), _tinted(test_images[0][:100])])
    result = _run_client("mediapipe_classify.py", python, model, images, tmp_path)
    _check_client_result(result, model, images)
    metadata = result["metadata"]
    assert {"TFLITE_METADATA", "edge_fm.model_json", "edge_fm.labels"} <= set(metadata["entries"])
    assert metadata["name"].startswith("tiny-cnn-int8-mobile") and metadata["license"] == "MIT"
    assert metadata["min_parser_version"] == "1.0.0"
    assert metadata["input"] == {
        **metadata["input"],
        "content": "image",
        "color_space": "RGB",
        "process_unit": "normalization",
        "mean": [0.0],
        "std": [1.0],
    }
    assert metadata["output"]["associated_files"] == [{"name": "labels.txt", "type": "TENSOR_AXIS_LABELS"}]
    assert metadata["packed_files"]["labels.txt"].splitlines() == list(CLASS_NAMES)


def test_mediapipe_classifies_with_the_shipped_mobile_form_as_litert_does(test_images, tmp_path):
    python = _client("mediapipe")
    model = REPO / "models" / "edge-cnn-tiny" / "mobile" / "model.tflite"
    images = grey_to_rgb(test_images[0])
    result = _run_client("mediapipe_classify.py", python, model, images, tmp_path)
    _check_client_result(result, model, images)
    assert np.mean(np.array(result["top1"]) == test_images[1]) > 0.9
    assert result["metadata"]["name"] == "edge-cnn-tiny-int8-mobile"
    assert result["metadata"]["packed_files"]["labels.txt"].splitlines() == list(CLASS_NAMES)


def test_task_library_image_classifier_agrees_with_litert(mobile_bundle, test_images, tmp_path):
    python = _client("task-library")
    model = mobile_bundle / "model.tflite"
    images = grey_to_rgb(test_images[0][:300])
    result = _run_client("task_library_classify.py", python, model, images, tmp_path)
    _check_client_result(result, model, images, ties_by_index=False)
    subgraph = result["metadata"]["json"]["subgraph_metadata"][0]
    assert subgraph["input_tensor_metadata"][0]["content"]["content_properties"] == {"color_space": "RGB"}
    assert result["metadata"]["packed_files"] == ["labels.txt"]


def _record_of(form: Path, folder: Path) -> Path:
    """A copy of a shipped form's record (model.json, labels.txt, manifest.json) without its model."""
    folder.mkdir()
    for name in ("model.json", "labels.txt", "manifest.json"):
        (folder / name).write_bytes((form / name).read_bytes())
    return folder


def _export_mobile_form(model: Path, out: Path, *more: str):
    """``edge-fm export MODEL --for mobile --out OUT [MORE]`` through the CLI."""
    return CliRunner().invoke(app, ["export", str(model), "--for", "mobile", "--out", str(out), *more])


def test_a_form_kept_as_its_record_is_rebuilt_byte_for_byte_from_anywhere(data_dir, tmp_path, monkeypatch):
    record = _record_of(REPO / "models" / "mlp" / "mobile", tmp_path / "form")
    # The record names models/mlp/model.tflite: the bytes must not depend on the path typed.
    monkeypatch.chdir(tmp_path)
    result = _export_mobile_form(REPO / "models" / "mlp", record, "--data-dir", data_dir)
    assert result.exit_code == 0, result.output
    assert (record / "model.tflite").read_bytes() == (
        REPO / "models" / "mlp" / "mobile" / "model.tflite"
    ).read_bytes()


def test_a_record_of_another_artifact_is_refused_and_nothing_is_written(tmp_path):
    record = _record_of(REPO / "models" / "mlp" / "mobile", tmp_path / "form")
    result = _export_mobile_form(REPO / "models" / "edge-cnn-tiny", record)
    assert result.exit_code != 0 and "records the mobile form of another artifact" in result.output
    assert len(result.output.strip().splitlines()) == 1 and not (record / "model.tflite").exists()


@pytest.mark.slow
def test_resnet50s_mobile_form_is_a_record_that_its_command_rebuilds_for_mediapipe(
    data_dir, test_images, tmp_path
):
    # The 24.8 MB form is not stored: its record holds the SHA-256 that the documented command must reproduce.
    shipped = REPO / "models" / "resnet50"
    assert shipped / "mobile" in record_only_forms()
    assert "models/resnet50/mobile/model.tflite" in (REPO / ".gitignore").read_text().splitlines()
    description = json.loads((shipped / "mobile" / "model.json").read_text())
    assert (
        description["mobile"]["made_from"]["sha256"]
        == hashlib.sha256((shipped / "model.tflite").read_bytes()).hexdigest()
    )
    assert description["mobile"]["identical_to_int8"] and description["mobile"]["parity"]["images"] == 10_000
    mediapipe = [
        c for c in description["mobile"]["clients"] if c["client"] == "MediaPipe Tasks ImageClassifier"
    ]
    assert mediapipe and mediapipe[0]["top1_agreement_with_litert"] == 1.0
    form = _record_of(shipped / "mobile", tmp_path / "form")
    result = _export_mobile_form(shipped, form, "--data-dir", data_dir)
    assert result.exit_code == 0, result.output
    model = form / "model.tflite"
    assert hashlib.sha256(model.read_bytes()).hexdigest() == description["artifact"]["sha256"]
    images = grey_to_rgb(test_images[0][:200])
    client = _run_client("mediapipe_classify.py", _client("mediapipe"), model, images, tmp_path)
    _check_client_result(client, model, images)
    assert client["metadata"]["packed_files"]["labels.txt"].splitlines() == list(CLASS_NAMES)


def test_a_damaged_record_or_a_complete_form_is_refused_in_one_line(tmp_path):
    record = _record_of(REPO / "models" / "mlp" / "mobile", tmp_path / "form")
    description = json.loads((record / "model.json").read_text())
    del description["mobile"]["made_from"]
    (record / "model.json").write_text(json.dumps(description))
    damaged = _export_mobile_form(REPO / "models" / "mlp", record)
    assert damaged.exit_code != 0 and "is not a whole record of a mobile form" in damaged.output
    assert "Traceback" not in damaged.output and not (record / "model.tflite").exists()
    assert len(damaged.output.strip().splitlines()) == 1, damaged.output
    form = tmp_path / "complete"  # a copy: a broken refusal must not rebuild the shipped folder
    shutil.copytree(REPO / "models" / "mlp" / "mobile", form)
    before = {path.name: path.read_bytes() for path in form.iterdir()}
    complete = _export_mobile_form(REPO / "models" / "mlp", form)
    assert complete.exit_code != 0 and "already holds its mobile form" in complete.output
    assert "the SHA-256 its record gives" in complete.output
    assert len(complete.output.strip().splitlines()) == 1, complete.output
    assert {path.name: path.read_bytes() for path in form.iterdir()} == before


def test_every_command_scores_a_grey_models_mobile_form_on_grey_images(data_dir, tmp_path):
    # The RGB form of a grey model is fed the grey test images with three equal channels, as its
    # export checked it: bench, report and inspect measure it as evaluate does.
    form, int8 = REPO / "models" / "mlp" / "mobile", REPO / "models" / "mlp"
    result = CliRunner().invoke(
        app,
        [
            "bench",
            str(form),
            str(int8),
            "--sample",
            "--runs",
            "5",
            "--min-seconds",
            "0.01",
            "--json",
            str(tmp_path / "b.json"),
        ],
    )
    assert result.exit_code == 0, result.output
    rows = json.loads((tmp_path / "b.json").read_text())["results"]["rows"]
    assert [row["status"] for row in rows] == ["ok", "ok"], rows
    assert rows[0]["accuracy"] == rows[1]["accuracy"]  # identical outputs on grey images
    report = CliRunner().invoke(app, ["report", str(form), "--sample", "--out", str(tmp_path / "r.html")])
    assert report.exit_code == 0, report.output
    inspected = CliRunner().invoke(
        app, ["inspect", str(form), "--json", "--runtimes", "", "--data-dir", str(data_dir)]
    )
    assert inspected.exit_code == 0, inspected.output
    errors = json.loads(inspected.output[inspected.output.index("{") :])["errors"]
    assert errors["status"] == "measured", errors


def test_the_mobile_check_on_few_images_allows_one_image_not_half_a_point():
    from edge_fm.runner import TFLiteModel

    images, labels = load_split("test", REPO / "edge_fm" / "data" / "sample")
    one, other = ((REPO / "models" / name / "model.tflite").read_bytes() for name in ("mlp", "cnn-2conv"))
    answers = [TFLiteModel(model_content=model).predict_proba(images).argmax(1) for model in (one, other)]
    same = np.flatnonzero(answers[0] == answers[1])
    differ = np.flatnonzero((answers[0] != answers[1]) & (answers[0] != labels) & (answers[1] != labels))
    for flips, passes in ((1, True), (2, False)):
        chosen = np.r_[same[:20], differ[:flips]]  # the second model answers like the first but for the flips
        check = compare_with_int8(other, one, images[chosen], labels[chosen])
        assert check["passed"] is passes and check["rule"].endswith(f"(one image of {len(chosen)})"), check
    with pytest.raises(EdgeFMError, match="--parity-images 0: give at least 1"):
        FormOptions(parity_images=0)

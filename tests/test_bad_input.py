"""Every bad input ends in one clear line, a non-zero exit, and nothing half-written.

Each case goes through the real entry point (``main``, whose usage errors are one line) inside
Typer's CliRunner isolation, and fails before any training unless it says otherwise.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import tomllib
from PIL import Image
from typer.testing import CliRunner

from edge_fm.cli import main
from edge_fm.data import datasets as data
from edge_fm.show.predict import image_to_input

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()


def run_cli(*argv) -> tuple[int, str]:
    """Runs ``edge-fm ARGV``; returns the exit code and everything printed."""
    with runner.isolation() as (out, err, *_):
        code = main([str(arg) for arg in argv])
        printed = out.getvalue().decode() + err.getvalue().decode()
    return code, printed


def assert_one_line_error(code: int, output: str, expected: str) -> None:
    lines = [line for line in output.splitlines() if line.strip()]
    assert code != 0, output
    assert "Traceback" not in output, output
    assert len(lines) == 1 and lines[0].startswith("error: "), output
    assert expected in lines[0], output


def files_under(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.fixture
def place(tmp_path, monkeypatch):
    """A working folder holding a regular file ``somefile.txt`` and an empty folder ``empty``."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "somefile.txt").write_text("not a folder\n")
    (tmp_path / "empty").mkdir()
    return tmp_path


@pytest.fixture(scope="module")
def untrained_bundle(tmp_path_factory):
    """An fp32 .tflite of the untrained tiny test network (no training: a second or two), in a bundle folder."""
    from edge_fm.export.exporter import convert, get_format
    from edge_fm.zoo import create_model

    bundle = tmp_path_factory.mktemp("bundle")
    (bundle / "model.tflite").write_bytes(convert(create_model("tiny-cnn"), get_format("fp32"), "float32"))
    return bundle


@pytest.fixture(scope="module")
def reference_image() -> np.ndarray:
    """A real Fashion-MNIST test image (from the embedded sample), enlarged to 56x56 grey."""
    images, _ = data.load_split("test", data.SAMPLE_DIR)
    return np.kron(images[0, :, :, 0], np.ones((2, 2), dtype=np.uint8))


# ---------------------------------------------------------------- outputs that cannot be written


@pytest.mark.parametrize(
    "option, value, expected",
    [
        (
            "--json",
            "somefile.txt/out.json",
            "cannot write --json somefile.txt/out.json: somefile.txt is a file, not a folder",
        ),
        (
            "--csv",
            "somefile.txt/out.csv",
            "cannot write --csv somefile.txt/out.csv: somefile.txt is a file, not a folder",
        ),
        (
            "--plot",
            "somefile.txt/deep/front.png",
            "cannot write --plot somefile.txt/deep/front.png: somefile.txt is a file",
        ),
        ("--json", "empty", "cannot write --json empty: it is a folder; give the path of a file"),
    ],
)
def test_bench_refuses_an_unwritable_output_before_measuring(place, option, value, expected):
    (place / "model.tflite").write_bytes(b"never read: the output is checked first")
    before = files_under(place)
    code, output = run_cli("bench", "model.tflite", option, value)
    assert_one_line_error(code, output, expected)
    assert files_under(place) == before  # nothing written, not even a temporary file
    assert (place / "somefile.txt").read_text() == "not a folder\n"


def test_evaluate_refuses_json_under_a_file_before_scoring(place):
    code, output = run_cli("evaluate", "any-run", "--json", "somefile.txt/metrics.json")
    assert_one_line_error(
        code, output, "cannot write --json somefile.txt/metrics.json: somefile.txt is a file"
    )


@pytest.mark.parametrize(
    "runs_dir, expected",
    [
        ("somefile.txt", "runs folder somefile.txt is a file, not a folder: choose a folder path."),
        (
            "somefile.txt/runs",
            "cannot write runs folder somefile.txt/runs: somefile.txt is a file, not a folder",
        ),
    ],
)
def test_train_refuses_a_runs_dir_that_is_or_lies_under_a_file(place, runs_dir, expected):
    code, output = run_cli("train", "tiny-cnn", "--sample", "--epochs", "1", "--runs-dir", runs_dir)
    assert_one_line_error(code, output, expected)
    assert files_under(place) == ["empty", "somefile.txt"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_runs_dir_is_refused(place):
    locked = place / "locked"
    locked.mkdir(mode=0o555)
    code, output = run_cli("train", "tiny-cnn", "--sample", "--runs-dir", locked)
    assert_one_line_error(code, output, "permission denied")
    assert not any(locked.iterdir())


@pytest.mark.skipif(
    not Path("/sys/kernel").is_dir(), reason="needs Linux sysfs, where nobody may create files"
)
def test_a_folder_the_system_refuses_is_an_error_not_a_traceback():
    # sysfs passes the up-front access check for root but refuses the file itself: the atomic
    # write's own failure must still be the one error type the CLI prints as a line.
    from edge_fm.errors import EdgeFMError
    from edge_fm.io import write_json

    with pytest.raises(EdgeFMError, match=r"cannot write /sys/kernel/edge-fm.json: .*permission denied"):
        write_json(Path("/sys/kernel/edge-fm.json"), {"a": 1})


def test_data_fetch_refuses_a_data_dir_under_a_file_before_downloading(place):
    # Port 9 (discard) is closed: reaching the download would fail with "connection refused" instead.
    code, output = run_cli("data", "fetch", "--data-dir", "somefile.txt/fm", "--url", "http://127.0.0.1:9/")
    assert_one_line_error(code, output, "cannot write --data-dir somefile.txt/fm: somefile.txt is a file")


def test_data_make_sample_refuses_an_output_under_a_file(place):
    code, output = run_cli(
        "data",
        "make-sample",
        "somefile.txt/sample",
        "--data-dir",
        data.SAMPLE_DIR,
        "--per-class-train",
        "2",
        "--per-class-test",
        "1",
    )
    assert_one_line_error(code, output, "somefile.txt is a file, not a folder")
    assert files_under(place) == ["empty", "somefile.txt"]


def _finished_looking_run(folder: Path) -> Path:
    # Enough for the checks that come before any work; nothing reads the model.
    folder.mkdir(parents=True)
    (folder / "config.json").write_text('{"arch": "tiny-cnn", "data": "sample", "epochs": 1}')
    (folder / "model.h5").write_bytes(b"")
    (folder / "metrics.json").write_text("{}")
    return folder


def test_ship_refuses_a_models_dir_that_is_a_file_before_quantization_aware_training(place):
    run = _finished_looking_run(place / "runs" / "tiny-cnn-train-1")
    code, output = run_cli("ship", run, "--name", "x", "--models-dir", "somefile.txt", "--runs-dir", "runs")
    assert_one_line_error(code, output, "--models-dir somefile.txt is a file, not a folder")
    assert files_under(place / "runs") == ["tiny-cnn-train-1"] + [
        f"tiny-cnn-train-1/{n}" for n in ("config.json", "metrics.json", "model.h5")
    ]


# ---------------------------------------------------------------- images: odd but valid, and bad


def _save(image: Image.Image, path: Path, **kwargs) -> Path:
    image.save(path, **kwargs)
    return path


def test_odd_but_valid_images_convert_to_the_same_pixels(tmp_path, reference_image):
    grey = Image.fromarray(reference_image)
    expected, inverted = image_to_input(_save(grey, tmp_path / "grey.png"))
    assert not inverted and expected.shape == (28, 28) and expected.max() > 100
    sixteen = Image.fromarray(reference_image.astype(np.uint16) * 257)
    floats = Image.fromarray(reference_image.astype(np.float32) / 255.0)
    second_frame = Image.new("L", grey.size, 255)
    variants = {
        "palette.png": _save(grey.convert("P"), tmp_path / "palette.png"),
        "sixteen.png": _save(sixteen, tmp_path / "sixteen.png"),
        "rgba.png": _save(grey.convert("RGBA"), tmp_path / "rgba.png"),
        "cmyk.tiff": _save(grey.convert("CMYK"), tmp_path / "cmyk.tiff"),
        "float.tiff": _save(floats, tmp_path / "float.tiff"),
        "animated.gif": _save(grey, tmp_path / "animated.gif", save_all=True, append_images=[second_frame]),
    }
    assert Image.open(variants["sixteen.png"]).mode == "I;16"
    assert Image.open(variants["float.tiff"]).mode == "F"
    assert Image.open(variants["animated.gif"]).n_frames == 2
    for name, path in variants.items():
        pixels, was_inverted = image_to_input(path)
        # 16-bit is scaled (220 * 257 -> 220), not clipped to 255; the GIF gives its first frame.
        np.testing.assert_allclose(pixels.astype(int), expected.astype(int), atol=1, err_msg=name)
        assert was_inverted == inverted, name


def test_a_one_pixel_image_becomes_a_uniform_28x28_input(tmp_path):
    pixels, inverted = image_to_input(_save(Image.new("L", (1, 1), 40), tmp_path / "dot.png"))
    assert pixels.shape == (28, 28) and not inverted
    assert pixels.min() == pixels.max() == 40


def test_transparency_counts_as_a_white_background(tmp_path, reference_image):
    rgba = Image.fromarray(reference_image).convert("RGBA")
    alpha = np.where(reference_image > 0, 255, 0).astype(np.uint8)
    rgba.putalpha(Image.fromarray(alpha))
    pixels, inverted = image_to_input(_save(rgba, tmp_path / "cutout.png"))
    assert inverted  # white where transparent, so the light border is inverted to black
    assert pixels[0, 0] == 0


def test_odd_images_get_the_same_classes_through_predict(tmp_path, untrained_bundle, reference_image):
    grey = Image.fromarray(reference_image)
    paths = [
        _save(grey, tmp_path / "grey.png"),
        _save(grey.convert("P"), tmp_path / "palette.png"),
        _save(Image.fromarray(reference_image.astype(np.uint16) * 257), tmp_path / "sixteen.png"),
        _save(grey.convert("RGBA"), tmp_path / "rgba.png"),
        _save(grey, tmp_path / "animated.gif", save_all=True, append_images=[Image.new("L", grey.size, 255)]),
    ]
    code, output = run_cli("predict", untrained_bundle, *paths, "--top", "1")
    assert code == 0, output
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == len(paths), output
    classes = {line.split(": ", 1)[1] for line in lines}
    assert len(classes) == 1, output  # same pixels in, same class and probability out


@pytest.mark.parametrize(
    "make, expected",
    [
        (
            lambda p: p.write_bytes(_png_bytes()[:60]),
            "not a readable image (OSError: image file is truncated",
        ),
        (
            lambda p: p.write_text("hello, I am text"),
            "not a readable image (not an image format Pillow knows)",
        ),
        (lambda p: p.write_bytes(b""), "the file is empty; pass a PNG or JPEG image."),
        (lambda p: p.mkdir(), "is a folder: pass image files"),
        (lambda p: None, "no such file."),
    ],
    ids=["truncated", "text", "empty", "folder", "missing"],
)
def test_unreadable_images_are_one_line_each(tmp_path, untrained_bundle, make, expected):
    image = tmp_path / "photo.png"
    make(image)
    code, output = run_cli("predict", untrained_bundle, image)
    assert_one_line_error(code, output, f"{image}")
    assert expected in output


def _png_bytes() -> bytes:
    import io

    buffer = io.BytesIO()
    Image.fromarray(np.arange(64 * 64, dtype=np.uint32).reshape(64, 64).astype(np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.mark.parametrize(
    "side", [40, 50], ids=["above-limit-warns-in-pillow", "above-twice-limit-errors-in-pillow"]
)
def test_decompression_bombs_are_refused_in_one_line(tmp_path, untrained_bundle, monkeypatch, side):
    # A small limit stands in for Pillow's 89 M pixels: 1,600 px is where Pillow only warns, 2,500 where it raises.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    image = _save(Image.new("L", (side, side), 0), tmp_path / "bomb.png")
    code, output = run_cli("predict", untrained_bundle, image)
    assert_one_line_error(
        code, output, "more than 1,000 pixels, Pillow's guard against decompression bombs; downscale it"
    )


def test_corrupt_or_mismatched_artifacts_are_refused(tmp_path, untrained_bundle, reference_image):
    image = _save(Image.fromarray(reference_image), tmp_path / "grey.png")
    garbage = tmp_path / "garbage.tflite"
    garbage.write_bytes(b"not a flatbuffer")
    code, output = run_cli("predict", garbage, image)
    assert_one_line_error(code, output, "garbage.tflite: not a loadable TFLite model")

    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "model.tflite").write_bytes((untrained_bundle / "model.tflite").read_bytes())
    (bundle / "model.json").write_text('{"labels": ["a", "b"')
    code, output = run_cli("predict", bundle, image)
    assert_one_line_error(code, output, "model.json is not valid JSON")
    # bench names the broken file too (it names no dataset, so no dataset is looked for) ...
    code, output = run_cli("bench", bundle, "--runs", "1", "--min-seconds", "0")
    assert_one_line_error(code, output, "model.json is not valid JSON")
    # ... and beside a readable model, its rows say why while the other is measured.
    result = tmp_path / "bench.json"
    run_cli(
        "bench", bundle, untrained_bundle, "--sample", "--runs", "1", "--min-seconds", "0", "--json", result
    )
    rows = {Path(row["path"]).parent.name: row for row in json.loads(result.read_text())["results"]["rows"]}
    assert rows["bundle"]["status"] == "error" and "not valid JSON" in rows["bundle"]["error"]
    assert rows[untrained_bundle.name]["status"] == "ok"
    (bundle / "model.json").write_text('{"labels": ["a", "b"]}')
    code, output = run_cli("predict", bundle, image)
    assert_one_line_error(code, output, "model.json lists 2 labels but the model outputs 10 classes")
    (bundle / "labels.txt").write_text("a\nb\nc\n")  # the labels file names the classes where there is one
    code, output = run_cli("predict", bundle, image)
    assert_one_line_error(code, output, "labels.txt lists 3 labels but the model outputs 10 classes")

    code, output = run_cli("predict", tmp_path / "empty-folder-that-is-not-there", image)
    assert_one_line_error(code, output, "no such file or folder; pass a .tflite file or a bundle")

    # A folder that holds no model itself is named for what it is, with what to pass instead.
    run = tmp_path / "tiny-cnn-train-1"
    run.mkdir()
    (run / "config.json").write_text("{}")
    catalog = Path(__file__).resolve().parents[1] / "models"
    for command in ("predict", "inspect", "serve"):
        code, output = run_cli(command, run, *([image] if command == "predict" else []))
        assert_one_line_error(code, output, f"{run} is a run, not an export: `edge-fm export {run} -f int8`")
        if command == "serve":  # a folder of models is what it serves
            continue
        code, output = run_cli(command, catalog, *([image] if command == "predict" else []))
        assert_one_line_error(
            code, output, f"{catalog} is a folder of models: pass one of them, e.g. {catalog}/"
        )


# ---------------------------------------------------------------- options at their limits


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["train", "tiny-cnn", "--sample", "--epochs", "0"], "epochs must be a number >= 1, got 0."),
        (["train", "tiny-cnn", "--sample", "--epochs", "-3"], "epochs must be a number >= 1, got -3."),
        (["train", "tiny-cnn", "--sample", "--batch-size", "0"], "batch_size must be a number >= 1, got 0."),
        (
            ["train", "tiny-cnn", "--sample", "--val-size", "100000"],
            "validation size 100000 must be between 0 and 1999",
        ),
        (["train", "tiny-cnn", "--sample", "--set", "bogus=1"], "unknown setting 'bogus'"),
        (
            ["train", "tiny-cnn", "--sample", "--set", "=3"],
            "--set '=3' is not key=value: write e.g. --set epochs=5.",
        ),
        (
            ["train", "tiny-cnn", "--sample", "--set", "arch=mlp"],
            "--set arch: the architecture is the command's first argument.",
        ),
        (
            ["train", "tiny-cnn", "--sample", "--set", 'arch_options={"width": 8}'],
            "set architecture options with --arch-opt",
        ),
        (["train", "tiny-cnn", "--sample", "--set", "seed=1.5"], "seed must be a whole number, got 1.5."),
        (
            ["train", "tiny-cnn", "--sample", "--set", "batch_size=2.5"],
            "batch_size must be a whole number, got 2.5.",
        ),
        (
            ["train", "tiny-cnn", "--sample", "--set", "mixed_precision=maybe"],
            "mixed_precision must be true or false",
        ),
        (
            ["train", "tiny-cnn", "--sample", "--set", "epochs=true"],
            "epochs must be a whole number, got True.",
        ),
        (
            ["train", "vgg-gap", "--sample", "--arch-opt", "widths=[16,"],
            "--arch-opt widths '[16,' is not valid JSON",
        ),
        (["train", "vgg-gap", "--sample", "--arch-opt", "=3"], "--arch-opt '=3' is not key=value"),
        (
            ["train", "vgg-gap", "--sample", "--arch-opt", "dropouts=[0.1]"],
            "vgg-gap needs one dropout rate per stage: got 3 stage(s) and 1 rate(s)",
        ),
        (
            ["train", "vgg-gap", "--sample", "--arch-opt", "stages=5"],
            "option stages must be a list like [[int, ...], ...], got 5",
        ),
        (
            ["train", "tiny-cnn", "--sample", "--arch-opt", "width=abc"],
            'option width must be a whole number, got "abc"',
        ),
        (["train", "tiny-cnn", "--sample", "--arch-opt", "width=0"], "cannot be built with width=0"),
        (
            ["train", "cnn-2conv", "--sample", "--arch-opt", "filters=[1]"],
            "option filters must be a list like [int, int], got [1]",
        ),
        (
            ["train", "cnn-2conv", "--sample", "--arch-opt", "dense=0"],
            "has a layer of size 0 (dense, output (0,))",
        ),
        (["train", "mlp", "--sample", "--arch-opt", "dropout=2"], "cannot be built with dropout=2"),
        (["train", "resnet-50", "--sample"], "unknown architecture 'resnet-50'. Did you mean 'resnet50'?"),
        (["train", "--resume", "empty"], "empty has no config.json"),
        (["optimize", "empty", "--prune", "1.0"], "target sparsity must be in (0, 1), got 1.0."),
        (["optimize", "empty", "--prune", "1.5"], "target sparsity must be in (0, 1), got 1.5."),
        (["optimize", "empty", "--prune", "-0.1"], "target sparsity must be in (0, 1), got -0.1."),
        (
            ["pipeline", "tiny-cnn", "--sample", "--prune", "1.0"],
            "--prune 1.0: give the target sparsity as a fraction in (0, 1)",
        ),
        (
            ["pipeline", "tiny-cnn", "--sample", "--epochs", "0"],
            "--epochs 0: fine-tuning needs at least 1 epoch.",
        ),
        (["pipeline", "tiny-cnn", "--sample", "-f", "tflite16"], "unknown export format 'tflite16'"),
        (  # found before training, not after it
            ["pipeline", "tiny-cnn", "--sample", "--target", "ssh://nobody@127.0.0.1:1"],
            "cannot reach nobody@127.0.0.1:1: connection refused",
        ),
        (["bench", "empty", "--threads", "0"], "--threads '0': give positive thread counts"),
        (["bench", "empty", "--threads", "a,b"], "--threads 'a,b': give positive thread counts"),
        (["bench", "empty", "--runs", "0"], "--runs 0: must be at least 1."),
        (["bench", "empty", "--warmup", "-1"], "--warmup -1: must be at least 0."),
        (
            ["bench", "empty", "--max-seconds", "nan"],
            "--max-seconds nan: give seconds more than 0 and at most",
        ),
        (
            ["bench", "empty", "--max-seconds", "inf"],
            "--max-seconds inf: give seconds more than 0 and at most",
        ),
        (["bench", "empty", "--max-seconds", "1e308"], "--max-seconds 1e+308: give seconds more than 0"),
        (["bench", "empty", "--min-seconds", "nan"], "--min-seconds nan: must be at least 0."),
        (
            ["bench", "empty", "--max-seconds", "301"],
            "--max-seconds 301.0: give seconds more than 0 and at most 300",
        ),
        (  # before training, not after it
            ["pipeline", "tiny-cnn", "--sample", "--max-seconds", "inf"],
            "--max-seconds inf: give seconds more than 0",
        ),
        (["bench", "empty"], "empty holds no .tflite artifact"),
        (["bench", "somefile.txt"], "somefile.txt is not a .tflite file"),
        (["bench", "empty", "--cards"], "--cards rewrites the model cards of one folder of shipped models"),
        (["export", "empty", "-f", "fp64"], "unknown export format 'fp64'. Did you mean 'fp16'?"),
        (["export", "empty", "-f", "fp32"], "empty has no config.json"),
        (["evaluate", "empty"], "empty has no config.json"),
        (["predict", "empty", "x.png"], "empty: no .tflite model there"),
        (["train", "tiny-cnn", "--epochs", "many"], "Invalid value for '--epochs'"),
        (
            ["train", "tiny-cnn", "--sample", "--seed", "-1"],
            "seed must be a whole number from 0 to 4294967295",
        ),
        (["data", "info", "--data", "sample", "--seed", str(2**32)], "seed must be a whole number from 0"),
        (
            ["export", "empty", "--for", "mobile", "--parity-images", "0"],
            "Invalid value for '--parity-images'",
        ),
        (["predict", "empty", "x.png", "--top", "0"], "Invalid value for '--top'"),
    ],
)
def test_bad_options_are_one_line_and_leave_no_run(place, argv, expected):
    code, output = run_cli(
        *argv, *(["--runs-dir", "runs"] if argv[0] in ("train", "optimize", "pipeline", "export") else [])
    )
    assert_one_line_error(code, output, expected)
    assert not (place / "runs").exists() or not any((place / "runs").iterdir())


def test_an_unfinished_run_is_named_with_the_command_that_finishes_it(place):
    run = place / "runs" / "tiny-cnn-train-1"
    run.mkdir(parents=True)
    (run / "config.json").write_text('{"arch": "tiny-cnn", "data": "sample", "epochs": 1}')
    (place / "model.tflite").write_bytes(b"never read: the baseline is checked first")
    for argv in (
        ["evaluate", run],
        ["export", run, "-f", "fp32"],
        ["bench", "model.tflite", "--baseline", run],
        ["train", "tiny-cnn", "--sample", "--teacher", run],
    ):
        code, output = run_cli(*argv)
        assert_one_line_error(
            code, output, f"{run} has no model.h5: the run did not finish; continue it with"
        )
    assert files_under(place / "runs") == ["tiny-cnn-train-1", "tiny-cnn-train-1/config.json"]
    # Stopped after saving its model, before scoring it: still not a finished run to build on.
    (run / "model.h5").write_bytes(b"saved, never scored")
    for argv in (["evaluate", run], ["export", run, "-f", "fp32"]):
        code, output = run_cli(*argv)
        assert_one_line_error(
            code,
            output,
            f"{run} has no metrics.json: the run did not finish; continue it with `edge-fm train",
        )


def test_a_corrupt_config_json_is_named(place):
    run = place / "run"
    run.mkdir()
    (run / "config.json").write_text("{not json")
    code, output = run_cli("train", "--resume", run)
    assert_one_line_error(code, output, "run/config.json is not valid JSON")


def test_a_pipeline_refused_before_training_leaves_no_run_dir(place):
    code, output = run_cli(
        "pipeline", "tiny-cnn", "--sample", "--set", "val_size=100000", "--runs-dir", "runs"
    )
    assert_one_line_error(code, output, "validation size 100000 must be between 0 and 1999")
    assert not any((place / "runs").iterdir())


# ---------------------------------------------------------------- what a good run prints and declares


def test_training_saves_hdf5_without_keras_legacy_warning(place):
    code, output = run_cli(
        "train",
        "tiny-cnn",
        "--sample",
        "--epochs",
        "1",
        "--set",
        "max_train=200",
        "--arch-opt",
        "width=4",
        "--runs-dir",
        "runs",
    )
    assert code == 0, output
    assert "HDF5" not in output and "legacy" not in output, output
    model = place / "runs" / "tiny-cnn-train-1" / "model.h5"
    assert model.read_bytes()[:8] == b"\x89HDF\r\n\x1a\n"  # still HDF5: run directories stay readable


def test_pillow_is_a_runtime_dependency():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert any(dep.lower().startswith("pillow") for dep in project["dependencies"])


def test_explain_of_unreadable_images_leaves_no_output_folder(tmp_path):
    text = tmp_path / "note.png"
    text.write_text("not an image")
    code, output = run_cli("explain", REPO / "models" / "mlp", text, "--out", tmp_path / "overlays")
    assert_one_line_error(
        code,
        output.replace("INFO: Created TensorFlow Lite XNNPACK delegate for CPU.", ""),
        "not a readable image",
    )
    assert not (tmp_path / "overlays").exists()


@pytest.mark.parametrize(
    "cut, expected",
    [(False, "not a .tflite file (no TFL3 identifier)"), (True, "a corrupt or cut-short .tflite file")],
)
def test_inspect_names_a_foreign_or_cut_tflite_in_one_line(place, cut, expected):
    shipped = (REPO / "models" / "mlp" / "model.tflite").read_bytes()
    (place / "m.tflite").write_bytes(shipped[:3000] if cut else b"a text file")
    code, output = run_cli("inspect", "m.tflite")
    assert_one_line_error(code, output, f"m.tflite: {expected}")


def test_an_output_the_system_will_not_take_is_refused_before_any_work(place):
    (place / "afile").write_text("")
    code, output = run_cli("export", "empty", "-f", "fp32", "--runs-dir", "afile")
    assert_one_line_error(code, output, "--runs-dir afile is a file, not a folder")
    # Permission bits pass for root in /proc, where nothing can be made: the check makes a file to see.
    code, output = run_cli("report", REPO / "models" / "mlp", "--out", "/proc/nope/r.html")
    assert_one_line_error(code, output, "cannot write --out /proc/nope/r.html")


def test_an_output_that_is_a_pipe_or_a_link_is_written_through_not_replaced(tmp_path):
    """`--json /dev/stdout` (a link to a pipe or a terminal), a FIFO or a link to a file: the data goes
    where the path leads, and the path stays what it was (a rename would put a plain file there)."""
    import stat
    import threading

    from edge_fm.io import write_bytes_atomic

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    received = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()), daemon=True)
    reader.start()
    write_bytes_atomic(fifo, b'{"ok": 1}')
    reader.join(timeout=10)
    assert received == [b'{"ok": 1}'] and stat.S_ISFIFO(os.stat(fifo).st_mode)

    target = tmp_path / "results" / "real.json"
    target.parent.mkdir()
    target.write_text("old")
    link = tmp_path / "latest.json"
    link.symlink_to(target)
    write_bytes_atomic(link, b"new")
    assert link.is_symlink() and target.read_bytes() == b"new"
    assert not list(tmp_path.glob(".tmp-*")) and not list(target.parent.glob(".tmp-*"))


def test_a_damaged_keras_model_in_a_run_is_one_line(exported, tmp_path, capsys):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(exported["train"], run)
    model = run / "model.h5"
    model.write_bytes(model.read_bytes()[:500])  # truncated in a copy
    assert main(["evaluate", str(run)]) == 1
    err = capsys.readouterr().err
    assert "model.h5 cannot be read as a Keras model" in err and "the file is damaged" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_a_class_weight_file_that_is_not_json_says_to_fix_it(tmp_path):
    weights = tmp_path / "weights.json"
    weights.write_text('{"Sneaker": 2.0,')
    code, output = run_cli("train", "tiny-cnn", "--sample", "--class-weight", weights, "--runs-dir", tmp_path)
    assert_one_line_error(code, output, f"--class-weight {weights} is not valid JSON")
    assert "write a JSON object of weights by class name" in output and "re-create it" not in output


def test_json_to_dev_stdout_reaches_a_pipe_and_appends_to_a_redirected_file(tmp_path, data_dir):
    import json
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[1]
    model = str(repo / "models" / "edge-cnn-tiny")
    command = [sys.executable, "-m", "edge_fm.cli", "evaluate", model, "--data-dir", str(data_dir)]
    piped = subprocess.run([*command, "--json", "/dev/stdout"], capture_output=True, text=True, timeout=120)
    assert piped.returncode == 0, piped.stderr
    assert json.loads(piped.stdout[piped.stdout.index("{") :])  # the scores line, then the JSON
    log = tmp_path / "log.txt"
    log.write_text("PREVIOUS\n")
    with log.open("a") as out:  # `>> log.txt`
        done = subprocess.run(
            [*command, "--json", "/dev/stdout"], stdout=out, stderr=subprocess.PIPE, timeout=120
        )
    assert done.returncode == 0, done.stderr
    assert log.read_text().startswith("PREVIOUS\n") and log.read_text().rstrip().endswith("}")

"""The microcontroller form, proven under TensorFlow Lite for Microcontrollers: the shipped int8 models
and a fresh export run under TFLM exactly as under LiteRT's reference kernels, the arena found is the
smallest that works, the generated C array and resolver are the model's bytes and ops, and models TFLM
cannot run are refused with the op named."""

from __future__ import annotations

import importlib.util
import json
import platform
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from edge_fm.bench.measurements import read_bench
from edge_fm.cli import app
from edge_fm.data import datasets as data
from edge_fm.errors import EdgeFMError
from edge_fm.export import firmware, mcu, tflm
from edge_fm.export.form_options import FormOptions

MODELS = Path(__file__).resolve().parents[1] / "models"
CHECK_IMAGES = 300

if importlib.util.find_spec("tflite_micro") is None:
    if platform.system() == "Linux" and platform.machine() == "x86_64":
        pytest.fail(
            "tflite-micro is not installed: pip install -e '.[dev]' (or 'edge-fm[mcu]')", pytrace=False
        )
    pytest.skip("tflite-micro ships wheels for Linux x86-64 only", allow_module_level=True)


@pytest.fixture(scope="module")
def test_images(data_dir):
    images, labels = data.load_split("test", data_dir)
    return images[:CHECK_IMAGES], labels[:CHECK_IMAGES]


def _invoke(*args):
    return CliRunner().invoke(app, [str(arg) for arg in args])


# ---------------------------------------------------------------- running under TFLM


@pytest.mark.parametrize("name, floor", [("mlp", 0.85), ("edge-cnn-tiny", 0.90)])
def test_shipped_models_run_under_tflm_as_under_litert_reference_kernels(name, floor, test_images):
    images, labels = test_images
    report = tflm.tflm_report(MODELS / name, images, labels, "test split")
    assert report.runs_under_tflm and report.error is None and report.unsupported_ops == ()
    assert report.images == CHECK_IMAGES
    assert report.agreement_with_litert_reference == 1.0
    # TFLM's kernels are ports of the reference ones, but some requantizations round one step apart (and the
    # softmax after them widens that): most whole outputs match, the top class always.
    assert report.identical_outputs >= 0.9 and report.max_output_difference < 64
    assert report.accuracy >= floor
    assert report.flash_bytes == (MODELS / name / "model.tflite").stat().st_size
    record = report.as_dict()
    assert record["arena_bytes"] == report.arena.bytes and record["latency"].startswith("not measured")
    assert [fit["board"] for fit in record["fits_on"]] == [board.name for board in tflm.BOARDS]


def test_tflm_accuracy_is_the_plain_interpreters(test_images, plain_accuracy):
    images, labels = test_images
    report = tflm.tflm_report(MODELS / "edge-cnn-tiny" / "model.tflite", images, labels)
    assert report.accuracy == pytest.approx(
        plain_accuracy(MODELS / "edge-cnn-tiny" / "model.tflite", images, labels)
    )


@pytest.mark.parametrize("name", ["mlp", "edge-cnn-tiny"])
def test_the_arena_found_runs_and_a_smaller_one_does_not(name):
    flatbuffer = (MODELS / name / "model.tflite").read_bytes()
    arena = tflm.find_arena(flatbuffer)
    image = np.full((1, 28, 28), 255, dtype=np.uint8)
    assert tflm.TflmModel(flatbuffer, arena.min_bytes).outputs(image).shape == (1, 10)
    assert not tflm._runs(
        flatbuffer, arena.min_bytes - tflm.ARENA_ALIGNMENT, np.zeros((1, 28, 28, 1), np.int8)
    )
    with pytest.raises(EdgeFMError, match="could not allocate"):
        tflm.TflmModel(flatbuffer, int(arena.min_bytes * 0.9))
    assert arena.min_bytes % tflm.ARENA_ALIGNMENT == 0
    assert arena.bytes % 1024 == 0 and arena.bytes >= arena.min_bytes * 1.25


@pytest.fixture(scope="module")
def gelu_model(tmp_path_factory):
    """An int8 .tflite with a GELU op (as mobilenetv2 with head_activation=gelu has), which TFLM lacks."""
    import tensorflow as tf

    from edge_fm.compat import keras

    inputs = keras.Input((28, 28, 1))
    hidden = keras.layers.Dense(8, activation="gelu")(keras.layers.Flatten()(inputs))
    model = keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(hidden))
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    rng = np.random.default_rng(0)
    converter.representative_dataset = lambda: (
        [rng.uniform(0, 255, (1, 28, 28, 1)).astype(np.float32)] for _ in range(20)
    )
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = converter.inference_output_type = tf.int8
    path = tmp_path_factory.mktemp("gelu") / "gelu.tflite"
    path.write_bytes(converter.convert())
    return path


def test_a_gelu_model_is_refused_naming_gelu(test_images, gelu_model, tmp_path):
    images, labels = test_images
    report = tflm.tflm_report(gelu_model, images[:10], labels[:10])
    assert not report.runs_under_tflm and report.unsupported_ops == ("GELU",)
    assert "GELU" in report.error and "ReLU head" in report.error and report.accuracy is None
    assert "GELU" in report.ops
    with pytest.raises(EdgeFMError, match="no kernel for GELU"):
        mcu.mcu_files(gelu_model, tmp_path / "firmware")
    assert not (tmp_path / "firmware").exists()
    with pytest.raises(EdgeFMError, match="GELU"):
        mcu.export_mcu(
            gelu_model, FormOptions(runs_dir=tmp_path / "runs", data_dir=data.SAMPLE_DIR, parity_images=10)
        )
    assert not (tmp_path / "runs").exists()


def test_float_bundle_is_refused_with_the_export_to_use(exported, tmp_path):
    with pytest.raises(EdgeFMError, match=r"float32 .*-f int8. or .-f qat-int8"):
        mcu.mcu_files(exported["fp32"], tmp_path / "firmware")
    with pytest.raises(EdgeFMError, match="int8 model"):
        tflm.tflm_report(exported["fp32"], np.zeros((1, 28, 28), np.uint8), np.zeros(1))


def test_a_missing_tflite_micro_is_one_line_naming_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "tflite_micro.python.tflite_micro", None)
    with pytest.raises(EdgeFMError, match=re.escape("pip install 'edge-fm[mcu]'")):
        tflm.tflm_version()


def test_fits_on_compares_model_bytes_with_flash_and_arena_with_ram():
    fits = {fit["board"]: fit["fits"] for fit in tflm.fits_on(900_000, 300_000)}
    # 300,000 bytes of arena: over the Nano's 256 KiB and the Pico's 264 KiB, under the STM32F746's 320 KiB.
    assert fits == {
        "Arduino Nano 33 BLE Sense": False,
        "Raspberry Pi Pico": False,
        "STM32F746 Discovery": True,
        "ESP32-S3 (8 MB flash)": True,
    }
    assert not any(fit["fits"] for fit in tflm.fits_on(3 * 1024 * 1024, 1000)[:3])


# ---------------------------------------------------------------- firmware files


@pytest.fixture(scope="module")
def tiny_firmware(tmp_path_factory):
    out = tmp_path_factory.mktemp("firmware")
    return out, mcu.mcu_files(MODELS / "edge-cnn-tiny", out, "edge-cnn-tiny")


def test_the_c_array_holds_the_models_bytes(tiny_firmware):
    _, files = tiny_firmware
    flatbuffer = (MODELS / "edge-cnn-tiny" / "model.tflite").read_bytes()
    source = files["model_data_cc"].read_text()
    assert firmware.parse_c_array(source, "g_edge_cnn_tiny_model") == flatbuffer
    assert "alignas(16) const unsigned char g_edge_cnn_tiny_model[]" in source
    assert f"g_edge_cnn_tiny_model_len = {len(flatbuffer)};" in source
    assert "extern const unsigned char g_edge_cnn_tiny_model[];" in files["model_data_h"].read_text()


@pytest.mark.skipif(shutil.which("g++") is None, reason="no C++ compiler here")
def test_the_generated_cpp_compiles_and_gives_back_the_model(tiny_firmware, tmp_path):
    out, files = tiny_firmware
    main = tmp_path / "main.cc"
    main.write_text(
        "#include <cstdint>\n#include <cstdio>\n"
        '#include "edge_cnn_tiny_model_data.h"\n#include "edge_cnn_tiny_model_settings.h"\n'
        "int main() {\n"
        "  std::fwrite(g_edge_cnn_tiny_model, 1, g_edge_cnn_tiny_model_len, stdout);\n"
        '  std::fprintf(stderr, "%d|%s|%d", edge_cnn_tiny::kTensorArenaSize, edge_cnn_tiny::kCategoryLabels[9],\n'
        "               static_cast<int>(reinterpret_cast<std::uintptr_t>(g_edge_cnn_tiny_model) % 16));\n}\n"
    )
    binary = tmp_path / "dump"
    subprocess.run(
        [
            "g++",
            "-std=c++14",
            "-Wall",
            "-Werror",
            f"-I{out}",
            str(main),
            str(files["model_data_cc"]),
            "-o",
            str(binary),
        ],
        check=True,
        capture_output=True,
    )
    done = subprocess.run([str(binary)], check=True, capture_output=True)
    assert done.stdout == (MODELS / "edge-cnn-tiny" / "model.tflite").read_bytes()
    arena, label, misalignment = done.stderr.decode().split("|")
    assert (int(arena), label, misalignment) == (tflm.find_arena(done.stdout).bytes, "Ankle boot", "0")


def test_the_resolver_registers_exactly_the_models_ops(tiny_firmware):
    from edge_fm.export.tflite_file import inspect as inspect_tflite

    _, files = tiny_firmware
    text = files["op_resolver"].read_text()
    registered = re.findall(r"resolver\.(Add\w+)\(\);\s*// (\w+)", text)
    # Read independently of edge_fm.export.mcu, with TensorFlow's own schema.
    ops = inspect_tflite((MODELS / "edge-cnn-tiny" / "model.tflite").read_bytes())["ops"]
    assert sorted(op for _, op in registered) == ops
    assert {method for method, _ in registered} == {
        "AddConv2D",
        "AddMaxPool2D",
        "AddAdd",
        "AddMean",
        "AddFullyConnected",
        "AddSoftmax",
    }
    assert (
        f"constexpr int kOpCount = {len(ops)};" in text
        and "MicroMutableOpResolver<kOpCount> resolver;" in text
    )


def test_resolver_method_names():
    assert [
        firmware.resolver_method(op)
        for op in (
            "CONV_2D",
            "DEPTHWISE_CONV_2D",
            "MAX_POOL_2D",
            "FULLY_CONNECTED",
            "RELU6",
            "BATCH_MATMUL",
            "QUANTIZE",
        )
    ] == [
        "AddConv2D",
        "AddDepthwiseConv2D",
        "AddMaxPool2D",
        "AddFullyConnected",
        "AddRelu6",
        "AddBatchMatMul",
        "AddQuantize",
    ]


def test_the_example_uses_the_models_quantization_and_labels(tiny_firmware):
    _, files = tiny_firmware
    settings = files["settings"].read_text()
    assert (
        "constexpr float kInputScale = 1.0f;" in settings
        and "constexpr int kInputZeroPoint = -128;" in settings
    )
    assert all(json.dumps(label) in settings for label in data.CLASS_NAMES)
    example = files["example"].read_text()
    assert "edge_cnn_tiny::op_resolver()" in example and "interpreter->Invoke()" in example
    assert "tensor_arena[edge_cnn_tiny::kTensorArenaSize]" in example


# ---------------------------------------------------------------- the bundle and the CLI


def test_a_fresh_int8_export_gets_its_mcu_bundle(exported, data_dir, tmp_path):
    bundle = mcu.export_mcu(
        exported["int8"],
        FormOptions(out=tmp_path / "tiny-mcu", data_dir=data_dir, parity_images=CHECK_IMAGES),
    )
    description = json.loads((bundle / "model.json").read_text())
    record = description["mcu"]
    assert description["target"] == "mcu" and record["runs_under_tflm"] and record["unsupported_ops"] == []
    assert record["agreement_with_litert_reference"] == 1.0 and record["checked_on"]["images"] == CHECK_IMAGES
    assert 0 < record["accuracy"] <= 1 and record["arena_bytes"] > record["arena"]["min_bytes"] > 0
    assert (bundle / "model.tflite").read_bytes() == (exported["int8"] / "model.tflite").read_bytes()
    assert (
        record["flash_bytes"] == description["artifact"]["bytes"] == (bundle / "model.tflite").stat().st_size
    )
    assert all(fit["fits"] for fit in record["fits_on"])  # a tiny CNN fits every board listed
    assert record["tflite_micro_version"] == tflm.tflm_version()
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert {f"firmware/{Path(p).name}" for p in record["firmware"].values()} <= set(manifest["files"])
    with pytest.raises(EdgeFMError, match="not an empty folder"):
        mcu.export_mcu(exported["int8"], FormOptions(out=bundle, data_dir=data_dir, parity_images=10))


@pytest.mark.slow
def test_cli_export_for_mcu_from_a_run(exported, tmp_path):
    result = _invoke(
        "export",
        exported["train"],
        "-f",
        "int8",
        "--for",
        "mcu",
        "--runs-dir",
        tmp_path,
        "--parity-images",
        50,
    )
    assert result.exit_code == 0, result.output
    bundles = sorted(tmp_path.glob("*-mcu-*"))
    assert len(bundles) == 1 and "runs under TFLM" in result.output
    description = json.loads((bundles[0] / "model.json").read_text())
    assert description["mcu"]["agreement_with_litert_reference"] == 1.0
    assert len(list((bundles[0] / "firmware").iterdir())) == 5
    # --parity-images counts the images of both checks: the int8 export's and the one under TFLM.
    (int8,) = [path for path in tmp_path.glob("*-int8-*") if path.is_dir() and path not in bundles]
    assert json.loads((int8 / "model.json").read_text())["export"]["parity"]["images"] == 50
    assert description["mcu"]["checked_on"]["images"] == 50


def test_cli_export_for_mcu_of_a_shipped_bundle(data_dir, tmp_path):
    out = tmp_path / "mlp-mcu"
    result = _invoke(
        "export", MODELS / "mlp", "--for", "mcu", "--out", out, "--parity-images", 100, "--data-dir", data_dir
    )
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (out / "firmware").iterdir()) == sorted(
        f"mlp_qat_int8_{suffix}"
        for suffix in ("model_data.h", "model_data.cc", "op_resolver.h", "model_settings.h", "example.cc")
    )
    record = json.loads((out / "model.json").read_text())["mcu"]
    assert record["checked_on"]["images"] == 100 and record["agreement_with_litert_reference"] == 1.0


@pytest.mark.skipif(shutil.which("g++") is None, reason="no C++ compiler here")
def test_c_array_script_writes_the_same_source_at_build_time(data_dir, tmp_path):
    """--c-array script ships a script instead of the C array; run from another folder, it writes the
    file --c-array source writes, byte for byte, and that file compiles to the model's bytes."""
    inline, scripted = tmp_path / "inline", tmp_path / "scripted"
    for out, mode in ((inline, "source"), (scripted, "script")):
        result = _invoke(
            "export",
            MODELS / "mlp",
            "--for",
            "mcu",
            "--out",
            out,
            "--parity-images",
            20,
            "--data-dir",
            data_dir,
            "--c-array",
            mode,
        )
        assert result.exit_code == 0, result.output
    cc_name = "mlp_qat_int8_model_data.cc"
    assert not (scripted / "firmware" / cc_name).exists()
    assert "make_model_data.py" in result.output
    record = json.loads((scripted / "model.json").read_text())["mcu"]["firmware"]
    assert record["model_data_script"] == "firmware/make_model_data.py" and "model_data_cc" not in record
    done = subprocess.run(
        [sys.executable, str(scripted / "firmware" / "make_model_data.py")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert (scripted / "firmware" / cc_name).read_bytes() == (inline / "firmware" / cc_name).read_bytes()
    main = tmp_path / "main.cc"
    main.write_text(
        '#include <cstdio>\n#include "mlp_qat_int8_model_data.h"\n'
        "int main() { std::fwrite(g_mlp_qat_int8_model, 1, g_mlp_qat_int8_model_len, stdout); }\n"
    )
    binary = tmp_path / "dump"
    subprocess.run(
        [
            "g++",
            "-std=c++14",
            "-Wall",
            "-Werror",
            f"-I{scripted / 'firmware'}",
            str(main),
            str(scripted / "firmware" / cc_name),
            "-o",
            str(binary),
        ],
        check=True,
        capture_output=True,
    )
    assert (
        subprocess.run([str(binary)], check=True, capture_output=True).stdout
        == (scripted / "model.tflite").read_bytes()
    )
    # A model.tflite that is not the form's is refused, and the old C array stays.
    (scripted / "model.tflite").write_bytes(b"not the model")
    done = subprocess.run(
        [sys.executable, str(scripted / "firmware" / "make_model_data.py")], capture_output=True, text=True
    )
    assert done.returncode == 1 and "SHA-256 differs" in done.stderr and "Traceback" not in done.stderr
    assert (scripted / "firmware" / cc_name).read_bytes() == (inline / "firmware" / cc_name).read_bytes()


def test_cli_c_array_option_needs_the_mcu_form(tmp_path):
    result = _invoke(
        "export", MODELS / "mlp", "--for", "mobile", "--c-array", "script", "--out", tmp_path / "m"
    )
    assert result.exit_code == 1 and "--c-array is for the microcontroller form" in result.output
    result = _invoke("export", MODELS / "mlp", "--for", "mcu", "--c-array", "inline", "--out", tmp_path / "m")
    assert result.exit_code == 1 and "source" in result.output and "Traceback" not in result.output


def test_cli_refusals_are_one_line(data_dir, gelu_model, tmp_path):
    result = _invoke(
        "export",
        gelu_model,
        "--for",
        "mcu",
        "--out",
        tmp_path / "x",
        "--parity-images",
        10,
        "--data-dir",
        data_dir,
    )
    assert (
        result.exit_code == 1 and "no kernel for GELU" in result.output and "Traceback" not in result.output
    )
    assert not (tmp_path / "x").exists()
    result = _invoke("export", MODELS / "mlp", "-f", "int8", "--for", "mcux")
    assert result.exit_code == 1 and "Did you mean 'mcu'" in result.output


def test_cli_bench_tflm_target_reports_no_latency(tmp_path):
    out = tmp_path / "tflm.json"
    result = _invoke(
        "bench",
        MODELS / "mlp" / "model.tflite",
        "--target",
        "tflm",
        "--sample",
        "--tflm-images",
        50,
        "--json",
        out,
    )
    assert result.exit_code == 0, result.output
    bench = read_bench(out)
    row = bench["rows"][0]
    assert bench["target"] == "tflm" and row["status"] == "ok" and row["latency"] is None
    assert row["examples"] == 50 and row["agreement_with_litert_reference"] == 1.0 and row["arena_bytes"] > 0
    # Every field of the TFLM check a row carries, in the order result files have always had them.
    check = (
        "runs_under_tflm unsupported_ops ops arena_bytes arena_min_bytes flash_bytes examples tflite_micro_version "
        "agreement_with_litert_reference identical_outputs_to_litert_reference max_output_difference_steps fits_on "
        "check_seconds"
    ).split()
    assert [key for key in row if key in check] == check and row["arena_min_bytes"] <= row["arena_bytes"]
    assert "not measured" in bench["environment"]["latency"] and "Latency: not measured" in result.output

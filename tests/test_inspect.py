"""Know before you ship: quantization schemes, `edge-fm inspect`, what each runtime runs, Ethos-U via Vela."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from edge_fm.cli import app
from edge_fm.errors import EdgeFMError

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "models" / "edge-cnn-tiny"
needs_vela = pytest.mark.skipif(
    importlib.util.find_spec("ethosu") is None, reason="needs the npu extra (ethos-u-vela)"
)
needs_tflm = pytest.mark.skipif(
    importlib.util.find_spec("tflite_micro") is None, reason="needs the mcu extra"
)
runner = CliRunner()


def _invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def schemes(exported, tmp_path_factory):
    """The fixture's tiny CNN exported as int8-per-tensor and int16x8 (calibration from its training images)."""
    from edge_fm.export.exporter import export

    # Their own runs folder: the shared fixture's folder is benchmarked whole by other test files.
    runs = tmp_path_factory.mktemp("scheme-runs")
    return {
        name: export(exported["train"], name, representative_size=100, parity_images=400, runs_dir=runs)
        for name in ("int8-per-tensor", "int16x8")
    }


# ---------------------------------------------------------------- quantization schemes


def test_quantization_schemes_are_rows_of_the_format_table():
    from edge_fm.export.formats import format_names, get_format

    assert {"int8", "int8-per-tensor", "int16x8"} <= set(format_names())
    assert get_format("int8").per_channel and not get_format("int8-per-tensor").per_channel
    assert get_format("int16x8").activation_bits == 16 and get_format("int16x8").io_dtypes[0] == "int16"


def test_schemes_quantize_as_named_and_pass_the_parity_gate(exported, schemes):
    from edge_fm.export.op_table import op_table

    def weighted(bundle):
        return [op for op in op_table((Path(bundle) / "model.tflite").read_bytes()) if op["weights"]]

    per_channel, per_tensor, int16x8 = (
        weighted(exported["int8"]),
        weighted(schemes["int8-per-tensor"]),
        weighted(schemes["int16x8"]),
    )
    assert {op["weights"]["scheme"] for op in per_channel} == {"per-channel"}
    assert {op["weights"]["scheme"] for op in per_tensor} == {"per-tensor"}
    assert all(op["weights"]["scales"] == 1 for op in per_tensor)
    assert {op["activations_dtype"] for op in int16x8} == {"int16"} and {
        op["weights_dtype"] for op in int16x8
    } == {"int8"}
    for name, bundle in schemes.items():
        description = json.loads((Path(bundle) / "model.json").read_text())
        assert description["format"] == name and description["export"]["parity"]["passed"], description[
            "export"
        ]
        assert description["input"]["dtype"] == ("int16" if name == "int16x8" else "int8")


def test_int16x8_names_the_op_without_a_16x8_kernel():
    from edge_fm.compat import keras, tf
    from edge_fm.export.exporter import convert, get_format

    image = keras.Input((28, 28, 1))
    x = keras.layers.Conv2D(4, 3)(keras.layers.Rescaling(1 / 255)(image))
    x = keras.layers.Lambda(lambda t: tf.math.sqrt(tf.abs(t)))(x)
    model = keras.Model(image, keras.layers.Dense(10, activation="softmax")(keras.layers.Flatten()(x)))
    calibration = np.random.default_rng(0).integers(0, 255, (8, 28, 28, 1)).astype(np.uint8)
    with pytest.raises(EdgeFMError, match=r"int16x8: TFLite has no 16-bit-activation kernel for SQRT"):
        convert(model, get_format("int16x8"), "int16", calibration)


def test_export_takes_calibration_size(exported):
    result = _invoke("export", exported["train"], "-f", "int8-per-tensor", "--calibration", "0")
    assert result.exit_code != 0 and "--calibration" in result.output, result.output


def test_calibration_from_a_folder_of_images(exported, tmp_path):
    from PIL import Image

    from edge_fm.data import datasets as data

    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    (empty / "notes.txt").write_text("no images here")
    runs = tmp_path / "runs"
    result = _invoke(
        "export", exported["train"], "-f", "int8", "--calibration-dir", empty, "--runs-dir", runs
    )
    assert result.exit_code == 1 and f"--calibration-dir {empty} holds no images" in result.output, (
        result.output
    )
    assert not runs.exists()
    folder = tmp_path / "photos"
    folder.mkdir()
    images, _ = data.load_split("train", data.SAMPLE_DIR)
    for index, image in enumerate(images[:40]):
        Image.fromarray(image[..., 0]).save(folder / f"{index:03d}.png")
    result = _invoke(
        "export",
        exported["train"],
        "-f",
        "int8",
        "--calibration-dir",
        folder,
        "--calibration",
        "30",
        "--runs-dir",
        runs,
        "--parity-images",
        "400",
    )
    assert result.exit_code == 0, result.output
    assert json.loads((runs / "tiny-cnn-int8-1" / "model.json").read_text())["export"]["parity"]["passed"]


# ---------------------------------------------------------------- inspect: the static part


def test_op_table_counts_the_models_macs_and_parameters(exported):
    from edge_fm.export.op_table import op_table
    from edge_fm.zoo import describe_model

    ops = op_table((Path(exported["int8"]) / "model.tflite").read_bytes())
    assert sum(op["macs"] for op in ops) == describe_model("tiny-cnn")["macs"]
    assert sum(op["macs_share"] for op in ops) == pytest.approx(1.0)
    conv = [op for op in ops if op["op"] == "CONV_2D"]
    # conv1 3x3x1->16 on 28x28 (same padding): 28*28*16*9 MACs.
    assert conv[0]["macs"] == 28 * 28 * 16 * 9 and conv[0]["output_shape"][1:] == [28, 28, 16]
    assert conv[0]["params"] == 3 * 3 * 1 * 16 + 16
    assert conv[0]["weights"]["scales"] == 16


def test_inspect_a_shipped_model_without_its_source_run():
    from edge_fm.bench.inspection import inspect_artifact
    from edge_fm.zoo import describe_model

    report = inspect_artifact(SHIPPED, runtimes=["cpu", "gpu"])
    assert report["summary"]["macs"] == describe_model("edge-cnn-tiny")["macs"]
    assert report["summary"]["quantization"] == "int8 per-channel weights, int8 activations"
    # No source run here and no dataset either (the tests hide it): the float twin needs validation images.
    assert report["errors"]["status"] == "not measured"
    assert "validation images" in report["errors"]["reason"]
    assert "Fashion-MNIST not found" in report["errors"]["reason"]
    cpu = report["runtimes"]["cpu"]
    assert cpu["delegated_ops"]["CONV_2D"] == 5 and cpu["how"] == "measured"
    assert report["runtimes"]["gpu"]["compatible"] is True


def test_inspect_cli_json_and_refusals(tmp_path):
    result = _invoke("inspect", SHIPPED, "--runtimes", "cpu", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["kinds"][0]["op"] == "CONV_2D" and report["runs_on"][0]["runtime"].startswith("CPU")
    result = _invoke("inspect", SHIPPED, "--runtimes", "gpuu")
    assert (
        result.exit_code == 1
        and "unknown runtime 'gpuu'" in result.output
        and "Traceback" not in result.output
    )
    result = _invoke("inspect", SHIPPED, "--keep-float", "CONV_2D", "--runs-dir", tmp_path)
    assert (
        result.exit_code == 1 and "needs the float source run runs/edge-cnn-tiny-train-2" in result.output
    ), result.output
    assert not any(tmp_path.iterdir())


# ---------------------------------------------------------------- inspect: the layer-wise error and --keep-float


def test_layer_errors_are_ranked_and_keep_float_writes_a_mixed_artifact(exported, tmp_path):
    from edge_fm.bench.inspection import inspect_artifact
    from edge_fm.export.op_table import op_table
    from edge_fm.export.quant_debug import ROUNDING_RMSE

    report = inspect_artifact(
        exported["int8"],
        source_run=exported["train"],
        images=64,
        calibration=100,
        keep_float=["FULLY_CONNECTED"],
        out=tmp_path / "mixed",
        runtimes=[],
    )
    errors = report["errors"]
    assert errors["status"] == "measured" and errors["images"] == 64
    rmse = [layer["rmse_per_scale"] for layer in errors["layers"]]
    assert rmse == sorted(rmse, reverse=True) and len(rmse) >= 4
    # Every quantized conv and dense output carries at least rounding's error, and not wildly more.
    for layer in errors["layers"]:
        if layer["op"] in ("CONV_2D", "FULLY_CONNECTED"):
            assert 0.5 * ROUNDING_RMSE < layer["rmse_per_scale"] < 5
    # The command line's ranking of the debugger's measures: each header over its layer's own value.
    from edge_fm.cli import inspect_commands

    with inspect_commands.console.capture() as shown:
        inspect_commands._print_errors(errors)
    text, first = shown.get(), errors["layers"][0]
    for header in ("RMSE (steps)", "max |err| (steps)", "bias (steps)"):
        assert header in text
    row = next(line for line in text.splitlines() if line.strip().strip("│┃ ").startswith("1 "))
    cells = [cell.strip() for cell in row.strip("│┃ ").split("│")]
    assert cells[:5] == [
        "1",
        first["op"],
        f"{first['rmse_per_scale']:.3f}",
        f"{first['max_abs_error_per_scale']:.2f}",
        f"{first['mean_error_per_scale']:+.3f}",
    ]
    kept = report["keep_float"]
    assert kept["kept_float_ops"] == ["FULLY_CONNECTED"] and kept["bundle"] == str(tmp_path / "mixed")
    mixed = op_table((tmp_path / "mixed" / "model.tflite").read_bytes())
    assert {op["weights_dtype"] for op in mixed if op["op"] == "FULLY_CONNECTED"} == {"float32"}
    assert {op["weights_dtype"] for op in mixed if op["op"] == "CONV_2D"} == {"int8"}
    assert kept["mixed"]["bytes"] > kept["quantized"]["bytes"]  # float dense weights are 4x the int8 ones
    assert kept["bundle_bytes"] == (tmp_path / "mixed" / "model.tflite").stat().st_size
    assert 0.5 < kept["mixed"]["accuracy"] <= 1 and kept["mixed"]["p50_ms"] > 0


def test_int16x8_layers_are_not_reported_as_int8_ones(schemes, exported):
    from edge_fm.bench.inspection import inspect_artifact

    report = inspect_artifact(schemes["int16x8"], runtimes=[])
    assert report["errors"]["status"] == "not measured" and "int8 only" in report["errors"]["reason"]
    with pytest.raises(EdgeFMError, match="int8 only"):
        inspect_artifact(schemes["int16x8"], source_run=exported["train"], runtimes=[])


def test_keep_float_naming_no_op_is_refused_and_writes_nothing(exported, tmp_path):
    result = _invoke(
        "inspect",
        exported["int8"],
        "--source",
        exported["train"],
        "--images",
        "16",
        "--calibration",
        "50",
        "--keep-float",
        "LSTM",
        "--runtimes",
        "none",
        "--runs-dir",
        tmp_path,
    )
    assert result.exit_code == 1 and "--keep-float LSTM names no op of the model" in result.output, (
        result.output
    )
    assert not any(tmp_path.iterdir())


def test_int8_error_by_op_is_the_short_form_of_layer_errors(exported):
    from edge_fm.export.exporter import representative_images
    from edge_fm.export.quant_debug import int8_error_by_op
    from edge_fm.train.runs import Run

    run = Run(exported["train"])
    dataset = run.dataset()
    rows = int8_error_by_op(
        run.model_to_convert(), representative_images(dataset.x_train, 50), dataset.x_val[:16]
    )
    assert rows and set(rows[0]) == {"op", "tensor", "rmse_per_scale"}


# ---------------------------------------------------------------- runtimes


def test_xnnpack_takes_int8_ops_but_no_int16_ones(exported, schemes):
    from edge_fm.export.runtimes import cpu_delegation

    int8 = cpu_delegation(Path(exported["int8"]) / "model.tflite")
    assert int8["delegated_ops"].get("CONV_2D") == 2 and int8["partitions"] >= 1
    int16 = cpu_delegation(Path(schemes["int16x8"]) / "model.tflite")
    assert int16["delegated_ops"] == {} and int16["builtin_ops"]["CONV_2D"] == 2


def test_gpu_analysis_parser_lists_incompatible_ops():
    from edge_fm.export.runtimes import parse_gpu_analysis

    text = (
        "Subgraph#0 main(T#0) -> [T#3]\n  Op#0 CONV_2D(T#0, T#1, T#2) -> [T#3]\n"
        "  Op#1 CUMSUM(T#3, T#4) -> [T#5]\nGPU COMPATIBILITY WARNING: Not supported op CUMSUM\n"
        "\nGPU COMPATIBILITY WARNING: Subgraph#0 has GPU delegate compatibility issues at nodes 1 on TFLite "
        "runtime version 2.21.0\n"
    )
    report = parse_gpu_analysis(text)
    assert report["compatible"] is False
    assert report["incompatible_ops"] == [{"index": 1, "op": "CUMSUM", "reason": "Not supported op CUMSUM"}]
    fine = parse_gpu_analysis(
        "  Op#0 CONV_2D(T#0) -> [T#1]\nYour model looks compatible with GPU delegate on TFLite "
        "runtime version 2.21.0.\n"
    )
    assert fine["compatible"] is True and fine["runtime_version"] == "2.21.0"


@needs_tflm
def test_runs_on_answers_every_runtime_and_marks_how(exported):
    from edge_fm.export.runtimes import runs_on, summary_rows

    report = runs_on(Path(exported["int8"]) / "model.tflite", ethos_u_configs=["ethos-u55-128"])
    assert report["tflm"]["runs"] and report["tflm"]["arena_bytes"] >= report["tflm"]["arena_min_bytes"] > 0
    rows = {row["runtime"]: row for row in summary_rows(report)}
    assert rows["TFLM (microcontrollers)"]["how"] == "measured"
    assert rows["GPU delegate"]["how"] == "static check"
    if importlib.util.find_spec("ethosu") is not None:
        assert rows["Arm Ethos-U55-128 (Vela)"]["how"] == "estimated"
        assert "all" in rows["Arm Ethos-U55-128 (Vela)"]["answer"]


# ---------------------------------------------------------------- Ethos-U (Vela)


@needs_vela
def test_ethos_u_form_holds_the_compiled_model_and_the_estimate(exported, tmp_path):
    from edge_fm.export.tflite_file import inspect as inspect_tflite

    result = _invoke(
        "export",
        exported["int8"],
        "--for",
        "ethos-u",
        "--accelerator-config",
        "ethos-u55-128",
        "--out",
        tmp_path / "npu",
    )
    assert result.exit_code == 0, result.output
    bundle = tmp_path / "npu"
    record = json.loads((bundle / "model.json").read_text())["ethos_u"]
    assert record["config"] == "ethos-u55-128" and record["estimate"] is True and record["cpu_ops"] == []
    assert record["npu_ops"] > 0 and record["clock_hz"] == 500e6
    assert record["inferences_per_second"] == pytest.approx(record["clock_hz"] / record["cycles"], rel=0.01)
    assert "CUSTOM:ethos-u" in inspect_tflite((bundle / "model_vela.tflite").read_bytes())["ops"]
    assert "estimate, not measured" in result.output


@needs_vela
def test_ethos_u_refuses_a_float_artifact_and_an_unknown_config(exported, tmp_path):
    result = _invoke(
        "export",
        exported["fp32"],
        "--for",
        "ethos-u",
        "--accelerator-config",
        "ethos-u55-128",
        "--out",
        tmp_path / "npu",
    )
    assert result.exit_code == 1 and "has float tensors" in result.output, result.output
    assert not (tmp_path / "npu").exists()
    result = _invoke("export", exported["int8"], "--for", "ethos-u", "--accelerator-config", "ethos-u99")
    assert result.exit_code == 1 and "unknown Ethos-U accelerator config 'ethos-u99'" in result.output
    assert "ethos-u55-128" in result.output and "ethos-u65-256" in result.output


@needs_vela
def test_ethos_u_form_of_a_run_exports_an_integer_artifact_first(exported, tmp_path):
    result = _invoke(
        "export", exported["train"], "--for", "ethos-u", "-f", "fp32", "--accelerator-config", "ethos-u55-128"
    )
    assert result.exit_code == 1 and "the Ethos-U form is an integer export" in result.output, result.output
    runs = tmp_path / "runs"
    result = _invoke(
        "export",
        exported["train"],
        "--for",
        "ethos-u",
        "--accelerator-config",
        "ethos-u65-256",
        "--parity-images",
        "300",
        "--runs-dir",
        runs,
        "--out",
        tmp_path / "npu",
    )
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "npu" / "model.json").read_text())
    assert record["format"] == "int8" and record["ethos_u"]["config"] == "ethos-u65-256"
    # The intermediate int8 export is a bundle of its own under --runs-dir, checked on --parity-images.
    (int8,) = [path for path in runs.iterdir() if (path / "model.json").is_file()]
    assert json.loads((int8 / "model.json").read_text())["export"]["parity"]["images"] == 300
    assert record["ethos_u"]["source"] == str(int8 / "model.tflite")


@needs_vela
def test_vela_names_the_op_it_leaves_to_the_cpu():
    from edge_fm.export.vela import estimate

    report = estimate(REPO / "models" / "mobilenetv2" / "model.tflite", "ethos-u55-128")
    assert [op["op"] for op in report.cpu_ops] == ["RESIZE_BILINEAR"] and "scale-factor" in report.cpu_ops[0][
        "reason"
    ]


@needs_vela
def test_bench_vela_target_gives_estimate_rows(exported, tmp_path):
    out = tmp_path / "vela.json"
    # No --data-dir, no --sample: an estimate reads no images.
    result = _invoke(
        "bench", exported["int8"], exported["fp32"], "--target", "vela:ethos-u65-256", "--json", out
    )
    assert result.exit_code == 1, result.output  # the fp32 artifact's row is an error row
    rows = {row["format"]: row for row in json.loads(out.read_text())["results"]["rows"]}
    assert (
        rows["int8"]["status"] == "ok"
        and rows["int8"]["estimate"] is True
        and rows["int8"]["config"] == "ethos-u65-256"
    )
    assert rows["fp32"]["status"] == "error" and "float tensors" in rows["fp32"]["error"]
    assert "estimate" in result.output


# ---------------------------------------------------------------- model cards


@pytest.mark.parametrize("name", ["cnn-2conv", "edge-cnn-tiny", "mobilenetv2"])
def test_cards_say_what_each_runtime_runs_and_how_it_is_known(name):
    card = (REPO / "models" / name / "MODEL_CARD.md").read_text()
    section = card.split("## Runs on", 1)[1].split("\n## ", 1)[0]
    for runtime, how in (
        ("CPU (LiteRT, XNNPACK)", "measured"),
        ("GPU delegate", "static check"),
        ("Arm Ethos-U55-128 (Vela)", "estimated"),
        ("TFLM (microcontrollers)", "measured"),
        ("MediaPipe Tasks (apps)", "measured"),
    ):
        assert any(
            line.startswith(f"| {runtime} |") and line.endswith(f"| {how} |") for line in section.splitlines()
        ), runtime
    # The card's Ethos-U figures are the committed estimates'.
    from edge_fm.result_files import read_result_file

    committed = read_result_file(REPO / "benchmarks" / "results" / "ethos_u.json", "bench")["results"]
    row = next(r for r in committed["rows"] if r["model"] == name and r["target"] == "vela:ethos-u55-128")
    assert f"{row['inferences_per_second']:,.0f} inferences/s at 500 MHz" in section


def test_card_runs_on_rows_come_from_the_runtimes(tmp_path, exported):
    import shutil

    from edge_fm.shipping.runs_on import runs_on_rows
    from edge_fm.shipping.runs_on import runs_on_text as _runs_on_text

    shutil.copy(Path(exported["int8"]) / "model.tflite", tmp_path / "model.tflite")
    rows = runs_on_rows(tmp_path)
    assert rows[0]["runtime"] == "CPU (LiteRT, XNNPACK)" and "XNNPACK takes" in rows[0]["answer"]
    assert "| CPU (LiteRT, XNNPACK) |" in _runs_on_text(rows)
    assert runs_on_rows(tmp_path / "missing") == [] and "Not checked" in _runs_on_text([])


def test_the_html_report_of_a_bundle_has_the_inspection_section(exported, tmp_path):
    from edge_fm.show.html_report import ReportOptions, build_report

    page = build_report(
        exported["int8"], tmp_path / "report.html", ReportOptions(None, True, 200, 0)
    ).read_text()
    assert 'id="op-kinds"' in page and 'id="worst-layers"' in page and 'id="runs-on"' in page
    assert "XNNPACK takes" in page and "static check" in page


def test_tflm_row_of_a_model_larger_than_every_flash_is_a_size_check(tmp_path):
    # TFLM's Python interpreter crashes on a model of tens of MB: the size is checked before it is run.
    from edge_fm.export.runtimes import summary_rows, tflm

    big = tmp_path / "model.tflite"
    big.write_bytes(b"\0" * 9_000_000)
    answer = tflm(big)
    assert answer["runs"] is False and "larger than the flash of every board" in answer["error"]
    rows = summary_rows({"tflm": answer})
    assert rows[-1]["how"] == "static check" and "9,000,000 bytes" in rows[-1]["answer"]

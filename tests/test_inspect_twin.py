"""`edge-fm inspect` without the source run: the float twin of an int8 artifact, and the layers it ranks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from edge_fm.cli import app

REPO = Path(__file__).resolve().parents[1]
MODELS = REPO / "models"


def _sample_images(count: int) -> tuple[np.ndarray, np.ndarray]:
    from edge_fm.data import datasets as data

    images, labels = data.load_split("train", data.SAMPLE_DIR)  # training images: never the test split
    return images[:count], labels[:count]


def _run(content: bytes, images: np.ndarray) -> np.ndarray:
    from edge_fm.runner import TFLiteModel

    return TFLiteModel(model_content=content, num_threads=1).predict_proba(images)


def test_the_twin_of_the_shipped_mlp_is_its_network_in_float():
    """The twin against a NumPy forward pass of the same dequantized weights: MUL, RESHAPE, three dense, softmax."""
    from edge_fm.export import tflite_file

    raw = (MODELS / "mlp" / "model.tflite").read_bytes()
    twin, _ = tflite_file.float_twin(raw)
    assert tflite_file.io_types(tflite_file.read(twin)) == ("FLOAT32", "FLOAT32")
    model = tflite_file.read(raw)
    graph = model.subgraphs[0]
    editor = tflite_file.GraphEditor(model, graph)

    def constant(index: int) -> np.ndarray:
        return tflite_file.dequantized_values(graph.tensors[index], editor.constant(index))

    images, _ = _sample_images(64)
    x = images.astype(np.float32)
    for op in graph.operators:
        name = tflite_file.op_name(model, op)
        if name == "MUL":
            x = x * constant(int(op.inputs[1]))
        elif name == "RESHAPE":
            x = x.reshape(len(x), -1)
        elif name == "FULLY_CONNECTED":
            x = x @ constant(int(op.inputs[1])).T + constant(int(op.inputs[2]))
            if op.builtinOptions.fusedActivationFunction == 1:  # RELU
                x = np.maximum(x, 0)
        elif name == "SOFTMAX":
            x = np.exp(x - x.max(1, keepdims=True))
            x = x / x.sum(1, keepdims=True)
    np.testing.assert_allclose(_run(twin, images), x, atol=1e-4)
    agreement = np.mean(_run(twin, images).argmax(1) == _run(raw, images).argmax(1))
    assert agreement >= 0.9, agreement


def test_the_twin_drops_conversions_and_agrees_with_the_int8_artifact():
    """mobilenetv2 (per-channel convs, depthwise, a requantizing QUANTIZE): one op fewer, same answers."""
    from edge_fm.export import tflite_file

    raw = (MODELS / "mobilenetv2" / "model.tflite").read_bytes()
    twin, twin_of = tflite_file.float_twin(raw)
    original, edited = tflite_file.read(raw), tflite_file.read(twin)
    names = [tflite_file.op_name(edited, op) for op in edited.subgraphs[0].operators]
    assert "QUANTIZE" not in names and len(names) == len(original.subgraphs[0].operators) - 1
    assert any(old != new for old, new in twin_of.items())  # the QUANTIZE output maps to its input
    assert tflite_file.inspect(twin)["integer_only"] is False
    images, _ = _sample_images(100)
    agreement = np.mean(_run(twin, images).argmax(1) == _run(raw, images).argmax(1))
    assert agreement >= 0.95, agreement


def test_a_shipped_qat_bundle_gets_its_worst_layers_ranked(data_dir):
    from edge_fm.bench.inspection import inspect_artifact, worst_layers
    from edge_fm.bench.twin_error import TWIN_MEASURE

    report = inspect_artifact(MODELS / "cnn-2conv", data_dir=data_dir, images=64, runtimes=[])
    errors = report["errors"]
    assert report["artifact"]["format"] == "qat-int8" and errors["status"] == "measured"
    assert errors["method"] == "float twin" and errors["measures"] == TWIN_MEASURE
    assert errors["images"] == 64 and "validation split" in errors["data"]
    assert (
        errors["twin"]["agreement"] >= 0.95
        and abs(errors["twin"]["int8_accuracy"] - errors["twin"]["twin_accuracy"]) <= 0.05
    )
    layers = errors["layers"]
    added = [layer["added_rmse_per_scale"] for layer in layers]
    assert added == sorted(added, reverse=True) and worst_layers(report, 3) == layers[:3]
    assert len(layers) == report["summary"]["ops"]  # every op of this model writes an int8 tensor
    for layer in layers:
        assert layer["rmse_per_scale"] >= 0 and layer["mean_abs_error_per_scale"] >= 0
        assert 0 <= layer["clipped_share"] <= 1 and layer["inherited_per_scale"] >= 0
        assert layer["mean_abs_error_per_scale"] <= layer["rmse_per_scale"] + 1e-9
    outputs = [layer for layer in layers if layer["graph_output"]]
    assert [layer["op"] for layer in outputs] == ["SOFTMAX"]
    # The first op reads the exact input: it adds all of its error, which is about rounding's.
    first = next(layer for layer in layers if layer["index"] == 0)
    assert first["inherited_per_scale"] == 0 and 0.05 < first["rmse_per_scale"] < 0.5


def test_inspect_cli_names_what_the_twin_measures(data_dir):
    runner = CliRunner()
    bundle = MODELS / "edge-cnn-tiny"
    args = ["inspect", str(bundle), "--data-dir", str(data_dir), "--images", "32", "--runtimes", "none"]
    result = runner.invoke(app, args, env={"COLUMNS": "240"})
    assert result.exit_code == 0, result.output
    assert "worst-quantized layers of int8" in result.output
    assert "activation rounding and clipping, accumulated along the network" in result.output
    assert "differ from the twin by more than" not in result.output  # edge-cnn-tiny stays close to its twin
    result = runner.invoke(app, [*args, "--json"])
    errors = json.loads(result.output)["errors"]
    assert errors["method"] == "float twin" and "weights' own rounding is not included" in errors["measures"]
    result = runner.invoke(
        app, ["inspect", str(bundle), "--data-dir", str(REPO / "nowhere"), "--runtimes", "none"]
    )
    assert result.exit_code == 0 and "layer-wise error not measured" in result.output
    assert "Fashion-MNIST not found" in result.output and "Traceback" not in result.output


@pytest.mark.slow
def test_inspect_says_where_the_twin_comparison_reads_as_drift(data_dir):
    # ResNet50's conv5 layers differ from its twin by most of their activations' size (inspect_models.json).
    args = [
        "inspect",
        str(MODELS / "resnet50"),
        "--data-dir",
        str(data_dir),
        "--images",
        "32",
        "--runtimes",
        "none",
    ]
    result = CliRunner().invoke(app, args, env={"COLUMNS": "240"})
    assert result.exit_code == 0, result.output
    assert "differ from the twin by more than 50% of the activations' own size" in " ".join(
        result.output.split()
    )


def test_the_html_report_shows_the_twin_ranking(data_dir, tmp_path):
    from edge_fm.show.html_report import ReportOptions, build_report

    options = ReportOptions(data_dir=data_dir, max_images=200, explained=0)
    page = build_report(MODELS / "edge-cnn-tiny", tmp_path / "report.html", options).read_text()
    section = page.split('id="inspection"', 1)[1]
    assert 'id="worst-layers"' in section and "activation rounding and clipping" in section
    assert "agrees with the artifact on" in section
    worst = section.split('id="worst-layers"', 1)[1].split("</table>", 1)[0]
    assert worst.count("<tr><td>") == 10  # the ten worst layers, not the page's other tables


def test_the_committed_inspection_of_the_shipped_models(data_dir):
    from edge_fm.bench.inspection import inspect_artifact
    from edge_fm.result_files import read_result_file

    recorded = read_result_file(REPO / "benchmarks" / "results" / "inspect_models.json", "inspect-models")
    rows = {row["model"]: row for row in recorded["results"]["rows"]}
    shipped = sorted(path.parent.name for path in MODELS.glob("*/model.tflite"))
    assert sorted(rows) == shipped and all(rows[m]["status"] == "measured" for m in shipped)
    for row in rows.values():
        assert row["method"] == "float twin" and row["images"] == 200 and row["twin"]["agreement"] > 0.9
        assert row["output_layer"]["graph_output"] and len(row["worst"]) >= 3
    # Measured again, one model agrees with what was committed: the file is this artifact's inspection.
    again = inspect_artifact(MODELS / "edge-cnn-tiny", data_dir=data_dir, images=200, runtimes=[])["errors"]
    assert again["twin"] == pytest.approx(rows["edge-cnn-tiny"]["twin"])
    worst = rows["edge-cnn-tiny"]["worst"][:3]
    assert [layer["tensor"] for layer in again["layers"][:3]] == [layer["tensor"] for layer in worst]
    assert [layer["added_rmse_per_scale"] for layer in again["layers"][:3]] == pytest.approx(
        [layer["added_rmse_per_scale"] for layer in worst]
    )

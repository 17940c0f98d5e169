"""The mobile GPU form, and the mobile forms in MediaPipe Tasks for the Web (headless Chromium, WASM served locally)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
from shipped import stored_mobile_forms
from typer.testing import CliRunner

from edge_fm.cli import app
from edge_fm.data.datasets import CLASS_NAMES, load_split
from edge_fm.errors import EdgeFMError
from edge_fm.export import tflite_file
from edge_fm.export.bundles import read_description
from edge_fm.export.form_options import FormOptions
from edge_fm.export.luma import GREY_WEIGHTS
from edge_fm.export.mobile import MOBILE_FOLDER, grey_to_rgb
from edge_fm.export.mobile_gpu import export_mobile_gpu
from edge_fm.export.tflite_metadata import metadata_buffer, packed_files
from edge_fm.runner import TFLiteModel

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "clients"))
from environments import ClientUnavailable, web_package  # noqa: E402
from mediapipe_web import web_client  # noqa: E402

WEB_IMAGES = 100  # test images per model in the browser (the whole split: benchmarks/mobile_clients.py --web)
fb = tflite_file.metadata_schema


@pytest.fixture(scope="module")
def gpu_bundle(exported, tmp_path_factory):
    return export_mobile_gpu(
        exported["train"], FormOptions(parity_images=400, out=tmp_path_factory.mktemp("gpu") / "form")
    )


@pytest.fixture(scope="module")
def test_images(data_dir):
    images, labels = load_split("test", data_dir)
    return images[:WEB_IMAGES], labels[:WEB_IMAGES]


def _standard_metadata(tflite: bytes) -> dict:
    """What the Task APIs read of a model's TFLITE_METADATA, parsed with the official schema's generated code."""
    meta = fb.ModelMetadata.GetRootAs(metadata_buffer(tflite), 0)
    subgraph = meta.SubgraphMetadata(0)
    image, probability = subgraph.InputTensorMetadata(0), subgraph.OutputTensorMetadata(0)
    unit = image.ProcessUnits(0)
    normalization = fb.NormalizationOptions()
    normalization.Init(unit.Options().Bytes, unit.Options().Pos)
    properties = fb.ImageProperties()
    properties.Init(image.Content().ContentProperties().Bytes, image.Content().ContentProperties().Pos)
    files = [probability.AssociatedFiles(i) for i in range(probability.AssociatedFilesLength())]
    return {
        "content": image.Content().ContentPropertiesType(),
        "color_space": properties.ColorSpace(),
        "normalization": unit.OptionsType(),
        "mean": normalization.MeanAsNumpy().tolist(),
        "std": normalization.StdAsNumpy().tolist(),
        "pixel_stats": (image.Stats().MinAsNumpy().tolist(), image.Stats().MaxAsNumpy().tolist()),
        "output_files": [(f.Name().decode(), f.Type()) for f in files],
        "author": meta.Author(),
        "license": meta.License(),
        "min_parser_version": meta.MinParserVersion(),
    }


# ---------------------------------------------------------------- the mobile GPU form


def test_mobile_gpu_form_has_float_rgb_io_float16_weights_and_the_mobile_forms_metadata(
    gpu_bundle, test_images
):
    description = read_description(gpu_bundle)
    assert description["target"] == "mobile-gpu" and description["format"] == "fp16"
    assert description["name"] == "tiny-cnn-fp16-mobile-gpu"
    assert description["input"]["shape"] == [1, 28, 28, 3] and description["input"]["dtype"] == "float32"
    assert description["output"]["shape"] == [1, 10] and description["output"]["dtype"] == "float32"
    record = description["mobile_gpu"]
    assert (
        record["parity"]["images"] == 400
        and record["parity"]["agreement"] >= 0.99
        and record["parity"]["passed"]
    )
    assert record["grey_conversion"]["weights"] == list(GREY_WEIGHTS)
    tflite = (gpu_bundle / "model.tflite").read_bytes()
    model = tflite_file.read(tflite)
    types = {tflite_file.type_name(tensor.type) for tensor in model.subgraphs[0].tensors}
    assert "FLOAT16" in types and "INT8" not in types  # the weights are stored in half precision
    probe = TFLiteModel(model_content=tflite)
    assert np.dtype(probe.input["dtype"]) == np.float32 and np.dtype(probe.output["dtype"]) == np.float32
    # The same standard metadata as the shipped mobile form: an RGB image fed as raw pixel values, the labels packed in.
    shipped = (REPO / "models" / "edge-cnn-tiny" / MOBILE_FOLDER / "model.tflite").read_bytes()
    assert _standard_metadata(tflite) == _standard_metadata(shipped)
    assert _standard_metadata(tflite)["color_space"] == fb.ColorSpaceType.RGB
    assert packed_files(tflite) == {"labels.txt": ("\n".join(CLASS_NAMES) + "\n").encode()}
    assert tflite_file.read_metadata(tflite)["description"]["mobile_gpu"] == record
    # Grey images given as RGB floats: the float model's answers.
    images, labels = test_images
    probabilities = probe.predict_proba(grey_to_rgb(images).astype(np.float32))
    assert (
        np.allclose(probabilities.sum(1), 1, atol=1e-3) and (probabilities.argmax(1) == labels).mean() > 0.6
    )


def test_mobile_gpu_form_refuses_exported_models_other_formats_and_io_dtypes(exported, data_dir, tmp_path):
    with pytest.raises(EdgeFMError, match="holds no float model.*pass that run \\("):
        export_mobile_gpu(exported["fp32"], FormOptions(out=tmp_path / "a"))
    with pytest.raises(EdgeFMError, match="holds no float model"):
        export_mobile_gpu(exported["int8"] / "model.tflite", FormOptions(out=tmp_path / "b"))
    with pytest.raises(EdgeFMError, match="drop -f int8"):
        export_mobile_gpu(exported["train"], FormOptions("int8", out=tmp_path / "c"))
    runs = tmp_path / "runs"
    for args, expected in (
        ([str(exported["fp32"]), "--for", "mobile-gpu"], "holds no float model"),
        ([str(REPO / "models" / "edge-cnn-tiny"), "--for", "mobile-gpu"], "holds no float model"),
        ([str(exported["train"]), "--for", "mobile-gpu", "-f", "qat-int8"], "drop -f qat-int8"),
        ([str(exported["train"]), "--for", "mobile-gpu", "--io-dtype", "uint8"], "mobile-gpu: float32 RGB"),
        ([str(exported["train"]), "--for", "mobile-gpus"], "mobile-gpu"),
    ):
        result = CliRunner().invoke(
            app, ["export", *args, "--runs-dir", str(runs), "--data-dir", str(data_dir)]
        )
        assert result.exit_code != 0 and expected in " ".join(result.output.split()), result.output
        assert "Traceback" not in result.output and len(result.output.strip().splitlines()) <= 3, (
            result.output
        )
    assert not runs.exists() and not any(tmp_path.glob("[abc]"))  # nothing written


# ---------------------------------------------------------------- MediaPipe Tasks for the Web


@pytest.fixture(scope="module")
def web():
    try:
        with web_client(web_package()) as client:
            yield client
    except ClientUnavailable as exc:
        if os.environ.get("CI"):
            pytest.fail(str(exc))
        pytest.skip(str(exc))


def _litert(model: Path, images: np.ndarray) -> np.ndarray:
    """LiteRT's probabilities, one image at a time, as the client runs them."""
    runner = TFLiteModel(model_path=str(model))
    return np.concatenate([runner.predict_proba(images[i : i + 1]) for i in range(len(images))])


SHIPPED_MOBILE = [
    folder for folder in stored_mobile_forms() if read_description(folder).get("target") == "mobile"
]


@pytest.mark.slow
def test_mediapipe_web_classifies_every_shipped_mobile_form_as_litert_does_on_cpu(web, test_images):
    assert len(SHIPPED_MOBILE) == 7
    images = grey_to_rgb(test_images[0])
    for bundle in SHIPPED_MOBILE:
        model = bundle / "model.tflite"
        result = web.classify(model, images, delegate="CPU")
        assert result["error_count"] == 0, (bundle, result["errors"])
        reference = _litert(model, images)
        assert np.array_equal(result["top1"], reference.argmax(1)), bundle.parent.name
        assert np.abs(np.array(result["scores"]) - reference).max() == 0.0, (
            bundle.parent.name
        )  # the same bytes
        assert result["label_names"] == list(CLASS_NAMES)
    assert web.version == "@mediapipe/tasks-vision 1.1.0"
    assert {Path(url).name for url in web.blocked} <= {
        "log"
    }  # only MediaPipe's usage log left the machine: refused


@pytest.mark.slow
def test_mediapipe_web_gpu_delegate_runs_the_gpu_form_and_not_the_int8_mobile_form(
    web, gpu_bundle, test_images
):
    # WebGL on SwiftShader, Chromium's software renderer: MediaPipe's GPU path without a GPU.
    assert "SwiftShader" in (web.webgl_renderer or ""), web.webgl_renderer
    images = grey_to_rgb(test_images[0])
    model = gpu_bundle / "model.tflite"
    result = web.classify(model, images, delegate="GPU")
    assert result["error_count"] == 0, result["errors"]
    reference = _litert(model, images.astype(np.float32))
    scores, top = np.array(result["scores"]), np.array(result["top1"])
    # The GPU computes in float16, LiteRT's CPU kernels in float32 (the whole test split for a GPU form is in
    # benchmarks/results/mobile_clients.json). Allowed: scores within 0.005, and a different top class only
    # where LiteRT scores it within 0.01 of its best, on at most 1% of the images.
    assert np.abs(scores - reference).max() <= 0.005
    differ = top != reference.argmax(1)
    assert np.all(reference.max(1)[differ] - reference[differ, top[differ]] <= 0.01)
    assert differ.mean() <= 0.01 and result["label_names"] == list(CLASS_NAMES)
    # The int8 mobile form's uint8 output is what MediaPipe's GPU post-processing refuses: why the GPU form exists.
    refused = web.classify(SHIPPED_MOBILE[0] / "model.tflite", images[:2], delegate="GPU")
    assert refused["error_count"] == 2 and "Unsupported input tensor type: Float32" in refused["errors"][0]
    # And the CPU delegate runs the GPU form too, with LiteRT's float32 scores.
    on_cpu = web.classify(model, images, delegate="CPU")
    assert np.array_equal(on_cpu["top1"], reference.argmax(1))


def test_card_rows_say_which_form_each_mediapipe_delegate_takes(tmp_path):
    from edge_fm.shipping.runs_on import mediapipe_rows

    description = read_description(REPO / "models" / "edge-cnn-tiny" / MOBILE_FOLDER)
    web_cpu = {
        "client": "MediaPipe Tasks for the Web",
        "version": "@mediapipe/tasks-vision 1.1.0",
        "delegate": "CPU",
        "images": 100,
        "top1_agreement_with_litert": 1.0,
    }
    web_gpu = {
        "client": "MediaPipe Tasks for the Web, GPU delegate",
        "version": "@mediapipe/tasks-vision 1.1.0",
        "delegate": "GPU",
        "images": 20,
        "webgl": "software WebGL (SwiftShader)",
        "classified": 0,
        "error": "TensorsDequantizationCalculator: Unsupported input tensor type: Float32",
    }
    description["mobile"]["clients"] = [web_cpu, web_gpu]
    mobile = {"kind": "mobile", "path": "mobile/", "description": description}
    cpu, gpu = mediapipe_rows(tmp_path, mobile)
    assert cpu["runtime"] == "MediaPipe Tasks (apps)" and cpu["how"] == "measured"
    assert cpu["answer"].startswith("CPU delegate: `mobile/model.tflite`, the int8 mobile form")
    assert (
        "MediaPipe Tasks for the Web (@mediapipe/tasks-vision 1.1.0): top-1 agreement with LiteRT 100.00%"
        in (cpu["answer"])
    )
    assert (
        gpu["how"] == "measured"
        and "--for mobile-gpu" in gpu["answer"]
        and "not in this folder" in gpu["answer"]
    )
    assert "`mobile/model.tflite` fails there" in gpu["answer"] and "Float32" in gpu["answer"]
    # Unchecked forms say so.
    description["mobile"]["clients"] = []
    cpu, gpu = mediapipe_rows(tmp_path, mobile)
    assert cpu["how"] == gpu["how"] == "not checked" and "not yet checked" in cpu["answer"]

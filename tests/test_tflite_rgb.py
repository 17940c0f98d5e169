"""RGB uint8 forms of the shipped int8 models, made by graph surgery, run in LiteRT on real test images.

A grey image fed as three equal channels must give the original model's outputs bit for bit; a
colour image must be classified as its BT.601 luma.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from shipped import stored_mobile_forms

from edge_fm.data import datasets as data
from edge_fm.errors import EdgeFMError
from edge_fm.export.tflite_file import read_metadata
from edge_fm.export.tflite_rgb import (
    BRIDGES,
    DROP_REPEAT,
    FOLD_CONV,
    FOLD_DENSE,
    GREY_WEIGHTS,
    INTEGER_BRIDGE,
    LUMA_CONV,
    rgb_form,
    split_by_luma,
    to_rgb_uint8,
)

REPO = Path(__file__).resolve().parents[1]
# Models whose mobile form the repository stores (resnet50's is a record: see test_mobile.py).
MODELS = [form.parent.name for form in stored_mobile_forms()]
# Where each shipped graph takes the luma weights: no shipped model needs the added convolution.
EXPECTED_METHOD = {"mlp": FOLD_DENSE, "mobilenetv2": DROP_REPEAT}
GREY_IMAGES = 1000
COLOUR_IMAGES = 300
# Top-1 agreement between a colour image through the RGB form and its luma image through the
# original: the two differ only by rounding (the luma image is rounded to whole pixels, the
# folded weights to whole integers).
MIN_COLOUR_AGREEMENT = 0.97


@pytest.fixture(scope="module")
def test_images(data_dir) -> np.ndarray:
    images, _ = data.load_split("test", data_dir)
    return images[:GREY_IMAGES]


def _shipped(name: str) -> bytes:
    return (REPO / "models" / name / "model.tflite").read_bytes()


def _outputs(
    tflite: bytes, inputs: np.ndarray, xnnpack: bool = True
) -> tuple[np.ndarray, np.ndarray, dict, dict]:
    """Raw outputs and dequantized scores, one image per call as an app runs the model."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    resolver = OpResolverType.AUTO if xnnpack else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    interpreter = Interpreter(model_content=tflite, num_threads=1, experimental_op_resolver_type=resolver)
    interpreter.allocate_tensors()
    source, sink = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    raw = []
    for item in inputs:
        interpreter.set_tensor(source["index"], item[None])
        interpreter.invoke()
        raw.append(interpreter.get_tensor(sink["index"])[0].copy())
    raw = np.array(raw)
    scale, zero_point = sink["quantization"]
    return raw, (raw.astype(np.float64) - zero_point) * scale, source, sink


def _grey_int8(images: np.ndarray) -> np.ndarray:
    """The shipped models' input: q = pixel - 128."""
    return (images.astype(np.int16) - 128).astype(np.int8)


def _rgb(images: np.ndarray) -> np.ndarray:
    return np.repeat(images.reshape(*images.shape[:3], 1), 3, axis=-1)


def _tinted(images: np.ndarray, seed: int = 0) -> np.ndarray:
    """Colour images: each grey image times a random colour, a different one per image."""
    colours = np.random.default_rng(seed).uniform(0.25, 1.0, size=(len(images), 1, 1, 3))
    return np.round(_rgb(images) * colours).astype(np.uint8)


def _luma(rgb: np.ndarray) -> np.ndarray:
    return np.round(rgb.astype(np.float64) @ np.array(GREY_WEIGHTS))[..., None].astype(np.uint8)


# ---------------------------------------------------------------- the integer split


def test_split_by_luma_sums_exactly_with_each_share_within_one_step_of_luma():
    weights = np.arange(-127, 128)
    shares, clipped = split_by_luma(weights)
    assert shares.shape == (255, 3) and clipped == 0
    np.testing.assert_array_equal(shares.sum(axis=-1), weights)
    ideal = weights[:, None] * np.array(GREY_WEIGHTS)
    assert np.abs(shares - ideal).max() < 1.0
    assert split_by_luma(np.array([100]))[0].tolist() == [[30, 59, 11]]


def test_split_by_luma_holds_large_weights_within_int8_and_refuses_what_cannot_fit():
    weights = np.array([[216, 300], [-381, 381]])
    shares, clipped = split_by_luma(weights)
    np.testing.assert_array_equal(shares.sum(axis=-1), weights)
    assert np.abs(shares).max() <= 127 and clipped == 3
    assert shares[0, 1].tolist() == [125, 127, 48]  # green full, the rest shared in luma proportion
    with pytest.raises(EdgeFMError, match="cannot be split"):
        split_by_luma(np.array([382]))


# ---------------------------------------------------------------- the shipped models


@pytest.mark.parametrize("name", MODELS)
def test_rgb_form_gives_the_original_outputs_on_grey_images(name, test_images):
    original = _shipped(name)
    form = rgb_form(original)
    assert form.method == EXPECTED_METHOD.get(name, FOLD_CONV)
    raw_grey, grey_scores, _, grey_out = _outputs(original, _grey_int8(test_images))
    raw_rgb, rgb_scores, rgb_in, rgb_out = _outputs(form.tflite, _rgb(test_images))
    assert rgb_in["dtype"] == np.uint8 and rgb_in["shape"].tolist() == [1, 28, 28, 3]
    assert rgb_in["quantization"] == (1.0, 0)
    assert rgb_out["dtype"] == np.uint8 and rgb_out["quantization"] == (grey_out["quantization"][0], 0)
    np.testing.assert_array_equal(raw_rgb.astype(np.int16), raw_grey.astype(np.int16) + 128)
    np.testing.assert_array_equal(rgb_scores, grey_scores)
    np.testing.assert_array_equal(rgb_scores.argmax(axis=1), grey_scores.argmax(axis=1))


@pytest.mark.parametrize("name", MODELS)
def test_rgb_form_is_exact_with_the_plain_kernels_too(name, test_images):
    """Without XNNPACK (LiteRT's own kernels run every op), grey images still give the same integers."""
    images = test_images[:300]
    raw_grey, _, _, _ = _outputs(_shipped(name), _grey_int8(images), xnnpack=False)
    raw_rgb, _, _, _ = _outputs(to_rgb_uint8(_shipped(name)), _rgb(images), xnnpack=False)
    np.testing.assert_array_equal(raw_rgb.astype(np.int16), raw_grey.astype(np.int16) + 128)


@pytest.mark.parametrize("name", MODELS)
def test_rgb_form_classifies_a_colour_image_as_its_luma(name, test_images):
    colour = _tinted(test_images[:COLOUR_IMAGES])
    _, luma_scores, _, _ = _outputs(_shipped(name), _grey_int8(_luma(colour)))
    _, rgb_scores, _, _ = _outputs(to_rgb_uint8(_shipped(name)), colour)
    agreement = float(np.mean(rgb_scores.argmax(axis=1) == luma_scores.argmax(axis=1)))
    assert agreement >= MIN_COLOUR_AGREEMENT, f"{name}: top-1 agreement with the luma image {agreement:.3f}"


@pytest.mark.parametrize("name", ["edge-cnn-tiny", "mlp"])
@pytest.mark.parametrize("bridge", BRIDGES)
def test_luma_convolution_is_exact_on_grey_images_with_either_bridge(name, bridge, test_images):
    """The fallback for graphs that take no fold; the integer bridge is the converter's own uint8 input op."""
    original = _shipped(name)
    form = rgb_form(original, fold=False, bridge=bridge, uint8_output=False)
    assert form.method == LUMA_CONV
    description = read_metadata(form.tflite)["description"]
    assert description["export"]["integer_only"] is (bridge == INTEGER_BRIDGE)
    assert ("DEQUANTIZE" in description["export"]["ops"]) is (bridge != INTEGER_BRIDGE)
    images = test_images[:300]
    for xnnpack in (True, False):  # XNNPACK and the plain kernels round differently: compare like with like
        raw_grey, _, _, _ = _outputs(original, _grey_int8(images), xnnpack=xnnpack)
        raw_rgb, _, _, rgb_out = _outputs(form.tflite, _rgb(images), xnnpack=xnnpack)
        assert rgb_out["dtype"] == np.int8
        np.testing.assert_array_equal(raw_rgb, raw_grey)
    colour = _tinted(images)
    _, luma_scores, _, _ = _outputs(original, _grey_int8(_luma(colour)))
    _, rgb_scores, _, _ = _outputs(form.tflite, colour)
    assert np.mean(rgb_scores.argmax(axis=1) == luma_scores.argmax(axis=1)) >= MIN_COLOUR_AGREEMENT


def test_rgb_form_describes_its_new_input_and_output(test_images):
    original = _shipped("cnn-2conv")
    before = read_metadata(original)
    tflite = to_rgb_uint8(original)
    after = read_metadata(tflite)
    assert after["labels"] == before["labels"]
    described = after["description"]
    assert described["input"]["dtype"] == "uint8" and described["input"]["shape"] == [1, 28, 28, 3]
    assert (described["input"]["scale"], described["input"]["zero_point"]) == (1.0, 0)
    assert (described["output"]["dtype"], described["output"]["zero_point"]) == ("uint8", 0)
    assert described["output"]["meaning"] == before["description"]["output"]["meaning"]
    assert described["export"]["integer_only"] is False  # the float bridge at the edges
    assert {"DEQUANTIZE", "QUANTIZE", "CONV_2D"} <= set(described["export"]["ops"])

    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(model_content=tflite).get_signature_runner("serving_default")
    (probs,) = runner(image=_rgb(test_images[:1])).values()
    assert probs.dtype == np.uint8 and probs.shape == (1, 10)


def test_rgb_form_refuses_what_it_cannot_convert():
    with pytest.raises(EdgeFMError, match="not a .tflite file"):
        rgb_form(b"not a model at all")
    with pytest.raises(EdgeFMError, match="needs an int8 image input"):
        rgb_form(to_rgb_uint8(_shipped("edge-cnn-tiny")))
    with pytest.raises(EdgeFMError, match="unknown bridge"):
        rgb_form(_shipped("edge-cnn-tiny"), bridge="fast")

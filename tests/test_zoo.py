"""The model zoo: registry behaviour, sizes, MACs, and one real training step per architecture."""

from __future__ import annotations

import numpy as np
import pytest

from edge_fm.compat import keras
from edge_fm.data import datasets as data
from edge_fm.errors import EdgeFMError
from edge_fm.zoo import count_macs, create_model, describe_model, get_spec, list_models

PAPER_ARCHS = ["cnn-2conv", "cnn-3conv-bn", "mlp", "mobilenetv2", "resnet50", "vgg-gap"]
EDGE_ARCHS = ["edge-cnn", "edge-cnn-tiny"]
# Small inputs keep the ImageNet-shaped backbones fast enough for a unit test.
FAST_OPTIONS = {"resnet50": {"input_size": 32}, "mobilenetv2": {"input_size": 32, "alpha": 0.35}}
# Those whose one step takes over 5 s on two cores; mlp, cnn-2conv and edge-cnn-tiny stay in the fast set.
SLOW_ARCHS = {"resnet50", "mobilenetv2", "edge-cnn", "cnn-3conv-bn", "vgg-gap"}


def test_registry_lists_the_six_paper_architectures_and_the_edge_family():
    assert list_models() == sorted(PAPER_ARCHS + EDGE_ARCHS)
    assert "tiny-cnn" in list_models(include_testing=True)
    for name in PAPER_ARCHS:
        spec = get_spec(name)
        assert spec.paper.endswith(".txt") and 0.85 < spec.paper_accuracy < 0.95


def test_unknown_architecture_lists_known_ones_with_close_match():
    with pytest.raises(EdgeFMError, match=r"Did you mean 'cnn-2conv'\?.*Known: cnn-2conv, cnn-3conv-bn"):
        create_model("cnn-2cov")


def test_unknown_option_is_named():
    with pytest.raises(EdgeFMError, match="has no option 'widht'. Did you mean 'width'"):
        create_model("tiny-cnn", widht=4)


def test_mlp_size_matches_the_paper_layout():
    # 784*128+128 + 128*64+64 + 64*10+10
    assert create_model("mlp").count_params() == 109_386
    assert count_macs(create_model("mlp")) == 784 * 128 + 128 * 64 + 64 * 10


def test_macs_of_convolutions_are_counted_from_output_shapes():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="same")(inputs)  # 8*8*4 outputs * 3*3*3
    x = keras.layers.DepthwiseConv2D(3, strides=2, padding="same")(x)  # 4*4*4 outputs * 3*3
    x = keras.layers.SeparableConv2D(5, 3, padding="same")(x)  # 4*4*4*9 + 4*4*4*5
    x = keras.layers.Flatten()(x)
    outputs = keras.layers.Dense(2)(x)  # 80*2
    model = keras.Model(inputs, outputs)
    assert count_macs(model) == 8 * 8 * 4 * 27 + 4 * 4 * 4 * 9 + (4 * 4 * 4 * 9 + 4 * 4 * 4 * 5) + 80 * 2


def test_vgg_gap_is_about_the_papers_size():
    params = create_model("vgg-gap").count_params()
    assert 180_000 < params < 220_000  # the paper: 198,351


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(name, marks=pytest.mark.slow) if name in SLOW_ARCHS else name
        for name in PAPER_ARCHS + EDGE_ARCHS
    ],
)
def test_each_architecture_takes_raw_pixels_and_trains_one_step(name):
    images, labels = data.load_split("test", data.SAMPLE_DIR)
    x = images[:16].astype(np.float32)
    y = keras.utils.to_categorical(labels[:16], 10)
    model = create_model(name, **FAST_OPTIONS.get(name, {}))
    assert model.input_shape == (None, 28, 28, 1)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="categorical_crossentropy")
    before = [w.numpy().copy() for w in model.trainable_weights]
    loss = model.train_on_batch(x, y)
    assert np.isfinite(loss)
    assert any(not np.allclose(a, b.numpy()) for a, b in zip(before, model.trainable_weights))
    probs = model.predict(x, verbose=0)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-4)
    info = describe_model(name, **FAST_OPTIONS.get(name, {}))
    assert info["params"] == model.count_params() and info["macs"] > 0


def test_backbone_input_size_is_validated():
    with pytest.raises(EdgeFMError, match="too small"):
        create_model("mobilenetv2", input_size=16)


# Builds in about a second each; the Keras applications take longer.
SHAPE_ARCHS = [
    pytest.param(name, marks=pytest.mark.slow) if name in ("resnet50", "mobilenetv2") else name
    for name in PAPER_ARCHS + EDGE_ARCHS
]


@pytest.mark.parametrize("name", SHAPE_ARCHS)
def test_every_architecture_builds_for_any_input_shape_and_class_count(name):
    # The backbones' own input_size is what fit_to_data leaves for data other than Fashion-MNIST.
    own = {"input_size": None} if "input_size" in get_spec(name).options() else {}
    small = {"alpha": 0.35} if name == "mobilenetv2" else {}
    model = create_model(name, input_shape=[40, 48, 3], num_classes=5, **own, **small)
    assert model.input_shape == (None, 40, 48, 3) and model.output_shape == (None, 5)
    assert "grey_to_rgb" not in [layer.name for layer in model.layers]  # RGB input is used as it is
    probs = model.predict(np.full((2, 40, 48, 3), 128, np.float32), verbose=0)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-4)
    minimum = {"mlp": 1, "cnn-3conv-bn": 8, "mobilenetv2": 32, "resnet50": 32}.get(name, 4)
    if minimum > 1:
        side = minimum - 1
        with pytest.raises(
            EdgeFMError, match=f"needs images of at least {minimum}x{minimum} pixels, got {side + 1}x{side};"
        ):
            create_model(name, input_shape=[side, side + 1, 1], num_classes=3, **own, **small)
    with pytest.raises(EdgeFMError, match="at least 2 classes"):
        create_model(name, input_shape=[40, 48, 3], num_classes=1, **own, **small)


def test_a_backbone_resizes_a_small_input_when_given_an_input_size():
    model = create_model("mobilenetv2", input_shape=[8, 8, 1], num_classes=3, input_size=32, alpha=0.35)
    names = [layer.name for layer in model.layers]
    assert names[:4] == ["image", "rescale", "resize", "grey_to_rgb"]
    assert (
        describe_model("cnn-3conv-bn", input_shape=[12, 16, 3], num_classes=4, input_size=None)["input_size"]
        == "12x16"
    )


def test_imagenet_weights_unavailable_is_one_line_naming_the_file(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))  # an empty Keras cache
    monkeypatch.setenv("https_proxy", "http://127.0.0.1:9")  # and no network, whatever the machine has
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    with pytest.raises(EdgeFMError) as failure:
        create_model("mobilenetv2", weights="imagenet", alpha=0.35)
    message = str(failure.value)
    assert "\n" not in message
    assert "mobilenet_v2/mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5 into " in message
    assert f"{tmp_path}/.keras/models/" in message and "--weights none" in message
    with pytest.raises(EdgeFMError, match="no such file"):
        create_model("mobilenetv2", weights=str(tmp_path / "missing.h5"), alpha=0.35)


@pytest.mark.slow
def test_weights_from_a_file_and_from_the_keras_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("https_proxy", "http://127.0.0.1:9")
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    keras.utils.set_random_seed(1)
    backbone = keras.applications.MobileNetV2(
        include_top=False, weights=None, input_shape=(32, 32, 3), alpha=0.35
    )
    file = tmp_path / "backbone.h5"
    backbone.save_weights(str(file))
    expected = backbone.get_layer("Conv1").get_weights()[0]

    from_file = create_model(
        "mobilenetv2", weights=str(file), alpha=0.35, input_shape=[32, 32, 3], num_classes=3
    )
    np.testing.assert_array_equal(from_file.get_layer("Conv1").get_weights()[0], expected)
    assert from_file.pretrained == str(file) and "Conv1" in from_file.backbone_layers
    assert "logits" not in from_file.backbone_layers

    # ImageNet weights come from Keras' own cache when the file is there: no network needed.
    cache = tmp_path / ".keras" / "models"
    cache.mkdir(parents=True)
    (cache / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5").write_bytes(
        file.read_bytes()
    )
    cached = create_model("mobilenetv2", weights="imagenet", alpha=0.35)
    np.testing.assert_array_equal(cached.get_layer("Conv1").get_weights()[0], expected)
    assert cached.pretrained == "imagenet"

    # A run's model rebuilt to receive its saved weights fetches nothing: it builds offline.
    from edge_fm.zoo.backbones import weights_to_follow

    (cache / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5").unlink()
    with weights_to_follow():
        rebuilt = create_model("mobilenetv2", weights="imagenet", alpha=0.35)
    assert rebuilt.pretrained == "imagenet"

    # A file of another shape is refused in one line.
    with pytest.raises(EdgeFMError, match="does not hold mobilenetv2 weights of this shape"):
        create_model("mobilenetv2", weights=str(file), alpha=0.5)


def test_edge_family_is_smaller_and_cheaper_than_cnn_3conv_bn():
    reference = describe_model("cnn-3conv-bn")
    accurate, tiny = describe_model("edge-cnn"), describe_model("edge-cnn-tiny")
    assert accurate["params"] < reference["params"] and accurate["macs"] < reference["macs"]
    # <= 100 KB as int8 needs well under 100k weights; a quarter of the latency, a quarter of the MACs.
    assert tiny["params"] < 80_000 and tiny["macs"] < reference["macs"] / 4


def test_edge_cnn_tiny_full_conv_blocks_pool_right_after_the_stem():
    model = create_model("edge-cnn-tiny")  # the shipped shape: stem 16, widths 16/32/64, blocks 0/2/2, conv
    kinds = {type(layer).__name__ for layer in model.layers}
    assert "DepthwiseConv2D" not in kinds
    # stem 1*16*9 + stage 2: 16*32*9, 32*32*9 + stage 3: 32*64*9, 64*64*9, BN 4 per channel, head 64*10+10
    assert model.count_params() == 144 + 4608 + 9216 + 18432 + 36864 + 4 * (16 + 2 * 32 + 2 * 64) + 650
    # a 0-block stage only pools: the first conv after the stem sees 14x14
    assert model.get_layer("s2b1_conv").input.shape[1:3] == (14, 14)
    assert [layer.name for layer in model.layers if type(layer).__name__ == "Add"] == ["s2b2_add", "s3b2_add"]
    separable = create_model("edge-cnn-tiny", widths=(32, 64, 128), blocks=(1, 2, 3), block="separable")
    assert "DepthwiseConv2D" in {type(layer).__name__ for layer in separable.layers}


def test_edge_cnn_takes_one_block_kind_per_stage():
    model = create_model(
        "edge-cnn", stem=8, widths=(8, 16, 32), blocks=(1, 2, 1), block=["conv", "conv", "separable"]
    )
    names = {layer.name for layer in model.layers}
    assert {"s1b1_conv", "s2b1_conv", "s2b2_conv", "s3b1_dw", "s3b1_pw"} <= names
    assert not {"s1b1_dw", "s2b1_dw", "s3b1_conv"} & names
    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds.count("DepthwiseConv2D") == 1


@pytest.mark.parametrize(
    "arch, options, message",
    [
        ("edge-cnn-tiny", {"block": "dense"}, r"unknown edge-cnn-tiny block 'dense'.*conv, separable"),
        ("edge-cnn", {"block": "dense"}, r"unknown edge-cnn block 'dense'"),
        ("edge-cnn-tiny", {"blocks": (0, 0, 0)}, "needs one block count"),
        ("edge-cnn", {"blocks": (1, 2)}, "needs one block count"),
        (
            "edge-cnn",
            {"block": ["conv", "separable"]},
            r"one block kind for all stages or one per stage \(3\)",
        ),
        ("edge-cnn", {"block": ["conv", "dense", "separable"]}, r"unknown edge-cnn block 'dense'"),
    ],
)
def test_edge_family_rejects_bad_block_options(arch, options, message):
    with pytest.raises(EdgeFMError, match=message):
        create_model(arch, **options)


@pytest.mark.parametrize("activation, relu_max", [("relu6", 6.0), ("relu", None), ("gelu", "none")])
def test_mobilenetv2_head_activation(activation, relu_max):
    """ReLU6 by default (an op every runtime has, TFLM included); GELU kept as an option."""
    model = create_model("mobilenetv2", alpha=0.35, head_activation=activation)
    names = {layer.name: layer for layer in model.layers}
    if relu_max == "none":
        assert "head_relu" not in names and names["head_dense"].get_config()["activation"] == "gelu"
    else:
        assert names["head_dense"].get_config()["activation"] == "linear"
        assert names["head_relu"].get_config()["max_value"] == relu_max


def test_mobilenetv2_defaults_to_a_relu6_head_and_refuses_unknown_activations():
    assert "head_relu" in {layer.name for layer in create_model("mobilenetv2", alpha=0.35).layers}
    with pytest.raises(EdgeFMError, match=r"head_activation 'swish' is not one of relu6, relu, gelu"):
        create_model("mobilenetv2", head_activation="swish")


def test_the_public_api_names_hide_no_module():
    import importlib
    import pkgutil
    import types

    import edge_fm

    modules = {info.name for info in pkgutil.iter_modules(edge_fm.__path__)}
    for name in edge_fm.__all__:
        value = getattr(edge_fm, name)
        assert name not in modules or isinstance(value, types.ModuleType), f"edge_fm.{name} hides the module"
    for name in sorted(modules - {"__main__"}):
        assert isinstance(getattr(importlib.import_module(f"edge_fm.{name}"), "__name__", None), str)
        assert isinstance(getattr(edge_fm, name), types.ModuleType), name

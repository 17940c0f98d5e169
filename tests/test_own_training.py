"""Training on the user's own data: any architecture's input, class weights, balanced accuracy and
transfer from a run trained on other data, through the CLI, on scikit-learn's 8x8 digits (no network).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_sources import assert_one_line_error, run_cli, write_digits_folder

from edge_fm.errors import EdgeFMError
from edge_fm.train.balance import class_weights
from edge_fm.train.runs import Run

TINY = ("--epochs", "1", "--batch-size", "32", "--set", "learning_rate=0.003")


def digits_folder(root: Path, digits, per_class: dict[int, int]) -> Path:
    """A folder of 8x8 digit PNGs with ``per_class[d]`` images of digit ``d``."""
    images, labels = digits
    keep = np.concatenate([np.flatnonzero(labels == d)[:count] for d, count in per_class.items()])
    return write_digits_folder(root, images[keep], labels[keep])


def train_cli(*argv) -> Path:
    code, output = run_cli("train", *argv)
    assert code == 0, output
    return Path(output.split("run directory: ")[1].split()[0])


# ---------------------------------------------------------------- class weights


def test_balanced_class_weights_follow_the_training_counts():
    weights = class_weights("balanced", np.array([0] * 60 + [1] * 30 + [2] * 10), ("a", "b", "c"))
    np.testing.assert_allclose(weights, [100 / 180, 100 / 90, 100 / 30])
    assert class_weights("none", np.array([0, 1]), ("a", "b")) is None


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ('{"digit-9": 2}', "no class 'digit-9' in this data; its classes: digit-0, digit-1, digit-2"),
        ('{"digit-1": -1}', "the weight of 'digit-1' must be a positive number, got -1"),
        ("[1, 2, 3]", "expected a JSON object of weights by class name"),
    ],
)
def test_a_bad_class_weight_file_is_one_line(digits, tmp_path, content, expected):
    root = digits_folder(tmp_path / "d", digits, {0: 20, 1: 20, 2: 20})
    weights = tmp_path / "weights.json"
    weights.write_text(content)
    code, output = run_cli(
        "train", "tiny-cnn", "--data", root, "--class-weight", weights, "--runs-dir", tmp_path / "runs", *TINY
    )
    assert_one_line_error(code, output, expected)
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())  # no half-made run
    code, output = run_cli("train", "tiny-cnn", "--data", root, "--class-weight", "rare", *TINY)
    assert_one_line_error(code, output, "class_weight must be 'balanced', 'none' or the path of a JSON file")


@pytest.mark.slow
def test_class_weights_change_training_and_are_recorded_with_balanced_accuracy(digits, tmp_path):
    root = digits_folder(tmp_path / "d", digits, {0: 120, 1: 40, 2: 15})  # imbalanced
    runs = tmp_path / "runs"
    plain = train_cli("tiny-cnn", "--data", root, "--runs-dir", runs, *TINY)
    code, output = run_cli(
        "train", "tiny-cnn", "--data", root, "--class-weight", "balanced", "--runs-dir", runs, *TINY
    )
    assert code == 0, output
    weighted = Path(output.split("run directory: ")[1].split()[0])
    assert "balanced accuracy " in output and "(lowest recall: digit-" in output

    assert Run(weighted).train_config.class_weight == "balanced"
    metrics = Run(weighted).metrics
    counts = Run(weighted).manifest["data"]["identity"]["counts"]["train"]
    expected = {f"digit-{d}": sum(counts) / (3 * n) for d, n in enumerate(counts)}
    assert metrics["class_weights"] == pytest.approx(expected, rel=1e-5)
    assert Run(plain).metrics["class_weights"] is None
    # Same seed, same data, same order: only the weights differ, and so do the trained kernels.
    before, after = Run(plain).model().get_weights(), Run(weighted).model().get_weights()
    assert any(not np.allclose(a, b) for a, b in zip(before, after))

    test = metrics["test"]
    recalls = [row["recall"] for row in test["per_class"].values()]
    assert test["balanced_accuracy"] == pytest.approx(np.mean(recalls))
    assert test["lowest_recall"]["recall"] == pytest.approx(min(recalls))
    assert "balanced_accuracy" in metrics["val"]
    code, output = run_cli("evaluate", weighted, "--json", tmp_path / "eval.json")
    assert code == 0, output
    assert f"balanced accuracy {test['balanced_accuracy']:.2%}" in output
    assert json.loads((tmp_path / "eval.json").read_text())["balanced_accuracy"] == pytest.approx(
        test["balanced_accuracy"]
    )


# ---------------------------------------------------------------- input size


def test_an_input_below_the_architectures_minimum_is_one_line(digits, tmp_path):
    root = digits_folder(tmp_path / "d", digits, {0: 20, 1: 20, 2: 20})
    cases = (
        ("mobilenetv2", 32, None),
        ("resnet50", 32, None),
        ("cnn-3conv-bn", 8, 6),
        ("edge-cnn-tiny", 4, 3),
    )
    for arch, minimum, side in cases:
        size = ("--image-size", side) if side else ()
        code, output = run_cli("train", arch, "--data", root, *size, "--runs-dir", tmp_path / "runs", *TINY)
        got = f"{side}x{side}" if side else "8x8"
        assert_one_line_error(
            code,
            output,
            f"{arch} needs images of at least {minimum}x{minimum} pixels, got {got}; "
            f"pass --image-size {minimum} (or more)",
        )
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def _small_mobilenetv2_on_digits(digits, tmp_path: Path, *more) -> Path:
    """A one-epoch MobileNetV2 (alpha 0.35) on 8x8 digits 0-2 resized to 32x32 RGB, with ``more`` options."""
    root = digits_folder(tmp_path / "d", digits, {0: 20, 1: 20, 2: 20})
    return train_cli(
        "mobilenetv2", "--data", root, "--image-size", "32", "--channels", "3", "--arch-opt", "alpha=0.35",
        *more, "--runs-dir", tmp_path / "runs", *TINY,
    )  # fmt: skip


@pytest.mark.slow
def test_a_small_input_trains_resized_up_with_image_size(digits, tmp_path):
    run = _small_mobilenetv2_on_digits(digits, tmp_path, "--arch-opt", "head_units=0")
    config = Run(run).train_config
    assert config.image_size == (32, 32) and config.arch_options["input_size"] is None
    assert Run(run).float_model().input_shape == (None, 32, 32, 3)
    assert Run(run).manifest["data"]["identity"]["image_shape"] == [32, 32, 3]


# ---------------------------------------------------------------- transfer


# The transfer tests share one trained source run (about 10 s to train on two cores).
@pytest.fixture(scope="module")
def source_run(digits, tmp_path_factory):
    """tiny-cnn trained on grey 12x12 digits 0-2: the model other runs start from."""
    tmp = tmp_path_factory.mktemp("source")
    root = digits_folder(tmp / "first", digits, {0: 40, 1: 40, 2: 40})
    return train_cli("tiny-cnn", "--data", root, "--image-size", "12", "--runs-dir", tmp / "runs", *TINY)


@pytest.mark.slow
def test_init_from_copies_the_backbone_with_a_new_head_and_freezes_it(source_run, digits, tmp_path):
    root = digits_folder(tmp_path / "second", digits, {3: 30, 4: 30, 5: 30, 6: 30, 7: 30})
    run = train_cli(
        "--init-from",
        source_run,
        "--data",
        root,
        "--image-size",
        "12",
        "--freeze-epochs",
        "1",
        "--runs-dir",
        tmp_path / "runs",
        *TINY,
    )  # no architecture: the source's
    config = Run(run).train_config
    assert config.arch == "tiny-cnn" and config.init_from == str(source_run.absolute())
    assert config.freeze_epochs == 1 and config.arch_options["num_classes"] == 5
    assert Run(run).metrics["init"] == {"source": str(source_run.absolute()), "layers": 3, "new_head": True}
    source, tuned = Run(source_run).model(), Run(run).model()
    # Frozen for its one epoch: the copied layers (batch norm statistics too) are the source's.
    for name in ("conv1", "bn1", "conv2"):
        for a, b in zip(source.get_layer(name).get_weights(), tuned.get_layer(name).get_weights()):
            np.testing.assert_array_equal(a, b)
    assert tuned.get_layer("logits").get_weights()[0].shape[-1] == 5
    assert all(layer.trainable for layer in tuned.layers)  # saved trainable, for the stages after

    # Not frozen: the backbone moves on from the source's weights.
    moved = train_cli(
        "--init-from", source_run, "--data", root, "--image-size", "12", "--runs-dir", tmp_path / "r2", *TINY
    )
    conv = Run(moved).model().get_layer("conv1").get_weights()[0]
    assert not np.allclose(conv, source.get_layer("conv1").get_weights()[0])


def test_init_from_refuses_what_does_not_fit_in_one_line(source_run, digits, tmp_path):
    root = digits_folder(tmp_path / "second", digits, {3: 20, 4: 20, 5: 20})
    runs = ("--runs-dir", tmp_path / "runs")
    code, output = run_cli(
        "train",
        "--init-from",
        source_run,
        "--data",
        root,
        "--image-size",
        "12",
        "--channels",
        "3",
        *runs,
        *TINY,
    )
    assert_one_line_error(
        code, output, "was trained on grey images (1 channel), this data is RGB: pass --channels 1"
    )
    code, output = run_cli("train", "edge-cnn-tiny", "--init-from", source_run, "--data", root, *runs, *TINY)
    assert_one_line_error(code, output, "trained tiny-cnn, not edge-cnn-tiny")
    same = digits_folder(
        tmp_path / "same", digits, {0: 20, 1: 20, 2: 20}
    )  # same classes: the head is kept...
    code, output = run_cli(
        "train", "--init-from", source_run, "--data", same, "--image-size", "16", *runs, *TINY
    )
    # ... and its weights depend on the image size.
    assert_one_line_error(code, output, "layer 'logits' holds (288, 3) weights there but needs (512, 3)")
    assert "pass --image-size 12x12 (the source's)" in output
    code, output = run_cli("train", "tiny-cnn", "--data", root, "--freeze-epochs", "2", *runs, *TINY)
    assert_one_line_error(code, output, "freeze_epochs=2 freezes pretrained layers, and this model has none")
    # A bundle stands for the run it was exported from; one whose run is gone is refused.
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "model.tflite").write_bytes(b"TFL3")
    (bundle / "manifest.json").write_text(json.dumps({"stage": "export", "parent": str(tmp_path / "gone")}))
    code, output = run_cli("train", "--init-from", bundle, "--data", root, *runs, *TINY)
    assert_one_line_error(code, output, "is an export bundle whose run")
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


@pytest.mark.slow
def test_init_from_a_bundle_uses_its_run(source_run, digits, tmp_path):
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "model.tflite").write_bytes(b"TFL3")
    (bundle / "manifest.json").write_text(json.dumps({"stage": "export", "parent": str(source_run)}))
    root = digits_folder(tmp_path / "second", digits, {5: 20, 6: 20})
    run = train_cli(
        "--init-from", bundle, "--data", root, "--image-size", "12", "--runs-dir", tmp_path / "runs", *TINY
    )
    assert Run(run).train_config.init_from == str(source_run.absolute())


def test_weights_and_init_from_together_are_refused(source_run):
    from edge_fm.train.config import TrainConfig
    from edge_fm.train.transfer import adopt_source

    with pytest.raises(EdgeFMError, match="--weights and --init-from both give the starting weights"):
        adopt_source(
            TrainConfig(arch="tiny-cnn", init_from=str(source_run), arch_options={"weights": "x.h5"})
        )


# ---------------------------------------------------------------- the cache feeds training


def test_a_memory_mapped_split_is_read_batch_by_batch_in_the_in_memory_order(tmp_path):
    from edge_fm.train.augment import make_pipeline
    from edge_fm.train.config import TrainConfig

    images = np.arange(300, dtype=np.int64).astype(np.uint8).reshape(300, 1, 1, 1)
    labels = (np.arange(300) % 3).astype(np.uint8)
    np.save(tmp_path / "x.npy", images)
    mapped = np.load(tmp_path / "x.npy", mmap_mode="r")
    config = TrainConfig(arch="tiny-cnn", batch_size=64, seed=5)

    def drawn(x):
        pipeline = make_pipeline(x, labels, config, training=True, num_classes=3)
        return np.concatenate([batch.numpy().ravel() for batch, _ in pipeline])

    np.testing.assert_array_equal(drawn(images), drawn(mapped))
    pipeline = make_pipeline(mapped, labels, config, training=True, num_classes=3)
    # Written to the file after the pipeline was made: read at iteration, so no copy was taken.
    writer = np.load(tmp_path / "x.npy", mmap_mode="r+")
    writer[:] = 7
    writer.flush()
    assert {int(v) for batch, _ in pipeline for v in batch.numpy().ravel()} == {7}


@pytest.mark.slow
def test_weights_from_a_file_through_train_with_the_backbone_frozen(digits, tmp_path):
    from edge_fm.compat import keras

    backbone = keras.applications.MobileNetV2(
        include_top=False, weights=None, input_shape=(32, 32, 3), alpha=0.35
    )
    file = tmp_path / "backbone.h5"
    backbone.save_weights(str(file))
    run = _small_mobilenetv2_on_digits(digits, tmp_path, "--weights", file, "--freeze-epochs", "1")
    assert Run(run).train_config.arch_options["weights"] == str(file)
    init = Run(run).metrics["init"]
    assert init["source"] == str(file) and init["new_head"] and init["layers"] > 50
    trained = Run(run).model()
    for name in ("Conv1", "block_16_project"):  # frozen for the run's one epoch: the file's weights
        for a, b in zip(backbone.get_layer(name).get_weights(), trained.get_layer(name).get_weights()):
            np.testing.assert_array_equal(a, b)


# ---------------------------------------------------------------- short runs


def test_a_short_runs_batch_norms_settle_so_it_predicts_as_it_trains(digits, tmp_path):
    from edge_fm.train.trainer import settle_batch_norms
    from edge_fm.zoo import create_model

    model = create_model("edge-cnn-tiny", input_shape=(16, 16, 1), num_classes=10)
    settle_batch_norms(model, 35)
    momenta = {layer.momentum for layer in model.submodules if hasattr(layer, "moving_mean")}
    assert momenta == {0.01 ** (1 / 35)}  # about 0.877: the start weighs 1% at the end
    settle_batch_norms(model, 1000)  # never raised
    assert {layer.momentum for layer in model.submodules if hasattr(layer, "moving_mean")} == momenta
    # Statistics that do not start at 0 and 1, or a momentum the user chose, are left alone.
    from edge_fm.train.config import TrainConfig
    from edge_fm.train.trainer import _starts_from_scratch

    assert _starts_from_scratch(TrainConfig(arch="edge-cnn-tiny"))
    assert not _starts_from_scratch(TrainConfig(arch="edge-cnn-tiny", init_from="runs/x"))
    assert not _starts_from_scratch(TrainConfig(arch="mobilenetv2", arch_options={"weights": "imagenet"}))
    assert not _starts_from_scratch(TrainConfig(arch="mobilenetv2", arch_options={"bn_momentum": 0.999}))
    # 430 images, batch 64, 5 epochs: 35 steps. At Keras' 0.99 the running statistics kept 70% of
    # their start and this model scored at chance on its validation images while training at 95%.
    root = digits_folder(tmp_path / "d", digits, {d: 60 for d in range(10)})
    run = train_cli("edge-cnn-tiny", "--data", root, "--image-size", "16", "--runs-dir", tmp_path / "runs")
    metrics = Run(run).metrics
    assert metrics["val"]["accuracy"] > 0.6, metrics["val"]


# ---------------------------------------------------------------- memory


def test_a_training_step_larger_than_the_free_memory_is_refused_before_the_run(digits, tmp_path, monkeypatch):
    """Photos trained at their own size would take all the memory and be killed: one line instead."""
    from edge_fm.train import memory
    from edge_fm.zoo import create_model

    assert memory.available_bytes() > 0
    per_image = memory.activation_bytes(create_model("tiny-cnn", input_shape=(256, 256, 1), num_classes=3), 1)
    data = digits_folder(tmp_path / "digits", digits, {c: 40 for c in (0, 1, 2)})
    # A machine with room for 8 such images in a step (a small board), asked for batches of 32.
    monkeypatch.setattr(memory, "available_bytes", lambda: 8 * per_image)
    code, output = run_cli(
        "train", "tiny-cnn", "--data", data, "--image-size", "256", "--batch-size", "32",
        "--runs-dir", tmp_path / "runs",
    )  # fmt: skip
    assert_one_line_error(code, output, "training tiny-cnn on 256x256x1 images at batch 32 needs about")
    assert "GiB free here: pass --batch-size 8 or less (or set EDGE_FM_MEMORY_CHECK=off" in output
    assert not (tmp_path / "runs").exists()
    # The check can be turned off (an estimate too cautious for this machine): the run starts.
    monkeypatch.setenv("EDGE_FM_MEMORY_CHECK", "off")
    code, output = run_cli(
        "train", "tiny-cnn", "--data", data, "--image-size", "256", "--batch-size", "32", "--epochs", "1",
        "--runs-dir", tmp_path / "runs-unchecked",
    )  # fmt: skip
    assert code == 0, output
    monkeypatch.delenv("EDGE_FM_MEMORY_CHECK")
    # A batch that fits trains.
    code, output = run_cli(
        "train", "tiny-cnn", "--data", data, "--image-size", "256", "--batch-size", "8", "--epochs", "1",
        "--runs-dir", tmp_path / "runs",
    )  # fmt: skip
    assert code == 0, output


def test_an_int8_export_of_data_that_never_reaches_white_takes_raw_pixels(digits, tmp_path):
    """Digits reach 240, not 255: the int8 input is still q = pixel - 128, and the mobile form is made."""
    from edge_fm.export.bundles import Bundle

    data = digits_folder(tmp_path / "digits", digits, {c: 40 for c in (0, 1, 2)})
    assert max(np.asarray(Image.open(path)).max() for path in data.rglob("*.png")) < 255
    run = train_cli("tiny-cnn", "--data", data, "--epochs", "2", "--runs-dir", tmp_path / "runs")
    code, output = run_cli("export", run, "-f", "int8", "--for", "mobile", "--runs-dir", tmp_path / "runs")
    assert code == 0, output
    int8 = tmp_path / "runs" / "tiny-cnn-int8-1"
    assert (Bundle.open(int8).input["scale"], Bundle.open(int8).input["zero_point"]) == (1.0, -128)

"""The training stage on the embedded sample: pipeline, augmentations, schedules, runs, resume."""

from __future__ import annotations

import importlib
import json
import re
import shutil

import numpy as np
import pytest

from edge_fm.compat import tf
from edge_fm.data import datasets as data
from edge_fm.errors import EdgeFMError
from edge_fm.io import sha256_file
from edge_fm.train import device as device_lib
from edge_fm.train.augment import augment_batch, distilled_targets, make_pipeline
from edge_fm.train.callbacks import NullReporter
from edge_fm.train.config import TrainConfig, load_config
from edge_fm.train.device import describe_device, describe_devices
from edge_fm.train.evaluate import evaluate_run
from edge_fm.train.schedules import build_schedule
from edge_fm.train.trainer import config_for, load_teacher, resume, train


def _batch(n=32):
    images, _ = data.load_split("train", data.SAMPLE_DIR)
    return tf.constant(images[:n].astype(np.float32))


def test_no_augmentation_parameters_mean_identity():
    batch = _batch()
    cfg = TrainConfig(
        arch="tiny-cnn",
        augment=("affine", "crop", "erasing"),
        rotation=0,
        shear=0,
        zoom=0,
        shift=0,
        crop_padding=0,
        erasing_prob=0.0,
    )
    np.testing.assert_allclose(augment_batch(batch, cfg).numpy(), batch.numpy(), atol=1e-3)


def test_flip_mirrors_each_image_independently():
    tf.random.set_seed(1)
    batch = _batch(64)
    out = augment_batch(batch, TrainConfig(arch="tiny-cnn", augment=("flip",))).numpy()
    same = [np.array_equal(o, b) for o, b in zip(out, batch.numpy())]
    mirrored = [np.array_equal(o, b[:, ::-1]) for o, b in zip(out, batch.numpy())]
    assert all(s or m for s, m in zip(same, mirrored))
    assert 10 < sum(mirrored) < 54  # about half, drawn per image


def test_crop_is_an_integer_shift_with_zero_fill():
    tf.random.set_seed(2)
    batch = _batch(16).numpy()
    out = augment_batch(
        tf.constant(batch), TrainConfig(arch="tiny-cnn", augment=("crop",), crop_padding=2)
    ).numpy()
    for original, shifted in zip(batch, out):
        padded = np.pad(original[..., 0], 2)
        windows = [padded[dy : dy + 28, dx : dx + 28] for dy in range(5) for dx in range(5)]
        assert any(np.allclose(shifted[..., 0], w, atol=1e-3) for w in windows)


def test_erasing_fills_one_rectangle_per_chosen_image():
    tf.random.set_seed(3)
    batch = tf.zeros((32, 28, 28, 1))
    out = augment_batch(batch, TrainConfig(arch="tiny-cnn", augment=("erasing",), erasing_prob=1.0)).numpy()
    for image in out[..., 0]:
        rows, cols = np.nonzero(image)
        area = (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
        assert 0.02 * 784 * 0.5 <= area <= 0.25 * 784 * 1.5


def test_affine_keeps_images_in_range_and_changes_them():
    tf.random.set_seed(4)
    batch = _batch()
    out = augment_batch(batch, TrainConfig(arch="tiny-cnn", augment=("affine",))).numpy()
    assert out.min() >= 0 and out.max() <= 255
    assert np.abs(out - batch.numpy()).mean() > 1.0


def test_schedules_follow_their_definitions():
    cyclical = build_schedule(
        TrainConfig(
            arch="x", schedule="cyclical", learning_rate=1e-2, min_learning_rate=1e-3, cycle_epochs=2
        ),
        steps_per_epoch=10,
    )
    assert float(cyclical(0)) == pytest.approx(1e-3)
    assert float(cyclical(10)) == pytest.approx(1e-2)  # peak at half a cycle
    assert float(cyclical(20)) == pytest.approx(1e-3)
    onecycle = build_schedule(TrainConfig(arch="x", schedule="onecycle", epochs=10, learning_rate=1e-2), 10)
    assert float(onecycle(0)) == pytest.approx(1e-2 / 25, rel=1e-3)
    assert float(onecycle(30)) == pytest.approx(1e-2, rel=1e-3)
    assert float(onecycle(100)) < 1e-4
    cosine = build_schedule(
        TrainConfig(arch="x", schedule="cosine", epochs=4, learning_rate=1e-2, warmup_epochs=1), 10
    )
    assert float(cosine(10)) == pytest.approx(1e-2, rel=1e-3) and float(cosine(5)) < 1e-2
    exponential = build_schedule(
        TrainConfig(arch="x", schedule="exponential", learning_rate=1e-2, decay_rate=0.5), 10
    )
    assert float(exponential(20)) == pytest.approx(2.5e-3)


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"epochs": 0}, "epochs must be"),
        ({"learning_rate": -1.0}, "learning_rate must be positive"),
        ({"schedule": "cosin"}, "Did you mean 'cosine'"),
        ({"augment": ("flop",)}, "unknown augmentation"),
    ],
)
def test_invalid_settings_are_refused(bad, message):
    with pytest.raises(EdgeFMError, match=message.replace("positive", "a positive number")):
        TrainConfig(arch="tiny-cnn", **bad)


def _quick(tmp_path, **overrides):
    values = {"data": "sample", "epochs": 3, "batch_size": 64, "learning_rate": 3e-3, **overrides}
    return config_for("tiny-cnn", "quick", **values)


@pytest.mark.slow
def test_training_on_the_sample_writes_a_complete_run(tmp_path):
    cfg = _quick(
        tmp_path, augment=("crop", "flip"), schedule="cosine", label_smoothing=0.1, l2=1e-4, weight_decay=1e-4
    )
    run = train(cfg, runs_dir=tmp_path)
    assert run.name == "tiny-cnn-train-1"
    assert load_config(TrainConfig, run / "config.json") == cfg  # enough to re-run it
    history = json.loads((run / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2, 3]
    assert history[-1]["learning_rate"] < history[0]["learning_rate"]  # the cosine schedule ran
    metrics = json.loads((run / "metrics.json").read_text())
    assert "test" not in metrics and metrics["evaluated_on"].startswith("embedded sample")
    scores = metrics["sample_test"]
    assert 0.3 < scores["accuracy"] <= 1.0  # well above chance (0.1) after three epochs
    assert np.array(scores["confusion_matrix"]).sum() == 1000
    assert set(scores["per_class"]) == set(data.CLASS_NAMES)
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["stage"] == "train" and manifest["status"] == "complete"
    for name in ("model.h5", "config.json", "history.json", "metrics.json"):
        assert manifest["files"][name]["sha256"] == sha256_file(run / name)
    assert not (run / "checkpoint").exists()
    # evaluate reloads the saved model and must reproduce the recorded figure exactly.
    assert evaluate_run(run)["accuracy"] == pytest.approx(scores["accuracy"])
    assert train(cfg, runs_dir=tmp_path).name == "tiny-cnn-train-2"  # never overwritten


def test_distilled_targets_mix_one_hot_labels_with_the_softened_teacher():
    teacher_probabilities = np.array([[0.6, 0.3, 0.1] + [0.0] * 7, [0.1] * 10], dtype=np.float32)
    teacher = lambda images, training: tf.constant(teacher_probabilities)  # noqa: E731 (a stand-in model)
    one_hot = tf.one_hot([1, 9], 10)
    cfg = TrainConfig(arch="tiny-cnn", distill_weight=0.25, distill_temperature=2.0)
    targets = distilled_targets(teacher, tf.zeros((2, 28, 28, 1)), one_hot, cfg).numpy()
    softened = np.sqrt(np.maximum(teacher_probabilities, 1e-7))  # T = 2: p ** (1/2), renormalised
    softened /= softened.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(targets, 0.75 * one_hot.numpy() + 0.25 * softened, atol=1e-6)
    np.testing.assert_allclose(targets.sum(axis=1), 1.0, atol=1e-6)
    plain = TrainConfig(arch="tiny-cnn", distill_weight=1.0, distill_temperature=1.0)
    np.testing.assert_allclose(
        distilled_targets(teacher, None, one_hot, plain).numpy()[0, :3], [0.6, 0.3, 0.1], atol=1e-5
    )


def test_a_student_learns_from_a_teacher_run_on_the_same_split(tmp_path, exported):
    teacher_run = exported["train"]  # tiny-cnn, 8 epochs on the sample, default split and seed
    cfg = _quick(tmp_path, epochs=1, teacher=str(teacher_run), distill_weight=0.5)
    images, labels = data.load_split("train", data.SAMPLE_DIR)
    _, targets = next(
        iter(make_pipeline(images[:64], labels[:64], cfg, training=True, teacher=load_teacher(cfg)))
    )
    targets = targets.numpy()
    np.testing.assert_allclose(targets.sum(axis=1), 1.0, atol=1e-5)
    assert (targets.max(axis=1) < 1.0).all() and (
        targets.max(axis=1) >= 0.5
    ).all()  # half one-hot, half teacher
    run = train(cfg, runs_dir=tmp_path)
    assert load_config(TrainConfig, run / "config.json").teacher == str(teacher_run)
    assert json.loads((run / "metrics.json").read_text())["epochs_run"] == 1
    from edge_fm.optimize.compress import OptimizeConfig, fine_tune_config

    assert fine_tune_config(OptimizeConfig("qat", str(run))).teacher == str(teacher_run)  # QAT distils too
    # A teacher that trained on another split may have seen the student's validation images.
    with pytest.raises(EdgeFMError, match="different split"):
        train(_quick(tmp_path, seed=1, teacher=str(teacher_run)), runs_dir=tmp_path / "refused")
    assert not (tmp_path / "refused").exists()


def test_an_unfinished_teacher_is_refused_with_the_command_that_finishes_it(tmp_path, exported):
    unfinished = tmp_path / "unfinished-teacher"
    shutil.copytree(exported["train"], unfinished, ignore=shutil.ignore_patterns("model.h5"))
    with pytest.raises(
        EdgeFMError,
        match=re.escape(f"did not finish; continue it with `edge-fm train --resume {unfinished}`"),
    ):
        train(_quick(tmp_path, teacher=str(unfinished)), runs_dir=tmp_path / "refused")
    assert not (tmp_path / "refused").exists()


def test_a_resumed_pipeline_draws_a_new_order_not_the_first_epochs_again():
    cfg = _quick(None)
    images, labels = data.load_split("train", data.SAMPLE_DIR)

    def first_batch_labels(first_epoch):
        pipeline = make_pipeline(images, labels, cfg, training=True, first_epoch=first_epoch)
        return next(iter(pipeline))[1].numpy().argmax(axis=1)

    np.testing.assert_array_equal(first_batch_labels(0), first_batch_labels(0))  # still seeded
    assert not np.array_equal(first_batch_labels(0), first_batch_labels(3))


@pytest.mark.slow
def test_interrupted_run_resumes_from_its_last_epoch(tmp_path, monkeypatch, interrupt_after):
    cfg = _quick(tmp_path, epochs=4)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, runs_dir=tmp_path, reporter=interrupt_after(3))
    run = tmp_path / "tiny-cnn-train-1"
    assert not (run / "metrics.json").exists() and (run / "checkpoint").exists()
    before = json.loads((run / "history.json").read_text())
    epochs_seen = []

    class Recorder(NullReporter):
        def start(self, run_dir, config, data, steps, initial_epoch):
            epochs_seen.append(("start", initial_epoch))

        def epoch(self, epoch, logs):
            epochs_seen.append(epoch)

    train_module = importlib.import_module("edge_fm.train.trainer")
    pipelines = []
    make = train_module.make_pipeline
    monkeypatch.setattr(train_module, "make_pipeline", lambda *a, **k: pipelines.append(k) or make(*a, **k))
    seeds = []
    seed = train_module.keras.utils.set_random_seed
    monkeypatch.setattr(train_module.keras.utils, "set_random_seed", lambda s: seeds.append(s) or seed(s))
    # The history writer (a run's callbacks) names the device of each epoch.
    callbacks = importlib.import_module("edge_fm.train.callbacks")
    monkeypatch.setattr(callbacks, "describe_device", lambda: "the resuming device")
    resume(run, reporter=Recorder())
    assert pipelines[0]["training"] and pipelines[0]["first_epoch"] == len(
        before
    )  # not epoch 1's draws again
    assert seeds[-1] == cfg.seed + len(before)  # the augmentation draws move on too
    history = json.loads((run / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2, 3, 4]
    assert history[0] == before[0]  # finished epochs are kept, not retrained
    assert epochs_seen[1:] and epochs_seen[1] >= 3  # training went on from the checkpoint, not epoch 1
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["epochs_run"] == 4
    # The card's device line credits each part of the run to the device (and thread count) that ran it.
    first, second = metrics["device"].split("; ")
    assert first.startswith(("CPU: ", "GPU: ")) and second.startswith("the resuming device for epochs ")
    assert second.endswith("-4")
    with pytest.raises(EdgeFMError, match="already finished"):
        resume(run)


@pytest.mark.slow
def test_early_stopping_restores_the_best_epoch(tmp_path):
    # 40 training images, no regularisation: once they are memorised (about epoch 10) the net only
    # grows more confident in its wrong validation answers, so validation loss must rise for good.
    cfg = _quick(tmp_path, epochs=40, batch_size=20, max_train=40, learning_rate=1e-2, early_stopping=2)
    run = train(cfg, runs_dir=tmp_path)
    metrics = json.loads((run / "metrics.json").read_text())
    history = json.loads((run / "history.json").read_text())
    best = min(history, key=lambda h: h["val_loss"])
    assert metrics["best_epoch"] == best["epoch"] and metrics["restored_best"]
    assert len(history) == best["epoch"] + 2 < cfg.epochs  # stopped after `patience` epochs without progress
    assert history[-1]["val_loss"] > best["val_loss"]  # so restoring changes the weights...
    assert metrics["val"]["loss"] == pytest.approx(best["val_loss"], rel=1e-3)  # ...to the best epoch's


@pytest.mark.skipif(bool(device_lib.GPUS), reason="the line names the GPU instead")
def test_device_line_names_a_thread_limit_below_the_core_count(monkeypatch):
    # A run held to one thread trains several times slower; its card must not read "2 cores" alone.
    monkeypatch.setattr(device_lib, "_cores", lambda: 4)
    monkeypatch.setattr(tf.config.threading, "get_intra_op_parallelism_threads", lambda: 0)
    monkeypatch.setenv("TF_NUM_INTRAOP_THREADS", "1")
    assert describe_device().endswith("(4 cores, TensorFlow held to 1 thread)")
    monkeypatch.delenv("TF_NUM_INTRAOP_THREADS")
    assert describe_device().endswith("(4 cores)")


def test_a_run_resumed_with_other_threads_names_each_stretch_of_epochs():
    history = [
        {"epoch": 1},
        {"epoch": 2, "device": "CPU: X (2 cores, TensorFlow held to 1 thread)"},
        {"epoch": 3, "device": "CPU: X (2 cores, TensorFlow held to 1 thread)"},
        {"epoch": 4, "device": "CPU: X (2 cores)"},
    ]
    assert describe_devices(history) == (
        "device not recorded for epoch 1; CPU: X (2 cores, TensorFlow held to 1 thread) "
        "for epochs 2-3; CPU: X (2 cores) for epoch 4"
    )
    assert describe_devices(history[1:3]) == "CPU: X (2 cores, TensorFlow held to 1 thread)"


def test_mixed_precision_takes_bfloat16_for_cpus_with_bf16_kernels():
    from edge_fm.errors import EdgeFMError
    from edge_fm.train.config import TrainConfig
    from edge_fm.train.trainer import build_model, precision_policy

    config = TrainConfig(arch="tiny-cnn", mixed_precision=True, mixed_dtype="bfloat16")
    assert precision_policy(config) == "mixed_bfloat16"
    assert (
        precision_policy(TrainConfig(arch="tiny-cnn", mixed_precision=False, mixed_dtype="bfloat16"))
        == "float32"
    )
    model = build_model(config)
    assert {layer.dtype_policy.name for layer in model.layers if layer.weights} >= {"mixed_bfloat16"}
    assert model.outputs[0].dtype.name == "float32"  # the softmax stays float32, what an app receives
    with pytest.raises(EdgeFMError, match="mixed_dtype"):
        TrainConfig(arch="tiny-cnn", mixed_dtype="int4")


def test_a_bfloat16_run_exports_an_int8_artifact_that_passes_parity(tmp_path):
    """A run trained under mixed_bfloat16 comes back in float32 for conversion, as a float16 one does."""
    import json

    from edge_fm.export.exporter import export

    run = train(_quick(tmp_path, epochs=2, mixed_precision=True, mixed_dtype="bfloat16"), runs_dir=tmp_path)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["precision_policy"] == "mixed_bfloat16" and metrics["mixed_precision"]
    bundle = export(run, "int8", representative_size=100, parity_images=200, runs_dir=tmp_path)
    parity = json.loads((bundle / "model.json").read_text())["export"]["parity"]
    assert parity["passed"] and parity["agreement"] > 0.9

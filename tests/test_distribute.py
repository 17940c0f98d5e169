"""Distributed training for real on a CPU: MirroredStrategy over two logical CPU devices and
MultiWorkerMirroredStrategy with two worker processes on 127.0.0.1, each held to the accuracy of
single-device training; the GPU path (mixed precision, then QAT and int8 export) as far as a CPU goes.

Run as a script, this file is the test-only entry the distributed runs use (see ``_entry``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import free_port

from edge_fm.compat import keras
from edge_fm.errors import EdgeFMError
from edge_fm.train.config import OptimizeConfig, TrainConfig
from edge_fm.train.distribute import (
    ONE_DEVICE,
    Placement,
    check_global_batch,
    distribute_pipeline,
    resolve_placement,
)
from edge_fm.train.evaluate import evaluate_run
from edge_fm.train.runs import Run
from edge_fm.train.trainer import config_for, resume, train

REPO = Path(__file__).resolve().parents[1]
# The same recipe single-device and distributed: tiny-cnn, 3 epochs on the embedded sample.
RECIPE = {"epochs": 3, "batch_size": 64, "learning_rate": 3e-3, "seed": 0}
RECIPE_ARGS = [
    "train",
    "tiny-cnn",
    "--sample",
    "--epochs",
    "3",
    "--batch-size",
    "64",
    "--lr",
    "3e-3",
    "--seed",
    "0",
]
# Single-device runs of RECIPE over seeds 0-5 scored 0.836-0.848 on the sample's 1,000 held-out
# images (mean 0.842, sd 0.005). A distributed run takes another, equally good path (each replica's
# batch norm sees 32 images, not 64; sums are reduced in another order): mirrored and multi-worker
# runs of seeds 0-3 landed 0.002-0.009 from the single-device run of the same seed (measured by
# experiments/distribute_noise.py). 0.03 is six seed-to-seed standard deviations.
TOLERANCE = 0.03
SUBPROCESS_TIMEOUT = 240  # a hung collective must fail the test, not the suite


def _recipe_config(**overrides) -> TrainConfig:
    return config_for("tiny-cnn", "quick", data="sample", **{**RECIPE, **overrides})


def _metrics(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text())


@pytest.fixture(scope="module")
def one_device_accuracy(tmp_path_factory) -> float:
    """The sample accuracy of RECIPE trained on one device (the default, 'auto' on a CPU)."""
    run = train(_recipe_config(), runs_dir=tmp_path_factory.mktemp("one-device"))
    metrics = _metrics(run)
    assert metrics["distribute"]["strategy"] == "none" and metrics["distribute"]["replicas"] == 1
    return metrics["sample_test"]["accuracy"]


def _edge_fm(args: list[str], logical_cpus: int = 1, env: dict | None = None, interrupt_after: int = 0):
    """Runs ``edge-fm ARGS`` in a fresh process (see ``_entry``); returns the process, not yet waited for."""
    command = [sys.executable, __file__, str(logical_cpus), str(interrupt_after), *args]
    return subprocess.Popen(
        command,
        cwd=REPO,
        env={**os.environ, **(env or {})},
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def _finish(process: subprocess.Popen) -> tuple[int, str]:
    try:
        output, _ = process.communicate(timeout=SUBPROCESS_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        output, _ = process.communicate()
        pytest.fail(f"edge-fm train did not finish in {SUBPROCESS_TIMEOUT} s:\n{output[-3000:]}")
    return process.returncode, output


# ---------------------------------------------------------------- fast: options and errors


def test_auto_on_a_cpu_trains_on_one_device_as_before():
    assert TrainConfig(arch="tiny-cnn").distribute == "auto"
    assert resolve_placement("auto") is ONE_DEVICE and resolve_placement("none") is ONE_DEVICE
    with pytest.raises(EdgeFMError, match="Did you mean 'mirrored'"):
        TrainConfig(arch="tiny-cnn", distribute="mirored")


@pytest.mark.parametrize(
    "tf_config, message",
    [
        (None, "needs the TF_CONFIG environment variable"),
        ("{'cluster': 1}", "TF_CONFIG is not valid JSON"),
        (
            '{"cluster": {"worker": ["127.0.0.1"]}, "task": {"type": "worker", "index": 0}}',
            'must be a list of "host:port"',
        ),
        (
            '{"cluster": {"worker": ["127.0.0.1:1"]}, "task": {"type": "worker", "index": 1}}',
            "is not in its cluster",
        ),
    ],
)
def test_multi_worker_refuses_a_missing_or_malformed_tf_config_in_one_line(
    monkeypatch, tmp_path, tf_config, message
):
    from edge_fm.cli import main

    if tf_config is None:
        monkeypatch.delenv("TF_CONFIG", raising=False)
    else:
        monkeypatch.setenv("TF_CONFIG", tf_config)
    with pytest.raises(EdgeFMError, match=message) as caught:
        resolve_placement("multi-worker")
    assert "\n" not in str(caught.value)
    assert main([*RECIPE_ARGS, "--distribute", "multi-worker", "--runs-dir", str(tmp_path / "runs")]) == 1
    assert not (tmp_path / "runs").exists()  # refused before any run directory was made


def test_the_global_batch_must_split_evenly_and_pipelines_shard_by_data():
    two = Placement("mirrored", strategy=object(), replicas=2)
    check_global_batch(64, two)
    with pytest.raises(EdgeFMError, match="use 64 or 66"):
        check_global_batch(65, two)
    assert two.record(64)["per_replica_batch_size"] == 32
    from edge_fm.compat import tf

    dataset = tf.data.Dataset.range(8).batch(4)
    assert distribute_pipeline(dataset, ONE_DEVICE) is dataset
    policy = distribute_pipeline(dataset, two).options().experimental_distribute.auto_shard_policy
    assert policy == tf.data.experimental.AutoShardPolicy.DATA


def test_fine_tunes_run_on_one_replica_whatever_trained_the_parent(tmp_path):
    from edge_fm.optimize.compress import fine_tune_config

    parent = tmp_path / "tiny-cnn-train-1"
    parent.mkdir()
    (parent / "config.json").write_text(json.dumps(_recipe_config(distribute="mirrored").to_dict()))
    assert fine_tune_config(OptimizeConfig("qat", str(parent))).distribute == "none"
    with pytest.raises(EdgeFMError, match="run on one replica"):
        fine_tune_config(OptimizeConfig("prune", str(parent), fine_tune={"distribute": "mirrored"}))


# ---------------------------------------------------------------- for real: strategies


@pytest.mark.slow
def test_mirrored_over_two_cpu_devices_reaches_single_device_accuracy(tmp_path, one_device_accuracy):
    code, output = _finish(
        _edge_fm([*RECIPE_ARGS, "--distribute", "mirrored", "--runs-dir", str(tmp_path)], logical_cpus=2)
    )
    assert code == 0, output
    run = tmp_path / "tiny-cnn-train-1"
    metrics = _metrics(run)
    assert metrics["distribute"] == {
        "strategy": "mirrored",
        "replicas": 2,
        "workers": 1,
        "devices": ["/device:CPU:0", "/device:CPU:1"],
        "global_batch_size": 64,
        "per_replica_batch_size": 32,
    }
    assert metrics["device"].endswith("; mirrored, 2 replicas")
    assert json.loads((run / "config.json").read_text())["distribute"] == "mirrored"
    accuracy = metrics["sample_test"]["accuracy"]
    assert abs(accuracy - one_device_accuracy) <= TOLERANCE, (accuracy, one_device_accuracy)
    assert evaluate_run(run)["accuracy"] == pytest.approx(accuracy)  # the saved model is what was scored


@pytest.mark.slow
def test_an_interrupted_mirrored_run_resumes_from_its_checkpoint(tmp_path, one_device_accuracy):
    args = [*RECIPE_ARGS, "--distribute", "mirrored", "--runs-dir", str(tmp_path)]
    code, output = _finish(_edge_fm(args, logical_cpus=2, interrupt_after=2))
    assert code == 130, output
    run = tmp_path / "tiny-cnn-train-1"
    assert (run / "checkpoint").is_dir() and not (run / "metrics.json").exists()
    before = json.loads((run / "history.json").read_text())
    assert [h["epoch"] for h in before] == [1, 2]
    with pytest.raises(EdgeFMError, match="resumes with it"):  # a changed strategy is refused, not mixed in
        resume(run, distribute="none")
    code, output = _finish(_edge_fm(["train", "--resume", str(run)], logical_cpus=2))
    assert code == 0, output
    assert "resuming after epoch 2" in output
    history = json.loads((run / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2, 3] and history[0] == before[0]
    # The interrupt came before epoch 2's checkpoint, so epoch 2 ran again, from epoch 1's weights:
    # its loss is far below that of a fresh network's first epoch.
    assert history[1]["loss"] < 0.8 * before[0]["loss"]
    metrics = _metrics(run)
    assert metrics["epochs_run"] == 3 and metrics["distribute"]["replicas"] == 2
    assert abs(metrics["sample_test"]["accuracy"] - one_device_accuracy) <= TOLERANCE
    assert not (run / "checkpoint").exists()


@pytest.mark.slow
def test_two_workers_on_localhost_reach_single_device_accuracy_and_only_the_chief_writes(
    tmp_path, one_device_accuracy
):
    cluster = {"worker": [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"]}
    runs, scratch = tmp_path / "runs", tmp_path / "scratch"
    scratch.mkdir()
    workers = [
        _edge_fm(
            [*RECIPE_ARGS, "--distribute", "multi-worker", "--runs-dir", str(runs)],
            env={
                "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}),
                "TMPDIR": str(scratch),
            },
        )
        for index in (0, 1)
    ]
    (chief_code, chief_output), (worker_code, worker_output) = [_finish(worker) for worker in workers]
    assert chief_code == 0, chief_output
    assert worker_code == 0, worker_output
    assert "this worker is not the chief" in worker_output
    assert [p.name for p in runs.iterdir()] == ["tiny-cnn-train-1"]  # one run, the chief's
    assert list(scratch.iterdir()) == []  # the other worker's temporary copy is gone
    run = runs / "tiny-cnn-train-1"
    assert not [
        name for name in json.loads((run / "manifest.json").read_text())["files"] if "workertemp" in name
    ]
    metrics = _metrics(run)
    assert metrics["distribute"]["strategy"] == "multi-worker"
    assert (metrics["distribute"]["replicas"], metrics["distribute"]["workers"]) == (2, 2)
    assert metrics["device"].endswith("; multi-worker, 2 replicas on 2 workers")
    accuracy = metrics["sample_test"]["accuracy"]
    assert abs(accuracy - one_device_accuracy) <= TOLERANCE, (accuracy, one_device_accuracy)


# ---------------------------------------------------------------- the GPU path, on a CPU


@pytest.mark.slow
def test_mixed_precision_under_a_strategy_then_qat_and_int8_export(tmp_path):
    from edge_fm.cli import main
    from edge_fm.export.exporter import export
    from edge_fm.optimize.compress import optimize

    # What a GPU run does by default (mixed_float16, mirrored), forced on: mixed_float16 runs on a CPU, slowly.
    args = [
        "train",
        "tiny-cnn",
        "--sample",
        "--epochs",
        "3",
        "--batch-size",
        "64",
        "--lr",
        "3e-3",
        "--set",
        "mixed_precision=true",
        "--distribute",
        "mirrored",
        "--runs-dir",
        str(tmp_path),
    ]
    assert main(args) == 0
    run = tmp_path / "tiny-cnn-train-1"
    metrics = _metrics(run)
    assert metrics["precision_policy"] == "mixed_float16" and metrics["mixed_precision"]
    assert metrics["output_dtype"] == "float32"
    assert metrics["device"].startswith("CPU: ") and metrics["distribute"]["strategy"] == "mirrored"
    assert metrics["sample_test"]["accuracy"] > 0.6
    saved = Run(run).model()
    assert saved.get_layer("probs").dtype_policy.name == "float32"  # the softmax stays float32
    assert saved.get_layer("conv1").dtype_policy.name == "mixed_float16"
    assert keras.mixed_precision.global_policy().name == "float32"  # nothing leaks into later work

    qat = optimize(OptimizeConfig("qat", str(run), fine_tune={"epochs": 1}), runs_dir=tmp_path)
    qat_metrics = _metrics(qat)
    assert qat_metrics["distribute"]["replicas"] == 1 and "one replica" in qat_metrics["distribute"]["note"]
    assert json.loads((qat / "config.json").read_text())["fine_tune"]["distribute"] == "none"
    bundle = export(qat, "qat-int8", parity_images=400, runs_dir=tmp_path)
    parity = json.loads((bundle / "model.json").read_text())["export"]["parity"]
    assert parity["passed"] and parity["agreement"] >= 0.98, parity


def _entry(argv: list[str]) -> int:
    """Test-only entry: ``python tests/test_distribute.py CPUS INTERRUPT_AFTER edge-fm-args...``.

    Splits the CPU into CPUS logical devices, which TensorFlow allows only before it initializes
    its devices (hence a fresh process), so MirroredStrategy has two devices to mirror over; with
    INTERRUPT_AFTER > 0 the run is interrupted like a Ctrl-C after that epoch.
    """
    from edge_fm import cli
    from edge_fm.cli.common import RichReporter
    from edge_fm.compat import tf

    cpus, interrupt_after, args = int(argv[0]), int(argv[1]), argv[2:]
    if cpus > 1:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * cpus)
    if interrupt_after:
        render_epoch = RichReporter.epoch

        def epoch_then_interrupt(self, epoch, logs):
            render_epoch(self, epoch, logs)
            if epoch == interrupt_after:
                raise KeyboardInterrupt

        RichReporter.epoch = epoch_then_interrupt
    return cli.main(args)


if __name__ == "__main__":
    sys.exit(_entry(sys.argv[1:]))

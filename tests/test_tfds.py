"""``--data tfds:NAME`` on tensorflow-datasets' own mock data (no network, no files)."""

from __future__ import annotations

import pytest
from test_sources import assert_one_line_error, run_cli

from edge_fm.data.sources import DataOptions, load_data
from edge_fm.train.runs import Run

tfds = pytest.importorskip("tensorflow_datasets")


@pytest.fixture
def mock_mnist():
    with tfds.testing.mock_data(num_examples=60):
        yield


def test_a_tfds_dataset_loads_with_its_splits_and_class_names(mock_mnist):
    dataset = load_data("tfds:mnist")
    identity = dataset.identity
    assert identity.kind == "tfds" and identity.source == "tfds:mnist"
    assert identity.class_names == tuple(str(d) for d in range(10)) and identity.test_split == "given"
    assert dataset.image_shape == (28, 28, 1) and len(dataset.x_train) == len(dataset.x_test) == 60
    assert identity.fingerprint.startswith("sha256:")
    assert load_data("tfds:mnist").identity.fingerprint == identity.fingerprint
    resized = load_data("tfds:mnist", options=DataOptions(image_size=(16, 16), channels=3))
    assert resized.image_shape == (16, 16, 3) and resized.identity.resize == "pad"
    code, output = run_cli("data", "info", "--data", "tfds:mnist")
    assert code == 0, output
    assert "tfds data: tfds:mnist" in output


def test_a_tfds_dataset_that_is_not_here_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path))
    code, output = run_cli("data", "info", "--data", "tfds:mnist")
    assert_one_line_error(code, output, f"--data tfds:mnist is not prepared in {tmp_path}")
    assert "tfds build mnist" in output
    code, output = run_cli("data", "info", "--data", "tfds:no_such_set_here")
    assert_one_line_error(code, output, "tensorflow-datasets has no such dataset")


@pytest.mark.slow
def test_training_on_a_tfds_dataset_records_it_for_the_later_stages(mock_mnist, tmp_path):
    code, output = run_cli(
        "train", "tiny-cnn", "--data", "tfds:mnist", "--epochs", "1", "--runs-dir", tmp_path / "runs"
    )
    assert code == 0, output
    run = Run(output.split("run directory: ")[1].split()[0])
    assert run.train_config.data == "tfds:mnist"
    assert run.manifest["data"]["identity"]["kind"] == "tfds"
    code, output = run_cli("evaluate", run.path)
    assert code == 0, output
    assert f"accuracy {run.metrics['test']['accuracy']:.2%}" in output

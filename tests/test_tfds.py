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


# ---------------------------------------------------------------- the decode cache


class EdgeFmTinyShapes(tfds.core.GeneratorBasedBuilder):
    """A real tensorflow-datasets dataset, prepared offline: 8x8 grey squares and crosses."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self,
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(8, 8, 1)),
                    "label": tfds.features.ClassLabel(names=["square", "cross"]),
                }
            ),
            supervised_keys=("image", "label"),
        )

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples(0, 40), "test": self._generate_examples(1, 12)}

    def _generate_examples(self, seed, count):
        import numpy as np

        rng = np.random.default_rng(seed)
        for index in range(count):
            label = index % 2
            image = rng.integers(0, 60, (8, 8, 1), dtype=np.uint8)
            if label:
                image[np.arange(8), np.arange(8)] = image[np.arange(8), 7 - np.arange(8)] = 255
            else:
                image[2:6, 2:6] = 255
            yield index, {"image": image, "label": label}


def test_a_prepared_tfds_dataset_is_read_once_into_the_memory_mapped_cache(tmp_path, monkeypatch):
    import numpy as np

    from edge_fm.data.options import cache_root

    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "tfds"))
    tfds.builder("edge_fm_tiny_shapes", data_dir=str(tmp_path / "tfds")).download_and_prepare()
    first = load_data("tfds:edge_fm_tiny_shapes")
    assert isinstance(first.x_train, np.memmap) and isinstance(first.x_test, np.memmap)
    assert first.class_names == ("square", "cross") and len(first.x_test) == 12
    assert first.image_shape == (8, 8, 1) and first.identity.source == "tfds:edge_fm_tiny_shapes"
    (entry,) = [p for p in cache_root().iterdir() if not p.name.startswith(".")]

    # A second load maps the entry without reading the dataset: the shards' content may change
    # (same names and sizes) and the cached arrays are what comes back.
    (shard,) = (tmp_path / "tfds").rglob("*train.tfrecord*")
    content = shard.read_bytes()
    shard.write_bytes(b"\0" * len(content))
    second = load_data("tfds:edge_fm_tiny_shapes")
    assert isinstance(second.x_train, np.memmap) and second.identity.fingerprint == first.identity.fingerprint
    np.testing.assert_array_equal(second.x_train, first.x_train)
    assert [p for p in cache_root().iterdir() if not p.name.startswith(".")] == [entry]
    # The training cap is no part of the key: it applies to the mapped arrays of the same entry.
    capped = load_data("tfds:edge_fm_tiny_shapes", options=DataOptions(max_train=10))
    assert len(capped.x_train) == 10
    assert [p for p in cache_root().iterdir() if not p.name.startswith(".")] == [entry]
    # Preparing the dataset again (its files change) makes a new entry, read from the files.
    shard.write_bytes(content)
    (shard.parent / "extra.txt").write_text("re-prepared")
    third = load_data("tfds:edge_fm_tiny_shapes")
    assert len([p for p in cache_root().iterdir() if not p.name.startswith(".")]) == 2
    assert third.identity.fingerprint == first.identity.fingerprint


def test_mock_tfds_data_goes_through_the_cache_too(mock_mnist):
    import numpy as np

    first = load_data("tfds:mnist")
    assert isinstance(first.x_train, np.memmap) and isinstance(first.x_test, np.memmap)
    second = load_data("tfds:mnist")
    np.testing.assert_array_equal(second.x_test, first.x_test)
    assert second.identity.fingerprint == first.identity.fingerprint

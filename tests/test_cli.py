"""The CLI end to end: Typer's CliRunner for commands, main() for the one-line error contract."""

from __future__ import annotations

import json
import shutil

import pytest
from typer.testing import CliRunner

from edge_fm import __version__, data
from edge_fm.cli import app, main

runner = CliRunner()


def _invoke(*args):
    result = runner.invoke(app, list(args))
    return result


def test_version():
    result = _invoke("--version")
    assert result.exit_code == 0, result.output
    assert __version__ in result.output


@pytest.mark.parametrize("command", [[], ["data"], ["data", "fetch"], ["data", "info"], ["zoo"], ["train"], ["evaluate"]])
def test_every_command_has_help_with_an_example(command):
    result = _invoke(*command, "--help")
    assert result.exit_code == 0, result.output
    if command and command != ["data"]:
        assert "Example: edge-fm" in result.output


def test_zoo_lists_the_six_architectures_with_params_and_macs():
    result = _invoke("zoo")
    assert result.exit_code == 0, result.output
    for name, params in [("mlp", "109,386"), ("cnn-2conv", "421,642"), ("vgg-gap", ""), ("cnn-3conv-bn", ""),
                         ("mobilenetv2", ""), ("resnet50", "")]:
        assert name in result.output and params in result.output
    assert "tiny-cnn" not in result.output
    assert result.output.count(" M ") >= 6  # a MAC figure per row


def test_train_then_evaluate_on_the_sample(tmp_path):
    result = _invoke("train", "tiny-cnn", "--sample", "--epochs", "2", "--runs-dir", str(tmp_path), "--set", "learning_rate=0.003")
    assert result.exit_code == 0, result.output
    assert "NOT test-set accuracy" in result.output and "epoch 2/2" in result.output and "2 epochs in" in result.output
    run = tmp_path / "tiny-cnn-train-1"
    metrics = json.loads((run / "metrics.json").read_text())
    assert f"{metrics['sample_test']['accuracy']:.2%}" in result.output
    out = tmp_path / "eval.json"
    result = _invoke("evaluate", str(run), "--json", str(out))
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())["accuracy"] == pytest.approx(metrics["sample_test"]["accuracy"])


def test_data_info_on_the_full_dataset(data_dir):
    result = _invoke("data", "info", "--data-dir", str(data_dir))
    assert result.exit_code == 0, result.output
    assert "60000" in result.output and "72.957" in result.output and "differs from the original" in result.output


def test_data_fetch_refuses_files_whose_checksum_differs(http_server, tmp_path, data_dir, capsys):
    served, url = http_server
    for name in data.PUBLISHED_SHA256:
        shutil.copy(data_dir / name, served / name)
    code = main(["data", "fetch", "--data-dir", str(tmp_path / "dl"), "--url", url])
    err = capsys.readouterr().err
    assert code == 1
    assert "checksum mismatch" in err and "refused" in err and "Traceback" not in err
    assert not list((tmp_path / "dl").glob("*.gz"))


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["train", "resnet-50"], "unknown architecture 'resnet-50'. Did you mean 'resnet50'?"),
        (["train", "mlp", "--epochs", "0"], "epochs must be a number >= 1"),
        (["train", "mlp", "--lr", "-0.1"], "learning_rate must be a positive number"),
        (["train", "mlp", "--sample", "--val-size", "5000"], "validation size 5000 must be between 0 and 1999"),
        (["train", "mlp", "--data-dir", "/nonexistent"], "run `edge-fm data fetch`, or pass --data-dir"),
        (["train", "mlp", "--epochs", "many"], "Invalid value for '--epochs'"),
        (["train", "mlp", "--set", "epoch=3"], "Did you mean 'epochs'"),
        (["train", "mlp", "--arch-opt", "hiden=3"], "has no option 'hiden'"),
        (["evaluate", "/nonexistent/run"], "/nonexistent/run does not exist"),
        (["train", "--resume", "/nonexistent/run"], "/nonexistent/run does not exist"),
        (["train", "mlp", "--sample", "--teacher", "/nonexistent/run"], "/nonexistent/run does not exist"),
        (["train", "mlp", "--sample", "--set", "distill_weight=2"], "distill_weight must be in [0.0, 1.0]"),
        (["zoo", "--bogus"], "No such option: --bogus"),
    ],
)
def test_bad_input_is_one_line_with_non_zero_exit(argv, expected, capsys):
    code = main(argv)
    captured = capsys.readouterr()
    assert code != 0
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(" ".join(lines)) > 0 and "Traceback" not in captured.err
    assert expected in " ".join(lines), captured.err
    assert captured.err.startswith("error:")


def test_a_bad_architecture_option_value_fails_before_a_run_directory_exists(tmp_path, capsys):
    code = main(["train", "edge-cnn-tiny", "--sample", "--arch-opt", "block=dens", "--runs-dir", str(tmp_path / "runs")])
    err = capsys.readouterr().err
    assert code != 0 and "Traceback" not in err
    assert err.startswith("error: unknown edge-cnn-tiny block 'dens'. Known: conv, separable.")
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_corrupt_idx_is_named(tmp_path, data_dir, capsys):
    for name in data.PUBLISHED_SHA256:
        shutil.copy(data_dir / name, tmp_path / name)
    raw = (tmp_path / "train-images-idx3-ubyte.gz").read_bytes()
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(raw[:5000])
    code = main(["train", "mlp", "--data-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 1 and "train-images-idx3-ubyte.gz" in err and "truncated" in err

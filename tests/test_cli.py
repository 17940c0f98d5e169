"""The CLI end to end: Typer's CliRunner for commands, main() for the one-line error contract."""

from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from edge_fm import __version__
from edge_fm.cli import app, main
from edge_fm.data import datasets as data

runner = CliRunner()


def _invoke(*args):
    result = runner.invoke(app, list(args))
    return result


def test_version():
    result = _invoke("--version")
    assert result.exit_code == 0, result.output
    assert __version__ in result.output


@pytest.mark.parametrize(
    "command", [[], ["data"], ["data", "fetch"], ["data", "info"], ["zoo"], ["train"], ["evaluate"]]
)
def test_every_command_has_help_with_an_example(command):
    result = _invoke(*command, "--help")
    assert result.exit_code == 0, result.output
    if command and command != ["data"]:
        assert "Example: edge-fm" in result.output


def _conv(k, c_in, c_out, bias=True):
    return k * k * c_in * c_out + (c_out if bias else 0)


def _dense(n_in, n_out):
    return n_in * n_out + n_out


# Parameter counts from the layer formulas of each builder's docstring (BN: 4 per channel), and
# for the ImageNet backbones the counts Keras publishes for them without their top.
MOBILENETV2_NO_TOP, RESNET50_NO_TOP, BN = 2_257_984, 23_587_712, 4
EXPECTED_PARAMS = {
    "mlp": _dense(784, 128) + _dense(128, 64) + _dense(64, 10),
    "cnn-2conv": _conv(3, 1, 32) + _conv(3, 32, 64) + _dense(7 * 7 * 64, 128) + _dense(128, 10),
    "vgg-gap": sum(
        _conv(3, c_in, c_out, bias=False) + BN * c_out
        for c_in, c_out in [(1, 32), (32, 32), (32, 64), (64, 64), (64, 96), (96, 96)]
    )
    + _dense(96, 10),
    "cnn-3conv-bn": sum(
        _conv(3, c_in, c_out) + BN * c_out for c_in, c_out in [(1, 64), (64, 128), (128, 256)]
    )
    + _dense(3 * 3 * 256, 128)
    + BN * 128
    + _dense(128, 10),
    "mobilenetv2": MOBILENETV2_NO_TOP + _dense(1280, 128) + BN * 128 + _dense(128, 10),
    "resnet50": RESNET50_NO_TOP + _dense(2048, 256) + _dense(256, 128) + _dense(128, 10),
}


@pytest.mark.slow
def test_zoo_lists_the_six_architectures_with_params_and_macs():
    result = _invoke("zoo")
    assert result.exit_code == 0, result.output
    assert (
        EXPECTED_PARAMS["mlp"] == 109_386 and EXPECTED_PARAMS["resnet50"] == 24_146_442
    )  # the formulas hold
    rows = {line.split()[1]: line for line in result.output.splitlines() if line.startswith("│")}
    for name, params in EXPECTED_PARAMS.items():
        assert f"│ {params:,} " in rows[name], rows.get(name)
    assert "tiny-cnn" not in result.output
    assert result.output.count(" M ") >= 6  # a MAC figure per row


def test_train_then_evaluate_on_the_sample(tmp_path):
    result = _invoke(
        "train",
        "tiny-cnn",
        "--sample",
        "--epochs",
        "2",
        "--runs-dir",
        str(tmp_path),
        "--set",
        "learning_rate=0.003",
        "--lr",
        "0.002",
        "--augment",
        "flip",
        "--batch-size",
        "64",
    )
    assert result.exit_code == 0, result.output
    # Each training option sets its config field; an option wins over --set.
    config = json.loads((tmp_path / "tiny-cnn-train-1" / "config.json").read_text())
    assert (config["learning_rate"], config["augment"], config["batch_size"]) == (0.002, ["flip"], 64)
    assert (
        "NOT test-set accuracy" in result.output
        and "epoch 2/2" in result.output
        and "2 epochs in" in result.output
    )
    run = tmp_path / "tiny-cnn-train-1"
    metrics = json.loads((run / "metrics.json").read_text())
    assert f"{metrics['sample_test']['accuracy']:.2%}" in result.output
    out = tmp_path / "eval.json"
    result = _invoke("evaluate", str(run), "--json", str(out))
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())["accuracy"] == pytest.approx(metrics["sample_test"]["accuracy"])


@pytest.mark.slow
def test_data_info_on_the_full_dataset(data_dir):
    result = _invoke("data", "info", "--data-dir", str(data_dir))
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())  # whatever width the table and lines were wrapped to
    pixels = data.load_split("train", data_dir)[0].astype(np.float64)
    assert (
        "│ total │ 60000 │ 10000 │" in text
        and f"train pixel mean {pixels.mean():.3f}, std {pixels.std():.3f}" in text
    )
    for name, published in data.PUBLISHED_SHA256.items():
        actual = hashlib.sha256((data_dir / name).read_bytes()).hexdigest()
        verdict = "matches" if actual == published else "differs"
        assert f"{name}: sha256 {actual[:16]}… {verdict}" in text, result.output


def test_data_fetch_refuses_files_whose_checksum_differs(http_server, tmp_path, capsys):
    served, url = http_server
    for name in data.PUBLISHED_SHA256:
        # Flipped, whatever copy they came from: no published checksum can match them.
        raw = bytearray((data.SAMPLE_DIR / name).read_bytes())
        raw[100] ^= 0xFF
        (served / name).write_bytes(bytes(raw))
    code = main(["data", "fetch", "--data-dir", str(tmp_path / "dl"), "--url", url])
    err = capsys.readouterr().err
    assert code == 1
    assert "checksum mismatch" in err and "refused" in err and "Traceback" not in err
    assert not list((tmp_path / "dl").glob("*.gz"))


def test_data_fetch_stops_reading_a_file_larger_than_any_release_file(
    http_server, tmp_path, capsys, monkeypatch
):
    from edge_fm.data import download

    served, url = http_server
    for name in data.PUBLISHED_SHA256:
        (served / name).write_bytes((data.SAMPLE_DIR / name).read_bytes())
    monkeypatch.setattr(download, "MAX_FILE_BYTES", 20_000)  # smaller than the sample's image files
    code = main(["data", "fetch", "--data-dir", str(tmp_path / "dl"), "--url", url])
    err = capsys.readouterr().err
    assert code == 1 and "is 871,906 bytes, more than any release file; file refused" in err
    assert "edge_fm/" not in err  # (the test server's own thread prints the closed connection)
    assert not list((tmp_path / "dl").glob("*.gz"))


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["train", "resnet-50"], "unknown architecture 'resnet-50'. Did you mean 'resnet50'?"),
        (["train", "mlp", "--epochs", "0"], "epochs must be a number >= 1"),
        (["train", "mlp", "--lr", "-0.1"], "learning_rate must be a positive number"),
        (["train", "mlp", "--lr", "nan"], "learning_rate must be a positive number, got nan"),
        (["train", "mlp", "--lr", "inf"], "learning_rate must be a positive number, got inf"),
        (["train", "mlp", "--set", "label_smoothing=" + "9" * 400], "label_smoothing must be in"),
        (["serve", "models/", "--max-upload-mb", "nan"], "--max-upload-mb nan: give a size above 0"),
        (["serve", "models/", "--max-upload-mb", "1e12"], "at most 100, e.g. 4"),
        (["bench", "models/edge-cnn-tiny", "--threads", "100000"], "at most 256 interpreter threads"),
        (["report", "models/edge-cnn-tiny", "--bench", "/nonexistent.json"], "is a bundle: drop --bench"),
        (["export", "/nonexistent", "--for", "mcu"], "/nonexistent does not exist"),
        (
            ["train", "mlp", "--sample", "--val-size", "5000"],
            "validation size 5000 must be between 0 and 1999",
        ),
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
    code = main(
        [
            "train",
            "edge-cnn-tiny",
            "--sample",
            "--arch-opt",
            "block=dens",
            "--runs-dir",
            str(tmp_path / "runs"),
        ]
    )
    err = capsys.readouterr().err
    assert code != 0 and "Traceback" not in err
    assert err.startswith("error: unknown edge-cnn-tiny block 'dens'. Known: conv, separable.")
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_corrupt_idx_is_named(tmp_path, capsys):
    for name in data.PUBLISHED_SHA256:
        shutil.copy(data.SAMPLE_DIR / name, tmp_path / name)
    raw = (tmp_path / "train-images-idx3-ubyte.gz").read_bytes()
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(raw[:5000])
    code = main(["train", "mlp", "--data-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 1 and "train-images-idx3-ubyte.gz" in err and "truncated" in err


def test_the_command_line_starts_without_tensorflow():
    """Every command's --help, and the commands that need no model (serve, report, bench), start in well
    under a second: loading the CLI must not load TensorFlow (about 3 s here)."""
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['tensorflow'] = None; sys.modules['tf_keras'] = None; "
        "from edge_fm.cli import main; sys.exit(main(sys.argv[1:]))"
    )
    for argv in (["--help"], ["export", "--help"], ["serve", "--help"], ["bench", "--help"]):
        done = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, (argv, done.stdout[-500:], done.stderr[-2000:])


def test_ctrl_c_while_the_commands_load_is_one_line():
    """A Ctrl-C in the first moments, while Python loads the commands' modules, ends like one during a
    command: `aborted` and the shell's SIGINT code, no traceback. The interrupt is raised by an import
    hook at a fixed point, so the test does not depend on timing."""
    import subprocess
    import sys

    script = (
        "import sys\n"
        "class Interrupt:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'edge_fm.cli.data_commands':\n"
        "            raise KeyboardInterrupt\n"
        "sys.meta_path.insert(0, Interrupt())\n"
        "from edge_fm.cli import entry_point\n"
        "sys.argv = ['edge-fm', '--help']\n"
        "entry_point()\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stderr.strip()) == (130, "aborted"), done.stderr[-2000:]


def test_every_commands_help_fits_eighty_columns_without_cutting_a_word():
    """Piped or in a narrow terminal, rich cuts an option name or an unbreakable word it cannot wrap
    (shown with an ellipsis): every help text must survive 80 columns whole."""
    import typer

    command = typer.main.get_command(app)
    names = [
        [name, *([sub] if sub else [])]
        for name, group in command.commands.items()
        for sub in (getattr(group, "commands", None) or [None])
    ]
    runner = CliRunner()
    for argv in names:
        result = runner.invoke(app, [*argv, "--help"], env={"COLUMNS": "80", "TERMINAL_WIDTH": "80"})
        assert result.exit_code == 0, (argv, result.output[-500:])
        assert "…" not in result.output, (argv, [line for line in result.output.splitlines() if "…" in line])


def test_options_a_resume_does_not_read_are_named_in_one_warning(tmp_path, capsys):
    """A resumed run goes on with its recorded settings: options given beside --resume are named as
    ignored, not silently dropped (here the run does not exist, so each command then fails)."""
    missing = str(tmp_path / "no-such-run")
    assert main(["train", "--resume", missing, "--epochs", "3", "--set", "label_smoothing=0.3"]) == 1
    assert "--resume goes on with the run's recorded settings; ignored: the training options, --set." in (
        capsys.readouterr().err.replace("\n", " ")
    )
    assert main(["optimize", "--resume", missing, "--prune", "0.9", "--qat"]) == 1
    assert "ignored: --prune, --qat." in capsys.readouterr().err.replace("\n", " ")
    assert main(["pipeline", "--resume", missing, "--qat", "-f", "int8"]) == 1
    assert "ignored: --qat, --format." in capsys.readouterr().err.replace("\n", " ")
    assert main(["train", "--resume", missing]) == 1
    assert "ignored" not in capsys.readouterr().err

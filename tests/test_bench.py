"""The device runner and the bench stage on real artifacts, locally and over a real SSH server."""

from __future__ import annotations

import csv
import gzip
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edge_fm import runner
from edge_fm.bench.benchmark import (
    BenchOptions,
    SshTarget,
    bench,
    best_artifact,
    collect_artifacts,
    parse_target,
)
from edge_fm.bench.measurements import read_bench
from edge_fm.cli import main
from edge_fm.data import datasets as data
from edge_fm.errors import EdgeFMError

FAST = BenchOptions(threads=(1, 2), runs=30, min_seconds=0.05, warmup=2)


@pytest.fixture(scope="module")
def test_npz(tmp_path_factory):
    path = tmp_path_factory.mktemp("testset") / "test.npz"
    images, labels = data.load_split("test", data.SAMPLE_DIR)
    np.savez_compressed(path, images=images.reshape(-1, 28, 28), labels=labels)
    return path, images, labels


def test_runner_measures_real_artifacts(exported, test_npz, tmp_path, plain_accuracy):
    path, images, labels = test_npz
    artifacts = [str(exported[name] / "model.tflite") for name in ("int8", "fp32")]
    out = tmp_path / "result.json"
    code = runner.main(
        [
            *artifacts,
            "--test-data",
            str(path),
            "--threads",
            "1,2",
            "--runs",
            "40",
            "--min-seconds",
            "0.05",
            "--json",
            str(out),
        ]
    )
    assert code == 0
    result = json.loads(out.read_text())
    assert result["environment"]["interpreter"] == "ai_edge_litert" and result["environment"]["cpu"]
    assert result["environment"]["cpu_detail"] == runner.cpu_detail()
    rows = result["rows"]
    assert [(r["format"], r["threads"]) for r in rows] == [("int8", 1), ("int8", 2), ("fp32", 1), ("fp32", 2)]
    for row in rows:
        assert row["status"] == "ok", row
        content = (exported[row["format"]] / "model.tflite").read_bytes()
        assert row["bytes"] == len(content) and row["gzip_bytes"] == len(gzip.compress(content, 9, mtime=0))
        matrix = np.array(row["confusion_matrix"])
        assert matrix.sum() == len(labels) == row["examples"]
        assert np.trace(matrix) / matrix.sum() == pytest.approx(row["accuracy"])
        assert (matrix.sum(axis=1) == np.bincount(labels, minlength=10)).all()  # rows are the true classes
        latency = row["latency"]
        assert latency["runs"] >= 40
        assert (
            latency["min_ms"]
            <= latency["p50_ms"]
            <= latency["p90_ms"]
            <= latency["p99_ms"]
            <= latency["max_ms"]
        )
        assert latency["images_per_second"] == pytest.approx(1000 / latency["mean_ms"])
        assert row["init_ms"] > 0 and row["first_inference_ms"] > 0
        assert row["peak_rss_mb"] >= row["rss_before_model_mb"] > 10
    for row in rows[::2]:
        assert row["accuracy"] == pytest.approx(plain_accuracy(row["path"], images, labels))
    assert rows[0]["input"]["dtype"] == "int8" and rows[2]["input"]["dtype"] == "float32"


def test_a_broken_artifact_becomes_an_error_row(exported, test_npz, tmp_path):
    path, _, _ = test_npz
    content = (exported["int8"] / "model.tflite").read_bytes()
    truncated = tmp_path / "truncated.tflite"
    truncated.write_bytes(content[: len(content) // 3])
    garbage = tmp_path / "garbage.tflite"
    garbage.write_bytes(b"\x00" * 64)
    good = str(exported["fp32"] / "model.tflite")
    rows = runner.run_all([str(truncated), good, str(garbage)], str(path), [1], {**FAST.as_runner_options()})
    assert [r["status"] for r in rows] == ["error", "ok", "error"]
    assert rows[0]["error"] and rows[0]["bytes"] == len(content) // 3
    assert "not a loadable TFLite model" in rows[2]["error"]
    assert rows[1]["accuracy"] > 0.5


def test_runner_without_an_interpreter_names_the_fix(exported, test_npz, monkeypatch):
    monkeypatch.setenv("EDGE_FM_INTERPRETERS", "no_such_interpreter_pkg")
    done = subprocess.run(
        [
            sys.executable,
            runner.__file__,
            str(exported["int8"] / "model.tflite"),
            "--test-data",
            str(test_npz[0]),
        ],
        capture_output=True,
        text=True,
    )
    assert done.returncode == runner.EXIT_MISSING_RUNTIME
    assert "pip install ai-edge-litert numpy" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.slow
def test_local_bench_with_keras_baseline_and_outputs(exported, tmp_path, capsys):
    json_out, csv_out = tmp_path / "bench.json", tmp_path / "bench.csv"
    code = main(
        [
            "bench",
            str(exported["root"]),
            "--sample",
            "--threads",
            "1",
            "--runs",
            "20",
            "--min-seconds",
            "0.05",
            "--baseline",
            str(exported["train"]),
            "--json",
            str(json_out),
            "--csv",
            str(csv_out),
            "--min-accuracy",
            "0.3",
        ]
    )
    output = capsys.readouterr().out
    assert code == 0, output
    written = json.loads(json_out.read_text())
    # The envelope of every result file (called in-process, the command line is not edge-fm's: empty).
    assert written["schema"] == "edge-fm/bench/1" and written["command"] == ""
    assert written["environment"]["cpu"] and "rows" in written["results"]
    result = read_bench(json_out)
    formats = [r["format"] for r in result["rows"]]
    assert formats == ["keras", "fp32", "int8"] and all(r["status"] == "ok" for r in result["rows"])
    keras, fp32, int8 = result["rows"]
    assert result["reference"] == keras["artifact"] and keras["accuracy_delta"] == 0
    # The fp32 artifact computes what the Keras model computes.
    assert abs(fp32["accuracy"] - keras["accuracy"]) <= 0.002
    assert int8["accuracy_delta"] == pytest.approx(int8["accuracy"] - keras["accuracy"])
    assert "NOT the Fashion-MNIST test set" in result["test_set"]["source"]
    with open(csv_out) as handle:
        table = list(csv.DictReader(handle))
    assert [r["format"] for r in table] == formats and float(table[2]["p50_ms"]) > 0
    assert "int8" in output and "Δ acc" in output
    assert best_artifact(result["rows"])["format"] in ("fp32", "int8")


def test_min_accuracy_gate_fails_below_the_bar(exported, capsys):
    code = main(
        [
            "bench",
            str(exported["int8"]),
            "--sample",
            "--runs",
            "5",
            "--min-seconds",
            "0",
            "--min-accuracy",
            "0.999",
        ]
    )
    assert code == 1 and "below --min-accuracy 99.90%" in capsys.readouterr().err


def test_bad_bench_input_gets_one_line(exported, tmp_path, capsys):
    assert main(["bench", str(tmp_path / "nope")]) == 1
    assert "does not exist" in capsys.readouterr().err
    assert main(["bench", str(exported["train"])]) == 1
    assert "--baseline" in capsys.readouterr().err
    assert main(["bench", str(exported["int8"]), "--target", "ftp://pi"]) == 1
    assert "ssh://user@host" in capsys.readouterr().err
    assert main(["bench", str(exported["int8"]), "--threads", "1,x"]) == 1
    assert "positive thread counts" in capsys.readouterr().err
    with pytest.raises(EdgeFMError):
        collect_artifacts([exported["int8"] / "labels.txt"])


_X86_CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 25
model\t\t: 17
model name\t: AMD EPYC
flags\t\t: fpu sse2 avx avx2 avx512f avx512bw avx512_vnni
"""
_PI5_CPUINFO = """processor\t: 0
BogoMIPS\t: 108.00
Features\t: fp asimd evtstrm aes crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp
CPU implementer\t: 0x41
CPU part\t: 0xd0b

processor\t: 1
Features\t: fp asimd sve i8mm

Model\t\t: Raspberry Pi 5 Model B Rev 1.0
"""


def test_cpu_detail_tells_apart_cpus_sold_under_one_name():
    assert runner.cpu_detail(_X86_CPUINFO) == "family 25 model 17; avx2 avx512f avx512_vnni"
    # A Pi lists each core; the first core's part and features stand for all of them.
    assert runner.cpu_detail(_PI5_CPUINFO) == "part 0xd0b; asimd asimddp"
    assert runner.cpu_detail("") == ""


def test_parse_target():
    target = parse_target("ssh://pi@raspberrypi.local:2222")
    assert (target.user, target.host, target.port) == ("pi", "raspberrypi.local", 2222)
    assert parse_target("local").name == "local"
    command = SshTarget("host", ssh_options=("UserKnownHostsFile=/k",)).ssh_command("echo 'a b'")
    assert (
        "BatchMode=yes" in command and "StrictHostKeyChecking=yes" in command and command[-1] == "echo 'a b'"
    )


# ---------------------------------------------------------------- over SSH, against a real sshd


def _target(sshd, port=None, key=None, python=sys.executable):
    return SshTarget(
        host="127.0.0.1",
        user=sshd["user"],
        port=port or sshd["port"],
        identity=str(key or sshd["key"]),
        ssh_options=(f"UserKnownHostsFile={sshd['known_hosts']}", "GlobalKnownHostsFile=/dev/null"),
        python=python,
        connect_timeout=5,
    )


@pytest.mark.slow
def test_ssh_target_measures_on_the_host_and_cleans_up(sshd, exported):
    local = bench([exported["int8"]], "local", FAST, sample=True)
    remote = bench([exported["int8"]], _target(sshd), FAST, sample=True)
    assert remote["target"] == f"ssh://{sshd['user']}@127.0.0.1:{sshd['port']}"
    assert [r["status"] for r in remote["rows"]] == ["ok", "ok"]
    assert (
        remote["rows"][0]["accuracy"] == local["rows"][0]["accuracy"]
    )  # same artifact, same data, same answer
    assert remote["rows"][0]["path"] == str((exported["int8"] / "model.tflite").resolve())
    assert remote["rows"][0]["format"] == "int8"  # model.json travelled with the artifact
    # Nothing is left on the host.
    leftovers = subprocess.run(
        _target(sshd).ssh_command('ls -d "${TMPDIR:-/tmp}"/edge-fm-bench.* 2>/dev/null | wc -l'),
        capture_output=True,
        text=True,
    )
    assert leftovers.stdout.strip() == "0"


def test_ssh_unreachable_port(sshd, exported):
    with pytest.raises(EdgeFMError, match="connection refused"):
        bench([exported["int8"]], _target(sshd, port=sshd["free_port"]), FAST, sample=True)


def test_ssh_refused_key(sshd, exported):
    with pytest.raises(EdgeFMError, match="refused the key.*authorized_keys"):
        bench([exported["int8"]], _target(sshd, key=sshd["stranger_key"]), FAST, sample=True)


def test_ssh_unknown_host_key_is_not_accepted(sshd, exported, tmp_path):
    target = _target(sshd)
    (tmp_path / "empty_known_hosts").write_text("")
    target.ssh_options = (
        f"UserKnownHostsFile={tmp_path / 'empty_known_hosts'}",
        "GlobalKnownHostsFile=/dev/null",
    )
    with pytest.raises(EdgeFMError, match="host key"):
        bench([exported["int8"]], target, FAST, sample=True)


@pytest.mark.slow
def test_ssh_host_without_python_or_interpreter(sshd, exported, capsys):
    with pytest.raises(EdgeFMError, match="not found on 127.0.0.1.*--remote-python"):
        bench([exported["int8"]], _target(sshd, python="/nonexistent/python3"), FAST, sample=True)
    # A host whose Python lacks every interpreter package.
    bare = _target(sshd, python=f"env EDGE_FM_INTERPRETERS=no_such_pkg {sys.executable}")
    with pytest.raises(EdgeFMError, match="pip install ai-edge-litert numpy"):
        bench([exported["int8"]], bare, FAST, sample=True)
    # The CLI turns the same failure into one line.
    code = main(
        [
            "bench",
            str(exported["int8"]),
            "--sample",
            "--target",
            f"ssh://{sshd['user']}@127.0.0.1:{sshd['free_port']}",
            "--ssh-key",
            str(sshd["key"]),
            "--ssh-option",
            f"UserKnownHostsFile={sshd['known_hosts']}",
        ]
    )
    err = capsys.readouterr().err
    assert code == 1 and "connection refused" in err and len(err.strip().splitlines()) == 1


def test_mobile_doc_quotes_the_shipped_mobile_model_json():
    # docs/mobile.md quotes a model.json; every field it shows must be what the shipped file says.
    import re
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    doc = (repo / "docs" / "mobile.md").read_text()
    quoted = json.loads(re.search(r"```json\n(.*?)\n```", doc, re.S).group(1))
    real = json.loads((repo / "models" / quoted["architecture"] / "mobile" / "model.json").read_text())
    for key in ("name", "format", "target"):
        assert quoted[key] == real[key], key
    for section in ("input", "output"):
        assert quoted[section] == {k: real[section][k] for k in quoted[section]}, section
    assert quoted["labels"] == real["labels"] == list(data.CLASS_NAMES)


def test_a_bundle_folder_stands_for_its_own_model_not_the_forms_kept_inside_it(tmp_path):
    from pathlib import Path

    shipped = Path(__file__).resolve().parents[1] / "models" / "edge-cnn-tiny"
    assert collect_artifacts([shipped]) == [(shipped / "model.tflite").resolve()]
    assert collect_artifacts([shipped / "mobile"]) == [(shipped / "mobile" / "model.tflite").resolve()]
    # An Ethos-U form keeps Vela's compiled model beside its int8 one: the folder is the int8 model.
    npu = tmp_path / "npu"
    shutil.copytree(shipped, npu, ignore=shutil.ignore_patterns("mobile", "mcu"))
    shutil.copy(npu / "model.tflite", npu / "model_vela.tflite")
    assert collect_artifacts([tmp_path]) == [(npu / "model.tflite").resolve()]
    assert collect_artifacts([npu / "model_vela.tflite"]) == [npu / "model_vela.tflite"]


def test_a_folder_of_shipped_models_with_other_artifacts_is_refused_in_one_line(tmp_path, capsys):
    import shutil
    from pathlib import Path

    models = Path(__file__).resolve().parents[1] / "models"
    shutil.copytree(models / "edge-cnn-tiny", tmp_path / "edge-cnn-tiny")
    shutil.copytree(models / "mlp" / "mobile", tmp_path / "someone-elses")
    assert main(["bench", str(tmp_path)]) != 0
    error = capsys.readouterr().err
    assert "holds shipped models" in error and "someone-elses" in error and "Traceback" not in error
    assert len(error.strip().splitlines()) == 1, error


def test_every_kind_of_target_is_checked_before_a_pipeline_spends_minutes():
    from edge_fm.bench.targets import Target, parse_target
    from edge_fm.pipeline.sweep_trial import _OneAtATime

    for text in ("local", "tflm", "vela:ethos-u55-128", "ssh://nobody@127.0.0.1:1"):
        target = parse_target(text)
        assert callable(getattr(target, "check", None)), text
    parse_target("local").check()
    pytest.importorskip("tflite_micro")
    parse_target("tflm").check()
    with pytest.raises(EdgeFMError, match="connection refused"):
        _OneAtATime(parse_target("ssh://nobody@127.0.0.1:1"), Path("unused.lock")).check()
    assert "check" in Target.__dict__


def test_timing_a_microsecond_model_stops_at_a_bounded_number_of_runs():
    timings = runner.time_invocations(lambda: None, min_runs=10, min_seconds=3600.0, max_seconds=60.0)
    assert len(timings) == runner.MAX_TIMED_RUNS  # not an hour of runs held in a list
    assert len(runner.time_invocations(lambda: None, 200_000, 0.0, 60.0)) == 200_000  # --runs asked is kept


def test_warming_up_stops_at_max_seconds_whatever_the_count():
    """--warmup 10**20 with --max-seconds 0.05 warms up for about 0.05 s, as --runs is capped by time."""
    import time

    started = time.perf_counter()
    done = runner.warm_up(lambda: time.sleep(0.005), 10**20, 0.05)
    assert 1 <= done < 100 and time.perf_counter() - started < 2
    assert runner.warm_up(lambda: None, 3, 60.0) == 3 and runner.warm_up(lambda: None, 0, 60.0) == 0

"""`edge-fm sweep` on Ray Tune: a small grid on the embedded sample, stopped and resumed, a trial that
fails as a row, the picks, and trials sent to a Ray cluster started as a separate process."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from edge_fm.cli import main
from edge_fm.errors import EdgeFMError
from edge_fm.pipeline.ray_local import ray_processes, ray_temp_dir
from edge_fm.pipeline.sweep import require_ray
from edge_fm.pipeline.sweep_spec import Constraints, SweepOptions, TrialConfig, build_spec, parse_settings
from edge_fm.pipeline.sweep_summary import picks

pytest.importorskip("ray.tune", reason="the cluster extra is not installed: pip install 'edge-fm[cluster]'")

BIN = Path(sys.executable).parent
# One epoch of tiny-cnn on the sample, int8 only: a trial takes well under a minute.
SMALL = ["--sample", "--arch", "tiny-cnn", "--set", "epochs=1", "--format", "int8", "--min-accuracy", "0.5"]


def _sweep(args: list[str], env: dict | None = None, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", **(env or {})}
    return subprocess.Popen(
        [str(BIN / "edge-fm"), "sweep", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        **kwargs,
    )


def _finish(process: subprocess.Popen, timeout: float = 600) -> str:
    out, _ = process.communicate(timeout=timeout)
    assert process.returncode == 0, out
    return out


def test_spec_from_a_file_and_options(tmp_path):
    spec_file = tmp_path / "sweep.yaml"
    spec_file.write_text(
        "arch: [tiny-cnn, cnn-2conv]\nset: {epochs: [1, 2], learning_rate: 0.003}\nprune: [0, 0.5]\n"
        "qat: [false, true]\nsample: true\nconstraints: {max_bytes: 50000}\n"
    )
    spec = build_spec(SweepOptions(spec_file=spec_file, settings=["epochs=3"], qat="on", min_accuracy=0.8))
    assert spec.archs == ("tiny-cnn", "cnn-2conv") and spec.settings == {
        "epochs": (3,),
        "learning_rate": (0.003,),
    }
    assert spec.prune == (0.0, 0.5) and spec.qat == (True,) and spec.sample
    assert spec.constraints == Constraints(max_bytes=50000, min_accuracy=0.8)
    keys = [t.key for t in spec.trial_configs()]
    assert len(keys) == len(set(keys)) == 4 and keys[0] == "tiny-cnn_epochs=3_learning_rate=0.003_prune=0_qat"
    assert TrialConfig.from_dict(spec.trial_configs()[1].as_dict()) == spec.trial_configs()[1]
    assert parse_settings(["epochs=1,2", "augment=crop,flip|crop", "epochs=4"]) == {
        "epochs": (1, 2, 4),
        "augment": (("crop", "flip"), ("crop",)),
    }
    refused = (
        (dict(settings=["epoch=1"]), "unknown setting 'epoch'. Did you mean 'epochs'"),
        (dict(settings=["data=full"]), "--sample"),
        (dict(qat="maybe"), "unknown --qat value"),
        (dict(search="random"), "unknown search 'random'"),
        (dict(archs="tiny-cn"), "Did you mean 'tiny-cnn'"),
    )
    for options, message in refused:
        with pytest.raises(EdgeFMError, match=message):
            build_spec(SweepOptions(**{"archs": "tiny-cnn", **options}))
    (tmp_path / "bad.yaml").write_text("arch: tiny-cnn\nprunning: [0.5]\n")
    with pytest.raises(EdgeFMError, match="unknown sweep spec key 'prunning'. Did you mean 'prune'"):
        build_spec(SweepOptions(spec_file=tmp_path / "bad.yaml"))


def test_picks_answer_each_constraint():
    def row(name, accuracy, size, p50):
        return {
            "model": name,
            "trial": name,
            "format": "int8",
            "status": "ok",
            "accuracy": accuracy,
            "bytes": size,
            "latency": {"p50_ms": p50},
        }

    rows = [
        row("big", 0.95, 300_000, 2.0),
        row("mid", 0.94, 90_000, 0.5),
        row("fast", 0.945, 120_000, 0.3),
        row("tiny", 0.90, 20_000, 0.1),
        {"model": "broken", "status": "error", "error": "x"},
    ]
    answers = {
        p["question"]: p["model"]
        for p in picks(rows, Constraints(max_bytes=100_000, min_accuracy=0.94, max_p50_ms=1))
    }
    assert answers == {
        "most accurate at most 100 KB": "mid",
        "fastest at 94% or better": "fast",
        "smallest at 94% or better": "mid",
        "most accurate at p50 1 ms or faster": "fast",
    }
    assert picks(rows, Constraints(min_accuracy=0.99))[1] == {
        "question": "fastest at 99% or better",
        "model": None,
        "artifact": None,
    }


def test_without_ray_the_error_names_the_install(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(EdgeFMError, match=r"pip install 'edge-fm\[cluster\]'"):
        require_ray()
    assert main(["sweep", *SMALL, "--runs-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "edge-fm[cluster]" in err, err
    assert not list(tmp_path.iterdir())  # refused before any folder was made


@pytest.mark.slow
def test_a_stopped_sweep_resumes_without_redoing_finished_trials(tmp_path):
    # Two trials one after the other: prune 0 trains and exports; prune 1.5 is impossible (an error row).
    process = _sweep(
        [*SMALL, "--prune", "0,1.5", "--concurrency", "1", "--runs-dir", str(tmp_path)],
        start_new_session=True,
    )
    sweep_dir = tmp_path / "sweep-1"
    first = sweep_dir / "trials" / "tiny-cnn_epochs=1_prune=0_noqat"
    deadline = time.time() + 540
    while not (first / "trial.json").is_file():
        assert process.poll() is None, process.communicate()[0]
        assert time.time() < deadline, "the first trial did not finish in time"
        time.sleep(0.2)
    os.killpg(process.pid, signal.SIGKILL)  # the whole sweep at once, as a crash or a lost terminal would
    process.communicate()
    assert not (sweep_dir / "sweep.json").exists()
    kept = (first / "trial.json").stat().st_mtime_ns
    second_done = (sweep_dir / "trials" / "tiny-cnn_epochs=1_prune=1.5_noqat" / "trial.json").is_file()

    out = _finish(_sweep(["--resume", str(sweep_dir)]))
    assert "1 trial(s) finished before, 1 to run" in out or second_done, out
    assert (first / "trial.json").stat().st_mtime_ns == kept  # not redone
    assert [p.name for p in first.iterdir() if p.is_dir()] == ["tiny-cnn-pipeline-1"]
    if not second_done:  # the resumed attempt ran exactly the unfinished trial
        attempt = sweep_dir / "tune" / "attempt-2"
        assert len([p for p in attempt.iterdir() if p.is_dir() and p.name.startswith("tiny-cnn")]) == 1

    summary = json.loads((sweep_dir / "sweep.json").read_text())
    ok = [r for r in summary["rows"] if r["status"] == "ok"]
    errors = [r for r in summary["rows"] if r["status"] != "ok"]
    assert [(r["trial"], r["format"]) for r in ok] == [("tiny-cnn_epochs=1_prune=0_noqat", "int8")]
    assert 0.4 < ok[0]["accuracy"] <= 1 and ok[0]["bytes"] == Path(ok[0]["path"]).stat().st_size
    assert ok[0]["latency"]["p50_ms"] > 0 and ok[0]["front"] is True
    assert [e["trial"] for e in errors] == ["tiny-cnn_epochs=1_prune=1.5_noqat"]
    assert "--prune 1.5" in errors[0]["error"] and "(0, 1)" in errors[0]["error"]
    assert summary["front"] == ["tiny-cnn_epochs=1_prune=0_noqat/int8"]
    answers = {p["question"]: p["model"] for p in summary["picks"]}
    assert answers == {
        "most accurate at most 100 KB": ok[0]["model"],
        "fastest at 50% or better": ok[0]["model"],
        "smallest at 50% or better": ok[0]["model"],
    }
    trial = summary["trials"]["tiny-cnn_epochs=1_prune=0_noqat"]
    # One trial at a time on this machine's cores: each trial has every core, TensorFlow told before it started.
    cores = os.cpu_count()
    assert trial["threads"] == cores
    assert trial["tensorflow_threads"] == {
        "intra_op": cores,
        "inter_op": 1,
        "set_before_tensorflow_started": True,
    }
    lines = (sweep_dir / "sweep.csv").read_text().splitlines()
    assert lines[0].startswith("trial,arch,settings,prune,qat,format") and len(lines) == 3
    assert (sweep_dir / "front.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "most accurate at most 100 KB: tiny-cnn_epochs=1_prune=0_noqat/int8" in " ".join(out.split())

    # --retry-errors runs the failed trial again (it fails again), and only it.
    failed = sweep_dir / "trials" / "tiny-cnn_epochs=1_prune=1.5_noqat" / "trial.json"
    before = failed.stat().st_mtime_ns
    out = _finish(_sweep(["--resume", str(sweep_dir), "--retry-errors"]))
    assert "1 trial(s) finished before, 1 to run" in out, out
    assert failed.stat().st_mtime_ns != before and json.loads(failed.read_text())["status"] == "error"
    assert (first / "trial.json").stat().st_mtime_ns == kept
    assert len(json.loads((sweep_dir / "sweep.json").read_text())["rows"]) == 2


def _wait_for_a_running_trial(process: subprocess.Popen, sweep_dir: Path) -> Path:
    """Waits until the sweep's Ray runs a trial (it writes its claim); returns Ray's folder."""
    temp_dir = ray_temp_dir(sweep_dir)
    started = time.time() - 1
    deadline = time.time() + 300
    while not [c for c in (sweep_dir / "trials").glob("*/.claim") if c.stat().st_mtime > started]:
        assert process.poll() is None, process.communicate()[0]
        assert time.time() < deadline, "no trial started in time"
        time.sleep(0.2)
    assert temp_dir.is_dir() and ray_processes(temp_dir)
    return temp_dir


def _gone(temp_dir: Path, timeout: float = 20) -> list[int]:
    """The processes still holding ``temp_dir`` once ``timeout`` has passed (none, when all is well)."""
    deadline = time.time() + timeout
    while ray_processes(temp_dir) and time.time() < deadline:
        time.sleep(0.5)
    return ray_processes(temp_dir)


@pytest.mark.slow
def test_an_interrupted_sweep_stops_its_ray_and_a_killed_one_is_cleared_on_resume(tmp_path):
    sweep_dir = tmp_path / "sweep-1"
    # Ctrl-C (SIGINT to the sweep alone): the sweep stops its Ray, workers and agents, and removes its folder.
    process = _sweep([*SMALL, "--runs-dir", str(tmp_path)], start_new_session=True)
    temp_dir = _wait_for_a_running_trial(process, sweep_dir)
    process.send_signal(signal.SIGINT)
    out = process.communicate(timeout=120)[0]
    assert process.returncode == 130 and "interrupted" in out, out
    assert _gone(temp_dir, timeout=0) == [] and not temp_dir.exists()

    # SIGKILL: nothing can run in the sweep, and Ray's agents outlive it with their folder...
    process = _sweep(["--resume", str(sweep_dir)], start_new_session=True)
    try:
        _wait_for_a_running_trial(process, sweep_dir)
        process.kill()
        process.communicate()
        time.sleep(3)  # the raylet and the workers die with the sweep; the agents stay
        left = ray_processes(temp_dir)
        assert temp_dir.is_dir()
        # ...until the sweep resumes: it stops them, removes the folder, runs the trial and leaves nothing.
        out = _finish(_sweep(["--resume", str(sweep_dir)]))
        assert f"cleared what a killed run of this sweep left: {len(left)} Ray process(es)" in " ".join(
            out.split()
        ), out
        assert _gone(temp_dir, timeout=0) == [] and not temp_dir.exists()
        summary = json.loads((sweep_dir / "sweep.json").read_text())
        assert summary["complete"] and [r["status"] for r in summary["rows"]] == ["ok"]
    finally:  # a failed assertion must not leave the test's own Ray running
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        for pid in ray_processes(temp_dir):
            os.kill(pid, signal.SIGKILL)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def ray_head(tmp_path):
    """A Ray head started as a separate process (as `ray start --head` on a cluster's first machine).

    ``--block`` keeps it in the foreground, so the test stops the head it started, and only it
    (`ray stop` would end every Ray process on the machine).
    """
    port = _free_port()
    # Token authentication on, as a cluster should be; the token travels in the environment.
    auth = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": uuid.uuid4().hex}
    log = open(tmp_path / "ray-head.log", "w")
    head = subprocess.Popen(
        [
            str(BIN / "ray"),
            "start",
            "--head",
            f"--port={port}",
            "--num-cpus=2",
            "--include-dashboard=false",
            "--disable-usage-stats",
            "--node-ip-address=127.0.0.1",
            "--block",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        env={**os.environ, **auth},
    )
    try:
        deadline = time.time() + 120
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                assert head.poll() is None and time.time() < deadline, (tmp_path / "ray-head.log").read_text()
                time.sleep(0.5)
        yield f"127.0.0.1:{port}", auth
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        try:  # what the head left behind (its client server, say): the same process group
            os.killpg(head.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        head.wait(timeout=20)
        log.close()
        # A head killed before its own clean-up leaves its address for the next `ray.init()` to find.
        current = Path(tempfile.gettempdir()) / "ray" / "ray_current_cluster"
        if current.is_file() and current.read_text().strip().endswith(f":{port}"):
            current.unlink()


@pytest.mark.slow
def test_an_optuna_search_on_a_running_ray_cluster(ray_head, tmp_path):
    ray_head, auth = ray_head
    without_token = _sweep(
        [*SMALL, "--address", ray_head, "--runs-dir", str(tmp_path / "refused")],
        env={"RAY_AUTH_MODE": "", "RAY_AUTH_TOKEN": ""},
    )
    out = without_token.communicate(timeout=300)[0]
    assert without_token.returncode == 1 and "RAY_AUTH_MODE=token" in out.splitlines()[-1], out
    out = _finish(
        _sweep(
            [
                "--sample",
                "--arch",
                "tiny-cnn",
                "--set",
                "epochs=1,2",
                "--format",
                "int8",
                "--search",
                "optuna",
                "--trials",
                "2",
                "--address",
                ray_head,
                "--runs-dir",
                str(tmp_path),
            ],
            env=auth,
        )
    )
    sweep_dir = tmp_path / "sweep-1"
    summary = json.loads((sweep_dir / "sweep.json").read_text())
    ray_record = summary["attempts"][-1]["ray"]
    # The trials ran on the head started above (its GCS port), not on a Ray started by the sweep.
    assert ray_record["address"] == ray_head and ray_record["gcs_address"].endswith(
        ray_head[ray_head.index(":") :]
    )
    assert ray_record["cpus"] == 2 and ray_record["concurrency"] == 2 and ray_record["threads_per_trial"] == 1
    assert f"cluster at {ray_head}, 2 CPU(s)" in out
    ok = [r for r in summary["rows"] if r["status"] == "ok"]
    assert ok and all(r["format"] == "int8" and r["settings"]["epochs"] in (1, 2) for r in ok)
    import optuna

    from edge_fm.pipeline.sweep_spec import OPTUNA_STUDY
    from edge_fm.pipeline.sweep_summary import optuna_storage

    study = optuna.load_study(study_name=OPTUNA_STUDY, storage=optuna_storage(sweep_dir))
    completed = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(completed) == 2 and len(study.directions) == 3  # accuracy, bytes, p50: three objectives
    by_epochs = {row["settings"]["epochs"]: row for row in ok}
    for trial in completed:  # what Optuna was told is what the trial measured
        row = by_epochs[trial.params["set/epochs"]]
        assert trial.values == [row["accuracy"], row["bytes"], row["latency"]["p50_ms"]]


def test_help_shows_the_spec_file_and_examples(capsys):
    assert main(["sweep", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert (
        "Example: edge-fm sweep --sample --arch tiny-cnn,cnn-2conv --set epochs=1,2 --prune 0,0.5 --qat both"
        in text
    )
    assert (
        "arch: [tiny-cnn, cnn-2conv], set: {epochs: [1, 2]}" in text
        and "pip install 'edge-fm[cluster]'" in text
    )


def test_every_sweep_option_reaches_the_spec_and_ray(monkeypatch, tmp_path):
    """The command's option groups map each option onto its spec field (no Ray run: it is stubbed)."""
    import edge_fm

    seen = {}

    def fake_run(spec, runs_dir, ray_options, data_dir, log):
        seen.update(spec=spec, ray=ray_options)
        raise EdgeFMError("stubbed")

    monkeypatch.setattr(edge_fm, "run_sweep", fake_run)
    key = tmp_path / "key"
    code = main(
        [
            *("sweep", "--sample", "--arch", "tiny-cnn,mlp", "--epochs", "3", "--prune", "0,0.5"),
            *("--max-bytes", "5000", "--min-accuracy", "0.7", "--max-p50-ms", "2.5", "--bench-threads", "2"),
            *("--bench-target", "ssh://pi@board", "--bench-ssh-key", str(key), "--bench-ssh-option", "A=b"),
            *("--bench-python", "python3.11", "--threads-per-trial", "1", "--concurrency", "2"),
        ]
    )
    assert code == 1
    spec, ray = seen["spec"], seen["ray"]
    assert spec.archs == ("tiny-cnn", "mlp") and spec.prune == (0.0, 0.5) and spec.fine_tune_epochs == 3
    assert (spec.constraints.max_bytes, spec.constraints.min_accuracy, spec.constraints.max_p50_ms) == (
        5000,
        0.7,
        2.5,
    )
    assert (spec.bench_threads, spec.bench_target, spec.bench_ssh_key) == (2, "ssh://pi@board", str(key))
    assert (spec.bench_ssh_options, spec.bench_python, spec.sample) == (("A=b",), "python3.11", True)
    assert (ray.concurrency, ray.threads) == (2, 1)


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["--prune", "1.5"], "--prune 1.5: give the target sparsity as a fraction in (0, 1)"),
        (["--prune", "nan"], "--prune nan: give the target sparsity"),
        (["--set", "epochs=0"], "epochs must be a number >= 1, got 0"),
        (["--max-p50-ms", "nan"], "--max-p50-ms nan: give a positive latency"),
    ],
)
def test_a_trial_that_cannot_run_is_one_line_before_any_trial(tmp_path, capsys, argv, expected):
    """Every trial's configuration is built before Ray starts: a sweep in which no trial can run is one
    line, not a folder of failed trials (one with some trials that can run keeps the others as error rows:
    see the resume test)."""
    code = main(["sweep", "--sample", "--arch", "tiny-cnn", *argv, "--runs-dir", str(tmp_path / "runs")])
    err = capsys.readouterr().err
    assert code == 1 and expected in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_a_resumed_sweep_runs_where_and_as_many_at_once_as_it_started_unless_told(tmp_path, monkeypatch):
    """--concurrency and --threads-per-trial (and --address) are recorded: a resume without them runs as
    the sweep was started (one trial at a time stays one at a time); one given now replaces its own."""
    from edge_fm.pipeline import sweep

    ran = []
    monkeypatch.setattr(sweep, "check_trials", lambda spec: None)
    monkeypatch.setattr(
        sweep, "_sweep", lambda folder, spec, ray_options, data_dir, log: ran.append(ray_options)
    )
    spec = build_spec(SweepOptions(archs="tiny-cnn", sample=True))
    sweep.run_sweep(spec, tmp_path, sweep.RayOptions(concurrency=1, threads=2))
    sweep.resume_sweep(tmp_path / "sweep-1")
    assert (ran[-1].concurrency, ran[-1].threads, ran[-1].address) == (1, 2, None)
    sweep.resume_sweep(tmp_path / "sweep-1", sweep.RayOptions(concurrency=2, retry_errors=True))
    assert (ran[-1].concurrency, ran[-1].threads, ran[-1].retry_errors) == (2, 2, True)

"""The one-command pipeline on the embedded sample: every stage linked from one run directory."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edge_fm.cli import main


@pytest.mark.slow
def test_pipeline_on_the_sample_links_every_stage(tmp_path, capsys, monkeypatch):
    # The default, relative runs directory, as the README's quickstart uses it.
    monkeypatch.chdir(tmp_path)
    code = main(
        [
            "pipeline",
            "tiny-cnn",
            "--sample",
            "--prune",
            "0.5",
            "--qat",
            "--epochs",
            "1",
            "--set",
            "epochs=3",
            "--runs",
            "10",
            "--min-seconds",
            "0",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    top = tmp_path / "runs" / "tiny-cnn-pipeline-1"
    record = json.loads((top / "pipeline.json").read_text())
    assert record["status"] == "complete" and record["config"]["prune"] == 0.5
    stages = record["stages"]
    assert set(stages) == {"train", "prune", "qat", "exports"} and set(stages["exports"]) == {
        "fp32",
        "int8",
        "qat-int8",
    }
    for rel in [stages["train"], stages["prune"], stages["qat"], *stages["exports"].values()]:
        assert (top / rel / "manifest.json").exists(), rel
    # Lineage: the QAT step is pruning-preserving and descends from the pruned run.
    qat_manifest = json.loads((top / stages["qat"] / "manifest.json").read_text())
    assert stages["qat"].startswith("tiny-cnn-pqat") and qat_manifest["parent"].endswith(stages["prune"])
    from edge_fm.bench.measurements import read_bench

    bench = read_bench(top / "bench.json")  # the result envelope, unwrapped
    assert [r["format"] for r in bench["rows"]] == ["keras", "fp32", "int8", "qat-int8"]
    assert all(r["status"] == "ok" and 0.3 < r["accuracy"] <= 1 for r in bench["rows"])
    assert "NOT the Fashion-MNIST test set" in bench["test_set"]["source"]
    best = record["best"]
    assert (top / best["path"] / "model.tflite").exists()
    assert best["accuracy"] >= max(r["accuracy"] for r in bench["rows"][1:]) - 0.005
    assert "best artifact" in out and "runs/tiny-cnn-pipeline-1" in out
    manifest = json.loads((top / "manifest.json").read_text())
    assert (
        "bench.csv" in manifest["files"] and f"{stages['exports']['int8']}/model.tflite" in manifest["files"]
    )
    # It ends with its report, one self-contained page, and says where it is.
    report = (top / "report.html").read_text()
    assert "report.html" in manifest["files"] and f"{top.relative_to(tmp_path)}/report.html" in out
    assert "data:image/png;base64," in report and "http://" not in report and "https://" not in report


def test_pipeline_rejects_inconsistent_options(tmp_path, capsys):
    runs = tmp_path / "runs"  # tmp_path also holds the tests' own cache folder
    assert main(["pipeline", "tiny-cnn", "--sample", "-f", "qat-int8", "--runs-dir", str(runs)]) == 1
    assert "needs a QAT step: add --qat" in capsys.readouterr().err
    assert main(["pipeline", "tiny-cnn", "--sample", "--prune", "1.5", "--runs-dir", str(runs)]) == 1
    assert "--prune 1.5" in capsys.readouterr().err
    assert main(["pipeline", "nope-net", "--sample", "--runs-dir", str(runs)]) == 1
    assert "unknown architecture" in capsys.readouterr().err.lower()
    assert not runs.exists() or not list(runs.iterdir())  # nothing was started


def test_a_pipeline_runs_the_stages_its_config_wants_in_their_order():
    from edge_fm.pipeline.pipeline import PipelineConfig
    from edge_fm.pipeline.stages import STAGES

    def wanted(config):
        return [stage.name for stage in STAGES if stage.wanted(config)]

    assert wanted(PipelineConfig("tiny-cnn", sample=True)) == ["train", "export", "bench", "record", "report"]
    assert wanted(PipelineConfig("tiny-cnn", prune=0.5, qat=True)) == [
        "train",
        "prune",
        "qat",
        "export",
        "bench",
        "record",
        "report",
    ]


def test_a_pipeline_reads_its_data_from_one_folder_resolved_before_any_stage(tmp_path, monkeypatch):
    """Every library call the stages make gets the one folder $EDGE_FM_DATA names (the calls themselves
    stand in: what is checked is what the stages hand them)."""
    import edge_fm.export.exporter
    import edge_fm.optimize.compress
    import edge_fm.show.html_report
    import edge_fm.train.trainer
    from edge_fm.pipeline import pipeline, stages

    seen = []

    def made(name, runs_dir, data_dir):
        seen.append((name, data_dir))
        (Path(runs_dir) / name).mkdir()
        return Path(runs_dir) / name

    def train(config, data_dir, runs_dir, reporter=None):
        return made("train", runs_dir, data_dir)

    def optimize(config, data_dir, runs_dir, reporter=None):
        return made(config.method, runs_dir, data_dir)

    def export(source, name, runs_dir, data_dir):
        return made(f"export-{name}", runs_dir, data_dir)

    def bench(bundles, target, options, baseline, data_dir, sample):
        seen.append(("bench", data_dir))
        return {"rows": [], "test_set": {"source": "stand-in"}}

    def build_report(top, options):
        seen.append(("report", options.data_dir))
        return top / "report.html"

    monkeypatch.setattr(edge_fm.train.trainer, "train", train)
    monkeypatch.setattr(edge_fm.optimize.compress, "optimize", optimize)
    monkeypatch.setattr(edge_fm.export.exporter, "export", export)
    monkeypatch.setattr(stages, "bench", bench)
    monkeypatch.setattr(stages, "write_results", lambda *args: None)
    monkeypatch.setattr(edge_fm.show.html_report, "build_report", build_report)
    monkeypatch.setenv("EDGE_FM_DATA", str(tmp_path / "fmnist"))
    config = pipeline.PipelineConfig("tiny-cnn", prune=0.5, qat=True, formats=("int8", "qat-int8"))
    pipeline.run_pipeline(config, runs_dir=tmp_path / "runs")
    assert [name for name, _ in seen] == [
        "train",
        "prune",
        "qat",
        "export-int8",
        "export-qat-int8",
        "bench",
        "report",
    ]
    assert {data_dir for _, data_dir in seen} == {tmp_path / "fmnist"}


@pytest.mark.slow
def test_a_pipeline_stopped_midway_says_so_and_resumes_in_its_folder(tmp_path, interrupt_after):
    from edge_fm.pipeline.pipeline import PipelineConfig, run_pipeline

    config = PipelineConfig("tiny-cnn", "quick", True, train_overrides={"epochs": 2})
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(config, runs_dir=tmp_path, reporter=interrupt_after(1))
    top = tmp_path / "tiny-cnn-pipeline-1"
    record = json.loads((top / "pipeline.json").read_text())
    assert (record["status"], record["error"]) == ("interrupted", "KeyboardInterrupt")
    assert record["stages"] == {}  # stopped in training: no stage finished

    # --resume goes on in the same folder: the training run resumes from its epoch, the rest follows.
    assert main(["pipeline", "--resume", str(top)]) == 0
    record = json.loads((top / "pipeline.json").read_text())
    assert record["status"] == "complete" and "error" not in record
    assert record["stages"]["train"] == "tiny-cnn-train-1" and not (top / "tiny-cnn-train-2").exists()
    history = json.loads((top / "tiny-cnn-train-1" / "history.json").read_text())
    assert [entry["epoch"] for entry in history] == [1, 2]
    assert set(record["stages"]["exports"]) == {"fp32", "int8"} and record["best"] is not None
    assert main(["pipeline", "--resume", str(top)]) == 1  # a finished pipeline is not run again


@pytest.mark.slow
def test_a_pipeline_killed_after_its_exports_resumes_without_exporting_again(tmp_path, monkeypatch):
    """pipeline.json is written as each output is made: a pipeline killed outright (no handler runs,
    as with SIGKILL; SystemExit stands in for it here) resumes with its training and its exports."""
    from edge_fm.pipeline import stages
    from edge_fm.pipeline.pipeline import PipelineConfig, resume_pipeline, run_pipeline

    def killed(*args, **kwargs):
        raise SystemExit(137)

    monkeypatch.setattr(stages, "bench", killed)
    config = PipelineConfig("tiny-cnn", "quick", True, formats=("fp32",), train_overrides={"epochs": 1})
    with pytest.raises(SystemExit):
        run_pipeline(config, runs_dir=tmp_path)
    top = tmp_path / "tiny-cnn-pipeline-1"
    on_disk = json.loads((top / "pipeline.json").read_text())
    assert on_disk["stages"]["train"] == "tiny-cnn-train-1" and set(on_disk["stages"]["exports"]) == {"fp32"}

    monkeypatch.undo()
    resume_pipeline(top)
    assert sorted(p.name for p in top.glob("tiny-cnn-fp32-*")) == [
        Path(on_disk["stages"]["exports"]["fp32"]).name
    ]


def test_a_resumed_pipeline_benchmarks_on_the_target_it_was_started_for(tmp_path, capsys):
    """--resume without --target measures where the pipeline was meant to: a stopped pipeline for an SSH
    device is checked against that device (here a closed port) before any work, not benched locally."""
    from edge_fm.pipeline.pipeline import PipelineConfig, recorded_bench

    top = tmp_path / "tiny-cnn-pipeline-1"
    top.mkdir()
    config = PipelineConfig("tiny-cnn", "quick", True, train_overrides={"epochs": 1})
    import dataclasses

    record = {"config": dataclasses.asdict(config), "target": "ssh://nobody@127.0.0.1:1", "stages": {}}
    (top / "pipeline.json").write_text(json.dumps({**record, "status": "interrupted"}))
    assert recorded_bench(top)[:2] == ("ssh://nobody@127.0.0.1:1", {})

    assert main(["pipeline", "--resume", str(top)]) == 1
    err = capsys.readouterr().err
    assert "127.0.0.1" in err and "Traceback" not in err
    assert not (top / "tiny-cnn-train-1").exists()  # refused before training


def test_a_resumed_pipeline_keeps_its_ssh_and_timing_options(tmp_path, monkeypatch, capsys):
    """--resume without options benchmarks as the pipeline was started: the same device reached with
    the same key (recorded absolute, so a resume from another folder finds it), -o options and remote
    Python, and the same timing; options given at the resume win."""
    import dataclasses

    from edge_fm.bench.options import BenchOptions
    from edge_fm.bench.targets import SshTarget
    from edge_fm.errors import EdgeFMError
    from edge_fm.pipeline import pipeline

    started = []

    def stages_stop(run):
        started.append(run)
        raise EdgeFMError("stopped here")

    monkeypatch.setattr(SshTarget, "check", lambda self: None)  # no device: only what the run would use
    monkeypatch.setattr(pipeline, "_run_stages", stages_stop)
    monkeypatch.chdir(tmp_path)
    target = SshTarget("127.0.0.1", "pi", 2222, "key", ("UserKnownHostsFile=kh",), "python3.11", 10)
    timing = BenchOptions(threads=(1, 2), runs=7, min_seconds=0.1, max_seconds=3.0, warmup=2)
    config = pipeline.PipelineConfig("tiny-cnn", "quick", True, train_overrides={"epochs": 1})
    with pytest.raises(EdgeFMError):
        pipeline.run_pipeline(config, target, timing, runs_dir=tmp_path / "runs")
    top = tmp_path / "runs" / "tiny-cnn-pipeline-1"

    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert main(["pipeline", "--resume", str(top)]) == 1
    assert "stopped here" in capsys.readouterr().err
    recorded = dataclasses.replace(
        target, identity=str(tmp_path / "key"), ssh_options=(f"UserKnownHostsFile={tmp_path / 'kh'}",)
    )
    assert started[-1].target == recorded
    assert started[-1].bench_options == timing

    # An option given now replaces its own recorded value only; the others stay as recorded.
    assert main(["pipeline", "--resume", str(top), "--runs", "3", "--ssh-key", "other"]) == 1
    assert started[-1].bench_options == dataclasses.replace(timing, runs=3)
    assert started[-1].target == dataclasses.replace(recorded, identity="other")


def test_the_pipelines_timing_options_default_to_its_shorter_measurement():
    from edge_fm.cli.options import DEFAULT_MEASUREMENT, Measurement
    from edge_fm.cli.pipeline_commands import PIPELINE_MEASUREMENT
    from edge_fm.pipeline.pipeline import PIPELINE_BENCH
    from edge_fm.runner import DEFAULTS

    assert PIPELINE_MEASUREMENT.bench_options() == PIPELINE_BENCH
    assert (
        DEFAULT_MEASUREMENT.runs == DEFAULTS.runs and DEFAULT_MEASUREMENT.min_seconds == DEFAULTS.min_seconds
    )
    timing = Measurement(threads="1,2", runs=7, min_seconds=0.1, max_seconds=3, warmup=2).bench_options()
    assert (timing.threads, timing.runs, timing.min_seconds, timing.max_seconds, timing.warmup) == (
        (1, 2),
        7,
        0.1,
        3,
        2,
    )


def test_the_stopped_pipeline_a_ctrl_c_names_is_the_one_started_last(tmp_path):
    from edge_fm.pipeline.pipeline import stopped_pipeline

    assert stopped_pipeline(tmp_path, "tiny-cnn") is None
    for number, status in ((1, "interrupted"), (2, "complete"), (10, "interrupted")):
        (tmp_path / f"tiny-cnn-pipeline-{number}").mkdir()
        (tmp_path / f"tiny-cnn-pipeline-{number}" / "pipeline.json").write_text(
            json.dumps({"status": status})
        )
    assert (
        stopped_pipeline(tmp_path, "tiny-cnn") == tmp_path / "tiny-cnn-pipeline-10"
    )  # 10 after 2, not "1" + "0"
    (tmp_path / "tiny-cnn-pipeline-10" / "pipeline.json").write_text(json.dumps({"status": "complete"}))
    assert stopped_pipeline(tmp_path, "tiny-cnn") is None

"""The one-command pipeline on the embedded sample: every stage linked from one run directory."""

from __future__ import annotations

import json

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
    from edge_fm.pipeline import pipeline, stages

    seen = []

    def record_stage(run):  # stands in for every stage: what each would read its data from
        seen.append(run.data_dir)

    monkeypatch.setattr(
        pipeline,
        "STAGES",
        tuple(stages.Stage(stage.name, record_stage, stage.wanted) for stage in stages.STAGES),
    )
    monkeypatch.setenv("EDGE_FM_DATA", str(tmp_path / "fmnist"))
    pipeline.run_pipeline(pipeline.PipelineConfig("tiny-cnn"), runs_dir=tmp_path / "runs")
    assert seen == [tmp_path / "fmnist"] * 5

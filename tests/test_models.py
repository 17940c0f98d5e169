"""The shipped models: each bundle is what its model.json, model card and the results table say.

The accuracy is recomputed here with a plain ai_edge_litert interpreter, one image at a time, on the
full test split, independently of the benchmark runner that wrote the committed figures.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest

from edge_fm import data
from edge_fm.data import CLASS_NAMES
from edge_fm.report import cpu_text

REPO = Path(__file__).resolve().parents[1]
MODELS = sorted(p.parent for p in (REPO / "models").glob("*/model.tflite"))
# Folders of models whose artifact is too large to ship: card, provenance and table row, no .tflite.
UNSHIPPED = sorted(p.parent for p in (REPO / "models").glob("*/provenance.json") if not (p.parent / "model.tflite").exists())
RESULTS = REPO / "benchmarks" / "results"
BENCH = RESULTS / "models_bench.json"


def _bench_rows() -> dict[str, dict]:
    return {row["model"]: row for row in json.loads(BENCH.read_text())["rows"]}


def test_models_folder_is_small_enough_to_ship():
    total = sum(f.stat().st_size for f in (REPO / "models").rglob("*") if f.is_file())
    assert MODELS and total < 20_000_000, total


def test_every_shipped_model_is_benchmarked_and_has_a_card():
    rows = _bench_rows()
    assert sorted(rows) == sorted(m.name for m in MODELS + UNSHIPPED), "run `python benchmarks/bench_models.py`"
    for model in MODELS:
        row = rows[model.name]
        card = (model / "MODEL_CARD.md").read_text()
        assert row["status"] == "ok", row
        assert f"{row['accuracy'] * 100:.2f}%" in card, model.name
        assert f"{row['bytes']:,} bytes" in card, model.name


@pytest.mark.parametrize("model", MODELS, ids=lambda p: p.name)
def test_bundle_describes_its_own_artifact(model):
    description = json.loads((model / "model.json").read_text())
    tflite = (model / "model.tflite").read_bytes()
    assert description["artifact"]["sha256"] == hashlib.sha256(tflite).hexdigest()
    assert description["artifact"]["bytes"] == len(tflite)
    assert (model / "labels.txt").read_text().split("\n")[:10] == list(CLASS_NAMES)
    assert description["export"]["integer_only"] is True


@pytest.mark.parametrize("model", MODELS, ids=lambda p: p.name)
def test_plain_interpreter_reproduces_the_stated_test_accuracy(model, data_dir, plain_accuracy):
    images, labels = data.load_split("test", data_dir)
    accuracy = plain_accuracy(model / "model.tflite", images, labels)
    # Integer kernels are exact, so batch-1 and the runner's batched pass agree to the image.
    assert accuracy == pytest.approx(_bench_rows()[model.name]["accuracy"], abs=1e-4)


@pytest.mark.parametrize("model", MODELS + UNSHIPPED, ids=lambda p: p.name)
def test_the_shipped_format_won_on_the_whole_validation_split(model):
    provenance = json.loads((model / "provenance.json").read_text())
    scores = provenance["validation_accuracy"]
    assert provenance["chosen_format"] == max(scores, key=scores.get), scores
    # The score the choice used covers every validation image of the training run, not a subset.
    parity = json.loads((model / "model.json").read_text())["export"]["parity"]
    validation_images = provenance["train_metrics"]["val"]["examples"]
    assert parity["images"] == validation_images >= 5000
    assert parity["tflite_accuracy"] == scores[provenance["chosen_format"]]
    card = (model / "MODEL_CARD.md").read_text()
    for refused in provenance["failed_candidates"]:  # the card says why a format is missing
        assert f"Not a candidate: {refused}, refused by the export (parity check failed" in card, model.name


def test_results_about_shipped_models_measured_the_files_shipped_now():
    """Or, for the ARM emulation (it needs qemu and network to rerun), the README's table says the row is stale."""
    arm = [(r.get("path"), r.get("sha256")) for r in json.loads((RESULTS / "arm_emulated.json").read_text())["rows"]]
    quality = json.loads((RESULTS / "runner_quality.json").read_text())
    measured = [(path, sha, True) for path, sha in arm] + [(quality["artifact"], quality.get("sha256"), False)]
    shipped = [row for row in measured if Path(row[0] or "").parent.parent.name == "models"]
    assert len(shipped) >= 3, "arm_emulated.json and runner_quality.json must name the shipped files they measured"
    readme = (REPO / "README.md").read_text()
    for path, sha, emulated in shipped:
        name = Path(path).parent.name
        described = json.loads((REPO / "models" / name / "model.json").read_text())["artifact"]
        if emulated and sha != described["sha256"]:
            assert f"| {name} (an earlier artifact, sha256 {sha[:12]}; not the one in models/ now) |" in readme
            continue
        assert sha == described["sha256"], f"{path} was re-shipped since: rerun the benchmark that measured it"


@pytest.mark.parametrize("model", UNSHIPPED, ids=lambda p: p.name)
def test_an_unshipped_model_says_so_with_its_measured_numbers(model):
    provenance = json.loads((model / "provenance.json").read_text())
    row = _bench_rows()[model.name]
    assert provenance["artifact_shipped"] is False and provenance["not_shipped_reason"]
    assert row["status"] == "ok" and row["shipped"] is False
    # The row measured exactly the artifact the shipped model.json describes, and the card says it is not here.
    described = json.loads((model / "model.json").read_text())["artifact"]
    assert row["sha256"] == described["sha256"] and row["bytes"] == described["bytes"]
    assert Path(provenance["artifact"]["path"]).name == "model.tflite"
    card = (model / "MODEL_CARD.md").read_text()
    assert "NOT SHIPPED" in card and f"{row['accuracy'] * 100:.2f}%" in card


def test_bench_models_keeps_the_last_row_of_an_unshipped_model_it_cannot_remeasure(benchmark_script, tmp_path, monkeypatch):
    bench_models = benchmark_script("bench_models")
    provenances = {"big": {"artifact_shipped": False, "artifact": {"path": "runs/big-int8-1/model.tflite"}},
                   "small": {"artifact_shipped": True}, "older": {}}
    assert bench_models.unshipped_artifacts(provenances) == {"big": Path("runs/big-int8-1/model.tflite")}
    monkeypatch.setattr(bench_models, "RESULTS", tmp_path)
    assert bench_models.earlier_rows(["big"]) == []  # no earlier results: nothing to keep
    (tmp_path / "models_bench.json").write_text(json.dumps(
        {"started": "T0", "environment": {"cpu": "CPU 0"},
         "rows": [{"model": "big", "accuracy": 0.9, "remeasured": True}, {"model": "small", "accuracy": 0.8}]}))
    # The kept row names the run and the CPU that measured it, for its card and the table.
    kept = [{"model": "big", "accuracy": 0.9, "remeasured": False, "measured_in": "T0", "measured_on": {"cpu": "CPU 0"}}]
    assert bench_models.earlier_rows(["big"]) == kept
    # Carried again by a later run on another CPU, it still names the first.
    (tmp_path / "models_bench.json").write_text(json.dumps({"started": "T1", "environment": {"cpu": "CPU 1"}, "rows": kept}))
    assert bench_models.earlier_rows(["big"]) == kept


def test_a_carried_over_rows_card_names_the_cpu_that_measured_it(benchmark_script, tmp_path):
    bench_models = benchmark_script("bench_models")
    committed = json.loads((RESULTS / "models_bench.json").read_text())
    row = next(r for r in committed["rows"] if r.get("remeasured") is False)
    provenance = json.loads((REPO / "models" / row["model"] / "provenance.json").read_text())
    (tmp_path / row["model"]).mkdir()
    here = {**row["measured_on"], "cpu": "Some Other CPU", "cpu_detail": "family 1 model 1"}
    judged_here = [{"model": row["model"], "check": "int8 test accuracy", "measured": 0.9, "target": 0.8, "met": True}]
    bench_models.write_cards([row], {row["model"]: provenance}, here, "the test split", tmp_path, judged_here)
    card = (tmp_path / row["model"] / "MODEL_CARD.md").read_text()
    assert cpu_text(row["measured_on"]) in card and "Some Other CPU" not in card
    assert "**Targets**" not in card  # this run's checks do not judge numbers carried over from another run
    remeasured = {k: v for k, v in row.items() if k != "measured_on"}
    bench_models.write_cards([remeasured], {row["model"]: provenance}, here, "the test split", tmp_path)
    assert "Some Other CPU (family 1 model 1)" in (tmp_path / row["model"] / "MODEL_CARD.md").read_text()


def test_model_cards_count_epochs_in_words(benchmark_script):
    bench_models = benchmark_script("bench_models")
    assert (bench_models.epochs_text(1), bench_models.epochs_text(24)) == ("1 epoch", "24 epochs")
    assert bench_models.qat_line({"qat_metrics": {"epochs_run": 1}, "qat_train_images": 3200}) == "1 epoch on 3,200 training images"


def test_model_cards_show_distillation_settings_only_with_a_teacher(benchmark_script):
    bench_models = benchmark_script("bench_models")
    plain = {"arch": "edge-cnn-tiny", "epochs": 40, "teacher": None, "distill_weight": 0.5}
    taught = {**plain, "teacher": "runs/vgg-gap-train-2"}
    assert [k for k, v in plain.items() if bench_models.shown_in_recipe(k, v, plain)] == ["epochs"]
    assert [k for k, v in taught.items() if bench_models.shown_in_recipe(k, v, taught)] == ["epochs", "teacher", "distill_weight"]


def test_tiny_design_times_each_shape_against_the_reference_in_one_run(benchmark_script, tmp_path, monkeypatch):
    tiny_design = benchmark_script("tiny_design")
    lean_shape = [({"stem": 8, "widths": [8, 16, 32], "blocks": [1, 1, 1], "block": "separable"}, "lean")]
    monkeypatch.setattr(tiny_design, "CANDIDATES", {"edge-cnn-tiny": [], "edge-cnn": lean_shape})
    out = tmp_path / "edge_cnn_design.json"
    assert tiny_design.main(["--arch", "edge-cnn", "--rounds", "2", "--runs-per-round", "5", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["arch"] == "edge-cnn" and "tiny_design.py --arch edge-cnn" in result["command"]
    reference, lean = result["rows"]
    assert reference["arch_options"] is None and reference["p50_ratio_to_cnn_3conv_bn"] == 1.0
    assert lean["candidate"] == "stem 8, widths 8/16/32, blocks 1/1/1, separable blocks (lean)"
    assert lean["params"] < 5_000 and lean["int8_bytes_without_metadata"] < 40_000
    # A net this small costs a fraction of cnn-3conv-bn's int8 latency on any CPU.
    assert 0 < lean["p50_ratio_to_cnn_3conv_bn"] < 0.5


def test_tiny_design_names_a_per_stage_block_list(benchmark_script):
    tiny_design = benchmark_script("tiny_design")
    hybrid = {"stem": 16, "widths": [16, 128, 256], "blocks": [1, 3, 3], "block": ["conv", "separable", "separable"]}
    assert tiny_design.candidate_name(hybrid, "x") == "stem 16, widths 16/128/256, blocks 1/3/3, conv/separable/separable blocks (x)"


def test_tiny_design_times_trained_artifacts_against_the_reference(benchmark_script, exported, tmp_path):
    tiny_design = benchmark_script("tiny_design")
    out = tmp_path / "artifacts.json"
    artifact = exported["int8"] / "model.tflite"
    assert tiny_design.main(["--artifacts", str(artifact), "--rounds", "2", "--runs-per-round", "5", "--out", str(out)]) == 0
    reference, trained = json.loads(out.read_text())["rows"]
    assert reference["p50_ratio_to_cnn_3conv_bn"] == 1.0
    assert trained["candidate"] == str(artifact) and trained["bytes"] == artifact.stat().st_size
    assert 0 < trained["p50_ratio_to_cnn_3conv_bn"] < 1  # tiny-cnn is far smaller than cnn-3conv-bn
    with pytest.raises(SystemExit):  # a missing file: argparse's one-line error, exit 2
        tiny_design.main(["--artifacts", str(tmp_path / "nope.tflite"), "--out", str(out)])


def test_candidate_runs_records_what_the_ship_decision_read_and_no_test_figure(benchmark_script, exported, tmp_path):
    candidate_runs = benchmark_script("candidate_runs")
    out = tmp_path / "candidates.json"
    assert candidate_runs.main([str(exported["int8"]), "--out", str(out)]) == 0
    row, = json.loads(out.read_text())["rows"]
    parity = json.loads((exported["int8"] / "model.json").read_text())["export"]["parity"]
    assert row["format"] == "int8" and row["validation_images"] == 400
    assert row["tflite_validation_accuracy"] == parity["tflite_accuracy"]
    assert row["train"]["run"] == str(exported["train"]) and row["train"]["arch"] == "tiny-cnn"
    assert row["train"]["validation_accuracy"] == json.loads((exported["train"] / "metrics.json").read_text())["val"]["accuracy"]
    keys = re.findall(r'"(\w+)":', out.read_text())
    assert "tflite_validation_accuracy" in keys and not [k for k in keys if "test" in k]
    assert candidate_runs.main([str(tmp_path), "--out", str(out)]) == 2  # not a bundle: one line, no traceback


def test_each_model_card_states_its_targets_as_the_committed_benchmark_judged_them():
    result = json.loads((REPO / "benchmarks" / "results" / "models_bench.json").read_text())
    judged = [c for c in result["checks"] if c["met"] is not None]
    assert judged
    for check in judged:
        card = (REPO / "models" / check["model"] / "MODEL_CARD.md").read_text()
        targets = card.split("**Targets**", 1)[1].split("\n\n", 1)[0]
        assert f"{check['check']}: " in targets, (check["model"], check["check"])
        said = targets.split(f"{check['check']}: ", 1)[1].split(";", 1)[0]
        verdict = re.match(r".*?, (met|\*\*missed\*\*)", said).group(1)
        assert verdict == ("met" if check["met"] else "**missed**"), (check["model"], said)


def test_a_missed_latency_target_says_so_and_points_at_the_cpu(benchmark_script):
    bench_models = benchmark_script("bench_models")
    checks = [{"model": "m", "check": "int8 test accuracy", "measured": 0.952, "target": 0.95, "met": True},
              {"model": "m", "check": "p50 below cnn-3conv-bn's", "measured": 0.3, "target": 0.24, "met": False},
              {"model": "other", "check": "int8 test accuracy", "measured": 0.5, "target": 0.9, "met": False}]
    text = bench_models.targets_text("m", checks)
    assert "int8 test accuracy: 95.20% against 95.00%, met" in text
    assert "p50 below cnn-3conv-bn's: 0.300 ms against 0.240 ms, **missed**" in text and "CPU" in text
    assert "50.00%" not in text and bench_models.targets_text("nobody", checks) == ""

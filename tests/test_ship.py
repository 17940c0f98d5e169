"""Shipping a model (`edge-fm ship`) and regenerating a models folder (`edge-fm bench MODELS_DIR`), end to end
on a tiny CNN trained on the embedded sample; and the model card's parts."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from typer.testing import CliRunner

from edge_fm.bench.measurements import read_bench
from edge_fm.cli import app
from edge_fm.data import datasets as data
from edge_fm.shipping.cards import options_in_force
from edge_fm.shipping.ship import choose
from edge_fm.shipping.verdicts import carried_rows, checks, read_targets
from edge_fm.show.figures import pareto_front

runner = CliRunner()


@pytest.fixture(scope="module")
def shipped(exported, tmp_path_factory):
    """A models folder holding the tiny CNN shipped with a one-epoch QAT, then benchmarked on the sample."""
    root = tmp_path_factory.mktemp("shipping")
    models = root / "models"
    result = runner.invoke(
        app,
        [
            "ship",
            str(exported["train"]),
            "--name",
            "tiny",
            "--models-dir",
            str(models),
            "--qat-epochs",
            "1",
            "--qat-max-train",  # the QAT step on part of the training split
            "800",
            "--runs-dir",
            str(root / "runs"),
            "--note",
            "A test model.",
            "--train-command",
            "edge-fm train tiny-cnn",
        ],
    )
    assert result.exit_code == 0, result.output
    card_before_bench = (models / "tiny" / "MODEL_CARD.md").read_text()
    bench = runner.invoke(
        app,
        [
            "bench",
            str(models),
            "--cards",
            "--sample",
            "--runs",
            "20",
            "--min-seconds",
            "0.05",
            "--json",
            str(root / "bench.json"),
            "--plot",
            str(root / "front.png"),
        ],
    )
    assert bench.exit_code == 0, bench.output
    return {
        "root": root,
        "folder": models / "tiny",
        "card_before_bench": card_before_bench,
        "bench": read_bench(root / "bench.json"),
    }


def test_ship_writes_the_bundle_its_provenance_and_a_card(shipped):
    folder = shipped["folder"]
    assert sorted(p.name for p in folder.iterdir()) == [
        "MODEL_CARD.md",
        "labels.txt",
        "manifest.json",
        "measurement.json",  # written with the card by the fixture's `edge-fm bench --cards`
        "model.json",
        "model.tflite",
        "provenance.json",
    ]
    provenance = json.loads((folder / "provenance.json").read_text())
    selection = provenance["selection"]
    # Both candidates were scored on every validation image of the run (400 on the sample), the better one shipped.
    assert set(selection["validation_accuracy"]) | set(selection["refused"]) == {"qat-int8", "int8"}
    assert provenance["chosen_format"] == choose(selection["validation_accuracy"])
    assert selection["validation_images"] == 400
    description = json.loads((folder / "model.json").read_text())
    assert description["format"] == provenance["chosen_format"]
    assert description["artifact"]["sha256"] == provenance["artifact"]["sha256"]
    assert provenance["commands"]["train"] == "edge-fm train tiny-cnn"
    # The data is the training run's (the whole sample), not the QAT step's part of it.
    assert provenance["data"].startswith("embedded sample of Fashion-MNIST (1600 train / 400 val")
    assert provenance["qat"]["train_images"] == 800
    assert (
        provenance["train"]["config"]["arch"] == "tiny-cnn"
        and provenance["qat"]["metrics"]["epochs_run"] == 1
    )
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["stage"] == "ship" and set(manifest["files"]) == {
        "MODEL_CARD.md",
        "labels.txt",
        "measurement.json",  # added with the card's figures by the fixture's `edge-fm bench --cards`
        "model.json",
        "model.tflite",
        "provenance.json",
    }
    # Before the folder is benchmarked, the card says how to complete it and claims no test figure.
    assert (
        "Test accuracy and latency are not measured yet: run `edge-fm bench models/ --cards`"
        in shipped["card_before_bench"]
    )


def test_bench_of_a_models_folder_rewrites_its_cards_from_the_measurement(shipped, tmp_path):
    from edge_fm.bench.measurements import bundle_row
    from edge_fm.shipping.card_refresh import refresh_cards

    (row,) = shipped["bench"]["rows"]
    assert row["model"] == "tiny" and row["status"] == "ok"
    # The figures readers show come from the JSON written beside the card, not from the card's text.
    measured = bundle_row(shipped["folder"])
    assert (measured["accuracy"], measured["latency"]) == (row["accuracy"], row["latency"])
    # Refreshed from the same bench JSON, without measuring, the card is the same bytes.
    again = tmp_path / "models"
    shutil.copytree(shipped["folder"].parent, again)
    (card_again,) = refresh_cards(again, shipped["bench"])
    assert card_again.read_bytes() == (shipped["folder"] / "MODEL_CARD.md").read_bytes()
    card = (shipped["folder"] / "MODEL_CARD.md").read_text()
    assert f"{row['accuracy'] * 100:.2f}%" in card and f"p50 {row['latency']['p50_ms']:.3f} ms" in card
    front = yaml.safe_load(card.split("---\n")[1])
    assert front["license"] == "mit" and front["datasets"] == ["zalando-datasets/fashion_mnist"]
    values = {m["name"]: m["value"] for m in front["model-index"][0]["results"][0]["metrics"]}
    assert values[f"test accuracy, {row['format']} artifact"] == round(row["accuracy"] * 100, 2)
    assert (shipped["root"] / "front.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_cards_how_to_use_code_runs_and_agrees_with_the_runner(shipped, tmp_path, data_dir):
    card = (shipped["folder"] / "MODEL_CARD.md").read_text()
    code = re.search(r"```python\n(.*?)```", card, re.S).group(1)
    images, labels = data.load_split("test", data_dir)
    index = int(np.flatnonzero(labels == 9)[0])  # an ankle boot: light on black, as the card requires
    Image.fromarray(images[index].reshape(28, 28)).save(tmp_path / "garment.png")
    for name in ("model.tflite", "labels.txt"):
        (tmp_path / name).write_bytes((shipped["folder"] / name).read_bytes())
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    predicted = out.stdout.rsplit(" ", 1)[0]
    result = runner.invoke(app, ["predict", str(shipped["folder"]), str(tmp_path / "garment.png")])
    assert result.exit_code == 0, result.output
    assert predicted in result.output and predicted in data.CLASS_NAMES


def test_shipping_again_replaces_the_folder_and_a_failure_keeps_the_old_one(shipped, exported):
    models = shipped["folder"].parent
    before = (shipped["folder"] / "model.json").read_bytes()
    result = runner.invoke(
        app, ["ship", str(exported["root"] / "nope-train-1"), "--name", "tiny", "--models-dir", str(models)]
    )
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1, result.output
    assert (shipped["folder"] / "model.json").read_bytes() == before
    assert sorted(p.name for p in models.iterdir()) == ["tiny"]  # no staging folder left behind


@pytest.mark.parametrize("bad", ["../up", ".hidden", ""])
def test_ship_refuses_a_name_that_is_not_a_folder_name(exported, bad, tmp_path):
    result = runner.invoke(
        app, ["ship", str(exported["train"]), "--name", bad, "--models-dir", str(tmp_path)]
    )
    assert result.exit_code != 0 and "--name" in result.output and "Traceback" not in result.output
    assert not any(tmp_path.iterdir())


def test_ship_refuses_an_export_bundle_as_its_training_run(exported, tmp_path):
    result = runner.invoke(app, ["ship", str(exported["int8"]), "--name", "x", "--models-dir", str(tmp_path)])
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    assert not (tmp_path / "x").exists()


def test_choice_prefers_accuracy_then_qat_int8():
    assert choose({"qat-int8": 0.91, "int8": 0.92}) == "int8"
    assert choose({"int8": 0.92, "qat-int8": 0.92}) == "qat-int8"
    assert choose({"int8": 0.5}) == "int8"


def test_a_recipe_lists_only_the_options_in_force():
    config = {
        "arch": "edge-cnn-tiny",
        "epochs": 60,
        "optimizer": "adamw",
        "momentum": 0.9,
        "weight_decay": 2e-4,
        "schedule": "onecycle",
        "warmup_epochs": 2.0,
        "decay_rate": 0.9,
        "cycle_epochs": 4.0,
        "augment": ["crop", "flip"],
        "crop_padding": 2,
        "rotation": 10.0,
        "erasing_prob": 0.5,
        "early_stopping": 0,
        "monitor": "val_loss",
        "teacher": None,
        "distill_weight": 0.5,
        "seed": 0,
    }
    assert list(options_in_force(config)) == [
        "epochs",
        "optimizer",
        "weight_decay",
        "schedule",
        "warmup_epochs",
        "augment",
        "crop_padding",
    ]
    taught = {**config, "teacher": "runs/edge-cnn-train-1", "early_stopping": 5, "optimizer": "sgd"}
    shown = options_in_force(taught)
    assert {"teacher", "distill_weight", "early_stopping", "monitor", "momentum"} <= set(shown)


def test_a_row_that_cannot_be_remeasured_is_carried_with_the_machine_that_measured_it():
    assert carried_rows(None, ["big"]) == []
    previous = {
        "started": "T0",
        "environment": {"cpu": "CPU 0"},
        "rows": [{"model": "big", "accuracy": 0.9}, {"model": "small", "accuracy": 0.8}],
    }
    kept = [
        {
            "model": "big",
            "accuracy": 0.9,
            "remeasured": False,
            "measured_in": "T0",
            "measured_on": {"cpu": "CPU 0"},
        }
    ]
    assert carried_rows(previous, ["big"]) == kept
    # Carried again by a later run on another machine, it still names the first.
    assert carried_rows({"started": "T1", "environment": {"cpu": "CPU 1"}, "rows": kept}, ["big"]) == kept


def _row(model, accuracy, size, p50, remeasured=True):
    return {
        "model": model,
        "accuracy": accuracy,
        "bytes": size,
        "latency": {"p50_ms": p50},
        "remeasured": remeasured,
    }


def test_targets_are_judged_on_remeasured_rows_only():
    rows = [
        _row("cnn-3conv-bn", 0.942, 300_000, 0.2),
        _row("edge-cnn-tiny", 0.9431, 83_000, 0.045),
        _row("edge-cnn", 0.952, 280_000, 0.3, remeasured=False),
    ]
    judged = {
        (c["model"], c["check"]): c["met"]
        for c in checks(rows, read_targets(Path(__file__).resolve().parents[1] / "models"))
    }
    assert judged[("edge-cnn-tiny", "int8 test accuracy")] is True
    assert judged[("edge-cnn-tiny", "p50 at most 1/4 of cnn-3conv-bn's")] is True  # 0.045 <= 0.05
    assert judged[("edge-cnn", "p50 below cnn-3conv-bn's")] is None  # a carried row is not judged
    assert judged[("mlp", "int8 test accuracy")] is None  # not in the folder


def test_the_front_keeps_what_nothing_beats_on_all_three():
    rows = [
        _row("a", 0.95, 300, 1.0),
        _row("b", 0.94, 100, 0.5),
        _row("c", 0.93, 200, 0.6),
        _row("d", 0.95, 300, 1.0),
    ]
    assert pareto_front(rows) == {"a", "b", "d"}  # c is beaten by b on every axis; a and d tie


def test_an_artifact_over_the_size_limit_keeps_its_card_but_stays_out(shipped, exported, tmp_path):
    qat_run = next((shipped["root"] / "runs").glob("*-qat-*"))
    result = runner.invoke(
        app,
        [
            "ship",
            str(exported["train"]),
            "--name",
            "big",
            "--models-dir",
            str(tmp_path),
            "--qat-run",
            str(qat_run),
            "--runs-dir",
            str(tmp_path / "runs"),
            "--max-artifact-bytes",
            "1000",
        ],
    )
    assert result.exit_code == 0, result.output
    folder = tmp_path / "big"
    assert not (folder / "model.tflite").exists() and (folder / "MODEL_CARD.md").is_file()
    provenance = json.loads((folder / "provenance.json").read_text())
    assert provenance["artifact_shipped"] is False and "1,000-byte limit" in provenance["not_shipped_reason"]
    assert "Not checked yet" not in (folder / "MODEL_CARD.md").read_text()  # no model here to check


def test_a_card_before_its_bench_says_what_is_not_checked_yet_and_quotes_its_folder(
    shipped, exported, tmp_path
):
    qat_run = next((shipped["root"] / "runs").glob("*-qat-*"))
    result = runner.invoke(
        app,
        ["ship", str(exported["train"]), "--name", "my digits", "--models-dir", str(tmp_path), "--qat-run",
         str(qat_run), "--runs-dir", str(tmp_path / "runs")],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    card = (tmp_path / "my digits" / "MODEL_CARD.md").read_text()
    assert "`edge-fm predict 'models/my digits' photo.jpg`" in card
    assert "Not checked yet: `edge-fm bench models/ --cards` checks what each runtime runs" in card
    assert "holds no `model.tflite`" not in card


def test_a_qat_run_that_is_not_of_the_training_run_is_refused(shipped, exported, tmp_path):
    import shutil

    qat_run = next((shipped["root"] / "runs").glob("*-qat-*"))
    stranger = tmp_path / "tiny-cnn-qat-9"
    shutil.copytree(qat_run, stranger)
    manifest = json.loads((stranger / "manifest.json").read_text())
    (stranger / "manifest.json").write_text(json.dumps({**manifest, "parent": str(tmp_path / "other-train")}))
    ship = ["ship", str(exported["train"]), "--name", "x", "--models-dir", str(tmp_path / "models")]
    for given, expected in (
        (exported["train"], f"--qat-run {exported['train']} is a train run: pass a QAT run of"),
        (stranger, f"--qat-run {stranger} was not made from {exported['train']}"),
    ):
        result = runner.invoke(app, [*ship, "--qat-run", str(given)])
        assert result.exit_code == 1 and expected in result.output, result.output
    assert not (tmp_path / "models" / "x").exists()


def test_a_qat_run_is_known_as_its_training_runs_from_any_folder(shipped, exported, tmp_path, monkeypatch):
    """Runs record their parent as typed (runs/NAME, relative to where the command ran)."""
    import shutil

    from edge_fm.shipping.ship import _qat_run_of
    from edge_fm.train.runs import Run

    runs = tmp_path / "project" / "runs"
    shutil.copytree(exported["train"], runs / "tiny-cnn-train-1")
    qat = runs / "tiny-cnn-qat-1"
    shutil.copytree(next((shipped["root"] / "runs").glob("*-qat-*")), qat)
    manifest = json.loads((qat / "manifest.json").read_text())
    (qat / "manifest.json").write_text(json.dumps({**manifest, "parent": "runs/tiny-cnn-train-1"}))
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    train = Run("../project/runs/tiny-cnn-train-1")
    assert _qat_run_of(train, "../project/runs/tiny-cnn-qat-1").path == Path("../project/runs/tiny-cnn-qat-1")
    assert [step["run"] for step in Run(qat).lineage()] == [str(qat), str(runs / "tiny-cnn-train-1")]


def test_a_model_larger_than_every_boards_flash_says_no_microcontroller_holds_it(tmp_path):
    from edge_fm.export.boards import BOARDS
    from edge_fm.shipping.card_forms import folder_forms

    largest = max(board.flash_bytes for board in BOARDS)
    with open(tmp_path / "model.tflite", "wb") as file:
        file.truncate(largest + 1)  # only the size is read
    (form,) = folder_forms(tmp_path)
    assert form["kind"] == "no-mcu" and "no microcontroller holds it" in form["reason"]
    # An artifact too large for the models folder itself: its description gives the size.
    (tmp_path / "model.tflite").unlink()
    (tmp_path / "model.json").write_text(json.dumps({"artifact": {"bytes": largest + 1}}))
    (form,) = folder_forms(tmp_path)
    assert form["kind"] == "no-mcu" and f"at {largest + 1:,} bytes" in form["reason"]


def _two_versions(tmp_path: Path) -> tuple[Path, Path]:
    """A models folder with a shipped ``tiny`` (the mlp) and its next version staged (edge-cnn-tiny)."""
    import shutil

    from edge_fm.swap import staging_path

    repo = Path(__file__).resolve().parents[1] / "models"
    target = tmp_path / "models" / "tiny"
    shutil.copytree(repo / "mlp", target)
    shutil.copytree(repo / "edge-cnn-tiny", staging_path(target))
    return target, staging_path(target)


def _version(folder: Path) -> str:
    return json.loads((folder / "provenance.json").read_text())["name"]


def test_a_ship_killed_between_its_two_renames_leaves_a_model_readers_put_back(tmp_path):
    from edge_fm.bench.measurements import bundles_in
    from edge_fm.shipping.catalog import read_provenances
    from edge_fm.swap import _retire, recover_folder, retired_path

    target, staging = _two_versions(tmp_path)
    models = target.parent
    _retire(target)  # killed here: only .old-tiny and .tmp-tiny remain, both hidden
    assert not target.exists() and retired_path(target).is_dir()
    assert [p.name for p in bundles_in(models)] == ["tiny"] and _version(target) == "mlp"  # a reader restores
    _retire(target)
    assert list(read_provenances(models)) == ["tiny"] and _version(target) == "mlp"
    _retire(target)
    result = runner.invoke(
        app, ["bench", str(models), "--sample", "--runs", "5", "--min-seconds", "0.01", "--max-seconds", "1"]
    )
    assert result.exit_code == 0 and "tiny" in result.output, result.output
    _retire(target)
    recover_folder(target)  # the next ship: the previous model back, the leftovers gone
    assert sorted(p.name for p in models.iterdir()) == ["tiny"] and _version(target) == "mlp"


def test_a_ship_swaps_its_folder_in_one_step_and_a_kill_after_it_leaves_one_model(tmp_path):
    from edge_fm.bench.measurements import bundles_in
    from edge_fm.swap import _exchange, _swap_by_renames, recover_folder, replace_folder

    target, staging = _two_versions(tmp_path)
    models = target.parent
    if sys.platform.startswith("linux"):
        before = target.stat().st_ino, staging.stat().st_ino
        assert _exchange(staging, target)  # killed right after the exchange: the old version is hidden
        assert (target.stat().st_ino, staging.stat().st_ino) == before[::-1]
        assert [p.name for p in bundles_in(models)] == ["tiny"] and _version(target) == "edge-cnn-tiny"
        recover_folder(target)
        assert sorted(p.name for p in models.iterdir()) == ["tiny"]

    target, staging = _two_versions(tmp_path / "again")
    replace_folder(staging, target)
    assert sorted(p.name for p in target.parent.iterdir()) == ["tiny"] and _version(target) == "edge-cnn-tiny"

    target, staging = _two_versions(tmp_path / "renames")  # where there is no exchange
    _swap_by_renames(staging, target)
    assert sorted(p.name for p in target.parent.iterdir()) == ["tiny"] and _version(target) == "edge-cnn-tiny"


def test_bench_catalog_refuses_a_folder_that_holds_no_shipped_models(tmp_path):
    from edge_fm.bench.options import BenchOptions
    from edge_fm.errors import EdgeFMError
    from edge_fm.shipping.catalog import bench_catalog

    (tmp_path / "run").mkdir()
    with pytest.raises(EdgeFMError, match="is not a folder of shipped models"):
        bench_catalog(tmp_path, BenchOptions())


def test_a_shipped_folders_manifest_lists_its_card_and_measurement_as_they_are(shipped):
    import hashlib

    folder = shipped["root"] / "models" / "tiny"
    files = json.loads((folder / "manifest.json").read_text())["files"]
    for name in (
        "MODEL_CARD.md",
        "measurement.json",
        "model.tflite",
    ):  # the first two rewritten by bench --cards
        data = (folder / name).read_bytes()
        assert files[name] == {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}, name


def test_the_ship_options_give_the_librarys_config_by_name():
    from edge_fm.cli.options import DEFAULT_SHIP, ShipOptions
    from edge_fm.shipping.ship import ShipConfig

    assert DEFAULT_SHIP.config(Path("runs/t-1"), "t") == ShipConfig("runs/t-1", "t")
    given = ShipOptions(models_dir=Path("m"), qat_run=Path("q"), qat_learning_rate=1e-4, max_artifact_bytes=9)
    assert given.config(Path("r"), "x") == ShipConfig(
        "r", "x", "m", "q", qat_learning_rate=1e-4, max_artifact_bytes=9
    )

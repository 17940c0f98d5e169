"""The shipped models: each folder under models/ is what its model.json, provenance, card and the results say.

The accuracy is recomputed here with a plain ai_edge_litert interpreter, one image at a time, on the
full test split, independently of the benchmark runner that wrote the committed figures.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest
import yaml
from shipped import record_only_forms

from edge_fm.data import datasets as data
from edge_fm.data.datasets import CLASS_NAMES
from edge_fm.result_files import flat, read_result_file
from edge_fm.shipping.ship import SELECTION_RULE, choose
from edge_fm.train.metrics import cpu_text

REPO = Path(__file__).resolve().parents[1]
FOLDERS = sorted(p.parent for p in (REPO / "models").glob("*/provenance.json"))
MODELS = [folder for folder in FOLDERS if (folder / "model.tflite").exists()]
# Folders of models whose artifact is too large to ship: card, provenance and table row, no .tflite.
UNSHIPPED = [folder for folder in FOLDERS if folder not in MODELS]
RESULTS = REPO / "benchmarks" / "results"
BENCH = RESULTS / "models_bench.json"


def _result(path: Path) -> dict:
    """A committed result file's figures, with its command and environment beside them."""
    return flat(read_result_file(path))


def _bench_rows() -> dict[str, dict]:
    return {row["model"]: row for row in _result(BENCH)["rows"] if row["threads"] == 1}


def _read(folder: Path, name: str) -> dict:
    return json.loads((folder / name).read_text())


def test_models_folder_is_small_enough_to_ship():
    # One large artifact is accepted (resnet50's, under 30 MB); everything else stays under 20 MB.
    # A form kept as its record is built after cloning: its model is not part of what ships.
    built = {folder / "model.tflite" for folder in record_only_forms()}
    sizes = {f: f.stat().st_size for f in (REPO / "models").rglob("*") if f.is_file() and f not in built}
    large = [f for f, size in sizes.items() if size > 5_000_000]
    assert [f.relative_to(REPO).as_posix() for f in large] == ["models/resnet50/model.tflite"], large
    assert all(sizes[f] < 30_000_000 for f in large), large
    rest = sum(size for f, size in sizes.items() if f not in large)
    assert MODELS and rest < 20_000_000, rest


def test_every_shipped_model_is_benchmarked_and_has_a_card():
    rows = _bench_rows()
    assert sorted(rows) == sorted(m.name for m in FOLDERS), (
        "run `edge-fm bench models/ --cards --json benchmarks/results/models_bench.json`"
    )
    for model in MODELS:
        row = rows[model.name]
        card = (model / "MODEL_CARD.md").read_text()
        assert row["status"] == "ok" and row["remeasured"], row
        assert f"{row['accuracy'] * 100:.2f}% ({_result(BENCH)['test_set']['source']})" in card, model.name
        assert f"{row['bytes']:,} bytes" in card and f"p50 {row['latency']['p50_ms']:.3f} ms" in card, (
            model.name
        )
        assert cpu_text(_result(BENCH)["environment"]) in card, model.name


@pytest.mark.parametrize("model", MODELS, ids=lambda p: p.name)
def test_bundle_describes_its_own_artifact(model):
    description = _read(model, "model.json")
    tflite = (model / "model.tflite").read_bytes()
    assert (
        description["artifact"]["sha256"]
        == hashlib.sha256(tflite).hexdigest()
        == _read(model, "provenance.json")["artifact"]["sha256"]
    )
    assert description["artifact"]["bytes"] == len(tflite)
    assert (model / "labels.txt").read_text().split("\n")[:10] == list(CLASS_NAMES)
    assert description["export"]["integer_only"] is True
    manifest = _read(model, "manifest.json")
    assert manifest["files"]["model.tflite"]["sha256"] == description["artifact"]["sha256"]


# The two smallest run with the fast tests; every model with the slow ones.
@pytest.mark.parametrize(
    "model",
    [pytest.param(m, marks=() if m.name in ("mlp", "edge-cnn-tiny") else pytest.mark.slow) for m in MODELS],
    ids=lambda p: p.name,
)
def test_plain_interpreter_reproduces_the_stated_test_accuracy(model, data_dir, plain_accuracy):
    images, labels = data.load_split("test", data_dir)
    measured_on = _result(BENCH)["test_set"]["sha256"]
    if data.split_sha256(images, labels) != measured_on:
        pytest.skip("the committed figures were measured on another copy of the test split (other images)")
    accuracy = plain_accuracy(model / "model.tflite", images, labels)
    # Integer kernels are exact, so batch-1 and the runner's batched pass agree to the image.
    assert accuracy == pytest.approx(_bench_rows()[model.name]["accuracy"], abs=1e-4)


@pytest.mark.parametrize("model", FOLDERS, ids=lambda p: p.name)
def test_the_shipped_format_won_on_the_whole_validation_split(model):
    provenance = _read(model, "provenance.json")
    selection = provenance["selection"]
    scores = selection["validation_accuracy"]
    assert selection["rule"] == SELECTION_RULE and provenance["chosen_format"] == choose(scores), scores
    # The score the choice used covers every validation image of the training run, not a subset.
    parity = _read(model, "model.json")["export"]["parity"]
    assert (
        parity["images"]
        == selection["validation_images"]
        == provenance["train"]["metrics"]["val"]["examples"]
        >= 5000
    )
    assert parity["tflite_accuracy"] == scores[provenance["chosen_format"]]
    card = (model / "MODEL_CARD.md").read_text()
    for refused in selection["refused"]:  # the card says why a format is missing
        assert f"{refused} was not a candidate: parity check failed" in card, model.name


@pytest.mark.parametrize("model", FOLDERS, ids=lambda p: p.name)
def test_a_card_is_what_an_app_developer_needs(model):
    card = (model / "MODEL_CARD.md").read_text()
    provenance, description = _read(model, "provenance.json"), _read(model, "model.json")
    front = yaml.safe_load(card.split("---\n")[1])
    assert front["license"] == "mit" and front["pipeline_tag"] == "image-classification"
    assert front["datasets"] == ["zalando-datasets/fashion_mnist"] and "tflite" in front["tags"]
    metrics = front["model-index"][0]["results"][0]["metrics"]
    row = _bench_rows()[model.name]
    assert {
        "type": "accuracy",
        "value": round(row["accuracy"] * 100, 2),
        "name": f"test accuracy, {provenance['chosen_format']} artifact",
    } in metrics
    for heading in (
        "## Intended use",
        "## Input and output",
        "## How to use",
        "## Evaluation",
        "## Training",
        "## Limitations",
    ):
        assert heading in card, (model.name, heading)
    spec = description["input"]
    assert f"`{spec['shape']}` {spec['dtype']}" in card and f"zero point {spec['zero_point']}" in card
    assert all(step in card for step in spec["preprocessing"])
    assert card.count(provenance["note"]) == 1  # the note is said once
    for command in provenance["commands"].values():
        assert command in card


@pytest.mark.parametrize("model", FOLDERS, ids=lambda p: p.name)
def test_a_cards_recipe_shows_only_options_in_force(model):
    card = (model / "MODEL_CARD.md").read_text()
    config = _read(model, "provenance.json")["train"]["config"]
    recipe = card.split("Options in force", 1)[1].split("\n\n", 2)[1]
    shown = re.findall(r"^\| (\w+) \|", recipe, re.M)
    assert "epochs" in shown and "option" not in shown[1:]
    if "erasing" not in config["augment"]:
        assert "erasing_prob" not in shown
    if config.get("teacher") is None:
        assert not [key for key in shown if key.startswith("distill")]
    if config["optimizer"] != "sgd":
        assert "momentum" not in shown


def test_results_about_shipped_models_measured_the_files_shipped_now():
    """Or, for the ARM emulation (it needs qemu and network to rerun), the results page says the row is stale."""
    arm = [(r.get("path"), r.get("sha256")) for r in _result(RESULTS / "arm_emulated.json")["rows"]]
    quality = _result(RESULTS / "runner_quality.json")
    measured = [(path, sha, True) for path, sha in arm] + [
        (quality["artifact"], quality.get("sha256"), False)
    ]
    shipped = [row for row in measured if Path(row[0] or "").parent.parent.name == "models"]
    assert len(shipped) >= 3, (
        "arm_emulated.json and runner_quality.json must name the shipped files they measured"
    )
    pages = "".join(
        (REPO / page).read_text() for page in ("README.md", "docs/results.md") if (REPO / page).exists()
    )
    for path, sha, emulated in shipped:
        name = Path(path).parent.name
        described = _read(REPO / "models" / name, "model.json")["artifact"]
        if emulated and sha != described["sha256"]:
            assert f"{name} (an earlier artifact, sha256 {sha[:12]}" in pages, name
            continue
        assert sha == described["sha256"], (
            f"{path} was re-shipped since: rerun the benchmark that measured it"
        )


@pytest.mark.parametrize("model", UNSHIPPED, ids=lambda p: p.name)
def test_an_unshipped_model_says_so_with_its_measured_numbers(model):
    provenance = _read(model, "provenance.json")
    row = _bench_rows()[model.name]
    assert provenance["artifact_shipped"] is False and provenance["not_shipped_reason"]
    assert row["status"] == "ok" and row["shipped"] is False
    # The row measured exactly the artifact the shipped model.json describes, and the card says it is not here.
    described = _read(model, "model.json")["artifact"]
    assert row["sha256"] == described["sha256"] and row["bytes"] == described["bytes"]
    card = (model / "MODEL_CARD.md").read_text()
    assert "**not in this folder**" in card and f"{row['accuracy'] * 100:.2f}%" in card
    if not row["remeasured"]:  # a carried-over row names the machine that measured it
        assert cpu_text(row["measured_on"]) in card


def test_each_model_card_states_its_targets_as_the_committed_benchmark_judged_them():
    result = _result(BENCH)
    judged = [c for c in result["checks"] if c["met"] is not None]
    assert judged
    for check in judged:
        card = (REPO / "models" / check["model"] / "MODEL_CARD.md").read_text()
        targets = card.split("**Targets**", 1)[1].split("\n\n", 1)[0]
        said = targets.split(f"{check['check']}: ", 1)[1].split(";", 1)[0]
        verdict = re.match(r".*?, (met|\*\*missed\*\*)", said).group(1)
        assert verdict == ("met" if check["met"] else "**missed**"), (check["model"], said)


@pytest.mark.parametrize("model", MODELS, ids=lambda p: p.name)
def test_the_app_and_microcontroller_forms_come_from_the_shipped_artifact(model):
    card = (model / "MODEL_CARD.md").read_text()
    sha = _read(model, "model.json")["artifact"]["sha256"]
    mobile = _read(model / "mobile", "model.json")
    if model / "mobile" in record_only_forms():
        # Kept as its record (a second 24 MB file would double the folder): the card gives the command.
        assert f"edge-fm export models/{model.name} --for mobile --out models/{model.name}/mobile" in card
    assert mobile["mobile"]["made_from"]["sha256"] == sha and mobile["mobile"]["parity"]["identical_to_int8"]
    assert mobile["input"]["shape"] == [1, 28, 28, 3] and mobile["input"]["dtype"] == "uint8"
    assert "`mobile/model.tflite`" in card
    if (model / "mcu").exists():
        assert (model / "mcu" / "model.tflite").read_bytes() == (model / "model.tflite").read_bytes()
        mcu = _read(model / "mcu", "model.json")["mcu"]
        assert mcu["runs_under_tflm"] and mcu["agreement_with_litert_reference"] == 1.0
        assert f"a {mcu['arena_bytes']:,}-byte tensor arena" in card
        suffixes = sorted(p.name.rsplit("_int8_", 1)[-1] for p in (model / "mcu" / "firmware").iterdir())
        # The C array is in the form, or written at build time by the form's script (large models).
        data = "make_model_data.py" if "model_data_script" in mcu["firmware"] else "model_data.cc"
        assert suffixes == sorted(["example.cc", data, "model_data.h", "model_settings.h", "op_resolver.h"])
    else:
        assert "No microcontroller form" in card


@pytest.mark.parametrize("model", MODELS, ids=lambda p: p.name)
def test_each_forms_manifest_lists_its_files_as_they_are(model):
    # A record changed after export (a client check, kept as a record) rewrites its manifest too.
    for form in (model / "mobile", model / "mcu"):
        if not (form / "manifest.json").is_file():
            continue
        listed = _read(form, "manifest.json")["files"]
        for name, entry in listed.items():
            if name == "model.tflite" and form in record_only_forms():
                continue  # a form kept as its record has no model.tflite in a clone
            assert hashlib.sha256((form / name).read_bytes()).hexdigest() == entry["sha256"], (form, name)

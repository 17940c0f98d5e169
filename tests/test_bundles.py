"""The bundle owner: what kind a path is, one reader, one all-or-nothing writer, and the stand-alone
runner's own minimal reader agreeing with it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edge_fm import runner
from edge_fm.errors import EdgeFMError
from edge_fm.export.bundles import (
    DESCRIPTION_FILE,
    LABELS_FILE,
    MODEL_FILE,
    Bundle,
    kind_of,
    write_bundle,
)

REPO = Path(__file__).resolve().parents[1]
SHIPPED = sorted(path.parent for path in (REPO / "models").glob(f"*/{MODEL_FILE}"))


def test_kind_of_tells_runs_bundles_catalogs_pipelines_and_results_apart(tmp_path):
    run, pipeline, results = tmp_path / "run", tmp_path / "pipeline", tmp_path / "bench.json"
    run.mkdir()
    (run / "config.json").write_text("{}")
    pipeline.mkdir()
    (pipeline / "pipeline.json").write_text("{}")
    results.write_text("{}")
    assert kind_of(run) == "run" and kind_of(pipeline) == "pipeline" and kind_of(results) == "bench"
    assert kind_of(SHIPPED[0]) == "bundle" and kind_of(SHIPPED[0] / MODEL_FILE) == "tflite"
    assert kind_of(REPO / "models") == "catalog"
    assert kind_of(tmp_path / "nothing") is None and kind_of(tmp_path) is None


@pytest.mark.parametrize("folder", SHIPPED, ids=lambda path: path.name)
def test_the_runners_own_reader_agrees_with_the_bundle_owner(folder):
    bundle = Bundle.open(folder)
    path = str(folder / MODEL_FILE)
    assert runner.artifact_name(path) == bundle.folder.name
    assert runner.sidecar_description(path) == {
        "format": bundle.format,
        "architecture": bundle.description.get("architecture"),
    }
    assert bundle.labels == tuple(line for line in (folder / LABELS_FILE).read_text().splitlines() if line)


def test_a_bundle_is_written_whole_or_not_at_all(tmp_path):
    shipped = Bundle.open(SHIPPED[0])
    folder = write_bundle(
        tmp_path / "copy",
        shipped.flatbuffer,
        {"name": "copy"},
        shipped.labels,
        {"stage": "export", "parent": None},
    )
    written = json.loads((folder / DESCRIPTION_FILE).read_text())
    assert written["artifact"]["bytes"] == len(shipped.flatbuffer)
    assert Bundle.open(folder).labels == shipped.labels
    assert json.loads((folder / "manifest.json").read_text())["run"] == "copy"

    with pytest.raises(TypeError):  # a file that cannot be written, after the model and labels were
        write_bundle(
            tmp_path / "half",
            shipped.flatbuffer,
            {},
            shipped.labels,
            {"stage": "export"},
            {"firmware/x.h": None},
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["copy"]  # no half bundle, no temporary folder
    with pytest.raises(EdgeFMError, match="never overwritten"):
        write_bundle(folder, shipped.flatbuffer, {}, shipped.labels, {"stage": "export"})


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc")
def test_a_folder_the_system_refuses_is_named_in_the_error():
    # /proc takes no new folder even from root, whom the permission check lets through: the error names
    # the bundle asked for, not the temporary folder it is staged in.
    with pytest.raises(EdgeFMError, match=r"^cannot write /proc(/edge-fm-bundle)?: ") as refused:
        write_bundle(Path("/proc/edge-fm-bundle"), b"x", {}, ["a"], {"stage": "export", "parent": None})
    assert ".tmp" not in str(refused.value)


def test_a_bundles_source_run_is_the_run_it_came_from_not_any_run_of_that_name(exported, tmp_path):
    import shutil

    from edge_fm.export.bundles import read_description
    from edge_fm.export.source_runs import source_run

    bundle = exported["int8"]
    recorded = read_description(bundle)
    assert source_run(bundle / "model.tflite", recorded).path == Path(exported["train"])
    # The bundle records its run's model hash: a run of that name with another model is another model.
    run_model = json.loads((Path(exported["train"]) / "manifest.json").read_text())["files"]["model.h5"]
    assert recorded["source"]["model_sha256"] == run_model["sha256"]
    retrained = {**recorded, "source": {**recorded["source"], "model_sha256": "0" * 64}}
    assert source_run(bundle / "model.tflite", retrained) is None
    # A record without the hash (a shipped model's of before) names a folder of the machine that
    # trained it: a run of that name here trained on other data, or after the bundle was made, is
    # another model.
    description = {
        **recorded,
        "source": {key: value for key, value in recorded["source"].items() if key != "model_sha256"},
    }
    assert source_run(bundle / "model.tflite", description).path == Path(exported["train"])
    other_data = {
        **description,
        "source": {**description["source"], "data": "folder data sha256:cc77317b5a20"},
    }
    assert source_run(bundle / "model.tflite", other_data) is None
    other_classes = {**description, "labels": [f"digit {i}" for i in range(10)]}
    assert source_run(bundle / "model.tflite", other_classes) is None
    assert source_run(bundle / "model.tflite", {**description, "architecture": "mlp"}) is None
    older = tmp_path / "older-bundle"
    shutil.copytree(bundle, older)
    manifest = json.loads((older / "manifest.json").read_text())
    (older / "manifest.json").write_text(json.dumps({**manifest, "created": "2020-01-01T00:00:00+0000"}))
    assert source_run(older / "model.tflite", description) is None
    # Found by name beside the bundle when the recorded path is gone.
    moved = {
        **description,
        "source": {**description["source"], "run": f"gone/{Path(exported['train']).name}"},
    }
    assert source_run(bundle / "model.tflite", moved, near=bundle) is not None
    assert source_run(bundle / "model.tflite", moved) is None

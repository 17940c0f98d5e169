"""A benchmark fleet: the same artifacts on two real OpenSSH servers at once, plus one unreachable device."""

from __future__ import annotations

import csv
import dataclasses
import sys
import threading
import time

import pytest

from edge_fm.bench.benchmark import BenchOptions, SshTarget, bench, compare_devices
from edge_fm.bench.measurements import read_bench
from edge_fm.cli import main
from edge_fm.errors import EdgeFMError

FAST = BenchOptions(threads=(1,), runs=20, min_seconds=0.05, warmup=2)


@pytest.fixture(scope="module")
def fleet(sshd, sshd_factory, tmp_path_factory):
    """Two devices that accept one user key, one known_hosts file with both host keys, and a dead port."""
    second = sshd_factory(client_key=sshd["key"])
    known_hosts = tmp_path_factory.mktemp("fleet") / "known_hosts"
    known_hosts.write_text(sshd["known_hosts"].read_text() + second["known_hosts"].read_text())
    urls = [
        f"ssh://{sshd['user']}@127.0.0.1:{port}" for port in (sshd["port"], second["port"], sshd["free_port"])
    ]
    return {"key": sshd["key"], "known_hosts": known_hosts, "a": urls[0], "b": urls[1], "dead": urls[2]}


@dataclasses.dataclass
class _Recorded(SshTarget):
    """An SSH target that notes when each of its benchmarks ran."""

    log: list = dataclasses.field(default_factory=list)
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)

    def run(self, artifacts, test_set, options):
        started = time.monotonic()
        try:
            return super().run(artifacts, test_set, options)
        finally:
            with self.lock:
                self.log.append((self.name, started, time.monotonic()))


def _device(fleet, url, log, lock):
    port = int(url.rsplit(":", 1)[1])
    return _Recorded(
        host="127.0.0.1",
        user=url.split("//")[1].split("@")[0],
        port=port,
        identity=str(fleet["key"]),
        ssh_options=(f"UserKnownHostsFile={fleet['known_hosts']}", "GlobalKnownHostsFile=/dev/null"),
        python=sys.executable,
        connect_timeout=5,
        log=log,
        lock=lock,
    )


def test_fleet_measures_each_device_once_in_parallel_and_a_dead_one_gets_error_rows(fleet, exported):
    log, lock = [], threading.Lock()
    devices = [_device(fleet, fleet[name], log, lock) for name in ("a", "b", "dead")]
    artifacts = [exported["int8"], exported["fp32"]]
    result = bench(artifacts, devices, FAST, sample=True)

    assert result["targets"] == [fleet["a"], fleet["b"], fleet["dead"]]
    by_device = {name: [r for r in result["rows"] if r["target"] == name] for name in result["targets"]}
    for name in (fleet["a"], fleet["b"]):
        rows = by_device[name]
        assert [(r["format"], r["status"]) for r in rows] == [("int8", "ok"), ("fp32", "ok")], rows
        assert all(r["latency"]["p50_ms"] > 0 and r["examples"] == 1000 for r in rows)
        assert result["environments"][name]["interpreter"] == "ai_edge_litert"
    # The same runner on the same images: the devices agree on every artifact's accuracy.
    assert [r["accuracy"] for r in by_device[fleet["a"]]] == [r["accuracy"] for r in by_device[fleet["b"]]]
    dead = by_device[fleet["dead"]]
    assert [(r["artifact"], r["format"], r["status"]) for r in dead] == [
        (exported["int8"].name, "int8", "error"),
        (exported["fp32"].name, "fp32", "error"),
    ]
    assert all("connection refused" in r["error"] for r in dead)
    assert (
        result["environments"][fleet["dead"]] is None
        and "connection refused" in result["errors"][fleet["dead"]]
    )

    # One benchmark per device, and the two live devices measured at the same time.
    assert sorted(name for name, _, _ in log) == sorted(result["targets"])
    spans = {name: (start, end) for name, start, end in log}
    (a0, a1), (b0, b1) = spans[fleet["a"]], spans[fleet["b"]]
    assert a0 < b1 and b0 < a1, spans

    matrix = compare_devices(result)
    assert matrix["devices"] == result["targets"]
    int8 = next(e for e in matrix["artifacts"] if e["format"] == "int8")
    assert int8["cells"][fleet["a"]]["p50_ms"] > 0 and int8["cells"][fleet["dead"]]["status"] == "error"


@pytest.mark.slow
def test_fleet_from_the_command_line(fleet, exported, tmp_path, capsys):
    out, table = tmp_path / "fleet.json", tmp_path / "fleet.csv"
    code = main(
        [
            "bench",
            str(exported["int8"]),
            str(exported["fp32"]),
            "--sample",
            "--threads",
            "1",
            "--runs",
            "20",
            "--min-seconds",
            "0.05",
            "--target",
            fleet["a"],
            "--target",
            fleet["b"],
            "--target",
            fleet["dead"],
            "--ssh-key",
            str(fleet["key"]),
            "--ssh-option",
            f"UserKnownHostsFile={fleet['known_hosts']}",
            "--ssh-option",
            "GlobalKnownHostsFile=/dev/null",
            "--ssh-timeout",
            "5",
            "--remote-python",
            sys.executable,
            "--compare",
            "--json",
            str(out),
            "--csv",
            str(table),
        ]
    )
    printed = capsys.readouterr()
    assert code == 1, printed.out + printed.err  # a device failed: the exit code says so
    result = read_bench(out)
    assert len(result["rows"]) == 6
    assert {(r["target"], r["status"]) for r in result["rows"]} == {
        (fleet["a"], "ok"),
        (fleet["b"], "ok"),
        (fleet["dead"], "error"),
    }
    with table.open() as handle:
        rows = list(csv.DictReader(handle))
    assert [r["target"] for r in rows] == [fleet["a"]] * 2 + [fleet["b"]] * 2 + [fleet["dead"]] * 2
    text = " ".join(printed.out.split())
    assert (
        "p50 ms / accuracy per device" in text and f"on {fleet['a']}" in text and f"on {fleet['b']}" in text
    )
    assert f"{fleet['dead']} failed (2 artifact(s) not measured)" in text
    int8 = next(r for r in result["rows"] if r["target"] == fleet["a"] and r["format"] == "int8")
    assert f"{int8['latency']['p50_ms']:.3f} ms / {int8['accuracy']:.2%}" in text  # the comparison's cell


def test_one_target_stays_as_it_was_and_a_device_given_twice_is_refused(exported, tmp_path, capsys):
    out = tmp_path / "local.json"
    code = main(
        [
            "bench",
            str(exported["int8"]),
            "--sample",
            "--threads",
            "1",
            "--runs",
            "20",
            "--min-seconds",
            "0.05",
            "--target",
            "local",
            "--json",
            str(out),
        ]
    )
    assert code == 0, capsys.readouterr().err
    result = read_bench(out)
    assert result["target"] == "local" and "targets" not in result
    assert [("target" in r, r["status"]) for r in result["rows"]] == [(False, "ok")]
    with pytest.raises(EdgeFMError, match="given twice"):
        bench([exported["int8"]], ["local", "local"], FAST, sample=True)
    with pytest.raises(EdgeFMError, match="no bench target given"):
        bench([exported["int8"]], [], FAST, sample=True)
    # A tuple of targets is a fleet as a list is (here of one device: a single target's result).
    assert bench([exported["int8"]], ("local",), FAST, sample=True)["target"] == "local"
    code = main(
        [
            "bench",
            str(exported["int8"]),
            "--sample",
            "--target",
            "local",
            "--target",
            "ssh://pi@pi:22",
            "--plot",
            str(tmp_path / "front.png"),
        ]
    )
    assert code == 1 and "--plot draws one device's front" in capsys.readouterr().err


def test_a_fleets_keras_baseline_is_shown_once_and_each_device_changes_against_it(tmp_path):
    from types import SimpleNamespace

    from edge_fm.bench.benchmark import _device_error_rows, _rows_by_device
    from edge_fm.bench.split_file import DataGroup
    from edge_fm.export.bundles import Described

    artifact = tmp_path / "model.tflite"
    keras = {"artifact": "keras", "format": "keras", "status": "ok", "accuracy": 0.90}

    def measured(accuracy, environment):
        row = {"artifact": "m", "path": str(artifact), "format": "int8", "status": "ok", "accuracy": accuracy}
        return {"rows": [row], "environment": environment}, None

    parts = _rows_by_device(
        [SimpleNamespace(name="ssh://a"), SimpleNamespace(name="ssh://b")],
        [DataGroup([artifact])],
        [{"source": "test split"}],
        [[measured(0.89, {"device": "a"}), measured(0.86, {"device": "b"})]],
        [keras],
        {artifact: Described({"format": "int8"}, bare=False)},
    )
    baseline, *devices = parts["rows"]
    assert baseline == {**keras, "target": "local"}  # no device's change written on the shared row
    assert [(row["target"], round(row["accuracy_delta"], 4)) for row in devices] == [
        ("ssh://a", -0.01),
        ("ssh://b", -0.04),
    ]
    assert parts["references"] == {"ssh://a": "keras", "ssh://b": "keras"}
    # A device that fails names a bare file's format as its working devices do: from the file's description.
    bare = {artifact: Described({"format": "int8"}, bare=True)}
    (failed,) = _device_error_rows([artifact], "unreachable", bare)
    assert failed["format"] == "int8" and failed["status"] == "error"

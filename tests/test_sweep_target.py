"""`edge-fm sweep --bench-target`: every trial measures latency on the device the model will run on."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from edge_fm.errors import EdgeFMError
from edge_fm.pipeline.sweep_spec import SweepOptions, build_spec, spec_from_dict

BIN = Path(sys.executable).parent


def test_bench_target_is_local_or_a_device_reached_over_ssh():
    asked = SweepOptions(
        archs="tiny-cnn",
        bench_target="ssh://pi@raspberrypi.local:2222",
        bench_ssh_key="/keys/pi",
        bench_ssh_options=["UserKnownHostsFile=kh"],
        bench_python="python3.11",
    )
    spec = build_spec(asked)
    where = spec.bench_where()
    assert (
        where.name == "ssh://pi@raspberrypi.local:2222"
        and where.identity == "/keys/pi"
        and where.python == "python3.11"
    )
    assert where.ssh_options == ("UserKnownHostsFile=kh",)
    again = spec_from_dict(
        {
            "arch": ["tiny-cnn"],
            "bench_target": spec.bench_target,
            "bench_ssh_options": ["UserKnownHostsFile=kh"],
        }
    )
    assert again.bench_target == spec.bench_target and again.bench_ssh_options == ("UserKnownHostsFile=kh",)
    assert build_spec(SweepOptions(archs="tiny-cnn")).bench_where().name == "local"
    for target, message in (
        ("vela:ethos-u55-128", "ranks by measured latency"),
        ("tflm", "ranks by measured latency"),
        ("ssh://", "write ssh://user@host"),
    ):
        with pytest.raises(EdgeFMError, match=message):
            build_spec(SweepOptions(archs="tiny-cnn", bench_target=target))


@pytest.mark.slow
def test_a_sweep_measures_its_trials_on_the_ssh_device(sshd, tmp_path):
    pytest.importorskip("ray.tune", reason="the cluster extra is not installed")
    target = f"ssh://{sshd['user']}@127.0.0.1:{sshd['port']}"
    args = [
        "sweep",
        "--sample",
        "--arch",
        "tiny-cnn",
        "--set",
        "epochs=1",
        "--format",
        "int8",
        "--min-accuracy",
        "0.5",
        "--runs-dir",
        str(tmp_path),
        "--bench-target",
        target,
        "--bench-ssh-key",
        str(sshd["key"]),
        "--bench-ssh-option",
        f"UserKnownHostsFile={sshd['known_hosts']}",
        "--bench-ssh-option",
        "GlobalKnownHostsFile=/dev/null",
        "--bench-python",
        sys.executable,
    ]
    done = subprocess.run(
        [str(BIN / "edge-fm"), *args],
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    summary = json.loads((tmp_path / "sweep-1" / "sweep.json").read_text())
    assert summary["target"] == target
    from edge_fm.bench.measurements import read_bench

    bench = read_bench(next((tmp_path / "sweep-1" / "trials").rglob("bench.json")))
    assert bench["target"] == target and any(row.get("status") == "ok" for row in bench["rows"])

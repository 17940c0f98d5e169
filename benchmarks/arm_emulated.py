"""The Raspberry Pi software stack without a Pi: the device runner on 64-bit ARM Debian 12.

Builds a minimal arm64 Debian 12 (bookworm, the base of Raspberry Pi OS) user land with
mmdebstrap, adds the aarch64 wheels of ai-edge-litert (the same version as here) and numpy, and
runs ``edge_fm/runner.py`` in it under qemu user-mode emulation on real artifacts. The same
artifacts are then measured natively, and the accuracies compared: the ARM kernels must give the
same answers.

The emulated CPU is named (qemu ``-cpu``): the Cortex-A72 of a Raspberry Pi 4 and the Cortex-A76 of a
Raspberry Pi 5 by default. qemu's default ``max`` CPU is not a Pi: it advertises every optional
feature of the architecture, and on it (qemu 7.2, LiteRT 2.3) the integer artifacts score at chance
while fp32 is exact; add ``--cpus max`` to record that again.

Timings taken under emulation say nothing about a Raspberry Pi: they are recorded as
``emulated_p50_ms`` and never reported as Pi latency.

Needs (Debian): apt-get install qemu-user-static mmdebstrap; network access to Debian and PyPI
for the first build (cached under .cache/arm64-debian12 afterwards).

Usage (from the repository root):
    python benchmarks/arm_emulated.py runs/mlp-fp32-1 runs/mlp-dynamic-1 models/ \
        --cpus cortex-a72,cortex-a76,max --data-dir DATA_DIR
Writes benchmarks/results/arm_emulated.json.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

from edge_fm import runner
from edge_fm.bench.benchmark import BenchOptions, bench, collect_artifacts, write_test_set
from edge_fm.result_files import write_result_file

REPO = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results"
CACHE = REPO / ".cache" / "arm64-debian12"
DEBIAN_PACKAGES = "python3,base-files,libstdc++6,libgcc-s1"
EMULATED_NOTE = "qemu-user emulation on an x86_64 host: timings are NOT Raspberry Pi latency"


def require_tools() -> str:
    qemu = shutil.which("qemu-aarch64-static") or shutil.which("qemu-aarch64")
    if not qemu or not shutil.which("mmdebstrap"):
        sys.exit(
            "error: needs qemu user-mode emulation and mmdebstrap: apt-get install qemu-user-static mmdebstrap"
        )
    return qemu


def build_rootfs(root: Path) -> None:
    """An arm64 Debian 12 user land: Python 3.11 and the C++ runtime, extracted (no scripts run)."""
    if (root / "usr" / "bin" / "python3").exists():
        return
    tmp = root.with_name(root.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    subprocess.run(
        [
            "mmdebstrap",
            "--quiet",
            "--variant=extract",
            "--architectures=arm64",
            f"--include={DEBIAN_PACKAGES}",
            "bookworm",
            str(tmp),
        ],
        check=True,
    )
    fake_arm_cpu(tmp)
    tmp.rename(root)


# qemu -cpu name -> (MIDR part number, /proc/cpuinfo features, what it stands for).
CPUS = {
    "cortex-a72": ("0xd08", "fp asimd evtstrm crc32 cpuid", "Raspberry Pi 4"),
    "cortex-a76": (
        "0xd0b",
        "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp",
        "Raspberry Pi 5",
    ),
    "max": ("0xd0b", "fp asimd evtstrm crc32 cpuid", "qemu's all-features CPU, not a Raspberry Pi"),
}


def fake_arm_cpu(root: Path, cpu: str = "cortex-a72", cores: int = 4) -> None:
    """Describes a 4-core ``cpu`` in the root's /sys and /proc (rewritten before each emulated run).

    qemu-user passes the host's x86 /sys and /proc/cpuinfo through; LiteRT 2.x's CPU detection
    then crashes (SIGSEGV while reading the cache topology). qemu's -L prefix is searched first,
    so these files are what the emulated process reads instead.
    """
    part, features, _ = CPUS[cpu]
    cpu = root / "sys" / "devices" / "system" / "cpu"
    cpu.mkdir(parents=True, exist_ok=True)
    for name in ("possible", "present", "online"):
        (cpu / name).write_text(f"0-{cores - 1}\n")
    for index in range(cores):
        topology = cpu / f"cpu{index}" / "topology"
        topology.mkdir(parents=True, exist_ok=True)
        (topology / "physical_package_id").write_text("0\n")
        (topology / "core_id").write_text(f"{index}\n")
        (topology / "package_cpus_list").write_text(f"0-{cores - 1}\n")
        (topology / "thread_siblings_list").write_text(f"{index}\n")
    (root / "proc").mkdir(exist_ok=True)
    block = (
        "processor\t: {i}\nBogoMIPS\t: 108.00\nFeatures\t: " + features + "\nCPU implementer\t: 0x41\n"
        "CPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: " + part + "\nCPU revision\t: 3\n\n"
    )
    (root / "proc" / "cpuinfo").write_text("".join(block.format(i=i) for i in range(cores)))


def install_wheels(root: Path, litert_version: str) -> Path:
    """The aarch64 wheels of ai-edge-litert and numpy, unpacked into the root's /opt/site."""
    site = root / "opt" / "site"
    marker = site / f".litert-{litert_version}"
    if marker.exists():
        return site
    with tempfile.TemporaryDirectory() as tmp:
        platforms = [f"--platform=manylinux_2_{v}_aarch64" for v in (17, 27, 28, 31, 34, 35, 36)]
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--quiet",
                "--only-binary=:all:",
                *platforms,
                "--python-version=3.11",
                "--implementation=cp",
                "--dest",
                tmp,
                f"ai-edge-litert=={litert_version}",
                "numpy",
            ],
            check=True,
        )
        shutil.rmtree(site, ignore_errors=True)
        site.mkdir(parents=True)
        for wheel in sorted(Path(tmp).glob("*.whl")):
            with zipfile.ZipFile(wheel) as archive:
                archive.extractall(site)
    marker.write_text("")
    return site


def run_emulated(
    qemu: str, cpu: str, root: Path, site: Path, artifacts: list[Path], test_set: Path, options: BenchOptions
) -> dict:
    """The runner under qemu as ``cpu``: one process (no children, which would need binfmt_misc)."""
    fake_arm_cpu(root, cpu)
    command = [
        qemu,
        "-cpu",
        cpu,
        "-L",
        str(root),
        str(root / "usr" / "bin" / "python3"),
        runner.__file__,
        *map(str, artifacts),
        "--test-data",
        str(test_set),
        "--no-isolate",
        "--note",
        f"emulated={EMULATED_NOTE}",
        "--note",
        f"emulated_cpu={cpu}",
        "--json",
        "-",
        *options.runner_args(),
    ]
    done = subprocess.run(
        command, capture_output=True, text=True, env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"}
    )
    if done.returncode != 0:
        sys.exit(f"error: the emulated runner failed on {cpu}: {done.stderr.strip().splitlines()[-1:]}")
    return json.loads(done.stdout)


def _public(environment: dict) -> dict:
    """A runner's environment without the host name (a private machine's)."""
    return {key: value for key, value in environment.items() if key != "hostname"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("artifacts", nargs="+", help="export bundles or .tflite files")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--runs", type=int, default=20, help="timed runs (emulation is slow)")
    parser.add_argument(
        "--cpus",
        default="cortex-a72,cortex-a76",
        help=f"comma list of emulated CPUs ({', '.join(CPUS)}); max is qemu's, not a Pi's",
    )
    args = parser.parse_args(argv)
    cpus = [c for c in args.cpus.split(",") if c]
    if not cpus or any(c not in CPUS for c in cpus):
        sys.exit(f"error: --cpus takes a comma list of {', '.join(CPUS)}; got {args.cpus!r}")
    qemu = require_tools()
    started = time.time()
    litert_version = importlib.metadata.version("ai-edge-litert")
    root = CACHE / "root"
    CACHE.mkdir(parents=True, exist_ok=True)
    build_rootfs(root)
    site = install_wheels(root, litert_version)
    artifacts = collect_artifacts(args.artifacts)
    # One thread everywhere: emulated threads spin-wait on each other and make the run crawl.
    options = BenchOptions(threads=(1,), runs=args.runs, min_seconds=0.0, warmup=2, accuracy_threads=1)
    with tempfile.TemporaryDirectory() as tmp:
        test_set = Path(tmp) / "test.npz"
        test_info = write_test_set(test_set, args.data_dir)
        emulated = {cpu: run_emulated(qemu, cpu, root, site, artifacts, test_set, options) for cpu in cpus}
    native = bench(artifacts, "local", options, data_dir=args.data_dir)
    rows = []
    for index, x86_row in enumerate(native["rows"]):
        # path and sha256 tie the row to the exact file measured, so a re-shipped model shows a stale row.
        row = {
            "artifact": x86_row["artifact"],
            "path": x86_row.get("path"),
            "sha256": x86_row.get("sha256"),
            "format": x86_row.get("format"),
            "status": x86_row["status"],
            "x86_64_accuracy": x86_row.get("accuracy"),
            "x86_64_p50_ms": x86_row.get("latency", {}).get("p50_ms"),
            "aarch64": {},
        }
        for cpu, arm in emulated.items():
            arm_row = arm["rows"][index]
            entry = {"status": arm_row["status"]}
            if arm_row["status"] == "ok" and x86_row["status"] == "ok":
                entry.update(
                    accuracy=arm_row["accuracy"],
                    difference=arm_row["accuracy"] - x86_row["accuracy"],
                    emulated_p50_ms=arm_row["latency"]["p50_ms"],
                )
            else:
                entry["error"] = arm_row.get("error") or x86_row.get("error")
            row["aarch64"][cpu] = entry
        rows.append(row)
        print(json.dumps(row), flush=True)
    pi_cpus = [c for c in cpus if c != "max"]
    pi_entries = [r["aarch64"][c] for r in rows for c in pi_cpus]
    result = {
        "what": "the device runner on 64-bit ARM Debian 12 under qemu user-mode emulation vs natively "
        "on this x86_64 CPU",
        "note": EMULATED_NOTE,
        "cpus": {cpu: CPUS[cpu][2] for cpu in cpus},
        "aarch64_environment": _public(next(iter(emulated.values()))["environment"]),
        "qemu": subprocess.run([qemu, "--version"], capture_output=True, text=True).stdout.splitlines()[0],
        "debian_packages": DEBIAN_PACKAGES,
        "test_set": test_info,
        "rows": rows,
        "all_ok_on_pi_cpus": all(e["status"] == "ok" for e in pi_entries),
        "max_accuracy_difference_on_pi_cpus": max(
            (abs(e.get("difference", 1.0)) for e in pi_entries), default=None
        ),
        "seconds": round(time.time() - started, 1),
    }
    # The x86_64 host ran the command; the aarch64 environment is the emulated one measured.
    host = {**_public(native["environment"]), "description": f"{platform.machine()}, {runner.cpu_model()}"}
    write_result_file(
        RESULTS / "arm_emulated.json",
        "arm-emulated",
        result,
        "python " + " ".join(shlex.quote(a) for a in sys.argv),
        host,
    )
    return 0 if result["all_ok_on_pi_cpus"] and result["max_accuracy_difference_on_pi_cpus"] <= 0.001 else 1


if __name__ == "__main__":
    raise SystemExit(main())

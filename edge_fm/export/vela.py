"""Arm Ethos-U NPUs through Arm's Vela compiler: what a named configuration would run, and its form.

Vela (``ethos-u-vela``, the ``npu`` extra) compiles a full-integer artifact for an Ethos-U
configuration and estimates its SRAM and off-chip memory, the operators placed on the NPU and
those left to the CPU, and the cycles of one inference at the configuration's clock. Every figure
here is Vela's estimate, never a measurement on a device: the rows and records say so.

Example:
    >>> report = estimate("models/edge-cnn-tiny/model.tflite", "ethos-u55-128")  # doctest: +SKIP
    >>> report.npu_ops, report.cpu_ops, report.inferences_per_second  # doctest: +SKIP
"""

from __future__ import annotations

import csv
import dataclasses
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edge_fm.errors import EdgeFMError, NameTable
from edge_fm.export.bundles import (
    Bundle,
    artifact_record,
    check_new_folder,
    is_run,
    model_file,
    new_folder,
    write_bundle,
)
from edge_fm.export.form_options import FormOptions
from edge_fm.io import KB

INSTALL_HINT = "pip install 'edge-fm[npu]' (Arm's ethos-u-vela)"
ESTIMATE_NOTE = "Vela's compile-time estimate for the configuration, not a measurement on a device"
VELA_TIMEOUT_S = 600


@dataclasses.dataclass(frozen=True)
class EthosUConfig:
    """One Ethos-U configuration Vela compiles for (a row of :data:`ETHOS_U_CONFIGS`).

    Attributes:
        name: Vela's accelerator configuration (MAC units per cycle in the suffix).
        system_config: The system of Vela's own ``Arm/vela.ini`` (clock, memory bandwidths).
        memory_mode: Where the tensor arena lives, from the same file.
    """

    name: str
    system_config: str
    memory_mode: str


ETHOS_U_CONFIGS = NameTable(
    "Ethos-U accelerator config",
    (
        EthosUConfig("ethos-u55-32", "Ethos_U55_High_End_Embedded", "Shared_Sram"),
        EthosUConfig("ethos-u55-64", "Ethos_U55_High_End_Embedded", "Shared_Sram"),
        EthosUConfig("ethos-u55-128", "Ethos_U55_High_End_Embedded", "Shared_Sram"),
        EthosUConfig("ethos-u55-256", "Ethos_U55_High_End_Embedded", "Shared_Sram"),
        EthosUConfig("ethos-u65-256", "Ethos_U65_High_End", "Dedicated_Sram_384KB"),
        EthosUConfig("ethos-u65-512", "Ethos_U65_High_End", "Dedicated_Sram_384KB"),
        EthosUConfig("ethos-u85-256", "Ethos_U85_SYS_DRAM_Mid", "Dedicated_Sram_384KB"),
        EthosUConfig("ethos-u85-512", "Ethos_U85_SYS_DRAM_Mid", "Dedicated_Sram_384KB"),
    ),
)
DEFAULT_CONFIGS = ("ethos-u55-128", "ethos-u65-256")


config_names = ETHOS_U_CONFIGS.names


def get_config(name: str) -> EthosUConfig:
    """The Ethos-U configuration called ``name`` (an unknown one: an error listing the known ones)."""
    return ETHOS_U_CONFIGS.get(name)


@dataclasses.dataclass(frozen=True)
class VelaReport:
    """What Vela estimates for one artifact on one configuration.

    Attributes:
        config: The accelerator configuration (``ethos-u55-128``).
        system_config, memory_mode: The system and memory mode compiled for.
        clock_hz: The NPU clock of that system.
        sram_bytes: SRAM used (tensor arena and weight buffers).
        off_chip_bytes: Off-chip memory used (the compiled weights), in ``weights_storage``.
        weights_storage: Where the weights stay (``Off-chip Flash`` or ``DRAM``).
        npu_ops: Operators placed on the NPU (after Vela's own lowering).
        cpu_ops: Operators left to the CPU: ``{"op", "tensor", "reason"}`` each.
        macs: Multiply-accumulates of one inference.
        cycles: NPU cycles of one inference (memory access included).
        inferences_per_second: At ``clock_hz``.
        vela_version: The compiler's version.
    """

    config: str
    system_config: str
    memory_mode: str
    clock_hz: float
    sram_bytes: int
    off_chip_bytes: int
    weights_storage: str
    npu_ops: int
    cpu_ops: tuple[dict[str, str], ...]
    macs: int
    cycles: int
    inferences_per_second: float
    vela_version: str

    @property
    def inference_ms(self) -> float:
        return 1000.0 / self.inferences_per_second if self.inferences_per_second else float("nan")

    def as_dict(self) -> dict[str, Any]:
        return {
            **dataclasses.asdict(self),
            "cpu_ops": [dict(op) for op in self.cpu_ops],
            "inference_ms": self.inference_ms,
            "estimate": True,
            "note": ESTIMATE_NOTE,
        }


def vela_version() -> str:
    """The installed ``ethos-u-vela`` version.

    Raises:
        EdgeFMError: Vela is not installed (with the install command).
    """
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("ethos-u-vela")
    except PackageNotFoundError:
        raise EdgeFMError(f"Ethos-U estimates need Arm's Vela compiler: {INSTALL_HINT}.") from None


def check_integer_artifact(tflite: Path) -> None:
    """Refuses an artifact with float tensors: the NPU runs integer operators only.

    Raises:
        EdgeFMError: A float artifact (with the export that makes an integer one).
    """
    from edge_fm.export.tflite_file import inspect

    if not tflite.is_file():
        raise EdgeFMError(f"{tflite} not found: pass an int8 .tflite artifact or its export bundle.")
    if not inspect(tflite.read_bytes())["integer_only"]:
        raise EdgeFMError(
            f"{tflite} has float tensors: the Ethos-U NPU runs full-integer models only; export it with "
            "`-f int8` (or int8-per-tensor, int16x8) and pass that artifact."
        )


def compile_ethos_u(tflite: Path | str, config_name: str, out_dir: Path | str) -> tuple[VelaReport, Path]:
    """Compiles ``tflite`` with Vela for ``config_name`` into ``out_dir``.

    Args:
        tflite: A full-integer .tflite artifact.
        config_name: One of :func:`config_names`.
        out_dir: An existing folder; Vela writes ``<stem>_vela.tflite`` and its CSV summary there.

    Returns:
        The report and the compiled model's path.

    Raises:
        EdgeFMError: Vela missing, an unknown configuration, a float artifact, or Vela failing.
    """
    config = get_config(config_name)
    version = vela_version()
    tflite = Path(tflite)
    check_integer_artifact(tflite)
    command = [
        sys.executable,
        "-m",
        "ethosu.vela",
        str(tflite),
        "--accelerator-config",
        config.name,
        "--config",
        "Arm/vela.ini",
        "--system-config",
        config.system_config,
        "--memory-mode",
        config.memory_mode,
        "--output-dir",
        str(out_dir),
        "--show-cpu-operations",
    ]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=VELA_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise EdgeFMError(
            f"Vela did not finish compiling {tflite} for {config.name} in {VELA_TIMEOUT_S} s."
        ) from None
    if done.returncode != 0:
        last = next(
            (line for line in reversed((done.stderr + done.stdout).splitlines()) if line.strip()), "no output"
        )
        raise EdgeFMError(f"Vela could not compile {tflite} for {config.name}: {last.strip()[:300]}")
    summaries = sorted(Path(out_dir).glob(f"{tflite.stem}_summary_*.csv"))
    compiled = Path(out_dir) / f"{tflite.stem}_vela.tflite"
    if not summaries or not compiled.is_file():
        raise EdgeFMError(f"Vela compiled {tflite} but wrote no summary or model in {out_dir}.")
    return parse_report(config, done.stdout, summaries[-1], version), compiled


_OPS_LINE = re.compile(r"^(CPU|NPU) operators = (\d+)")
_CPU_OP = re.compile(r"^\s+CPU: (\S+) = (.*?)(?: \(outputs .*\))?$")
_REASON = re.compile(r"^Warning \(supported operators\) operator: (\S+), ofm: '(.*)'$")


def parse_report(config: EthosUConfig, stdout: str, summary_csv: Path, version: str) -> VelaReport:
    """Vela's printed placement (``--show-cpu-operations``) and its CSV summary, as a :class:`VelaReport`."""
    with summary_csv.open(newline="") as handle:
        summary = next(csv.DictReader(handle))
    counts: dict[str, int] = {}
    reasons: dict[str, tuple[str, str]] = {}
    cpu_ops: list[dict[str, str]] = []
    lines = stdout.splitlines()
    for index, line in enumerate(lines):
        if match := _OPS_LINE.match(line):
            counts[match.group(1)] = int(match.group(2))
        elif match := _CPU_OP.match(line):
            cpu_ops.append({"op": match.group(1), "tensor": match.group(2)})
        elif (match := _REASON.match(line)) and index + 1 < len(lines):
            reasons[match.group(2)] = (match.group(1), lines[index + 1].removeprefix("Reason:").strip())
    for op in cpu_ops:
        # Vela lowers an op it cannot place to its own "Passthrough"; its warning names the TFLite op.
        op["op"], op["reason"] = reasons.get(op["tensor"], (op["op"], "not supported on the NPU"))
    if counts.get("CPU", 0) and not cpu_ops:  # older Vela prints no list; the count still says it
        cpu_ops = [{"op": "?", "tensor": "?", "reason": "not listed by this Vela"}] * counts["CPU"]
    memory = {
        "Off-chip Flash": "off_chip_flash_memory_used",
        "DRAM": "dram_memory_used",
        "On-chip Flash": "on_chip_flash_memory_used",
    }
    storage = summary.get("weights_storage_area", "Off-chip Flash")
    return VelaReport(
        config=config.name,
        system_config=config.system_config,
        memory_mode=config.memory_mode,
        clock_hz=float(summary["core_clock"]),
        sram_bytes=round(float(summary["sram_memory_used"]) * 1024),
        off_chip_bytes=round(float(summary.get(memory.get(storage, ""), 0) or 0) * 1024),
        weights_storage=storage,
        npu_ops=counts.get("NPU", 0),
        cpu_ops=tuple(cpu_ops),
        macs=int(float(summary["nn_macs"])),
        cycles=int(float(summary["cycles_total"])),
        inferences_per_second=float(summary["inferences_per_second"]),
        vela_version=version,
    )


def estimate(tflite: Path | str, config_name: str) -> VelaReport:
    """Vela's estimate for ``tflite`` on ``config_name``, compiled in a temporary folder (:func:`compile_ethos_u`)."""
    with tempfile.TemporaryDirectory(prefix="edge-fm-vela-") as tmp:
        return compile_ethos_u(tflite, config_name, tmp)[0]


def cpu_ops_text(report: VelaReport) -> str:
    """``all N ops on the NPU`` or the ops left to the CPU, with Vela's reason."""
    if not report.cpu_ops:
        return f"all {report.npu_ops} ops on the NPU"
    left = "; ".join(f"{op['op']} ({op['reason'][:120]})" for op in report.cpu_ops)
    return f"{report.npu_ops} ops on the NPU, {len(report.cpu_ops)} left to the CPU: {left}"


def ethos_u_text(record: dict) -> str:
    """One line for an Ethos-U bundle's ``ethos_u`` record: the configuration, memory, placement and estimate."""
    fields = {f: record[f] for f in VelaReport.__dataclass_fields__}
    report = VelaReport(**{**fields, "cpu_ops": tuple(fields["cpu_ops"])})
    return (
        f"compiled by Vela {report.vela_version} for {report.config} ({report.system_config}, "
        f"{report.clock_hz / 1e6:.0f} MHz): SRAM {report.sram_bytes / KB:.1f} KB, {report.weights_storage} "
        f"{report.off_chip_bytes / KB:.1f} KB; {cpu_ops_text(report)}; {report.cycles:,} cycles, "
        f"{report.inferences_per_second:,.0f} inferences/s (estimate, not measured); "
        f"{record['compiled']['file']} is for TFLM's Ethos-U delegate"
    )


# ---------------------------------------------------------------- the Ethos-U form


COMPILED_FILE = "model_vela.tflite"  # the Ethos-U form's compiled model, beside the int8 model.tflite


def export_ethos_u(
    source: Path | str,
    config_name: str,
    out: Path | str | None = None,
    runs_dir: Path | str = "runs",
    progress: Callable[[str], None] | None = None,
) -> Path:
    """Writes the Ethos-U form of an integer artifact: the Vela-compiled model and Vela's report, in a bundle.

    The bundle (``runs/<name>-ethos-u55-128-N/``, or ``out``) holds :data:`COMPILED_FILE` (the model
    with its NPU command stream, for TFLM's Ethos-U delegate), the integer model it came from, its
    labels, and a description with an ``ethos_u`` record (Vela's estimate).

    Args:
        source: A full-integer export bundle or .tflite file (e.g. ``models/edge-cnn-tiny``).
        config_name: One of :func:`config_names`.
        out: The bundle folder (must not exist, or be empty); default a new one under ``runs_dir``.
        runs_dir: Where new bundles are created.
        progress: Called with a line at each step.

    Raises:
        EdgeFMError: Unknown configuration, a float artifact, Vela missing or failing; nothing is written.
    """
    say = progress or (lambda line: None)
    config = get_config(config_name)
    source = Path(source)
    if is_run(source):
        raise EdgeFMError(
            f"{source} is a run: export it first (`edge-fm export {source} -f int8`) and pass the bundle."
        )
    tflite = model_file(source)
    if tflite is None:
        raise EdgeFMError(f"{source} not found: pass an int8 export bundle or .tflite file.")
    if out is not None:
        check_new_folder(out)
    model = Bundle.open(tflite, embedded=True)
    with tempfile.TemporaryDirectory(prefix="edge-fm-vela-") as tmp:
        say(f"compiling {tflite} with Vela for {config.name}")
        report, compiled = compile_ethos_u(tflite, config.name, tmp)
        compiled_bytes = compiled.read_bytes()
    description = dict(model.description) or {"name": model.name, "labels": list(model.labels)}
    description["target"] = "ethos-u"
    description["ethos_u"] = {
        **report.as_dict(),
        "compiled": artifact_record(compiled_bytes, COMPILED_FILE),
        "source": str(tflite),
    }
    bundle = new_folder(out, runs_dir, f"{description.get('name', model.name)}-{config.name}")
    say(f"writing {bundle}")
    manifest = {
        "stage": "export",
        "parent": str(tflite),
        "format": description.get("format"),
        "target": "ethos-u",
        "accelerator_config": config.name,
        "status": "complete",
    }
    return write_bundle(
        bundle, model.flatbuffer, description, model.labels, manifest, files={COMPILED_FILE: compiled_bytes}
    )


def export_ethos_u_form(source: Path | str, options: FormOptions = FormOptions()) -> Path:
    """The Ethos-U form of a run or of an integer bundle, compiled for ``options.accelerator_config``.

    A run is exported first as ``options.format_name`` (default: qat-int8 for a QAT run, else int8), in
    the format's own input dtype. Reads also ``representative_size``, ``parity_images`` (the run's export
    parity check), ``out``, ``runs_dir``, ``data_dir`` and ``progress``.

    Raises:
        EdgeFMError: No configuration, a float format, or whatever :func:`export_ethos_u` refuses.
    """
    config_name = options.accelerator_config
    if not config_name:
        raise EdgeFMError("the Ethos-U form needs --accelerator-config (e.g. ethos-u55-128).")
    get_config(config_name)  # an unknown config is refused before any work
    if is_run(source):
        from edge_fm.export.exporter import export_integer  # TensorFlow: a run only

        if options.out is not None:
            check_new_folder(options.out)
        source = export_integer(source, options, "the Ethos-U form", io_dtype=None)
    elif options.format_name is not None:
        raise EdgeFMError(
            f"{source} is not a run, so there is nothing to export as {options.format_name}: drop the format "
            "to use the model as it is."
        )
    return export_ethos_u(source, config_name, options.out, options.runs_dir, options.progress)

"""What each runtime will run of an artifact: CPU (XNNPACK), the GPU delegate, Ethos-U NPUs and TFLM.

One function, :func:`runs_on`, answers for any .tflite file, before any device is bought; ``edge-fm
inspect`` prints it and the model cards carry it. Each answer says how it was obtained:

- CPU: measured. LiteRT's interpreter is loaded with its default XNNPACK delegate and its execution
  plan read back: the ops inside the delegate's partitions run on XNNPACK, the others on LiteRT's
  built-in kernels.
- GPU delegate: LiteRT's own model analyzer with its GPU compatibility check (a static check; the
  analyzer itself warns that runtime incompatibilities may remain).
- Ethos-U: Arm's Vela compiler (``edge_fm.export.vela``), an estimate.
- TFLM: TFLM's interpreter, here, finds the ops it lacks and the smallest arena (``edge_fm.export.tflm``).

Example:
    >>> report = runs_on("models/edge-cnn-tiny/model.tflite")  # doctest: +SKIP
    >>> report["cpu"]["delegated_ops"], report["gpu"]["compatible"]  # doctest: +SKIP
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edge_fm.errors import EdgeFMError
from edge_fm.io import KB

MEASURED = "measured"
ESTIMATED = "estimated"
CHECKED = "static check"


def cpu_delegation(tflite: Path | str) -> dict[str, Any]:
    """Which ops XNNPACK takes on the CPU and which run on LiteRT's built-in kernels (measured).

    Returns:
        ``delegated_ops`` and ``builtin_ops`` (op kinds with counts), ``partitions`` (XNNPACK
        partitions), ``ops`` (each op's index, kind and runtime) and ``how``.
    """
    from ai_edge_litert import interpreter as litert

    from edge_fm.runner import native_stderr_silenced

    with native_stderr_silenced():  # LiteRT's delegate notice
        interpreter = litert.Interpreter(model_path=str(tflite))
        interpreter.allocate_tensors()
    details = (
        interpreter._get_ops_details()
    )  # the execution plan: original ops, then one DELEGATE node per partition
    producer = {int(t): op for op in details if op["op_name"] != "DELEGATE" for t in op["outputs"]}
    delegated: set[int] = set()
    partitions = [op for op in details if op["op_name"] == "DELEGATE"]
    for partition in partitions:
        boundary = {int(t) for t in partition["inputs"]}
        stack = [int(t) for t in partition["outputs"]]
        while stack:  # walk back from the partition's outputs to its inputs: every op on the way is inside
            tensor = stack.pop()
            op = producer.get(tensor)
            if tensor in boundary or op is None or op["index"] in delegated:
                continue
            delegated.add(op["index"])
            stack.extend(int(t) for t in op["inputs"] if t >= 0)
    ops = [
        {
            "index": op["index"],
            "op": op["op_name"],
            "runtime": "XNNPACK" if op["index"] in delegated else "built-in",
        }
        for op in details
        if op["op_name"] != "DELEGATE"
    ]
    return {
        "delegated_ops": _counts(op["op"] for op in ops if op["runtime"] == "XNNPACK"),
        "builtin_ops": _counts(op["op"] for op in ops if op["runtime"] != "XNNPACK"),
        "partitions": len(partitions),
        "ops": ops,
        "how": MEASURED,
        "note": "LiteRT's interpreter with its default XNNPACK delegate, execution plan read back",
    }


def _counts(names) -> dict[str, int]:
    counts: dict[str, int] = {}
    for name in names:
        counts[name] = counts.get(name, 0) + 1
    return counts


_GPU_OK = "looks compatible with GPU delegate"
_OP_LINE = re.compile(r"^\s*Op#(\d+) (\S+?)\(")
_GPU_WARNING = "GPU COMPATIBILITY WARNING:"


def parse_gpu_analysis(text: str) -> dict[str, Any]:
    """LiteRT's model analyzer report (with its GPU check) as ``compatible`` and the ``incompatible_ops``.

    The analyzer prints ``GPU COMPATIBILITY WARNING: <reason>`` under each op the GPU delegate cannot
    take, and ends with "Your model looks compatible with GPU delegate" when there is none.
    """
    incompatible, last_op = [], None
    for line in text.splitlines():
        if match := _OP_LINE.match(line):
            last_op = {"index": int(match.group(1)), "op": match.group(2)}
        elif line.strip().startswith(_GPU_WARNING) and last_op is not None:
            incompatible.append({**last_op, "reason": line.strip().removeprefix(_GPU_WARNING).strip()})
            last_op = None
    version = re.search(r"on TFLite runtime version (\S+?)\.?$", text, re.MULTILINE)
    return {
        "compatible": _GPU_OK in text and not incompatible,
        "incompatible_ops": incompatible,
        "runtime_version": version.group(1) if version else None,
    }


def gpu_compatibility(tflite: Path | str) -> dict[str, Any]:
    """LiteRT's model analyzer's GPU delegate check of an artifact (a static check, not a run on a GPU)."""
    from ai_edge_litert import _pywrap_analyzer_wrapper as analyzer

    report = parse_gpu_analysis(analyzer.ModelAnalyzer(str(tflite), True, True))
    return {
        **report,
        "how": CHECKED,
        "note": "LiteRT's model analyzer with GPU compatibility; runtime incompatibilities may remain",
    }


def ethos_u(tflite: Path | str, configs: Sequence[str]) -> list[dict[str, Any]]:
    """Vela's estimate per configuration; a float artifact or Vela missing is one entry with its ``error``."""
    from edge_fm.export import vela

    out = []
    for config in configs:
        try:
            out.append({**vela.estimate(tflite, config).as_dict(), "how": ESTIMATED})
        except EdgeFMError as exc:
            out.append({"config": config, "error": str(exc), "how": ESTIMATED})
    return out


def tflm(tflite: Path | str) -> dict[str, Any]:
    """Whether TFLM runs the artifact here, the ops it lacks, and the arena it needs (measured under TFLM)."""
    from edge_fm.export import tflm as mcu

    flatbuffer = Path(tflite).read_bytes()
    too_big = larger_than_every_flash(len(flatbuffer))
    if too_big:  # TFLM's Python interpreter crashes on such a model; no board would hold it anyway
        return {"runs": False, "unsupported_ops": [], "error": too_big, "how": CHECKED}
    try:
        mcu.check_int8_model(flatbuffer, tflite)
        arena = mcu.find_arena(flatbuffer)
    except EdgeFMError as exc:
        ops, _ = _missing_ops(flatbuffer)
        return {"runs": False, "unsupported_ops": ops, "error": str(exc), "how": MEASURED}
    return {
        "runs": True,
        "unsupported_ops": [],
        "arena_bytes": arena.bytes,
        "arena_min_bytes": arena.min_bytes,
        "flash_bytes": len(flatbuffer),
        "tflite_micro_version": mcu.tflm_version(),
        "how": MEASURED,
        "note": "TFLM's interpreter on this computer; arena = the smallest that ran + margin",
    }


def larger_than_every_flash(size: int) -> str:
    """Why no microcontroller runs a model of ``size`` bytes, or "" when some board's flash holds it."""
    from edge_fm.export.boards import BOARDS

    largest = max(BOARDS, key=lambda board: board.flash_bytes)
    if size <= largest.flash_bytes:
        return ""
    return (
        f"at {size:,} bytes the model is larger than the flash of every board checked (the largest, "
        f"{largest.name}, has {largest.flash_bytes:,} bytes)"
    )


def _missing_ops(flatbuffer: bytes) -> tuple[list[str], str | None]:
    from edge_fm.export import tflm as mcu

    try:
        return mcu.unsupported_ops(flatbuffer)
    except EdgeFMError:
        return [], None


RUNTIMES = ("cpu", "gpu", "ethos-u", "tflm")


def runs_on(
    tflite: Path | str, ethos_u_configs: Sequence[str] | None = None, runtimes: Sequence[str] = RUNTIMES
) -> dict[str, Any]:
    """What each runtime runs of ``tflite``: CPU/XNNPACK, the GPU delegate, Ethos-U (Vela) and TFLM.

    A runtime whose tool is missing (Vela, tflite-micro) or that refuses the model is an entry with
    its ``error``, never an exception: one answer does not hide the others.

    Args:
        tflite: The .tflite file.
        ethos_u_configs: Ethos-U configurations to estimate (default ``edge_fm.export.vela.DEFAULT_CONFIGS``).
        runtimes: Which of :data:`RUNTIMES` to answer for.

    Returns:
        ``{"cpu": ..., "gpu": ..., "ethos_u": [...], "tflm": ...}``, each with ``how`` it was obtained.
    """
    from edge_fm.export import vela

    tflite = Path(tflite)
    if not tflite.is_file():
        raise EdgeFMError(f"{tflite} not found: pass a .tflite file or an export bundle.")
    answer: dict[str, Any] = {}
    steps = {
        "cpu": ("cpu", lambda: cpu_delegation(tflite)),
        "gpu": ("gpu", lambda: gpu_compatibility(tflite)),
        "ethos-u": ("ethos_u", lambda: ethos_u(tflite, ethos_u_configs or vela.DEFAULT_CONFIGS)),
        "tflm": ("tflm", lambda: tflm(tflite)),
    }
    for runtime in runtimes:
        key, step = steps[runtime]
        try:
            answer[key] = step()
        except EdgeFMError as exc:
            answer[key] = {"error": str(exc)}
        except (
            ImportError,
            RuntimeError,
            ValueError,
        ) as exc:  # a missing or failing tool is that runtime's answer
            answer[key] = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"}
    return answer


def summary_rows(report: dict[str, Any]) -> list[dict[str, str]]:
    """One row per runtime, ``runtime``, ``answer`` and ``how``: the cards' "runs on" table and inspect's."""
    rows = []
    if cpu := report.get("cpu"):
        if "error" in cpu:
            rows.append({"runtime": "CPU (LiteRT, XNNPACK)", "answer": cpu["error"], "how": MEASURED})
        else:
            taken, rest = sum(cpu["delegated_ops"].values()), sum(cpu["builtin_ops"].values())
            left = f"; built-in kernels: {_kinds(cpu['builtin_ops'])}" if rest else ""
            rows.append(
                {
                    "runtime": "CPU (LiteRT, XNNPACK)",
                    "answer": f"XNNPACK takes {taken} of {taken + rest} ops{left}",
                    "how": MEASURED,
                }
            )
    if gpu := report.get("gpu"):
        if "error" in gpu:
            answer = gpu["error"]
        elif gpu["compatible"]:
            answer = "compatible (LiteRT's analyzer)"
        else:
            answer = "not compatible: " + ", ".join(
                f"{op['op']} ({op['reason']})" for op in gpu["incompatible_ops"]
            )
        rows.append({"runtime": "GPU delegate", "answer": answer, "how": CHECKED})
    for entry in report.get("ethos_u", []):
        if "error" in entry:
            answer = entry["error"]
        else:
            from edge_fm.export.vela import VelaReport, cpu_ops_text

            fields = {f: entry[f] for f in VelaReport.__dataclass_fields__}
            estimate = VelaReport(**{**fields, "cpu_ops": tuple(fields["cpu_ops"])})
            answer = (
                f"{cpu_ops_text(estimate)}; SRAM {estimate.sram_bytes / KB:.1f} KB, "
                f"{estimate.weights_storage} {estimate.off_chip_bytes / KB:.1f} KB; "
                f"{estimate.inferences_per_second:,.0f} inferences/s at {estimate.clock_hz / 1e6:.0f} MHz"
            )
        rows.append(
            {
                "runtime": f"Arm {entry['config'].replace('ethos-u', 'Ethos-U')} (Vela)",
                "answer": answer,
                "how": ESTIMATED,
            }
        )
    if micro := report.get("tflm"):
        if micro.get("runs"):
            answer = (
                f"runs; arena {micro['arena_bytes']:,} B (smallest {micro['arena_min_bytes']:,} B + margin), "
                f"flash {micro['flash_bytes']:,} B"
            )
        else:
            answer = micro.get("error", "does not run")
        rows.append(
            {"runtime": "TFLM (microcontrollers)", "answer": answer, "how": micro.get("how", MEASURED)}
        )
    return rows


def _kinds(counts: dict[str, int]) -> str:
    return ", ".join(f"{name} x{count}" if count > 1 else name for name, count in counts.items())

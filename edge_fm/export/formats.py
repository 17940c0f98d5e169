"""The table of export formats: the exporter, the benchmark and the CLI read it, by name.

Its own module, free of TensorFlow, so that what only needs the table (the CLI's option checks,
the pipeline's config) starts fast.
"""

from __future__ import annotations

import dataclasses

from edge_fm.errors import NameTable

IO_DTYPES = ("int8", "uint8", "float32")


@dataclasses.dataclass(frozen=True)
class ExportFormat:
    """One row of the format table; the exporter, the benchmark and the CLI all read it by name.

    Attributes:
        name: The format's name (CLI choice, bundle directory name).
        suffix: The artifact's file suffix.
        quantization: What the converter does to weights and activations.
        io_dtypes: Input/output dtypes the format can have; the first is the default.
        integer: True when activations are int8, so the parity rule is accuracy, not agreement.
        needs_qat: True when the source must be a quantization-aware run.
        per_channel: Integer formats: one weight scale per output channel (False: one per tensor,
            what some NPUs need).
        activation_bits: Integer formats: 8, or 16 (int16 activations with int8 weights).
    """

    name: str
    suffix: str
    quantization: str
    io_dtypes: tuple[str, ...]
    integer: bool
    needs_qat: bool = False
    per_channel: bool = True
    activation_bits: int = 8


FORMATS = NameTable(
    "export format",
    (
        ExportFormat("fp32", ".tflite", "none (float32)", ("float32",), integer=False),
        ExportFormat("fp16", ".tflite", "float16 weights", ("float32",), integer=False),
        ExportFormat(
            "dynamic", ".tflite", "dynamic-range int8 weights, float activations", ("float32",), integer=False
        ),
        ExportFormat(
            "int8", ".tflite", "full-integer post-training int8 (calibrated)", IO_DTYPES, integer=True
        ),
        ExportFormat(
            "int8-per-tensor",
            ".tflite",
            "full-integer post-training int8, one scale per weight tensor (calibrated)",
            IO_DTYPES,
            integer=True,
            per_channel=False,
        ),
        ExportFormat(
            "int16x8",
            ".tflite",
            "post-training int16 activations, int8 weights (calibrated)",
            ("int16", "float32"),
            integer=True,
            activation_bits=16,
        ),
        ExportFormat(
            "qat-int8",
            ".tflite",
            "full-integer int8 from quantization-aware training",
            IO_DTYPES,
            integer=True,
            needs_qat=True,
        ),
    ),
)


format_names = FORMATS.names


def get_format(name: str) -> ExportFormat:
    """The export format called ``name`` (an unknown one: an error listing the known ones)."""
    return FORMATS.get(name)

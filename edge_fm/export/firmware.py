"""The firmware sources of an int8 model: what a microcontroller build compiles with TFLM.

``<name>_model_data.h/.cc`` (the model as an aligned C array and its length),
``<name>_op_resolver.h`` (a ``MicroMutableOpResolver<N>`` with exactly the model's ops),
``<name>_model_settings.h`` (arena size, quantization, labels) and ``<name>_example.cc`` (the calls
a sketch makes), each rendered from its template under ``edge_fm/templates/firmware/``.

Example:
    >>> sources = firmware_sources("mlp-qat-int8", flatbuffer, labels, ops, arena, io)  # doctest: +SKIP
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from collections.abc import Sequence

import jinja2

from edge_fm.errors import unknown_choice
from edge_fm.export.bundles import FIRMWARE_FOLDER, MODEL_FILE
from edge_fm.export.tflm import ARENA_ALIGNMENT, ARENA_MARGIN, Arena

# The firmware files, by role, in the order a build reads them.
ROLES = ("model_data_h", "model_data_cc", "op_resolver", "settings", "example")
BYTES_PER_LINE = 12
# Where the model's C array comes from: written into the form (source), or written at build time from the
# form's model.tflite by a script of the form (script), since the array is about six times the model's size.
C_ARRAY_MODES = ("source", "script")
MODEL_DATA_SCRIPT = "make_model_data.py"

# MicroMutableOpResolver's Add* methods are the op names in CamelCase, except these.
_RESOLVER_METHODS = {
    "BATCH_MATMUL": "AddBatchMatMul",
    "CUMSUM": "AddCumSum",
    "PADV2": "AddPadV2",
    "SELECT_V2": "AddSelectV2",
    "RELU_N1_TO_1": "AddReluN1To1",
    "RELU_0_TO_1": "AddRelu0To1",
    "UNIDIRECTIONAL_SEQUENCE_LSTM": "AddUnidirectionalSequenceLSTM",
}


def roles(c_array_mode: str = "source") -> tuple[str, ...]:
    """The firmware files' roles in the order :func:`firmware_sources` returns them."""
    return tuple(
        "model_data_script" if role == "model_data_cc" and c_array_mode == "script" else role
        for role in ROLES
    )


def c_identifier(name: str) -> str:
    """``edge-cnn-tiny`` -> ``edge_cnn_tiny``: a name usable in C and C++."""
    identifier = re.sub(r"\W+", "_", name).strip("_").lower() or "model"
    return f"m_{identifier}" if identifier[0].isdigit() else identifier


def resolver_method(op: str) -> str:
    """The ``MicroMutableOpResolver`` method that registers ``op`` (``CONV_2D`` -> ``AddConv2D``)."""
    if op in _RESOLVER_METHODS:
        return _RESOLVER_METHODS[op]
    return "Add" + "".join(part if part[0].isdigit() else part.capitalize() for part in op.split("_"))


def parse_c_array(source: str, symbol: str) -> bytes:
    """The bytes of array ``symbol`` in generated C source, checked against its ``_len``.

    Raises:
        ValueError: No such array, or its length does not match.
    """
    match = re.search(rf"{re.escape(symbol)}\[\]\s*=\s*\{{(.*?)\}};", source, re.S)
    length = re.search(rf"{re.escape(symbol)}_len\s*=\s*(\d+);", source)
    if not match or not length:
        raise ValueError(f"no array {symbol} in the source")
    data = bytes(int(value, 16) for value in re.findall(r"0x([0-9a-fA-F]{2})", match.group(1)))
    if len(data) != int(length.group(1)):
        raise ValueError(f"{symbol} holds {len(data)} bytes but {symbol}_len says {length.group(1)}")
    return data


@functools.cache
def _templates() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("edge_fm", "templates/firmware"),
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
    )


def _header_guard(filename: str) -> str:
    return re.sub(r"\W", "_", filename).upper() + "_"


def input_shape(flatbuffer: bytes) -> tuple[int, int, int]:
    """``(height, width, channels)`` of a model's image input."""
    from edge_fm.export import tflite_file

    graph = tflite_file.read(flatbuffer).subgraphs[0]
    shape = [int(d) for d in graph.tensors[graph.inputs[0]].shape]
    return shape[1], shape[2], shape[3] if len(shape) > 3 else 1


def firmware_sources(
    name: str,
    flatbuffer: bytes,
    labels: Sequence[str],
    ops: Sequence[str],
    arena: Arena,
    io: dict[str, float],
    ident: str | None = None,
    c_array_mode: str = "source",
    folder: str = FIRMWARE_FOLDER,
    input_note: str = ", light object on black (Fashion-MNIST)",
) -> dict[str, str]:
    """The text of each firmware file of an int8 model, by file name (in the order of :func:`roles`).

    Args:
        name: The model's name, for the files' comments.
        flatbuffer: The .tflite bytes.
        labels: Class names in output order.
        ops: The model's ops, in the order the resolver registers them.
        arena: The tensor arena it needs under TFLM.
        io: ``input_scale``, ``input_zero_point``, ``output_scale`` and ``output_zero_point``.
        ident: The C name of the model (default: from ``name``, e.g. ``mlp_qat_int8``).
        c_array_mode: ``source`` writes ``<ident>_model_data.cc``; ``script`` writes instead
            ``make_model_data.py``, a dependency-free script that writes the same file from the form's
            ``model.tflite`` at build time.
        folder: The firmware folder's name inside the form, for the script's usage line.
        input_note: What the input pixels show, for the settings' comment (the model's data).

    Raises:
        EdgeFMError: An unknown ``c_array_mode``.
    """
    if c_array_mode not in C_ARRAY_MODES:
        raise unknown_choice("--c-array", c_array_mode, C_ARRAY_MODES)
    ident = ident or c_identifier(name)
    symbol = f"g_{ident}_model"
    header = f"{ident}_model_data.h"
    rows = [
        ", ".join(f"0x{byte:02x}" for byte in flatbuffer[start : start + BYTES_PER_LINE])
        for start in range(0, len(flatbuffer), BYTES_PER_LINE)
    ]
    sha256 = hashlib.sha256(flatbuffer).hexdigest()
    model_data = (
        (f"{ident}_model_data.cc", "model_data.cc.j2", {"rows": rows, "size": len(flatbuffer)})
        if c_array_mode == "source"
        else (
            MODEL_DATA_SCRIPT,
            "make_model_data.py.j2",
            {
                "cc_name": f"{ident}_model_data.cc",
                "per_line": BYTES_PER_LINE,
                "script_path": f"{folder}/{MODEL_DATA_SCRIPT}",
            },
        )
    )
    files = {
        header: ("model_data.h.j2", {"symbol": symbol}),
        model_data[0]: (
            model_data[1],
            {"symbol": symbol, "header": header, "sha256": sha256, **model_data[2]},
        ),
        f"{ident}_op_resolver.h": ("op_resolver.h.j2", {"ops": [(op, resolver_method(op)) for op in ops]}),
        f"{ident}_model_settings.h": (
            "model_settings.h.j2",
            {
                "arena": arena,
                "margin": f"{ARENA_MARGIN:.0%}",
                # repr: the shortest text that reads back as the same float.
                "input_scale": repr(io["input_scale"]),
                "input_zero_point": io["input_zero_point"],
                "output_scale": repr(io["output_scale"]),
                "output_zero_point": io["output_zero_point"],
                # JSON's string quoting is C's for printable ASCII, escapes included.
                "labels": [json.dumps(label) for label in labels],
            },
        ),
        f"{ident}_example.cc": ("example.cc.j2", {}),
    }
    height, width, channels = input_shape(flatbuffer)
    common = {
        "name": name,
        "ident": ident,
        "alignment": ARENA_ALIGNMENT,
        "height": height,
        "width": width,
        "channels": channels,
        "input_note": input_note,
        "model_file": MODEL_FILE,
    }
    return {
        filename: _templates()
        .get_template(template)
        .render(guard=_header_guard(filename), **common, **values)
        for filename, (template, values) in files.items()
    }

"""Standard TFLite Metadata for image classifiers, written with the plain ``flatbuffers`` package.

MediaPipe Tasks, the TFLite Task Library and Android Studio's ML Model Binding read a model's
description from one metadata entry, ``TFLITE_METADATA``: a ``ModelMetadata`` flatbuffer (file
identifier ``M001``) whose tables are those of the official metadata schema (``metadata_schema.fbs``
of tflite-support and MediaPipe, schema 1.5). Files it names, such as the labels, are packed into
the .tflite file itself as a zip archive appended after the model, as the official populator does.

The official writers cannot live in edge-fm's environment (they pin protobuf, numpy or absl-py
below what TensorFlow needs), so this module builds the same bytes with ``flatbuffers.Builder``
directly. Table slots below follow the schema's field order; a union takes two slots (its type,
then its value).

Example:
    >>> info = ImageClassifierInfo(name="cnn", description="...", labels=["a", "b"])  # doctest: +SKIP
    >>> tflite = populate(tflite, build_metadata(info), {LABELS_FILE: labels_file(info.labels)})  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import io
import zipfile

import flatbuffers
import numpy as np

from edge_fm.errors import EdgeFMError

METADATA_NAME = "TFLITE_METADATA"
METADATA_IDENTIFIER = b"M001"
MODEL_IDENTIFIER = b"TFL3"
LABELS_FILE = "labels.txt"
# The fields written here all exist since schema 1.0.0, the oldest parser version.
MIN_PARSER_VERSION = "1.0.0"

# Enum values of metadata_schema.fbs.
_ASSOCIATED_FILE_TENSOR_AXIS_LABELS = 2
_COLOR_SPACES = {"RGB": 1, "GRAYSCALE": 2}
_CONTENT_FEATURE_PROPERTIES = 1  # ContentProperties union members, 1-based
_CONTENT_IMAGE_PROPERTIES = 2
_PROCESS_UNIT_NORMALIZATION = 1  # ProcessUnitOptions union member


@dataclasses.dataclass(frozen=True)
class ImageClassifierInfo:
    """What the standard metadata of an image classifier says.

    Attributes:
        name: The model's name, shown by model viewers and code generators.
        description: One paragraph on what the model does.
        labels: Class names, in the order of the output's probabilities.
        version: The model's version string.
        author: Who made the model.
        license: The model's license.
        color_space: ``RGB`` or ``GRAYSCALE``: what the input image's channels are.
        mean: Per-channel mean the client subtracts from pixels before the model (``(p - mean) / std``).
        std: Per-channel divisor, likewise.
        input_description: What the input tensor holds.
        output_description: What the output tensor holds.
    """

    name: str
    description: str
    labels: tuple[str, ...]
    version: str = "1"
    author: str = ""
    license: str = ""
    color_space: str = "RGB"  # the input's channels
    mean: tuple[float, ...] = (0.0,)  # raw pixels: nothing subtracted
    std: tuple[float, ...] = (1.0,)  # raw pixels: nothing divided
    input_description: str = "Image to classify, raw pixel values 0-255."
    output_description: str = "Probability of each class, in the order of the labels file."

    def __post_init__(self) -> None:
        object.__setattr__(self, "labels", tuple(self.labels))
        if self.color_space not in _COLOR_SPACES:
            raise EdgeFMError(f"color space must be one of {', '.join(_COLOR_SPACES)}, not {self.color_space!r}.")
        if len(self.mean) != len(self.std) or not self.mean or min(self.std) <= 0:
            raise EdgeFMError(f"normalization needs as many means as positive stds, got mean {self.mean} and std {self.std}.")
        if not self.labels or any("\n" in label for label in self.labels):
            raise EdgeFMError("labels must be a non-empty list of one-line names.")


def labels_file(labels: tuple[str, ...] | list[str]) -> bytes:
    """The labels as the Task APIs read them: one name per line."""
    return ("\n".join(labels) + "\n").encode()


# ---------------------------------------------------------------- writing


class _Writer:
    """Builds tables bottom-up, as flatbuffers requires: children before the table naming them."""

    def __init__(self) -> None:
        self.builder = flatbuffers.Builder(1024)

    def string(self, text: str | None):
        return self.builder.CreateString(text) if text else None

    def offsets(self, items: list) -> int:
        self.builder.StartVector(4, len(items), 4)
        for item in reversed(items):
            self.builder.PrependUOffsetTRelative(item)
        return self.builder.EndVector()

    def floats(self, values) -> int:
        self.builder.StartVector(4, len(values), 4)
        for value in reversed(list(values)):
            self.builder.PrependFloat32(float(value))
        return self.builder.EndVector()

    def table(self, slots: int, offsets: dict[int, int | None] | None = None, bytes_: dict[int, int] | None = None) -> int:
        """A table with ``slots`` fields: offsets (strings, vectors, tables) and one-byte enums."""
        b = self.builder
        b.StartObject(slots)
        for slot, value in (offsets or {}).items():
            if value is not None:
                b.PrependUOffsetTRelativeSlot(slot, value, 0)
        for slot, value in (bytes_ or {}).items():
            b.PrependUint8Slot(slot, value, 0)
        return b.EndObject()

    # One method per schema table used; the slot numbers are the fields' order in metadata_schema.fbs.

    def associated_file(self, name: str, description: str, file_type: int) -> int:
        return self.table(5, offsets={0: self.string(name), 1: self.string(description)}, bytes_={2: file_type})

    def stats(self, maximum: list[float], minimum: list[float]) -> int:
        return self.table(2, offsets={0: self.floats(maximum), 1: self.floats(minimum)})

    def content(self, properties_type: int, properties: int) -> int:
        return self.table(3, offsets={1: properties}, bytes_={0: properties_type})

    def tensor(self, name: str, description: str, content: int, process_units: list[int] = (),
               stats: int | None = None, files: list[int] = ()) -> int:
        return self.table(7, offsets={
            0: self.string(name), 1: self.string(description), 3: content,
            4: self.offsets(list(process_units)) if process_units else None, 5: stats,
            6: self.offsets(list(files)) if files else None,
        })


def build_metadata(info: ImageClassifierInfo) -> bytes:
    """The ``ModelMetadata`` flatbuffer of a one-input, one-output image classifier.

    The input is described as an image (color space, normalization, pixel range), the output as
    class probabilities with the labels file attached along the class axis (``TENSOR_AXIS_LABELS``),
    which is where the Task APIs look for class names.

    Returns:
        The flatbuffer bytes (file identifier ``M001``), ready for :func:`populate`.
    """
    w = _Writer()
    norm = w.table(2, offsets={0: w.floats(info.mean), 1: w.floats(info.std)})
    norm_unit = w.table(2, offsets={1: norm}, bytes_={0: _PROCESS_UNIT_NORMALIZATION})
    image_properties = w.table(2, bytes_={0: _COLOR_SPACES[info.color_space]})
    pixel_stats = w.stats([(255.0 - m) / s for m, s in zip(info.mean, info.std)],
                          [(0.0 - m) / s for m, s in zip(info.mean, info.std)])
    input_tensor = w.tensor("image", info.input_description, w.content(_CONTENT_IMAGE_PROPERTIES, image_properties),
                            process_units=[norm_unit], stats=pixel_stats)

    labels = w.associated_file(LABELS_FILE, "Labels for the categories the model recognizes.", _ASSOCIATED_FILE_TENSOR_AXIS_LABELS)
    feature_properties = w.table(0)
    output_tensor = w.tensor("probability", info.output_description,
                             w.content(_CONTENT_FEATURE_PROPERTIES, feature_properties),
                             stats=w.stats([1.0], [0.0]), files=[labels])

    subgraph = w.table(10, offsets={0: w.string(info.name), 2: w.offsets([input_tensor]), 3: w.offsets([output_tensor])})
    root = w.table(8, offsets={
        0: w.string(info.name), 1: w.string(info.description), 2: w.string(info.version),
        3: w.offsets([subgraph]), 4: w.string(info.author), 5: w.string(info.license),
        7: w.string(MIN_PARSER_VERSION),
    })
    w.builder.Finish(root, file_identifier=METADATA_IDENTIFIER)
    return bytes(w.builder.Output())


# ---------------------------------------------------------------- populating


def _tflite_schema():
    from tensorflow.lite.python import schema_py_generated as schema

    return schema


def populate(tflite: bytes, metadata: bytes, associated_files: dict[str, bytes]) -> bytes:
    """Returns ``tflite`` with ``metadata`` as its ``TFLITE_METADATA`` entry and the files packed in.

    As the official populator does: the metadata goes into a model buffer named by a
    ``TFLITE_METADATA`` metadata entry (replacing an earlier one; other entries are kept), the model
    is re-serialized, and the associated files are appended as an uncompressed zip archive, which
    interpreters ignore and the Task APIs open.

    Args:
        tflite: A .tflite flatbuffer without packed files (packing must come last).
        metadata: A ``ModelMetadata`` flatbuffer from :func:`build_metadata`.
        associated_files: File name -> content, for every file the metadata names.

    Raises:
        EdgeFMError: The model already has packed files, or the metadata is not a metadata flatbuffer.
    """
    if metadata[4:8] != METADATA_IDENTIFIER:
        raise EdgeFMError("the metadata is not a TFLite ModelMetadata flatbuffer (identifier M001 missing).")
    if zipfile.is_zipfile(io.BytesIO(tflite)):
        raise EdgeFMError("this model already has files packed after it; populate a model fresh from the converter.")
    schema = _tflite_schema()
    model = schema.ModelT.InitFromObj(schema.Model.GetRootAs(tflite, 0))
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(metadata, dtype=np.uint8)
    model.metadata = model.metadata or []
    model.buffers = model.buffers or []
    existing = [m for m in model.metadata if _entry_name(m) == METADATA_NAME]
    if existing:
        model.buffers[existing[0].buffer] = buffer
    else:
        model.buffers.append(buffer)
        entry = schema.MetadataT()
        entry.name = METADATA_NAME
        entry.buffer = len(model.buffers) - 1
        model.metadata.append(entry)
    builder = flatbuffers.Builder(len(tflite) + len(metadata) + 1024)
    builder.Finish(model.Pack(builder), file_identifier=MODEL_IDENTIFIER)
    packed = io.BytesIO(bytes(builder.Output()))
    packed.seek(0, io.SEEK_END)
    with zipfile.ZipFile(packed, "a", compression=zipfile.ZIP_STORED) as archive:
        for name, content in associated_files.items():
            archive.writestr(_stable_zip_info(name), content)
    return packed.getvalue()


def _stable_zip_info(name: str) -> zipfile.ZipInfo:
    # A fixed date keeps the same model's bytes (and sha256) the same on every export.
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
    info.compress_type = zipfile.ZIP_STORED
    return info


def _entry_name(entry) -> str:
    return entry.name.decode() if isinstance(entry.name, bytes) else str(entry.name)


# ---------------------------------------------------------------- reading back (for edge-fm's own checks)


def packed_files(tflite: bytes) -> dict[str, bytes]:
    """The files packed after a model (name -> content); empty when there are none."""
    if not zipfile.is_zipfile(io.BytesIO(tflite)):
        return {}
    with zipfile.ZipFile(io.BytesIO(tflite)) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def metadata_buffer(tflite: bytes) -> bytes | None:
    """The raw ``TFLITE_METADATA`` flatbuffer of a model, or None when it has none."""
    schema = _tflite_schema()
    model = schema.Model.GetRootAs(tflite, 0)
    for i in range(model.MetadataLength()):
        entry = model.Metadata(i)
        if entry.Name().decode() == METADATA_NAME:
            return model.Buffers(entry.Buffer()).DataAsNumpy().tobytes()
    return None

"""Standard TFLite Metadata for image classifiers, written with the schema's generated code.

MediaPipe Tasks, the TFLite Task Library and Android Studio's ML Model Binding read a model's
description from one metadata entry, ``TFLITE_METADATA``: a ``ModelMetadata`` flatbuffer (file
identifier ``M001``) whose tables are those of the official metadata schema (``metadata_schema.fbs``
of tflite-support and MediaPipe, schema 1.5). Files it names, such as the labels, are packed into
the .tflite file itself as a zip archive appended after the model, as the official populator does.

The official writers cannot live in edge-fm's environment (they pin protobuf, numpy or absl-py
below what TensorFlow needs), so this module builds the same bytes with the builder functions that
``flatc`` generated from the official schema (:mod:`edge_fm.export.vendor`), read and written
through :mod:`edge_fm.export.tflite_file`.

Example:
    >>> info = ImageClassifierInfo(name="cnn", description="...", labels=["a", "b"])  # doctest: +SKIP
    >>> tflite = populate(tflite, build_metadata(info), {LABELS_FILE: labels_file(info.labels)})  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import io
import zipfile

import flatbuffers

from edge_fm.errors import EdgeFMError
from edge_fm.export import tflite_file
from edge_fm.export.bundles import LABELS_FILE

fb = tflite_file.metadata_schema  # the metadata schema's generated builders

METADATA_IDENTIFIER = b"M001"
# The fields written here all exist since schema 1.0.0, the oldest parser version.
MIN_PARSER_VERSION = "1.0.0"
# What the metadata written here holds, as a form's model.json records it.
WRITTEN_METADATA = (
    f"{tflite_file.STANDARD_METADATA}: image input (RGB, normalization mean 0, std 1), probability output with "
    "labels.txt packed in the file as TENSOR_AXIS_LABELS"
)

_COLOR_SPACES = ("RGB", "GRAYSCALE")  # the schema's ColorSpaceType values edge-fm writes


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
            raise EdgeFMError(
                f"color space must be one of {', '.join(_COLOR_SPACES)}, not {self.color_space!r}."
            )
        if len(self.mean) != len(self.std) or not self.mean or min(self.std) <= 0:
            raise EdgeFMError(
                f"normalization needs as many means as positive stds, got mean {self.mean} and std {self.std}."
            )
        if not self.labels or any("\n" in label for label in self.labels):
            raise EdgeFMError("labels must be a non-empty list of one-line names.")


def labels_file(labels: tuple[str, ...] | list[str]) -> bytes:
    """The labels as the Task APIs read them: one name per line."""
    return ("\n".join(labels) + "\n").encode()


# ---------------------------------------------------------------- writing


def _strings(builder: flatbuffers.Builder, *texts: str | None) -> list[int | None]:
    """Each text as a string in the buffer (None for an empty one, so its field is left out)."""
    return [builder.CreateString(text) if text else None for text in texts]


def _vector(builder: flatbuffers.Builder, start_vector, items: list, prepend) -> int:
    start_vector(builder, len(items))
    for item in reversed(items):
        prepend(item)
    return builder.EndVector()


def _floats(builder: flatbuffers.Builder, start_vector, values) -> int:
    return _vector(builder, start_vector, [float(v) for v in values], builder.PrependFloat32)


def _offsets(builder: flatbuffers.Builder, start_vector, items: list[int]) -> int:
    return _vector(builder, start_vector, items, builder.PrependUOffsetTRelative)


def _stats(builder: flatbuffers.Builder, maximum: list[float], minimum: list[float]) -> int:
    max_offset = _floats(builder, fb.StatsStartMaxVector, maximum)
    min_offset = _floats(builder, fb.StatsStartMinVector, minimum)
    fb.StatsStart(builder)
    fb.StatsAddMax(builder, max_offset)
    fb.StatsAddMin(builder, min_offset)
    return fb.StatsEnd(builder)


def _content(builder: flatbuffers.Builder, properties_type: int, properties: int) -> int:
    fb.ContentStart(builder)
    fb.ContentAddContentProperties(builder, properties)
    fb.ContentAddContentPropertiesType(builder, properties_type)
    return fb.ContentEnd(builder)


def _tensor(
    builder: flatbuffers.Builder,
    name: str,
    description: str,
    content: int,
    stats: int,
    process_units: list[int] = (),
    files: list[int] = (),
) -> int:
    name_offset, description_offset = _strings(builder, name, description)
    units = (
        _offsets(builder, fb.TensorMetadataStartProcessUnitsVector, list(process_units))
        if process_units
        else None
    )
    files_offset = (
        _offsets(builder, fb.TensorMetadataStartAssociatedFilesVector, list(files)) if files else None
    )
    fb.TensorMetadataStart(builder)
    fb.TensorMetadataAddName(builder, name_offset)
    fb.TensorMetadataAddDescription(builder, description_offset)
    fb.TensorMetadataAddContent(builder, content)
    if units is not None:
        fb.TensorMetadataAddProcessUnits(builder, units)
    fb.TensorMetadataAddStats(builder, stats)
    if files_offset is not None:
        fb.TensorMetadataAddAssociatedFiles(builder, files_offset)
    return fb.TensorMetadataEnd(builder)


def _input_tensor(builder: flatbuffers.Builder, info: ImageClassifierInfo) -> int:
    """The input: an image with its color space, normalization and pixel range."""
    mean = _floats(builder, fb.NormalizationOptionsStartMeanVector, info.mean)
    std = _floats(builder, fb.NormalizationOptionsStartStdVector, info.std)
    fb.NormalizationOptionsStart(builder)
    fb.NormalizationOptionsAddMean(builder, mean)
    fb.NormalizationOptionsAddStd(builder, std)
    normalization = fb.NormalizationOptionsEnd(builder)
    fb.ProcessUnitStart(builder)
    fb.ProcessUnitAddOptions(builder, normalization)
    fb.ProcessUnitAddOptionsType(builder, fb.ProcessUnitOptions.NormalizationOptions)
    unit = fb.ProcessUnitEnd(builder)
    fb.ImagePropertiesStart(builder)
    fb.ImagePropertiesAddColorSpace(builder, getattr(fb.ColorSpaceType, info.color_space))
    image_properties = fb.ImagePropertiesEnd(builder)
    pixel_stats = _stats(
        builder,
        [(255.0 - m) / s for m, s in zip(info.mean, info.std)],
        [(0.0 - m) / s for m, s in zip(info.mean, info.std)],
    )
    content = _content(builder, fb.ContentProperties.ImageProperties, image_properties)
    return _tensor(builder, "image", info.input_description, content, pixel_stats, process_units=[unit])


def _output_tensor(builder: flatbuffers.Builder, info: ImageClassifierInfo) -> int:
    """The output: class probabilities with the labels file along the class axis."""
    name, description = _strings(builder, LABELS_FILE, "Labels for the categories the model recognizes.")
    fb.AssociatedFileStart(builder)
    fb.AssociatedFileAddName(builder, name)
    fb.AssociatedFileAddDescription(builder, description)
    fb.AssociatedFileAddType(builder, fb.AssociatedFileType.TENSOR_AXIS_LABELS)
    labels = fb.AssociatedFileEnd(builder)
    fb.FeaturePropertiesStart(builder)
    feature_properties = fb.FeaturePropertiesEnd(builder)
    content = _content(builder, fb.ContentProperties.FeatureProperties, feature_properties)
    return _tensor(
        builder,
        "probability",
        info.output_description,
        content,
        _stats(builder, [1.0], [0.0]),
        files=[labels],
    )


def build_metadata(info: ImageClassifierInfo) -> bytes:
    """The ``ModelMetadata`` flatbuffer of a one-input, one-output image classifier.

    The input is described as an image (color space, normalization, pixel range), the output as
    class probabilities with the labels file attached along the class axis (``TENSOR_AXIS_LABELS``),
    which is where the Task APIs look for class names. Tables are built bottom-up, children before
    the table naming them, as flatbuffers requires.

    Returns:
        The flatbuffer bytes (file identifier ``M001``), ready for :func:`populate`.
    """
    builder = flatbuffers.Builder(1024)
    input_tensor = _input_tensor(builder, info)
    output_tensor = _output_tensor(builder, info)
    (subgraph_name,) = _strings(builder, info.name)
    inputs = _offsets(builder, fb.SubGraphMetadataStartInputTensorMetadataVector, [input_tensor])
    outputs = _offsets(builder, fb.SubGraphMetadataStartOutputTensorMetadataVector, [output_tensor])
    fb.SubGraphMetadataStart(builder)
    fb.SubGraphMetadataAddName(builder, subgraph_name)
    fb.SubGraphMetadataAddInputTensorMetadata(builder, inputs)
    fb.SubGraphMetadataAddOutputTensorMetadata(builder, outputs)
    subgraph = fb.SubGraphMetadataEnd(builder)

    name, description, version = _strings(builder, info.name, info.description, info.version)
    subgraphs = _offsets(builder, fb.ModelMetadataStartSubgraphMetadataVector, [subgraph])
    author, license_, parser_version = _strings(builder, info.author, info.license, MIN_PARSER_VERSION)
    fb.ModelMetadataStart(builder)
    for add, value in (
        (fb.ModelMetadataAddName, name),
        (fb.ModelMetadataAddDescription, description),
        (fb.ModelMetadataAddVersion, version),
        (fb.ModelMetadataAddSubgraphMetadata, subgraphs),
        (fb.ModelMetadataAddAuthor, author),
        (fb.ModelMetadataAddLicense, license_),
        (fb.ModelMetadataAddMinParserVersion, parser_version),
    ):
        if value is not None:
            add(builder, value)
    builder.Finish(fb.ModelMetadataEnd(builder), file_identifier=METADATA_IDENTIFIER)
    return bytes(builder.Output())


# ---------------------------------------------------------------- populating


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
        raise EdgeFMError(
            "this model already has files packed after it; populate a model fresh from the converter."
        )
    model = tflite_file.read(tflite)
    tflite_file.set_metadata(model, tflite_file.STANDARD_METADATA, metadata)
    packed = io.BytesIO(tflite_file.serialize(model))
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


# ---------------------------------------------------------------- reading back (for edge-fm's own checks)


def packed_files(tflite: bytes) -> dict[str, bytes]:
    """The files packed after a model (name -> content); empty when there are none."""
    if not zipfile.is_zipfile(io.BytesIO(tflite)):
        return {}
    with zipfile.ZipFile(io.BytesIO(tflite)) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def metadata_buffer(tflite: bytes) -> bytes | None:
    """The raw ``TFLITE_METADATA`` flatbuffer of a model, or None when it has none."""
    return tflite_file.metadata_entries(tflite_file.read(tflite)).get(tflite_file.STANDARD_METADATA)

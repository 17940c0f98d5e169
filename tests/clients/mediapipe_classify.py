"""Classifies images with MediaPipe Tasks' ImageClassifier, as an app would, and prints JSON.

Run with the Python of an environment that has mediapipe and not edge-fm (see tests/test_mobile.py):

    python mediapipe_classify.py model.tflite images.npy > result.json

``images.npy`` holds uint8 RGB images ``(N, height, width, 3)``. The output has, per image, the
top category's index, every category's score in index order, and the category names MediaPipe
read from the model's metadata; and the model's standard metadata as MediaPipe's own generated
reader of the official schema (``mediapipe.tasks.metadata.metadata_schema_py_generated``) parses
it, with the files packed in the model.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import zipfile

import numpy as np


def classify(model_path: str, images: np.ndarray) -> dict:
    import mediapipe as mp
    from mediapipe.tasks.python import vision
    from mediapipe.tasks.python.core import base_options

    options = vision.ImageClassifierOptions(
        base_options=base_options.BaseOptions(model_asset_path=model_path),
        running_mode=vision.RunningMode.IMAGE,
        max_results=-1,  # every category, so all scores and names come back
    )
    top, scores, names = [], [], {}
    with vision.ImageClassifier.create_from_options(options) as classifier:
        for image in images:
            result = classifier.classify(
                mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(image))
            )
            categories = result.classifications[0].categories
            top.append(int(categories[0].index))
            row = [0.0] * len(categories)
            for category in categories:
                row[category.index] = float(category.score)
                names[category.index] = category.category_name
            scores.append(row)
    return {
        "mediapipe_version": _version("mediapipe"),
        "count": len(top),
        "top1": top,
        "scores": scores,
        "label_names": [names[i] for i in sorted(names)],
    }


def read_metadata(model_path: str) -> dict:
    """The ``TFLITE_METADATA`` entry parsed by MediaPipe's generated schema readers."""
    from mediapipe.tasks.metadata import metadata_schema_py_generated as meta
    from mediapipe.tasks.metadata import schema_py_generated as schema

    with open(model_path, "rb") as handle:
        raw = handle.read()
    model = schema.Model.GetRootAs(raw, 0)
    entries = {
        model.Metadata(i).Name().decode(): model.Metadata(i).Buffer() for i in range(model.MetadataLength())
    }
    if "TFLITE_METADATA" not in entries:
        return {"entries": sorted(entries)}
    buffer = model.Buffers(entries["TFLITE_METADATA"]).DataAsNumpy().tobytes()
    if not meta.ModelMetadata.ModelMetadataBufferHasIdentifier(buffer, 0):
        return {"entries": sorted(entries), "error": "TFLITE_METADATA lacks the M001 identifier"}
    root = meta.ModelMetadataT.InitFromObj(meta.ModelMetadata.GetRootAs(buffer, 0))
    subgraph = root.subgraphMetadata[0]
    image, probability = subgraph.inputTensorMetadata[0], subgraph.outputTensorMetadata[0]
    normalization = image.processUnits[0].options
    with zipfile.ZipFile(io.BytesIO(raw)) as archive:
        packed = {name: archive.read(name).decode() for name in archive.namelist()}
    return {
        "entries": sorted(entries),
        "name": _text(root.name),
        "description": _text(root.description),
        "version": _text(root.version),
        "author": _text(root.author),
        "license": _text(root.license),
        "min_parser_version": _text(root.minParserVersion),
        "input": {
            "name": _text(image.name),
            "content": image.content.contentPropertiesType == meta.ContentProperties.ImageProperties
            and "image",
            "color_space": {v: k for k, v in vars(meta.ColorSpaceType).items() if not k.startswith("_")}[
                image.content.contentProperties.colorSpace
            ],
            "process_unit": image.processUnits[0].optionsType == meta.ProcessUnitOptions.NormalizationOptions
            and "normalization",
            "mean": [float(v) for v in normalization.mean],
            "std": [float(v) for v in normalization.std],
            "stats": {"min": [float(v) for v in image.stats.min], "max": [float(v) for v in image.stats.max]},
        },
        "output": {
            "name": _text(probability.name),
            "associated_files": [
                {
                    "name": _text(f.name),
                    "type": {v: k for k, v in vars(meta.AssociatedFileType).items() if not k.startswith("_")}[
                        f.type
                    ],
                }
                for f in probability.associatedFiles
            ],
        },
        "packed_files": packed,
    }


def _text(value) -> str | None:
    return value.decode() if isinstance(value, bytes) else value


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help=".tflite file with standard metadata")
    parser.add_argument("images", help=".npy of uint8 RGB images (N, H, W, 3)")
    args = parser.parse_args(argv)
    images = np.load(args.images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        print(
            f"error: {args.images} must hold uint8 RGB images (N, H, W, 3), not {images.dtype} {images.shape}",
            file=sys.stderr,
        )
        return 2
    json.dump({**classify(args.model, images), "metadata": read_metadata(args.model)}, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Classifies images with the TFLite Task Library's ImageClassifier (tflite-support) and prints JSON.

Run with the Python of an environment that has tflite-support and not edge-fm:

    python task_library_classify.py model.tflite images.npy > result.json

Same output as ``mediapipe_classify.py`` (top index, scores in index order, names read from the
model's metadata), plus the metadata as the Task Library's own MetadataDisplayer reads it.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np


def classify(model_path: str, images: np.ndarray) -> dict:
    from tflite_support.task import core, processor, vision

    options = vision.ImageClassifierOptions(
        base_options=core.BaseOptions(file_name=model_path),
        classification_options=processor.ClassificationOptions(max_results=-1),
    )
    classifier = vision.ImageClassifier.create_from_options(options)
    top, scores, names = [], [], {}
    for image in images:
        result = classifier.classify(vision.TensorImage.create_from_array(np.ascontiguousarray(image)))
        categories = result.classifications[0].categories
        top.append(int(categories[0].index))
        row = [0.0] * len(categories)
        for category in categories:
            row[category.index] = float(category.score)
            names[category.index] = category.category_name
        scores.append(row)
    return {
        "count": len(top),
        "top1": top,
        "scores": scores,
        "label_names": [names[i] for i in sorted(names)],
    }


def read_metadata(model_path: str) -> dict:
    from tflite_support import metadata

    displayer = metadata.MetadataDisplayer.with_model_file(model_path)
    return {
        "json": json.loads(displayer.get_metadata_json()),
        "packed_files": displayer.get_packed_associated_file_list(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help=".tflite file with standard metadata")
    parser.add_argument("images", help=".npy of uint8 RGB images (N, H, W, 3)")
    args = parser.parse_args(argv)
    images = np.load(args.images)
    json.dump({**classify(args.model, images), "metadata": read_metadata(args.model)}, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Rewrites the provenance of the models shipped before `edge-fm ship` existed into its schema.

It changes no weight and no measured number: the provenance keeps the recorded configs, metrics,
validation scores and choice; the commands are restated as the equivalent `edge-fm` commands with
the dataset as DATA_DIR and run directories under runs/; the free-text notes are replaced by the
short, user-facing ones below. model.json (and its copy inside model.tflite's metadata) gets the
same run names and a data description without a local path. `edge-fm bench models/` then rewrites
the cards.

Usage (from the repository root): python tools/restate_provenance.py
"""

from __future__ import annotations

import gzip
import hashlib
import re
import shlex
from pathlib import Path

from edge_fm.export.tflite_file import with_description
from edge_fm.io import read_json, write_bytes_atomic, write_json
from edge_fm.shipping.cards import LICENSE
from edge_fm.shipping.ship import SELECTION_RULE
from edge_fm.train.runs import write_manifest

MODELS = Path(__file__).resolve().parents[1] / "models"
RUN_DIR = re.compile(r"runs/s\d+/")

NOTES = {
    "cnn-2conv": "The paper's recipe (`--preset paper`) as it stands: 25 epochs, then the weights of the best "
    "validation-loss epoch (22) restored.",
    "cnn-3conv-bn": "A shortened version of the paper's recipe, to fit a 2-core CPU: 30 epochs at batch 128 with a "
    "one-cycle schedule peaking at 0.002 and horizontal flips, instead of up to 150 epochs at batch 64 "
    "with early stopping; 28x28 greyscale input rather than the paper's 64x64 RGB.",
    "edge-cnn-tiny": "A full-convolution shape (stem 16, two 3x3 conv blocks of 32 at 14x14 and two of 64 at 7x7), "
    "for CPUs whose int8 GEMM outruns depthwise convolutions (AVX-512 VNNI). The preset for 60 "
    "epochs instead of 40, distilled from the edge-cnn model (weight 0.5, temperature 2).",
    "edge-cnn": "The preset (`--preset paper`) for 60 epochs instead of 40. Training was stopped after epoch 25 and "
    "resumed with `edge-fm train --resume`; the training time is the sum of both parts.",
    "mlp": "The paper's recipe (`--preset paper`) as it stands.",
    "mobilenetv2": "Trained from scratch (no ImageNet weights): alpha 1.0, the 28x28 image resized to 32x32 and "
    "repeated to RGB, 40 epochs of a one-cycle schedule peaking at 0.003 with crop and flip, instead of "
    "the paper's transfer recipe. Training was stopped after epoch 1 and resumed.",
    "resnet50": "A demonstration of the architecture, not a model to deploy: trained from scratch (no ImageNet "
    "weights) at 32x32 for a single epoch, not the paper's 224x224 fine-tuning.",
    "vgg-gap": "A shortened version of the paper's recipe: 24 epochs at batch 128 with a one-cycle schedule peaking "
    "at 0.003 and the paper's crop and flip, instead of 100 epochs at batch 32.",
}


def clean(text: str) -> str:
    """A recorded command with the dataset as DATA_DIR and run directories directly under runs/."""
    text = RUN_DIR.sub("runs/", text)
    text = re.sub(r" --runs-dir runs/s\d+", "", text)
    text = re.sub(r" --runs-dir runs(?=\s|$)", "", text)
    return text.replace("../shared/data/fashion-mnist", "DATA_DIR")


def train_command(old: str) -> str:
    """The training command without the resume remarks that were appended to it."""
    return clean(old).split(" (", 1)[0]


def qat_command(note: str) -> str:
    found = re.search(r"`(edge-fm optimize [^`]+)`", note)
    return clean(found.group(1)) if found else ""


def ship_command(old: str, name: str) -> str:
    """The old ship script's arguments as an `edge-fm ship` command (the same selection)."""
    args = shlex.split(old)[2:]
    kept, skip = [], {"--train-command", "--note", "--runs-dir"}
    index = 0
    while index < len(args):
        arg = args[index]
        if arg in skip:
            index += 2
            continue
        kept.append(arg)
        index += 1
    return clean(shlex.join(["edge-fm", "ship", *kept]))


def restated(name: str, old: dict, description: dict, versions: dict) -> dict:
    commands = {
        "train": train_command(old["train_command"]),
        "qat": qat_command(old["note"]),
        "ship": ship_command(old["ship_command"], name),
    }
    train_config = dict(old["train_config"])
    if train_config.get("teacher"):
        train_config["teacher"] = clean(train_config["teacher"])
    return {
        "name": name,
        "license": LICENSE,
        "note": NOTES[name],
        "chosen_format": old["chosen_format"],
        "artifact_shipped": old["artifact_shipped"],
        "not_shipped_reason": ""
        if old["artifact_shipped"]
        else (
            "It is above the 5,000,000-byte limit per artifact of this folder; the commands below rebuild it."
        ),
        "artifact": {
            "bytes": description["artifact"]["bytes"],
            "sha256": description["artifact"]["sha256"],
            "exported_to": clean(old["artifact"]["path"]),
        },
        "selection": {
            "rule": SELECTION_RULE,
            "validation_images": description["export"]["parity"]["images"],
            "validation_accuracy": old["validation_accuracy"],
            "refused": {
                fmt: reason.removesuffix("; nothing was written.")
                for fmt, reason in old["failed_candidates"].items()
            },
        },
        "commands": {stage: command for stage, command in commands.items() if command},
        "train": {
            "run": Path(old["train_run"]).name,
            "config": train_config,
            "metrics": old["train_metrics"],
        },
        "qat": {
            "run": Path(old["qat_run"]).name,
            "config": {},
            "metrics": old["qat_metrics"],
            "train_images": old.get("qat_train_images"),
        },
        "data": _data_text(description["source"]["data"]),
        "versions": versions,
    }


def _data_text(text: str) -> str:
    return re.sub(r"Fashion-MNIST from \S+ ", "Fashion-MNIST ", text)


def restamp(tflite: bytes, description: dict) -> bytes:
    """``tflite`` with its embedded edge-fm description replaced in place (no other byte of the model moves)."""
    return with_description(tflite, description)


def restate(folder: Path) -> None:
    name = folder.name
    old = read_json(folder / "provenance.json")
    if "selection" in old:
        return  # already in the current schema
    description = read_json(folder / "model.json")
    description["source"] = {
        **description["source"],
        "run": clean(description["source"]["run"]),
        "data": _data_text(description["source"]["data"]),
    }
    embedded = {key: value for key, value in description.items() if key != "artifact"}
    if (folder / "model.tflite").exists():
        final = restamp((folder / "model.tflite").read_bytes(), embedded)
        write_bytes_atomic(folder / "model.tflite", final)
        description["artifact"] = {
            "file": "model.tflite",
            "bytes": len(final),
            "gzip_bytes": len(gzip.compress(final, compresslevel=9, mtime=0)),
            "sha256": hashlib.sha256(final).hexdigest(),
        }
    versions = read_json(folder / "manifest.json").get("versions", {})
    write_json(folder / "model.json", description)
    provenance = restated(name, old, description, versions)
    write_json(folder / "provenance.json", provenance)
    write_manifest(folder, "ship", parent=str(Path(provenance["artifact"]["exported_to"]).parent), run=name)


def main() -> int:
    for folder in sorted(p.parent for p in MODELS.glob("*/provenance.json")):
        restate(folder)
        print(folder)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

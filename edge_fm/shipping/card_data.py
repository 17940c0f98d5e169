"""What a model card says of the data a model was made from.

Fashion-MNIST models keep the card's Fashion-MNIST prose. A model of another dataset (its
``model.json`` names it, see :mod:`edge_fm.data.reference`) gets a card that names that dataset:
its kind, fingerprint, classes with their image counts per split, the input size and the resize
policy, and how its test split was made; its use and limits are stated for that data.
"""

from __future__ import annotations

from typing import Any

from edge_fm.data.reference import recorded_data, short_name

SPLIT_NAMES = ("train", "val", "test")


def data_facts(description: dict[str, Any]) -> dict[str, Any]:
    """The card's words for the model's data: ``fashion`` (bool) and, for other data, its section and texts."""
    record = recorded_data(description)
    if record is None:
        return {
            "fashion": True,
            "data_section": "",
            "subject": "classifier of Fashion-MNIST garments",
            "image_mode": "L",
            "image_size": "(28, 28)",
            "example_image": "garment.png",
        }
    height, width, channels = record["image_shape"]
    return {
        "fashion": False,
        "data_section": data_section(record),
        "subject": f"image classifier of {short_name(record)} ({len(record['class_names'])} classes)",
        "image_mode": "RGB" if channels == 3 else "L",
        "image_size": f"({width}, {height})",
        "example_image": "image.png",
        "size_text": f"{width}x{height} {'RGB' if channels == 3 else 'greyscale'}",
        "resize": (record.get("options") or {}).get("resize", "pad"),
        "kind": record["kind"],
    }


def data_section(record: dict[str, Any]) -> str:
    """The card's "Data" section: what the dataset is and how it was split."""
    height, width, channels = record["image_shape"]
    resize = (record.get("options") or {}).get("resize", "pad")
    how = "aspect ratio kept, padded with black" if resize == "pad" else "stretched"
    counts = record.get("counts") or {}
    splits = [split for split in SPLIT_NAMES if split in counts]
    total = {split: sum(counts[split]) for split in splits}
    test = (
        "the data's own test split"
        if record.get("test_split", "given") == "given"
        else f"held out from the data ({record['test_split']}), the same images on every load"
    )
    lines = [
        "| | |",
        "|---|---|",
        f"| dataset | {record['kind']} data, fingerprint `{record['fingerprint']}` |",
        f"| input | {width}x{height} {'RGB' if channels == 3 else 'greyscale'}; images of another size "
        f"resized ({how}, bilinear) |",
        "| images | " + ", ".join(f"{total[s]:,} {s}" for s in splits) + " |",
        f"| test split | {test} |",
        "",
        "| class | " + " | ".join(splits) + " |",
        "|---|" + "---|" * len(splits),
    ]
    for index, name in enumerate(record["class_names"]):
        cells = [f"{counts[s][index]:,}" if index < len(counts[s]) else "-" for s in splits]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def limitations(facts: dict[str, Any], labels: list[str]) -> tuple[str, ...]:
    """The card's limitations for a model of its own data."""
    return (
        f"Trained and tested on one dataset only ({facts['kind']} data, {facts['size_text']} images, the "
        "fingerprint above): accuracy on images from elsewhere is not measured and may be lower.",
        f"{len(labels)} classes only: an image of anything else is still given one of them, often with high "
        "confidence.",
        "Latency depends on the CPU: the figures above hold for the machine named with them. Measure on the target "
        "device (`edge-fm bench models/NAME --target ssh://user@host`).",
    )


def intended_use(facts: dict[str, Any], labels: list[str]) -> str:
    """The card's intended use, for a model of its own data."""
    return (
        f"- Classifying a {facts['size_text']} image into one of the {len(labels)} classes of its dataset "
        f"({', '.join(labels)}), on a CPU, a Raspberry Pi, a phone or another device that runs TFLite / LiteRT.\n"
        "- Its size, accuracy and latency below were measured on the files in this folder.\n\n"
        f"**Out of scope**: images unlike those of its dataset, or of anything outside its {len(labels)} classes "
        "(the model still answers one of them); safety-relevant decisions."
    )

"""Model cards for shipped models, in the Hugging Face model-card convention.

A card is rendered from three records that other stages own: the bundle's ``model.json`` (what an
app needs to call the artifact), the folder's ``provenance.json`` (what produced it, written by
:mod:`edge_fm.shipping.ship`) and, once the folder has been benchmarked, the artifact's row of
``edge-fm bench`` (test accuracy, latency, memory, and the machine that measured them).
"""

from __future__ import annotations

import functools
import shlex
from collections.abc import Sequence
from typing import Any

import yaml

from edge_fm.export.bundles import MODEL_FILE
from edge_fm.shipping import card_data
from edge_fm.shipping.card_forms import forms_text
from edge_fm.shipping.runs_on import runs_on_text
from edge_fm.train.metrics import cpu_text, epochs_text

LICENSE = "MIT"  # the license of the code and of the shipped weights (see LICENSE)
DATASET_ID = "zalando-datasets/fashion_mnist"  # the dataset's id on the Hugging Face Hub

LIMITATIONS = (
    "Trained and tested on Fashion-MNIST only: 28x28 greyscale images of a single centred garment, light on a "
    "black background. Accuracy on real photos is not measured and will be lower.",
    "Ten classes only: an image of anything else is still given one of them, often with high confidence.",
    "Latency depends on the CPU: the figures above hold for the machine named with them. Measure on the target "
    "device (`edge-fm bench models/NAME --target ssh://user@host`).",
    "Shirt, T-shirt/top, Pullover and Coat are the classes most often confused (see the per-class scores in "
    "the benchmark result).",
)

# Settings that only act together with another one: shown in a recipe only when that one is in force.
_ONLY_WITH = {
    "momentum": lambda c: c.get("optimizer") == "sgd",
    "weight_decay": lambda c: c.get("optimizer") == "adamw" or c.get("weight_decay"),
    "warmup_epochs": lambda c: c.get("schedule") in ("cosine", "onecycle"),
    "decay_rate": lambda c: c.get("schedule") == "exponential",
    "min_learning_rate": lambda c: c.get("schedule") in ("cosine", "cyclical"),
    "cycle_epochs": lambda c: c.get("schedule") == "cyclical",
    "crop_padding": lambda c: "crop" in c.get("augment", ()),
    "rotation": lambda c: "affine" in c.get("augment", ()),
    "shift": lambda c: "affine" in c.get("augment", ()),
    "zoom": lambda c: "affine" in c.get("augment", ()),
    "shear": lambda c: "affine" in c.get("augment", ()),
    "erasing_prob": lambda c: "erasing" in c.get("augment", ()),
    "monitor": lambda c: bool(c.get("early_stopping")),
    "distill_weight": lambda c: c.get("teacher") is not None,
    "distill_temperature": lambda c: c.get("teacher") is not None,
}
# Bookkeeping fields of a training config, not training options.
_NOT_OPTIONS = ("arch", "preset", "data", "val_size", "max_train", "seed")


def options_in_force(config: dict[str, Any]) -> dict[str, Any]:
    """The training options of ``config`` that acted on the run: set, and not disabled by another option.

    Example:
        >>> options_in_force({"arch": "mlp", "epochs": 5, "augment": ["flip"], "rotation": 10.0, "teacher": None})
        {'epochs': 5, 'augment': ['flip']}
    """
    shown = {}
    for key, value in config.items():
        if key in _NOT_OPTIONS or value in (None, (), [], {}):
            continue
        if key in ("early_stopping", "l2", "label_smoothing", "weight_decay") and not value:
            continue
        if key in _ONLY_WITH and not _ONLY_WITH[key](config):
            continue
        shown[key] = value
    return shown


@functools.cache
def _template():
    import jinja2

    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("edge_fm", "templates"),
        keep_trailing_newline=True,
        autoescape=False,
        undefined=jinja2.StrictUndefined,
    )
    return environment.get_template("model_card.md.j2")


def model_card(
    name: str,
    provenance: dict,
    description: dict,
    row: dict | None = None,
    environment: dict | None = None,
    test_source: str = "",
    checks: Sequence[dict] = (),
    forms: Sequence[dict] = (),
    runs_on: Sequence[dict] | None = None,
) -> str:
    """Renders a model card.

    Args:
        name: The model's folder name under the models folder.
        provenance: The folder's ``provenance.json``.
        description: The bundle's ``model.json``.
        row: The artifact's ``edge-fm bench`` row, or None before the folder was benchmarked.
        environment: The machine that measured ``row`` (the bench result's ``environment``).
        test_source: What the row's accuracy was scored on (the bench result's ``test_set.source``).
        checks: The targets judged on this model by the same benchmark run (see ``edge_fm.shipping.verdicts``).
        forms: The other forms of the model in its folder (see :func:`edge_fm.shipping.card_forms.folder_forms`).
        runs_on: What each runtime runs, one row each (see :func:`edge_fm.shipping.runs_on.runs_on_rows`);
            None before the folder was checked.

    Returns:
        The card's Markdown text, front matter first.
    """
    metrics = provenance["train"]["metrics"]
    config = provenance["train"]["config"]
    facts = card_data.data_facts(description)
    labels = list(description["labels"])
    return _template().render(
        model_file=MODEL_FILE,
        front_matter=yaml.safe_dump(_front_matter(name, provenance, row, facts), sort_keys=False),
        name=name,
        summary=_summary(name, provenance, description, facts),
        data=facts,
        intended_use="" if facts["fashion"] else card_data.intended_use(facts, labels),
        arch=config["arch"],
        params=metrics.get("params", 0),
        macs=metrics.get("macs", 0),
        artifact_text=_artifact_text(provenance, description),
        format=description["format"],
        quantization=description["quantization"],
        license=provenance.get("license", LICENSE),
        labels=description["labels"],
        input=description["input"],
        output=description["output"],
        input_quantization=_quantization_text(description["input"]),
        quantize_line=_quantize_line(description["input"]),
        dequantize_line=_dequantize_line(description["output"]),
        folder=shlex.quote(f"models/{name}"),  # a name with a space stays one argument in the shell
        forms=forms_text(description, forms, provenance.get("artifact_shipped", True)),
        runs_on=runs_on_text(runs_on),
        evaluation=_evaluation(provenance, description, row, environment or {}, test_source, checks),
        training=_training(provenance),
        limitations=LIMITATIONS if facts["fashion"] else card_data.limitations(facts, labels),
        regenerate="This card is generated: `edge-fm bench models/ --cards` rewrites it from `model.json`, "
        "`provenance.json` and the benchmark's measurements.",
    )


def _front_matter(name: str, provenance: dict, row: dict | None, facts: dict[str, Any]) -> dict[str, Any]:
    results = []
    if row is not None:
        results.append(
            {
                "type": "accuracy",
                "value": round(row["accuracy"] * 100, 2),
                "name": f"test accuracy, {provenance['chosen_format']} artifact",
            }
        )
    float_test = provenance["train"]["metrics"].get("test", {}).get("accuracy")
    if float_test is not None:
        results.append(
            {
                "type": "accuracy",
                "value": round(float_test * 100, 2),
                "name": "test accuracy, float Keras model",
            }
        )
    dataset = (
        {"name": "Fashion-MNIST", "type": DATASET_ID, "split": "test"}
        if facts["fashion"]
        else {"name": facts["subject"].split(" of ", 1)[1], "type": facts["kind"], "split": "test"}
    )
    tags = ["image-classification", "tflite", "litert", "int8", "edge"]
    matter = {
        "license": provenance.get("license", LICENSE).lower(),
        "library_name": "litert",
        "pipeline_tag": "image-classification",
        "tags": [*tags, "fashion-mnist", "edge-fm"] if facts["fashion"] else [*tags, "edge-fm"],
        "datasets": [DATASET_ID],
        "metrics": ["accuracy"],
        "model-index": [
            {
                "name": name,
                "results": [
                    {
                        "task": {"type": "image-classification", "name": "Image Classification"},
                        "dataset": dataset,
                        "metrics": results,
                    }
                ],
            }
        ],
    }
    if not facts["fashion"]:
        del matter["datasets"]  # the user's own data has no id on the Hub
    return matter


def _summary(name: str, provenance: dict, description: dict, facts: dict[str, Any]) -> str:
    config = provenance["train"]["config"]
    article = "An" if description["format"][0] in "aeiou" or description["format"].startswith("int8") else "A"
    return (
        f"{article} {description['format']} TFLite {facts['subject']}, "
        f"architecture `{config['arch']}`, "
        f"made with edge-fm. {provenance.get('note', '')}"
    ).strip()


def _artifact_text(provenance: dict, description: dict) -> str:
    artifact = description["artifact"]
    size = f"{artifact['bytes']:,} bytes ({artifact['gzip_bytes']:,} gzip), sha256 `{artifact['sha256'][:16]}...`"
    if provenance.get("artifact_shipped", True):
        return f"`model.tflite`, {size}"
    return f"**not in this folder**: {size}. {provenance['not_shipped_reason']}"


def _quantization_text(spec: dict) -> str:
    if spec.get("scale") is None:
        return "none: float32 pixel values 0-255"
    return f"scale {spec['scale']:g}, zero point {spec['zero_point']}: q = round(pixel / scale) + zero_point"


def _quantize_line(spec: dict) -> str:
    if spec.get("scale") is None:
        return "x = pixels"
    return (
        f'scale, zero = inp["quantization"]\n'
        f"x = np.clip(np.round(pixels / scale + zero), -128, 127).astype(np.{spec['dtype']})"
        if spec["dtype"] == "int8"
        else f'scale, zero = inp["quantization"]\n'
        f"x = np.clip(np.round(pixels / scale + zero), 0, 255).astype(np.{spec['dtype']})"
    )


def _dequantize_line(spec: dict) -> str:
    if spec.get("scale") is None:
        return 'probs = interpreter.get_tensor(out["index"])[0]'
    return (
        'scale, zero = out["quantization"]\n'
        'probs = (interpreter.get_tensor(out["index"])[0].astype(np.float32) - zero) * scale'
    )


def _percent(value: float | None) -> str:
    return "not measured" if value is None else f"{value * 100:.2f}%"


def _evaluation(
    provenance: dict,
    description: dict,
    row: dict | None,
    environment: dict,
    test_source: str,
    checks: Sequence[dict],
) -> str:
    selection = provenance["selection"]
    artifact = description["artifact"]
    chosen = provenance["chosen_format"]
    candidates = ", ".join(
        f"{fmt} {_percent(acc)}{' (chosen)' if fmt == chosen else ''}"
        for fmt, acc in selection["validation_accuracy"].items()
    )
    refused = "".join(
        f" {fmt} was not a candidate: {reason}" for fmt, reason in selection.get("refused", {}).items()
    )
    lines = ["| measure | value |", "|---|---|"]
    if row is not None:
        lines.append(
            f"| test accuracy, this {chosen} artifact | {_percent(row['accuracy'])} ({test_source}) |"
        )
    lines.append(
        "| test accuracy, float Keras model | "
        f"{_percent(provenance['train']['metrics'].get('test', {}).get('accuracy'))} |"
    )
    lines.append(
        f"| validation accuracy of the candidates | {candidates} ({selection['validation_images']:,} images) |"
    )
    lines.append(f"| size | {artifact['bytes']:,} bytes, {artifact['gzip_bytes']:,} gzip bytes |")
    if row is not None:
        latency = row["latency"]
        threads = f"{row['threads']} thread{'' if row['threads'] == 1 else 's'}"
        lines.append(
            f"| latency, batch 1, {threads} | p50 {latency['p50_ms']:.3f} ms, p90 {latency['p90_ms']:.3f} ms |"
        )
        lines.append(
            f"| measured on | {cpu_text(environment)}, {environment.get('cpu_count', '?')} cores, "
            f"{environment.get('interpreter', '?')} {environment.get('interpreter_version', '')}, "
            f"{environment.get('os', '')} |"
        )
        lines.append(f"| peak memory of the measuring process | {row['peak_rss_mb']:.0f} MB |")
    text = "\n".join(lines)
    text += f"\n\nThe shipped format was chosen by this rule: {selection['rule']}.{refused}"
    if row is None:
        text += "\n\nTest accuracy and latency are not measured yet: run `edge-fm bench models/ --cards`."
    judged = [c for c in checks if c["met"] is not None]
    if judged:
        text += (
            "\n\n**Targets**, judged in the same benchmark run: "
            + "; ".join(
                f"{c['check']}: {_check_value(c['check'], c['measured'])} against "
                f"{_check_value(c['check'], c['target'])}, "
                f"{'met' if c['met'] else '**missed**'}"
                for c in judged
            )
            + "."
        )
        if any(not c["met"] and c["check"].startswith("p50") for c in judged):
            text += " A latency ratio holds for the CPU it was measured on only."
    return text


def _check_value(what: str, value) -> str:
    """A target's measured or required value in the card's units."""
    if "accuracy" in what:
        return f"{value * 100:.2f}%"
    return f"{value:.3f} ms" if what.startswith("p50") else f"{value:,} bytes"


def _training(provenance: dict) -> str:
    train = provenance["train"]
    metrics = train["metrics"]
    options = options_in_force(train["config"])
    commands = provenance.get("commands", {})
    lines = []
    if any(" runs/" in (command or "") for command in commands.values()):
        lines.append(
            "The run folders named below are those the commands made where this model was trained; "
            "`edge-fm train` and `edge-fm optimize` print the names of yours.\n"
        )
    for stage, label in (
        ("train", "Train"),
        ("qat", "Quantization-aware training"),
        ("ship", "Choose and bundle"),
    ):
        if commands.get(stage):
            lines.append(f"{label}:\n\n```bash\n{commands[stage]}\n```\n")
    lines.append("Options in force (the run's `config.json` holds every field):\n")
    lines.append("| option | value |\n|---|---|")
    lines.extend(f"| {key} | {_option_text(value)} |" for key, value in options.items())
    qat = provenance.get("qat", {})
    qat_epochs = qat.get("metrics", {}).get("epochs_run")
    qat_text = f", then quantization-aware training for {epochs_text(qat_epochs)}" if qat_epochs else ""
    images = qat.get("train_images")
    qat_text += f" on {images:,} training images" if qat_text and images else ""
    lines.append(
        f"\n{epochs_text(metrics['epochs_run'])} in {metrics.get('training_seconds', 0):.0f} s on "
        f"{metrics.get('device', 'an unrecorded device')}{qat_text}. Data: {provenance.get('data', 'Fashion-MNIST')}."
    )
    return "\n".join(lines)


def _option_text(value) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}={_option_text(v)}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(map(str, value)) + "]"
    return str(value)

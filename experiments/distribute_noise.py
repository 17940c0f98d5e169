"""How far does distributed training land from one-device training, against the seed-to-seed spread?

Trains the distributed tests' recipe (tiny-cnn on the embedded sample, 3 epochs, global batch 64,
learning rate 3e-3) on one device for several seeds, and with MirroredStrategy over the CPU split
into two logical devices for some of them, all in this one process (the split must happen before
TensorFlow starts its devices). The spread of the one-device runs sets the tolerance of
``tests/test_distribute.py``; docs/scale.md reports the figures.

Usage (from the repository root; a few minutes on 2 cores):
    python experiments/distribute_noise.py                    # experiments/results/distribute_noise.json
    python experiments/distribute_noise.py --seeds 0,1 --mirrored-seeds 0 --out /tmp/noise.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

RECIPE = {"data": "sample", "epochs": 3, "batch_size": 64, "learning_rate": 3e-3}


def _split_cpu(devices: int) -> None:
    from edge_fm.compat import tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * devices)


def _train(seed: int, distribute: str) -> dict:
    from edge_fm.train.trainer import config_for, train

    with tempfile.TemporaryDirectory() as root:
        run = train(
            config_for("tiny-cnn", "quick", seed=seed, distribute=distribute, **RECIPE), runs_dir=root
        )
        metrics = json.loads((run / "metrics.json").read_text())
    return {
        "seed": seed,
        "distribute": distribute,
        "replicas": metrics["distribute"]["replicas"],
        "sample_accuracy": metrics["sample_test"]["accuracy"],
        "val_accuracy": metrics["val"]["accuracy"],
        "training_seconds": metrics["training_seconds"],
        "device": metrics["device"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2,3,4,5", help="seeds of the one-device runs")
    parser.add_argument(
        "--mirrored-seeds", default="0,1,2,3", help="seeds also trained mirrored over 2 logical CPUs"
    )
    parser.add_argument("--out", type=Path, default=Path("experiments/results/distribute_noise.json"))
    args = parser.parse_args(argv)
    _split_cpu(2)
    rows = [_train(int(seed), "none") for seed in args.seeds.split(",")]
    rows += [_train(int(seed), "mirrored") for seed in args.mirrored_seeds.split(",")]
    one = {row["seed"]: row["sample_accuracy"] for row in rows if row["distribute"] == "none"}
    accuracies = list(one.values())
    summary = {
        "one_device_mean": round(statistics.mean(accuracies), 4),
        "one_device_sd": round(statistics.stdev(accuracies), 4) if len(accuracies) > 1 else None,
        "one_device_range": [min(accuracies), max(accuracies)],
        "mirrored_minus_one_device": {
            row["seed"]: round(row["sample_accuracy"] - one[row["seed"]], 4)
            for row in rows
            if row["distribute"] == "mirrored" and row["seed"] in one
        },
    }
    from edge_fm.result_files import write_result_file

    write_result_file(
        args.out,
        "distribute-noise",
        {
            "question": __doc__.splitlines()[0],
            "recipe": {"arch": "tiny-cnn", **RECIPE},
            "summary": summary,
            "runs": rows,
        },
        " ".join(["python experiments/distribute_noise.py", *(argv or sys.argv[1:])]),
    )
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

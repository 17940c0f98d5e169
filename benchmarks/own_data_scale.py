"""A folder of JPEG files at scale: decoding into the cache, the cache's size, training from it, a warm start.

Writes ``--images`` JPEG files (default 20,000) from Fashion-MNIST's training images into a
temporary image folder (``DIR/<class>/<index>.jpg``, 28x28 grey, quality 90), then, each step in a
child process of its own (TensorFlow's thread pools are fixed at start; a fresh process also
shows what a new run pays):

1. ``decode``: the first load (``edge_fm.data.sources.load_data``) into an empty cache: listing,
   headers, parallel decoding into the memory-mapped cache; images/s and the cache's size on disk;
2. ``warm_start``: a second load with the cache warm (a new process, as a second run is): the time
   ``load_data`` takes and the child's whole time (Python, imports and the load);
3. ``training``, ``--repeats`` times, the two ways interleaved (cache, memory, cache, memory, ...)
   so that a busy spell of a shared machine falls on both alike:
   - ``cache``: edge-cnn-tiny (the product's builder and optimizer, ``build_compiled_model``)
     trained from the cached, memory-mapped training split through the product's tf.data
     pipeline (``edge_fm.train.augment.make_pipeline``, which reads each batch out of the map);
   - ``memory``: the same model, seed and batch size trained by a plain ``model.fit`` on the
     same arrays copied into memory.

Training images/s count the epochs after the first (tracing and oneDNN's kernel choice are in the
first). Each repetition's ratio is its cache figure over the memory figure measured right after
it; the result is the median of those ratios. Target: at least 0.9. Every repetition is written
out, with each child's peak resident memory (``VmHWM``) and the machine's load average (1, 5 and
15 minutes) when it started and ended, and the load average at the start and end of the whole run.

Usage (from the repository root, on an otherwise idle machine; EDGE_FM_DATA or --data-dir names
the Fashion-MNIST files):
    python benchmarks/own_data_scale.py                       # 20,000 images, 4 epochs, 5 repetitions
    python benchmarks/own_data_scale.py --images 600 --epochs 2 --out /tmp/check.json   # a quick check
Writes benchmarks/results/own_data_scale.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULT = REPO / "benchmarks" / "results" / "own_data_scale.json"
TARGET_RATIO = 0.9
ARCH = "edge-cnn-tiny"


def write_folder(root: Path, count: int, data_dir: str | None) -> dict:
    """Writes ``count`` Fashion-MNIST training images as JPEG files, the classes in turn."""
    import numpy as np
    from PIL import Image

    from edge_fm.data import datasets as fmnist

    images, labels = fmnist.load_split("train", data_dir)
    # The first images of each class, the classes in turn: stratified, and the same on every run.
    per_class = [np.flatnonzero(labels == c) for c in range(10)]
    chosen = np.stack([indices[: count // 10 + 1] for indices in per_class], axis=1).ravel()[:count]
    started = time.perf_counter()
    for index in chosen:
        folder = root / fmnist.CLASS_NAMES[labels[index]].replace("/", "-")
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(images[index, ..., 0]).save(folder / f"{index:05d}.jpg", quality=90)
    size = sum(p.stat().st_size for p in root.rglob("*.jpg"))
    return {
        "files": int(len(chosen)),
        "bytes": size,
        "seconds_to_write": round(time.perf_counter() - started, 2),
    }


# ---------------------------------------------------------------- the children


def child_load(folder: str) -> dict:
    from edge_fm.data.sources import load_data

    started = time.perf_counter()
    dataset = load_data(folder)
    seconds = time.perf_counter() - started
    return {
        "load_seconds": round(seconds, 3),
        "images": int(len(dataset.x_train) + len(dataset.x_val) + len(dataset.x_test)),
        "train_is_memory_mapped": bool(_is_memmap(dataset.x_train)),
        "image_shape": list(dataset.image_shape),
    }


def child_train(folder: str, source: str, epochs: int, batch: int) -> dict:
    import numpy as np

    from edge_fm.compat import keras
    from edge_fm.data.sources import load_data
    from edge_fm.train.augment import make_pipeline
    from edge_fm.train.runs import fit_to_data
    from edge_fm.train.trainer import build_compiled_model, config_for

    dataset = load_data(folder)
    config = config_for(
        ARCH, "quick", data=folder, batch_size=batch, epochs=epochs, augment=(), max_train=None
    )
    config = fit_to_data(config, dataset)
    steps = int(np.ceil(len(dataset.x_train) / batch))
    model = build_compiled_model(config, steps)
    timer = EpochTimer(keras)
    if source == "cache":
        mapped = _is_memmap(dataset.x_train)
        data = make_pipeline(
            dataset.x_train, dataset.y_train, config, training=True, num_classes=dataset.num_classes
        )
        model.fit(data, epochs=epochs, verbose=0, callbacks=[timer])
    else:
        mapped = False
        x = np.array(dataset.x_train)  # a copy in memory
        y = np.eye(dataset.num_classes, dtype="float32")[dataset.y_train]
        model.fit(x, y, batch_size=batch, epochs=epochs, shuffle=True, verbose=0, callbacks=[timer])
    timed = timer.seconds[1:] or timer.seconds
    return {
        "images_per_epoch": int(len(dataset.x_train)),
        "epoch_seconds": [round(s, 3) for s in timer.seconds],
        "images_per_second": round(len(dataset.x_train) * len(timed) / sum(timed), 1),
        "train_is_memory_mapped": bool(mapped),
    }


class EpochTimer:
    """A Keras callback (built on the Keras in use) that times each epoch."""

    def __new__(cls, keras):
        class _Timer(keras.callbacks.Callback):
            def __init__(self):
                super().__init__()
                self.seconds, self._started = [], 0.0

            def on_epoch_begin(self, epoch, logs=None):
                self._started = time.perf_counter()

            def on_epoch_end(self, epoch, logs=None):
                self.seconds.append(time.perf_counter() - self._started)

        return _Timer()


def _is_memmap(array) -> bool:
    import numpy as np

    return isinstance(array, np.memmap)


def _peak_rss_mb() -> float | None:
    try:
        status = Path("/proc/self/status").read_text().splitlines()
    except OSError:
        return None
    line = next((ln for ln in status if ln.startswith("VmHWM")), None)
    return round(int(line.split()[1]) * 1024 / 1e6, 1) if line else None  # KiB to MB


# ---------------------------------------------------------------- the parent


def run_child(step: str, args, env: dict) -> dict:
    command = [sys.executable, __file__, "--child", step, "--folder", str(args.folder)]
    command += ["--epochs", str(args.epochs), "--batch", str(args.batch)]
    load_before = load_average()
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=REPO)
    wall = time.perf_counter() - started
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("ROW ")), None)
    if line is None:
        raise SystemExit(f"{step} failed:\n{done.stderr[-3000:]}")
    row = {**json.loads(line[4:]), "process_seconds": round(wall, 2)}
    return {**row, "load_average": {"start": load_before, "end": load_average()}}


def load_average() -> list[float]:
    """The machine's 1, 5 and 15 minute load averages (other work on a shared machine shows here)."""
    return [round(value, 2) for value in os.getloadavg()]


def interleaved_training(args, env: dict) -> dict:
    """``args.repeats`` pairs of training children, cache then memory, and their median ratio."""
    import statistics

    repetitions = []
    for number in range(1, args.repeats + 1):
        cache = run_child("cache", args, env)
        memory = run_child("memory", args, env)
        ratio = cache["images_per_second"] / memory["images_per_second"]
        repetitions.append({"repetition": number, "cache": cache, "memory": memory, "ratio": round(ratio, 3)})
        print(f"repetition {number}: cache/memory {ratio:.3f}", file=sys.stderr, flush=True)
    return {
        "repetitions": repetitions,
        "cache_images_per_second_median": statistics.median(
            r["cache"]["images_per_second"] for r in repetitions
        ),
        "memory_images_per_second_median": statistics.median(
            r["memory"]["images_per_second"] for r in repetitions
        ),
        "ratio_median": round(statistics.median(r["ratio"] for r in repetitions), 3),
        "ratio_range": [min(r["ratio"] for r in repetitions), max(r["ratio"] for r in repetitions)],
    }


def cache_bytes(cache: Path) -> int:
    return sum(p.stat().st_size for p in cache.rglob("*") if p.is_file())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--images", type=int, default=20_000, help="JPEG files to write (at least 20,000 for the figure)"
    )
    parser.add_argument(
        "--epochs", type=int, default=4, help="training epochs per way (the first is not timed)"
    )
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument(
        "--repeats", type=int, default=5, help="interleaved cache/memory training pairs (the median counts)"
    )
    parser.add_argument(
        "--data-dir", default=None, help="the Fashion-MNIST IDX files (default: $EDGE_FM_DATA)"
    )
    parser.add_argument("--out", type=Path, default=RESULT)
    parser.add_argument("--child", choices=["load", "cache", "memory"], help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        row = (
            child_load(str(args.folder))
            if args.child == "load"
            else child_train(str(args.folder), args.child, args.epochs, args.batch)
        )
        print("ROW " + json.dumps({**row, "peak_rss_mb": _peak_rss_mb()}), flush=True)
        return 0

    load_at_start = load_average()
    work = Path(tempfile.mkdtemp(prefix="edge-fm-scale-"))
    try:
        args.folder, cache = work / "photos", work / "cache"
        written = write_folder(args.folder, args.images, args.data_dir)
        env = {**os.environ, "EDGE_FM_CACHE": str(cache), "TF_CPP_MIN_LOG_LEVEL": "2"}
        decode = run_child("load", args, env)
        decode["images_per_second"] = round(written["files"] / decode["load_seconds"], 1)
        decode["cache_bytes"] = cache_bytes(cache)
        warm = run_child("load", args, env)
        training = interleaved_training(args, env)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    ratio = training["ratio_median"]
    command = shlex.join(["python", "benchmarks/own_data_scale.py", *_public_arguments(argv)])
    result = {
        "method": "a temporary folder of Fashion-MNIST training images as 28x28 grey JPEG files (quality 90); each "
        "step in a fresh child process with its own decoded-image cache folder; training: "
        f"{ARCH} (quick preset's optimizer, no augmentation), batch {args.batch}, {args.epochs} epochs, images/s "
        f"over the epochs after the first; {args.repeats} repetitions, cache and memory interleaved, each "
        "in a fresh child process; the ratio is the median of the repetitions' cache/memory ratios",
        "load_average": {"start": load_at_start, "end": load_average()},
        "folder": written,
        "decode": decode,
        "warm_start": warm,
        "training": training,
        "cache_vs_memory": ratio,
        "target": {"cache_vs_memory_at_least": TARGET_RATIO},
        "met": bool(ratio >= TARGET_RATIO),
    }
    from edge_fm.result_files import write_result_file

    write_result_file(args.out, "own-data-scale", result, command, _environment())
    shown = ("decode", "warm_start", "load_average", "cache_vs_memory", "met")
    print(json.dumps({k: result[k] for k in shown}, indent=2))
    print(f"wrote {args.out}")
    return 0


def _public_arguments(argv: list[str] | None) -> list[str]:
    """The command line as recorded: ``--out`` (where this copy went, a path of this machine) left out."""
    given = list(argv if argv is not None else sys.argv[1:])
    kept, skip = [], False
    for word in given:
        if skip:
            skip = False
        elif word == "--out":
            skip = True
        elif not word.startswith("--out="):
            kept.append(word)
    return kept


def _environment() -> dict:
    import tensorflow as tf

    from edge_fm.runner import cpu_detail, cpu_model

    return {
        "cpu": cpu_model(),
        "cpu_detail": cpu_detail(),
        "cores": os.cpu_count(),
        "tensorflow": tf.__version__,
        "python": platform.python_version(),
    }


if __name__ == "__main__":
    sys.exit(main())

"""How long a folder of images takes to become a search's data: decoded the first time, read from the
cache after (the goal: a 50,000-image 32x32 RGB folder in <= 60 s, then <= 2 s, on 2 cores).

    python benchmarks/prepare_folder.py --data-dir ../shared/data

The folder is Fashion-MNIST's 60,000 training images padded to 32x32 and tinted per class into RGB
(so the PNGs compress like real pictures, not like noise), the first 50,000 of them, written as PNG
files under a temporary folder in the ImageFolder layout. Each timing runs in a fresh process, as a
search's would: ``prepare`` from an empty cache, then from the cache it wrote, then the whole of
``load_dataset`` (the cache read, the carving of the splits and the normalization statistics).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.machine import cpu_name, vector_extensions  # noqa: E402
import imagesets  # noqa: E402

TINTS = np.array([[255, 80, 80], [80, 255, 80], [80, 80, 255], [255, 255, 80], [255, 80, 255],
                  [80, 255, 255], [255, 160, 80], [160, 80, 255], [200, 200, 200], [120, 200, 120]]) / 255


def write_folder(data_dir: str, out: Path, count: int) -> float:
    """``out/<class>/<i>.png``: the first ``count`` Fashion-MNIST training images, 32x32 RGB."""
    started = time.perf_counter()
    source = imagesets.prepare("fashion_mnist", data_dir, out.parent / "fmnist-cache", download=False)
    images, labels = source.splits["train"][0][:count, 0], source.splits["train"][1][:count]
    padded = np.pad(images, ((0, 0), (2, 2), (2, 2)))
    for name in source.class_names:
        (out / name.replace("/", "-")).mkdir(parents=True, exist_ok=True)
    for i, (image, label) in enumerate(zip(padded, labels)):
        rgb = (image[:, :, None] * TINTS[label]).astype(np.uint8)
        Image.fromarray(rgb).save(out / source.class_names[label].replace("/", "-") / f"{i:05d}.png")
    return time.perf_counter() - started


def timed_prepare(folder: Path, cache: Path) -> dict:
    """``imagesets.prepare`` in a fresh process (its imports not counted): seconds, and whether from the cache."""
    code = ("import sys, time, imagesets; t = time.perf_counter(); "
            f"d = imagesets.prepare({str(folder)!r}, cache_dir={str(cache)!r}); "
            "print(time.perf_counter() - t, d.from_cache, d.splits['train'][0].shape)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    seconds, hit, shape = out.strip().split(" ", 2)
    return {"seconds": round(float(seconds), 2), "from_cache": hit == "True", "shape": shape}


def timed_load(folder: Path, cache: Path) -> float:
    """``trainables.data.load_dataset`` from the cache in a fresh process: the cache read, the stratified
    carving of the test and validation splits and the per-channel statistics, as a search starts."""
    code = ("import time; from trainables.data import load_dataset; t = time.perf_counter(); "
            f"load_dataset({str(folder)!r}, cache_dir={str(cache)!r}); print(time.perf_counter() - t)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return round(float(out), 2)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default=os.environ.get("SEARCH_DATA_DIR"), help="holds FashionMNIST/raw")
    p.add_argument("--count", type=int, default=50_000)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "prepare_folder.json"))
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "fashion-rgb"
        written = write_folder(args.data_dir, folder, args.count)
        cache = Path(tmp) / "cache"
        first = timed_prepare(folder, cache)
        again = timed_prepare(folder, cache)
        loaded = timed_load(folder, cache)
    record = dict(images=args.count, size="32x32 RGB PNG", cpu=cpu_name(), vector_extensions=vector_extensions(),
                  cores=os.cpu_count(), write_folder_s=round(written, 1), first=first, from_cache=again,
                  load_dataset_from_cache_s=loaded,
                  command="python benchmarks/prepare_folder.py --data-dir ../shared/data")
    Path(args.out).write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()

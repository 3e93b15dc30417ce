"""A training epoch from the memory-mapped splits against one from a copy in memory (a benchmark, not a test).

    python benchmarks/mapped_epoch.py [--repeats 3] [--out benchmarks/results/mapped_epoch.json]

Fashion-MNIST's 55,000 training images made 32x32 RGB (169 MB decoded, through the search's own cache and
carving), one CNN epoch at its registered default configuration (``trainables.loop.train_one_epoch``, 2 torch
threads, the CPU), alternating between three ways of holding the same training split:

- ``in memory``: a private copy (``np.array`` of the map), what every process held before the splits were mapped;
- ``mapped``: the split's file in the cache, memory-mapped, in the page cache (read once before timing);
- ``mapped, streamed``: the same map read in the block order used for data larger than memory
  (``trainables.batches.block_order``), also from the page cache: the cost of the order itself.

Needs Fashion-MNIST under $SEARCH_DATA_DIR.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import tempfile
from pathlib import Path

from machine import describe  # benchmarks/machine.py: a script's folder is on its path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

import models  # noqa: E402
from models.config import split_config  # noqa: E402
from trainables.data import Split, load_dataset  # noqa: E402
from trainables.loop import make_optimizer, train_one_epoch  # noqa: E402
from trainables.runtime import Runtime, set_threads  # noqa: E402


def epoch_seconds(split: Split, shape: models.DataShape, runtime: Runtime) -> float:
    spec = models.get("cnn")
    config = spec.defaults_for(shape)
    cfg = split_config({**config, "epochs": 1}, spec.config_cls, "cnn")
    torch.manual_seed(0)
    model = runtime.place(spec.build(config, models.BuildContext(shape, split.normalization.mean, split.normalization.std)))
    stats = train_one_epoch(model, split, make_optimizer(model, cfg), None, cfg, runtime.for_model(spec),
                            torch.Generator().manual_seed(0))
    return stats.seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "mapped_epoch.json"))
    args = parser.parse_args()
    set_threads(2)
    with tempfile.TemporaryDirectory() as cache:
        data = load_dataset("fashion_mnist", image_size=32, channels=3, cache_dir=cache, download=False)
        mapped = data.train
        int(mapped.images.sum())  # every page read once: the page cache holds the file
        ways = {"in memory": Split(torch.from_numpy(np.array(mapped.images.numpy())), mapped.labels.clone(), norm=mapped.norm),
                "mapped": mapped, "mapped, streamed": dataclasses.replace(mapped, streamed=True)}
        runtime = Runtime(torch.device("cpu"))
        seconds: dict[str, list[float]] = {name: [] for name in ways}
        for _ in range(args.repeats):
            for name, split in ways.items():
                seconds[name].append(epoch_seconds(split, data.info.shape, runtime))
                print(name, f"{seconds[name][-1]:.2f} s", flush=True)
    base = statistics.median(seconds["in memory"])
    record = {"machine": describe(), "command": f"python benchmarks/mapped_epoch.py --repeats {args.repeats}",
              "images": len(mapped), "decoded_mb": mapped.nbytes / 2**20, "seconds": seconds,
              "median_s": {k: statistics.median(v) for k, v in seconds.items()},
              "speed_vs_in_memory": {k: base / statistics.median(v) for k, v in seconds.items()}}
    Path(args.out).write_text(json.dumps(record, indent=2))
    print(json.dumps(record["speed_vs_in_memory"]), f"wrote {args.out}")


if __name__ == "__main__":
    main()

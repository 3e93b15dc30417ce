"""What each augmentation policy costs an epoch: the batches alone, and a model's whole training epoch.

    SEARCH_DATA_DIR=../shared/data python benchmarks/augment_cost.py \
        [--model cnn --model resnet18 --model timm:mobilenetv3_small_050] [--images 5000] [--repeats 3] \
        [--device cpu] [--out benchmarks/results/augment_cost.json]

On Fashion-MNIST made RGB at 32 px (the photos' policies apply: ``models.DataShape.photos``), the first
``--images`` training images, batch 128: for each policy (none, light, strong, strong-mix), the seconds of one
pass of the batch pipeline alone (index, augment, normalize, and mix under "strong-mix") and of one training epoch
of each model's default configuration (``--no-pretrained``: the cost does not depend on the weights) under that
policy; the median of ``--repeats``, after one untimed epoch. The extra seconds over "none" are what a policy adds.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import models  # noqa: E402
from models.config import AUGMENT_POLICIES  # noqa: E402
from trainables.augment import mix  # noqa: E402
from trainables.batches import iterate  # noqa: E402
from trainables.data import load_dataset  # noqa: E402
from trainables.loop import prepare, train_one_epoch  # noqa: E402
from trainables.runtime import Runtime  # noqa: E402
from machine import describe  # noqa: E402  (benchmarks/machine.py: a script's folder is on its path)

BATCH = 128


def pipeline_seconds(split, policy: str, device: torch.device) -> float:
    """One pass of the training batches under ``policy``, without a model."""
    generator = torch.Generator().manual_seed(0)
    norm = split.normalization
    start = time.perf_counter()
    for x, y in iterate(split, BATCH, norm.mean, norm.std, shuffle=True, augment=policy, generator=generator,
                        mirror=norm.mirror, device=device):
        if policy == "strong-mix":
            x, _, _ = mix(x, y, generator)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def epoch_seconds(name: str, policy: str, data, runtime: Runtime) -> float:
    """One training epoch of ``name``'s default configuration under ``policy`` (the model built anew, not timed)."""
    spec = models.get(name)
    shape = data.info.shape
    scratch = {**spec.scratch_config, "pretrained": False} if spec.pretrained_weights is not None else {}
    config = {**spec.defaults_for(shape), **scratch, "augment": policy, "batch_size": BATCH}
    prepared = prepare(name, config, data.train, runtime.for_model(spec), shape)
    stats = train_one_epoch(prepared.model, data.train, prepared.optimizer, prepared.scheduler, prepared.train_cfg,
                            runtime.for_model(spec), torch.Generator().manual_seed(0), prepared.task)
    return stats.seconds


def median_of(repeats: int, measure) -> float:
    measure()  # the first pass pays for allocations and kernel choices: not timed
    return statistics.median(measure() for _ in range(repeats))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", action="append", default=None)
    p.add_argument("--images", type=int, default=5000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=None)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    names = args.model or ["cnn", "resnet18", "timm:mobilenetv3_small_050"]
    data = load_dataset("fashion_mnist", image_size=32, channels=3, limit=(args.images, 500, 500))
    data = dataclasses.replace(data, train=data.train.to(device)) if device.type == "cuda" else data
    runtime = Runtime(device)
    machine = describe() if device.type == "cpu" else torch.cuda.get_device_name(device)
    print(f"{machine}; torch {torch.__version__}, {args.threads} threads; {len(data.train)} Fashion-MNIST images "
          f"as RGB 32 px, batch {BATCH}, median of {args.repeats}")
    rows = []
    for policy in AUGMENT_POLICIES:
        torch.manual_seed(0)
        row = {"policy": policy, "pipeline_s": median_of(args.repeats, lambda: pipeline_seconds(data.train, policy, device))}
        for name in names:
            row[name] = median_of(args.repeats, lambda: epoch_seconds(name, policy, data, runtime))
        rows.append(row)
    base = rows[0]
    print("| policy | batches alone (s) | " + " | ".join(f"{n} epoch (s)" for n in names) + " |")
    print("| --- | --- | " + " | ".join("---" for _ in names) + " |")
    for row in rows:
        cells = [f"{row[n]:.2f} ({row[n] / base[n] - 1:+.0%})" for n in names]
        print(f"| {row['policy']} | {row['pipeline_s']:.3f} | " + " | ".join(cells) + " |")
    if args.out:
        Path(args.out).write_text(json.dumps({
            "machine": machine, "torch": torch.__version__, "threads": args.threads, "device": str(device),
            "images": len(data.train), "batch": BATCH, "repeats": args.repeats, "models": names,
            "command": "python benchmarks/augment_cost.py " + " ".join(sys.argv[1:]), "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Training cost per epoch of each registered model on this machine's CPU (or a GPU).

    python benchmarks/epoch_cost.py [--threads 2] [--batch 128] [--steps 3] [--device cpu]
        [--model vgg16 --set input_size=32 ...]

Times full training steps (forward, backward, optimizer) of the model's default configuration
(``--set`` overrides, e.g. the smallest input size) on random 28x28 inputs, after one warm-up step,
in fp32 and, where the device has fast bf16, under bf16 autocast. Reports images per second and the
implied time of one 55,000-image MNIST training epoch. Pretrained weights are not needed to measure
cost: fine-tunable models are built with ``pretrained=False`` and every layer trained.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import models  # noqa: E402
from models.config import parse_sets, split_config  # noqa: E402
from trainables.loop import make_optimizer  # noqa: E402
from trainables.runtime import Runtime  # noqa: E402
from machine import describe  # noqa: E402  (benchmarks/machine.py: a script's folder is on its path)

EPOCH_IMAGES = 55_000


def measure(name: str, overrides: dict, runtime: Runtime, batch: int, steps: int) -> float:
    """Images per second of training steps."""
    spec = models.get(name)
    config = {**spec.default_config, **overrides, "batch_size": batch}
    if spec.pretrained_weights is not None:
        config.update(spec.scratch_config)
    train_cfg = split_config(config, spec.config_cls, name)
    model = runtime.place(spec.build(config, models.BuildContext())).train()
    optimizer = make_optimizer(model, train_cfg)
    x = torch.randn(batch, 1, 28, 28, device=runtime.device)
    y = torch.randint(0, 10, (batch,), device=runtime.device)
    for step in range(steps + 1):
        if step == 1:  # the first step allocates and picks kernels: not timed
            if runtime.device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
        with runtime.autocast:
            loss = spec.task.loss(model, x, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    if runtime.device.type == "cuda":
        torch.cuda.synchronize()
    return batch * steps / (time.perf_counter() - start)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", action="append", default=None, help="default: every registered model")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override, for every model")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default=None, help="also write the figures as JSON")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    overrides = parse_sets(args.set)
    device = torch.device(args.device)
    rows = []
    print(f"{describe()}; torch {torch.__version__}, {args.threads} threads, batch {args.batch}, device {device}")
    print("| model | settings | precision | img/s | one 55k-image epoch |\n| --- | --- | --- | --- | --- |")
    for name in args.model or models.names():
        spec = models.get(name)
        mine = {k: v for k, v in overrides.items() if k in {f for f in spec.config_cls.__dataclass_fields__}}
        for amp in (False, True):
            runtime = Runtime(device, amp=amp, cpu_bf16=True)
            if amp and runtime.precision == "fp32":
                continue  # no fast bf16 here: the fp32 row says it all
            rate = measure(name, mine, runtime, args.batch, args.steps)
            settings = " ".join(f"{k}={v}" for k, v in mine.items()) or "default"
            rows.append(dict(model=name, settings=settings, precision=runtime.precision, images_per_s=rate,
                             epoch_s=EPOCH_IMAGES / rate, registry_cpu_bf16=spec.cpu_bf16,
                             registry_gpu_bf16=spec.gpu_bf16))
            print(f"| {name} | {settings} | {runtime.precision} | {rate:,.0f} | {EPOCH_IMAGES / rate / 60:.1f} min |",
                  flush=True)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"machine": describe(), "threads": args.threads, "batch": args.batch, "torch": torch.__version__,
                                              "device": str(device), "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

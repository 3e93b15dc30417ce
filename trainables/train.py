"""Train one configuration without Ray, printing the metrics of each epoch.

    python -m trainables.train --model cnn --epochs 2 --set lr=0.003 --set batch_size=256

For debugging a configuration and for benchmarks. Without ``--set`` the model's registered default
configuration is used; each ``--set key=value`` overrides one setting. ``--test`` evaluates the
result once on the test split at the end.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import torch

import models
from imagesets.options import DataOptions, add_data_arguments
from models.config import ConfigError, TrainConfig, from_flat, parse_sets
from models.finetune import WeightsError
from trainables.data import DataError, load_data
from trainables.loop import DivergedError, evaluate, fit, prepare
from trainables.runtime import Runtime, pick_device, set_threads


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m trainables.train", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="cnn", help=f"one of: {', '.join(models.names())}")
    p.add_argument("--epochs", type=int, default=None,
                   help="default: the model's budget on this device (its CPU or its GPU budget), for this many training "
                        "images (a model with a minimum of images to see trains longer on a small data set)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override one setting")
    add_data_arguments(p)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all cores)")
    p.add_argument("--no-amp", action="store_true", help="no bf16 autocast (on by default where the device has fast bf16)")
    p.add_argument("--no-channels-last", action="store_true")
    p.add_argument("--weights-dir", default=None, help="folder of pretrained weight files (torchvision's names)")
    p.add_argument("--no-pretrained", action="store_true", help="random initialization for fine-tunable models")
    p.add_argument("--test", action="store_true", help="evaluate once on the test split at the end")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        spec = models.get(args.model)
        data = load_data(DataOptions.from_args(args))
        config = spec.defaults_for(data.shape)
        if args.no_pretrained and spec.pretrained_weights is not None:
            config.update(spec.scratch_config)
        config.update(parse_sets(args.set))
        config.setdefault("seed", args.seed)
        seed = from_flat(TrainConfig, config).seed  # a --set seed=... must read as a whole number
        on_gpu = pick_device(args.device).type == "cuda"
        config["epochs"] = args.epochs if args.epochs is not None else config.get("epochs", spec.budget(on_gpu, len(data.train))[0])
        spec.check_fits(config, data.info.shape)
    except (models.UnknownModelError, ConfigError, DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    torch.manual_seed(seed)
    set_threads(args.threads)
    device = pick_device(args.device)
    runtime = Runtime(device, amp=not args.no_amp, channels_last=not args.no_channels_last).for_model(spec)
    train, val = data.train.to(device), data.val.to(device)
    try:
        prepared = prepare(args.model, config, train, runtime, data.info.shape, args.weights_dir)
    except (ConfigError, WeightsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{args.model}: {prepared.params:,} parameters on {device}, {runtime.precision}")
    print(f"  {spec.config_cls.__name__}: {from_flat(spec.config_cls, config)}")
    print(f"  {prepared.train_cfg}")
    try:
        for m in fit(prepared, train, val, runtime, seed=prepared.train_cfg.seed):
            print(f"epoch {m['epoch']:>3}  train_loss {m['train_loss']:.4f}  val_loss {m['val_loss']:.4f}  "
                  f"val_acc {m['val_acc']:.4f}  val_f1 {m['val_f1']:.4f}  epoch {m['epoch_time_s']:.1f}s  "
                  f"train {m['train_time_s']:.1f}s  elapsed {m['elapsed_s']:.1f}s  {m['samples_per_s']:,.0f} img/s",
                  flush=True)
    except DivergedError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if args.test:
        scores = evaluate(prepared.model, data.test.to(device), runtime, task=prepared.task)
        print(f"test  loss {scores.loss:.4f}  acc {scores.acc:.4f}  f1 {scores.f1:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

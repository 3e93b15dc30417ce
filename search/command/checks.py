"""The checks of single flags that ``search.command.settings.ask`` makes, each a ``UsageError`` that says what is
wrong and how to fix it: positive numbers, the GPUs asked for and each model's share, ``--set`` values against each
model's config, and the pretrained weights a trial may load."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import models


class UsageError(ValueError):
    """Bad input found before any trial starts; the message says what is wrong and how to fix it."""


def positive(value: float | None, flag: str) -> None:
    """A number a flag needs above zero (``None``: the flag was not given)."""
    if value is not None and value <= 0:
        raise UsageError(f"{flag} must be positive, got {value}")


def check_gpu_share(share: float, name: str, gpus: int) -> None:
    """Ray gives a trial a fraction of one GPU or a whole number of GPUs, never more than there are."""
    if share > 1 and not float(share).is_integer():
        raise UsageError(f"--gpu-per-trial {name}={share}: Ray shares out a fraction of one GPU (up to 1) or "
                         "whole GPUs (2, 3...), not a mix; use e.g. 0.5 or 2")
    if gpus and share > gpus:
        raise UsageError(f"--gpu-per-trial {name}={share}: more than the {gpus} GPU(s) given with --gpus; "
                         f"no {name} trial could ever start")


def pinned_settings(pairs: list[str], chosen: list[str],
                    pretrained: tuple[bool, ...] = (True,)) -> dict[str, dict[str, Any]]:
    """``--set`` values per chosen model, each checked on top of that model's default config, and
    on top of its from-scratch config where the search trains from scratch (``pretrained``).

    A key no chosen model has is an error; a key only some models have applies to those.
    """
    from models.config import ConfigError, TrainConfig, field_names, from_flat, parse_sets, split_config

    try:
        wanted = parse_sets(pairs)
    except ConfigError as e:
        raise UsageError(str(e)) from None
    if "epochs" in wanted:
        raise UsageError("--set epochs: a trial's epochs are its model's budget, which ASHA's rungs and every "
                         "learning-rate schedule are planned for: use --max-epochs N (or MODEL=N,...) instead")
    if "pretrained" in wanted:
        raise UsageError("--set pretrained: use --no-pretrained (train from scratch) or --compare-scratch (search "
                         "both) instead; they also check the weights and adapt the search space")
    out = {}
    for name in chosen:
        spec = models.get(name)
        known = field_names(TrainConfig, spec.config_cls)
        out[name] = {k: v for k, v in wanted.items() if k in known}
        bases = [spec.default_config]
        if spec.pretrained_weights is not None and False in pretrained:
            bases = [{**spec.default_config, **spec.scratch_config}] + (bases if True in pretrained else [])
        try:
            for base in bases:
                merged = {**base, **out[name]}
                typed = [split_config(merged, spec.config_cls, name), from_flat(spec.config_cls, merged)]
        except ConfigError as e:
            raise UsageError(f"--set for {name}: {e}") from None
        out[name] = {k: getattr(next(c for c in typed if hasattr(c, k)), k) for k in out[name]}  # typed values
    unused = sorted(set(wanted) - {k for values in out.values() for k in values})
    if unused:
        raise UsageError(f"--set {', '.join(unused)}: no chosen model ({', '.join(chosen)}) has such a setting")
    return out


def check_weights(name: str, pretrained: tuple[bool, ...], fixed: dict[str, Any], weights_dir: str | None) -> None:
    """Every pretrained file a trial of model ``name`` may load (``pretrained`` and ``fixed`` as its ``ModelAsk``'s)
    must be here (or downloadable) before any trial starts."""
    from models.finetune import WeightsError, ensure_weights

    if weights_dir and not Path(weights_dir).expanduser().is_dir():
        raise UsageError(f"--weights-dir {weights_dir} is not a folder")
    if True not in pretrained:
        return
    spec = models.get(name)
    for weights in spec.weights_needed(fixed):
        try:
            ensure_weights(weights, weights_dir)
        except WeightsError as e:
            pin = (f" To search one {spec.weights_by} only, pin it with --set {spec.weights_by}=VALUE."
                   if spec.weights_by and spec.weights_by not in fixed else "")
            raise UsageError(f"{name}: {e}{pin}") from None


DECLARE_GPUS = "HPSEARCH_DECLARE_GPUS"  # benchmarks: GPUs declared to Ray on a machine without them


def gpus_found() -> int:
    """The machine's CUDA devices; or, where ``$HPSEARCH_DECLARE_GPUS`` is set (benchmarks and tests of the packing
    on a CPU machine), that many declared to Ray: trials then train on the CPU, while the slots, shapes, process
    reuse and end phase are those of a machine with that many GPUs."""
    if os.environ.get(DECLARE_GPUS):
        return int(os.environ[DECLARE_GPUS])
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def check_gpus(gpus: int, address: str | None) -> None:
    """``--gpus N``: 0 (CPUs) or up to the GPUs this machine has; a cluster's are counted once connected."""
    if gpus < 0:
        raise UsageError(f"--gpus must be 0 (CPU) or more, got {gpus}")
    # Asking CUDA loads torch, so only when GPUs are asked for.
    found = gpus_found() if gpus > 0 and address is None else 0
    if address is None and gpus > found:
        raise UsageError(f"--gpus {gpus} asked for, but {found} GPU(s) found on this machine "
                         f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')}); "
                         f"use --gpus {found}" + (" to run on CPUs" if found == 0 else ""))

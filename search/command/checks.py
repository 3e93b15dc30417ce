"""The checks of single flags that ``search.command.settings.ask`` makes, each a ``UsageError`` that says what is
wrong and how to fix it: positive numbers, per-model values (``--max-epochs vit=20,cnn=3``), GPU shares, ``--set``
values against each model's config, and the pretrained weights a trial may load."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import models
from search.command.plans import ModelAsk


class UsageError(ValueError):
    """Bad input found before any trial starts; the message says what is wrong and how to fix it."""


def positive(value: float | None, flag: str) -> None:
    """A number a flag needs above zero (``None``: the flag was not given)."""
    if value is not None and value <= 0:
        raise UsageError(f"{flag} must be positive, got {value}")


def per_model(text: str | None, flag: str, chosen: list[str], kind: type = int) -> dict[str, Any]:
    """``"5"`` -> every chosen model gets 5; ``"vit=20,cnn=3"`` -> those models get those values."""
    if not text:
        return {}
    out: dict[str, Any] = {}
    for part in text.split(","):
        name, sep, value = part.strip().rpartition("=")
        targets = [name.strip()] if sep else chosen
        if sep and name.strip() not in chosen:
            raise UsageError(f"{flag} {text!r}: {name.strip()!r} is not among the chosen models ({', '.join(chosen)})")
        try:
            number = kind(value)
        except ValueError:
            what = "a whole number" if kind is int else "a number"
            raise UsageError(f"{flag} {text!r}: {value!r} is not {what}; write N or model=N,model=N") from None
        positive(number, flag)
        out.update({target: number for target in targets})
    return out


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


def check_weights(asks: list[ModelAsk], weights_dir: str | None) -> None:
    """Every pretrained file a trial may load must be here (or downloadable) before any trial starts."""
    from models.finetune import WeightsError, ensure_weights

    if weights_dir and not Path(weights_dir).expanduser().is_dir():
        raise UsageError(f"--weights-dir {weights_dir} is not a folder")
    for plan in asks:
        if True not in plan.pretrained:
            continue
        spec = models.get(plan.name)
        for weights in spec.weights_needed(plan.fixed):
            try:
                ensure_weights(weights, weights_dir)
            except WeightsError as e:
                pin = (f" To search one {spec.weights_by} only, pin it with --set {spec.weights_by}=VALUE."
                       if spec.weights_by and spec.weights_by not in plan.fixed else "")
                raise UsageError(f"{plan.name}: {e}{pin}") from None

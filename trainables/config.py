"""The training settings every model shares, and the split of a flat Tune config into typed parts."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from models.config import ConfigError, check, choice, field_names, from_flat, reject_unknown

# Keys the search adds to every config beside the hyperparameters.
MODEL_KEY = "model"


@dataclass(frozen=True)
class TrainConfig:
    """Optimizer, schedule and data settings; ``epochs`` is the budget the schedule is planned for."""

    optimizer: str = "adamw"
    lr: float = 1e-3
    momentum: float = 0.9  # SGD only
    weight_decay: float = 0.0
    batch_size: int = 256
    schedule: str = "constant"  # constant | cosine | onecycle (per step, over `epochs`)
    warmup_epochs: float = 0.0  # linear warm-up; capped at half the budget (a short smoke run still decays)
    label_smoothing: float = 0.0
    augment: bool = False
    epochs: int = 3

    def __post_init__(self) -> None:
        choice("optimizer", self.optimizer, ("adam", "adamw", "sgd"))
        check(0 < self.lr < 10, f"lr={self.lr} must be positive and below 10")
        check(0 <= self.momentum < 1, f"momentum={self.momentum} must be in [0, 1)")
        # Above 1 the decay outweighs any gradient: weights collapse or training diverges within an epoch.
        check(0 <= self.weight_decay <= 1, f"weight_decay={self.weight_decay} must be between 0 and 1")
        check(1 <= self.batch_size <= 65_536, f"batch_size={self.batch_size} must be between 1 and 65536")
        choice("schedule", self.schedule, ("constant", "cosine", "onecycle"))
        check(self.warmup_epochs >= 0, f"warmup_epochs={self.warmup_epochs} must not be negative")
        check(0 <= self.label_smoothing < 1, f"label_smoothing={self.label_smoothing} must be in [0, 1)")
        check(self.epochs >= 1, f"epochs={self.epochs} must be at least 1")


def split_config(flat: Mapping[str, Any], model_config_cls: type, model: str) -> TrainConfig:
    """Validate a flat config for ``model``: unknown keys are errors, the shared part is returned typed.

    The model's own part is typed by its builder (``from_flat(model_config_cls, flat)``), which
    validates it too; it is checked here as well so that a bad config fails before any training.
    """
    reject_unknown(flat, field_names(TrainConfig, model_config_cls) | {MODEL_KEY}, model)
    from_flat(model_config_cls, flat)
    return from_flat(TrainConfig, flat)


def effective_config(flat: Mapping[str, Any]) -> dict[str, Any]:
    """The complete config a trial trained with: what was searched or set, plus the defaults that
    filled the rest (e.g. ``padding`` when the space did not suggest it). Exports record this, so a
    row says everything that shaped its result. An invalid config is returned as it was given."""
    import models

    try:
        spec = models.get(flat[MODEL_KEY])
        return {MODEL_KEY: spec.name, **asdict(from_flat(spec.config_cls, flat)), **asdict(from_flat(TrainConfig, flat))}
    except (KeyError, ConfigError):
        return dict(flat)

"""Typed configs at the boundary: Tune hands a flat dict, converted once into dataclasses here.

Each model declares a dataclass of its architecture's settings; ``TrainConfig`` (below)
holds the settings every model shares (optimizer, schedule, batch size...). ``from_flat`` picks a
dataclass's fields out of the flat dict, converts strings given on the command line (``--set
lr=0.003``) to the field's type, and lets the dataclass validate itself.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration value that is wrong; the message names the key and what is allowed."""


def check(condition: bool, message: str) -> None:
    """Raise ``ConfigError(message)`` unless ``condition`` holds."""
    if not condition:
        raise ConfigError(message)


def choice(name: str, value: Any, allowed: Iterable[Any]) -> None:
    """Check that ``value`` is one of ``allowed``, naming the key and the choices if not."""
    allowed = tuple(allowed)
    check(value in allowed, f"{name}={value!r} is not allowed; choose one of {', '.join(map(repr, allowed))}")


def _coerce(name: str, value: Any, default: Any) -> Any:
    """Convert ``value`` to the type of the field's default (strings come from ``--set``)."""
    kind = type(default)
    if isinstance(value, kind) and not (kind is int and isinstance(value, bool)):
        return value
    try:
        if kind is bool:
            if isinstance(value, str):
                lowered = value.strip().lower()
                check(lowered in {"true", "false", "1", "0", "yes", "no"}, f"{name}={value!r} is not a boolean")
                return lowered in {"true", "1", "yes"}
            return bool(value)
        if kind is int:
            as_float = float(value)
            check(as_float.is_integer(), f"{name}={value!r} must be a whole number")
            return int(as_float)
        return kind(value)
    except (TypeError, ValueError) as e:
        if isinstance(e, ConfigError):
            raise
        raise ConfigError(f"{name}={value!r} cannot be read as {kind.__name__}") from None


def from_flat(cls: type[T], flat: Mapping[str, Any]) -> T:
    """Build dataclass ``cls`` from the keys of ``flat`` that are its fields; defaults fill the rest."""
    kwargs = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if f.name in flat:
            kwargs[f.name] = value = _coerce(f.name, flat[f.name], f.default)
            # inf and nan read as floats (from --set, Tune or Optuna), but no setting trains with them,
            # and nan slips past every range check.
            check(not isinstance(value, float) or math.isfinite(value), f"{f.name}={value!r} must be a finite number")
    return cls(**kwargs)


def field_names(*classes: type) -> set[str]:
    """The union of the field names of the given dataclasses."""
    return {f.name for cls in classes for f in dataclasses.fields(cls)}


def reject_unknown(flat: Mapping[str, Any], known: set[str], model: str) -> None:
    """A key that no config of ``model`` reads is a typo, not something to ignore silently."""
    unknown = sorted(set(flat) - known)
    check(not unknown, f"unknown setting(s) {', '.join(unknown)} for model {model!r}; known: {', '.join(sorted(known))}")


def parse_sets(pairs: Sequence[str]) -> dict[str, str]:
    """``["lr=0.003", "augment=light"]`` -> ``{"lr": "0.003", "augment": "light"}`` (typed later)."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {pair!r} is not key=value, e.g. --set lr=0.003")
        out[key.strip()] = value.strip()
    return out


# Keys the search adds to every config beside the hyperparameters.
MODEL_KEY = "model"

# The augmentation policies a trial trains with (``TrainConfig.augment``; trainables.augment applies them), from
# the least to the most. On photos (``models.DataShape.photos``): "light" is a random resized crop and a flip,
# "strong" adds TrivialAugment, "strong-mix" also mixes each batch's images and labels (CutMix or MixUp).
# Elsewhere (digits, gray or small images) "light" is a shift of a few pixels, and the strongest offered.
AUGMENT_POLICIES = ("none", "light", "strong", "strong-mix")
_LEGACY_AUGMENT = {"true": "light", "1": "light", "yes": "light", "false": "none", "0": "none", "no": "none"}


def augment_policy(value: Any) -> str:
    """The policy ``augment=value`` names: one of ``AUGMENT_POLICIES``, or a boolean as configurations and
    ``--set`` wrote it before there were policies (True: the shift, now "light"; False: "none")."""
    return _LEGACY_AUGMENT.get(str(value).strip().lower(), str(value).strip())


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
    augment: str = "none"  # one of AUGMENT_POLICIES
    epochs: int = 3
    # Epochs at which the schedule ends a cycle and starts another ("1,3"): a search with ASHA gives its rungs
    # below ``epochs``, so that every trial a rung judges has just finished a decay (trainables.loop.lr_factor).
    restarts: str = ""
    seed: int = 0  # initialization and batch order; the search sets its --seed (a winner's repeats, others)
    # Train each epoch on the first N images of the training split only (0: all of them). --smoke pins it
    # for the models whose epochs cost minutes on a CPU; it is recorded with every trial like any setting.
    max_train_images: int = 0

    @property
    def restart_epochs(self) -> tuple[int, ...]:
        """``restarts`` as epochs, those within the budget only (a refit for fewer epochs drops the later ones)."""
        return tuple(e for e in (int(part) for part in self.restarts.split(",") if part.strip()) if 0 < e < self.epochs)

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
        object.__setattr__(self, "augment", augment_policy(self.augment))  # frozen: the one place it is read
        choice("augment", self.augment, AUGMENT_POLICIES)
        check(self.epochs >= 1, f"epochs={self.epochs} must be at least 1")
        check(all(part.strip().isdigit() for part in self.restarts.split(",")) if self.restarts else True,
              f"restarts={self.restarts!r} must be epochs separated by commas, such as '1,3', or empty")
        check(self.max_train_images >= 0, f"max_train_images={self.max_train_images} must be 0 (all) or a number of images")


def split_config(flat: Mapping[str, Any], model_config_cls: type, model: str) -> TrainConfig:
    """Validate a flat config for ``model``: unknown keys are errors, the shared part is returned typed.

    The model's own part is typed by its builder (``from_flat(model_config_cls, flat)``), which
    validates it too; it is checked here as well so that a bad config fails before any training.
    """
    reject_unknown(flat, field_names(TrainConfig, model_config_cls) | {MODEL_KEY}, model)
    from_flat(model_config_cls, flat)
    return from_flat(TrainConfig, flat)


# A parameter whose range depends on a choice gets one name per choice ("lr:sgd", "lr:adamw"): TPE's
# joint (multivariate) model only covers parameters whose distribution never changes, and a single
# "lr" with a range that follows the optimizer would be left out of it and sampled on its own.
BRANCH = ":"
BRANCHED = {"lr": "optimizer"}  # config key -> the choice its range follows


def branch_name(key: str, choice_value: Any) -> str:
    """The study's name for config ``key`` on the branch ``choice_value`` (``lr``, ``sgd`` -> ``lr:sgd``)."""
    return f"{key}{BRANCH}{choice_value}"


def config_key(param: str) -> str:
    """The config key a study parameter sets (``lr:sgd`` -> ``lr``; others unchanged)."""
    return param.split(BRANCH, 1)[0]


def params_to_config(params: Mapping[str, Any]) -> dict[str, Any]:
    """A study trial's parameters as a flat config (branch names folded back to their key)."""
    return {config_key(name): value for name, value in params.items()}


def config_to_params(config: Mapping[str, Any]) -> dict[str, Any]:
    """A flat config as the study's parameters (the inverse of ``params_to_config``): a branched
    key is named after the branch its config takes (``lr`` with ``optimizer=sgd`` -> ``lr:sgd``)."""
    out = {}
    for key, value in config.items():
        on = BRANCHED.get(key)
        out[branch_name(key, config[on]) if on in config else key] = value
    return out


def suggest_optimizer(trial: Any, lr: Mapping[str, tuple[float, float]],
                      momentum: tuple[float, float] | None = None) -> str:
    """Search the optimizer among ``lr``'s keys, then its learning rate on a log scale in that
    optimizer's own range (SGD takes far larger steps than Adam), then, for SGD, its ``momentum``
    if a range is given. Each optimizer's learning rate is a parameter of its own (``lr:sgd``, see
    ``BRANCH``); the config gets it as ``lr``."""
    optimizer = trial.suggest_categorical("optimizer", list(lr))
    trial.suggest_float(branch_name("lr", optimizer), *lr[optimizer], log=True)
    if optimizer == "sgd" and momentum is not None:
        trial.suggest_float("momentum", *momentum)
    return optimizer

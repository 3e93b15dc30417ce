"""What each model's study asks and is judged on: its space, and the rungs where ASHA compares its trials.

The space is the model's own (``models/<name>.py``), with ``pretrained`` chosen first where the model
has pretrained weights, and the settings pinned by ``--set`` or ``--smoke`` answered without asking
Optuna: every parameter a study holds is one it chose, and the value that trained.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import models
from models.config import config_key, config_to_params
from search.command.settings import ModelPlan

METRIC, MODE = "val_acc", "max"  # what every study maximizes: the validation accuracy of an epoch
TIME_ATTR = "epoch"  # the result key ASHA's rungs and the studies' steps count
SAMPLERS = ("tpe", "random")  # how a study picks configurations: TPE, or random search (the baseline)


def rung_epochs(max_t: int, grace_period: int, reduction_factor: float) -> list[float]:
    """ASHA's rungs: ``grace_period * reduction_factor**k`` epochs, as many as Ray's ASHA counts up to ``max_t``."""
    count = int(math.log(max_t / grace_period) / math.log(reduction_factor) + 1)
    return [grace_period * reduction_factor ** k for k in range(count)]


class PinnedTrial:
    """An Optuna trial as a model's space sees it when some settings are pinned (``--set``, the pins
    of ``--smoke``): asking for a pinned setting returns its value without asking Optuna.

    So a conditional space follows the pinned branch (``optimizer=sgd`` -> SGD's learning-rate
    range), and the study records only what it chose: every parameter Optuna holds is the value
    that trained, and TPE never models a value that did not. The pins are kept as the trial's
    user attribute ``pinned`` (optuna-dashboard shows it).
    """

    def __init__(self, trial: Any, pins: Mapping[str, Any]) -> None:
        self._trial, self._pins = trial, dict(pins)
        if self._pins:
            trial.set_user_attr("pinned", self._pins)

    @property
    def params(self) -> dict[str, Any]:
        return {**self._trial.params, **self._pins}

    def _suggest(self, kind: str, name: str, *args, **kwargs) -> Any:
        if config_key(name) in self._pins:  # a pinned lr answers for the chosen branch's "lr:sgd"
            return self._pins[config_key(name)]
        return getattr(self._trial, kind)(name, *args, **kwargs)

    def suggest_float(self, name: str, *args, **kwargs) -> float:
        return self._suggest("suggest_float", name, *args, **kwargs)

    def suggest_int(self, name: str, *args, **kwargs) -> int:
        return self._suggest("suggest_int", name, *args, **kwargs)

    def suggest_categorical(self, name: str, *args, **kwargs) -> Any:
        return self._suggest("suggest_categorical", name, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:  # number, user attributes...: the real trial's
        return getattr(self._trial, name)


def space_with_pretrained(model: str, choices: tuple[bool, ...], trial: Any,
                          shape: models.DataShape) -> dict[str, Any] | None:
    """The model's space, after ``pretrained`` is fixed (one choice) or searched (both).

    It is suggested first, as a parameter, so that the model's space can depend on it (a frozen
    backbone only makes sense when it is pretrained) and so Optuna learns from it when compared.
    """
    trial.suggest_categorical("pretrained", list(choices))
    return models.get(model).space(trial, shape)


def plan_space(plan: ModelPlan, trial: Any) -> dict[str, Any]:
    """The space a search of ``plan`` runs: the model's, with ``pretrained`` chosen first where the
    model has pretrained weights, and the plan's pinned settings applied before anything is sampled.
    Returns the constants to add to the suggested parameters (the pins among them)."""
    pinned = PinnedTrial(trial, plan.fixed)
    if plan.pretrained:
        constants = space_with_pretrained(plan.name, plan.pretrained, pinned, plan.shape)
    else:
        constants = models.get(plan.name).space(pinned, plan.shape)
    return {**(constants or {}), **plan.fixed}


def default_params(plan: ModelPlan) -> dict[str, Any]:
    """The model's default configuration for its shape (from scratch, ``scratch_config``, where the search trains
    only from scratch: ``--no-pretrained``), as study parameters, less what is pinned (never Optuna's to set): the
    first trial every study runs."""
    spec = models.get(plan.name)
    defaults = {**spec.defaults_for(plan.shape), **(spec.scratch_config if plan.pretrained == (False,) else {})}
    return {k: v for k, v in config_to_params({**defaults, **plan.fixed}).items() if config_key(k) not in plan.fixed}

"""Whether a resumed search's space is the one its studies' trials were drawn from: each finished trial's
parameters replayed through the space as it is now (``--set``, ``--image-size`` or an edited model file may have
changed it); ``search.resume.checks`` refuses a resume that changed it, naming what changed."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import optuna
from optuna.trial import TrialState

from search.command.space import plan_space
from search.command.settings import ModelPlan


def space_changes(plan: ModelPlan, trials: list[optuna.trial.FrozenTrial]) -> list[str]:
    """How ``plan``'s space differs from the one ``trials`` were drawn from (empty: the same). Each
    finished trial's parameters are replayed through the space: a parameter it no longer asks for,
    one it asks for that the trial lacks, or one with another range or other choices is a change."""
    changes: set[str] = set()
    for frozen in trials:
        if not frozen.state.is_finished() or frozen.state == TrialState.FAIL or not frozen.params:
            continue
        replay = _Replay(frozen.params)
        plan_space(plan, replay)
        for name, new in replay.asked.items():
            old = frozen.distributions.get(name)
            if old is None:
                changes.add(f"{plan.name}: {name} is searched now ({_describe(new)}), not before")
            elif old != new:
                changes.add(f"{plan.name}: {name} was {_describe(old)}, now {_describe(new)}")
        for name in frozen.params.keys() - replay.asked.keys():
            changes.add(f"{plan.name}: {name} was searched ({_describe(frozen.distributions[name])}), not now")
        if changes:
            break  # one trial's differences name the change; the rest would repeat them
    return sorted(changes)


class _Replay:
    """A trial that answers every suggestion with a stored trial's value and records the distribution
    the space asked with (the space's pinned settings answer through ``PinnedTrial`` as usual)."""

    def __init__(self, params: Mapping[str, Any]) -> None:
        self._params, self.asked = dict(params), {}
        self.params: dict[str, Any] = {}
        self.user_attrs: dict[str, Any] = {}

    def set_user_attr(self, key: str, value: Any) -> None:
        self.user_attrs[key] = value

    def _answer(self, name: str, distribution: optuna.distributions.BaseDistribution) -> Any:
        self.asked[name] = distribution
        value = self._params.get(name)
        if not _fits(distribution, value):
            value = _first(distribution)  # the old value does not fit: any value follows a branch
        self.params[name] = value
        return value

    def suggest_float(self, name: str, low: float, high: float, *, step: float | None = None, log: bool = False) -> float:
        return self._answer(name, optuna.distributions.FloatDistribution(low, high, log=log, step=step))

    def suggest_int(self, name: str, low: int, high: int, *, step: int = 1, log: bool = False) -> int:
        return self._answer(name, optuna.distributions.IntDistribution(low, high, log=log, step=step))

    def suggest_categorical(self, name: str, choices: list[Any]) -> Any:
        return self._answer(name, optuna.distributions.CategoricalDistribution(choices))


def _fits(distribution: optuna.distributions.BaseDistribution, value: Any) -> bool:
    if isinstance(distribution, optuna.distributions.CategoricalDistribution):
        return value in distribution.choices
    return value is not None and distribution.low <= value <= distribution.high


def _first(distribution: optuna.distributions.BaseDistribution) -> Any:
    if isinstance(distribution, optuna.distributions.CategoricalDistribution):
        return distribution.choices[0]
    return distribution.low


def _describe(distribution: optuna.distributions.BaseDistribution) -> str:
    if isinstance(distribution, optuna.distributions.CategoricalDistribution):
        return "one of " + ", ".join(map(repr, distribution.choices))
    return f"{distribution.low:g} to {distribution.high:g}{' (log)' if distribution.log else ''}"

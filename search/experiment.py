"""One Tune experiment over several models, with one Optuna study and one ASHA per model.

Running every model in ONE experiment keeps the cluster packed; routing each trial to its own
model's searcher and scheduler keeps the comparison fair: a model never competes for another's
TPE samples, and a slow-starting model is never cut by a fast one's learning curve.
"""

from __future__ import annotations

import functools
import pickle
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from ray.tune import PlacementGroupFactory
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

import models
from trainables.config import MODEL_KEY

METRIC, MODE = "val_acc", "max"
TIME_ATTR = "epoch"


@dataclass(frozen=True)
class ModelPlan:
    """How one model is searched: how many trials, for how many epochs, cut at which rungs."""

    name: str
    num_samples: int
    max_epochs: int
    grace_period: int
    cpus: float
    gpus: float
    # For models fine-tuned from pretrained weights: the values ``pretrained`` may take. (True,) by
    # default, (False,) with --no-pretrained, (True, False) with --compare-scratch; () otherwise.
    pretrained: tuple[bool, ...] = ()
    fixed: dict[str, Any] = field(default_factory=dict)  # settings every trial gets (--smoke pins some)


class _PickledState:
    """Tune saves searchers and schedulers with the experiment's state: the routers pickle
    themselves whole, the per-model Optuna searchers and ASHA schedulers inside them included."""

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as f:
            pickle.dump(self.__dict__, f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            self.__dict__.update(pickle.load(f))


class PerModelSearcher(_PickledState, Searcher):
    """Hands each new trial to the next model's own searcher, round-robin, until each model has
    had its ``num_samples``; results and completions go back to the searcher that suggested them.

    It also decides how many trials are out at once: per model at most its ``slots`` (what the
    resources hold of its trials), and in all at most the limit Tune gives it
    (``max_concurrent_trials``, see ``set_max_concurrency``). Doing this here rather than in Tune's
    ``ConcurrencyLimiter`` keeps the count in the searcher's own saved state, so a resumed search
    still tells each model's study about trials that were running when it was killed.

    Every suggested config carries ``model`` and the model's constants (its epoch budget).
    """

    def __init__(self, searchers: Mapping[str, Searcher], num_samples: Mapping[str, int],
                 constants: Mapping[str, Mapping[str, Any]], slots: Mapping[str, int] | None = None) -> None:
        super().__init__(metric=METRIC, mode=MODE)
        self._searchers = dict(searchers)
        self._remaining = dict(num_samples)
        self._constants = {name: dict(values) for name, values in constants.items()}
        self._slots = {name: (slots or {}).get(name, 10**9) for name in self._searchers}
        self._limit = 10**9
        self._owner: dict[str, str] = {}
        self._live: dict[str, str] = {}  # trial id -> model, for trials suggested and not yet complete
        self._turn = 0

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        return metric in (None, METRIC) and mode in (None, MODE)

    def set_max_concurrency(self, max_concurrent: int) -> bool:
        """Tune's ``max_concurrent_trials``: honoured here (True tells Tune not to limit on top)."""
        self._limit = max_concurrent
        return True

    def _open_models(self) -> list[str]:
        live = list(self._live.values())
        return [name for name, left in self._remaining.items()
                if left > 0 and live.count(name) < self._slots[name]]

    def suggest(self, trial_id: str) -> dict | str | None:
        if not any(left > 0 for left in self._remaining.values()):
            return Searcher.FINISHED
        open_models = self._open_models()
        if not open_models or len(self._live) >= self._limit:
            return None  # every slot is taken: Tune asks again when a trial completes
        model = open_models[self._turn % len(open_models)]
        self._turn += 1
        config = self._searchers[model].suggest(trial_id)
        if config is None or config == Searcher.FINISHED:
            return None  # that searcher cannot suggest now; Tune asks again later
        self._remaining[model] -= 1
        self._owner[trial_id] = model
        self._live[trial_id] = model
        return {MODEL_KEY: model, **config, **self._constants[model]}

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if trial_id in self._owner:
            self._searchers[self._owner[trial_id]].on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        self._live.pop(trial_id, None)
        if trial_id in self._owner:
            # An errored trial must be a failure to Optuna, not a result at its last value.
            self._searchers[self._owner[trial_id]].on_trial_complete(trial_id, None if error else result, error)


class PerModelScheduler(_PickledState, FIFOScheduler):
    """Routes every trial event to its model's own ``ASHAScheduler``: separate brackets per model.

    Trials start in submission order (FIFO); only the early-stopping decisions are per model.
    """

    def __init__(self, schedulers: Mapping[str, TrialScheduler]) -> None:
        super().__init__()
        self._schedulers = dict(schedulers)
        self._metric = METRIC

    def _of(self, trial) -> TrialScheduler:
        return self._schedulers[trial.config[MODEL_KEY]]

    def set_search_properties(self, metric, mode, **spec) -> bool:
        return metric in (None, METRIC) and mode in (None, MODE)

    def on_trial_add(self, tune_controller, trial) -> None:
        self._of(trial).on_trial_add(tune_controller, trial)

    def on_trial_error(self, tune_controller, trial) -> None:
        self._of(trial).on_trial_error(tune_controller, trial)

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        return self._of(trial).on_trial_result(tune_controller, trial, result)

    def on_trial_complete(self, tune_controller, trial, result: dict) -> None:
        self._of(trial).on_trial_complete(tune_controller, trial, result)

    def on_trial_remove(self, tune_controller, trial) -> None:
        self._of(trial).on_trial_remove(tune_controller, trial)

    def debug_string(self) -> str:
        return "\n".join(f"[{name}] {s.debug_string()}" for name, s in self._schedulers.items())


def space_with_pretrained(model: str, choices: tuple[bool, ...], trial: Any) -> dict[str, Any] | None:
    """The model's space, after ``pretrained`` is fixed (one choice) or searched (both).

    It is suggested first, as a parameter, so that the model's space can depend on it (a frozen
    backbone only makes sense when it is pretrained) and so Optuna learns from it when compared.
    """
    trial.suggest_categorical("pretrained", list(choices))
    return models.get(model).space(trial)


def startup_trials(num_samples: int, slots: int = 1) -> int:
    """Random trials before TPE models the space: a quarter of the budget (2 to 10), or the first
    wave of concurrent trials if that is larger, but never more than half the budget.

    The first ``slots`` trials are all sampled before any of them reports, so TPE would have nothing
    to learn from for them anyway (with ``constant_liar`` Optuna counts running trials towards the
    start-up count, and would otherwise "model" a space of trials with no values); half the budget
    stays TPE-guided however wide the machine is. Optuna's default of 10 would make a search of 8
    samples purely random.
    """
    by_budget = min(10, max(2, num_samples // 4))
    return max(2, min(max(by_budget, slots), num_samples // 2))


def tpe_sampler(num_samples: int, seed: int, slots: int = 1) -> optuna.samplers.TPESampler:
    """A seeded TPE sampler sized to the budget and to how many trials run at once.

    ``constant_liar`` keeps concurrent trials from being handed the same region while they run.
    """
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup_trials(num_samples, slots),
                                      constant_liar=True)


OPTUNA_FILE = "optuna.journal"


def optuna_storage(folder: Path) -> optuna.storages.BaseStorage:
    """Optuna's journal file in the experiment's folder: every model's study, written as trials are
    asked and told, so ``optuna-dashboard <folder>/optuna.journal`` shows the search live."""
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    folder.mkdir(parents=True, exist_ok=True)
    return JournalStorage(JournalFileBackend(str(folder / OPTUNA_FILE)))


def build_searcher(plans: list[ModelPlan], seed: int, storage: optuna.storages.BaseStorage | None = None,
                   slots: Mapping[str, int] | None = None) -> PerModelSearcher:
    """One seeded TPE study per model (named after it, kept in ``storage`` if given, else in
    memory), each trying the model's default configuration first; ``slots`` (trials of each model
    that can run at once) sizes each sampler's random start."""
    searchers = {}
    for i, plan in enumerate(plans):
        spec = models.get(plan.name)
        searchers[plan.name] = OptunaSearch(
            space=functools.partial(space_with_pretrained, plan.name, plan.pretrained) if plan.pretrained else spec.space,
            metric=METRIC,
            mode=MODE,
            points_to_evaluate=[dict(spec.default_config)],
            sampler=tpe_sampler(plan.num_samples, seed + i, (slots or {}).get(plan.name, 1)),  # seeds differ so studies do not mirror
            study_name=plan.name,
            storage=storage,
        )
    return PerModelSearcher(
        searchers,
        {p.name: p.num_samples for p in plans},
        {p.name: {"epochs": p.max_epochs, **p.fixed} for p in plans},
        slots,
    )


def build_scheduler(plans: list[ModelPlan], reduction_factor: float) -> PerModelScheduler:
    """One ASHA per model over ``epoch``, with the model's own maximum and grace period."""
    return PerModelScheduler({
        plan.name: ASHAScheduler(
            time_attr=TIME_ATTR,
            metric=METRIC,
            mode=MODE,
            max_t=plan.max_epochs,
            grace_period=plan.grace_period,
            reduction_factor=reduction_factor,
        )
        for plan in plans
    })


def resources_for(plans: list[ModelPlan], use_gpu: bool):
    """A function of a trial's config giving the resources its model declares (one bundle)."""
    table = {}
    for p in plans:
        bundle = {"CPU": p.cpus}
        if use_gpu and p.gpus:
            bundle["GPU"] = p.gpus
        table[p.name] = PlacementGroupFactory([bundle])

    def resources(config: dict[str, Any]) -> PlacementGroupFactory:
        return table[config[MODEL_KEY]]

    return resources


def trial_slots(plan: ModelPlan, nodes: list[Mapping[str, float]], use_gpu: bool) -> int:
    """How many trials of ``plan``'s model fit at once on ``nodes`` (each node's CPU and GPU counts).

    A trial's bundle never spans nodes, so each node is counted on its own: the trials its CPUs
    hold, and, for a GPU trial, the trials its GPUs hold (4 on a GPU at 0.25 each).
    """
    total = 0
    for node in nodes:
        fit = int(node.get("CPU", 0) // plan.cpus) if plan.cpus else 10**6
        if use_gpu and plan.gpus:
            fit = min(fit, int(round(node.get("GPU", 0) / plan.gpus, 6)))
        total += fit
    return total


def concurrency(plans: list[ModelPlan], nodes: list[Mapping[str, float]], use_gpu: bool,
                cap: int | None = None) -> tuple[int, dict[str, int]]:
    """Trials the search admits at once, and each model's own slots.

    Per model: what the nodes hold of its trials, at most its ``num_samples``. Across models: the
    most any one model can fill, so that the machine stays full whichever models still have trials
    to run (trials beyond what fits wait as pending, which costs nothing). ``cap`` (``--max-concurrent``)
    bounds both. At least 1, even on a cluster still waiting for its autoscaler.
    """
    per_model = {p.name: max(1, min(trial_slots(p, nodes, use_gpu), p.num_samples, cap or 10**9)) for p in plans}
    admitted = max(per_model.values())
    return admitted, per_model

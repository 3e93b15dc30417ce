"""One Tune experiment over several models, with one Optuna study and one ASHA per model.

Running every model in ONE experiment keeps the cluster packed; routing each trial to its own
model's searcher and scheduler keeps the comparison fair: a model never competes for another's
TPE samples, and a slow-starting model is never cut by a fast one's learning curve.
"""

from __future__ import annotations

import functools
import pickle
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState
from ray.tune import PlacementGroupFactory
from ray.tune.experiment import Trial
from ray.tune.result import TRAINING_ITERATION
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

import models
from models.config import MODEL_KEY, config_key, config_to_params

METRIC, MODE = "val_acc", "max"
MAX_REDRAWS = 20  # draws of one trial's config that the pinned settings make invalid, before giving up
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
    shape: models.DataShape = models.DataShape()  # the data's: the space and the default adapt to it


class PerModelSearcher(Searcher):
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
                 constants: Mapping[str, Mapping[str, Any]], slots: Mapping[str, int] | None = None,
                 shapes: Mapping[str, models.DataShape] | None = None) -> None:
        super().__init__(metric=METRIC, mode=MODE)
        self._searchers = dict(searchers)
        self._shapes = {name: (shapes or {}).get(name, models.DataShape()) for name in self._searchers}
        self._remaining = dict(num_samples)
        self._constants = {name: dict(values) for name, values in constants.items()}
        self._slots = {name: (slots or {}).get(name, 10**9) for name in self._searchers}
        self._limit = 10**9
        self._owner: dict[str, str] = {}  # trial id -> model
        self._step: dict[str, int] = {}  # trial id -> the last epoch its study was told of
        self._study_key: dict[str, str] = {}  # trial id -> the key of its draw in the model's searcher
        self._live: set[str] = set()  # trials suggested and not yet complete
        self._turn = 0
        self._scheduler: TrialScheduler | None = None  # saved along (see ``keep_with``)

    def keep_with(self, scheduler: TrialScheduler) -> "PerModelSearcher":
        """Save ``scheduler``'s state with this searcher's. Tune saves the searcher with its trial
        list but never the scheduler: without this a resumed search's ASHA would start with empty
        rungs, and judge the trials that go on against only the results reported after the resume."""
        self._scheduler = scheduler
        return self

    def save(self, checkpoint_path: str) -> None:
        state = {k: v for k, v in self.__dict__.items() if k != "_scheduler"}
        scheduler = getattr(self, "_scheduler", None)  # None in a search begun before schedulers were kept
        state["scheduler_state"] = scheduler.__getstate__() if scheduler is not None else None
        with open(checkpoint_path, "wb") as f:
            pickle.dump(state, f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            state = pickle.load(f)
        scheduler_state = state.pop("scheduler_state", None)
        self.__dict__.update(state)
        scheduler = getattr(self, "_scheduler", None)  # Tune's own scheduler object, restored in place
        if scheduler is not None and scheduler_state is not None:
            scheduler.__dict__.update(scheduler_state)

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        return metric in (None, METRIC) and mode in (None, MODE)

    def set_max_concurrency(self, max_concurrent: int) -> bool:
        """Tune's ``max_concurrent_trials``: honoured here (True tells Tune not to limit on top)."""
        self._limit = max_concurrent
        return True

    def _open_models(self) -> list[str]:
        live = [self._owner[trial_id] for trial_id in self._live]
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
        config = self._draw(model, trial_id)
        if config is None:
            return None  # that searcher cannot suggest now; Tune asks again later
        self._remaining[model] -= 1
        self._owner[trial_id] = model
        self._live.add(trial_id)
        return config

    def _draw(self, model: str, trial_id: str) -> dict | None:
        """A valid config from the model's study. A draw that cannot train with the pinned settings
        (``--set padding=valid`` and three blocks shrink the image to nothing) is told to the study
        as failed, with the reason, and drawn again; after ``MAX_REDRAWS`` the last one runs and
        fails with that reason."""
        from models.config import ConfigError, params_to_config, split_config

        searcher, spec = self._searchers[model], models.get(model)
        for attempt in range(MAX_REDRAWS + 1):
            key = trial_id if attempt == 0 else f"{trial_id}~{attempt}"  # the study's trial, per draw
            params = searcher.suggest(key)
            if params is None or params == Searcher.FINISHED:
                return None
            # Links the study's trial to Tune's (trial_id in the exports); Ray's OptunaSearch keeps its
            # Optuna trials in _ot_trials and offers no other way to reach them.
            searcher._ot_trials[key].set_user_attr("trial_id", trial_id)
            config = {MODEL_KEY: model, **params_to_config(params), **self._constants[model]}
            self._study_key[trial_id] = key
            try:
                split_config(config, spec.config_cls, model)
                spec.check_fits(config, self._shapes[model])
                return config
            except ConfigError as e:
                if attempt == MAX_REDRAWS:
                    return config
                searcher._ot_trials[key].set_user_attr("invalid", str(e))
                searcher.on_trial_complete(key, None, error=True)
        return None

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        epoch = int(result.get(TIME_ATTR, 0))
        if trial_id in self._owner and epoch > self._step.get(trial_id, 0):
            # Each epoch's val_acc is an intermediate value of the study's trial at that epoch (Tune's
            # own iteration count would drift from it for a trial resumed from its checkpoint).
            self._searchers[self._owner[trial_id]].on_trial_result(
                self._study_key.get(trial_id, trial_id), {**result, TRAINING_ITERATION: epoch})
            self._step[trial_id] = epoch

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        """Tells the model's study how the trial ended: ``FAIL`` if it raised, ``COMPLETE`` with its
        final ``val_acc`` if it trained its whole budget, else ``PRUNED`` (ASHA or the time budget
        stopped it): TPE then ranks it behind complete trials by the last epoch it reached, never as
        if its low-budget accuracy were final."""
        self._live.discard(trial_id)
        if trial_id not in self._owner:
            return
        model = self._owner[trial_id]
        if result and not error:
            self.on_trial_result(trial_id, result)  # Tune withholds the result a scheduler stopped on
        finished = bool(result) and int(result.get(TIME_ATTR, 0)) >= int(self._constants[model]["epochs"])
        # Ray's OptunaSearch tells Optuna FAIL for an error, PRUNED for no result, else COMPLETE.
        self._searchers[model].on_trial_complete(self._study_key.get(trial_id, trial_id),
                                                 result if finished and not error else None, error)


    # Reconciling with Tune's trial list after --resume. Tune saves its trial list and this searcher
    # one after the other, and copies both to the storage path in a background thread, file by
    # file: a kill between the two leaves a searcher older or newer than the trial list. Tune runs
    # what its list holds, so the list is the truth and the searcher is brought in line with it.

    def adopt(self, trial_id: str, model: str, finished: bool, error: bool = False,
              result: dict | None = None) -> None:
        """A trial of Tune's list. One the saved searcher never suggested (saved before it did) is
        counted against its model's budget and linked to its study trial; one the searcher still
        counts as running that Tune's list has finished is told to its study as finished."""
        if model not in self._searchers:
            return
        if trial_id not in self._owner:
            self._owner[trial_id] = model
            self._remaining[model] -= 1
            self._relink(model, trial_id)  # the study trial was drawn under the Tune id itself
            if not finished:
                self._live.add(trial_id)
        if finished and trial_id in self._live:
            if self._told(model, self._study_key.get(trial_id, trial_id)):
                self._live.discard(trial_id)  # the journal has its end already
            else:
                self.on_trial_complete(trial_id, result, error)

    def _told(self, model: str, key: str) -> bool:
        """Whether the study already holds the end of the trial drawn under ``key``."""
        trial = self._searchers[model]._ot_trials.get(key)
        return trial is not None and trial.study._storage.get_trial(trial._trial_id).state.is_finished()

    def _relink(self, model: str, trial_id: str) -> None:
        """The study trial asked for ``trial_id`` (its ``trial_id`` attribute), put back where Ray's
        OptunaSearch looks for it; the journal kept it although the saved searcher had not."""
        searcher = self._searchers[model]
        for frozen in reversed(searcher._ot_study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))):
            if frozen.user_attrs.get("trial_id") == trial_id:
                searcher._ot_trials[trial_id] = optuna.Trial(searcher._ot_study, frozen._trial_id)
                return

    def reconcile(self, present: Mapping[str, str]) -> None:
        """After every trial of Tune's list was adopted: forget trials the saved searcher suggested
        but the list lacks (they will never run; their model gets the trial back), and fail the
        study trials no trial of the list stands for (asked for, never run), with the reason."""
        for trial_id in [t for t in self._owner if t not in present]:
            model = self._owner.pop(trial_id)
            self._remaining[model] += 1
            self._live.discard(trial_id)
            self._step.pop(trial_id, None)
            self._study_key.pop(trial_id, None)
        for model, searcher in self._searchers.items():
            for frozen in searcher._ot_study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                if frozen.user_attrs.get("trial_id") not in self._live:
                    searcher._ot_study._storage.set_trial_user_attr(
                        frozen._trial_id, "lost", "asked for before a kill; the search drew another trial instead")
                    searcher._ot_study.tell(frozen.number, state=TrialState.FAIL)
                    for key, trial in list(searcher._ot_trials.items()):
                        if trial._trial_id == frozen._trial_id:
                            del searcher._ot_trials[key]

    @property
    def unfinished(self) -> bool:
        """Whether some model still has trials to suggest."""
        return any(left > 0 for left in self._remaining.values())


class PerModelScheduler(FIFOScheduler):
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
        # Tune adds the trials of a resumed experiment's list here, after restoring the searcher.
        searcher = _base_searcher(getattr(tune_controller, "search_alg", None))
        if isinstance(searcher, PerModelSearcher):
            searcher.adopt(trial.trial_id, trial.config[MODEL_KEY], trial.status in (Trial.TERMINATED, Trial.ERROR),
                           trial.status == Trial.ERROR, trial.last_result)
        self._of(trial).on_trial_add(tune_controller, trial)

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "_reconciled"}  # a new session reconciles anew

    def choose_trial_to_run(self, tune_controller):
        if not getattr(self, "_reconciled", False):  # once per session: the first step after (re)start
            self._reconciled = True
            reconcile_search(tune_controller)
        return super().choose_trial_to_run(tune_controller)

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


def _base_searcher(search_alg: Any) -> Any:
    """The searcher inside Tune's search algorithm (a ``SearchGenerator``) and its wrappers."""
    searcher = getattr(search_alg, "searcher", None)
    while hasattr(searcher, "searcher"):
        searcher = searcher.searcher
    return searcher


def reconcile_search(tune_controller) -> None:
    """Bring the searcher, and Tune's count of the trials it created, in line with Tune's trial list
    (see ``PerModelSearcher.reconcile``): a saved count newer than the list would end the search
    short, an older one would run a trial too many."""
    search_alg = tune_controller.search_alg
    searcher = _base_searcher(search_alg)
    if not isinstance(searcher, PerModelSearcher):
        return
    trials = tune_controller.get_trials()
    searcher.reconcile({t.trial_id: t.config[MODEL_KEY] for t in trials})
    # Ray 2.60's SearchGenerator keeps both counts in these attributes, saved beside the searcher.
    search_alg._counter = len(trials)
    search_alg._finished = not searcher.unfinished


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


SAMPLERS = ("tpe", "random")


def tpe_sampler(num_samples: int, seed: int, slots: int = 1) -> optuna.samplers.TPESampler:
    """A seeded TPE sampler sized to the budget and to how many trials run at once, every choice
    set here rather than left to Optuna's defaults (which changed between Optuna 4 and 5).

    ``multivariate`` models the parameters jointly (a learning rate goes with a batch size), and
    ``group`` does so within each branch of a conditional space (SGD's momentum only where SGD was
    chosen) instead of dropping every parameter some trial lacks; ``constant_liar`` keeps concurrent
    trials from being handed the same region while they run.
    """
    with warnings.catch_warnings():  # multivariate and group are marked experimental in Optuna 4 and 5
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup_trials(num_samples, slots),
                                          multivariate=True, group=True, constant_liar=True)


OPTUNA_FILE = "optuna.journal"


def optuna_storage(folder: Path) -> optuna.storages.BaseStorage:
    """Optuna's journal file in the experiment's folder: every model's study, written as trials are
    asked and told, so ``optuna-dashboard <folder>/optuna.journal`` shows the search live."""
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    folder.mkdir(parents=True, exist_ok=True)
    return JournalStorage(JournalFileBackend(str(folder / OPTUNA_FILE)))


def make_sampler(kind: str, num_samples: int, seed: int, slots: int = 1) -> optuna.samplers.BaseSampler:
    """TPE (the default), or random search: the baseline TPE has to beat (benchmarks/search_quality.py)."""
    if kind == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if kind != "tpe":
        raise ValueError(f"sampler {kind!r}: choose one of {', '.join(SAMPLERS)}")
    return tpe_sampler(num_samples, seed, slots)


def default_params(plan: ModelPlan) -> dict[str, Any]:
    """The model's default configuration for its shape, as study parameters, less what is pinned
    (never Optuna's to set): the first trial every study runs."""
    defaults = models.get(plan.name).defaults_for(plan.shape)
    return {k: v for k, v in config_to_params({**defaults, **plan.fixed}).items() if config_key(k) not in plan.fixed}


def build_searcher(plans: list[ModelPlan], seed: int, storage: optuna.storages.BaseStorage | None = None,
                   slots: Mapping[str, int] | None = None, sampler: str = "tpe") -> PerModelSearcher:
    """One seeded study per model (named after it, kept in ``storage`` if given, else in memory),
    each trying the model's default configuration first; ``slots`` (trials of each model that can
    run at once) sizes each TPE sampler's random start."""
    searchers = {}
    for i, plan in enumerate(plans):
        searchers[plan.name] = OptunaSearch(
            space=functools.partial(plan_space, plan),
            metric=METRIC,
            mode=MODE,
            # The default configuration first, but for what is pinned: that is never Optuna's to set.
            points_to_evaluate=[default_params(plan)],
            # Seeds differ so that the studies do not mirror each other.
            sampler=make_sampler(sampler, plan.num_samples, seed + i, (slots or {}).get(plan.name, 1)),
            study_name=plan.name,
            storage=storage,
        )
    return PerModelSearcher(
        searchers,
        {p.name: p.num_samples for p in plans},
        {p.name: {"epochs": p.max_epochs, "seed": seed, **p.fixed} for p in plans},
        slots,
        {p.name: p.shape for p in plans},
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

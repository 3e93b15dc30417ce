"""Each model's Optuna study, driven through Optuna's public ask-and-tell interface.

A ``ModelStudy`` asks its study for a trial (``study.ask``) and runs the model's space on it
(define-by-run), reports each epoch's validation accuracy (``trial.report``), and tells the end
(``study.tell``: COMPLETE with the final accuracy, PRUNED where early stopping or the time budget cut
it, FAIL with the reason). The studies live in one Optuna journal in the experiment's folder, so
``optuna.load_study`` and optuna-dashboard read them, and a resumed search continues them.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

import models
from models.config import MODEL_KEY, ConfigError, config_to_params, params_to_config, split_config
from search.command.space import METRIC, SAMPLERS, TIME_ATTR, default_params, plan_space
from search.command.settings import ModelPlan

MAX_REDRAWS = 20  # draws of one trial's config that the pinned settings make invalid, before giving up
OPTUNA_FILE = "optuna.journal"
LOST = "lost"  # the study's user attribute naming, per trial number, why a trial was failed on a resume


def startup_trials(num_samples: int, slots: int = 1) -> int:
    """Random trials before TPE models the space: a quarter of the budget (2 to 10), or the first
    wave of concurrent trials if that is larger, but never more than half the budget.

    Optuna counts every trial that is not waiting (running ones too) towards ``n_startup_trials``,
    so the first ``slots`` trials, all sampled before any of them reports, would otherwise be
    "modelled" from trials with no values; half the budget stays TPE-guided however wide the machine
    is. Optuna's default of 10 would make a search of 8 samples purely random.
    """
    by_budget = min(10, max(2, num_samples // 4))
    return max(2, min(max(by_budget, slots), num_samples // 2))


def full_trials(plan: ModelPlan, epoch_budget: int | None = None, models: int = 1) -> int:
    """The trials of ``plan``'s length that its model can afford in full: its trial count, or fewer where
    an epoch budget (shared evenly by ``models`` models) runs out first. TPE's random start is sized from
    this, not from the trial count: under ASHA a search may ask for many more trials than it can train in
    full (``--num-samples 135 --epoch-budget 135`` with 9-epoch trials affords 15), and a start sized
    from 135 spent 10 of those 15 equivalents guessing where TPE alone, sized from 15, spent 3."""
    if not epoch_budget:
        return plan.num_samples
    return max(1, min(plan.num_samples, epoch_budget // (plan.max_epochs * max(1, models))))


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


def make_sampler(kind: str, num_samples: int, seed: int, slots: int = 1) -> optuna.samplers.BaseSampler:
    """TPE (the default), or random search: the baseline TPE has to beat (benchmarks/search_quality.py)."""
    if kind == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if kind != "tpe":
        raise ValueError(f"sampler {kind!r}: choose one of {', '.join(SAMPLERS)}")
    return tpe_sampler(num_samples, seed, slots)


def optuna_storage(folder: Path) -> optuna.storages.BaseStorage:
    """Optuna's journal file in the experiment's folder: every model's study, written as trials are
    asked and told, so ``optuna-dashboard <folder>/optuna.journal`` shows the search live."""
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    folder.mkdir(parents=True, exist_ok=True)
    return JournalStorage(JournalFileBackend(str(folder / OPTUNA_FILE)))


class ModelStudy:
    """One model's study and the trials it has out, each under the Tune trial id it was asked for.

    Pickled with the searcher when Tune saves it: the study (its storage and its sampler's random
    state) and the asked ``optuna.Trial`` objects come back as they were, so the trials that were
    running report to and end in the same study trials after a resume.
    """

    def __init__(self, plan: ModelPlan, sampler: optuna.samplers.BaseSampler,
                 storage: optuna.storages.BaseStorage | None = None, constants: Mapping[str, Any] | None = None) -> None:
        self.plan = plan
        self.constants = dict(constants or {})  # added to every config (the epoch budget, the seed)
        self.study = optuna.create_study(study_name=plan.name, storage=storage, sampler=sampler,
                                         direction="maximize", load_if_exists=True)
        if not self.study.trials:
            self.study.enqueue_trial(default_params(plan))  # the model's default configuration first
        self._asked: dict[str, optuna.Trial] = {}  # Tune trial id -> the study trial it trains

    def ask(self, trial_id: str) -> dict[str, Any]:
        """A config for Tune trial ``trial_id``. A draw that cannot train with the pinned settings
        (``--set padding=valid`` and three blocks shrink the image to nothing) is told to the study as
        failed, with the reason, and drawn again; after ``MAX_REDRAWS`` the last one runs and fails."""
        spec = models.get(self.plan.name)
        for attempt in range(MAX_REDRAWS + 1):
            trial = self.study.ask()
            trial.set_user_attr("trial_id", trial_id)  # the link to trials.parquet
            config = self._config(trial)
            self._asked[trial_id] = trial
            try:
                split_config(config, spec.config_cls, self.plan.name)
                spec.check_fits(config, self.plan.shape)
                return config
            except ConfigError as e:
                if attempt == MAX_REDRAWS:
                    return config
                trial.set_user_attr("invalid", str(e))
                self.study.tell(trial, state=TrialState.FAIL)
        raise AssertionError("unreachable")

    def _config(self, trial: optuna.Trial) -> dict[str, Any]:
        constants = plan_space(self.plan, trial)  # define-by-run: the model's space asks the trial
        return {MODEL_KEY: self.plan.name, **params_to_config(trial.params), **constants, **self.constants}

    def report(self, trial_id: str, epoch: int, value: float) -> None:
        """An epoch's validation accuracy, as the study trial's intermediate value at that step."""
        trial = self._asked.get(trial_id)
        if trial is not None and not self.told_trial(trial):  # a resumed trial the journal has ended keeps its end
            trial.report(value, epoch)

    def tell(self, trial_id: str, state: TrialState, value: float | None = None, reason: str | None = None) -> None:
        """The trial's end: COMPLETE with ``value``, PRUNED (Optuna keeps its last reported value as
        the trial's), or FAIL with ``reason`` as its ``error`` attribute. A study trial that already
        holds an end (told before a kill, the saved searcher older than the journal) keeps it."""
        trial = self._asked.pop(trial_id, None)
        if trial is None or self.told_trial(trial):
            return
        if reason:
            trial.set_user_attr("error", reason)
        self.study.tell(trial, value if state == TrialState.COMPLETE else None, state=state, skip_if_finished=True)

    def told_trial(self, trial: optuna.Trial) -> bool:
        """Whether the study (its journal, which may be ahead of a restored searcher) holds the trial's end."""
        return self._frozen(trial.number).state.is_finished()

    def _frozen(self, number: int) -> optuna.trial.FrozenTrial:
        return self.study.get_trials(deepcopy=False)[number]  # a study's trials are numbered 0, 1, ... in order

    # After --resume, the journal may hold what the saved searcher does not (Tune saved it before
    # the last trials were asked for, or told). Optuna's public interface gives no way back to a
    # running trial's ``optuna.Trial`` without the object asked for it, so such a trial is failed,
    # with the reason in the study's ``lost`` attribute, and continued as a new study trial.

    def adopt(self, trial_id: str, config: Mapping[str, Any]) -> None:
        """Tune trial ``trial_id`` with ``config`` runs, but this study holds no trial object for it:
        its study trial (if the journal has it running) is failed as lost and replaced by a new one
        with the same parameters and the epochs it had reported."""
        if trial_id in self._asked:
            return
        drawn = [t for t in self.study.get_trials(deepcopy=False)
                 if t.user_attrs.get("trial_id") == trial_id and "invalid" not in t.user_attrs]
        old = drawn[-1] if drawn else None
        if old is not None and old.state.is_finished():
            return  # the journal holds its end (told after the searcher was saved): nothing left to tell
        if old is not None:
            self._lose(old.number, f"continued as a new study trial after a resume (Tune trial {trial_id})")
        searched = {k: v for k, v in config.items() if k != MODEL_KEY and k not in self.constants
                    and k not in self.plan.fixed}
        self.study.enqueue_trial(old.params if old else config_to_params(searched),
                                 user_attrs={"trial_id": trial_id, **({"continues": old.number} if old else {})})
        trial = self.study.ask()
        self._config(trial)  # the space, asked again: the enqueued values come back, their distributions are set
        for step, value in sorted((old.intermediate_values if old else {}).items()):
            trial.report(value, step)
        self._asked[trial_id] = trial

    def forget(self, trial_id: str) -> None:
        self._asked.pop(trial_id, None)

    def fail_unowned(self, live: set[str], reason: str) -> None:
        """Fail every running study trial that no live Tune trial trains (asked for before a kill,
        never run), naming ``reason``."""
        for frozen in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            trial_id = frozen.user_attrs.get("trial_id")
            asked = self._asked.get(trial_id)
            if trial_id in live and asked is not None and asked.number == frozen.number:
                continue  # the study trial its Tune trial reports to
            self._lose(frozen.number, reason)
            if asked is not None and asked.number == frozen.number:
                del self._asked[trial_id]

    def _lose(self, number: int, reason: str) -> None:
        lost = dict(self.study.user_attrs.get(LOST, {}))
        lost[str(number)] = reason
        self.study.set_user_attr(LOST, lost)
        self.study.tell(number, state=TrialState.FAIL, skip_if_finished=True)


def settle_stopped(storage: optuna.storages.BaseStorage, plans: list[ModelPlan],
                   ended: Mapping[str, Mapping[str, Any]]) -> None:
    """Tell each model's study how the trials still running in it ended, once a spent ``--epoch-budget``
    or ``--time-budget`` has ended the experiment: Tune stops those trials (and drops those not yet
    started) without telling its searcher, so their study trials would stay RUNNING in the journal
    (TPE counts a running trial as pending: a --resume --num-samples would draw around it). Told as the
    searcher tells an ended trial: COMPLETE with its accuracy if it trained its whole budget, else
    PRUNED (``ended_state``). ``ended``: Tune trial id -> its last result."""
    for plan in plans:
        study = optuna.load_study(study_name=plan.name, storage=storage)
        for frozen in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            state, value = ended_state(ended.get(frozen.user_attrs.get("trial_id")), plan.max_epochs)
            study.tell(frozen.number, value, state=state, skip_if_finished=True)


def ended_state(result: Mapping[str, Any] | None, epochs: int) -> tuple[TrialState, float | None]:
    """How a trial that ended without an error is told to its study: COMPLETE with its final accuracy
    if its last result is of its last epoch, else PRUNED (Optuna keeps the last reported accuracy)."""
    if result and int(result.get(TIME_ATTR, 0)) >= epochs and METRIC in result:
        return TrialState.COMPLETE, float(result[METRIC])
    return TrialState.PRUNED, None

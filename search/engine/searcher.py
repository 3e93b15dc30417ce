"""The searcher Tune asks for trials: each model's own study, in turn, within each model's slots.

Running every model in ONE experiment keeps the cluster packed; routing each trial to its own
model's study (and, in ``search.engine.scheduler``, its own ASHA) keeps the comparison fair: a model never
competes for another's TPE samples, and a slow-starting model is never cut by a fast one's curve.
"""

from __future__ import annotations

import json
import pickle
import tempfile
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState
from ray.tune.schedulers import TrialScheduler
from ray.tune.search import Searcher

import models
from search.command.space import METRIC, MODE, TIME_ATTR
from search.command.settings import ModelPlan
from search.engine.studies import ModelStudy, ended_state, full_trials, make_sampler

BUDGET_FILE = "budget.json"  # trials per model: rewritten when --resume grows the search
_LENDER: Callable[[], int] | None = None  # how many slots the search's end phase holds now (search.finish.endphase)


def lend_slots(lender: Callable[[], int] | None) -> None:
    """Let ``lender`` hold some of the search's slots for its end phase (a model's winner tested and bundled as a
    Ray task beside the trials): each time Tune asks for a trial, the searcher starts that many fewer (the lender
    collects finished tasks first: Tune asks every second while it waits for a trial, and calls nothing else).
    Kept here, not in the searcher's state, because Tune pickles the searcher and a --resume restores it."""
    global _LENDER
    _LENDER = lender


class PerModelSearcher(Searcher):
    """Hands each new trial to the study of the model with the most work left (its trials still to
    start times the expected cost of one, ``costs``), until each model has had its budget of trials;
    results and ends go back to the study that asked for the trial. Longest first keeps the search's
    tail short: the slowest model's trials do not start last, when the other slots have nothing to do.

    It also decides how many trials are out at once: per model at most its ``slots`` (what the
    resources hold of its trials), and in all at most the limit Tune gives it
    (``max_concurrent_trials``, see ``set_max_concurrency``). Doing this here rather than in Tune's
    ``ConcurrencyLimiter`` keeps the count in the searcher's own saved state, so a resumed search
    still tells each model's study about trials that were running when it was killed.
    """

    def __init__(self, studies: Mapping[str, ModelStudy], num_samples: Mapping[str, int],
                 slots: Mapping[str, int] | None = None, budget_file: str | None = None,
                 costs: Mapping[str, float] | None = None) -> None:
        super().__init__(metric=METRIC, mode=MODE)
        self._studies = dict(studies)
        self._budget = dict(num_samples)
        self._slots = {name: (slots or {}).get(name, 10**9) for name in self._studies}
        self._budget_file = budget_file  # read again on restore: a grown search's budgets
        self._limit = 10**9
        self._owner: dict[str, str] = {}  # Tune trial id -> model
        self._step: dict[str, int] = {}  # Tune trial id -> the last epoch its study trial was told of
        self._live: set[str] = set()  # trials suggested and not yet complete
        self._costs = {name: float((costs or {}).get(name, 1.0)) for name in self._studies}
        self._scheduler: TrialScheduler | None = None  # saved along (see ``keep_with``)

    @property
    def studies(self) -> dict[str, optuna.Study]:
        """Each model's Optuna study."""
        return {name: s.study for name, s in self._studies.items()}

    @property
    def budget(self) -> dict[str, int]:
        """Trials each model is to run in all."""
        return dict(self._budget)

    def remaining(self, model: str) -> int:
        return self._budget[model] - sum(1 for owner in self._owner.values() if owner == model)

    @property
    def unfinished(self) -> bool:
        """Whether some model still has trials to suggest."""
        return any(self.remaining(name) > 0 for name in self._studies)

    def keep_with(self, scheduler: TrialScheduler) -> "PerModelSearcher":
        """Save ``scheduler``'s state with this searcher's. Tune saves the searcher with its trial
        list but never the scheduler: without this a resumed search's ASHA would start with empty
        rungs, and judge the trials that go on against only the results reported after the resume."""
        self._scheduler = scheduler
        return self

    def save(self, checkpoint_path: str) -> None:
        state = {k: v for k, v in self.__dict__.items() if k != "_scheduler"}
        scheduler = getattr(self, "_scheduler", None)
        if scheduler is not None:
            state["scheduler_state"] = scheduler_state(scheduler)
        with open(checkpoint_path, "wb") as f:
            pickle.dump(state, f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            state = pickle.load(f)
        saved = state.pop("scheduler_state", None)
        self.__dict__.update(state)
        scheduler = getattr(self, "_scheduler", None)  # Tune's own scheduler object, restored in place
        if scheduler is not None and saved is not None:
            restore_scheduler(scheduler, saved)
        if self._budget_file and Path(self._budget_file).is_file():
            self.grow(json.loads(Path(self._budget_file).read_text()))

    def grow(self, budget: Mapping[str, int]) -> None:
        """Raise each model's number of trials to ``budget``'s (a search never shrinks)."""
        for name, n in budget.items():
            if name in self._budget:
                self._budget[name] = max(self._budget[name], int(n))

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        return metric in (None, METRIC) and mode in (None, MODE)

    def set_max_concurrency(self, max_concurrent: int) -> bool:
        """Tune's ``max_concurrent_trials``: honoured here (True tells Tune not to limit on top)."""
        self._limit = max_concurrent
        return True

    def _open_models(self) -> list[str]:
        live = Counter(self._owner[trial_id] for trial_id in self._live)
        return [name for name in self._studies if self.remaining(name) > 0 and live[name] < self._slots[name]]

    def suggest(self, trial_id: str) -> dict | str | None:
        if not self.unfinished:
            return Searcher.FINISHED
        open_models = self._open_models()
        lent = _LENDER() if _LENDER is not None else 0
        if not open_models or len(self._live) + lent >= self._limit:
            return None  # every slot is taken (by trials, or lent to the end phase): Tune asks again later
        # The most work left first (ties: in the models' order); a searcher saved before costs existed: equal.
        costs = getattr(self, "_costs", {})
        model = max(open_models, key=lambda name: self.remaining(name) * costs.get(name, 1.0))
        config = self._studies[model].ask(trial_id)
        self._owner[trial_id] = model
        self._live.add(trial_id)
        return config

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        epoch = int(result.get(TIME_ATTR, 0))
        if trial_id in self._owner and epoch > self._step.get(trial_id, 0) and METRIC in result:
            # Each epoch's val_acc at that epoch's step (Tune's own iteration count would drift from it
            # for a trial resumed from its checkpoint).
            self._studies[self._owner[trial_id]].report(trial_id, epoch, float(result[METRIC]))
            self._step[trial_id] = epoch

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        """Tells the model's study how the trial ended: FAIL if it raised, COMPLETE with its final
        ``val_acc`` if it trained its whole budget, else PRUNED (ASHA or the time budget stopped it):
        TPE then ranks it behind complete trials by the last epoch it reached, never as if its
        low-budget accuracy were final."""
        self._live.discard(trial_id)
        if trial_id not in self._owner:
            return
        study = self._studies[self._owner[trial_id]]
        if error:
            study.tell(trial_id, TrialState.FAIL, reason="the trial raised an error: see trials.parquet's error column")
            return
        if result:
            self.on_trial_result(trial_id, result)  # Tune withholds the result a scheduler stopped on
        study.tell(trial_id, *ended_state(result, int(study.constants["epochs"])))

    # Reconciling with Tune's trial list after --resume. Tune saves its trial list and this searcher
    # one after the other, and copies both to the storage path in a background thread, file by
    # file: a kill between the two leaves a searcher older or newer than the trial list. Tune runs
    # what its list holds, so the list is the truth and the searcher is brought in line with it.

    def adopt(self, trial_id: str, model: str, config: Mapping[str, Any], finished: bool, error: bool = False,
              result: dict | None = None) -> None:
        """A trial of Tune's list. One the saved searcher never suggested (saved before it did) is
        counted against its model's budget and linked to a study trial; one the searcher still
        counts as running that Tune's list has finished is told to its study as finished."""
        if model not in self._studies:
            return
        if trial_id not in self._owner:
            self._owner[trial_id] = model
            self._live.add(trial_id)
        self._studies[model].adopt(trial_id, config)
        if finished and trial_id in self._live:
            self.on_trial_complete(trial_id, result, error)  # the study keeps an end the journal holds

    def reconcile(self, present: Mapping[str, str]) -> None:
        """After every trial of Tune's list was adopted: forget trials the saved searcher suggested
        but the list lacks (they will never run; their model gets the trial back), and fail the
        study trials no trial of the list stands for (asked for, never run), with the reason."""
        for trial_id in [t for t in self._owner if t not in present]:
            model = self._owner.pop(trial_id)
            self._live.discard(trial_id)
            self._step.pop(trial_id, None)
            self._studies[model].forget(trial_id)
        for study in self._studies.values():
            study.fail_unowned(self._live, "asked for before a kill; the search drew another trial instead")


def scheduler_state(scheduler: TrialScheduler) -> bytes:
    """A Tune scheduler's state, through its own file-based ``save``."""
    with tempfile.TemporaryDirectory() as tmp:
        scheduler.save(f"{tmp}/state")
        return Path(f"{tmp}/state").read_bytes()


def restore_scheduler(scheduler: TrialScheduler, state: bytes) -> None:
    """Put ``scheduler_state``'s bytes back, in place, through the scheduler's own ``restore``."""
    with tempfile.TemporaryDirectory() as tmp:
        Path(f"{tmp}/state").write_bytes(state)
        scheduler.restore(f"{tmp}/state")


def build_searcher(plans: list[ModelPlan], seed: int, storage: optuna.storages.BaseStorage | None = None,
                   slots: Mapping[str, int] | None = None, sampler: str = "tpe",
                   budget_file: Path | None = None, epoch_budget: int | None = None) -> PerModelSearcher:
    """One seeded study per model (named after it, kept in ``storage`` if given, else in memory),
    each trying the model's default configuration first; the full-length trials each model can afford
    (``full_trials``: its count, or fewer under ``epoch_budget``) and ``slots`` (trials of each model
    that can run at once) size each TPE sampler's random start. ``budget_file`` (trials per model, JSON) is
    read again whenever the searcher is restored, so that --resume can grow the search. Each model's
    expected trial cost (``ModelSpec.expected_seconds``) orders the trials, the longest first."""
    studies = {
        plan.name: ModelStudy(
            plan,
            # Seeds differ so that the studies do not mirror each other.
            make_sampler(sampler, full_trials(plan, epoch_budget, len(plans)), seed + i,
                         (slots or {}).get(plan.name, 1)),
            storage,
            # The schedule runs over the whole budget, under ASHA too: cycles ending at the rungs (``--set
            # restarts=...``) cost the CNN's default 0.17 point at 3 epochs (docs/benchmarks.md: the winner's schedule).
            {"epochs": plan.max_epochs, "seed": seed, **plan.fixed},
        )
        for i, plan in enumerate(plans)
    }
    return PerModelSearcher(studies, {p.name: p.num_samples for p in plans}, slots,
                            str(budget_file) if budget_file else None, trial_costs(plans))


def trial_costs(plans: list[ModelPlan]) -> dict[str, float]:
    """Each model's expected seconds a trial (its budget, its data, its device), to start the longest first."""
    return {p.name: models.get(p.name).expected_seconds(p.max_epochs, p.shape.train_images or 1, 0, p.gpus > 0, p.fixed)
            for p in plans}

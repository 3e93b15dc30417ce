"""One ASHA per model, in one Tune experiment: a model's trials are judged only against its own."""

from __future__ import annotations

import json
import math
import os
import pickle
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from ray.tune.schedulers import FIFOScheduler, TrialScheduler
from ray.tune.stopper import Stopper

from imagesets.atomic import write_text
from models.config import MODEL_KEY, params_to_config
from search.command.space import METRIC, MODE, TIME_ATTR, default_params, rung_epochs
from search.command.settings import ModelPlan
from search.engine.searcher import restore_scheduler, scheduler_state
from search.resume.state import adopt_trial, reconcile_search

EPOCH_BUDGET_FILE = "epoch_budget.json"  # --epoch-budget's count: each trial's highest epoch (EpochBudget)


class Rungs(FIFOScheduler):
    """Asynchronous successive halving (ASHA, Li et al. 2020, as Ray's ``ASHAScheduler`` with one
    bracket) for one model's trials, deciding only where a rung can.

    Rungs sit at ``grace_period * reduction_factor**k`` epochs below ``max_t``. A trial reaching a rung
    is stopped if its validation accuracy is below the rung's ``1 - 1/reduction_factor`` quantile of
    the results recorded there before it, but only once the rung holds ``min_results`` results, its
    own included (default: ``reduction_factor``, as Syne Tune's ASHA): Ray's ASHA cuts on a single
    earlier result, so which of two concurrent trials reports first, a difference of one validation
    image, decided whether a trial lived. A trial ``exempt`` says is never stopped before ``max_t``
    (the model's registered default: the baseline every search starts from). With ``min_results=1``
    and no exemption the decisions are Ray's (``tests/test_routing.py`` checks them side by side).
    """

    def __init__(self, max_t: int, grace_period: int, reduction_factor: float, min_results: int | None = None,
                 exempt: Callable[[Mapping[str, Any]], bool] | None = None) -> None:
        super().__init__()
        self.max_t, self.reduction_factor = max_t, reduction_factor
        self.min_results = math.ceil(reduction_factor) if min_results is None else min_results
        self.exempt = exempt
        self.rungs: dict[float, dict[str, float]] = {m: {} for m in rung_epochs(max_t, grace_period, reduction_factor)}
        self.stopped = 0

    def save(self, checkpoint_path: str) -> None:
        Path(checkpoint_path).write_bytes(pickle.dumps(self.__dict__))

    def restore(self, checkpoint_path: str) -> None:
        self.__dict__.update(pickle.loads(Path(checkpoint_path).read_bytes()))

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        if TIME_ATTR not in result or METRIC not in result:
            return TrialScheduler.CONTINUE
        if result[TIME_ATTR] >= self.max_t:
            return TrialScheduler.STOP  # its budget is spent (Ray's ``stop_last_trials``)
        decision = self._judge(trial, result[TIME_ATTR], result[METRIC])
        self.stopped += decision == TrialScheduler.STOP
        return decision

    def on_trial_complete(self, tune_controller, trial, result: dict) -> None:
        if TIME_ATTR in result and METRIC in result:
            self._judge(trial, result[TIME_ATTR], result[METRIC])  # its last result counts at its rung

    def _judge(self, trial, epoch: float, value: float) -> str:
        """Record ``value`` at the highest rung ``epoch`` reached that the trial has not reported at, and
        decide there; CONTINUE between rungs."""
        rung = next((r for m, r in sorted(self.rungs.items(), reverse=True)
                     if epoch >= m and trial.trial_id not in r), None)
        if rung is None or value is None:
            return TrialScheduler.CONTINUE
        earlier = list(rung.values())
        rung[trial.trial_id] = value  # val_acc: higher is better (MODE)
        if not earlier or len(rung) < self.min_results or (self.exempt is not None and self.exempt(trial.config)):
            return TrialScheduler.CONTINUE
        cutoff = np.nanpercentile(earlier, (1 - 1 / self.reduction_factor) * 100)
        return TrialScheduler.STOP if rung[trial.trial_id] < cutoff else TrialScheduler.CONTINUE

    def debug_string(self) -> str:
        return "Rungs: " + " | ".join(f"epoch {m:g}: {len(r)} results" for m, r in sorted(self.rungs.items())) + \
            f"; {self.stopped} stopped"


class IsDefault:
    """Whether a trial's config is a model's registered default: every searched setting equal to it
    (a class, not a closure, so that it pickles with the scheduler into Tune's and the searcher's state)."""

    def __init__(self, plan: ModelPlan) -> None:
        self.default = params_to_config(default_params(plan))

    def __call__(self, config: Mapping[str, Any]) -> bool:
        return all(config.get(key) == value for key, value in self.default.items())


class PerModelScheduler(FIFOScheduler):
    """Routes every trial event to its model's own ``Rungs``: separate brackets per model.

    Trials start in submission order (FIFO); only the early-stopping decisions are per model.
    """

    def __init__(self, schedulers: Mapping[str, TrialScheduler]) -> None:
        super().__init__()
        self._schedulers = dict(schedulers)
        super().set_search_properties(METRIC, MODE)  # Tune's ``metric``, set through its public interface

    def _of(self, trial) -> TrialScheduler:
        return self._schedulers[trial.config[MODEL_KEY]]

    def set_search_properties(self, metric, mode, **spec) -> bool:
        return metric in (None, METRIC) and mode in (None, MODE)

    def on_trial_add(self, tune_controller, trial) -> None:
        adopt_trial(tune_controller, trial)  # Tune adds a resumed experiment's trials here, the searcher restored
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

    # Tune saves the searcher with its trial list, never the scheduler (``TrialScheduler.save`` is
    # never called): the searcher saves this one with its own state (``PerModelSearcher.keep_with``).

    def save(self, checkpoint_path: str) -> None:
        """Every model's ASHA (their rungs), through ASHA's own ``save``, in one file."""
        state = {name: scheduler_state(scheduler) for name, scheduler in self._schedulers.items()}
        Path(checkpoint_path).write_bytes(pickle.dumps(state))

    def restore(self, checkpoint_path: str) -> None:
        """Each model's ASHA, in place, from ``save``'s file (models it does not hold keep theirs)."""
        state = pickle.loads(Path(checkpoint_path).read_bytes())
        for name, saved in state.items():
            if name in self._schedulers:
                restore_scheduler(self._schedulers[name], saved)


def build_scheduler(plans: list[ModelPlan], reduction_factor: float, min_results: int | None = None,
                    exempt_default: bool = True) -> PerModelScheduler:
    """One ``Rungs`` per model over ``epoch``, with the model's own maximum and grace period; the
    model's default configuration is never stopped early unless ``exempt_default`` is False."""
    return PerModelScheduler({
        plan.name: Rungs(plan.max_epochs, plan.grace_period, reduction_factor, min_results,
                         IsDefault(plan) if exempt_default else None)
        for plan in plans
    })


class EpochBudget(Stopper):
    """Tune's stopper for ``--epoch-budget``: ends the whole experiment once its trials have trained
    ``budget`` epochs in all (each trial counted to the highest epoch it reported, so an epoch trained
    again after a resume from a checkpoint is not counted twice). Trials it stops are told to their
    studies as pruned, like ASHA's.

    Tune keeps the stopper only as it was when the experiment began, so the count lives in ``record``
    (a JSON file in the experiment folder, rewritten whole at each new epoch): on --resume the restored
    stopper goes on from the epochs already spent instead of counting anew.
    """

    def __init__(self, budget: int, record: str | os.PathLike | None = None) -> None:
        self.budget, self.record = budget, record
        self._epochs: dict[str, int] | None = None  # trial id -> highest epoch reported; read on first use

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_epochs": None}  # a copy unpickled later reads the record, never an old count

    def _reached(self) -> dict[str, int]:
        if self._epochs is None:
            path = Path(self.record) if self.record else None
            self._epochs = json.loads(path.read_text()) if path and path.is_file() else {}
        return self._epochs

    @property
    def spent(self) -> int:
        """Epochs trained so far, over every trial."""
        return sum(self._reached().values())

    def __call__(self, trial_id: str, result: dict) -> bool:
        epochs = self._reached()
        if TIME_ATTR in result and result[TIME_ATTR] > epochs.get(trial_id, 0):
            epochs[trial_id] = int(result[TIME_ATTR])
            if self.record:
                write_text(Path(self.record), json.dumps(epochs))  # a kill leaves the old count or the new
        return False  # no trial is stopped on its own: the budget is the experiment's

    def stop_all(self) -> bool:
        return self.spent >= self.budget

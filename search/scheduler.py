"""One ASHA per model, in one Tune experiment: a model's trials are judged only against its own."""

from __future__ import annotations

import json
import os
import pickle
from collections.abc import Mapping
from pathlib import Path

from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler
from ray.tune.stopper import Stopper

from models.config import MODEL_KEY
from search.plans import METRIC, MODE, TIME_ATTR, ModelPlan
from search.searcher import adopt_trial, reconcile_search, restore_scheduler, scheduler_state

EPOCH_BUDGET_FILE = "epoch_budget.json"  # --epoch-budget's count: each trial's highest epoch (EpochBudget)


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
                tmp = Path(f"{self.record}.tmp")
                tmp.write_text(json.dumps(epochs))
                os.replace(tmp, self.record)  # a kill leaves the old count or the new, never half a file
        return False  # no trial is stopped on its own: the budget is the experiment's

    def stop_all(self) -> bool:
        return self.spent >= self.budget

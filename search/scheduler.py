"""One ASHA per model, in one Tune experiment: a model's trials are judged only against its own."""

from __future__ import annotations

import pickle
import tempfile
from collections.abc import Mapping
from pathlib import Path

from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler
from ray.tune.stopper import Stopper

from models.config import MODEL_KEY
from search.plans import METRIC, MODE, TIME_ATTR, ModelPlan
from search.searcher import adopt_trial, reconcile_search


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
        state = {}
        with tempfile.TemporaryDirectory() as tmp:
            for name, scheduler in self._schedulers.items():
                scheduler.save(f"{tmp}/{name}")
                state[name] = Path(f"{tmp}/{name}").read_bytes()
        Path(checkpoint_path).write_bytes(pickle.dumps(state))

    def restore(self, checkpoint_path: str) -> None:
        """Each model's ASHA, in place, from ``save``'s file (models it does not hold keep theirs)."""
        state = pickle.loads(Path(checkpoint_path).read_bytes())
        with tempfile.TemporaryDirectory() as tmp:
            for name, saved in state.items():
                if name in self._schedulers:
                    Path(f"{tmp}/{name}").write_bytes(saved)
                    self._schedulers[name].restore(f"{tmp}/{name}")


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
    """Tune's stopper for ``--epoch-budget``: ends the whole experiment once its trials have reported
    ``budget`` epochs in all. Trials it stops are told to their studies as pruned, like ASHA's.
    On --resume it counts anew (Tune saves no stopper's state)."""

    def __init__(self, budget: int) -> None:
        self.budget, self.spent = budget, 0

    def __call__(self, trial_id: str, result: dict) -> bool:
        if TIME_ATTR in result:
            self.spent += 1
        return False  # no trial is stopped on its own: the budget is the experiment's

    def stop_all(self) -> bool:
        return self.spent >= self.budget

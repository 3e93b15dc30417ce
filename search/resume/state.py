"""Continuing Tune's side of an experiment: whether there is a state to restore, restoring it, and bringing the
restored searcher and Tune's trial generator in line with the restored trial list.

Tune saves its trial list and the searcher (with it, our schedulers: ``PerModelSearcher.keep_with``); on
``Tuner.restore`` it restores the searcher, then re-adds each trial through the scheduler's ``on_trial_add``
(``adopt_trial``), and on the first scheduling step of the session the searcher is reconciled with the list
(``reconcile_search``). Tune's generator counts the trials it created; ``sync_generator`` sets it from the list.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ray import tune
from ray.tune.experiment import Trial

from models.config import MODEL_KEY
from search.command import storage
from search.engine.searcher import PerModelSearcher


def tune_state_saved(folder: str) -> bool:
    """Whether Tune saved an experiment state to resume from. Its tuner.pkl (what ``can_restore`` looks
    for) is written first: a kill before the first ``experiment_state-*.json`` leaves a Tuner that
    restores to a one-trial search, so such a folder counts as never started."""
    return tune.Tuner.can_restore(folder) and any(
        name.startswith("experiment_state-") and name.endswith(".json") for name in storage.names_in(folder))


def tuner_to_continue(folder: str, resume: bool, new: Callable[[], tune.Tuner], trainable: Callable[[], Any],
                      journal: Path | None = None) -> tune.Tuner:
    """With ``resume``, the Tuner saved in ``folder``, restored (its unfinished trials go on; errored ones stay
    errored); else, or where Tune saved no state yet, ``new()``. ``journal``: the search's Optuna journal, set
    aside when the search is started over (the repeats' Tuner has none)."""
    if resume and tune_state_saved(folder):
        return tune.Tuner.restore(folder, trainable=trainable(), resume_unfinished=True, resume_errored=False,
                                  restart_errored=False)
    if resume and journal is not None:
        # Killed before Tune first saved its state: no trial had started, so nothing is lost by starting
        # over. The studies' journal only holds trials that were asked for and never ran: set aside.
        if journal.exists():
            journal.replace(journal.with_name(f"{journal.name}.before-resume"))
        print(f"note: {folder} was stopped before its first trial started; starting it from the beginning with "
              "its original settings")
    return new()


def base_searcher(search_alg: Any) -> Any:
    """The searcher inside Tune's search algorithm (a ``SearchGenerator``) and its wrappers."""
    searcher = getattr(search_alg, "searcher", None)
    while hasattr(searcher, "searcher"):
        searcher = searcher.searcher
    return searcher


def set_generator_count(search_alg: Any, created: int, total: int, finished: bool) -> None:
    """Tune's count of the trials its generator created, the total it may create and whether it is
    finished, through ``SearchGenerator.get_state``/``set_state`` (the keys: docs/design.md)."""
    search_alg.set_state({**search_alg.get_state(), "counter": created, "total_samples": total, "finished": finished})


def sync_generator(search_alg: Any, searcher: PerModelSearcher, trials: list) -> None:
    """Tune's generator count set to what its trial list holds: a saved count newer than the list
    would end the search short, an older one would run a trial too many, and a search grown on
    --resume needs the larger total."""
    listed = Counter(t.config[MODEL_KEY] for t in trials)
    set_generator_count(search_alg, len(trials), max(sum(searcher.budget.values()), len(trials)),
                        all(listed[name] >= n for name, n in searcher.budget.items()))


def adopt_trial(tune_controller: Any, trial: Any) -> None:
    """A trial Tune adds (its scheduler's ``on_trial_add``): on --resume, each trial of the restored
    list, after the searcher was restored (see ``PerModelSearcher.adopt``)."""
    search_alg = getattr(tune_controller, "search_alg", None)
    searcher = base_searcher(search_alg)
    if not isinstance(searcher, PerModelSearcher):
        return
    searcher.adopt(trial.trial_id, trial.config[MODEL_KEY], trial.config,
                   trial.status in (Trial.TERMINATED, Trial.ERROR), trial.status == Trial.ERROR, trial.last_result)
    sync_generator(search_alg, searcher, tune_controller.get_trials())


def reconcile_search(tune_controller: Any) -> None:
    """Bring the searcher, and Tune's count of the trials it created, in line with Tune's trial list
    (see ``PerModelSearcher.reconcile``)."""
    search_alg = tune_controller.search_alg
    searcher = base_searcher(search_alg)
    if not isinstance(searcher, PerModelSearcher):
        return
    trials = tune_controller.get_trials()
    searcher.reconcile({t.trial_id: t.config[MODEL_KEY] for t in trials})
    sync_generator(search_alg, searcher, trials)

"""Tune's side of the end phase: trial results and ends, and each step of Tune's loop, forwarded to the driver's
live ``EndPhase`` (``search.finish.endphase``), which starts each model's end phase and collects it."""

from __future__ import annotations

from typing import Any

from ray.tune import Callback

from search.engine.searcher import lend_slots
from search.finish.endphase import EndPhase

_LIVE: EndPhase | None = None  # the driver's collector that EndPhaseCallback forwards to


def set_live(end_phase: EndPhase | None) -> None:
    global _LIVE
    _LIVE = end_phase
    lend_slots(end_phase.slots_held if end_phase is not None else None)


class EndPhaseCallback(Callback):
    """Tune's side of ``EndPhase``: trial results and ends, and each step of Tune's loop, forwarded to the driver's
    live collector. It holds no state, because Tune pickles its callbacks with the Tuner: the one a ``--resume``
    restores forwards to that session's collector."""

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        if _LIVE is not None:
            _LIVE.trial_result(trial, result)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        if _LIVE is not None:
            _LIVE.trial_ended(trial, trials, error=False)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        if _LIVE is not None:
            _LIVE.trial_ended(trial, trials, error=True)

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        if _LIVE is not None:
            _LIVE.collect()

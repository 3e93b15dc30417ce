"""Repeats: each model's winning configuration trained again from scratch with other seeds, each
run tested once, so that a winner's test accuracy comes with its spread over seeds.

One winner is one training run at one seed, picked among many on validation accuracy: its test
accuracy carries the luck of that seed. ``--repeats K`` trains the winner's configuration K more
times at its full budget (through the same Tune machinery as the search: packed, processes
reused) with seeds the search did not use. The statistics are over those K runs only: the
search's own run was picked for its validation score (and may have been stopped early).
"""

from __future__ import annotations

import hashlib
import json
import math
import pickle
from collections.abc import Mapping
from typing import Any

import pandas as pd
from ray.tune.schedulers import FIFOScheduler
from ray.tune.search import Searcher

from analysis.schema import FINALIST_COLUMNS, REPEAT_COLUMNS, REPEAT_STAT_COLUMNS, config_names
from search.resume.state import base_searcher, set_generator_count

SEED_STEP = 1_000  # repeat i of a search at seed s trains at s + 1000 * i: never a seed the search used


def repeat_seeds(seed: int, repeats: int) -> list[int]:
    """The seeds of the ``repeats`` runs of a search made at ``seed``."""
    return [seed + SEED_STEP * (i + 1) for i in range(repeats)]


def repeat_configs(finalists: pd.DataFrame, configs: Mapping[str, dict[str, Any]], seed: int,
                   repeats: int) -> list[dict[str, Any]]:
    """Each tested winner's configuration, once per repeat seed, at its model's full budget."""
    return [{**configs[trial_id], "seed": s}
            for trial_id in finalists["trial_id"] for s in repeat_seeds(seed, repeats)]


def point_key(config: Mapping[str, Any]) -> str:
    """A configuration as text: how a repeat is recognised in Tune's trial list after --resume."""
    return json.dumps(config, sort_keys=True, default=str)


def repeats_name(points: list[dict[str, Any]]) -> str:
    """The repeats' Tune experiment, named after its configurations: a resumed search finds the
    experiment it was running, and a search grown since (other winners) starts its own."""
    return f"repeats-{hashlib.sha1(''.join(map(point_key, points)).encode()).hexdigest()[:8]}"


class FixedConfigs(Searcher):
    """Hands Tune the given configurations, each once, in order (the repeats need no sampling; Tune's
    own variant generator wants every key in a shared parameter space, and models' keys differ).

    After --resume, what was handed out is read from Tune's trial list (``RepeatsScheduler`` calls
    ``adopt`` for each trial it restores), never from the saved state, which may be older or newer
    than the list: a finished repeat is kept, and one the list lacks runs."""

    def __init__(self, configs: list[dict[str, Any]], metric: str, mode: str) -> None:
        super().__init__(metric=metric, mode=mode)
        self._points = [point_key(c) for c in configs]
        self._configs = {point_key(c): c for c in configs}
        self._handed: set[str] = set()

    def adopt(self, config: Mapping[str, Any]) -> None:
        self._handed.add(point_key(config))

    @property
    def left(self) -> int:
        return sum(1 for key in self._points if key not in self._handed)

    def suggest(self, trial_id: str) -> dict[str, Any] | str:
        key = next((k for k in self._points if k not in self._handed), None)
        if key is None:
            return Searcher.FINISHED
        self._handed.add(key)
        return dict(self._configs[key])

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        pass  # nothing to learn: every configuration is fixed

    def save(self, checkpoint_path: str) -> None:  # Tune saves its searcher with each snapshot
        with open(checkpoint_path, "wb") as f:
            pickle.dump((self._points, self._configs), f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            self._points, self._configs = pickle.load(f)
        self._handed = set()  # Tune's restored list says what was handed out (``adopt``)


class RepeatsScheduler(FIFOScheduler):
    """Tune's first-in-first-out scheduler, telling ``FixedConfigs`` of each trial Tune adds and
    keeping Tune's count of created trials equal to its list (a count saved newer than the list would
    end the repeats one short)."""

    def on_trial_add(self, tune_controller, trial) -> None:
        search_alg = getattr(tune_controller, "search_alg", None)
        searcher = base_searcher(search_alg)
        if isinstance(searcher, FixedConfigs):
            searcher.adopt(trial.config)
            created = len(tune_controller.get_trials())
            set_generator_count(search_alg, created, created + searcher.left, searcher.left == 0)
        super().on_trial_add(tune_controller, trial)


def repeats_table(tested: pd.DataFrame, configs: Mapping[str, dict[str, Any]]) -> pd.DataFrame:
    """``repeats.parquet``: one row per repeat run, with the seed it trained at."""
    table = tested.assign(seed=[int(configs[t]["seed"]) for t in tested["trial_id"]]) if len(tested) else tested
    return table.reindex(columns=REPEAT_COLUMNS)


def interval(values: pd.Series, level: float = 0.95) -> tuple[float, float, float, float]:
    """(mean, sample standard deviation, low, high): Student's t interval for the mean of a few runs
    (NaN spread and interval from one run)."""
    from scipy import stats

    n, mean = len(values), float(values.mean())
    if n < 2:
        return mean, math.nan, math.nan, math.nan
    std = float(values.std(ddof=1))
    half = float(stats.t.ppf(0.5 + level / 2, n - 1)) * std / math.sqrt(n)
    return mean, std, mean - half, mean + half


def with_repeat_statistics(finalists: pd.DataFrame, repeats: pd.DataFrame) -> pd.DataFrame:
    """``finalists`` with, per model, the number of repeats and the mean, standard deviation and 95%
    interval of their test accuracy and macro F1."""
    rows = []
    for model, runs in repeats.groupby("model", sort=False):
        row: dict[str, Any] = {"model": model, "repeats": len(runs)}
        for metric in ("test_acc", "test_f1"):
            mean, std, low, high = interval(runs[metric])
            row.update({f"{metric}_mean": mean, f"{metric}_std": std, f"{metric}_low": low, f"{metric}_high": high})
        rows.append(row)
    stats = pd.DataFrame(rows, columns=["model", *REPEAT_STAT_COLUMNS])
    merged = finalists.drop(columns=REPEAT_STAT_COLUMNS, errors="ignore").merge(stats, on="model", how="left")
    merged["repeats"] = merged["repeats"].fillna(0).astype(int)
    return merged.reindex(columns=FINALIST_COLUMNS + REPEAT_STAT_COLUMNS + config_names(merged))

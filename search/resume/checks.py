"""What --resume may change, checked before Ray starts (after the data is loaded): a search grows, its data and space
do not.

A resumed search continues each model's study, whose trials were drawn from the search space and
scored on the data the search began with. More trials (``--resume --num-samples N``) extend it;
another data set, or a space that changed (``--set``, ``--image-size``, an edited model file), would
mix trials that are not comparable, so it is refused, naming what changed.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from analysis.schema import DATASET_FILE
from search.command.settings import Settings, UsageError
from search.finish.export import dataset_record
from trainables.data import Dataset

# What makes two data sets the same for a search: not where the cache was, nor how long it took.
SAME_DATA = ("source", "class_names", "channels", "image_size", "split_seed", "test_carved", "sizes", "mean", "std")


def data_changes(saved: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """The fields of ``SAME_DATA`` (and the decoded cache's key) that differ, as 'field: old -> new'."""
    changes = [f"{key}: {saved[key]} -> {now[key]}" for key in SAME_DATA
               if key in saved and not _same(saved[key], now.get(key))]
    old_key, new_key = Path(saved.get("cache", "")).name, Path(now.get("cache", "")).name
    if old_key and new_key and old_key != new_key:
        changes.append(f"the files (cache key {old_key} -> {new_key}: images added, removed or modified)")
    return changes


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return a == b


def check_resume(settings: Settings, data: Dataset) -> None:
    """Refuse (``UsageError``) a resume whose data or search space differs from the search's start."""
    record = settings.folder / DATASET_FILE
    if record.is_file():
        changes = data_changes(json.loads(record.read_text()), dataset_record(data))
        if changes:
            raise UsageError(f"--resume: the data differ from those {settings.name} began with ("
                             + "; ".join(changes) + "). Trials scored on other data are not comparable: "
                             "restore the data, or start a new search under another --name")
    changes = space_changes(settings)
    if changes:
        raise UsageError(f"--resume: the search space of {settings.name} changed since its trials were drawn ("
                         + "; ".join(changes) + "). Its studies model the old space: restore it, or start a new "
                         "search under another --name")


def space_changes(settings: Settings) -> list[str]:
    """Per model with a study in the search's journal, how its space differs now (``search.resume.space``)."""
    import optuna

    from search.engine.studies import OPTUNA_FILE, optuna_storage
    from search.resume.space import space_changes as study_changes

    if not (settings.folder / OPTUNA_FILE).is_file():
        return []
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = optuna_storage(settings.folder)
    names = set(optuna.get_all_study_names(storage))
    changes = []
    for plan in settings.plans:
        if plan.name in names:
            study = optuna.load_study(study_name=plan.name, storage=storage)
            changes += study_changes(plan, study.get_trials(deepcopy=False))
    return changes

"""After the trials: the search's record written, each model's winner tested once and bundled, and the
classical baselines fitted and tested on the same split (the work itself: ``search.finish.endphase``, as Ray work
begun during the search); every file written atomically."""

from __future__ import annotations

from typing import Any

import pandas as pd
from ray import tune

from search.command.space import METRIC, MODE
from search.command.settings import Settings
from search.engine.progress import Progress
from search.finish.bundles import MODELS_FOLDER
from search.finish.endphase import EndPhase
from search.finish.export import (TrialRecord, classes_table, epochs_table, record_from_result, trials_table,
                                  write_atomic, write_dataset_record)
from search.finish.work import last_checkpoint
from trainables.data import Dataset
from trainables.runtime import Runtime, pick_device


def best_checkpoints(records: list[TrialRecord], results: tune.ResultGrid) -> dict[str, Any]:
    """Each trial's best checkpoint: the last one it reported (``search.finish.work.last_checkpoint``); where its
    folder cannot be read here (storage on another machine), the best by val_acc that Tune registered, else its
    last."""
    checkpoints = {}
    for record, result in zip(records, results):
        best = result.get_best_checkpoint(METRIC, MODE) if result.best_checkpoints else None
        history = result.metrics_dataframe if result.metrics_dataframe is not None else pd.DataFrame()
        checkpoints[record.trial_id] = last_checkpoint(result.path, history, best or result.checkpoint)
    return checkpoints


def test_runtime(settings: Settings, data: Dataset) -> Runtime:
    """Where the driver tests runs: on a cluster it may be a head node without a GPU."""
    device = pick_device(None if settings.gpus else "cpu")
    return Runtime(device, amp=settings.amp, channels_last=settings.channels_last)


def export(settings: Settings, data: Dataset, results: tune.ResultGrid, slots: int, progress: Progress,
           ending: EndPhase) -> tuple[dict[str, pd.DataFrame], dict[str, str], dict[str, dict]]:
    """Write trials and epochs, then collect each model's winner tested, bundled and costed (``ending``: begun
    during the search for the models whose study was done, begun now for the others) and the baselines, and write
    finalists, their test predictions and the baselines (each file atomically). Returns the tables, per model
    whose winner could not be tested why, and every trial's configuration."""
    with progress.step(f"Writing trials.parquet, epochs.parquet and classes.parquet to {settings.folder}"):
        records = [record_from_result(r, ending.configs) for r in results]
        trials = trials_table(records, settings.name, data.info.name, settings.seed,
                              search=dict(slots=slots, search_started_at=settings.started_at))
        tables = {"trials": trials, "epochs": epochs_table(records), "classes": classes_table(data)}
        write_dataset_record(data, settings.folder)
        write_atomic(tables, settings.folder)  # the search's record is safe before any finalist is built
    configs = {rec.trial_id: rec.config for rec in records}
    with progress.step("Each model's winner tested once on the test split, bundled and its cost to run measured "
                       f"({settings.folder / MODELS_FOLDER})"):
        tested = ending.finish(trials, best_checkpoints(records, results), configs)
        tables.update(finalists=tested.finalists, predictions=tested.predictions)
        write_atomic({"finalists": tested.finalists, "predictions": tested.predictions}, settings.folder)
    with progress.step("The classical baselines (scikit-learn on the raw pixels, fitted beside the trials)"):
        baselines, baseline_predictions = ending.baseline_tables()
        tables.update(baselines=baselines, baseline_predictions=baseline_predictions)
    return tables, tested.problems, configs

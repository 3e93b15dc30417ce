"""After the trials: the search's record written, each model's winner tested once and bundled, and the
classical baselines fitted and tested on the same split; every file written atomically."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
from ray import tune

from search.baseline import run_baselines
from search.bundles import MODELS_FOLDER, Bundler
from search.export import (TrialRecord, classes_table, epochs_table, record_from_result, trials_table, write_atomic,
                           write_dataset_record)
from search.finalists import evaluate_finalists
from search.plans import METRIC, MODE
from search.progress import Progress
from search.settings import Settings
from trainables.data import Dataset
from trainables.runtime import Runtime, pick_device


def best_checkpoints(records: list[TrialRecord], results: tune.ResultGrid) -> dict[str, Any]:
    """Each trial's best checkpoint: the last one it reported (``reported_checkpoint``); where its folder cannot be
    read here (storage on another machine), the best by val_acc that Tune registered, else its last."""
    checkpoints = {}
    for record, result in zip(records, results):
        best = result.get_best_checkpoint(METRIC, MODE) if result.best_checkpoints else None
        checkpoints[record.trial_id] = reported_checkpoint(result) or best or result.checkpoint
    return checkpoints


def reported_checkpoint(result: tune.Result) -> tune.Checkpoint | None:
    """The last checkpoint ``result``'s trial reported, read from its folder; the trainable checkpoints only when
    val_acc improves, so it is the trial's best. Tune's own record can lag it: Tune registers a reported checkpoint
    in a step after the result, and a search stopped in between (--epoch-budget spent by that very result) leaves
    the checkpoint on disk, unregistered or with an earlier one registered as the best."""
    frame = result.metrics_dataframe
    if frame is None or "checkpoint_dir_name" not in frame or not result.path:
        return None
    names = frame["checkpoint_dir_name"].dropna()
    folder = Path(result.path) / str(names.iloc[-1]) if not names.empty else None
    return tune.Checkpoint.from_directory(str(folder)) if folder is not None and folder.is_dir() else None


def test_runtime(settings: Settings, data: Dataset) -> Runtime:
    """Where the driver tests runs: on a cluster it may be a head node without a GPU."""
    device = pick_device(None if settings.gpus else "cpu")
    return Runtime(device, amp=settings.amp, channels_last=settings.channels_last)


def export(settings: Settings, data: Dataset, results: tune.ResultGrid, slots: int,
           progress: Progress) -> tuple[dict[str, pd.DataFrame], dict[str, str], dict[str, dict]]:
    """Write trials and epochs, then test each model's winner once and write finalists and their
    test predictions (each file atomically). Returns the tables, per model whose winner could not
    be tested why, and every trial's configuration."""
    with progress.step(f"Writing trials.parquet, epochs.parquet and classes.parquet to {settings.folder}"):
        records = [record_from_result(r) for r in results]
        trials = trials_table(records, settings.name, data.info.name, settings.seed,
                              search=dict(slots=slots, search_started_at=settings.started_at))
        tables = {"trials": trials, "epochs": epochs_table(records), "classes": classes_table(data)}
        write_dataset_record(data, settings.folder)
        write_atomic(tables, settings.folder)  # the search's record is safe before any finalist is built
    configs = {rec.trial_id: rec.config for rec in records}
    runtime = test_runtime(settings, data)
    with progress.step("Testing each model's winner once on the test split, then bundling it "
                       f"({settings.folder / MODELS_FOLDER})"):
        tested = evaluate_finalists(trials, best_checkpoints(records, results), configs, data.test, runtime,
                                    data.info.shape, settings.weights_dir, progress.say,
                                    after=Bundler(settings, data, runtime, progress.say))
        tables.update(finalists=tested.finalists, predictions=tested.predictions)
        write_atomic({"finalists": tested.finalists, "predictions": tested.predictions}, settings.folder)
    with progress.step("Fitting the classical baselines (scikit-learn on the raw pixels), tested once"):
        baselines, baseline_predictions = run_baselines(data, settings.seed, settings.folds or 1, bool(settings.refit))
        tables.update(baselines=baselines, baseline_predictions=baseline_predictions)
        write_atomic({"baselines": baselines, "baseline_predictions": baseline_predictions}, settings.folder)
    return tables, tested.problems, configs

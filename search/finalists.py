"""Each model's best trial, re-evaluated once on the test split (the only use of the test split)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

import models
from analysis.schema import FINALIST_COLUMNS, PREDICTION_COLUMNS, config_names, succeeded
from search.export import config_columns
from trainables.data import Split
from trainables.loop import evaluate
from trainables.runtime import Runtime
from trainables.tune_trial import load_weights


def pick_winners(trials: pd.DataFrame) -> pd.DataFrame:
    """Per model, the trial with the highest ``best_val_acc`` among those that did not fail."""
    ok = succeeded(trials)
    if ok.empty:
        return ok
    return ok.loc[ok.groupby("model")["best_val_acc"].idxmax()].reset_index(drop=True)


@dataclass
class Tested:
    """The winners' single test evaluation: ``finalists`` (a row per model), ``predictions`` (a row
    per model and test image) and, per model whose winner could not be tested, why."""

    finalists: pd.DataFrame
    predictions: pd.DataFrame
    problems: dict[str, str] = field(default_factory=dict)


def evaluate_finalists(
    trials: pd.DataFrame,
    checkpoints: Mapping[str, Any],
    configs: Mapping[str, dict[str, Any]],
    test: Split,
    runtime: Runtime,
    shape: models.DataShape,
    weights_dir: str | None = None,
    say: Callable[[str], None] = lambda line: None,
) -> Tested:
    """Test loss, accuracy and macro F1 of each model's winner, from its best checkpoint, with its
    prediction for every test image; and, per model whose winner could not be tested, the reason
    (the other winners are still tested).

    ``checkpoints`` maps trial id to a ``ray.tune.Checkpoint`` (or a local folder) of the best epoch.
    ``weights_dir`` is the search's: a model whose pretrained architecture is built from its weights
    file (Faster R-CNN) needs that file again to be rebuilt.
    """
    return test_runs(pick_winners(trials), checkpoints, configs, test, runtime, shape, weights_dir, say)


def test_runs(runs: pd.DataFrame, checkpoints: Mapping[str, Any], configs: Mapping[str, dict[str, Any]],
              test: Split, runtime: Runtime, shape: models.DataShape, weights_dir: str | None = None,
              say: Callable[[str], None] = lambda line: None) -> Tested:
    """Test each run (a row of a trials table: a search's winner, or a repeat of one) once, from its
    best checkpoint; a run that cannot be tested is reported by model and the others still are.
    ``say`` gets a line as each run's test starts and ends (a detector's can take minutes on a CPU)."""
    rows, predictions, problems = [], [], {}
    test = test.to(runtime.device)
    labels = test.labels.cpu().numpy()
    for _, winner in runs.iterrows():
        started = time.perf_counter()
        say(f"  {winner['model']} ({winner['trial_id']}): testing on {len(labels):,} images ...")
        try:
            row, predicted = _test_winner(winner, checkpoints, configs, test, runtime, shape, weights_dir)
        except Exception as e:  # one model's winner failing must not cost the others' test
            problems[winner["model"]] = f"{type(e).__name__}: {e}"
            say(f"  {winner['model']} ({winner['trial_id']}): could not be tested ({type(e).__name__})")
            continue
        say(f"  {winner['model']} ({winner['trial_id']}): test accuracy {row['test_acc']:.4f}, macro F1 "
            f"{row['test_f1']:.4f} ({time.perf_counter() - started:.1f} s)")
        rows.append(row)
        predictions.append(pd.DataFrame({"model": row["model"], "trial_id": row["trial_id"],
                                         "index": np.arange(len(labels)), "label": labels, "predicted": predicted}))
    table = pd.DataFrame(rows)
    predicted_all = pd.concat(predictions, ignore_index=True) if predictions else pd.DataFrame()
    return Tested(table.reindex(columns=FINALIST_COLUMNS + config_names(table)),
                  predicted_all.reindex(columns=PREDICTION_COLUMNS), problems)


def _test_winner(winner: pd.Series, checkpoints: Mapping[str, Any], configs: Mapping[str, dict[str, Any]],
                 test: Split, runtime: Runtime, shape: models.DataShape,
                 weights_dir: str | None) -> tuple[dict[str, Any], np.ndarray]:
    trial_id, config = winner["trial_id"], configs[winner["trial_id"]]
    checkpoint = checkpoints.get(trial_id)
    if checkpoint is None:
        raise FileNotFoundError(f"trial {trial_id} left no checkpoint to test")
    spec = models.get(winner["model"])
    # The checkpoint holds every weight: no pretrained file needs loading first, where the model can do without.
    ctx = models.BuildContext(shape, runtime.mean, runtime.std, weights_dir, load_weights=False)
    model = runtime.place(spec.build(config, ctx))
    with _local(checkpoint) as folder:
        load_weights(model, folder)
    scores = evaluate(model, test, runtime.for_model(spec), task=spec.task)
    return dict(model=winner["model"], trial_id=trial_id, test_acc=scores.acc, test_f1=scores.f1,
                test_loss=scores.loss, best_val_acc=winner["best_val_acc"], train_time_s=winner["train_time_s"],
                wall_clock_s=winner["wall_clock_s"], params=winner["params"],
                **config_columns(config)), scores.predictions


def _local(checkpoint) -> contextlib.AbstractContextManager:
    """A context giving a local folder for a Tune checkpoint, or the folder itself for a path."""
    if hasattr(checkpoint, "as_directory"):
        return checkpoint.as_directory()
    return contextlib.nullcontext(checkpoint)

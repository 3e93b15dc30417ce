"""Each model's best trial, re-evaluated once on the test split (the only use of the test split)."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

import pandas as pd

import models
from search.export import CONFIG_PREFIX, FINALIST_COLUMNS, config_columns
from trainables.data import Split
from trainables.loop import Runtime, evaluate
from trainables.trainable import load_weights


def pick_winners(trials: pd.DataFrame) -> pd.DataFrame:
    """Per model, the trial with the highest ``best_val_acc`` among those that did not fail."""
    ok = trials[(trials["status"] != "error") & trials["best_val_acc"].notna()]
    if ok.empty:
        return ok
    return ok.loc[ok.groupby("model")["best_val_acc"].idxmax()].reset_index(drop=True)


def evaluate_finalists(
    trials: pd.DataFrame,
    checkpoints: Mapping[str, Any],
    configs: Mapping[str, dict[str, Any]],
    test: Split,
    runtime: Runtime,
    num_classes: int,
) -> pd.DataFrame:
    """Test loss, accuracy and macro F1 of each model's winner, from its best checkpoint.

    ``checkpoints`` maps trial id to a ``ray.tune.Checkpoint`` (or a local folder) of the best epoch.
    """
    rows = []
    test = test.to(runtime.device)
    for _, winner in pick_winners(trials).iterrows():
        trial_id, config = winner["trial_id"], configs[winner["trial_id"]]
        checkpoint = checkpoints.get(trial_id)
        if checkpoint is None:
            continue
        spec = models.get(winner["model"])
        # The checkpoint holds every weight: no pretrained file needs loading first.
        ctx = models.BuildContext(num_classes, runtime.mean, runtime.std, load_weights=False)
        model = runtime.place(spec.build(config, ctx))
        with _local(checkpoint) as folder:
            load_weights(model, folder)
        scores = evaluate(model, test, runtime.for_model(spec), task=spec.task)
        rows.append(dict(
            model=winner["model"], trial_id=trial_id, test_acc=scores.acc, test_f1=scores.f1,
            test_loss=scores.loss, best_val_acc=winner["best_val_acc"], train_time_s=winner["train_time_s"],
            wall_clock_s=winner["wall_clock_s"], params=winner["params"], **config_columns(config),
        ))
    table = pd.DataFrame(rows)
    config_cols = sorted(c for c in table.columns if c.startswith(CONFIG_PREFIX))
    return table.reindex(columns=FINALIST_COLUMNS + config_cols)


def _local(checkpoint) -> contextlib.AbstractContextManager:
    """A context giving a local folder for a Tune checkpoint, or the folder itself for a path."""
    if hasattr(checkpoint, "as_directory"):
        return checkpoint.as_directory()
    return contextlib.nullcontext(checkpoint)

"""Each model's best trial, re-evaluated once on the test split (the only use of the test split)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

import torch
import torch.nn.functional as F

import models
from analysis.schema import FINALIST_COLUMNS, PREDICTION_COLUMNS, SEARCH_STAGE, config_names, succeeded
from search.finish.export import config_columns
from trainables.data import Normalization, Split
from trainables.inference import Classifier, Scored, score
from trainables.loop import macro_f1
from trainables.runtime import Runtime
from trainables.tune_trial import load_weights


def pick_winners(trials: pd.DataFrame) -> pd.DataFrame:
    """Per model, the trial with the highest ``best_val_acc`` among those that did not fail."""
    ok = succeeded(trials)
    if ok.empty:
        return ok
    return ok.loc[ok.groupby("model")["best_val_acc"].idxmax()].reset_index(drop=True)


@dataclass
class WinnerTest:
    """One run's test: its ``row`` of finalists, its ``scored`` test images, the ``classifier`` that
    scored them (uint8 images in) and the ``epoch`` its checkpoint was taken at."""

    winner: pd.Series
    config: dict[str, Any]
    row: dict[str, Any]
    scored: Scored
    classifier: Classifier
    epoch: int


# After a winner's test: columns to add to its row, and predictions of another model made from it (a refit's).
AfterTest = Callable[[WinnerTest], tuple[dict[str, Any], pd.DataFrame | None]]


@dataclass
class Tested:
    """The winners' single test evaluation: ``finalists`` (a row per model), ``predictions`` (a row
    per model and test image) and, per model whose winner could not be tested, why."""

    finalists: pd.DataFrame
    predictions: pd.DataFrame
    problems: dict[str, str] = field(default_factory=dict)


def test_runs(runs: pd.DataFrame, checkpoints: Mapping[str, Any], configs: Mapping[str, dict[str, Any]],
              test: Split, runtime: Runtime, shape: models.DataShape, weights_dir: str | None = None,
              say: Callable[[str], None] = lambda line: None, after: AfterTest | None = None) -> Tested:
    """Test each run (a row of a trials table: a search's winner, or a repeat of one) once, from its
    best checkpoint; a run that cannot be tested is reported by model and the others still are.
    ``say`` gets a line as each run's test starts and ends (a detector's can take minutes on a CPU)."""
    rows, predictions, problems = [], [], {}
    labels = test.labels.cpu().numpy()
    for _, winner in runs.iterrows():
        started = time.perf_counter()
        say(f"  {winner['model']} ({winner['trial_id']}): testing on {len(labels):,} images ...")
        try:
            tested = _test_winner(winner, checkpoints, configs, test, runtime, shape, weights_dir)
        except Exception as e:  # one model's winner failing must not cost the others' test
            problems[winner["model"]] = f"{type(e).__name__}: {e}"
            say(f"  {winner['model']} ({winner['trial_id']}): could not be tested ({type(e).__name__})")
            continue
        row = tested.row
        say(f"  {winner['model']} ({winner['trial_id']}): test accuracy {row['test_acc']:.4f}, macro F1 "
            f"{row['test_f1']:.4f} ({time.perf_counter() - started:.1f} s)")
        predictions.append(prediction_rows(row["model"], row["trial_id"], labels, tested.scored.classes))
        if after is not None:
            columns, more = after(tested)
            row.update(columns)
            if more is not None:
                predictions.append(more)
        rows.append(row)
        del tested  # a large winner's weights are freed before the next one is built
    table = pd.DataFrame(rows)
    predicted_all = pd.concat(predictions, ignore_index=True) if predictions else pd.DataFrame()
    return Tested(table.reindex(columns=FINALIST_COLUMNS + config_names(table)),
                  predicted_all.reindex(columns=PREDICTION_COLUMNS), problems)


def prediction_rows(model: str, trial_id: str, labels: np.ndarray, predicted: np.ndarray,
                    stage: str = SEARCH_STAGE) -> pd.DataFrame:
    """Rows of ``predictions.parquet``: one per test image, in the test split's order."""
    return pd.DataFrame({"model": model, "trial_id": trial_id, "index": np.arange(len(labels)), "label": labels,
                         "predicted": predicted, "stage": stage})


def test_scores(classifier: Classifier, test: Split) -> tuple[dict[str, float], Scored]:
    """Test accuracy, macro F1 (scikit-learn) and cross-entropy of ``classifier``, in fp32 through the
    same ``Classifier`` a bundle predicts with, so a bundle reproduces its test predictions."""
    scored = score(classifier, test.images)
    labels = test.labels.cpu().numpy()
    loss = F.cross_entropy(torch.from_numpy(scored.logits), torch.from_numpy(labels)).item() if len(labels) else 0.0
    return dict(test_acc=float((scored.classes == labels).mean()), test_f1=macro_f1(labels, scored.classes),
                test_loss=loss), scored


def rebuilt(model: str, config: Mapping[str, Any], runtime: Runtime, shape: models.DataShape, norm: Normalization,
            weights_dir: str | None = None) -> torch.nn.Module:
    """A model's network built for ``config`` and data of ``shape`` and ``norm`` on the runtime's device, for
    weights about to be loaded into it (no pretrained file is read where the model can do without)."""
    ctx = models.BuildContext(shape, norm.mean, norm.std, weights_dir, load_weights=False)
    return runtime.place(models.get(model).build(config, ctx))


def _test_winner(winner: pd.Series, checkpoints: Mapping[str, Any], configs: Mapping[str, dict[str, Any]],
                 test: Split, runtime: Runtime, shape: models.DataShape, weights_dir: str | None) -> WinnerTest:
    trial_id, config = winner["trial_id"], configs[winner["trial_id"]]
    checkpoint = checkpoints.get(trial_id)
    if checkpoint is None:
        raise FileNotFoundError(f"trial {trial_id} left no checkpoint to test")
    spec = models.get(winner["model"])
    model = rebuilt(winner["model"], config, runtime, shape, test.normalization, weights_dir)
    with _local(checkpoint) as folder:
        epoch = load_weights(model, folder)
    classifier = Classifier(model, test.normalization.mean, test.normalization.std, spec.task, runtime.channels_last)
    scores, scored = test_scores(classifier, test)
    row = dict(model=winner["model"], trial_id=trial_id, **scores, best_val_acc=winner["best_val_acc"],
               train_time_s=winner["train_time_s"], wall_clock_s=winner["wall_clock_s"], params=winner["params"],
               best_epoch=epoch, **config_columns(config))
    return WinnerTest(winner, dict(config), row, scored, classifier, epoch)


def _local(checkpoint) -> contextlib.AbstractContextManager:
    """A context giving a local folder for a Tune checkpoint, or the folder itself for a path."""
    if hasattr(checkpoint, "as_directory"):
        return checkpoint.as_directory()
    return contextlib.nullcontext(checkpoint)

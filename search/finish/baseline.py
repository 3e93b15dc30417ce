"""A classical baseline in every search: scikit-learn on the raw pixels, chosen and fitted as the search's
networks are (on its validation split, or by its cross-validation folds; refit on training + validation where
the winners are) and tested once on its test split, so that a report can say whether the searched networks beat
ten lines of classical code (on scikit-learn's digits an RBF SVC reaches 99%).

Two models, each with a small grid: logistic regression (C) and an RBF support-vector classifier (C, gamma
``scale``). Pixels are scaled to [0, 1]; images larger than ``MAX_SIDE`` are averaged down to it (a 512-pixel RGB
photo gives 3,072 features, not 786,432); an SVC's fit grows with the square of its training images, so a larger
training split is subsampled to its first ``MAX_TRAIN`` (the split was shuffled when carved: a fair subset), and
the table says so.
"""

from __future__ import annotations

import json
import time
import warnings
from typing import Any

import numpy as np
import pandas as pd

from analysis.schema import BASELINE_COLUMNS, BASELINE_STAGE, PREDICTION_COLUMNS
from trainables.data import Dataset, Split

MAX_TRAIN = 5_000
MAX_SIDE = 32
CHUNK_BYTES = 32 * 2**20  # float input turned into features at once: the baseline's own memory, whatever the images' size
GRIDS: dict[str, list[dict[str, Any]]] = {
    "logistic_regression": [{"C": c} for c in (0.1, 1.0, 10.0)],
    "svc_rbf": [{"C": c, "gamma": "scale"} for c in (1.0, 10.0, 100.0)],
}


def features(split: Split, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(N, F) float32 pixels in [0, 1], each image averaged down to at most ``MAX_SIDE`` a side, and the labels."""
    import torch

    count = len(split) if limit is None else min(limit, len(split))
    step = max(1, CHUNK_BYTES // (4 * int(np.prod(split.images.shape[1:]))))  # 10 images of 512x512 RGB, 3,000 of MNIST
    parts = []
    for start in range(0, count, step):
        chunk = torch.as_tensor(np.asarray(split.images[start:min(start + step, count)])).float() / 255.0
        if chunk.shape[-1] > MAX_SIDE:
            chunk = torch.nn.functional.adaptive_avg_pool2d(chunk, MAX_SIDE)
        parts.append(chunk.flatten(1).numpy())
    return np.concatenate(parts), np.asarray(split.labels[:count])


def _estimator(name: str, params: dict[str, Any], seed: int):
    from sklearn.linear_model import LogisticRegression
    from sklearn.svm import SVC

    if name == "logistic_regression":
        return LogisticRegression(max_iter=300, random_state=seed, **params)
    return SVC(kernel="rbf", random_state=seed, **params)


def _score(name: str, params: dict[str, Any], seed: int, x: np.ndarray, y: np.ndarray, x_val: np.ndarray,
           y_val: np.ndarray, fold: np.ndarray | None) -> tuple[float, Any]:
    """Validation accuracy of ``params`` and the model it scored: fitted on ``x`` and scored on the validation
    split, or, with ``fold`` (each pooled image's fold), the mean over the folds of a fit on the others scored on
    the fold (no single model: None)."""
    from sklearn.metrics import accuracy_score

    if fold is None:
        model = _estimator(name, params, seed).fit(x, y)
        return accuracy_score(y_val, model.predict(x_val)), model
    scores = [accuracy_score(y[fold == f], _estimator(name, params, seed).fit(x[fold != f], y[fold != f])
                             .predict(x[fold == f])) for f in np.unique(fold)]
    return float(np.mean(scores)), None


def run_baselines(data: Dataset, seed: int = 0, folds: int = 1, refit: bool = False) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Each baseline's row (``BASELINE_COLUMNS``) and its test predictions (stage ``baseline``), selected as the
    search's trials were: on the validation split, or (``folds`` > 1) by the mean over the search's own stratified
    folds of training + validation (``imagesets.folds``, the same seed); fitted for the test on the training
    split, or (``refit``, as the search's winners on small data) on training + validation. At most ``MAX_TRAIN``
    images are fitted on either way."""
    from sklearn.metrics import accuracy_score, f1_score

    from imagesets.folds import fold_ids

    x_train, y_train = features(data.train, MAX_TRAIN)
    x_val, y_val = features(data.val)
    x_test, y_test = features(data.test)
    # Training then validation images, as the search's folds and refits pool them; capped like the training split
    # (a pool over MAX_TRAIN then has folds of its own: cross-validation is for pools far smaller, CV_BELOW_VAL).
    x_pool, y_pool = np.concatenate([x_train, x_val])[:MAX_TRAIN], np.concatenate([y_train, y_val])[:MAX_TRAIN]
    fold = fold_ids(y_pool, folds, seed) if folds > 1 else None
    x_select, y_select = (x_train, y_train) if fold is None else (x_pool, y_pool)
    pooled = folds > 1 or refit
    x_fit, y_fit = (x_pool, y_pool) if pooled else (x_train, y_train)
    rows, predictions = [], []
    for name, grid in GRIDS.items():
        started = time.perf_counter()
        with warnings.catch_warnings():  # lbfgs at its iteration cap on raw pixels: the grid's C decides, not the cap
            warnings.simplefilter("ignore")
            scored = [_score(name, params, seed, x_select, y_select, x_val, y_val, fold) for params in grid]
            scores = [score for score, _ in scored]
            best = int(np.argmax(scores))  # the first of equals: the grid runs from the simplest model up
            # Not pooled, the model chosen on the validation split is already fitted on the training images.
            model = _estimator(name, grid[best], seed).fit(x_fit, y_fit) if pooled else scored[best][1]
            predicted = model.predict(x_test)
        rows.append(dict(model=name, params=json.dumps(grid[best]), folds=folds, refit=pooled, train_images=len(y_fit),
                         features=x_train.shape[1], capped=len(y_fit) < len(data.train) + (len(data.val) if pooled else 0),
                         val_acc=scores[best], test_acc=accuracy_score(y_test, predicted),
                         test_f1=f1_score(y_test, predicted, average="macro", zero_division=0),
                         seconds=time.perf_counter() - started))
        predictions.append(pd.DataFrame(dict(model=name, trial_id="", index=np.arange(len(y_test)), label=y_test,
                                             predicted=predicted.astype(np.int64), stage=BASELINE_STAGE)))
    return pd.DataFrame(rows, columns=BASELINE_COLUMNS), pd.concat(predictions, ignore_index=True)[PREDICTION_COLUMNS]

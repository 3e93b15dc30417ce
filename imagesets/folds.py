"""Cross-validation folds, for data sets too small to select on one validation split.

With V validation images one image moves a trial's accuracy by 100 / V points: 0.69 on scikit-learn's digits
(144 images), where a search then mostly selects noise. Below ``CV_BELOW_VAL`` validation images (one image
worth more than 0.2 points) a search scores each trial by stratified k-fold cross-validation over the training
and validation images together: the fold mean is its metric, read over all of them. Folds are the same for
every trial of a search (and after a resume): they depend only on the labels, ``k`` and the seed.
"""

from __future__ import annotations

import numpy as np

CV_BELOW_VAL = 500  # validation images under which one image moves accuracy by more than 0.2 points
DEFAULT_FOLDS = 5


class FoldsError(ValueError):
    """Folds that cannot be made (a class with fewer images than folds); the message says what to change."""


def folds_for(val_images: int, asked: int | None = None) -> int:
    """The folds a search scores trials on: ``asked`` (--folds; 1 is the single validation split), else
    ``DEFAULT_FOLDS`` when the validation split is under ``CV_BELOW_VAL`` images, else 1."""
    if asked is not None:
        return asked
    return DEFAULT_FOLDS if val_images < CV_BELOW_VAL else 1


def fold_ids(labels: np.ndarray, k: int, seed: int) -> np.ndarray:
    """The fold (0 .. k-1) of each image: stratified (each fold holds each class's share), shuffled with
    ``seed``; the same labels, ``k`` and seed always give the same folds."""
    from sklearn.model_selection import StratifiedKFold

    labels = np.asarray(labels)
    present = np.bincount(labels)
    smallest = int(present[present > 0].min()) if len(labels) else 0
    if smallest < k:
        raise FoldsError(f"{k}-fold cross-validation needs at least {k} images of every class; the smallest class has "
                         f"{smallest}: lower --folds, or --folds 1 for a single validation split")
    ids = np.empty(len(labels), dtype=np.int64)
    splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed % 2**32)
    for fold, (_, held_out) in enumerate(splitter.split(np.zeros(len(labels)), labels)):
        ids[held_out] = fold
    return ids


def fold_train_images(pool: int, k: int) -> int:
    """Images a fold's model trains on, of a pool of ``pool`` (train + validation) in ``k`` folds."""
    return pool - pool // k

"""The classical baseline every search fits: scikit-learn on the raw pixels, chosen on validation, tested once."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

import search.finish.baseline as baseline
from analysis.load import Results
from analysis.tables import baseline_tests
from trainables.data import Split, load_dataset


def test_an_svc_on_the_pixels_of_digits_is_the_ten_line_baseline_it_should_be():
    data = load_dataset("digits")
    table, predictions = baseline.run_baselines(data, seed=0)
    rows = table.set_index("model")
    assert list(rows.index) == ["logistic_regression", "svc_rbf"]
    assert rows.loc["svc_rbf", "test_acc"] > 0.96 and rows.loc["logistic_regression", "test_acc"] > 0.9
    assert rows["features"].tolist() == [64, 64] and rows["train_images"].tolist() == [len(data.train)] * 2
    for model, own in predictions.groupby("model"):  # the predictions are the reported test accuracy
        assert len(own) == len(data.test) and (own["stage"] == "baseline").all()
        assert (own["label"] == own["predicted"]).mean() == rows.loc[model, "test_acc"]


def test_under_cross_validation_the_baseline_is_chosen_on_the_searchs_folds_and_refit_like_the_winners():
    """A search of digits scores its networks by 5-fold cross-validation and refits its winners on training +
    validation: the baseline they are held up against is chosen and fitted the same way, not on 144 images."""
    from sklearn.metrics import accuracy_score
    from sklearn.svm import SVC

    from imagesets.folds import fold_ids

    data = load_dataset("digits")
    table, predictions = baseline.run_baselines(data, seed=3, folds=5, refit=True)
    svc = table.set_index("model").loc["svc_rbf"]
    assert svc["folds"] == 5 and svc["refit"] and not svc["capped"]
    assert svc["train_images"] == len(data.train) + len(data.val)
    x = np.concatenate([baseline.features(data.train)[0], baseline.features(data.val)[0]])
    y = np.concatenate([data.train.labels.numpy(), data.val.labels.numpy()])
    fold = fold_ids(y, 5, 3)  # the search's own folds: the same labels, k and seed
    params = json.loads(svc["params"])
    mean = np.mean([accuracy_score(y[fold == f], SVC(kernel="rbf", random_state=3, **params)
                                   .fit(x[fold != f], y[fold != f]).predict(x[fold == f])) for f in range(5)])
    assert svc["val_acc"] == pytest.approx(mean)
    refit = SVC(kernel="rbf", random_state=3, **params).fit(x, y).predict(baseline.features(data.test)[0])
    own = predictions[predictions["model"] == "svc_rbf"]
    assert np.array_equal(own["predicted"].to_numpy(), refit)
    plain = baseline.run_baselines(data, seed=3)[0].set_index("model").loc["svc_rbf"]
    assert plain["folds"] == 1 and not plain["refit"] and plain["train_images"] == len(data.train)


def test_large_images_are_averaged_down_and_a_large_training_split_is_capped(monkeypatch):
    images = torch.randint(0, 256, (40, 3, 64, 64), dtype=torch.uint8)
    x, y = baseline.features(Split(images, torch.arange(40) % 2), limit=30)
    assert x.shape == (30, 3 * 32 * 32) and y.shape == (30,) and 0 <= x.min() and x.max() <= 1
    # Each feature is the mean of a 2x2 block of pixels, scaled to [0, 1].
    assert np.isclose(x[0, 0], images[0, 0, :2, :2].float().mean().item() / 255, atol=1e-6)
    data = load_dataset("digits")
    monkeypatch.setattr(baseline, "MAX_TRAIN", 300)
    table, _ = baseline.run_baselines(data)
    assert table["capped"].all() and (table["train_images"] == 300).all()


def test_a_winner_beats_the_baseline_only_with_a_higher_accuracy_and_a_significant_gap():
    labels = np.zeros(200, dtype=int)

    def rows(model, right):
        return pd.DataFrame(dict(model=model, trial_id="t", index=np.arange(200), label=labels,
                                 predicted=np.where(np.arange(200) < right, 0, 1), stage="search", experiment="e"))

    base = rows("svc_rbf", 150).assign(stage="baseline")
    results = Results(pd.DataFrame(), pd.DataFrame(), pd.DataFrame(), [],
                      predictions=pd.concat([rows("cnn", 190), rows("vit", 152)]),
                      baselines=pd.DataFrame(dict(experiment="e", model=["svc_rbf", "logistic_regression"],
                                                  val_acc=[0.9, 0.8])),
                      baseline_predictions=base)
    tests = baseline_tests(results).set_index("model")
    assert tests.loc["cnn", "beats"] and tests.loc["cnn", "only_model_right"] == 40
    assert not tests.loc["vit", "beats"] and tests.loc["vit", "p_value"] > 0.05  # 2 images more: chance
    assert (tests["baseline"] == "svc_rbf").all()  # the baseline best on validation


def test_a_refit_winner_is_compared_with_the_baseline_as_bundled():
    """Under cross-validation (small data) the bundle holds the refit: it is what a user takes home, and what the
    report holds up against the baseline, not the search's checkpoint."""
    labels = np.zeros(200, dtype=int)

    def rows(model, right, stage="search"):
        return pd.DataFrame(dict(model=model, trial_id="t", index=np.arange(200), label=labels,
                                 predicted=np.where(np.arange(200) < right, 0, 1), stage=stage, experiment="e"))

    results = Results(pd.DataFrame(), pd.DataFrame(),
                      pd.DataFrame(dict(experiment="e", model=["cnn", "vit"], bundled=["refit", "search"])), [],
                      predictions=pd.concat([rows("cnn", 152), rows("vit", 152)]),
                      refit_predictions=rows("cnn", 190, stage="refit"),
                      baselines=pd.DataFrame(dict(experiment="e", model=["svc_rbf"], val_acc=[0.9])),
                      baseline_predictions=rows("svc_rbf", 150).assign(stage="baseline"))
    tests = baseline_tests(results).set_index("model")
    assert tests.loc["cnn", "acc"] == 0.95 and tests.loc["cnn", "beats"]  # the refit's 190 of 200
    assert tests.loc["vit", "acc"] == 0.76 and not tests.loc["vit", "beats"]

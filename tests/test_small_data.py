"""Small data sets: trials scored by stratified k-fold cross-validation, budgets that follow the data's size."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

import models
from imagesets.folds import CV_BELOW_VAL, DEFAULT_FOLDS, FoldsError, fold_ids, fold_train_images, folds_for


@pytest.fixture
def runtime():
    from trainables.runtime import Runtime

    torch.manual_seed(0)
    return Runtime(torch.device("cpu"))


def test_folds_are_stratified_and_the_same_for_the_same_labels_and_seed():
    labels = np.repeat(np.arange(10), [30, 31, 29, 40, 35, 28, 33, 30, 32, 36])
    ids = fold_ids(labels, 5, seed=0)
    assert np.array_equal(ids, fold_ids(labels, 5, seed=0))  # every trial, every resume: the same folds
    assert not np.array_equal(ids, fold_ids(labels, 5, seed=1))
    assert sorted(np.unique(ids)) == [0, 1, 2, 3, 4]
    for cls in range(10):  # each fold holds each class's share, give or take one image
        counts = np.bincount(ids[labels == cls], minlength=5)
        assert counts.max() - counts.min() <= 1


def test_a_class_smaller_than_the_folds_is_refused_with_the_fix():
    labels = np.array([0] * 20 + [1] * 3)
    with pytest.raises(FoldsError, match="smallest class has 3.*--folds"):
        fold_ids(labels, 5, seed=0)


def test_cross_validation_below_the_validation_size_rule():
    assert folds_for(144) == DEFAULT_FOLDS == 5  # digits: one image is 0.69 points
    assert folds_for(CV_BELOW_VAL - 1) == 5 and folds_for(CV_BELOW_VAL) == 1 and folds_for(5_000) == 1
    assert folds_for(144, asked=1) == 1 and folds_for(5_000, asked=3) == 3
    assert 100 / (CV_BELOW_VAL - 1) > 0.2 >= 100 / CV_BELOW_VAL  # the documented rule: 0.2 points an image
    assert fold_train_images(1_438, 5) == 1_151


def test_fold_pairs_cover_the_pool_once_and_keep_the_normalization():
    from trainables.data import Normalization, Split, fold_pairs

    norm = Normalization((0.5,), (0.25,))
    labels = torch.arange(60) % 3
    images = torch.arange(60, dtype=torch.uint8).view(60, 1, 1, 1).expand(60, 1, 2, 2).contiguous()
    train, val = Split(images[:48], labels[:48], norm=norm), Split(images[48:], labels[48:], norm=norm)
    pairs = fold_pairs(train, val, 4, seed=0)
    held_out = sorted(int(x) for _, v in pairs for x in v.images[:, 0, 0, 0])
    assert held_out == list(range(60))  # each image validates exactly once
    for fold_train, fold_val in pairs:
        assert not set(fold_train.images[:, 0, 0, 0].tolist()) & set(fold_val.images[:, 0, 0, 0].tolist())
        assert len(fold_train) + len(fold_val) == 60 and fold_train.norm == fold_val.norm == norm
        assert np.bincount(fold_val.labels.numpy()).tolist() == [5, 5, 5]  # stratified


def test_the_fold_mean_is_what_a_trial_reports():
    from trainables.loop import fold_mean

    def epoch(acc, seconds):
        return {"epoch": 4, "val_acc": acc, "val_f1": acc - 0.01, "val_loss": 1 - acc, "train_loss": 0.5,
                "epoch_time_s": seconds, "train_time_s": 4 * seconds, "elapsed_s": 99.0, "samples_per_s": 100 / seconds,
                "params": 1234, "val_acc_se": 0.01, "folds": 1, "train_images": 100}

    out = fold_mean((epoch(0.90, 1.0), epoch(0.94, 1.0), epoch(0.98, 2.0)), train_spent=10.0, elapsed=7.5)
    assert out["val_acc"] == pytest.approx(0.94) and out["val_f1"] == pytest.approx(0.93)
    assert out["val_acc_se"] == pytest.approx(0.04 / math.sqrt(3))  # sample std over the folds / sqrt(k)
    assert out["folds"] == 3 and out["epoch"] == 4 and out["params"] == 1234 and out["train_images"] == 100
    assert out["epoch_time_s"] == 4.0 and out["train_time_s"] == pytest.approx(10.0 + 16.0) and out["elapsed_s"] == 7.5
    assert out["samples_per_s"] == pytest.approx(300 / 4.0)


def test_budgets_follow_the_training_images():
    cnn = models.get("cnn")
    assert cnn.budget(on_gpu=False, train_images=55_000) == (3, 1)  # MNIST: as before
    assert cnn.budget(on_gpu=False, train_images=None) == (3, 1)
    assert cnn.budget(on_gpu=False, train_images=2_000) == (83, 28)  # 165,000 images seen, the rung a third in
    assert cnn.budget(on_gpu=False, train_images=1_151) == (100, 33)  # digits' folds: capped
    assert cnn.budget(on_gpu=True, train_images=55_000) == (15, 2)  # a GPU's longer budget already sees enough
    vit = models.get("vit")
    assert vit.budget(on_gpu=False, train_images=1_151) == (vit.max_epochs, vit.grace_period)  # no min_images


def _planned(tmp_path, shape, val_images, full_train, *flags):
    from helpers import planned

    return planned("--storage-path", str(tmp_path), "--model", "cnn,vit", *flags, shape=shape, val_images=val_images,
                   full_train=full_train)


def test_small_data_gets_folds_refit_and_longer_budgets_large_data_keeps_its_own(tmp_path):
    from search.command.settings import UsageError

    shape = models.DataShape(1, 8, 10, train_images=1_294)
    small = _planned(tmp_path, shape, 144, 1_294)
    assert small.folds == 5 and small.refit is True
    assert {p.name: (p.max_epochs, p.grace_period) for p in small.plans} == {"cnn": (100, 33), "vit": (15, 3)}
    assert small.plans[0].shape.train_images == 1_151  # a fold's training images size the batches
    pinned = _planned(tmp_path, shape, 144, 1_294, "--max-epochs", "cnn=4", "--folds", "1")
    assert pinned.folds == 1 and {p.name: p.max_epochs for p in pinned.plans} == {"cnn": 4, "vit": 15}
    rung = _planned(tmp_path, shape, 144, 1_294, "--grace-period", "cnn=5")
    assert (rung.plans[0].max_epochs, rung.plans[0].grace_period) == (100, 5)
    mnist = _planned(tmp_path, models.DataShape(train_images=55_000), 5_000, 55_000)
    assert mnist.folds == 1 and mnist.refit is False
    assert {p.name: (p.max_epochs, p.grace_period) for p in mnist.plans} == {"cnn": (3, 1), "vit": (15, 3)}
    with pytest.raises(UsageError, match="--no-refit with 5-fold cross-validation.*--folds 1"):
        _planned(tmp_path, shape, 144, 1_294, "--no-refit")


def test_folds_flag_is_checked(tmp_path, capsys):
    from search.run import main

    assert main(["--folds", "0", "--storage-path", str(tmp_path), "--dataset", "digits"]) == 2
    assert "--folds must be 1" in capsys.readouterr().err
    # digits' smallest class holds 140-odd of the 1,438 pooled images: 200 folds cannot all hold it
    assert main(["--folds", "200", "--storage-path", str(tmp_path), "--dataset", "digits", "--gpus", "0"]) == 2
    assert "200-fold cross-validation needs at least 200 images of every class" in capsys.readouterr().err


def test_a_checkpoint_keeps_and_resumes_every_fold(mnist_small, runtime, tmp_path):
    from trainables.loop import fit_folds, prepare
    from trainables.tune_trial import load_weights, resume_state, save_checkpoint

    config = {**models.get("cnn").default_config, "epochs": 2}
    pairs = [(mnist_small.train.subset(256), mnist_small.val.subset(64)),
             (mnist_small.train.subset(192), mnist_small.val.subset(64))]
    torch.manual_seed(0)
    first = [prepare("cnn", config, train, runtime) for train, _ in pairs]
    metrics = next(fit_folds(first, pairs, runtime))
    assert metrics["folds"] == 2 and metrics["train_images"] == 224
    save_checkpoint(first, metrics, tmp_path)
    again = [prepare("cnn", config, train, runtime) for train, _ in pairs]
    assert resume_state(again, tmp_path)[0] == 1
    for before, after in zip(first, again):
        for a, b in zip(before.model.state_dict().values(), after.model.state_dict().values()):
            assert torch.equal(a, b)
    tested = prepare("cnn", config, pairs[0][0], runtime).model  # the finalists' test loads the first fold's model
    assert load_weights(tested, tmp_path) == 1
    assert all(torch.equal(a, b) for a, b in zip(tested.state_dict().values(), first[0].model.state_dict().values()))
    with pytest.raises(ValueError, match="holds 2 fold"):
        resume_state(again[:1], tmp_path)


@pytest.mark.integration
def test_a_search_on_digits_selects_by_cross_validation_and_says_so(tmp_path, data_dir):
    """The fold mean is the metric the study records and ASHA judges, every export says how trials were scored."""
    import optuna

    from trainables.card import CARD_FILE

    out = subprocess.run(
        [sys.executable, "-m", "search.run", "--model", "cnn", "--dataset", "digits", "--gpus", "0", "--num-samples",
         "3", "--folds", "3", "--max-epochs", "3", "--grace-period", "1", "--set", "blocks=1",
         "--storage-path", str(tmp_path), "--name", "cv", "--no-dashboard", "--verbose", "0", "--data-dir",
         str(data_dir)], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "Selection: 3-fold stratified cross-validation over the 1,438 training + validation images" in out.stdout
    folder = tmp_path / "cv"
    trials = pd.read_parquet(folder / "trials.parquet")
    epochs = pd.read_parquet(folder / "epochs.parquet")
    assert (trials["folds"] == 3).all() and (trials["train_images"] == 1_438 - 1_438 // 3).all()
    assert epochs["val_acc_se"].notna().all() and (epochs["val_acc_se"] > 0).any()
    assert pd.read_parquet(folder / "trials.parquet").attrs.get("schema_version", 8) >= 8
    # The study's value of each finished trial is its last reported fold mean.
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(folder / "optuna.journal")))
    study = optuna.load_study(study_name="cnn", storage=storage)
    values = sorted(t.value for t in study.trials if t.value is not None)
    last = epochs.sort_values("epoch").groupby("trial_id")["val_acc"].last()
    assert values and all(any(abs(v - x) < 1e-9 for x in last) for v in values)
    finalists = pd.read_parquet(folder / "finalists.parquet")
    assert finalists["refit_test_acc"].notna().all()  # cross-validation always refits the winner
    card = json.loads((folder / "models" / "cnn" / CARD_FILE).read_text())
    assert card["training"]["stage"] == "refit" and card["selection"]["folds"] == 3
    assert "3-fold cross-validation" in (folder / "report" / "report.md").read_text()
    baselines = pd.read_parquet(folder / "baselines.parquet")  # chosen by the same folds, refit like the winner
    assert (baselines["folds"] == 3).all() and baselines["refit"].all() and (baselines["train_images"] == 1_438).all()

"""The training loop without Ray: one epoch learns, metrics agree with scikit-learn, NaN is caught."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from sklearn.metrics import f1_score

import models
from trainables.loop import DivergedError, evaluate, fit, lr_factor, prepare, train_one_epoch
from trainables.runtime import Runtime
from trainables.train import main as train_main


@pytest.fixture
def runtime(mnist_small):
    torch.manual_seed(0)
    return Runtime(torch.device("cpu"))


def test_one_epoch_on_a_subset_learns(mnist_small, runtime):
    config = {**models.get("cnn").default_config, "epochs": 1, "batch_size": 64, "lr": 0.003,
              "schedule": "constant"}
    prepared = prepare("cnn", config, mnist_small.train, runtime)
    before = evaluate(prepared.model, mnist_small.val, runtime)
    (metrics,) = list(fit(prepared, mnist_small.train, mnist_small.val, runtime))
    assert metrics["val_acc"] > max(0.8, before.acc + 0.5)
    assert metrics["train_time_s"] <= metrics["elapsed_s"]
    assert metrics["samples_per_s"] > 0 and metrics["params"] == prepared.params
    assert set(metrics) >= {"epoch", "train_loss", "val_loss", "val_acc", "val_f1", "epoch_time_s"}


def test_evaluation_matches_scikit_learn(mnist_small, runtime):
    model = models.get("cnn").build(models.get("cnn").default_config)
    scores = evaluate(model, mnist_small.val, runtime)
    labels = mnist_small.val.labels.numpy()
    assert scores.acc == pytest.approx(float(np.mean(scores.predictions == labels)))
    assert scores.f1 == pytest.approx(f1_score(labels, scores.predictions, average="macro"))
    assert len(scores.predictions) == len(labels)  # the last partial batch is evaluated too


def test_diverging_training_stops_with_a_reason(mnist_small, runtime):
    config = {**models.get("cnn").default_config, "lr": 9.0, "optimizer": "sgd", "momentum": 0.99,
              "batch_norm": False, "schedule": "constant", "epochs": 1}
    prepared = prepare("cnn", config, mnist_small.train, runtime)
    with torch.no_grad():
        for p in prepared.model.parameters():
            p.mul_(1e6)
    with pytest.raises(DivergedError, match="^diverged: training loss became"):
        train_one_epoch(prepared.model, mnist_small.train, prepared.optimizer, None, prepared.train_cfg, runtime)


def test_a_checkpoint_resumes_model_optimizer_and_schedule(mnist_small, runtime, tmp_path):
    from trainables.tune_trial import resume_state, save_checkpoint

    config = {**models.get("cnn").default_config, "epochs": 2}
    first = prepare("cnn", config, mnist_small.train, runtime)
    metrics = next(fit(first, mnist_small.train, mnist_small.val, runtime))  # stop after epoch 1
    save_checkpoint(first, metrics, tmp_path)
    again = prepare("cnn", config, mnist_small.train, runtime)
    epoch, best, spent = resume_state(again, tmp_path)
    assert (epoch, best) == (1, metrics["val_acc"]) and spent == (metrics["train_time_s"], metrics["elapsed_s"])
    assert again.scheduler.last_epoch == first.scheduler.last_epoch > 0  # the schedule goes on, not restarts
    assert again.optimizer.param_groups[0]["lr"] == first.optimizer.param_groups[0]["lr"]
    for a, b in zip(first.model.state_dict().values(), again.model.state_dict().values()):
        assert torch.equal(a, b)
    resumed = list(fit(again, mnist_small.train, mnist_small.val, runtime, start_epoch=epoch, spent=spent))
    assert [m["epoch"] for m in resumed] == [2]  # only what was left
    assert resumed[0]["train_time_s"] > spent[0]


@pytest.mark.parametrize("schedule", ["constant", "cosine", "onecycle"])
def test_schedules_start_low_or_flat_and_end_where_expected(schedule):
    factors = [lr_factor(s, 100, 10, schedule) for s in range(100)]
    assert max(factors) == pytest.approx(1.0, abs=0.02)
    assert factors[0] <= 0.1 + 1e-9
    if schedule != "constant":
        assert factors[-1] < 0.05
    assert all(math.isfinite(f) and f >= 0 for f in factors)


def test_a_schedule_with_restarts_runs_one_cycle_to_each_and_warms_up_only_once():
    factors = [lr_factor(s, 900, 50, "cosine", restarts=(100, 300)) for s in range(900)]
    assert factors[0] == pytest.approx(0.02) and factors[49] == pytest.approx(1.0)  # the warm-up, first cycle only
    assert factors[99] < 0.01 and factors[299] < 0.01 and factors[899] < 0.01  # decayed at each cycle's end
    assert factors[100] == pytest.approx(1.0) and factors[300] == pytest.approx(1.0)  # and at the peak after it
    assert [lr_factor(s, 90, 5, "cosine") for s in range(90)] == [lr_factor(s, 90, 5, "cosine", ()) for s in range(90)]


def test_train_command_prints_each_epoch(data_dir, capsys):
    code = train_main(["--model", "cnn", "--epochs", "1", "--train-size", "1024", "--data-dir", str(data_dir),
                       "--set", "lr=0.003", "--set", "batch_size=128", "--threads", "2", "--test"])
    out = capsys.readouterr().out
    assert code == 0
    assert "lr=0.003" in out and "batch_size=128" in out  # the overrides, typed
    assert "epoch   1" in out and "val_acc" in out and out.strip().splitlines()[-1].startswith("test")


def test_train_command_rejects_a_bad_setting(data_dir, capsys):
    assert train_main(["--model", "cnn", "--set", "lr", "--data-dir", str(data_dir)]) == 2
    assert "not key=value" in capsys.readouterr().err


def test_bf16_is_used_on_gpus_only_for_models_it_was_measured_to_speed_up(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    gpu = Runtime(torch.device("cuda"))
    assert gpu.for_model(models.get("vgg16")).precision == "bf16"
    assert gpu.for_model(models.get("cnn")).precision == "fp32"  # launch-bound on an H100: fp32 is faster
    assert dataclasses.replace(gpu, amp=False).for_model(models.get("vgg16")).precision == "fp32"  # --no-amp
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert Runtime(torch.device("cuda")).for_model(models.get("vgg16")).precision == "fp32"

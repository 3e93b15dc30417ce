"""Filling the machine: as many trials at once as the resources hold, processes and device data
reused between trials without changing their results, and the search's own efficiency figures."""

from __future__ import annotations

import pandas as pd
import pytest
import ray
import torch
from ray import tune

import models
from helpers import run_cli
from search.command.settings import ModelPlan
from search.engine.resources import concurrency
from search.engine.studies import full_trials, startup_trials
from trainables.tune_trial import DeviceData, TrialData, train_trial


def plan(name: str, cpus: float = 1, gpus: float = 0, samples: int = 16) -> ModelPlan:
    return ModelPlan(name, samples, 3, 1, cpus, gpus)


def test_slots_follow_the_resources_of_each_node():
    one_gpu = [{"CPU": 16, "GPU": 1}]
    admitted, per_model = concurrency([plan("cnn", gpus=0.25), plan("vgg16", gpus=1)], one_gpu, use_gpu=True)
    assert per_model == {"cnn": 4, "vgg16": 1} and admitted == 4  # the machine stays full with CNN trials
    # Two nodes of 2 GPUs: a trial's bundle never spans nodes; CPUs bound what GPUs would allow.
    nodes = [{"CPU": 8, "GPU": 2}, {"CPU": 2, "GPU": 2}]
    assert concurrency([plan("cnn", gpus=0.25)], nodes, use_gpu=True)[1] == {"cnn": 8 + 2}
    # On CPUs: the cores each trial takes; never more than the trials asked for; --max-concurrent caps.
    assert concurrency([plan("cnn", cpus=2, samples=16)], [{"CPU": 8}], use_gpu=False)[0] == 4
    assert concurrency([plan("cnn", samples=3)], [{"CPU": 8}], use_gpu=False)[0] == 3
    assert concurrency([plan("cnn")], [{"CPU": 8}], use_gpu=False, cap=2)[0] == 2
    assert concurrency([plan("cnn", cpus=4)], [{"CPU": 2}], use_gpu=False)[0] == 1  # never 0
    # Several models of few trials each: together they fill the machine, though none alone could.
    few = [plan(name, gpus=1, samples=2) for name in ("cnn", "vit", "vgg16")]
    assert concurrency(few, [{"CPU": 16, "GPU": 4}], use_gpu=True) == (4, {"cnn": 2, "vit": 2, "vgg16": 2})


def test_tpe_start_covers_the_first_wave_but_at_most_half_the_budget():
    assert startup_trials(8, slots=1) == 2
    assert startup_trials(40, slots=1) == 10
    assert startup_trials(16, slots=4) == 4
    assert startup_trials(16, slots=16) == 8


def test_tpe_start_is_sized_by_the_full_length_trials_an_epoch_budget_affords():
    # The benchmark's arms: 135 epochs of 9-epoch trials; TPE + ASHA asks for 135 trials, TPE alone for 15.
    with_asha, alone = ModelPlan("cnn", 135, 9, 1, 1.0, 0.0), ModelPlan("cnn", 15, 9, 9, 1.0, 0.0)
    assert full_trials(with_asha, epoch_budget=135) == full_trials(alone, epoch_budget=135) == 15
    assert startup_trials(full_trials(with_asha, 135)) == startup_trials(full_trials(alone, 135)) == 3
    assert full_trials(with_asha) == 135  # no epoch budget: the trial count is the budget
    assert full_trials(with_asha, epoch_budget=135, models=3) == 5  # a budget shared by three models
    assert full_trials(with_asha, epoch_budget=4) == 1


def trial_data(data, seed: int = 0, train_size: int | None = None) -> TrialData:
    return TrialData(data.train.subset(train_size), data.val, data.info.shape, seed)


def test_device_data_is_kept_for_the_same_data_and_replaced_for_other_data(mnist_small):
    data = trial_data(mnist_small)
    first = DeviceData.get(data, torch.device("cpu"))
    assert DeviceData.get(trial_data(mnist_small, seed=1), torch.device("cpu"))[0] is first[0]  # same splits
    other = trial_data(mnist_small, train_size=100)
    assert other.key != data.key
    assert len(DeviceData.get(other, torch.device("cpu"))[0]) == 100
    DeviceData.clear()


@pytest.fixture(scope="module")
def local_ray():
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.mark.integration
def test_the_splits_reach_trial_processes_without_a_copy(local_ray, mnist_small):
    """One machine: a trial receives the name of each split's file in the cache and maps it (the page cache's
    one copy; tests/test_one_copy.py measures it). A cluster (splits held in memory): every trial process on a
    node reads the one copy in Ray's shared object store (read-only) instead of unpickling its own."""
    mapped = ray.get(ray.put(trial_data(mnist_small)))
    assert mapped.train.file == mnist_small.train.file and torch.equal(mapped.train.images, mnist_small.train.images)
    held = TrialData(mnist_small.train.in_memory(), mnist_small.val.in_memory(), mnist_small.info.shape, 0)
    ref = ray.put(held)
    first, second = ray.get(ref), ray.get(ref)  # as two trial processes would
    assert first.train.images.data_ptr() == second.train.images.data_ptr()  # one copy, in shared memory
    assert first.val.labels.data_ptr() == second.val.labels.data_ptr()
    assert torch.equal(first.train.images, mnist_small.train.images) and first.shape == mnist_small.info.shape
    assert first.train.norm == mapped.train.norm == mnist_small.info.normalization  # it travels with the data


def run_trials(tmp_path, data: TrialData, lrs: list[float], name: str) -> pd.DataFrame:
    """Trials of the CNN's default config differing in ``lr``, one at a time, reusing processes."""
    space = {**models.get("cnn").default_config, "model": "cnn", "epochs": 2, "lr": tune.grid_search(lrs)}
    tuner = tune.Tuner(tune.with_parameters(train_trial, data=data), param_space=space,
                       tune_config=tune.TuneConfig(max_concurrent_trials=1, reuse_actors=True),
                       run_config=tune.RunConfig(name=name, storage_path=str(tmp_path), verbose=0))
    results = tuner.fit()
    assert not results.errors, results.errors
    return pd.concat([r.metrics_dataframe.assign(lr=r.config["lr"]) for r in results], ignore_index=True)


@pytest.mark.integration
def test_a_trial_in_a_reused_process_gives_the_results_of_a_fresh_one(local_ray, tmp_path, mnist_small):
    data = TrialData(mnist_small.train.subset(1024), mnist_small.val.subset(256), mnist_small.info.shape, seed=3)
    shared = run_trials(tmp_path, data, [0.02, 0.005], "shared")
    alone = run_trials(tmp_path, data, [0.005], "alone")
    second = shared[shared["lr"] == 0.005].reset_index(drop=True)
    first = shared[shared["lr"] == 0.02]
    assert second["process"].iloc[0] == first["process"].iloc[0] and second["trial_in_process"].iloc[0] == 2
    assert alone["trial_in_process"].iloc[0] == 1 and alone["process"].iloc[0] != second["process"].iloc[0]
    columns = ["epoch", "train_loss", "val_loss", "val_acc", "val_f1"]
    pd.testing.assert_frame_equal(second[columns], alone[columns].reset_index(drop=True))


@pytest.mark.integration
def test_four_slots_run_four_trials_at_once_in_fewer_processes(tmp_path, data_dir):
    # One epoch of all of MNIST per trial: long enough that four processes starting on two cores (their
    # imports take seconds) are all training before the first trial ends. The width is pinned: TPE's draws of 48
    # or 64 channels took 4 minutes a trial here, four at once on two cores, beside the classical baselines.
    proc = run_cli("search.run", "--model", "cnn", "--gpus", "0", "--cpus", "4", "--num-samples", "8",
                   "--max-epochs", "1", "--grace-period", "1", "--set", "channels=16", "--no-dashboard", "--verbose", "0",
                   "--storage-path", str(tmp_path), "--name", "four", "--data-dir", str(data_dir), timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Trials at once: up to 4" in proc.stdout
    trials = pd.read_parquet(tmp_path / "four" / "trials.parquet")
    epochs = pd.read_parquet(tmp_path / "four" / "epochs.parquet")
    assert len(trials) == 8 and (trials["slots"] == 4).all()
    # From the exports' start and report times: the most trials inside their [start, last report] at once.
    begin = trials["train_started_at"] - trials["setup_s"]
    end = epochs.groupby("trial_id")["reported_at"].max().reindex(trials["trial_id"]).to_numpy()
    overlap = max(((begin <= t) & (end > t)).sum() for t in begin)
    assert overlap == 4
    assert trials["process"].nunique() < len(trials) and (trials["trial_in_process"] > 1).any()
    from analysis.efficiency import efficiency

    row = efficiency(trials).iloc[0]
    assert row["max_at_once"] == 4 and 1 < row["mean_at_once"] <= 4
    assert 0 < row["slot_share"] < 1 and row["startup_s"] > 0 and row["mean_gap_s"] >= 0
    assert "4 slots:" in proc.stdout and "of slot-time training" in proc.stdout
    report = (tmp_path / "four" / "report" / "report.md").read_text()
    assert "How full the machine was kept" in report

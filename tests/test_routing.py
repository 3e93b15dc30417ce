"""One experiment, but one Optuna study and one set of ASHA brackets per model."""

from __future__ import annotations

from types import SimpleNamespace

import optuna
import pytest
from ray.tune.schedulers import TrialScheduler
from ray.tune.search import Searcher

from search.plans import ModelPlan
from search.resources import resources_for
from search.scheduler import PerModelScheduler, build_scheduler
from search.searcher import build_searcher

optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.fixture
def two_models(monkeypatch):
    """A second registered name with the CNN's spec, so routing can be checked with two models."""
    import dataclasses

    import models

    twin = dataclasses.replace(models.get("cnn"), name="cnn_twin", max_epochs=4, grace_period=2)
    models.register(twin)
    yield [ModelPlan("cnn", 3, 2, 1, 1.0, 0.25), ModelPlan("cnn_twin", 2, 4, 2, 1.0, 1.0)]
    models.unregister("cnn_twin")


def test_searcher_alternates_models_and_stops_at_each_count(two_models):
    searcher = build_searcher(two_models, seed=0)
    configs = [searcher.suggest(f"t{i}") for i in range(5)]
    assert [c["model"] for c in configs] == ["cnn", "cnn_twin", "cnn", "cnn_twin", "cnn"]
    assert searcher.suggest("t5") == Searcher.FINISHED
    assert {c["epochs"] for c in configs if c["model"] == "cnn_twin"} == {4}
    # Each model's first trial is its registered default (Optuna's enqueued trial).
    import models

    first = configs[0]
    assert all(first[k] == v for k, v in models.get("cnn").default_config.items())


def test_results_reach_only_their_own_study(two_models):
    searcher = build_searcher(two_models, seed=0)
    for i in range(5):
        searcher.suggest(f"t{i}")
    for epoch, acc in ((1, 0.8), (2, 0.9)):  # cnn's budget is 2 epochs: t0 trains it all
        searcher.on_trial_result("t0", {"val_acc": acc, "training_iteration": epoch + 5, "epoch": epoch})
    searcher.on_trial_complete("t0", {"val_acc": 0.9, "training_iteration": 7, "epoch": 2})
    searcher.on_trial_complete("t2", {"val_acc": 0.1}, error=True)
    searcher.on_trial_result("t4", {"val_acc": 0.3, "training_iteration": 1, "epoch": 1})
    searcher.on_trial_complete("t4", {"val_acc": 0.3, "training_iteration": 1, "epoch": 1})  # ASHA stopped it
    studies = searcher.studies
    states = {t.number: t.state.name for t in studies["cnn"].trials}
    # An error is a failure, not its last value; a trial stopped early is pruned, not complete.
    assert states == {0: "COMPLETE", 1: "FAIL", 2: "PRUNED"}
    assert [t.intermediate_values for t in studies["cnn"].trials] == [{1: 0.8, 2: 0.9}, {}, {1: 0.3}]
    assert all(t.state == optuna.trial.TrialState.RUNNING for t in studies["cnn_twin"].trials)


def fake_trial(trial_id: str, model: str):
    return SimpleNamespace(trial_id=trial_id, config={"model": model})


def test_a_slow_model_is_not_cut_by_a_fast_models_scores(two_models):
    scheduler: PerModelScheduler = build_scheduler(two_models, reduction_factor=2)
    fast = [fake_trial(f"f{i}", "cnn") for i in range(4)]
    slow = fake_trial("s0", "cnn_twin")
    for t in [*fast, slow]:
        scheduler.on_trial_add(None, t)
    for t in fast:
        scheduler.on_trial_result(None, t, {"epoch": 1, "val_acc": 0.98})
    # At its first rung the slow model's trial scores far below the fast model's: with shared
    # brackets ASHA would stop it; with its own brackets it competes only with its own trials.
    assert scheduler.on_trial_result(None, slow, {"epoch": 2, "val_acc": 0.30}) == TrialScheduler.CONTINUE
    weak = fake_trial("f9", "cnn")
    scheduler.on_trial_add(None, weak)
    assert scheduler.on_trial_result(None, weak, {"epoch": 1, "val_acc": 0.30}) == TrialScheduler.STOP


def test_each_model_gets_its_own_budget_and_resources(two_models):
    scheduler = build_scheduler(two_models, reduction_factor=2)
    assert scheduler._schedulers["cnn"]._max_t == 2 and scheduler._schedulers["cnn_twin"]._max_t == 4
    on_gpu = resources_for(two_models, use_gpu=True)
    on_cpu = resources_for(two_models, use_gpu=False)
    assert on_gpu({"model": "cnn"}).required_resources == {"CPU": 1.0, "GPU": 0.25}
    assert on_gpu({"model": "cnn_twin"}).required_resources == {"CPU": 1.0, "GPU": 1.0}
    assert on_cpu({"model": "cnn_twin"}).required_resources == {"CPU": 1.0}


def test_searcher_keeps_each_model_within_its_slots_and_all_within_tunes_limit(two_models):
    searcher = build_searcher(two_models, seed=0, slots={"cnn": 2, "cnn_twin": 1})
    assert searcher.set_max_concurrency(10) is True  # Tune's ConcurrencyLimiter then passes everything through
    configs = [searcher.suggest(f"t{i}") for i in range(4)]
    assert [c and c["model"] for c in configs] == ["cnn", "cnn_twin", "cnn", None]  # 2 + 1 slots taken
    searcher.on_trial_complete("t1", {"val_acc": 0.5, "training_iteration": 1, "epoch": 1})
    assert searcher.suggest("t4")["model"] == "cnn_twin"  # its slot freed
    searcher.on_trial_complete("t0", {"val_acc": 0.5, "training_iteration": 1, "epoch": 1})
    searcher.set_max_concurrency(2)
    assert searcher.suggest("t5") is None  # t2 and t4 out: Tune's limit of 2, though cnn has a slot
    searcher.on_trial_complete("t4", {"val_acc": 0.5, "training_iteration": 1, "epoch": 1})
    assert searcher.suggest("t6")["model"] == "cnn"

"""Each model's study is driven through Optuna's public ask-and-tell: what a user reads back from the
journal with ``optuna.load_study``, how a search grows, and how a changed space is named."""

from __future__ import annotations

import json

import optuna
import pytest
from ray.tune.search import SearchGenerator, Searcher

import models
from search.command.settings import ModelPlan
from search.resume.state import sync_generator
from search.engine.searcher import BUDGET_FILE, PerModelSearcher, build_searcher
from search.engine.studies import optuna_storage
from search.resume.space import space_changes

optuna.logging.set_verbosity(optuna.logging.WARNING)


def test_complete_pruned_and_failed_trials_read_back_from_the_journal(tmp_path):
    searcher = build_searcher([ModelPlan("cnn", 3, 3, 1, 1.0, 0.0)], seed=0, storage=optuna_storage(tmp_path))
    for i in range(3):
        searcher.suggest(f"t{i}")
    for epoch, acc in ((1, 0.80), (2, 0.85), (3, 0.90)):
        searcher.on_trial_result("t0", {"val_acc": acc, "epoch": epoch})
    searcher.on_trial_complete("t0", {"val_acc": 0.90, "epoch": 3})  # its whole budget: COMPLETE
    searcher.on_trial_result("t1", {"val_acc": 0.40, "epoch": 1})
    searcher.on_trial_complete("t1", {"val_acc": 0.42, "epoch": 2})  # stopped by ASHA at epoch 2: PRUNED
    searcher.on_trial_complete("t2", None, error=True)

    study = optuna.load_study(study_name="cnn", storage=optuna_storage(tmp_path))  # what a user opens
    by_id = {t.user_attrs["trial_id"]: t for t in study.trials}
    assert {k: t.state.name for k, t in by_id.items()} == {"t0": "COMPLETE", "t1": "PRUNED", "t2": "FAIL"}
    assert by_id["t0"].value == 0.90 and by_id["t0"].intermediate_values == {1: 0.80, 2: 0.85, 3: 0.90}
    assert by_id["t1"].intermediate_values == {1: 0.40, 2: 0.42}  # every epoch it trained, the stopped one too
    assert "raised an error" in by_id["t2"].user_attrs["error"]
    assert by_id["t0"].params == searcher.studies["cnn"].trials[0].params  # the default, asked first


def test_a_search_grows_by_exactly_the_trials_added_and_its_study_learns_from_the_old_ones(tmp_path):
    plan = ModelPlan("cnn", 2, 1, 1, 1.0, 0.0)
    budget = tmp_path / BUDGET_FILE
    searcher = build_searcher([plan], seed=0, storage=optuna_storage(tmp_path), budget_file=budget)
    for i in range(2):
        searcher.suggest(f"t{i}")
        searcher.on_trial_complete(f"t{i}", {"val_acc": 0.5 + i / 10, "epoch": 1})
    assert searcher.suggest("t2") == Searcher.FINISHED
    searcher.save(str(tmp_path / "state.pkl"))

    budget.write_text(json.dumps({"cnn": 5}))  # --resume --num-samples 5
    grown = PerModelSearcher.__new__(PerModelSearcher)
    grown.restore(str(tmp_path / "state.pkl"))
    generator = SearchGenerator(grown)
    generator.set_state({**generator.get_state(), "counter": 2, "total_samples": 2, "finished": True})
    listed = [type("T", (), {"config": {"model": "cnn"}})() for _ in range(2)]
    sync_generator(generator, grown, listed)
    assert not generator.is_finished() and generator.get_state()["total_samples"] == 5
    added = [grown.suggest(f"t{i}") for i in range(2, 6)]
    assert [a is not None and a != Searcher.FINISHED for a in added] == [True, True, True, False]
    study = grown.studies["cnn"]
    assert [t.user_attrs["trial_id"] for t in study.trials] == ["t0", "t1", "t2", "t3", "t4"]  # no duplicates
    assert [t.state.name for t in study.trials[:2]] == ["COMPLETE", "COMPLETE"]  # the new draws see them


def test_a_changed_space_is_named_and_the_same_space_passes():
    plan = ModelPlan("cnn", 4, 2, 1, 1.0, 0.0)
    searcher = build_searcher([plan], seed=0)
    for i in range(4):
        searcher.suggest(f"t{i}")
        searcher.on_trial_complete(f"t{i}", {"val_acc": 0.5, "epoch": 2})
    trials = searcher.studies["cnn"].trials
    assert space_changes(plan, trials) == []
    pinned = ModelPlan("cnn", 4, 2, 1, 1.0, 0.0, fixed={"batch_size": 64})  # --set batch_size=64 on resume
    assert any("batch_size was searched" in c for c in space_changes(pinned, trials))
    small = ModelPlan("cnn", 4, 2, 1, 1.0, 0.0, shape=models.DataShape(train_images=2_000))  # other data: other batches
    changes = space_changes(small, trials)
    assert changes and all(c.startswith("cnn: batch_size was one of") for c in changes)


@pytest.mark.parametrize("sampler", ["tpe", "random"])
def test_each_optimizers_learning_rate_is_a_parameter_of_its_own(sampler):
    plan = ModelPlan("cnn", 8, 2, 1, 1.0, 0.0)
    searcher = build_searcher([plan], seed=1, sampler=sampler)
    configs = [searcher.suggest(f"t{i}") for i in range(8)]
    for config, trial in zip(configs, searcher.studies["cnn"].trials):
        assert trial.params[f"lr:{config['optimizer']}"] == config["lr"]  # the study's name, the config's value
        assert not [k for k in trial.params if k.startswith("lr:") and k != f"lr:{config['optimizer']}"]


def test_an_epoch_budget_ends_the_experiment_once_its_epochs_are_spent():
    from search.engine.scheduler import EpochBudget

    budget = EpochBudget(3)
    for epoch in (1, 2):
        assert budget("t0", {"epoch": epoch, "val_acc": 0.5}) is False and not budget.stop_all()
    budget("t1", {"done": True})  # a report with no epoch spends nothing
    assert not budget.stop_all()
    budget("t1", {"epoch": 1, "val_acc": 0.4})
    assert budget.stop_all()


def test_a_resumed_epoch_budget_goes_on_from_the_epochs_already_spent(tmp_path):
    import pickle

    from search.engine.scheduler import EpochBudget

    budget = EpochBudget(5, tmp_path / "epoch_budget.json")
    as_tune_keeps_it = pickle.dumps(budget)  # Tune pickles the stopper once, when the experiment begins
    for epoch in (1, 2, 3):
        budget("t0", {"epoch": epoch})
    restored = pickle.loads(as_tune_keeps_it)  # --resume after a kill
    assert restored.spent == 3 and not restored.stop_all()
    restored("t0", {"epoch": 3})  # t0 resumed from its epoch-2 checkpoint trains epoch 3 again: not counted twice
    restored("t1", {"epoch": 1})
    assert restored.spent == 4 and not restored.stop_all()
    restored("t1", {"epoch": 2})
    assert restored.stop_all()


def test_a_trial_the_journal_ended_after_the_searcher_was_saved_is_not_drawn_again(tmp_path):
    searcher = build_searcher([ModelPlan("cnn", 3, 1, 1, 1.0, 0.0)], seed=0, storage=optuna_storage(tmp_path))
    searcher.suggest("t0")
    searcher.save(str(tmp_path / "older.pkl"))
    config = searcher.suggest("t1")
    searcher.on_trial_complete("t1", {"val_acc": 0.8, "epoch": 1})  # told after the save
    restored = PerModelSearcher.__new__(PerModelSearcher)
    restored.restore(str(tmp_path / "older.pkl"))
    restored.adopt("t1", "cnn", config, finished=True, result={"val_acc": 0.8, "epoch": 1})
    study = optuna.load_study(study_name="cnn", storage=optuna_storage(tmp_path))
    assert [(t.user_attrs["trial_id"], t.state.name) for t in study.trials] == [("t0", "RUNNING"), ("t1", "COMPLETE")]

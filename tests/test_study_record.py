"""What each model's Optuna study records is what trained: pinned settings are never suggested,
early stops are pruned trials, every epoch's val_acc is an intermediate value; and the journal
reads that way in optuna-dashboard."""

from __future__ import annotations

import json
import shutil
from wsgiref.util import setup_testing_defaults

import pandas as pd
import pytest

from helpers import run_cli
from models.config import config_key

STATES = {"completed": "COMPLETE", "stopped_early": "PRUNED", "error": "FAIL"}


@pytest.fixture(scope="session")
def pinned_search(tmp_path_factory, data_dir):
    """A smoke search with SGD pinned, at momentum 0 (plain SGD), run once: its tests only read it."""
    folder = tmp_path_factory.mktemp("study")
    proc = run_cli("search.run", "--model", "cnn", "--gpus", "0", "--cpus", "2", "--smoke", "--num-samples", "6",
                   "--set", "optimizer=sgd", "--set", "momentum=0", "--no-dashboard", "--verbose", "0",
                   "--storage-path", str(folder), "--name", "pinned", "--data-dir", str(data_dir), timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    yield folder / "pinned"
    shutil.rmtree(folder, ignore_errors=True)  # a search's checkpoints: CI's disk is shared by the whole run


def study_of(folder, name: str = "cnn"):
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    storage = JournalStorage(JournalFileBackend(str(folder / "optuna.journal")))
    return storage, optuna.load_study(study_name=name, storage=storage)


@pytest.mark.integration
def test_pinned_settings_are_never_suggested_and_the_study_holds_what_trained(pinned_search):
    trials = pd.read_parquet(pinned_search / "trials.parquet").set_index("trial_id")
    assert (trials["status"] != "error").all(), trials["error"]  # SGD with momentum 0 trains
    assert (trials["config.optimizer"] == "sgd").all() and (trials["config.momentum"] == 0).all()
    _, study = study_of(pinned_search)
    assert len(study.trials) == len(trials) == 6
    for t in study.trials:
        row = trials.loc[t.user_attrs["trial_id"]]
        assert "optimizer" not in t.params and "momentum" not in t.params
        assert t.user_attrs["pinned"] == {"optimizer": "sgd", "momentum": 0.0}
        for name, value in t.params.items():
            assert row[f"config.{config_key(name)}"] == pytest.approx(value), name
        assert 1e-3 <= t.params["lr:sgd"] <= 0.3  # SGD's learning-rate range: the pinned branch of the space


@pytest.mark.integration
def test_early_stops_are_pruned_and_every_epoch_is_an_intermediate_value(pinned_search):
    trials = pd.read_parquet(pinned_search / "trials.parquet").set_index("trial_id")
    epochs = pd.read_parquet(pinned_search / "epochs.parquet")
    _, study = study_of(pinned_search)
    assert "stopped_early" in set(trials["status"]) and "completed" in set(trials["status"])
    for t in study.trials:
        trial_id = t.user_attrs["trial_id"]
        assert t.state.name == STATES[trials.loc[trial_id, "status"]]
        mine = epochs[epochs["trial_id"] == trial_id]
        assert t.intermediate_values == pytest.approx(dict(zip(mine["epoch"], mine["val_acc"])))
        if t.state.name == "COMPLETE":
            assert t.value == pytest.approx(mine["val_acc"].iloc[-1])


def call(app, path: str) -> dict:
    environ: dict = {"PATH_INFO": path}
    setup_testing_defaults(environ)
    status = []
    body = b"".join(app(environ, lambda s, headers, exc_info=None: status.append(s)))
    assert status[0].startswith("200"), (path, status, body[:500])
    return json.loads(body)


@pytest.mark.integration
def test_optuna_dashboard_lists_the_trials_that_way(pinned_search):
    pytest.importorskip("optuna_dashboard")
    from optuna_dashboard import wsgi

    storage, study = study_of(pinned_search)
    app = wsgi(storage)
    (summary,) = [s for s in call(app, "/api/studies")["study_summaries"] if s["study_name"] == "cnn"]
    detail = call(app, f"/api/studies/{summary['study_id']}")
    shown = {t["number"]: t["state"] for t in detail["trials"]}
    assert shown == {t.number: t.state.name.capitalize() for t in study.trials}
    assert "Pruned" in shown.values()


@pytest.mark.parametrize("model,pairs,needle", [
    ("cnn", ["weight_decay=inf"], "must be a finite number"),
    ("cnn", ["warmup_epochs=inf"], "must be a finite number"),
    ("vit", ["mlp_ratio=inf"], "must be a finite number"),
    ("cnn", ["lr=nan"], "must be a finite number"),
    ("cnn", ["weight_decay=300"], "must be between 0 and 1"),
    ("cnn", ["fc_width=1000000000"], "up to 8192"),
    ("vit", ["mlp_ratio=1e9"], "at most 16"),
    ("faster_rcnn", ["box_batch_size_per_image=3"], "at least 4"),
    ("faster_rcnn", ["rpn_batch_size_per_image=1"], "at least 2"),
    ("vgg16", ["pretrained=false"], "use --no-pretrained"),
])
def test_settings_that_cannot_train_are_refused_before_the_search(model, pairs, needle):
    from search.command.checks import UsageError, pinned_settings

    with pytest.raises(UsageError, match=needle):
        pinned_settings(pairs, [model], (False,))


def test_a_pin_is_checked_against_the_from_scratch_config_when_training_from_scratch():
    from search.command.checks import UsageError, pinned_settings

    assert pinned_settings(["strategy=head"], ["vgg16"], (True,)) == {"vgg16": {"strategy": "head"}}
    with pytest.raises(UsageError, match="strategy='head' with pretrained=False"):
        pinned_settings(["strategy=head"], ["vgg16"], (False,))


def test_draws_the_pins_make_invalid_are_failed_in_the_study_and_drawn_again():
    import optuna

    from search.command.settings import ModelPlan
    from search.engine.searcher import build_searcher
    from models.config import split_config

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # 5x5 'valid' convolutions in three blocks shrink 28x28 to nothing (the space pads three blocks).
    plan = ModelPlan("cnn", 12, 3, 1, 1.0, 0.0, fixed={"padding": "valid", "kernel_size": 5})
    searcher = build_searcher([plan], seed=0)
    configs = [searcher.suggest(f"t{i}") for i in range(12)]
    import models

    for config in configs:
        split_config(config, models.get("cnn").config_cls, "cnn")  # every trial handed to Tune can train
    study = searcher.studies["cnn"]
    failed = [t for t in study.trials if t.state.name == "FAIL"]
    assert failed and all("shrinks a 28x28 image" in t.user_attrs["invalid"] for t in failed)
    assert all(t.params["blocks"] == 3 for t in failed)


def test_random_search_baseline_samples_the_same_space_after_the_default():
    import optuna

    import models
    from search.command.settings import ModelPlan
    from search.engine.searcher import build_searcher

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    plan = ModelPlan("cnn", 6, 3, 1, 1.0, 0.0, fixed={"optimizer": "sgd"})
    searcher = build_searcher([plan], seed=0, sampler="random")
    configs = [searcher.suggest(f"t{i}") for i in range(6)]
    study = searcher.studies["cnn"]
    assert isinstance(study.sampler, optuna.samplers.RandomSampler)
    default = {k: v for k, v in models.get("cnn").default_config.items() if k != "optimizer"}
    assert {k: configs[0][k] for k in default} == default  # the default first, as with TPE
    assert all(c["optimizer"] == "sgd" and 1e-3 <= c["lr"] <= 0.3 and "momentum" in c for c in configs)
    assert len({c["lr"] for c in configs}) == 6

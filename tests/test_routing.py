"""One experiment, but one Optuna study and one set of ASHA brackets per model."""

from __future__ import annotations

from types import SimpleNamespace

import optuna
import pytest
from ray.tune.schedulers import TrialScheduler
from ray.tune.search import Searcher

from search.command.settings import ModelPlan
from search.engine.resources import resources_for
from search.engine.scheduler import IsDefault, PerModelScheduler, Rungs, build_scheduler
from search.engine.searcher import build_searcher

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


def test_searcher_starts_the_model_with_the_most_work_left_and_stops_at_each_count(two_models):
    """cnn_twin's trials are twice as long (4 epochs to 2): its 2 trials are 8 units of work, cnn's 3 are 6. Each
    next trial goes to the model with the most left (ties: the first model), so the longest do not start last."""
    searcher = build_searcher(two_models, seed=0)
    configs = [searcher.suggest(f"t{i}") for i in range(5)]
    assert [c["model"] for c in configs] == ["cnn_twin", "cnn", "cnn", "cnn_twin", "cnn"]  # 8:6, 4:6, 4:4, 4:2, 0:2
    assert searcher.suggest("t5") == Searcher.FINISHED
    assert {c["epochs"] for c in configs if c["model"] == "cnn_twin"} == {4}
    # Each model's first trial is its registered default (Optuna's enqueued trial).
    import models

    first = next(c for c in configs if c["model"] == "cnn")
    assert all(first[k] == v for k, v in models.get("cnn").default_config.items())


def test_results_reach_only_their_own_study(two_models):
    searcher = build_searcher(two_models, seed=0)
    cnn = [f"t{i}" for i in range(5) if searcher.suggest(f"t{i}")["model"] == "cnn"]  # its 3 trials, in order
    for epoch, acc in ((1, 0.8), (2, 0.9)):  # cnn's budget is 2 epochs: its first trial trains it all
        searcher.on_trial_result(cnn[0], {"val_acc": acc, "training_iteration": epoch + 5, "epoch": epoch})
    searcher.on_trial_complete(cnn[0], {"val_acc": 0.9, "training_iteration": 7, "epoch": 2})
    searcher.on_trial_complete(cnn[1], {"val_acc": 0.1}, error=True)
    searcher.on_trial_result(cnn[2], {"val_acc": 0.3, "training_iteration": 1, "epoch": 1})
    searcher.on_trial_complete(cnn[2], {"val_acc": 0.3, "training_iteration": 1, "epoch": 1})  # ASHA stopped it
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
    assert scheduler._schedulers["cnn"].max_t == 2 and scheduler._schedulers["cnn_twin"].max_t == 4
    on_gpu = resources_for(two_models, use_gpu=True)
    on_cpu = resources_for(two_models, use_gpu=False)
    assert on_gpu({"model": "cnn"}).required_resources == {"CPU": 1.0, "GPU": 0.25}
    assert on_gpu({"model": "cnn_twin"}).required_resources == {"CPU": 1.0, "GPU": 1.0}
    assert on_cpu({"model": "cnn_twin"}).required_resources == {"CPU": 1.0}


def test_searcher_keeps_each_model_within_its_slots_and_all_within_tunes_limit(two_models):
    searcher = build_searcher(two_models, seed=0, slots={"cnn": 2, "cnn_twin": 1})
    assert searcher.set_max_concurrency(10) is True  # Tune's ConcurrencyLimiter then passes everything through
    configs = [searcher.suggest(f"t{i}") for i in range(4)]
    assert [c and c["model"] for c in configs] == ["cnn_twin", "cnn", "cnn", None]  # 1 + 2 slots taken
    searcher.on_trial_complete("t0", {"val_acc": 0.5, "training_iteration": 1, "epoch": 1})
    assert searcher.suggest("t4")["model"] == "cnn_twin"  # its slot freed
    searcher.on_trial_complete("t1", {"val_acc": 0.5, "training_iteration": 1, "epoch": 1})
    searcher.set_max_concurrency(2)
    assert searcher.suggest("t5") is None  # t2 and t4 out: Tune's limit of 2, though cnn has a slot
    searcher.on_trial_complete("t4", {"val_acc": 0.5, "training_iteration": 1, "epoch": 1})
    assert searcher.suggest("t6")["model"] == "cnn"


def scripted(scheduler, events) -> list[str]:
    """Each (trial id, epoch, val_acc) in turn, as Tune reports them; the decisions."""
    trials: dict[str, SimpleNamespace] = {}
    decisions = []
    for trial_id, epoch, value in events:
        trial = trials.setdefault(trial_id, SimpleNamespace(trial_id=trial_id, config={"model": "cnn"}))
        if epoch == 1:
            scheduler.on_trial_add(None, trial)
        decisions.append(scheduler.on_trial_result(None, trial, {"epoch": epoch, "val_acc": value}))
    return decisions


def random_events(seed: int, trials: int = 24, max_t: int = 9) -> list[tuple[str, int, float]]:
    """Trials reporting epochs 1.. in an interleaved order, each ending at a random epoch."""
    import random

    rng = random.Random(seed)
    lengths = {f"t{i}": rng.randint(1, max_t) for i in range(trials)}
    pending = {t: 1 for t in lengths}
    events = []
    while pending:
        t = rng.choice(sorted(pending))
        events.append((t, pending[t], round(rng.uniform(0.5, 0.99), 3)))
        pending[t] += 1
        if pending[t] > lengths[t]:
            del pending[t]
    return events


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_rungs_with_one_result_needed_and_no_exemption_decide_as_rays_asha(seed):
    from ray.tune.schedulers import ASHAScheduler

    events = random_events(seed)
    ray_asha = ASHAScheduler(time_attr="epoch", metric="val_acc", mode="max", max_t=9, grace_period=1,
                             reduction_factor=3)
    ours = Rungs(max_t=9, grace_period=1, reduction_factor=3, min_results=1)
    assert scripted(ours, events) == scripted(ray_asha, events)
    assert TrialScheduler.STOP in scripted(Rungs(9, 1, 3, min_results=1), events)  # the comparison decides something


def test_a_rung_decides_only_once_it_holds_eta_results():
    rungs = Rungs(max_t=9, grace_period=1, reduction_factor=3)  # rungs at epochs 1 and 3, 3 results each
    # Seed 3 of the benchmark: the default 0.7570 at epoch 1 against one earlier 0.7572, one image apart.
    assert scripted(rungs, [("a", 1, 0.7572), ("b", 1, 0.7570)]) == [TrialScheduler.CONTINUE] * 2
    assert scripted(rungs, [("c", 1, 0.60)]) == [TrialScheduler.STOP]  # third result, below the cut-off
    assert scripted(rungs, [("d", 1, 0.80)]) == [TrialScheduler.CONTINUE]
    # Rung 3 holds nothing yet: the first two trials there go on whatever they score.
    going_on = scripted(rungs, [("a", 2, 0.8), ("a", 3, 0.9), ("b", 2, 0.7), ("b", 3, 0.5)])
    assert going_on == [TrialScheduler.CONTINUE] * 4
    assert scripted(rungs, [("d", 2, 0.8), ("d", 3, 0.4)]) == [TrialScheduler.CONTINUE, TrialScheduler.STOP]
    assert scripted(rungs, [("a", 9, 0.95)]) == [TrialScheduler.STOP]  # max_t: its budget is spent


def test_the_registered_default_is_never_stopped_early(two_models):
    import models

    plan = two_models[0]
    default = {"model": "cnn", **models.get("cnn").defaults_for(plan.shape), "epochs": 2, "seed": 0}
    assert IsDefault(plan)(default) and not IsDefault(plan)({**default, "lr": default["lr"] * 2})
    scheduler = build_scheduler(two_models, reduction_factor=2)
    weak = [SimpleNamespace(trial_id=f"w{i}", config={**default, "lr": 0.5}) for i in range(3)]
    baseline = SimpleNamespace(trial_id="default", config=default)
    for trial, value in [*zip(weak, (0.9, 0.95, 0.97)), (baseline, 0.10)]:
        scheduler.on_trial_add(None, trial)
        decision = scheduler.on_trial_result(None, trial, {"epoch": 1, "val_acc": value})
    assert decision == TrialScheduler.CONTINUE  # far below the rung's cut-off, and still trained on
    assert scheduler.on_trial_result(None, baseline, {"epoch": 2, "val_acc": 0.2}) == TrialScheduler.STOP  # at max_t
    late = SimpleNamespace(trial_id="late", config={**default, "lr": 0.3})
    scheduler.on_trial_add(None, late)
    assert scheduler.on_trial_result(None, late, {"epoch": 1, "val_acc": 0.10}) == TrialScheduler.STOP  # a searched one


def test_max_epochs_is_one_budget_asha_max_t_the_trials_epochs_and_its_schedules_length(tmp_path):
    """--max-epochs is the plan's budget: ASHA's max_t, the epochs each trial is configured (and so told to
    train), and the length every learning-rate schedule is planned over, all from the same value."""
    import torch

    import models
    from models.config import TrainConfig, split_config
    from helpers import planned
    from trainables.loop import make_scheduler

    (plan,) = planned("--model", "cnn", "--max-epochs", "7", "--storage-path", str(tmp_path)).plans
    rungs = build_scheduler([plan], reduction_factor=2)._schedulers["cnn"]
    config = build_searcher([plan], seed=0).suggest("t0")
    assert plan.max_epochs == rungs.max_t == config["epochs"] == 7

    train_cfg = split_config({**config, "schedule": "cosine", "warmup_epochs": 0}, models.get("cnn").config_cls, "cnn")
    assert isinstance(train_cfg, TrainConfig) and train_cfg.epochs == 7
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    schedule = make_scheduler(optimizer, train_cfg, steps_per_epoch=10)
    rates = []
    for _ in range(70):  # 7 epochs of 10 steps: the cosine reaches its end exactly at ASHA's max_t
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    assert rates[0] == 1.0 and rates[-1] < 0.01 and rates[34] > 0.4


def test_a_trials_schedule_runs_over_its_whole_budget_and_restarts_at_the_rungs_only_when_asked(tmp_path):
    """Under ASHA a trial's learning-rate schedule is one cycle over its epochs: cycles that end at the rungs cost
    the CNN's default 0.17 point at 3 epochs (docs/benchmarks.md, the winner's schedule). Pinned (``--set restarts=1,3``),
    each cycle ends at a rung: a rung then judges trials that have just finished a decay, and a trial that goes on
    starts a new cycle that ends at the next rung, the last at max_t."""
    import torch

    import models
    from models.config import split_config
    from helpers import planned
    from trainables.loop import make_scheduler

    flags = ["--model", "cnn", "--max-epochs", "9", "--grace-period", "1", "--reduction-factor", "3",
             "--storage-path", str(tmp_path)]
    config = build_searcher(planned(*flags).plans, seed=0).suggest("t0")
    assert config["epochs"] == 9 and config.get("restarts", "") == ""
    config = build_searcher(planned(*flags, "--set", "restarts=1,3").plans, seed=0).suggest("t0")
    assert config["restarts"] == "1,3"
    for schedule in ("cosine", "onecycle"):
        train_cfg = split_config({**config, "schedule": schedule, "warmup_epochs": 0}, models.get("cnn").config_cls, "cnn")
        optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
        steps = make_scheduler(optimizer, train_cfg, steps_per_epoch=20)
        rates = []
        for _ in range(9 * 20):
            rates.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            steps.step()
        for end in (1, 3, 9):  # the last step before each rung: decayed
            assert rates[end * 20 - 1] < 0.1, (schedule, end)
        assert max(rates[20:60]) == pytest.approx(1.0, abs=0.05) and max(rates[60:]) == pytest.approx(1.0, abs=0.05)
        if schedule == "cosine":
            assert rates[20] == pytest.approx(1.0)  # promoted at epoch 1: back to the peak at once


def test_a_search_too_small_for_early_stopping_to_pay_says_so_and_what_to_change(tmp_path):
    """The replay map (docs/benchmarks.md, "When early stopping pays") found no gain from ASHA below 20 full trials:
    such a search says so when it starts, naming the models and the flags that change it."""
    from helpers import planned

    common = ("--storage-path", str(tmp_path), "--max-epochs", "3")
    note = planned("--model", "cnn,vit", "--num-samples", "8", "--grace-period", "1", *common).asha_note
    assert "cnn (8 trials)" in note and "vit (8 trials)" in note and "--grace-period" in note
    assert "--reduction-factor 2 (the default) or 4" in note
    assert planned("--model", "cnn", "--num-samples", "8", "--grace-period", "3", *common).asha_note == ""  # no rung
    assert planned("--model", "cnn", "--num-samples", "30", *common).asha_note == ""
    assert planned("--model", "cnn", "--smoke", "--storage-path", str(tmp_path)).asha_note == ""  # the path, not a search

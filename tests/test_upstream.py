"""What the search relies on in Ray Tune and Optuna beyond a plain reading of their public API. Each
test names one reliance (docs/design.md, "What the search relies on upstream", lists them), so an
upgrade of either library that changes it fails here, by name, before a user's resume breaks."""

from __future__ import annotations

import pickle

import optuna
import pytest
from optuna.trial import TrialState
from ray.tune import Callback
from ray.tune.search import SearchGenerator, Searcher

from search.command.settings import ModelPlan
from search.engine.scheduler import build_scheduler
from search.engine.studies import optuna_storage

optuna.logging.set_verbosity(optuna.logging.WARNING)


class _Nothing(Searcher):
    def suggest(self, trial_id):
        return None

    def on_trial_complete(self, trial_id, result=None, error=False):
        pass


def test_ray_search_generator_state_holds_its_counter_total_and_finished_flag():
    generator = SearchGenerator(_Nothing())
    state = generator.get_state()
    assert {"counter", "total_samples", "finished"} <= state.keys()
    generator.set_state({**state, "counter": 3, "total_samples": 3, "finished": False})
    assert generator.is_finished()  # created all it was to create
    generator.set_state({**state, "counter": 3, "total_samples": 5, "finished": False})
    assert not generator.is_finished()  # a grown search creates more


class _Log:
    """Events appended to a file: Tune pickles the searcher and scheduler and restores copies of them."""

    def __init__(self, path) -> None:
        self.path = str(path)

    def add(self, event: str) -> None:
        with open(self.path, "a") as f:
            f.write(event + "\n")

    def events(self) -> list[str]:
        with open(self.path) as f:
            return f.read().split()


class _TwoTrials(Searcher):
    """Two trials, x=0 and x=1; saved and restored through Tune, each restore logged."""

    def __init__(self, log: _Log, marker: str) -> None:
        super().__init__(metric="score", mode="max")
        self.log, self.marker, self.given = log, marker, 0

    def suggest(self, trial_id):
        if self.given == 2:
            return Searcher.FINISHED
        self.given += 1
        return {"x": self.given - 1, "marker": self.marker}

    def on_trial_complete(self, trial_id, result=None, error=False):
        pass

    def save(self, checkpoint_path):
        with open(checkpoint_path, "wb") as f:
            pickle.dump(self.given, f)

    def restore(self, checkpoint_path):
        with open(checkpoint_path, "rb") as f:
            self.given = pickle.load(f)
        self.log.add("searcher-restored")


def _scheduler(log: _Log):
    from ray.tune.schedulers import FIFOScheduler

    class Recording(FIFOScheduler):
        def on_trial_add(self, tune_controller, trial):
            log.add(f"added:{type(tune_controller.search_alg).__name__}:{len(tune_controller.get_trials())}")

    return Recording()


class _Recorder(Callback):
    """A stateless callback (as ``search.finish.callback.EndPhaseCallback``) that logs the trials it is told ended."""

    def __init__(self, log: _Log) -> None:
        self.log = log

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.log.add("callback:complete")

    def on_trial_error(self, iteration, trials, trial, **info):
        self.log.add("callback:error")


@pytest.mark.integration  # starts Ray
def test_ray_tune_gives_schedulers_the_search_algorithm_and_the_trial_list_and_restores_the_searcher_first(
        tmp_path):
    """``adopt_trial`` and ``reconcile_search`` use the controller's ``search_alg`` and ``get_trials()`` in a
    scheduler's hooks, and ``PerModelScheduler.on_trial_add`` adopts each restored trial into the restored
    searcher, which needs Tune to restore the searcher before it re-adds a resumed experiment's trials
    (test_resume.py checks the whole resume end to end). The callbacks of the run config are pickled with the
    Tuner and called again after ``Tuner.restore`` (``EndPhaseCallback`` reaches the resumed session's end phase)."""
    import ray
    from ray import tune

    def _score(config):  # defined here: Ray's workers unpickle it by value, this test module is not importable there
        import os

        if config["x"] == 1 and not os.path.exists(config["marker"]):
            raise RuntimeError("the second trial fails until the marker file exists")
        tune.report({"score": config["x"]})

    log = _Log(tmp_path / "events")
    ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        marker = tmp_path / "second-run"
        config = tune.TuneConfig(search_alg=_TwoTrials(log, str(marker)), scheduler=_scheduler(log),
                                 max_concurrent_trials=1, num_samples=2)
        run = tune.RunConfig(storage_path=str(tmp_path), name="upstream", verbose=0, callbacks=[_Recorder(log)])
        tune.Tuner(_score, tune_config=config, run_config=run).fit()
        first = log.events()
        added = [e for e in first if e.startswith("added")]
        assert added[:2] == ["added:SearchGenerator:1", "added:SearchGenerator:2"], first
        marker.touch()
        tune.Tuner.restore(str(tmp_path / "upstream"), _score, restart_errored=True).fit()
        resumed = log.events()[len(first):]
        assert "searcher-restored" in resumed, resumed
        assert resumed.index("searcher-restored") < min(i for i, e in enumerate(resumed) if e.startswith("added"))
        assert "callback:error" in first and "callback:complete" in resumed  # the restored Tuner's callback
    finally:
        ray.shutdown()


class _Late(Searcher):
    """No trial for the first asks (as the search's searcher while its slots are lent to the end phase), then one."""

    def __init__(self) -> None:
        super().__init__(metric="score", mode="max")
        self.asked, self.given = 0, 0

    def suggest(self, trial_id):
        self.asked += 1
        if self.given:
            return Searcher.FINISHED
        if self.asked < 3:
            return None
        self.given = 1
        return {"x": 1}

    def on_trial_complete(self, trial_id, result=None, error=False):
        pass


@pytest.mark.integration  # starts Ray
def test_ray_tune_asks_the_searcher_again_while_no_trial_runs_or_waits(tmp_path):
    """``search.engine.searcher.lend_slots``: while the end phase holds every slot, the searcher gives Tune no trial, and
    collects the end phase's finished tasks each time Tune asks; Tune must go on asking while nothing runs."""
    import ray
    from ray import tune

    def _score(config):
        tune.report({"score": config["x"]})

    searcher = _Late()
    ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        results = tune.Tuner(_score, tune_config=tune.TuneConfig(search_alg=searcher, num_samples=1),
                             run_config=tune.RunConfig(storage_path=str(tmp_path), name="late", verbose=0)).fit()
    finally:
        ray.shutdown()
    assert len(results) == 1 and results[0].metrics["score"] == 1


def test_ray_scheduler_reports_the_metric_the_search_sets():
    scheduler = build_scheduler([ModelPlan("cnn", 2, 2, 1, 1.0, 0.0)], reduction_factor=2)
    assert scheduler.metric == "val_acc"  # TrialScheduler.metric reads the attribute PerModelScheduler sets


def test_optuna_trial_pickled_with_its_journal_study_reports_and_ends_after_unpickling(tmp_path):
    """The searcher is pickled with its studies' asked trials: after a resume, a running trial
    reports to the same study trial (Optuna has no public way back to a running trial otherwise)."""
    study = optuna.create_study(study_name="s", storage=optuna_storage(tmp_path), direction="maximize")
    trial = study.ask()
    trial.suggest_float("x", 0, 1)
    again = pickle.loads(pickle.dumps(trial))
    again.report(0.5, 1)
    again.study.tell(again, 0.6)
    (saved,) = optuna.load_study(study_name="s", storage=optuna_storage(tmp_path)).trials
    assert saved.state == TrialState.COMPLETE and saved.intermediate_values == {1: 0.5} and saved.value == 0.6


def test_optuna_lists_a_studys_trials_in_number_order():
    study = optuna.create_study()
    for _ in range(5):
        study.ask()
    assert [t.number for t in study.get_trials(deepcopy=False)] == [0, 1, 2, 3, 4]  # ModelStudy._frozen


def test_optuna_keeps_a_pruned_trials_last_reported_value_as_its_value():
    study = optuna.create_study(direction="maximize")
    trial = study.ask()
    trial.report(0.3, 1)
    trial.report(0.4, 2)
    study.tell(trial, state=TrialState.PRUNED)
    assert study.trials[0].value == 0.4  # TPE ranks a pruned trial by it


def test_optuna_ask_pops_an_enqueued_trial_with_its_user_attributes():
    """How a resumed trial with no handle left is continued: enqueued with its parameters, asked again."""
    study = optuna.create_study()
    study.enqueue_trial({"x": 0.25}, user_attrs={"continues": 0})
    trial = study.ask()
    assert trial.suggest_float("x", 0, 1) == 0.25 and trial.user_attrs["continues"] == 0


def test_torch_answers_whether_onednn_has_bf16_kernels():
    """CPU autocast is used only where oneDNN has bf16 kernels (``trainables.runtime.cpu_supports_bf16``):
    torch answers through a private operator, with no public equivalent in torch 2.11 to 2.14."""
    import torch

    assert isinstance(torch.ops.mkldnn._is_mkldnn_bf16_supported(), bool)

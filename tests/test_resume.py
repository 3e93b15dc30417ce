"""A search killed with SIGKILL is continued with --resume: finished trials and their rows survive
unchanged, and the final number of trials is the number asked for."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pandas as pd
import pytest

from helpers import ROOT, kill_session, run_cli, search_command

ARGS = ["--model", "cnn", "--gpus", "0", "--smoke", "--num-samples", "6", "--max-epochs", "3", "--no-dashboard",
        "--verbose", "0"]


def finished_trials(folder) -> dict[str, list[tuple[int, float]]]:
    """(epoch, val_acc) of every trial whose result file already holds its last epoch."""
    done = {}
    for result in folder.glob("cnn_*/result.json"):
        rows = [json.loads(line) for line in result.read_text().splitlines() if line.strip()]
        if rows and rows[-1].get("epoch") == 3:
            done[result.parent.name.split("_", 1)[1]] = [(r["epoch"], r["val_acc"]) for r in rows]
    return done


def start_search(storage, data_dir) -> subprocess.Popen:
    """The search of ``ARGS`` as experiment ``exp``, in a session of its own (so it can be killed whole)."""
    env = {**os.environ, "SEARCH_DATA_DIR": str(data_dir), "RAY_USAGE_STATS_ENABLED": "0"}
    return subprocess.Popen([sys.executable, "-m", "search.run", *ARGS, "--storage-path", str(storage),
                             "--name", "exp"], cwd=ROOT, env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@pytest.mark.integration
def test_killed_search_resumes_without_losing_or_repeating_trials(tmp_path, data_dir):
    folder = tmp_path / "exp"
    proc = start_search(tmp_path, data_dir)
    deadline = time.monotonic() + 300
    before = {}
    while time.monotonic() < deadline and not before:
        time.sleep(0.2)
        before = finished_trials(folder)
    kill_session(proc)
    assert before, "no trial finished before the kill"
    assert not (folder / "trials.parquet").exists(), "the search was killed before its end"

    refused = run_cli("search.run", *ARGS, "--storage-path", str(tmp_path), "--name", "exp")
    assert refused.returncode == 2 and "--resume --name exp" in refused.stderr

    resumed = run_cli("search.run", "--resume", "--name", "exp", "--storage-path", str(tmp_path),
                      env={"SEARCH_DATA_DIR": str(data_dir)}, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    trials = pd.read_parquet(folder / "trials.parquet")
    epochs = pd.read_parquet(folder / "epochs.parquet")
    assert len(trials) == 6 and trials["trial_id"].is_unique
    assert not epochs.duplicated(["trial_id", "epoch"]).any()
    for trial_id, rows in before.items():
        kept = epochs[epochs["trial_id"] == trial_id].sort_values("epoch")
        assert list(zip(kept["epoch"], kept["val_acc"])) == rows, f"trial {trial_id} changed or was re-run"


def test_resume_of_an_unknown_experiment_is_explained(tmp_path, capsys):
    proc = search_command(capsys, "--resume", "--name", "nope", "--storage-path", str(tmp_path))
    assert proc.returncode == 2 and "nothing to resume" in proc.stderr


@pytest.fixture
def model_trials_cannot_build():
    """A model registered in this process only: its trials, in Ray's worker processes, fail to find it.
    (Every setting a real model accepts trains, so a failing trial needs a model that breaks.)"""
    import dataclasses

    import models

    models.register(dataclasses.replace(models.get("cnn"), name="broken"))
    yield "broken"
    models.unregister("broken")


@pytest.mark.integration
def test_failing_trials_are_recorded_and_an_all_failed_model_fails_the_run(tmp_path, data_dir, capsys,
                                                                          model_trials_cannot_build):
    from search.run import main

    code = main(["--model", "cnn,broken", "--gpus", "0", "--smoke", "--no-dashboard", "--verbose", "0",
                 "--storage-path", str(tmp_path), "--name", "bad", "--data-dir", str(data_dir)])
    assert code == 1
    assert "every trial of broken failed" in capsys.readouterr().out
    trials = pd.read_parquet(tmp_path / "bad" / "trials.parquet")
    broken = trials[trials["model"] == "broken"]
    assert len(broken) == 2 and (broken["status"] == "error").all()
    assert broken["error"].str.contains("unknown model 'broken'").all()
    assert (trials.loc[trials["model"] == "cnn", "status"] != "error").all()  # the other model is unharmed
    assert pd.read_parquet(tmp_path / "bad" / "finalists.parquet")["model"].tolist() == ["cnn"]


def test_a_pinned_setting_no_model_has_is_refused(tmp_path, capsys):
    proc = search_command(capsys, "--model", "cnn", "--set", "patch_size=4", "--storage-path", str(tmp_path))
    assert proc.returncode == 2 and "--set patch_size: no chosen model (cnn) has such a setting" in proc.stderr


def test_searcher_state_survives_a_save_and_restore(tmp_path):
    import optuna

    from search.command.settings import ModelPlan
    from search.engine.searcher import PerModelSearcher, build_searcher

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    searcher = build_searcher([ModelPlan("cnn", 4, 3, 1, 1.0, 0.0)], seed=0)
    for i in range(2):
        searcher.suggest(f"t{i}")
    searcher.on_trial_complete("t0", {"val_acc": 0.9, "epoch": 3, "training_iteration": 3})
    searcher.save(str(tmp_path / "state.pkl"))
    restored = PerModelSearcher.__new__(PerModelSearcher)
    restored.restore(str(tmp_path / "state.pkl"))
    study = restored.studies["cnn"]
    assert [t.state.name for t in study.trials] == ["COMPLETE", "RUNNING"]  # the same study, not a fresh one
    assert [restored.suggest(f"t{i}") is not None for i in (2, 3)] == [True, True]
    assert restored.suggest("t4") == "FINISHED"  # 4 asked for, 4 suggested across the restart


def test_asha_rungs_are_saved_with_the_searcher_and_restored_into_tunes_scheduler(tmp_path):
    """Tune saves the searcher, never the scheduler: a resumed ASHA would judge the trials that go on
    against empty rungs. The searcher carries the scheduler's state, and restores it in place."""
    import pickle
    import types

    from ray.tune.schedulers import TrialScheduler

    from search.command.settings import ModelPlan
    from search.engine.scheduler import build_scheduler
    from search.engine.searcher import build_searcher

    plans = [ModelPlan("cnn", 6, 4, 1, 1.0, 0.0)]
    scheduler = build_scheduler(plans, reduction_factor=2)
    searcher = build_searcher(plans, seed=0).keep_with(scheduler)
    at_start = pickle.dumps((searcher, scheduler))  # Tune's tuner.pkl: both, as the search began
    trials = [types.SimpleNamespace(trial_id=f"t{i}", config={"model": "cnn"}, status="RUNNING", last_result={})
              for i in range(3)]
    for trial, acc in zip(trials, (0.9, 0.8, 0.7)):
        scheduler.on_trial_add(None, trial)
        decision = scheduler.on_trial_result(None, trial, {"epoch": 1, "val_acc": acc})
    assert decision == TrialScheduler.STOP  # the third is below the rung's median
    searcher.save(str(tmp_path / "state.pkl"))

    resumed_searcher, resumed_scheduler = pickle.loads(at_start)
    resumed_searcher.restore(str(tmp_path / "state.pkl"))
    late = types.SimpleNamespace(trial_id="t3", config={"model": "cnn"}, status="RUNNING", last_result={})
    resumed_scheduler.on_trial_add(None, late)
    assert resumed_scheduler.on_trial_result(None, late, {"epoch": 1, "val_acc": 0.75}) == TrialScheduler.STOP
    assert resumed_searcher._scheduler is resumed_scheduler


def _restore(path):
    """The searcher as Tune restores it from a saved state file."""
    from search.engine.searcher import PerModelSearcher

    restored = PerModelSearcher.__new__(PerModelSearcher)
    restored.restore(str(path))
    return restored


def _journal_states(folder) -> dict[str, str]:
    """Each study trial's state, by the Tune trial it was drawn for (read anew from the journal)."""
    import optuna

    from search.engine.studies import optuna_storage

    study = optuna.load_study(study_name="cnn", storage=optuna_storage(folder))
    return {t.user_attrs["trial_id"]: t.state.name for t in study.trials}


def test_a_searcher_saved_before_tune_listed_its_last_trials_counts_them_on_resume(tmp_path):
    """Tune saves its trial list, then the searcher: killed in between, the restored searcher is
    older than the list. It adopts what the list holds and suggests only what is still missing."""
    import optuna

    from search.command.settings import ModelPlan
    from search.engine.searcher import build_searcher
    from search.engine.studies import optuna_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    searcher = build_searcher([ModelPlan("cnn", 4, 3, 1, 1.0, 0.0)], seed=0, storage=optuna_storage(tmp_path))
    configs = {t: searcher.suggest(t) for t in ("t0", "t1")}
    searcher.save(str(tmp_path / "older.pkl"))
    configs["t2"] = searcher.suggest("t2")
    searcher.on_trial_result("t2", {"val_acc": 0.7, "epoch": 1})
    searcher.on_trial_complete("t0", {"val_acc": 0.9, "epoch": 3})  # the list saved after this, the searcher before
    restored = _restore(tmp_path / "older.pkl")
    restored.adopt("t0", "cnn", configs["t0"], finished=True, result={"val_acc": 0.9, "epoch": 3})
    restored.adopt("t1", "cnn", configs["t1"], finished=False)
    restored.adopt("t2", "cnn", configs["t2"], finished=False)
    restored.reconcile({"t0": "cnn", "t1": "cnn", "t2": "cnn"})
    assert restored.suggest("t3") is not None and restored.suggest("t4") == "FINISHED"  # 4 in all, not 5
    restored.on_trial_complete("t2", {"val_acc": 0.95, "epoch": 3})  # the adopted trial reaches a study trial
    assert _journal_states(tmp_path) == {"t0": "COMPLETE", "t1": "RUNNING", "t2": "COMPLETE", "t3": "RUNNING"}
    # The saved searcher had no handle on t2's study trial (Optuna offers no public way back to a running
    # trial): it was failed as lost and continued as a new one, with its parameters and reported epochs.
    import optuna

    study = optuna.load_study(study_name="cnn", storage=optuna_storage(tmp_path))
    lost, again = [t for t in study.trials if t.user_attrs["trial_id"] == "t2"]
    assert lost.state.name == "FAIL" and "continued as a new study trial" in study.user_attrs["lost"][str(lost.number)]
    assert again.params == lost.params and again.user_attrs["continues"] == lost.number
    assert again.intermediate_values == {1: 0.7, 3: 0.95} and again.value == 0.95


def test_a_searcher_newer_than_tunes_trial_list_gives_back_the_trials_that_will_never_run(tmp_path):
    import types

    import optuna
    from ray.tune.search import SearchGenerator

    from search.command.settings import ModelPlan
    from search.resume.state import reconcile_search
    from search.engine.searcher import build_searcher
    from search.engine.studies import optuna_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    searcher = build_searcher([ModelPlan("cnn", 4, 3, 1, 1.0, 0.0)], seed=0, storage=optuna_storage(tmp_path))
    for i in range(3):
        searcher.suggest(f"t{i}")
    searcher.save(str(tmp_path / "newer.pkl"))
    newer = _restore(tmp_path / "newer.pkl")  # knows t0-t2; Tune's list was saved with t0, t1
    searcher.suggest("t3")  # asked after both were saved: in the journal only
    generator = SearchGenerator(newer)
    generator.set_state({**generator.get_state(), "total_samples": 4, "counter": 4, "finished": True})  # saved when t3 was created
    listed = [types.SimpleNamespace(trial_id=f"t{i}", config={"model": "cnn"}) for i in range(2)]
    reconcile_search(types.SimpleNamespace(search_alg=generator, get_trials=lambda: listed))
    assert not generator.is_finished() and generator.get_state()["counter"] == 2
    assert newer.suggest("t4") is not None and newer.suggest("t5") is not None and newer.suggest("t6") == "FINISHED"
    journal = _journal_states(tmp_path)
    assert journal == {"t0": "RUNNING", "t1": "RUNNING", "t2": "FAIL", "t3": "FAIL", "t4": "RUNNING", "t5": "RUNNING"}
    study = optuna.load_study(study_name="cnn", storage=optuna_storage(tmp_path))
    assert all("kill" in study.user_attrs["lost"][str(t.number)] for t in study.trials if t.state.name == "FAIL")


def test_a_search_short_of_its_trials_says_how_many_are_missing():
    from search.engine.driver import missing_trials
    from search.command.settings import ModelPlan

    plans = [ModelPlan("cnn", 6, 3, 1, 1.0, 0.0), ModelPlan("vit", 2, 3, 1, 1.0, 0.0)]
    trials = pd.DataFrame({"model": ["cnn"] + ["vit"] * 2})
    assert missing_trials(plans, trials) == {"cnn": (6, 1)}  # a resumed run that ended short must not exit 0
    assert missing_trials(plans, trials.iloc[0:0]) == {"cnn": (6, 0), "vit": (2, 0)}


def reports(folder) -> list[list[dict]]:
    return [[json.loads(line) for line in path.read_text().splitlines() if line.strip()]
            for path in folder.glob("cnn_*/result.json")]


MOMENTS = {  # when to kill, read from the experiment's folder (the moment right after a trial finished is above)
    "before the first trial": lambda folder: (folder / "command.json").exists(),
    "during the first trial": lambda folder: any(reports(folder)),
    "mid-search": lambda folder: sum(1 for r in reports(folder) if r) >= 3,
}


@pytest.mark.integration
@pytest.mark.parametrize("moment", list(MOMENTS))
def test_resume_ends_with_every_requested_trial_once_wherever_the_kill_landed(tmp_path, data_dir, moment):
    folder = tmp_path / "exp"
    proc = start_search(tmp_path, data_dir)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not MOMENTS[moment](folder) and proc.poll() is None:
        time.sleep(0.1)
    assert proc.poll() is None, "the search ended before the moment came"
    kill_session(proc)
    resumed = run_cli("search.run", "--resume", "--name", "exp", "--storage-path", str(tmp_path),
                      env={"SEARCH_DATA_DIR": str(data_dir)}, timeout=600)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    trials = pd.read_parquet(folder / "trials.parquet")
    epochs = pd.read_parquet(folder / "epochs.parquet")
    assert len(trials) == 6 and trials["trial_id"].is_unique
    assert not epochs.duplicated(["trial_id", "epoch"]).any()


def test_a_folder_with_tuners_file_but_no_saved_state_counts_as_never_started(tmp_path):
    """Tune writes tuner.pkl before its first experiment state: a kill between the two must start the
    search over, not restore a Tuner that would run one trial of the six asked for."""
    from search.resume.state import tune_state_saved

    (tmp_path / "tuner.pkl").write_bytes(b"")
    assert not tune_state_saved(str(tmp_path))
    (tmp_path / "experiment_state-2026-12-03_18-00-00.json").write_text("{}")
    assert tune_state_saved(str(tmp_path)) and not tune_state_saved(str(tmp_path / "absent"))


@pytest.mark.integration
def test_a_finished_search_grows_by_the_trials_added_and_refuses_other_data_or_another_space(tmp_path):
    """--resume --num-samples N adds trials to each model's study (which learns from the earlier ones);
    the exports then hold every trial once. Data or a space that changed since are refused, named."""
    import optuna

    from search.engine.studies import optuna_storage
    from test_imagesets import write_folder

    root = write_folder(tmp_path / "shapes", classes=2, per_class=30, size=(16, 16))
    common = ["--storage-path", str(tmp_path / "out"), "--name", "grow", "--no-dashboard", "--verbose", "0",
              "--cache-dir", str(tmp_path / "cache")]
    first = run_cli("search.run", "--model", "cnn", "--gpus", "0", "--smoke", "--dataset", str(root), *common)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    folder = tmp_path / "out" / "grow"
    before = pd.read_parquet(folder / "trials.parquet")

    grown = run_cli("search.run", "--resume", "--num-samples", "5", *common)
    assert grown.returncode == 0, grown.stdout[-3000:] + grown.stderr[-3000:]
    after = pd.read_parquet(folder / "trials.parquet")
    assert len(before) == 2 and len(after) == 5 and after["trial_id"].is_unique
    assert set(before["trial_id"]) < set(after["trial_id"])  # the earlier trials kept, not run again
    study = optuna.load_study(study_name="cnn", storage=optuna_storage(folder))
    told = [t for t in study.trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert sorted(t.user_attrs["trial_id"] for t in told) == sorted(after["trial_id"])
    assert len(study.trials) == 5  # each trial drawn once: none failed as lost or drawn again on the resume
    assert "--num-samples" in json.loads((folder / "command.json").read_text())["argv"]  # a later resume keeps 5

    shrink = run_cli("search.run", "--resume", "--num-samples", "3", *common)
    assert shrink.returncode == 2 and "can grow, not shrink" in shrink.stderr

    saved = json.loads((folder / "command.json").read_text())
    (folder / "command.json").write_text(json.dumps({"argv": [*saved["argv"], "--set", "batch_size=64"]}))
    other_space = run_cli("search.run", "--resume", *common)
    assert other_space.returncode == 2 and "search space of grow changed" in other_space.stderr
    assert "batch_size was searched" in other_space.stderr
    (folder / "command.json").write_text(json.dumps(saved))

    write_folder(tmp_path / "more", classes=2, per_class=3, size=(16, 16), seed=1)
    (tmp_path / "more" / "class_0" / "000.png").rename(root / "class_0" / "added.png")
    other_data = run_cli("search.run", "--resume", *common)
    assert other_data.returncode == 2 and "the data differ from those grow began with" in other_data.stderr
    assert "sizes" in other_data.stderr and "cache key" in other_data.stderr
    assert len(pd.read_parquet(folder / "trials.parquet")) == 5  # a refusal leaves the results as they were


@pytest.mark.integration
def test_repeats_finished_before_a_kill_are_kept_on_resume(tmp_path):
    from test_imagesets import write_folder

    root = write_folder(tmp_path / "shapes", classes=2, per_class=30, size=(16, 16))
    flags = ["--storage-path", str(tmp_path / "out"), "--name", "rep", "--no-dashboard", "--verbose", "0",
             "--cache-dir", str(tmp_path / "cache")]
    # One slot: the repeats run one after the other, so the kill can land between two of them.
    proc = subprocess.Popen([sys.executable, "-m", "search.run", "--model", "cnn", "--gpus", "0", "--cpus", "1",
                             "--smoke", "--repeats", "3", "--dataset", str(root), *flags], cwd=ROOT,
                            env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    folder = tmp_path / "out" / "rep"

    def repeats_done() -> set[str]:
        done = set()
        for result in folder.glob("repeats-*/cnn_*/result.json"):
            rows = [json.loads(line) for line in result.read_text().splitlines() if line.strip()]
            if rows and rows[-1].get("epoch") == 2:
                done.add(result.parent.name.split("_", 1)[1])
        return done

    # Kill as soon as a repeat's last epoch is on disk, not when the next repeat's folder appears: on a
    # busy machine the next folder can appear before the finished repeat's last result is written.
    deadline = time.monotonic() + 400
    before: set[str] = set()
    while time.monotonic() < deadline and proc.poll() is None and not before:
        time.sleep(0.1)
        before = repeats_done()
    assert proc.poll() is None, "the search ended before it could be killed between repeats"
    kill_session(proc)
    assert before, "no repeat finished before the kill"
    assert len(before) < 3
    resumed = run_cli("search.run", "--resume", *flags, timeout=600)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    repeats = pd.read_parquet(folder / "repeats.parquet")
    assert len(repeats) == 3 and repeats["trial_id"].is_unique and sorted(repeats["seed"]) == [1000, 2000, 3000]
    assert before <= set(repeats["trial_id"])  # the finished repeats kept, not trained again


@pytest.mark.integration
def test_an_epoch_budget_stops_the_search_when_spent_and_exits_cleanly(tmp_path, data_dir):
    proc = run_cli("search.run", "--model", "cnn", "--gpus", "0", "--cpus", "1", "--smoke", "--num-samples", "6",
                   "--epoch-budget", "3", "--storage-path", str(tmp_path), "--name", "budget", "--no-dashboard",
                   "--verbose", "0", "--data-dir", str(data_dir))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    epochs = pd.read_parquet(tmp_path / "budget" / "epochs.parquet")
    assert len(epochs) == 3  # one slot: exactly the budget
    assert "before --epoch-budget 3 ran out" in proc.stdout
    # The study's record is true: the trials the spent budget cut (or never started) are not left
    # RUNNING in the journal; the one that trained its whole budget is complete, the cut one pruned.
    trials = pd.read_parquet(tmp_path / "budget" / "trials.parquet").set_index("trial_id")
    states = _journal_states(tmp_path / "budget")
    assert "RUNNING" not in states.values(), states
    for trial_id, state in states.items():
        if trial_id in trials.index:
            assert state == ("COMPLETE" if trials.loc[trial_id, "status"] == "completed" else "PRUNED"), (states, trials)

"""Running a validated search: start Ray, run one Tuner over every model, export, print results."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pandas as pd
import ray
from ray import tune
from ray.tune.trainable import wrap_function

from analysis.leaderboard import leaderboard
from imagesets.atomic import write_text
from search import storage
from search.plans import METRIC, MODE, ModelPlan
from search.resources import concurrency, resources_for
from search.scheduler import EPOCH_BUDGET_FILE, EpochBudget, build_scheduler
from search.searcher import BUDGET_FILE, build_searcher
from search.studies import OPTUNA_FILE, optuna_storage, settle_stopped
from search.export import record_from_result, trial_dirname, trials_table, write_atomic, write_dataset_record
from analysis.schema import succeeded
from search.bundles import MODELS_FOLDER
from search.finalists import test_runs
from search.progress import Progress, mark
from search.endphase import EndPhase, EndPhaseCallback, set_live
from search.wrapup import best_checkpoints, export, test_runtime
from search.repeats import (FixedConfigs, RepeatsScheduler, repeat_configs, repeats_name, repeats_table,
                            with_repeat_statistics)
from search.settings import COMMAND_FILE, Settings
from search.resume.state import tuner_to_continue
from trainables.data import Dataset
from trainables.tune_trial import TrialData, train_trial


def make_trainable(settings: Settings, data: Dataset):
    """The training function with its data and per-model resources attached."""
    # One machine: trials map the splits' files in the cache (one copy, the page cache). A cluster's nodes do
    # not have them: the splits go through Ray's object store, one copy per node (docs/datasets.md).
    train, val = (data.train.in_memory(), data.val.in_memory()) if settings.address else (data.train, data.val)
    trial_data = TrialData(train, val, data.shape, settings.seed, amp=settings.amp,
                           channels_last=settings.channels_last, weights_dir=settings.weights_dir,
                           folds=settings.folds, fold_seed=settings.seed)
    function = tune.with_resources(
        tune.with_parameters(train_trial, data=trial_data),  # one copy in the object store for all trials
        resources_for(settings.plans, use_gpu=settings.gpus > 0),
    )

    class SearchTrial(wrap_function(function)):
        """Tune's actor for one trial. The dashboard's actor view shows an actor's repr, and Tune's
        own is the function's name for every trial; this one is the trial's: ``cnn_3f2a1_00004``."""

        def __repr__(self) -> str:
            return self.trial_name

    SearchTrial.__qualname__ = "SearchTrial"  # the dashboard's Class column, without "<locals>"
    return SearchTrial


def node_resources(settings: Settings) -> list[dict[str, float]]:
    """CPUs and GPUs of every live node Ray knows. A cluster still short of the GPUs asked for
    (its autoscaler adds them as trials wait) is counted as if it had them, so that the search asks
    for enough trials to make it scale."""
    nodes = [{k: float(n["Resources"].get(k, 0)) for k in ("CPU", "GPU")} for n in ray.nodes() if n.get("Alive")]
    missing = settings.gpus - sum(n["GPU"] for n in nodes)
    if settings.address and missing > 0:
        nodes.append({"CPU": float(max((n["CPU"] for n in nodes), default=1)), "GPU": float(missing)})
    return nodes


def search_slots(settings: Settings) -> tuple[int, dict[str, int]]:
    """Trials run at once (all models), and per model, from the resources Ray has (see ``concurrency``)."""
    return concurrency(settings.plans, node_resources(settings), settings.gpus > 0, settings.max_concurrent)


def make_tuner(settings: Settings, data: Dataset, slots: tuple[int, dict[str, int]]) -> tune.Tuner:
    """One Tuner over every model: ``slots[0]`` trials at once, each model's TPE start sized by its
    own slots; a finished trial's process takes the next trial of its shape (``reuse_actors``)."""
    admitted, per_model = slots
    scheduler = build_scheduler(settings.plans, settings.reduction_factor)
    searcher = build_searcher(settings.plans, settings.seed, optuna_storage(settings.folder), per_model, settings.sampler,
                              settings.folder / BUDGET_FILE, settings.epoch_budget,
                              settings.reduction_factor).keep_with(scheduler)
    return tune.Tuner(
        make_trainable(settings, data),
        tune_config=tune.TuneConfig(
            metric=METRIC,
            mode=MODE,
            search_alg=searcher,
            # Without it Tune creates one trial at a time for a searcher of its own (the pending-trial
            # limit is 1 unless max_concurrent_trials is set): trials then start one after another.
            max_concurrent_trials=admitted,
            reuse_actors=settings.reuse_processes,
            scheduler=scheduler,
            num_samples=sum(p.num_samples for p in settings.plans),
            time_budget_s=settings.time_budget,
            trial_name_creator=trial_dirname,
            trial_dirname_creator=trial_dirname,
        ),
        run_config=run_config(settings, settings.name, settings.tune_storage,
                              epoch_budget(settings), [EndPhaseCallback()]),
    )


def epoch_budget(settings: Settings) -> EpochBudget | None:
    """``--epoch-budget``'s stopper, its count kept in the experiment folder for --resume."""
    return EpochBudget(settings.epoch_budget, settings.folder / EPOCH_BUDGET_FILE) if settings.epoch_budget else None


def run_config(settings: Settings, name: str, storage_path: str, stop: Any = None,
               callbacks: list[tune.Callback] | None = None) -> tune.RunConfig:
    """Where an experiment of this search goes, each trial keeping only its best checkpoint."""
    return tune.RunConfig(
        name=name,
        storage_path=storage_path,
        stop=stop,
        callbacks=callbacks,
        checkpoint_config=tune.CheckpointConfig(
            num_to_keep=1, checkpoint_score_attribute=METRIC, checkpoint_score_order=MODE),
        verbose=settings.verbose,
        failure_config=tune.FailureConfig(max_failures=settings.retries),
    )


def repeats_tuner(settings: Settings, data: Dataset, points: list[dict[str, Any]], slots: int) -> tune.Tuner:
    """The repeats' Tuner: with --resume, the one a kill interrupted (its finished runs kept), if it
    ran the same configurations; else a new one."""
    name = repeats_name(points)
    path = storage.join(settings.tune_folder, name) if settings.remote else str(Path(settings.tune_folder) / name)
    return tuner_to_continue(path, settings.resume, lambda: new_repeats_tuner(settings, data, points, slots, name),
                             lambda: make_trainable(settings, data))


def new_repeats_tuner(settings: Settings, data: Dataset, points: list[dict[str, Any]], slots: int,
                      name: str) -> tune.Tuner:
    return tune.Tuner(
        make_trainable(settings, data),
        tune_config=tune.TuneConfig(
            metric=METRIC, mode=MODE, num_samples=len(points), max_concurrent_trials=slots,
            search_alg=FixedConfigs(points, METRIC, MODE), scheduler=RepeatsScheduler(),
            reuse_actors=settings.reuse_processes, trial_name_creator=trial_dirname,
            trial_dirname_creator=trial_dirname),
        run_config=run_config(settings, name, settings.tune_folder),
    )


def run_repeats(settings: Settings, data: Dataset, finalists: pd.DataFrame, configs: dict[str, dict],
                slots: tuple[int, dict[str, int]], progress: Progress) -> dict[str, pd.DataFrame]:
    """Train each tested winner's configuration ``settings.repeats`` more times at other seeds (one
    Tune experiment, packed like the search, no early stopping), test each run once, and write
    ``repeats.parquet`` and the finalists with the runs' statistics."""
    points = repeat_configs(finalists, configs, settings.seed, settings.repeats)
    tuner = repeats_tuner(settings, data, points, slots[0])
    with progress.step(f"Repeats: {settings.repeats} more run(s) of each of {len(finalists)} winner(s) at other seeds"):
        results = tuner.fit()
    records = [record_from_result(r) for r in results]
    runs = trials_table(records, settings.name, data.info.name, settings.seed)
    run_configs = {rec.trial_id: rec.config for rec in records}
    with progress.step("Testing each repeat once on the test split"):
        tested = test_runs(succeeded(runs), best_checkpoints(records, results), run_configs, data.test,
                           test_runtime(settings, data), data.info.shape, settings.weights_dir, progress.say)
    for model, reason in sorted(tested.problems.items()):
        print(f"warning: a repeat of {model} could not be tested: {reason}")
    repeats = repeats_table(tested.finalists, run_configs)
    tables = {"repeats": repeats, "finalists": with_repeat_statistics(finalists, repeats)}
    write_atomic(tables, settings.folder)
    return tables


def missing_trials(plans: list[ModelPlan], trials: pd.DataFrame) -> dict[str, tuple[int, int]]:
    """Per model with fewer trials in the exports than its plan asked for: (asked, exported)."""
    counts = trials["model"].value_counts() if len(trials) else pd.Series(dtype=int)
    return {p.name: (p.num_samples, int(counts.get(p.name, 0))) for p in plans
            if int(counts.get(p.name, 0)) < p.num_samples}


def bundles_line(folder: Path, finalists: pd.DataFrame) -> str:
    """Where the winners' bundles are, and the command that classifies new images with the best one."""
    bundled = sorted(finalists.loc[finalists["bundle_error"].isna(), "model"]) if len(finalists) else []
    if not bundled:
        return "Models:  none bundled (see finalists.parquet's bundle_error)"
    return (f"Models:  {folder / MODELS_FOLDER}/{{{','.join(bundled)}}}  (classify images with: "
            f"python -m search.predict {folder} IMAGES...)")


def write_analysis(folder: Path, progress: Progress) -> str:
    """The analysis report of this search; a failure here never costs the exported results."""
    from analysis.load import load
    from analysis.report import write_report

    try:
        with progress.step(f"Writing the report to {folder / 'report'}"):
            path = write_report(load([folder]), folder / "report")
        return f"Report:  {path}"
    except Exception as e:  # the Parquet files are already complete; say what went wrong and move on
        return f"warning: the report could not be written ({type(e).__name__}: {e}); " \
               f"retry with: python -m analysis {folder}"


def budget_spent(settings: Settings, fit_seconds: float) -> bool:
    """Whether the search ended because its --epoch-budget or --time-budget ran out (not because every
    trial ran, nor because it was interrupted: an interrupted trial goes on after --resume)."""
    stopper = epoch_budget(settings)  # reads the count the search's own stopper kept
    if stopper is not None and stopper.stop_all():
        return True
    return bool(settings.time_budget) and fit_seconds >= settings.time_budget


def tuner_for(settings: Settings, data: Dataset, slots: tuple[int, dict[str, int]]) -> tune.Tuner:
    """A new Tuner, or with --resume the interrupted one, restored from its experiment state: its
    trials, each model's Optuna study and ASHA brackets (pickled with the searcher and scheduler)."""
    settings.folder.mkdir(parents=True, exist_ok=True)
    # The command line (--resume --num-samples grows it) and each model's number of trials, which the
    # restored searcher reads; the data's record, which a resume is checked against (search.resume).
    write_text(settings.folder / COMMAND_FILE, json.dumps({"argv": list(settings.argv)}))
    write_text(settings.folder / BUDGET_FILE, json.dumps({p.name: p.num_samples for p in settings.plans}))
    if not settings.resume:
        write_dataset_record(data, settings.folder)
    if settings.remote:  # --resume reads them there, from any machine
        storage.upload(settings.folder, settings.tune_folder)
    return tuner_to_continue(settings.tune_folder, settings.resume, lambda: make_tuner(settings, data, slots),
                             lambda: make_trainable(settings, data), settings.folder / OPTUNA_FILE)


def run_search(settings: Settings, data: Dataset) -> int:
    """Run the search on the Ray this process started (``start_ray``) and export it; non-zero if a model had
    no successful trial."""
    progress = Progress(quiet=settings.verbose == 0)
    try:
        slots = search_slots(settings)
        print(f"Trials at once: up to {slots[0]} ("
              + ", ".join(f"{name} {n}" for name, n in slots[1].items()) + " by the resources"
              + (f", --max-concurrent {settings.max_concurrent}" if settings.max_concurrent else "") + ")")
        if settings.shape_note:
            print(settings.shape_note)
        started = time.monotonic()
        tuner = tuner_for(settings, data, slots)
        ending = EndPhase(settings, data, progress.say)  # each model's winner finished as soon as its study is done
        set_live(ending)
        ending.start_baselines()  # they need only the data: beside the first trials
        mark("tuner started")
        results = tuner.fit()
        if budget_spent(settings, time.monotonic() - started):
            settle_stopped(optuna_storage(settings.folder), settings.plans,
                           {r.metrics["trial_id"]: r.metrics for r in results if r.metrics and "trial_id" in r.metrics})
        tables, untested, configs = export(settings, data, results, slots[0], progress, ending)
        if settings.repeats and len(tables["finalists"]):
            tables.update(run_repeats(settings, data, tables["finalists"], configs, slots, progress))
    finally:
        set_live(None)
        ray.shutdown()
    print()
    print(leaderboard(tables["trials"], tables["finalists"]))
    print(f"\nResults: {Path(settings.folder)}/{{{','.join(tables)}}}.parquet")
    print(bundles_line(settings.folder, tables["finalists"]))
    print(write_analysis(settings.folder, progress))
    if settings.remote:
        storage.upload(settings.folder, settings.tune_folder)  # complete local files, then each uploaded
        print(f"Uploaded to {settings.tune_folder}")
    short = missing_trials(settings.plans, tables["trials"])
    for model, (asked, got) in sorted(short.items()):
        if settings.time_budget or settings.epoch_budget:
            spent = (f"--time-budget {settings.time_budget:g} s" if settings.time_budget else
                     f"--epoch-budget {settings.epoch_budget}")
            print(f"note: {model} ran {got} of its {asked} trials before {spent} ran out")
        else:  # e.g. a kill that landed between Tune's snapshot of its trials and of its searcher
            print(f"error: {model} has {got} of the {asked} trials asked for ({asked - got} missing) in "
                  "trials.parquet; the results are complete for those that ran, but the search is not")
    incomplete = bool(short) and not (settings.time_budget or settings.epoch_budget)
    for model, reason in sorted(untested.items()):
        print(f"error: the winner of {model} could not be tested, so {model} has no row in finalists.parquet "
              f"(its trials are in trials.parquet): {reason}")
    failed = sorted(set(settings.models) - set(tables["finalists"]["model"]) - set(untested))
    if failed:
        print(f"error: every trial of {', '.join(failed)} failed; see the 'error' column of trials.parquet")
    return 1 if failed or untested or incomplete else 0

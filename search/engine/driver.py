"""Running a planned search on the Ray this process started: one Tuner over every model (``search.engine.tuner``),
the end phase beside it, the exports, the repeats, the leaderboard and the report, and the exit status."""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
import ray

from analysis.leaderboard import leaderboard
from analysis.schema import succeeded
from search.command import storage
from search.command.settings import ModelPlan
from search.command.settings import Settings
from search.engine.progress import Progress, mark
from search.engine.studies import optuna_storage, settle_stopped
from search.engine.tuner import epoch_budget, repeats_tuner, search_slots, tuner_for
from search.finish.bundles import MODELS_FOLDER
from search.finish.callback import set_live
from search.finish.endphase import EndPhase
from search.finish.export import last_metrics, record_from_result, trial_id_of, trials_table, write_atomic
from search.finish.finalists import test_runs
from search.finish.repeats import repeat_configs, repeats_table, with_repeat_statistics
from search.finish.wrapup import best_checkpoints, export, test_runtime
from trainables.data import Dataset


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
            f"python -m trainables.predict {folder} IMAGES...)")


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


def run_search(settings: Settings, data: Dataset) -> int:
    """Run the search on the Ray this process started (``start_ray``) and export it; non-zero if a model had
    no successful trial."""
    progress = Progress(quiet=settings.verbose == 0)
    try:
        slots = search_slots(settings)
        print(f"Trials at once: up to {slots[0]} ("
              + ", ".join(f"{name} {n}" for name, n in slots[1].items()) + " by the resources"
              + (f", --max-concurrent {settings.max_concurrent}" if settings.max_concurrent else "") + ")")
        for note in (settings.shape_note, settings.asha_note):
            if note:
                print(note)
        started = time.monotonic()
        tuner = tuner_for(settings, data, slots)
        ending = EndPhase(settings, data, progress.say, slots[0])  # each model's winner finished when its study is done
        set_live(ending)
        ending.start_baselines()  # they need only the data: beside the first trials
        mark("tuner started")
        results = tuner.fit()
        if budget_spent(settings, time.monotonic() - started):
            settle_stopped(optuna_storage(settings.folder), settings.plans,
                           {trial_id_of(r): last_metrics(r) for r in results})
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

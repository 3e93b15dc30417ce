"""The Tuners of a search: one over every model (its trainable with the data attached, the per-model searcher and
schedulers, as many trials at once as the resources hold), restored from its state by ``--resume``; and the
repeats' Tuner."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import ray
from ray import tune
from ray.tune.trainable import wrap_function

from imagesets.atomic import write_text
from search.command import storage
from search.command.space import METRIC, MODE
from search.command.settings import COMMAND_FILE, Settings
from search.engine.resources import concurrency, resources_for
from search.engine.scheduler import EPOCH_BUDGET_FILE, EpochBudget, build_scheduler
from search.engine.searcher import BUDGET_FILE, build_searcher
from search.engine.studies import OPTUNA_FILE, optuna_storage
from search.finish.callback import EndPhaseCallback
from search.finish.export import trial_dirname, write_dataset_record
from search.finish.repeats import FixedConfigs, RepeatsScheduler, repeats_name
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
                              settings.folder / BUDGET_FILE, settings.epoch_budget).keep_with(scheduler)
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

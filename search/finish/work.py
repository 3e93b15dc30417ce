"""The end phase's work, as Ray runs it (``search.finish.endphase`` starts it and collects it): a model's winner
tested, refit and bundled (``finish_model``), a bundle's cost to run (``measure_cost``), the classical baselines
(``fit_baselines``), each as a Ray task or a call on the long-lived ``Finisher`` actor; what each returns
(``Ended``), and reading back what an earlier run of the search saved (``load_ended``)."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import ray

from search.command.settings import Settings
from trainables.data import Dataset

ENDED_FOLDER = "ended"  # <results>/ended/<model>.parquet (its finalists row), <model>.predictions.parquet


def threads(cpus: float) -> int:
    """torch's threads for work given ``cpus`` of Ray's: CPUs declared to Ray beyond the machine's cores are not
    threads."""
    from trainables.runtime import set_threads

    return set_threads(min(cpus, os.cpu_count() or 1))


@dataclass
class Ended:
    """One model's end phase: its finalists row (``None`` where its winner could not be tested, ``problem`` says
    why), its test predictions (a refit's too) and the lines it printed."""

    model: str
    trial_id: str
    row: dict[str, Any] | None
    predictions: pd.DataFrame
    problem: str | None = None
    lines: list[str] = field(default_factory=list)

    @property
    def needs_cost(self) -> bool:
        row = self.row
        return row is not None and pd.isna(row.get("bundle_error")) and pd.isna(row.get("cost_latency_ms"))


def finish_model(settings: Settings, data: Dataset, winner: dict[str, Any], config: dict[str, Any], checkpoint: Any,
                 cpus: float) -> Ended:
    """A Ray task: test ``winner`` once from ``checkpoint``, refit it where the search refits, and bundle it, on
    the device Ray gave this task (its GPU share, else the CPU) with ``cpus`` threads."""
    from search.finish.bundles import Bundler
    from search.finish.finalists import test_runs
    from trainables.runtime import Runtime
    from trainables.tune_trial import trial_device

    threads(cpus)
    runtime = Runtime(trial_device(), amp=settings.amp, channels_last=settings.channels_last)
    lines: list[str] = []
    started = time.time()
    trial_id, model = winner["trial_id"], winner["model"]
    tested = test_runs(pd.DataFrame([winner]), {trial_id: checkpoint}, {trial_id: config}, data.test, runtime,
                       data.info.shape, settings.weights_dir, lines.append, after=Bundler(settings, data, runtime,
                                                                                           lines.append))
    if model in tested.problems:
        return Ended(model, trial_id, None, tested.predictions, tested.problems[model], lines)
    row = tested.finalists.iloc[0].to_dict()
    row.update(end_started_at=started, end_s=time.time() - started)
    return Ended(model, trial_id, row, tested.predictions, None, lines)


def measure_cost(folder: Path, weights_dir: str | None, smoke: bool, cpus: float) -> tuple[dict[str, Any], str, float]:
    """A Ray task holding its whole device: the bundle's cost to run (``search.finish.bundles.bundle_cost``; briefly
    in a smoke search), its line, and the seconds it took."""
    from search.finish.bundles import bundle_cost
    from trainables.cost import FULL, QUICK
    from trainables.tune_trial import trial_device

    started = time.perf_counter()
    threads(cpus)
    columns, line = bundle_cost(folder, trial_device(), weights_dir, QUICK if smoke else FULL)
    return columns, line, time.perf_counter() - started


def fit_baselines(data: Dataset, seed: int, folds: int, refit: bool, cpus: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A Ray task: the classical baselines (``search.finish.baseline``), on ``cpus`` threads (its features' pooling)."""
    from search.finish.baseline import run_baselines

    threads(cpus)
    return run_baselines(data, seed, folds, refit)


class Finisher:
    """One long-lived Ray actor that runs a CPU search's end phase, one call at a time: the classical baselines,
    then each model's end phase as its study is done, then, once nothing else runs, each bundle's cost to run.
    A task a call would pay a new worker process each time (Python, torch, the ONNX exporter: 8 to 10 s on two
    cores, more than most models' end phase); here they are paid once. It asks Ray for no CPU: the searcher
    leaves it a slot while it works (``EndPhase.slots_held``)."""

    def call(self, function: Any, *args: Any) -> Any:
        return function(*args)


def start_finisher() -> Any:
    """The ``Finisher`` actor, on the driver's own node (a worker node can leave a cluster mid-search, and an end phase
    there would leave with it); restarted once if its process dies, the call under way run again."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    return ray.remote(num_cpus=0, max_restarts=1, max_task_retries=1)(Finisher).options(
        scheduling_strategy=here).remote()


def load_ended(folder: Path) -> dict[str, Ended]:
    """The end phases a run of this search saved (``--resume``), by model."""
    ended = {}
    for file in sorted((folder / ENDED_FOLDER).glob("*.parquet")):
        if file.name.endswith(".predictions.parquet"):
            continue
        row = pd.read_parquet(file).iloc[0].to_dict()
        predictions_file = file.with_name(f"{file.stem}.predictions.parquet")
        predictions = pd.read_parquet(predictions_file) if predictions_file.exists() else pd.DataFrame()
        ended[row["model"]] = Ended(row["model"], row["trial_id"], row, predictions)
    return ended


def last_checkpoint(trial_path: str | None, history: pd.DataFrame, registered: Any) -> Any:
    """A trial's last reported checkpoint, read from its folder (the trainable checkpoints only when val_acc
    improves, so it is the trial's best); ``registered`` (what Tune recorded) where the folder cannot be read here.
    Tune registers a reported checkpoint in a step after the result, and a search stopped in between
    (--epoch-budget spent by that very result) leaves it on disk, unregistered or with an earlier one registered."""
    from ray import tune

    from trainables.tune_trial import CHECKPOINT_FILE

    if trial_path and "checkpoint_dir_name" in history:
        # Newest first, and only a folder holding the weights: a kill or a stop while a checkpoint is copied may
        # leave the last name without its weights while an earlier folder is whole.
        for name in reversed(history["checkpoint_dir_name"].dropna().tolist()):
            folder = Path(trial_path) / str(name)
            if (folder / CHECKPOINT_FILE).is_file():
                return tune.Checkpoint.from_directory(str(folder))
    return registered


def node_cpus() -> int:
    """The CPUs Ray has on this process's node, where the finishers run (``start_finisher``)."""
    here = ray.get_runtime_context().get_node_id()
    return int(next((n["Resources"].get("CPU", 1) for n in ray.nodes() if n.get("NodeID") == here), 1))

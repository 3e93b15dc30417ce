"""Everything after a model's search, as Ray work on the search's own resources, started as soon as it can.

- **Each model's end phase** (its winner's test, ``--refit``, bundle and ONNX check: ``search.finish.finalists`` and
  ``search.finish.bundles``) is started the moment the model's last trial ends, beside the other models' trials: on four
  GPUs six winners finish on four GPUs, not one after another in the driver, and on two cores the first models'
  winners are bundled while the slowest model still trains. On a CPU search it runs in long-lived actors
  (``Finisher``: imports paid once a process), one call at a time each, in a slot the searcher leaves free while it
  works (``search.engine.searcher.lend_slots``); on a GPU search it is a task with the model's GPU share, started by
  Ray where one is free (at the latest in the search's tail, where slots free up).
- **Cost to run** is then measured on the bundle as written, once the trials and every end phase are done, alone
  on its device: in a finisher with every core of its node (nothing else runs then, one bundle at a time), or, on a
  GPU search, by a task holding a whole GPU.
- **The classical baselines** need only the data: they start with the first trial, on one thread.

The driver only collects (``EndPhase.collect``, called at each step of Tune's loop through ``search.finish.callback``),
and writes each model's outcome to ``<results>/ended/`` as it arrives: a kill loses nothing that finished, and
``--resume`` runs only what is missing (a saved outcome counts while its winner is still the model's winner).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd
import ray

from analysis.schema import FINALIST_COLUMNS, PREDICTION_COLUMNS, config_names
from models.config import MODEL_KEY
from search.command.settings import Settings
from search.finish.export import effective_config, record_from_history, trials_table, write_atomic
from search.finish.finalists import Tested, pick_winners
from search.finish.work import (ENDED_FOLDER, Ended, finish_model, fit_baselines, last_checkpoint, load_ended,
                                measure_cost, node_cpus, start_finisher)
from trainables.data import Dataset

BASELINE_FILES = ("baselines", "baseline_predictions")


class EndPhase:
    """The driver's side: starts each model's end phase when its study is done (or, after the search, for the
    models whose last trials a budget stopped), collects what the tasks return and saves it at once."""

    def __init__(self, settings: Settings, data: Dataset, say=print, slots: int = 1) -> None:
        self.settings, self.say = settings, say
        # One copy in the object store for every task; on a cluster the nodes do not have this machine's files.
        shared = data if not settings.address else Dataset(data.info, data.train.in_memory(), data.val.in_memory(),
                                                           data.test.in_memory(), data.full_sizes)
        self.data = ray.put(shared)
        self.plans = {p.name: p for p in settings.plans}
        self.ended = load_ended(settings.folder)  # saved by an earlier run of this search (--resume)
        self.started: dict[str, str] = {}  # model -> the winner's trial id whose end phase is under way or saved
        self.histories: dict[str, list[dict[str, Any]]] = {}
        self.finished: set[str] = set()
        self.errors: dict[str, str] = {}
        self.configs: dict[str, dict[str, Any]] = {}  # each ended trial's config, as Tune gave it (record_from_result)
        self.pending: dict[ray.ObjectRef, tuple[str, str]] = {}  # task -> (what, model)
        self.baselines: tuple[pd.DataFrame, pd.DataFrame] | None = None
        # A CPU search's calls are queued here and handed to an idle finisher with the threads of the moment. One
        # starts now (the baselines go first), more when an end phase would wait, up to one a slot: measured on a
        # colour-image search, a model's end phase waited 18 s for another's, which ran on one thread.
        here = int(node_cpus() // settings.plans[0].cpus)  # the finishers' node: this one
        self.pool = 0 if settings.gpus else max(1, min(slots, len(settings.plans), here))
        self.finishers = [start_finisher()] if self.pool else []
        self.queue: list[tuple[str, str, Any, tuple[Any, ...]]] = []
        self._working: dict[ray.ObjectRef, int] = {}  # a call under way -> the finisher running it
        self.searching = True  # until the driver collects (``finish``): trials may still run

    def _submit(self, what: str, model: str, function: Any, resources: dict[str, float], *args: Any) -> None:
        """``function(*args, threads)`` in a finisher (a CPU search), else a task asking Ray for ``resources``."""
        if not self.pool:
            ref = ray.remote(function).options(**resources).remote(*args, resources["num_cpus"])
            self.pending[ref] = (what, model)
            return
        self.queue.append((what, model, function, args))
        self._pump()

    def _pump(self) -> None:
        """Hand queued calls to idle finishers (starting one where none is idle and the pool allows); a cost to run
        only once no other call runs, and nothing beside it."""
        while self.queue:
            running = [self.pending[ref][0] for ref in self._working]
            if "cost" in running or (self.queue[0][0] == "cost" and running):
                return
            idle = [i for i in range(len(self.finishers)) if i not in self._working.values()]
            if not idle and len(self.finishers) < self.pool:
                self.finishers.append(start_finisher())
                idle = [len(self.finishers) - 1]
            if not idle:
                return
            what, model, function, args = self.queue.pop(0)
            ref = self.finishers[idle[0]].call.remote(function, *args, self._threads(what))
            self._working[ref] = idle[0]
            self.pending[ref] = (what, model)

    def _threads(self, what: str) -> float:
        """A call's threads: a slot's while trials run, then the node's cores shared with the calls beside it; one for
        the baselines (they hold no slot); every core for a cost to run (it runs alone)."""
        slot = self.settings.plans[0].cpus  # one process shape: every trial's CPUs
        if what != "finish":
            return 1.0 if what == "baselines" else float(node_cpus())  # the baselines hold no slot
        beside = min(self.pool, len(self._working) + 1 + len(self.queue))
        return slot if self.searching else max(slot, float(node_cpus() // beside))

    # What Tune tells (through EndPhaseCallback)

    def trial_result(self, trial: Any, result: Mapping[str, Any]) -> None:
        self.histories.setdefault(trial.trial_id, []).append(dict(result))

    def trial_ended(self, trial: Any, trials: list[Any], error: bool) -> None:
        self.finished.add(trial.trial_id)
        self.configs[trial.trial_id] = dict(trial.config)
        if error:
            self.errors[trial.trial_id] = "the trial raised an error"
        model = trial.config[MODEL_KEY]
        mine = [t for t in trials if t.config[MODEL_KEY] == model]
        if model in self.started or len(mine) < self.plans[model].num_samples:
            return
        if any(t.trial_id not in self.finished or t.trial_id not in self.histories for t in mine):
            return  # still running, or trained before a --resume (not seen here): the driver starts it after the search
        records = [record_from_history(t.trial_id, effective_config(t.config), self.histories[t.trial_id],
                                       self.errors.get(t.trial_id)) for t in mine]
        winners = pick_winners(trials_table(records, self.settings.name, "", self.settings.seed))
        if len(winners):
            winner = winners.iloc[0]
            record = next(r for r in records if r.trial_id == winner["trial_id"])
            trial_of = next(t for t in mine if t.trial_id == winner["trial_id"])
            self.start(winner, record.config, last_checkpoint(trial_of.path, record.history, trial_of.checkpoint))

    def start_baselines(self) -> None:
        """The classical baselines, beside the first trials, on one thread and no slot of the search's own (a slot lent
        for their seconds to a minute would cost a trial's process); kept from an earlier run on --resume."""
        if all((self.settings.folder / f"{name}.parquet").exists() for name in BASELINE_FILES):
            self.baselines = tuple(pd.read_parquet(self.settings.folder / f"{name}.parquet") for name in BASELINE_FILES)
            return
        self._submit("baselines", "", fit_baselines, {"num_cpus": 1, "num_gpus": 0}, self.data, self.settings.seed,
                     self.settings.folds, self.settings.refit)

    def start(self, winner: pd.Series, config: dict[str, Any], checkpoint: Any) -> None:
        """The end phase of ``winner``'s model: nothing where an earlier run saved it for this winner (but its cost
        to run, if that is missing), else a task with the trials' resources."""
        model, trial_id = winner["model"], winner["trial_id"]
        self.started[model] = trial_id
        saved = self.ended.get(model)
        if saved is not None and saved.trial_id == trial_id:
            return  # its cost to run, if a kill came before it, is measured with the others' (``finish``)
        plan = self.plans[model]  # on GPUs, the model's GPU share from Ray: it runs where a trial leaves one free
        self._submit("finish", model, finish_model, {"num_cpus": plan.cpus, "num_gpus": plan.gpus}, self.settings,
                     self.data, winner.to_dict(), config, checkpoint)
        self.say(f"  {model}: its study is done; testing and bundling its winner {trial_id} beside the other trials")

    def _start_cost(self, model: str) -> None:
        """The bundle's cost to run, once no trial and no other end phase runs: in a finisher with every core of its
        node as threads, one bundle at a time (a CPU search), or a task holding a whole GPU (a GPU search)."""
        from search.finish.bundles import bundle_folder

        self._submit("cost", model, measure_cost, {"num_cpus": self.plans[model].cpus, "num_gpus": 1},
                     bundle_folder(self.settings.folder, model), self.settings.weights_dir, self.settings.smoke)

    def collect(self, wait: bool = False) -> None:
        """Save what finished calls returned and hand the finishers their next; with ``wait``, until none is left."""
        self._pump()
        while self.pending:
            ready, _ = ray.wait(list(self.pending), num_returns=1 if wait else len(self.pending),
                                timeout=None if wait else 0)
            if not ready:
                return
            for ref in ready:
                finisher, failed = self._working.pop(ref, None), self._take(ref, *self.pending.pop(ref))
                if isinstance(failed, ray.exceptions.RayActorError) and finisher is not None:
                    self.finishers[finisher] = start_finisher()  # dead past its restart: later calls get a live one
            self._pump()

    def slots_held(self) -> int:
        """The slots the end phase holds now (``search.engine.searcher.lend_slots``): one a finisher working on a model's
        end phase. On GPUs none: a slot lent would make Tune give up a trial's process (Ray counts GPU shares)."""
        self.collect()
        return sum(self.pending[ref][0] == "finish" for ref in self._working)

    def _take(self, ref: ray.ObjectRef, what: str, model: str) -> Exception | None:
        try:
            value = ray.get(ref)
        except Exception as e:  # a task that died (its worker killed, out of memory): say so, keep the rest
            reason = f"{type(e).__name__}: {str(e).strip().splitlines()[-1] if str(e).strip() else ''}"
            if what == "finish":
                self.ended[model] = Ended(model, self.started[model], None, pd.DataFrame(), reason)
            self.say(f"warning: {what} of {model or 'the baselines'} failed ({reason[:300]})")
            return e
        if what == "baselines":
            self._keep_baselines(value)
        elif what == "finish":
            for line in value.lines:
                self.say(line)
            self.ended[model] = value
            if value.row is not None:
                self._save(value)
        else:
            columns, line, seconds = value
            self.say(line)
            ended = self.ended[model]
            ended.row.update(columns, cost_s=seconds)
            self._save(ended)
        return None

    def _save(self, ended: Ended) -> None:
        write_atomic({ended.model: pd.DataFrame([ended.row]), f"{ended.model}.predictions": ended.predictions},
                     self.settings.folder / ENDED_FOLDER)

    def finish(self, trials: pd.DataFrame, checkpoints: Mapping[str, Any], configs: Mapping[str, dict]) -> Tested:
        """Every model's winner tested and bundled, its cost to run measured: the end phases not started during the
        search (stopped by a budget, or resumed) started now; the finalists and predictions in the winners' order."""
        self.searching = False  # the trials are done: what the finishers do next shares every core
        winners = pick_winners(trials)
        for _, winner in winners.iterrows():
            if self.started.get(winner["model"]) != winner["trial_id"]:
                self.start(winner, configs[winner["trial_id"]], checkpoints.get(winner["trial_id"]))
        self.collect(wait=True)
        # Alone on its device: only now that no trial and no other end phase runs (``_pump``; on GPUs a GPU each).
        for model in winners["model"]:
            if model in self.ended and self.ended[model].needs_cost:
                self._start_cost(model)
        self.collect(wait=True)
        rows, predictions, problems = [], [], {}
        for model in winners["model"]:
            ended = self.ended[model]
            if ended.row is None:
                problems[model] = ended.problem or "its end phase did not finish"
                continue
            rows.append(ended.row)
            predictions.append(ended.predictions)
        table = pd.DataFrame(rows)
        predicted = pd.concat(predictions, ignore_index=True) if predictions else pd.DataFrame()
        return Tested(table.reindex(columns=FINALIST_COLUMNS + config_names(table)),
                      predicted.reindex(columns=PREDICTION_COLUMNS), problems)

    def baseline_tables(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        """The classical baselines' tables; fitted here if their task died (a lost node, a worker killed for memory)."""
        self.collect(wait=True)
        if self.baselines is None:
            from search.finish.baseline import run_baselines  # the driver's own threads, not a task's

            self.say("  the classical baselines' task did not return (see the warning above): fitting them here")
            self._keep_baselines(run_baselines(ray.get(self.data), self.settings.seed, self.settings.folds,
                                               self.settings.refit))
        return self.baselines

    def _keep_baselines(self, tables: tuple[pd.DataFrame, pd.DataFrame]) -> None:
        self.baselines = tables
        write_atomic(dict(zip(BASELINE_FILES, tables)), self.settings.folder)


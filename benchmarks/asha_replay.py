"""The search's ASHA replayed on recorded learning curves (``benchmarks/learning_curves.py``), without training.

    python benchmarks/asha_replay.py map [--table benchmarks/results/learning_curves_cnn.parquet] [--replays 1000]
        [--budgets 5 10 20 50 100] [--workers 1 2 4 8 16] [--reduction-factors 2 3 4] [--grace-periods 1 2 3]
        [--arms random random+asha] [--out benchmarks/results/asha_replay.json]
    python benchmarks/asha_replay.py check RUN_FOLDER [RUN_FOLDER ...]   # a live search's rung decisions, replayed

A replay is a search of one model whose trials train in simulated time: ``workers`` trials at once, each trial's
epochs taking the seconds the table recorded, results handed in the order they end to the search's own rung rule
(``search.engine.scheduler.Rungs``: rungs at grace x factor^k, a decision only once a rung holds ``min_results``
results, the registered default never stopped), and the whole search ended once its trials trained ``budget``
epochs in all, as ``--epoch-budget`` ends a live one. The configurations come from the table: the default (the
table's configuration 0) first, then random draws (with replacement), or TPE's suggestions (the search's own
sampler) mapped to the nearest recorded configuration, as tabulated benchmarks do (HPOBench, Syne Tune's blackbox
repository). Its result: the best validation accuracy after each epoch trained (the live benchmark's curve), and
the regret against the table's best.
"""

from __future__ import annotations

import argparse
import heapq
import json
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

REQUIRED = ("config_id", "epoch", "val_acc", "seconds")
TABLE = ROOT / "benchmarks" / "results" / "learning_curves_cnn.parquet"
REBUILD = "rebuild it with python benchmarks/learning_curves.py"


class TableError(ValueError):
    """A table of learning curves that cannot be replayed: the message says what is wrong with it."""


@dataclass(frozen=True)
class Table:
    """Learning curves as arrays: ``val_acc[i, e]`` and ``seconds[i, e]`` of configuration ``i`` after epoch
    ``e + 1``; ``configs[i]`` its settings (``config.<name>`` columns). Configuration 0 is the default."""

    val_acc: np.ndarray
    seconds: np.ndarray
    configs: list[dict[str, Any]]
    attrs: dict[str, Any] = field(default_factory=dict)

    @property
    def max_epochs(self) -> int:
        return self.val_acc.shape[1]

    @property
    def best(self) -> float:
        """The best validation accuracy any configuration reached at any epoch: regret is measured from it."""
        return float(self.val_acc.max())


def table_from(frame: pd.DataFrame) -> Table:
    """``frame`` (one row per configuration and epoch) as a ``Table``, refused with ``TableError`` where it is
    incomplete or inconsistent: a missing column, a configuration without every epoch 1..E, values that are not
    accuracies or durations, settings that change within a configuration."""
    missing = [c for c in REQUIRED if c not in frame.columns]
    if missing:
        raise TableError(f"the table has no {', '.join(missing)} column(s): it is not a table of learning curves; {REBUILD}")
    if frame.duplicated(["config_id", "epoch"]).any():
        raise TableError(f"the table holds some configuration's epoch twice; {REBUILD}")
    ids = np.sort(frame["config_id"].unique())
    if len(ids) < 2 or not np.array_equal(ids, np.arange(len(ids))):
        raise TableError(f"configuration ids must run 0..N-1 with N >= 2 (0: the default), got {len(ids)} ids; {REBUILD}")
    epochs = frame.groupby("config_id")["epoch"].agg(["min", "max", "count"])
    longest = int(epochs["max"].max())
    short = epochs.index[(epochs["min"] != 1) | (epochs["max"] != longest) | (epochs["count"] != longest)]
    if len(short):
        raise TableError(f"{len(short)} configuration(s) lack epochs of 1..{longest} (truncated: configuration "
                         f"{int(short[0])} has {int(epochs.loc[short[0], 'count'])}); {REBUILD}")
    ordered = frame.sort_values(["config_id", "epoch"])
    val_acc = ordered["val_acc"].to_numpy(float).reshape(len(ids), longest)
    seconds = ordered["seconds"].to_numpy(float).reshape(len(ids), longest)
    if not np.isfinite(val_acc).all() or (val_acc < 0).any() or (val_acc > 1).any():
        raise TableError(f"val_acc must be accuracies in [0, 1], every one recorded; {REBUILD}")
    if not np.isfinite(seconds).all() or (seconds <= 0).any():
        raise TableError(f"seconds must be positive durations, every one recorded; {REBUILD}")
    settings = [c for c in frame.columns if c.startswith("config.")]
    varying = [c for c in settings if (ordered.groupby("config_id")[c].nunique(dropna=False) > 1).any()]
    if varying:
        raise TableError(f"{varying[0]} changes within a configuration: rows of different runs were mixed; {REBUILD}")
    firsts = ordered[ordered["epoch"] == 1]
    configs = [{c.removeprefix("config."): _plain(v) for c, v in row.items() if not _missing(v)}
               for row in firsts[settings].to_dict("records")]
    return Table(val_acc, seconds, configs, dict(frame.attrs))


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def load_table(path: str | Path = TABLE) -> Table:
    """The table saved at ``path``; ``TableError`` naming the file where it cannot be read or replayed."""
    try:
        frame = pd.read_parquet(path)
    except FileNotFoundError:
        raise TableError(f"{path}: no such table; {REBUILD}") from None
    except Exception as e:  # a cut or corrupted file: pyarrow's own words
        raise TableError(f"{path} cannot be read as Parquet ({type(e).__name__}: {e}); {REBUILD}") from None
    try:
        return table_from(frame)
    except TableError as e:
        raise TableError(f"{path}: {e}") from None


@dataclass(frozen=True)
class Asha:
    """The rung rule as the search applies it (``search.engine.scheduler.Rungs``); ``None`` factor: no early stopping."""

    reduction_factor: float | None = 3
    grace_period: int = 1
    min_results: int | None = None  # None: ceil(reduction_factor), the search's default

    def rungs(self, max_t: int):
        from search.engine.scheduler import Rungs

        if self.reduction_factor is None:
            return None
        return Rungs(max_t, self.grace_period, self.reduction_factor, self.min_results,
                     exempt=lambda config: config["config_id"] == 0)


@dataclass
class Replay:
    """One replayed search: the configurations it ran, each one's last epoch, and its curve."""

    trials: list[int]  # table rows, in the order the trials started
    reached: dict[int, int]  # trial index -> the last epoch it trained
    curve: list[float]  # best validation accuracy after each epoch trained, in the order they ended
    seconds: list[float]  # simulated wall clock at each of those epochs

    def regret(self, best: float, budget_epochs: int) -> np.ndarray:
        """Regret after epochs 1..budget (a search that ended sooner keeps its last value), as the live benchmark
        computes it."""
        from search_quality import regret_by_epoch

        return regret_by_epoch({"curve": self.curve}, best, budget_epochs)


class _Trial:
    """What ``Rungs`` reads of a Tune trial: its id, and whether it is the default (configuration 0)."""

    def __init__(self, trial_id: str, config_id: int) -> None:
        self.trial_id, self.config = trial_id, {"config_id": config_id}


Pick = Callable[[], int]  # the next configuration to start (its table row)
Told = Callable[[int, int, list[float], bool], None]  # (trial index, row, its epochs' val_acc, whether it finished)


def replay(table: Table, pick: Pick, budget_epochs: int, workers: int, asha: Asha, max_trials: int | None = None,
           told: Told | None = None) -> Replay:
    """A search of ``workers`` trials at once on ``table``'s curves: trials started with ``pick()`` (whose first
    answer is the default, row 0), their epochs ended in simulated time and judged by ``asha``'s rungs as they end; the
    search ends once ``budget_epochs`` epochs were trained (``--epoch-budget``) or ``max_trials`` trials ended.
    ``told`` hears each trial's end (what a sampler learns)."""
    from ray.tune.schedulers import TrialScheduler

    max_t = table.max_epochs
    rungs = asha.rungs(max_t)
    events: list[tuple[float, int, int]] = []  # (time the epoch ends, trial index, epoch)
    trials: list[int] = []
    reached: dict[int, int] = {}
    curve: list[float] = []
    clock: list[float] = []

    def start(now: float) -> None:
        if max_trials is not None and len(trials) >= max_trials:
            return
        row = pick()
        if not trials and row != 0:
            raise ValueError("a replay's first trial is the default, the table's configuration 0")
        trials.append(row)
        heapq.heappush(events, (now + table.seconds[row, 0], len(trials) - 1, 1))

    for _ in range(workers):
        start(0.0)
    while events and len(curve) < budget_epochs:
        now, index, epoch = heapq.heappop(events)
        row = trials[index]
        value = float(table.val_acc[row, epoch - 1])
        reached[index] = epoch
        curve.append(max(value, curve[-1]) if curve else value)
        clock.append(now)
        result = {"epoch": epoch, "val_acc": value}
        if rungs is None:
            decision = TrialScheduler.STOP if epoch >= max_t else TrialScheduler.CONTINUE
        else:
            decision = rungs.on_trial_result(None, _Trial(f"t{index}", row), result)
        if decision == TrialScheduler.CONTINUE:
            heapq.heappush(events, (now + table.seconds[row, epoch], index, epoch + 1))
            continue
        if rungs is not None:
            rungs.on_trial_complete(None, _Trial(f"t{index}", row), result)
        if told is not None:
            told(index, row, table.val_acc[row, :epoch].tolist(), epoch >= max_t)
        start(now)
    return Replay(trials, reached, curve, clock)


def random_picks(table: Table, rng: np.random.Generator) -> Pick:
    """Random search over the table: the default first, then each draw any of configurations 1..N-1, with
    replacement (a finite pool stands for the space; a configuration drawn twice trains as it did the first time)."""
    first = [0]
    return lambda: first.pop() if first else int(rng.integers(1, len(table.configs)))


class TpePicks:
    """The search's TPE (``search.engine.studies.make_sampler``: multivariate, grouped, constant liar, its start-up
    trials sized to the budget and workers) over the table: the default enqueued first as every study does, then
    each suggestion of the model's space (``plan_space``) taken to the nearest recorded configuration (numbers on
    their distribution's scale, log where the space is, as shares of its range; a category or a setting present in
    one and absent in the other counts 1). Each trial's epochs are reported to the study as the live search does,
    and its end told: complete at the last epoch, pruned where ASHA stopped it (``told``)."""

    def __init__(self, table: Table, plan, num_samples: int, seed: int, workers: int) -> None:
        import optuna

        from models.config import config_to_params
        from search.engine.studies import make_sampler

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.table, self.plan, self.asked = table, plan, []
        self.study = optuna.create_study(direction="maximize", sampler=make_sampler("tpe", num_samples, seed, workers))
        default = {k: v for k, v in table.configs[0].items() if k not in ("model", "epochs", "restarts", "seed")}
        self.study.enqueue_trial(config_to_params(default), skip_if_exists=False)
        self._scales: dict[str, tuple[str, float, float]] | None = None

    def pick(self) -> int:
        from models.config import config_key, params_to_config
        from search.command.space import plan_space

        trial = self.study.ask()
        config = {**params_to_config(trial.params), **plan_space(self.plan, trial)}
        if self._scales is None:
            self._scales = {config_key(name): _scale(d) for name, d in trial.distributions.items()}
        row = 0 if not self.asked else self.nearest(config)
        self.asked.append(trial)
        return row

    def nearest(self, config: dict[str, Any]) -> int:
        """The recorded configuration (1..N-1) closest to ``config``."""
        distance = np.zeros(len(self.table.configs) - 1)
        for key, (kind, low, high) in (self._scales or {}).items():
            mine = config.get(key)
            for i, other in enumerate(self.table.configs[1:]):
                theirs = other.get(key)
                if mine is None or theirs is None:
                    distance[i] += float((mine is None) != (theirs is None))
                elif kind == "category":
                    distance[i] += float(mine != theirs)
                else:
                    f = math.log if kind == "log" else float
                    distance[i] += ((f(mine) - f(theirs)) / (f(high) - f(low) or 1.0)) ** 2
        return 1 + int(np.argmin(distance))

    def told(self, index: int, row: int, values: list[float], finished: bool) -> None:
        from optuna.trial import TrialState

        trial = self.asked[index]
        for epoch, value in enumerate(values, 1):
            trial.report(value, epoch)
        self.study.tell(trial, values[-1] if finished else None, state=TrialState.COMPLETE if finished else TrialState.PRUNED)


def _scale(distribution) -> tuple[str, float, float]:
    """How a setting's distance is measured: ("category", 0, 0), or ("log"/"linear", low, high)."""
    from optuna.distributions import CategoricalDistribution

    if isinstance(distribution, CategoricalDistribution):
        return "category", 0.0, 0.0
    return ("log" if distribution.log else "linear"), float(distribution.low), float(distribution.high)


ARMS = {"random": ("random", False), "random+asha": ("random", True), "tpe": ("tpe", False), "tpe+asha": ("tpe", True)}


@dataclass(frozen=True)
class Cell:
    """One point of the map: an arm at a budget (in whole trials of ``max_epochs``), workers and ASHA setting."""

    arm: str
    budget: int
    workers: int
    reduction_factor: float
    grace_period: int


def table_plan(table: Table):
    """The search's plan for the table's data and model (its space and default), from the table's ``attrs``."""
    import models
    from learning_curves import search_plan

    a = table.attrs
    shape = models.DataShape(*a["shape"], a["train_images"])
    return search_plan(a["model"], table.max_epochs, a["dataset"], a["train_images"], shape, a["val_images"],
                       a["full_train_images"])


def run_cell(table: Table, cell: Cell, replays: int, plan=None) -> np.ndarray:
    """``replays`` replays of ``cell``, the r-th seeded r (so arms are paired by seed): each one's regret at the end
    of the budget and its regret area (mean regret over the budget's epochs), as a (replays, 2) array."""
    sampler, early = ARMS[cell.arm]
    budget_epochs = cell.budget * table.max_epochs
    asha = Asha(cell.reduction_factor, cell.grace_period) if early else Asha(None)
    # as many trials as the live benchmark asks for (benchmarks/search_quality.py trials_for): the budget ends it
    trials = budget_epochs // (cell.grace_period if early else table.max_epochs)
    out = np.empty((replays, 2))
    for r in range(replays):
        if sampler == "tpe":
            tpe = TpePicks(table, plan, trials, seed=r, workers=cell.workers)
            run = replay(table, tpe.pick, budget_epochs, cell.workers, asha, max_trials=trials, told=tpe.told)
        else:
            run = replay(table, random_picks(table, np.random.default_rng(r)), budget_epochs, cell.workers, asha,
                         max_trials=trials)
        regret = run.regret(table.best, budget_epochs)
        out[r] = regret[-1], regret.mean()
    return out


def _cell_job(job: tuple[str, Cell, int]) -> tuple[Cell, np.ndarray]:
    path, cell, replays = job
    table = load_table(path)
    return cell, run_cell(table, cell, replays, table_plan(table) if ARMS[cell.arm][0] == "tpe" else None)


def summarize_cells(results: list[tuple[Cell, np.ndarray]], seed: int = 0) -> list[dict[str, Any]]:
    """Per cell, the IQM of the final regret and of the regret area over the replays with bootstrap 95% intervals;
    for an ASHA arm also the paired difference from the same sampler without ASHA (negative: ASHA pays)."""
    from search_quality import iqm_interval

    rng = np.random.default_rng(seed)
    by = {c: r for c, r in results}
    rows = []
    for cell, regrets in results:
        (final, area), lo, hi = iqm_interval(regrets, rng)
        row = {**cell.__dict__, "replays": len(regrets), "final_regret_iqm": final, "final_regret_ci": [lo[0], hi[0]],
               "area_iqm": area, "area_ci": [lo[1], hi[1]]}
        sampler, early = ARMS[cell.arm]
        plain = next((r for c, r in by.items() if c.arm == sampler and (c.budget, c.workers) == (cell.budget, cell.workers)
                      and not ARMS[c.arm][1]), None)
        if early and plain is not None and len(plain) == len(regrets):
            (d_final, d_area), dlo, dhi = iqm_interval(regrets - plain, rng)
            row.update(asha_gain_final=d_final, asha_gain_final_ci=[dlo[0], dhi[0]], asha_gain_area=d_area,
                       asha_gain_area_ci=[dlo[1], dhi[1]])
        rows.append({k: (round(float(v), 6) if isinstance(v, (float, np.floating)) else
                         [round(float(x), 6) for x in v] if isinstance(v, list) else v) for k, v in row.items()})
    return rows


def check_run(folder: Path) -> dict[str, Any]:
    """A live search's rung decisions (a ``benchmarks/search_quality.py`` run of the CNN with ASHA) replayed: its
    epochs handed to the rung rule in the order they were reported (``reported_at``), with the search's settings
    (``command.json``, which names ``--grace-period``: the benchmark passes it). Returns the trials, those the replay stopped at
    the same epoch or let finish as the search did, and every difference, each with what explains it if anything
    does (the search's ``--epoch-budget`` ending the trials that were running)."""
    from ray.tune.schedulers import TrialScheduler

    from search.command.parser import build_parser
    from search.command.settings import per_model
    from search_quality import default_trial

    args = build_parser().parse_args(json.loads((folder / "command.json").read_text())["argv"])
    trials = pd.read_parquet(folder / "trials.parquet").set_index("trial_id")
    epochs = pd.read_parquet(folder / "epochs.parquet").sort_values("reported_at", kind="stable")
    max_t = int(trials["config.epochs"].iloc[0])
    restarts = str(trials["config.restarts"].iloc[0] or "")  # the first rung, in runs from before 2026-12-08
    grace = per_model(args.grace_period, "--grace-period", ["cnn"]).get("cnn") or (
        int(restarts.split(",")[0]) if restarts else max_t)
    default = default_trial(folder)
    rungs = Asha(args.reduction_factor, grace).rungs(max_t)
    stopped: dict[str, int] = {}
    for row in epochs.itertuples():
        if row.trial_id in stopped:
            continue
        trial, result = _Trial(row.trial_id, 0 if row.trial_id == default else 1), {"epoch": int(row.epoch), "val_acc": float(row.val_acc)}
        if rungs.on_trial_result(None, trial, result) == TrialScheduler.STOP:
            stopped[row.trial_id] = int(row.epoch)
            rungs.on_trial_complete(None, trial, result)
    live = epochs.groupby("trial_id")["epoch"].max().astype(int)
    spent_all = args.epoch_budget is not None and int(live.sum()) >= args.epoch_budget
    same, differences = 0, []
    for trial_id, last in live.items():
        replayed = stopped.get(trial_id, max_t)
        if replayed == last:
            same += 1
        elif last < replayed and spent_all:
            differences.append(f"{trial_id}: ended at epoch {last} by --epoch-budget {args.epoch_budget} (explained)")
        else:
            differences.append(f"{trial_id}: the search ended it at epoch {last}, the replay at {replayed}")
    return {"run": folder.name, "trials": len(live), "same": same, "differences": differences,
            "unexplained": [d for d in differences if not d.endswith("(explained)")]}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    check = sub.add_parser("check", help="replay live searches' rung decisions")
    check.add_argument("folders", nargs="+", type=Path)
    grid = sub.add_parser("map", help="regret over budgets, workers and ASHA settings")
    grid.add_argument("--table", type=Path, default=TABLE)
    grid.add_argument("--replays", type=int, default=1000)
    grid.add_argument("--budgets", type=int, nargs="+", default=[5, 10, 20, 50, 100])
    grid.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    grid.add_argument("--reduction-factors", type=float, nargs="+", default=[3.0])
    grid.add_argument("--grace-periods", type=int, nargs="+", default=[1])
    grid.add_argument("--arms", nargs="+", choices=list(ARMS), default=["random", "random+asha"])
    grid.add_argument("--processes", type=int, default=2)
    grid.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "asha_replay.json")
    args = p.parse_args()
    if args.command == "map":
        return write_map(args)
    if args.command == "check":
        results = [check_run(folder) for folder in args.folders]
        for r in results:
            print(f"{r['run']}: {r['same']} of {r['trials']} trials ended where the replay ends them"
                  + "".join(f"\n  {d}" for d in r["differences"]))
        return 1 if any(r["unexplained"] for r in results) else 0
    return 0


def plot_map(rows: list[dict[str, Any]], path: Path) -> None:
    """One heat map per reduction factor: ASHA's paired gain in regret area (points; negative: ASHA pays) over
    budgets (rows) and workers (columns), a star where its 95% interval excludes 0."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    asha = [r for r in rows if "asha_gain_area" in r and r["arm"] == "random+asha"]
    factors = sorted({r["reduction_factor"] for r in asha})
    budgets, workers = sorted({r["budget"] for r in asha}), sorted({r["workers"] for r in asha})
    fig, axes = plt.subplots(1, len(factors), figsize=(4.2 * len(factors), 3.6), squeeze=False)
    for ax, rf in zip(axes[0], factors):
        grid = np.full((len(budgets), len(workers)), np.nan)
        for r in asha:
            if r["reduction_factor"] == rf and r["grace_period"] == min(x["grace_period"] for x in asha):
                i, j = budgets.index(r["budget"]), workers.index(r["workers"])
                grid[i, j] = 100 * r["asha_gain_area"]
                lo, hi = r["asha_gain_area_ci"]
                ax.text(j, i, f"{grid[i, j]:+.2f}" + ("*" if lo > 0 or hi < 0 else ""), ha="center", va="center", fontsize=7)
        ax.imshow(grid, cmap="RdBu_r", vmin=-0.5, vmax=0.5, aspect="auto")
        ax.set(xticks=range(len(workers)), xticklabels=workers, yticks=range(len(budgets)), yticklabels=budgets,
               xlabel="workers", ylabel="budget (whole trials)", title=f"reduction factor {rf:g}")
    fig.suptitle("ASHA's gain in regret area over random search alone (points; blue: ASHA pays)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_map(args: argparse.Namespace) -> int:
    import multiprocessing
    import time

    from imagesets.atomic import write_text
    from machine import describe

    table = load_table(args.table)  # refused here, before any work, if it cannot be replayed
    cells = [Cell(arm, b, w, rf, g) for arm in args.arms for b in args.budgets for w in args.workers
             for rf in (args.reduction_factors if ARMS[arm][1] else [0.0])
             for g in (args.grace_periods if ARMS[arm][1] else [0])]
    start = time.monotonic()
    with multiprocessing.get_context("spawn").Pool(args.processes) as pool:
        results = pool.map(_cell_job, [(str(args.table), c, args.replays) for c in cells], chunksize=1)
    rows = summarize_cells(results)
    for row in rows:
        gain = f", ASHA {row['asha_gain_area']:+.4f} area" if "asha_gain_area" in row else ""
        print(f"{row['arm']:12s} budget {row['budget']:3d} workers {row['workers']:2d} rf {row['reduction_factor']:g} "
              f"grace {row['grace_period']}: final regret {row['final_regret_iqm']:.4f}, area {row['area_iqm']:.4f}{gain}")
    write_text(args.out, json.dumps({
        "table": str(args.table.relative_to(ROOT) if args.table.is_relative_to(ROOT) else args.table),
        "table_attrs": table.attrs, "table_best": table.best, "configs": len(table.configs),
        "machine": describe(), "seconds": round(time.monotonic() - start, 1),
        "command": "python benchmarks/asha_replay.py " + " ".join(sys.argv[1:]), "cells": rows}, indent=1))
    plot_map(rows, args.out.with_suffix(".png"))
    print(f"wrote {args.out} and its figure in {time.monotonic() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Whether guided search finds better configurations sooner than random search (a benchmark, not a test).

    python benchmarks/search_quality.py [--seeds 0 1 2 3 4 5 6 7] [--budget 135] [--max-epochs 9]
        [--grace-period 1] [--reduction-factor 3] [--dataset fashion_mnist] [--train-size 5000]
        [--cpus 2] [--gpus 0] [--arms ...] [--out FILE] [--keep DIR]
    python benchmarks/search_quality.py --report FILE      # the analysis again, from a saved run

Four arms search the CNN's space through ``python -m search.run``, each at every seed (paired: the
same seed gives every arm the same data subset and the same trial seeds):

  random       Optuna's random sampler, every trial trained its whole --max-epochs
  random+asha  random sampler, ASHA with rungs at --grace-period x --reduction-factor^k epochs
  tpe          the search's TPE sampler (multivariate, grouped, constant liar), whole trials
  tpe+asha     the search's default pairing: TPE and ASHA

Every arm spends --budget training epochs (the search's --epoch-budget ends it there): the whole-trial
arms run --budget / --max-epochs trials, the ASHA arms as many as the budget lets them start. Every
study tries the model's default configuration first, as the search does.

Epochs are counted in the order they ended (``reported_at`` in epochs.parquet), across the concurrent
trials; a search's best-so-far after N epochs is the best validation accuracy among its first N.
Regret is the best validation accuracy pooled over every run of every arm minus that best-so-far.
Reported per arm: median regret (and interquartile range over the seeds) against epochs and against
training seconds, the regret area (mean regret over the budget's epochs), a paired one-sided Wilcoxon
signed-rank test of each arm's area against random search's, the test accuracy of each search's
winner (tested once by the search itself), and, from random search's whole trials, the Spearman rank
correlation between each rung's validation accuracy and the final one (can ASHA judge early?).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from machine import describe  # benchmarks/machine.py: a script's folder is on its path

ROOT = Path(__file__).resolve().parents[1]
ARMS = {
    # name: (sampler, ASHA stops trials early)
    "random": ("random", False),
    "random+asha": ("random", True),
    "tpe": ("tpe", False),
    "tpe+asha": ("tpe", True),
}
REFERENCE = "random"


def rungs(max_epochs: int, grace: int, factor: float) -> list[int]:
    """ASHA's rungs: grace, grace*factor, ... below max_epochs, then max_epochs."""
    out, r = [], grace
    while r < max_epochs:
        out.append(int(r))
        r = math.ceil(r * factor)
    return out + [max_epochs]


def trials_for(arm: str, args: argparse.Namespace) -> int:
    """Whole trials fill the budget exactly; with ASHA, as many as could fit (each trains at least its
    first rung): the search's --epoch-budget ends it when the budget is spent."""
    if ARMS[arm][1]:
        return args.budget // args.grace_period
    return args.budget // args.max_epochs


def search_flags(arm: str, args: argparse.Namespace, seed: int, storage: Path) -> list[str]:
    sampler, early_stop = ARMS[arm]
    grace = args.grace_period if early_stop else args.max_epochs  # a first rung at the whole budget stops nothing
    return ["--model", "cnn", "--gpus", str(args.gpus), "--cpus", str(args.cpus), "--dataset", args.dataset,
            "--train-size", str(args.train_size), "--max-epochs", str(args.max_epochs),
            "--grace-period", str(grace), "--reduction-factor", str(args.reduction_factor),
            "--num-samples", str(trials_for(arm, args)), "--epoch-budget", str(args.budget), "--seed", str(seed),
            "--sampler", sampler,
            "--storage-path", str(storage), "--name", f"{arm}-seed{seed}", "--no-dashboard", "--verbose", "0"]


def curves(epochs: pd.DataFrame) -> tuple[list[float], list[float]]:
    """Best validation accuracy after each epoch the search trained, in the order the epochs ended,
    and the training seconds spent by then (every trial's epoch times added up)."""
    ordered = epochs.sort_values("reported_at")
    return (ordered["val_acc"].astype(float).cummax().tolist(),
            ordered["epoch_time_s"].astype(float).cumsum().tolist())


def run_one(arm: str, args: argparse.Namespace, seed: int, storage: Path) -> dict:
    """One search, and what its exports say."""
    flags = search_flags(arm, args, seed, storage)
    start = time.monotonic()
    # PYTHONPATH: the searches run this checkout's code even if the project is installed elsewhere.
    proc = subprocess.run([sys.executable, "-m", "search.run", *flags], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT), "RAY_USAGE_STATS_ENABLED": "0"})
    wall = time.monotonic() - start
    if proc.returncode != 0:
        raise SystemExit(f"{arm} seed {seed} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return dict(read_run(storage / f"{arm}-seed{seed}", arm, seed, args.max_epochs),
                command="python -m search.run " + " ".join(flags), wall_s=round(wall, 1))


def read_run(folder: Path, arm: str, seed: int, max_epochs: int) -> dict:
    """What a finished search's exports say, as the analysis reads it."""
    epochs = pd.read_parquet(folder / "epochs.parquet")
    trials = pd.read_parquet(folder / "trials.parquet")
    finalists = pd.read_parquet(folder / "finalists.parquet")
    best, seconds = curves(epochs)
    full = epochs.pivot_table(index="trial_id", columns="epoch", values="val_acc")
    return dict(arm=arm, seed=seed,
                trials=len(trials), epochs_trained=len(best), stopped_early=int((trials["epochs"] < max_epochs).sum()),
                test_acc=float(finalists["test_acc"].iloc[0]), winner_val_acc=float(finalists["best_val_acc"].iloc[0]),
                curve=best, seconds=seconds,
                # every trial's validation accuracy at each epoch it reached: the rank correlations' data
                per_trial={str(t): {str(int(e)): float(v) for e, v in row.dropna().items()} for t, row in full.iterrows()},
                schedules=dict(zip(trials["trial_id"].astype(str), trials["config.schedule"].astype(str))))


def regret_by_epoch(run: dict, pooled_best: float, budget: int) -> np.ndarray:
    """Regret after epochs 1..budget (a search that ended sooner keeps its last value)."""
    curve = np.asarray(run["curve"][:budget], dtype=float)
    curve = np.concatenate([curve, np.full(budget - len(curve), curve[-1])])
    return pooled_best - curve


def regret_by_seconds(run: dict, pooled_best: float, grid: np.ndarray) -> np.ndarray:
    """Regret at each training-seconds mark of ``grid`` (before the first epoch ends: the pooled best)."""
    best = np.asarray(run["curve"], dtype=float)
    spent = np.asarray(run["seconds"], dtype=float)
    done = np.searchsorted(spent, grid, side="right")  # epochs finished by each mark
    return np.where(done > 0, pooled_best - best[np.maximum(done - 1, 0)], pooled_best)


def quartiles(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return tuple(np.percentile(rows, q, axis=0) for q in (25, 50, 75))


def rank_correlations(runs: list[dict], points: list[int]) -> list[dict]:
    """Spearman's rho between the validation accuracy at each rung and at the last epoch, over the
    whole trials of random search (every one trained to the end, so none is missing by selection):
    for all of them, and for each learning-rate schedule (a one-cycle schedule peaks late, so its early
    epochs may rank trials differently from its last)."""
    from scipy.stats import spearmanr

    last = str(points[-1])
    trials = [(r.get("schedules", {}).get(tid, "?"), t) for r in runs if r["arm"] == REFERENCE
              for tid, t in r["per_trial"].items() if last in t]
    groups = {"all": [t for _, t in trials]}
    for schedule in sorted({s for s, _ in trials}):
        groups[schedule] = [t for s, t in trials if s == schedule]
    rows = []
    for group, members in groups.items():
        for rung in points[:-1]:
            if len(members) < 3:
                continue
            rho, p = spearmanr([t[str(rung)] for t in members], [t[last] for t in members])
            rows.append(dict(rung=rung, final_epoch=int(last), schedule=group, trials=len(members),
                             spearman=float(rho), p=float(p)))
    return rows


def summarize(runs: list[dict], budget: int) -> dict:
    """Regret curves, areas, paired tests and test accuracies per arm."""
    from scipy.stats import wilcoxon

    pooled_best = max(max(r["curve"]) for r in runs)
    arms = [a for a in ARMS if any(r["arm"] == a for r in runs)]
    seeds = sorted({r["seed"] for r in runs})
    by = {(r["arm"], r["seed"]): r for r in runs}
    reference_seconds = np.median([by[REFERENCE, s]["seconds"][min(budget, len(by[REFERENCE, s]["seconds"])) - 1]
                                   for s in seeds])
    grid = np.linspace(0, reference_seconds, 200)
    half = budget // 2
    table, curves_out = [], {}
    areas = {a: np.array([regret_by_epoch(by[a, s], pooled_best, budget).mean() for s in seeds]) for a in arms}
    for arm in arms:
        epochs = np.stack([regret_by_epoch(by[arm, s], pooled_best, budget) for s in seeds])
        secs = np.stack([regret_by_seconds(by[arm, s], pooled_best, grid) for s in seeds])
        q_e, q_s = quartiles(epochs), quartiles(secs)
        curves_out[arm] = dict(epochs=[q.tolist() for q in q_e], seconds=[q.tolist() for q in q_s])
        row = dict(arm=arm, seeds=len(seeds),
                   regret_half_median=float(np.median(epochs[:, half - 1])),
                   regret_final_median=float(np.median(epochs[:, -1])),
                   regret_final_iqr=[float(np.percentile(epochs[:, -1], 25)), float(np.percentile(epochs[:, -1], 75))],
                   area_median=float(np.median(areas[arm])),
                   area_seconds_median=float(np.median(secs.mean(axis=1))),
                   test_acc_median=float(np.median([by[arm, s]["test_acc"] for s in seeds])),
                   test_acc=[by[arm, s]["test_acc"] for s in seeds],
                   trials=int(np.median([by[arm, s]["trials"] for s in seeds])),
                   stopped_early=int(np.median([by[arm, s]["stopped_early"] for s in seeds])))
        if arm != REFERENCE and len(seeds) > 1:
            diff = areas[arm] - areas[REFERENCE]
            row["area_vs_random_p"] = float(wilcoxon(diff, alternative="less").pvalue) if np.any(diff) else 1.0
            row["area_lower_than_random"] = int((diff < 0).sum())
        table.append(row)
    return dict(pooled_best=pooled_best, budget=budget, half=half, seconds_horizon=float(reference_seconds),
                table=table, curves=curves_out, seconds_grid=grid.tolist())


def verdict(summary: dict) -> str:
    """The issue's goal, checked: TPE+ASHA at half the budget vs random at the whole, and the area test."""
    rows = {r["arm"]: r for r in summary["table"]}
    if "tpe+asha" not in rows or REFERENCE not in rows:
        return "goal not checked (needs the tpe+asha and random arms)"
    mine, ref = rows["tpe+asha"], rows[REFERENCE]
    half_ok = mine["regret_half_median"] <= ref["regret_final_median"]
    area_ok = mine.get("area_vs_random_p", 1.0) < 0.05
    return (f"tpe+asha median regret at {summary['half']} epochs {100 * mine['regret_half_median']:.2f} pt vs random's at "
            f"{summary['budget']} {100 * ref['regret_final_median']:.2f} pt: {'met' if half_ok else 'NOT met'}; "
            f"regret area lower than random's at {mine.get('area_lower_than_random', 0)} of {mine['seeds']} seeds, "
            f"Wilcoxon p = {mine.get('area_vs_random_p', float('nan')):.3g}: {'met' if area_ok else 'NOT met'} (goal p < 0.05)")


def markdown(result: dict) -> str:
    s = result["summary"]
    lines = [f"| arm | trials (stopped early) | median regret at {s['half']} epochs | median regret at {s['budget']} "
             "epochs (IQR) | regret area, epochs (median) | regret area, seconds (median) | p, area < random's | "
             "winner's test acc (median) |", "|---|---|---|---|---|---|---|---|"]
    for r in s["table"]:
        p = "" if "area_vs_random_p" not in r else f"{r['area_vs_random_p']:.3g} ({r['area_lower_than_random']}/{r['seeds']})"
        lo, hi = r["regret_final_iqr"]
        lines.append(f"| {r['arm']} | {r['trials']} ({r['stopped_early']}) | {100 * r['regret_half_median']:.2f} | "
                     f"{100 * r['regret_final_median']:.2f} ({100 * lo:.2f}-{100 * hi:.2f}) | "
                     f"{100 * r['area_median']:.2f} | {100 * r['area_seconds_median']:.2f} | {p} | "
                     f"{100 * r['test_acc_median']:.2f} |")
    lines.append("")
    lines.append("| rung (epoch) | trials' schedule | Spearman rho with the epoch-{} accuracy | trials |".format(
        result["max_epochs"]))
    lines.append("|---|---|---|---|")
    for c in result["rank_correlations"]:
        lines.append(f"| {c['rung']} | {c.get('schedule', 'all')} | {c['spearman']:.2f} | {c['trials']} |")
    lines.append("")
    lines.append(verdict(s))
    return "\n".join(lines)


def plot(result: dict, path: Path) -> None:
    """Median regret with its interquartile band, against epochs and against training seconds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = result["summary"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    x_epochs = np.arange(1, s["budget"] + 1)
    for arm, c in s["curves"].items():
        for ax, x, (lo, mid, hi) in ((axes[0], x_epochs, c["epochs"]), (axes[1], s["seconds_grid"], c["seconds"])):
            line, = ax.plot(x, 100 * np.asarray(mid), label=arm)
            ax.fill_between(x, 100 * np.asarray(lo), 100 * np.asarray(hi), alpha=0.15, color=line.get_color())
    axes[0].set_xlabel("training epochs spent")
    axes[1].set_xlabel("training seconds spent")
    for ax in axes:
        ax.set_ylabel("regret (points of val accuracy)")
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.suptitle(f"CNN on {result['dataset']} ({result['train_size']} training images), {len(result['seeds'])} seeds: "
                 "median and interquartile range")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def settings(args: argparse.Namespace) -> dict:
    """What the benchmark ran with, and on what."""
    import torch

    return dict(budget=args.budget, max_epochs=args.max_epochs, grace_period=args.grace_period,
                reduction_factor=args.reduction_factor, rungs=rungs(args.max_epochs, args.grace_period, args.reduction_factor),
                seeds=args.seeds, dataset=args.dataset, train_size=args.train_size, cpus=args.cpus, gpus=args.gpus,
                machine=describe(),
                torch=torch.__version__, device=torch.cuda.get_device_name(0) if args.gpus else "cpu")


def kept_runs(args: argparse.Namespace) -> list[dict]:
    """The runs of every seed of ``args.seeds`` whose every arm left its exports in ``args.from_folders``."""
    done = [seed for seed in args.seeds
            if all((args.from_folders / f"{arm}-seed{seed}" / "finalists.parquet").exists() for arm in args.arms)]
    args.seeds = done
    return [read_run(args.from_folders / f"{arm}-seed{seed}", arm, seed, args.max_epochs)
            for seed in done for arm in args.arms]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--budget", type=int, default=135, help="training epochs each search may spend")
    p.add_argument("--max-epochs", type=int, default=9, help="a trial's full budget")
    p.add_argument("--grace-period", type=int, default=1, help="ASHA's first rung")
    p.add_argument("--reduction-factor", type=float, default=3.0)
    p.add_argument("--seeds", type=int, nargs="+", default=list(range(8)))
    p.add_argument("--dataset", default="fashion_mnist")
    p.add_argument("--train-size", type=int, default=5000, help="training images every trial trains on")
    p.add_argument("--cpus", type=int, default=2)
    p.add_argument("--gpus", type=int, default=0)
    p.add_argument("--arms", nargs="+", choices=list(ARMS), default=list(ARMS))
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "search_quality.json")
    p.add_argument("--keep", type=Path, default=None, help="keep the searches' folders here")
    p.add_argument("--report", type=Path, default=None, help="only analyse this saved result file again")
    p.add_argument("--from-folders", type=Path, default=None,
                   help="only analyse the searches kept in this folder (--keep of an interrupted run): the seeds "
                        "whose every arm finished")
    args = p.parse_args()
    if args.report:
        result = json.loads(args.report.read_text())
    elif args.from_folders:
        result = dict(settings(args), runs=kept_runs(args), total_s=None)
    else:
        if args.budget % args.max_epochs:
            p.error("--budget must be a multiple of --max-epochs (the whole-trial arms train whole trials)")
        if REFERENCE not in args.arms:
            p.error("random search is the reference: keep it in --arms")
        storage = args.keep or Path(tempfile.mkdtemp(prefix="search-quality-"))
        runs, started = [], time.time()
        for seed in args.seeds:
            for arm in args.arms:
                run = run_one(arm, args, seed, storage)
                print(f"{arm:11s} seed {seed}: best {100 * max(run['curve'][:args.budget]):.2f}% within {args.budget} "
                      f"epochs ({run['trials']} trials, {run['epochs_trained']} epochs, {run['wall_s']} s)", flush=True)
                runs.append(run)
        result = dict(settings(args), total_s=round(time.time() - started), runs=runs)
    result["summary"] = summarize(result["runs"], result["budget"])
    result["rank_correlations"] = rank_correlations(result["runs"], result["rungs"])
    out = args.report or args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    plot(result, out.with_suffix(".png"))
    print(markdown(result))
    print(f"written: {out} and {out.with_suffix('.png')}")


if __name__ == "__main__":
    main()

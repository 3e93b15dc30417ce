"""Whether guided search finds better configurations sooner than random search (a benchmark, not a test).

    python benchmarks/search_quality.py [--seeds 0 1 ... 11] [--budget 135] [--max-epochs 9]
        [--grace-period 1] [--reduction-factor 3] [--dataset fashion_mnist] [--train-size 5000]
        [--cpus 2] [--gpus 0] [--arms ...] [--out FILE] [--keep DIR]
    python benchmarks/search_quality.py --report FILE      # the analysis again, from a saved run

Three arms (four with ``--arms ... random+asha``) search the CNN's space through ``python -m search.run``, each
at every seed (paired: the same seed gives every arm the same data subset and the same trial seeds):

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
Reported per arm: the interquartile mean (IQM) of regret over the seeds with a bootstrap 95% interval (seeds
resampled), against epochs and against training seconds; the regret area (mean regret over the budget's
epochs); paired two-sided Wilcoxon signed-rank tests of the areas (each arm against random search, TPE + ASHA
against TPE), Holm-corrected over that family; the gain over the default configuration (every arm trains it
first and in full: its result at a seed is the median over the arms) and the seeds at which an arm ended below
it; the test accuracy of each search's winner (tested once by the search itself); where each arm's epochs went
(to trials that reached each rung, or the end); and, from random search's whole trials, the Spearman rank
correlation between each rung's validation accuracy and the final one, per schedule (can ASHA judge early?).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from machine import describe  # benchmarks/machine.py: a script's folder is on its path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the model registry (no torch) names the default configuration
ARMS = {
    # name: (sampler, ASHA stops trials early)
    "random": ("random", False),
    "random+asha": ("random", True),
    "tpe": ("tpe", False),
    "tpe+asha": ("tpe", True),
}
DEFAULT_ARMS = ["random", "tpe", "tpe+asha"]
REFERENCE = "random"
COMPARISONS = [(arm, REFERENCE) for arm in ARMS if arm != REFERENCE] + [("tpe+asha", "tpe")]  # Holm's family
BOOTSTRAP = 2000


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
    """One search, and what its exports say. A search ``storage`` already holds finished (a ``--keep`` folder of
    an interrupted benchmark) is read, not run again; one it holds unfinished is removed and run anew."""
    folder = storage / f"{arm}-seed{seed}"
    if (folder / "finalists.parquet").is_file():
        kept = folder / "benchmark_run.json"
        return dict(read_run(folder, arm, seed, args.max_epochs), **(json.loads(kept.read_text()) if kept.is_file() else {}))
    shutil.rmtree(folder, ignore_errors=True)
    flags = search_flags(arm, args, seed, storage)
    start = time.monotonic()
    # PYTHONPATH: the searches run this checkout's code even if the project is installed elsewhere.
    proc = subprocess.run([sys.executable, "-m", "search.run", *flags], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT), "RAY_USAGE_STATS_ENABLED": "0"})
    wall = time.monotonic() - start
    if proc.returncode != 0:
        raise SystemExit(f"{arm} seed {seed} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    said = {"command": "python -m search.run " + " ".join(flags), "wall_s": round(wall, 1)}
    (folder / "benchmark_run.json").write_text(json.dumps(said))
    return dict(read_run(folder, arm, seed, args.max_epochs), **said)


def read_run(folder: Path, arm: str, seed: int, max_epochs: int) -> dict:
    """What a finished search's exports say, as the analysis reads it."""
    epochs = pd.read_parquet(folder / "epochs.parquet")
    trials = pd.read_parquet(folder / "trials.parquet")
    finalists = pd.read_parquet(folder / "finalists.parquet")
    best, seconds = curves(epochs)
    full = epochs.pivot_table(index="trial_id", columns="epoch", values="val_acc")
    default = default_trial(folder)
    reached = full.loc[default].dropna() if default in full.index else pd.Series(dtype=float)
    return dict(arm=arm, seed=seed, default_trial=default, default_final=float(reached[max_epochs]) if max_epochs in reached.index else None,
                trials=len(trials), epochs_trained=len(best), stopped_early=int((trials["epochs"] < max_epochs).sum()),
                test_acc=float(finalists["test_acc"].iloc[0]), winner_val_acc=float(finalists["best_val_acc"].iloc[0]),
                curve=best, seconds=seconds,
                # every trial's validation accuracy at each epoch it reached: the rank correlations' data
                per_trial={str(t): {str(int(e)): float(v) for e, v in row.dropna().items()} for t, row in full.iterrows()},
                schedules=dict(zip(trials["trial_id"].astype(str), trials["config.schedule"].astype(str))))


def default_trial(folder: Path, ignore: tuple[str, ...] = ()) -> str | None:
    """The trial of the search in ``folder`` that trained the CNN's registered default configuration (every
    study's first), made for the search's data as the search makes it, found by its settings (Tune's trial ids
    say nothing of the order); ``ignore``: settings the search pinned otherwise."""
    import models

    data = json.loads((folder / "dataset.json").read_text())
    shape = models.DataShape(data["channels"], data["image_size"], data["num_classes"], data["sizes"]["train"])
    trials = pd.read_parquet(folder / "trials.parquet")
    match = pd.Series(True, index=trials.index)
    for key, value in models.get("cnn").defaults_for(shape).items():
        column = trials.get(f"config.{key}")
        if column is not None and key not in ignore:
            match &= np.isclose(column, value) if isinstance(value, float) else column == value
    found = trials.loc[match, "trial_id"]
    return str(found.iloc[0]) if len(found) else None


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


def iqm(rows: np.ndarray) -> np.ndarray:
    """Interquartile mean over the first axis (the seeds): the mean of the middle half, robust to one odd seed."""
    from scipy.stats import trim_mean

    return trim_mean(rows, 0.25, axis=0)


def iqm_interval(rows: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The IQM over seeds and its bootstrap 95% interval (seeds drawn with replacement, ``BOOTSTRAP`` times)."""
    draws = rng.integers(0, len(rows), size=(BOOTSTRAP, len(rows)))
    boot = np.stack([iqm(rows[d]) for d in draws])
    return iqm(rows), np.percentile(boot, 2.5, axis=0), np.percentile(boot, 97.5, axis=0)


def holm(pvalues: list[float]) -> list[float]:
    """Holm's step-down adjustment: the k-th smallest p times (m - k + 1), kept monotone, at most 1."""
    order = np.argsort(pvalues)
    adjusted, running = [0.0] * len(pvalues), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(pvalues) - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted


def epochs_by_reach(run: dict) -> dict[str, int]:
    """Epochs the search spent on trials by the last epoch they reached (ASHA's cuts show as low rungs)."""
    out: dict[str, int] = {}
    for history in run["per_trial"].values():
        reached = max(int(e) for e in history)
        out[str(reached)] = out.get(str(reached), 0) + reached
    return dict(sorted(out.items(), key=lambda kv: int(kv[0])))


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


def default_results(runs: list[dict]) -> dict[int, float]:
    """The default configuration's full-budget validation accuracy at each seed: the median over the arms
    (each trains it first and in full; concurrency makes the same configuration differ slightly between runs)."""
    values: dict[int, list[float]] = {}
    for r in runs:
        if r.get("default_final") is not None:
            values.setdefault(r["seed"], []).append(r["default_final"])
    return {seed: float(np.median(v)) for seed, v in values.items()}


def default_position(runs: list[dict], max_epochs: int) -> dict:
    """Where the default sits among random search's draws (its whole trials, the default left out): the share
    within 1 point of the default's result at the same seed, the share above it, the median gap. A space whose
    draws almost never come near its default leaves a search little to find."""
    defaults = default_results(runs)
    gaps = [history[str(max_epochs)] - defaults[r["seed"]] for r in runs if r["arm"] == REFERENCE and r["seed"] in defaults
            for trial, history in r["per_trial"].items() if trial != r.get("default_trial") and str(max_epochs) in history]
    gaps = np.asarray(gaps, dtype=float)
    if not len(gaps):
        return {"draws": 0}
    return {"draws": int(len(gaps)), "within_1pt": float((gaps >= -0.01).mean()), "above": float((gaps > 0).mean()),
            "median_gap": float(np.median(gaps)), "quartiles": [float(q) for q in np.percentile(gaps, [25, 75])]}


def paired_tests(areas: dict[str, np.ndarray]) -> list[dict]:
    """Two-sided Wilcoxon signed-rank tests of the paired regret areas, Holm-corrected over the comparisons made."""
    from scipy.stats import wilcoxon

    rows = []
    for arm, other in COMPARISONS:
        if arm in areas and other in areas and len(areas[arm]) > 1:
            diff = areas[arm] - areas[other]
            p = float(wilcoxon(diff, alternative="two-sided").pvalue) if np.any(diff) else 1.0
            rows.append(dict(arm=arm, against=other, lower=int((diff < 0).sum()), higher=int((diff > 0).sum()),
                             median_difference=float(np.median(diff)), p=p))
    for row, adjusted in zip(rows, holm([r["p"] for r in rows])):
        row["p_holm"] = adjusted
    return rows


def summarize(runs: list[dict], budget: int, max_epochs: int | None = None) -> dict:
    """Regret curves (IQM and bootstrap interval), areas, paired tests, gains over the default, test accuracies."""
    rng = np.random.default_rng(0)
    pooled_best = max(max(r["curve"]) for r in runs)
    arms = [a for a in ARMS if any(r["arm"] == a for r in runs)]
    seeds = sorted({r["seed"] for r in runs})
    by = {(r["arm"], r["seed"]): r for r in runs}
    defaults = default_results(runs)
    reference_seconds = np.median([by[REFERENCE, s]["seconds"][min(budget, len(by[REFERENCE, s]["seconds"])) - 1]
                                   for s in seeds])
    grid = np.linspace(0, reference_seconds, 200)
    half = budget // 2
    table, curves_out = [], {}
    areas = {a: np.array([regret_by_epoch(by[a, s], pooled_best, budget).mean() for s in seeds]) for a in arms}
    for arm in arms:
        epochs = np.stack([regret_by_epoch(by[arm, s], pooled_best, budget) for s in seeds])
        secs = np.stack([regret_by_seconds(by[arm, s], pooled_best, grid) for s in seeds])
        curves_out[arm] = dict(epochs=[q.tolist() for q in iqm_interval(epochs, rng)],
                               seconds=[q.tolist() for q in iqm_interval(secs, rng)])
        area_iqm, area_lo, area_hi = iqm_interval(areas[arm], rng)
        best = np.array([max(by[arm, s]["curve"][:budget]) for s in seeds])
        gain = np.array([b - defaults.get(s, np.nan) for b, s in zip(best, seeds)])
        reach: dict[str, int] = {}
        for s in seeds:
            for k, v in epochs_by_reach(by[arm, s]).items():
                reach[k] = reach.get(k, 0) + v
        table.append(dict(
            arm=arm, seeds=len(seeds),
            regret_half_median=float(np.median(epochs[:, half - 1])),
            regret_final_median=float(np.median(epochs[:, -1])),
            regret_final_iqm=float(iqm(epochs[:, -1])),
            regret_final_iqr=[float(np.percentile(epochs[:, -1], 25)), float(np.percentile(epochs[:, -1], 75))],
            area_median=float(np.median(areas[arm])), area_iqm=float(area_iqm), area_ci=[float(area_lo), float(area_hi)],
            area_seconds_median=float(np.median(secs.mean(axis=1))), area_seconds_iqm=float(iqm(secs.mean(axis=1))),
            gain_over_default_median=float(np.nanmedian(gain)), gain_over_default=[float(g) for g in gain],
            above_default=int((gain > 0).sum()), below_default=int((gain < 0).sum()),
            test_acc_median=float(np.median([by[arm, s]["test_acc"] for s in seeds])),
            test_acc=[by[arm, s]["test_acc"] for s in seeds],
            trials=int(np.median([by[arm, s]["trials"] for s in seeds])),
            stopped_early=int(np.median([by[arm, s]["stopped_early"] for s in seeds])),
            epochs_by_reach={k: round(v / sum(reach.values()), 3) for k, v in sorted(reach.items(), key=lambda kv: int(kv[0]))}))
    return dict(pooled_best=pooled_best, budget=budget, half=half, seconds_horizon=float(reference_seconds),
                defaults={str(k): v for k, v in defaults.items()}, table=table,
                default_position=default_position(runs, max_epochs) if max_epochs else {}, tests=paired_tests(areas),
                curves=curves_out, seconds_grid=grid.tolist())


def verdict(summary: dict) -> list[str]:
    """The issue's goals, each checked on the results: met or NOT met."""
    rows = {r["arm"]: r for r in summary["table"]}
    tests = {(t["arm"], t["against"]): t for t in summary["tests"]}
    if "tpe+asha" not in rows or REFERENCE not in rows:
        return ["goals not checked (they need the tpe+asha and random arms)"]
    mine, ref = rows["tpe+asha"], rows[REFERENCE]

    def said(ok: bool) -> str:
        return "met" if ok else "NOT met"

    lines = []
    if (t := tests.get(("tpe+asha", REFERENCE))) is not None:
        ok = t["lower"] > t["higher"] and t["p_holm"] < 0.05
        lines.append(f"tpe+asha's regret area below random's at {t['lower']} of {mine['seeds']} seeds, two-sided Wilcoxon "
                     f"p = {t['p']:.3g} (Holm {t['p_holm']:.3g}): {said(ok)} (goal: p < 0.05)")
    ok = mine["above_default"] >= round(0.75 * mine["seeds"]) and mine["below_default"] == 0
    lines.append(f"tpe+asha above the default's result at {mine['above_default']} of {mine['seeds']} seeds, below it at "
                 f"{mine['below_default']}: {said(ok)} (goal: 3 in 4 seeds or more, never below)")
    if "tpe" in rows:
        ok = mine["test_acc_median"] >= rows["tpe"]["test_acc_median"]
        lines.append(f"tpe+asha's winners' median test accuracy {100 * mine['test_acc_median']:.2f}% vs tpe's "
                     f"{100 * rows['tpe']['test_acc_median']:.2f}%: {said(ok)}")
        if (t := tests.get(("tpe+asha", "tpe"))) is not None:
            ok = t["lower"] >= round(2 / 3 * mine["seeds"])
            lines.append(f"stretch: tpe+asha's regret area below tpe's at {t['lower']} of {mine['seeds']} seeds: {said(ok)} "
                         "(goal: 2 in 3 seeds or more)")
    ok = mine["regret_half_median"] <= ref["regret_final_median"]
    lines.append(f"tpe+asha's median regret at {summary['half']} epochs {100 * mine['regret_half_median']:.2f} pt vs "
                 f"random's at {summary['budget']} {100 * ref['regret_final_median']:.2f} pt: {said(ok)}")
    return lines


def markdown(result: dict) -> str:
    s = result["summary"]
    lines = [f"| arm | trials (stopped early) | regret IQM at {s['budget']} epochs | regret area, IQM (95% CI) | "
             f"median regret at {s['half']} / {s['budget']} epochs | regret area, seconds (IQM) | gain over the default, "
             "median (seeds above / below) | winner's test acc (median) | epochs to trials that reached epoch ... |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in s["table"]:
        lo, hi = r["area_ci"]
        reach = ", ".join(f"{k}: {100 * v:.0f}%" for k, v in r["epochs_by_reach"].items())
        lines.append(f"| {r['arm']} | {r['trials']} ({r['stopped_early']}) | {100 * r['regret_final_iqm']:.2f} | "
                     f"{100 * r['area_iqm']:.2f} ({100 * lo:.2f}-{100 * hi:.2f}) | "
                     f"{100 * r['regret_half_median']:.2f} / {100 * r['regret_final_median']:.2f} | "
                     f"{100 * r['area_seconds_iqm']:.2f} | {100 * r['gain_over_default_median']:+.2f} "
                     f"({r['above_default']} / {r['below_default']}) | {100 * r['test_acc_median']:.2f} | {reach} |")
    lines += ["", "| regret area of | against | lower at (seeds) | higher at | median difference (pt) | p, two-sided | "
              "p, Holm |", "|---|---|---|---|---|---|---|"]
    for t in s["tests"]:
        lines.append(f"| {t['arm']} | {t['against']} | {t['lower']} | {t['higher']} | {100 * t['median_difference']:+.2f} | "
                     f"{t['p']:.3g} | {t['p_holm']:.3g} |")
    lines += ["", "| rung (epoch) | trials' schedule | Spearman rho with the epoch-{} accuracy | trials |".format(
        result["max_epochs"]), "|---|---|---|---|"]
    for c in result["rank_correlations"]:
        lines.append(f"| {c['rung']} | {c.get('schedule', 'all')} | {c['spearman']:.2f} | {c['trials']} |")
    lines.append("")
    if s.get("default_position", {}).get("draws"):
        d = s["default_position"]
        lines.append(f"- the default among random search's {d['draws']} other draws: {100 * d['within_1pt']:.0f}% within 1 point "
                     f"of its result, {100 * d['above']:.0f}% above it, median gap {100 * d['median_gap']:+.1f} pt")
    lines += [f"- {line}" for line in verdict(s)]
    return "\n".join(lines)


def plot(result: dict, path: Path) -> None:
    """Regret's IQM over the seeds with its bootstrap 95% band, against epochs and against training seconds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = result["summary"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    x_epochs = np.arange(1, s["budget"] + 1)
    for arm, c in s["curves"].items():
        for ax, x, (mid, lo, hi) in ((axes[0], x_epochs, c["epochs"]), (axes[1], s["seconds_grid"], c["seconds"])):
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
                 "interquartile mean and bootstrap 95% interval")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def settings(args: argparse.Namespace) -> dict:
    """What the benchmark ran with, and on what."""
    import torch

    return dict(budget=args.budget, max_epochs=args.max_epochs, grace_period=args.grace_period,
                reduction_factor=args.reduction_factor, rungs=rungs(args.max_epochs, args.grace_period, args.reduction_factor),
                seeds=args.seeds, dataset=args.dataset, train_size=args.train_size, cpus=args.cpus, gpus=args.gpus,
                machine=describe(), code=code_version(),
                torch=torch.__version__, device=torch.cuda.get_device_name(0) if args.gpus else "cpu")


def code_version() -> str:
    """The commit whose search code ran (``-dirty`` if the checkout had changes)."""
    proc = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True)
    return proc.stdout.strip() or "unknown"


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
    p.add_argument("--seeds", type=int, nargs="+", default=list(range(12)))
    p.add_argument("--dataset", default="fashion_mnist")
    p.add_argument("--train-size", type=int, default=5000, help="training images every trial trains on")
    p.add_argument("--cpus", type=int, default=2)
    p.add_argument("--gpus", type=int, default=0)
    p.add_argument("--arms", nargs="+", choices=list(ARMS), default=DEFAULT_ARMS)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "search_quality.json")
    p.add_argument("--keep", type=Path, default=None,
                   help="keep the searches' folders here; run again with the same --keep, an interrupted benchmark "
                        "reads the searches that finished and runs the rest")
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
                      f"epochs ({run['trials']} trials, {run['epochs_trained']} epochs, {run.get('wall_s')} s)", flush=True)
                runs.append(run)
        result = dict(settings(args), total_s=round(time.time() - started), runs=runs)
    result["summary"] = summarize(result["runs"], result["budget"], result["max_epochs"])
    result["rank_correlations"] = rank_correlations(result["runs"], result["rungs"])
    out = args.report or args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    plot(result, out.with_suffix(".png"))
    print(markdown(result))
    print(f"written: {out} and {out.with_suffix('.png')}")


if __name__ == "__main__":
    main()

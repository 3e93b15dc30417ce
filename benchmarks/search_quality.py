"""How good a configuration each search strategy finds for the training epochs it spends (a
benchmark, not a test).

    python benchmarks/search_quality.py [--budget 48] [--max-epochs 4] [--seeds 0 1 2]
        [--train-size 10000] [--gpus 0] [--out FILE] [--keep DIR]

Three strategies search the CNN's space, each at three seeds, through ``python -m search.run``:

  tpe+asha   this project's search: TPE, ASHA from epoch 1 (reduction factor 2) up to --max-epochs;
             given twice the baselines' trials and cut at --budget epochs
  random     Optuna's random sampler, every trial trained its whole --max-epochs
  tpe        TPE, every trial trained its whole --max-epochs

The baselines run --budget / --max-epochs trials. Every study tries the model's default
configuration first, as the search always does. Epochs are counted in the order they ended
(``reported_at`` in epochs.parquet), across concurrent trials; a strategy's best-so-far at N epochs
is the best validation accuracy among its first N epochs. Reported per strategy: the best within
--budget epochs (mean and spread over the seeds), and how many epochs it took to come within 0.1
point of random search's best at the same seed. The validation split is the same at every seed
(carved with a fixed seed); --seed changes the samplers and the trials' initialization.
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

import pandas as pd
from machine import cpu_name  # benchmarks/machine.py: a script's folder is on its path

ROOT = Path(__file__).resolve().parents[1]
TOLERANCE = 0.001  # 0.1 point of accuracy
STRATEGIES = {
    # name: (sampler, ASHA stops trials early, trials as a multiple of the baselines')
    "tpe+asha": ("tpe", True, 2),
    "random": ("random", False, 1),
    "tpe": ("tpe", False, 1),
}


def best_so_far(epochs: pd.DataFrame) -> list[float]:
    """Best validation accuracy after each epoch the search trained, in the order the epochs ended."""
    ordered = epochs.sort_values("reported_at")["val_acc"].astype(float)
    return ordered.cummax().tolist()


def epochs_to_reach(curve: list[float], target: float) -> int | None:
    """Epochs spent before the best-so-far first came within ``TOLERANCE`` of ``target`` (None: never)."""
    return next((i + 1 for i, best in enumerate(curve) if best >= target - TOLERANCE - 1e-12), None)


def search_flags(strategy: str, args: argparse.Namespace, seed: int, storage: Path) -> list[str]:
    sampler, early_stop, multiple = STRATEGIES[strategy]
    # ASHA's first rung at the whole budget stops nothing.
    grace = 1 if early_stop else args.max_epochs
    size = ["--train-size", str(args.train_size)] if args.train_size else []
    return ["--model", "cnn", "--gpus", str(args.gpus), *size, "--max-epochs", str(args.max_epochs),
            "--grace-period", str(grace), "--num-samples", str(args.budget // args.max_epochs * multiple),
            "--seed", str(seed), "--sampler", sampler,
            "--storage-path", str(storage), "--name", f"{strategy}-seed{seed}", "--no-dashboard", "--verbose", "0"]


def run_one(strategy: str, args: argparse.Namespace, seed: int, storage: Path) -> dict:
    """One search; its best-so-far curve from the exports."""
    flags = search_flags(strategy, args, seed, storage)
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "search.run", *flags], cwd=ROOT, capture_output=True, text=True)
    wall = time.monotonic() - start
    if proc.returncode != 0:
        raise SystemExit(f"{strategy} seed {seed} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    folder = storage / f"{strategy}-seed{seed}"
    epochs = pd.read_parquet(folder / "epochs.parquet")
    trials = pd.read_parquet(folder / "trials.parquet")
    curve = best_so_far(epochs)
    within = curve[: args.budget]
    return dict(strategy=strategy, seed=seed, command="python -m search.run " + " ".join(flags), wall_s=round(wall, 1),
                trials=len(trials), epochs_trained=len(curve), best_within_budget=within[-1],
                stopped_early=int((trials["epochs"] < args.max_epochs).sum()), curve=curve)


def summarize(runs: list[dict], budget: int) -> list[dict]:
    """Per strategy: the best within the budget (mean, spread) and epochs to reach random search's best."""
    random_best = {r["seed"]: r["best_within_budget"] for r in runs if r["strategy"] == "random"}
    rows = []
    for strategy in STRATEGIES:
        mine = [r for r in runs if r["strategy"] == strategy]
        bests = [r["best_within_budget"] for r in mine]
        reach = [epochs_to_reach(r["curve"][:budget], random_best[r["seed"]]) for r in mine]
        mean = sum(bests) / len(bests)
        std = math.sqrt(sum((b - mean) ** 2 for b in bests) / (len(bests) - 1)) if len(bests) > 1 else 0.0
        rows.append(dict(strategy=strategy, best_mean=mean, best_std=std, best_min=min(bests), best_max=max(bests),
                         epochs_to_random_best=reach,
                         share_of_budget=[None if n is None else n / budget for n in reach]))
    return rows


def markdown(rows: list[dict], budget: int) -> str:
    lines = [f"| strategy | best val acc within {budget} epochs (mean +- std, min-max) | "
             "epochs to come within 0.1 pt of random's best, per seed |", "|---|---|---|"]
    for r in rows:
        reach = ", ".join("not reached" if n is None else str(n) for n in r["epochs_to_random_best"])
        lines.append(f"| {r['strategy']} | {100 * r['best_mean']:.2f} +- {100 * r['best_std']:.2f} "
                     f"({100 * r['best_min']:.2f}-{100 * r['best_max']:.2f}) | {reach} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--budget", type=int, default=48, help="training epochs each search may spend")
    p.add_argument("--max-epochs", type=int, default=4, help="a trial's full budget")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--train-size", type=int, default=10_000, help="training images (0: all)")
    p.add_argument("--gpus", type=int, default=0)
    p.add_argument("--only", nargs="+", choices=list(STRATEGIES), default=list(STRATEGIES))
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "search_quality_cpu.json")
    p.add_argument("--keep", type=Path, default=None, help="keep the searches' folders here")
    args = p.parse_args()
    if args.budget % args.max_epochs:
        p.error("--budget must be a multiple of --max-epochs (the baselines train whole trials)")
    if "random" not in args.only:
        p.error("random search is the reference: keep it in --only")
    storage = args.keep or Path(tempfile.mkdtemp(prefix="search-quality-"))
    runs = []
    for seed in args.seeds:
        for strategy in args.only:
            run = run_one(strategy, args, seed, storage)
            print(f"{strategy:9s} seed {seed}: best {100 * run['best_within_budget']:.2f}% within {args.budget} epochs "
                  f"({run['trials']} trials, {run['epochs_trained']} epochs trained, {run['wall_s']} s)", flush=True)
            runs.append(run)
    rows = summarize([r for r in runs if r["strategy"] in args.only], args.budget)
    import torch

    out = dict(budget=args.budget, max_epochs=args.max_epochs, seeds=args.seeds, train_size=args.train_size,
               gpus=args.gpus, machine=f"{cpu_name()}, {os.cpu_count()} cores", torch=torch.__version__,
               device=torch.cuda.get_device_name(0) if args.gpus else "cpu",
               summary=rows, runs=runs)
    args.out.write_text(json.dumps(out, indent=1))
    print(markdown(rows, args.budget))
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()

"""Small data, honest answers: does the default search beat the classical baseline on small data sets, and in how long?

    python benchmarks/small_data.py [--cases digits fashion2000] [--out benchmarks/results/small_data.json]

Each case is one default search run as a user would type it (``search.run``, no tuning flags), on this machine:

  digits       --model cnn,vit,resnet18 --dataset digits --gpus 0 --no-pretrained
               (scikit-learn's 1,797 images: 1,294 train / 144 validation / 359 test; 5-fold cross-validation)
  fashion2000  the same models on Fashion-MNIST with --train-size 2000 (validation 5,000 and test 10,000 whole)
  digits_split digits with --folds 1: scored on the 144 validation images, to show what cross-validation costs

and read back: the wall clock of the command, each winner's test accuracy (its refit's, which the bundle holds),
and the search's own classical baselines on the same test split (baselines.parquet: an RBF SVC and logistic
regression on the raw pixels), with McNemar's exact test of the best winner against the SVC from the report.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
from machine import describe  # benchmarks/machine.py: a script's folder is on its path

ROOT = Path(__file__).resolve().parents[1]
MODELS = ["--model", "cnn,vit,resnet18", "--gpus", "0", "--no-pretrained"]
CASES = {
    "digits": ["--dataset", "digits"],
    "fashion2000": ["--dataset", "fashion_mnist", "--train-size", "2000"],
    # what cross-validation costs and buys: digits scored on its 144 validation images instead
    "digits_split": ["--dataset", "digits", "--folds", "1"],
}


def run_case(name: str, storage: Path) -> dict:
    """One default search; its time, its winners' test accuracies and the baselines'."""
    flags = [*MODELS, *CASES[name], "--storage-path", str(storage), "--name", name, "--no-dashboard", "--verbose", "0"]
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "search.run", *flags], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT), "RAY_USAGE_STATS_ENABLED": "0"})
    wall = time.monotonic() - started
    if proc.returncode != 0:
        raise SystemExit(f"{name} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    folder = storage / name
    finalists = pd.read_parquet(folder / "finalists.parquet")
    trials = pd.read_parquet(folder / "trials.parquet")
    baselines = pd.read_parquet(folder / "baselines.parquet").set_index("model")
    # The model a user takes home: the refit where there is one (small data), else the trial's checkpoint.
    finalists["kept_test_acc"] = finalists["refit_test_acc"].fillna(finalists["test_acc"])
    best = finalists.loc[finalists["kept_test_acc"].idxmax()]
    svc = float(baselines.loc["svc_rbf", "test_acc"])
    return {
        "command": "python -m search.run " + " ".join(flags[:flags.index("--storage-path")]),
        "wall_s": round(wall, 1),
        "folds": int(trials["folds"].max()),
        "budgets": {m: int(g["config.epochs"].iloc[0]) for m, g in trials.groupby("model")},
        "trials": {m: int(len(g)) for m, g in trials.groupby("model")},
        "winners": {r["model"]: {"val_acc": float(r["best_val_acc"]), "test_acc": float(r["test_acc"]),
                                 "refit_test_acc": None if pd.isna(r["refit_test_acc"]) else float(r["refit_test_acc"])}
                    for _, r in finalists.iterrows()},
        "best_model": str(best["model"]), "best_test_acc": float(best["kept_test_acc"]),
        "svc_test_acc": svc, "logistic_test_acc": float(baselines.loc["logistic_regression", "test_acc"]),
        "at_or_above_svc": bool(best["kept_test_acc"] >= svc),
        "selection": [line for line in proc.stdout.splitlines() if line.startswith(("Selection:", "Budgets:"))],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", nargs="+", choices=list(CASES), default=["digits", "fashion2000"])
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "small_data.json")
    args = p.parse_args()
    storage = Path(tempfile.mkdtemp(prefix="small-data-"))
    result = json.loads(args.out.read_text()) if args.out.exists() else {}
    result["machine"] = describe()
    for name in args.cases:
        result[name] = run_case(name, storage)
        row = result[name]
        print(f"{name}: best {row['best_model']} {100 * row['best_test_acc']:.2f}% vs SVC {100 * row['svc_test_acc']:.2f}% "
              f"in {row['wall_s']:.0f} s ({row['folds']} fold(s), budgets {row['budgets']})", flush=True)
        args.out.write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out} (searches in {storage})")


if __name__ == "__main__":
    main()

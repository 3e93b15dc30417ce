"""Which learning-rate schedules ASHA can judge at its low rungs (a benchmark, not a test).

    python benchmarks/schedule_ranks.py [--trials 20] [--max-epochs 9] [--rungs 1 3] [--seed 0]
        [--dataset fashion_mnist] [--train-size 5000] [--out benchmarks/results/schedule_ranks.json]

The same ``--trials`` random configurations of the CNN (one seeded random search, ``--set schedule=...`` pinning
only the schedule, so trial k draws the same settings in every variant) trained ``--max-epochs`` each, never
stopped, once per schedule variant:

  constant, cosine, onecycle   planned over the whole trial, as searched without ASHA
  cosine@rungs, onecycle@rungs  re-planned in cycles that end at ASHA's rungs (``restarts``): every trial a rung
                               judges has just finished a decay

Per variant: Spearman's rho between each rung's validation accuracy and the last epoch's (can a rung judge
early?), and the last epoch's accuracies (median, best, mean of the best five): does the variant train as well?
Trial 0 is the model's registered default with the variant's schedule. Needs the data set under $SEARCH_DATA_DIR.
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

import numpy as np
import pandas as pd
from machine import describe  # benchmarks/machine.py: a script's folder is on its path
from search_quality import default_trial

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = {"constant": ("constant", False), "cosine": ("cosine", False), "onecycle": ("onecycle", False),
            "cosine@rungs": ("cosine", True), "onecycle@rungs": ("onecycle", True)}


def command(variant: str, args: argparse.Namespace, storage: Path) -> list[str]:
    schedule, at_rungs = VARIANTS[variant]
    sets = ["--set", f"schedule={schedule}"] + (["--set", "restarts=" + ",".join(map(str, args.rungs))] if at_rungs else [])
    return ["--model", "cnn", "--sampler", "random", "--num-samples", str(args.trials), "--max-epochs", str(args.max_epochs),
            "--grace-period", str(args.max_epochs), "--dataset", args.dataset, "--train-size", str(args.train_size),
            "--seed", str(args.seed), "--cpus", "2", "--gpus", "0", *sets, "--no-refit", "--storage-path", str(storage),
            "--name", variant.replace("@", "-at-"), "--no-dashboard", "--verbose", "0"]


def accuracies(folder: Path) -> pd.DataFrame:
    """Validation accuracy per trial (rows, the model's default first) and epoch (columns)."""
    table = pd.read_parquet(folder / "epochs.parquet").pivot_table(index="trial_id", columns="epoch", values="val_acc")
    default = default_trial(folder, ignore=("schedule",))
    return table.loc[[default, *(t for t in table.index if t != default)]]


def summary(table: pd.DataFrame, rungs: list[int], last: int) -> dict:
    from scipy.stats import spearmanr

    final = table[last].dropna()
    out = {"trials": int(len(final)), "final_median": float(final.median()), "final_best": float(final.max()),
           "final_top5_mean": float(final.nlargest(5).mean()), "default_final": float(table[last].iloc[0])}
    for rung in rungs:
        rho, p = spearmanr(table.loc[final.index, rung], final)
        out[f"rho_rung{rung}"], out[f"p_rung{rung}"] = float(rho), float(p)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--trials", type=int, default=20)
    p.add_argument("--max-epochs", type=int, default=9)
    p.add_argument("--rungs", type=int, nargs="+", default=[1, 3], help="ASHA's rungs below --max-epochs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dataset", default="fashion_mnist")
    p.add_argument("--train-size", type=int, default=5000)
    p.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "schedule_ranks.json")
    args = p.parse_args()
    storage = Path(tempfile.mkdtemp(prefix="schedule-ranks-"))
    result: dict = {"machine": describe(), "trials": args.trials, "max_epochs": args.max_epochs, "rungs": args.rungs,
                    "seed": args.seed, "dataset": args.dataset, "train_size": args.train_size, "variants": {}}
    for variant in args.variants:
        flags = command(variant, args, storage)
        started = time.monotonic()
        proc = subprocess.run([sys.executable, "-m", "search.run", *flags], cwd=ROOT, capture_output=True, text=True,
                              env={**os.environ, "PYTHONPATH": str(ROOT), "RAY_USAGE_STATS_ENABLED": "0"})
        if proc.returncode != 0:
            raise SystemExit(f"{variant} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
        table = accuracies(storage / variant.replace("@", "-at-"))
        result["variants"][variant] = dict(summary(table, args.rungs, args.max_epochs), wall_s=round(time.monotonic() - started),
                                           command="python -m search.run " + " ".join(flags),
                                           curves=[[None if np.isnan(v) else float(v) for v in row] for row in table.to_numpy()])
        row = {k: round(v, 4) for k, v in result["variants"][variant].items() if isinstance(v, float)}
        print(variant, json.dumps(row), flush=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

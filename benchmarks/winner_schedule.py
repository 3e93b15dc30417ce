"""Does the winner pay for ASHA's rungs? The README's search with and without rung restarts (a benchmark, not a test).

    python benchmarks/winner_schedule.py [--seeds 0 1 2] [--variants rungs whole] [--rungs 1,2]
        [--out benchmarks/results/winner_schedule.json]
        [-- SEARCH FLAGS (default: the README's --model cnn --gpus 0 --num-samples 8 --max-epochs 3)]

Runs the search once per seed and variant: ``rungs`` each trial's learning-rate schedule in cycles that end at
ASHA's rungs below the last epoch (``--set restarts=RUNGS``: 1,2 for the README's search, a first rung at 1 and
factor 2; what the search did until 2026-12-08), ``whole`` one schedule over the trial's epochs (``--set
restarts=``, the search's default since). ``--out`` keeps the runs already in it for the seeds and variants not
run again. Records each run's winner (whether it was the model's
default configuration), its validation and test accuracy, and the wall clock; the summary gives each variant's
median test accuracy over the seeds. The data set comes from $SEARCH_DATA_DIR.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
from machine import describe  # benchmarks/machine.py: a script's folder is on its path
from search_quality import default_trial

ROOT = Path(__file__).resolve().parents[1]
README_SEARCH = ["--model", "cnn", "--gpus", "0", "--num-samples", "8", "--max-epochs", "3"]
VARIANTS = ("rungs", "whole")


def run(flags: list[str], variant: str, seed: int, storage: Path, rungs: str) -> dict:
    """One search; what its exports say about its winner."""
    name = f"{variant}-seed{seed}"
    restarts = f"restarts={rungs if variant == 'rungs' else ''}"
    command = [sys.executable, "-m", "search.run", *flags, "--seed", str(seed), "--set", restarts,
               "--storage-path", str(storage), "--name", name, "--no-dashboard", "--verbose", "0"]
    started = time.perf_counter()
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"{name} exited {proc.returncode}:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    finalist = pd.read_parquet(storage / name / "finalists.parquet").iloc[0]
    trials = pd.read_parquet(storage / name / "trials.parquet")
    default = default_trial(storage / name, ignore=("restarts",))
    return dict(variant=variant, seed=seed, winner=finalist["trial_id"], winner_is_default=finalist["trial_id"] == default,
                best_val_acc=float(finalist["best_val_acc"]), test_acc=float(finalist["test_acc"]),
                stopped_early=int((trials["status"] == "stopped_early").sum()), trials=len(trials),
                wall_s=round(wall, 1), command=" ".join(["python", "-m", "search.run", *command[3:]]))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    p.add_argument("--rungs", default="1,2", help="the rung epochs below the last (the README's search: 1,2)")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "winner_schedule.json")
    p.add_argument("flags", nargs="*", help="the search's flags, after --")
    args = p.parse_args()
    flags = args.flags or README_SEARCH
    kept = json.loads(args.out.read_text())["runs"] if args.out.is_file() else []
    runs = [r for r in kept if not (r["seed"] in args.seeds and r["variant"] in args.variants)]
    with tempfile.TemporaryDirectory(prefix="winner-schedule-") as storage:
        for seed in args.seeds:
            for variant in args.variants:
                runs.append(run(flags, variant, seed, Path(storage), args.rungs))
                r = runs[-1]
                print(f"{variant:6s} seed {seed}: winner {r['winner']}{' (the default)' if r['winner_is_default'] else ''}"
                      f", val {r['best_val_acc']:.4f}, test {r['test_acc']:.4f}, {r['wall_s']:.0f} s", flush=True)
    runs.sort(key=lambda r: (r["seed"], VARIANTS.index(r["variant"])))
    summary = {v: dict(median_test_acc=statistics.median(r["test_acc"] for r in runs if r["variant"] == v),
                       test_accs=[r["test_acc"] for r in runs if r["variant"] == v],
                       seeds=[r["seed"] for r in runs if r["variant"] == v]) for v in VARIANTS}
    for v, s in summary.items():
        print(f"{v}: median test accuracy {s['median_test_acc']:.4f} over seeds {s['seeds']}")
    record = dict(machine=describe(), search=flags, rungs=args.rungs, summary=summary, runs=runs,
                  data_dir=os.environ.get("SEARCH_DATA_DIR"))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=1) + "\n")
    print(f"written: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

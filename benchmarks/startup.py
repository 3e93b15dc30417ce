"""How long a user waits before anything happens (a benchmark, not a test).

    python benchmarks/startup.py [--baseline REV] [--repeats 5] [--slots 2 6] [--out FILE]

Measured for this checkout and, with ``--baseline``, for git revision REV (checked out into a
temporary worktree), alternating between the two so that both see the same machine load:

- worker imports: a fresh interpreter running ``import trainables.tune_trial``, what every trial
  process of the search does before it trains (wall seconds, median of --repeats);
- the command line: ``python -m search.run --help`` and the refusal of each mistyped flag or value in
  ``REFUSALS`` (each must exit 2), wall seconds, median;
- first trained batch: a CNN smoke search with --slots trials at once (``--cpus N --num-samples N``),
  seconds from the command's start to the first trial's first training step (``startup_s`` of
  ``analysis.efficiency``, from the exports).

Needs MNIST under $SEARCH_DATA_DIR for the last part. Writes benchmarks/results/startup.json.
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from analysis.efficiency import efficiency  # noqa: E402  (the project's root is on the path now)

REFUSALS = {
    "unknown model": ["--model", "nope"],
    "negative GPUs": ["--gpus", "-1"],
    "no trials": ["--num-samples", "0"],
    "a setting's bad value": ["--set", "lr=abc"],
    "a zero epoch budget": ["--max-epochs", "cnn=0"],
    "a reduction factor of 1": ["--reduction-factor", "1"],
    "an unknown sampler": ["--sampler", "grid"],
    "an unknown flag": ["--bogus"],
}


def timed(command: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, int]:
    start = time.monotonic()
    proc = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    return time.monotonic() - start, proc.returncode


def tree_env(tree: Path) -> dict[str, str]:
    # PYTHONPATH: the tree's code, even if the project is installed (editable) from another checkout.
    # The data folder made absolute: the baseline's commands run in its own worktree.
    data = os.environ.get("SEARCH_DATA_DIR")
    data = {"SEARCH_DATA_DIR": str(Path(data).resolve())} if data else {}
    return {**os.environ, **data, "PYTHONPATH": str(tree), "RAY_USAGE_STATS_ENABLED": "0"}


def quick(tree: Path, storage: Path) -> dict[str, tuple[float, int]]:
    """One round of the interpreter-only measurements in ``tree``."""
    env = tree_env(tree)
    out = {"worker imports": timed([sys.executable, "-c", "import trainables.tune_trial"], tree, env),
           "--help": timed([sys.executable, "-m", "search.run", "--help"], tree, env)}
    for name, flags in REFUSALS.items():
        out[f"refused: {name}"] = timed([sys.executable, "-m", "search.run", *flags, "--storage-path", str(storage)],
                                        tree, env)
    return out


def first_batch(tree: Path, slots: int, storage: Path, tag: str) -> float:
    """Seconds from the command's start to the first trained batch of a CNN smoke search."""
    name = f"startup-{tag}-{slots}"
    command = [sys.executable, "-m", "search.run", "--model", "cnn", "--gpus", "0", "--cpus", str(slots), "--smoke",
               "--num-samples", str(slots), "--no-dashboard", "--verbose", "0", "--storage-path", str(storage),
               "--name", name]
    proc = subprocess.run(command, cwd=tree, env=tree_env(tree), capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"{' '.join(command)} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    return float(efficiency(pd.read_parquet(storage / name / "trials.parquet"))["startup_s"].iloc[0])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--baseline", default=None, help="a git revision to compare with (a temporary worktree)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--slots", type=int, nargs="*", default=[2, 6])
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "startup.json")
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="startup-"))
    trees = {"this checkout": ROOT}
    if args.baseline:
        subprocess.run(["git", "worktree", "add", "--detach", str(work / "baseline"), args.baseline], cwd=ROOT,
                       check=True, capture_output=True)
        trees = {f"baseline ({args.baseline})": work / "baseline", **trees}
    try:
        rounds: dict[str, list[dict]] = {label: [] for label in trees}
        for _ in range(args.repeats):  # alternating: both trees see the same load
            for label, tree in trees.items():
                rounds[label].append(quick(tree, work / "storage"))
        results = {}
        for label, tree in trees.items():
            names = rounds[label][0].keys()
            results[label] = {name: {"median_s": round(statistics.median(r[name][0] for r in rounds[label]), 2),
                                     "exit": sorted({r[name][1] for r in rounds[label]})} for name in names}
            for slots in args.slots:
                results[label][f"first trained batch, {slots} slots"] = {
                    "median_s": round(first_batch(tree, slots, work / "storage", label.split()[0]), 1), "exit": [0]}
    finally:
        if args.baseline:
            subprocess.run(["git", "worktree", "remove", "--force", str(work / "baseline")], cwd=ROOT, check=False)
    labels = list(trees)
    print("| step | " + " | ".join(labels) + " |")
    print("|---|" + "---|" * len(labels))
    for name in results[labels[-1]]:
        print(f"| {name} | " + " | ".join(f"{results[l][name]['median_s']} s" for l in labels if name in results[l]) + " |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(dict(machine=describe(), repeats=args.repeats, results=results),
                                   indent=1))
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()

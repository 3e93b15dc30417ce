"""Where a search's first seconds go: each start-up step, from the command's start to the first training batch.

    python benchmarks/startup_steps.py [--repeats N] [--against REV] [--out FILE] -- SEARCH FLAGS...
    python benchmarks/startup_steps.py --repeats 3 --against de9f04b -- --model cnn --gpus 0 --smoke --no-pretrained

Runs ``python -m search.run`` with the given flags (the dashboard on, as a user runs it; ``--verbose 0`` and a
fresh ``--name`` added) ``--repeats`` times, alternating with revision REV's code where ``--against`` names one
(a temporary worktree: both from one machine, interleaved, so the machine's drift touches both alike). The
search writes when each of its steps ended to ``$HPSEARCH_TIMELINE`` (``search.engine.progress.mark``): the data carved
(torch-free, before Ray), its splits as tensors (a thread, beside Ray's start), Ray started, Tune started; the
exports say when the first trial's function began (its process started and imported) and when its first batch did. A revision without the
marks gives the first batch and the whole command only. Prints each step's median in seconds from the start.
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from machine import describe  # noqa: E402  (benchmarks/machine.py: a script's folder is on its path)

STEPS = ("data carved", "data loaded", "ray started", "tuner started", "first trial began", "first batch")


def run_once(flags: list[str], storage: Path, name: str, tree: Path) -> dict[str, float]:
    """One search: seconds from its start to each step it marked, to its first trial and batch, and to its end."""
    timeline = storage / f"{name}.timeline"
    data = os.environ.get("SEARCH_DATA_DIR")  # absolute: another tree's command runs in its own folder
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "PYTHONPATH": str(tree), "HPSEARCH_TIMELINE": str(timeline),
           **({"SEARCH_DATA_DIR": str(Path(data).resolve())} if data else {})}
    command = [sys.executable, "-m", "search.run", *flags, "--verbose", "0", "--storage-path", str(storage),
               "--name", name]
    start = time.time()
    proc = subprocess.run(command, cwd=tree, capture_output=True, text=True, env=env)
    wall = time.time() - start
    if proc.returncode:
        raise SystemExit(f"search failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    steps = {}
    if timeline.exists():
        for line in timeline.read_text().splitlines():
            event = json.loads(line)
            steps.setdefault(event["event"], event["at"] - start)  # the first time each step ended
    trials = pd.read_parquet(storage / name / "trials.parquet")
    steps["first trial began"] = float((trials["train_started_at"] - trials["setup_s"]).min()) - start
    steps["first batch"] = float(trials["train_started_at"].min()) - start
    steps["whole command"] = wall
    return steps


def medians(runs: list[dict[str, float]]) -> dict[str, float]:
    return {step: round(statistics.median(r[step] for r in runs), 2)
            for step in (*STEPS, "whole command") if all(step in r for r in runs)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--against", default=None, metavar="REV", help="also run revision REV's code, interleaved")
    p.add_argument("--out", default=None, help="JSON file for the figures")
    p.add_argument("flags", nargs=argparse.REMAINDER, help="after --: the search's flags")
    args = p.parse_args()
    flags = [f for f in args.flags if f != "--"] or ["--model", "cnn", "--gpus", "0", "--smoke", "--no-pretrained"]
    storage = Path(tempfile.mkdtemp(prefix="search-startup-"))
    trees = {"now": ROOT}
    if args.against:
        trees = {f"at {args.against}": storage / "tree", **trees}
        subprocess.run(["git", "worktree", "add", "--detach", str(storage / "tree"), args.against], cwd=ROOT,
                       check=True, capture_output=True)
    runs: dict[str, list[dict[str, float]]] = {label: [] for label in trees}
    try:
        for i in range(args.repeats):
            for label, tree in trees.items():
                runs[label].append(run_once(flags, storage, f"{label.replace(' ', '-')}-{i}", tree))
                print(label, json.dumps({k: round(v, 2) for k, v in runs[label][-1].items()}), flush=True)
    finally:
        if args.against:
            subprocess.run(["git", "worktree", "remove", "--force", str(storage / "tree")], cwd=ROOT,
                           capture_output=True)
    record = {"machine": describe(), "command": " ".join(["python -m search.run", *flags]), "repeats": args.repeats,
              "medians_s": {label: medians(r) for label, r in runs.items()}, "runs": runs}
    for label, figures in record["medians_s"].items():
        print(f"{label}: " + ", ".join(f"{step} {seconds:.1f} s" for step, seconds in figures.items()))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(record, indent=2))
        print(f"written to {args.out}")


if __name__ == "__main__":
    main()

"""How full a search keeps the machine, measured on a fixed search (a benchmark, not a test).

    python benchmarks/search_efficiency.py [--baseline] [--out FILE] -- SEARCH FLAGS...
    python benchmarks/search_efficiency.py --baseline -- --model cnn --gpus 0 --cpus 6 --smoke --num-samples 12
    python benchmarks/search_efficiency.py --declare-gpus 4 -- --model all --gpus 4 --cpus 8 --smoke --no-pretrained
    python benchmarks/search_efficiency.py --against 1e604e0 -- --model all --gpus 0 --smoke --no-pretrained

Runs ``python -m search.run`` with the given flags (plus ``--no-dashboard --verbose 0`` and a fresh
``--name``), times the whole command, and prints what its exports say (``analysis.efficiency``):
trials at once, the share of slot-time spent training, the start-up time, the gaps between trials, the
tail (the last trial's start to the search's end), worker processes per trial, each model's end phase (test,
refit, bundle; cost to run) and when it began against the search's end, and the time after the last trial. On a machine with ``nvidia-smi`` it samples GPU utilization every 0.5 s and reports its
mean while trials ran. ``--baseline`` runs the same search a second time as the search ran before
trials were packed and processes reused (``--max-concurrent 1 --fresh-processes``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from analysis.efficiency import efficiency  # noqa: E402  (the project's root is on the path now)
from machine import describe  # noqa: E402  (benchmarks/machine.py: a script's folder is on its path)


class GpuSampler:
    """``nvidia-smi`` utilization (%) every ``period`` seconds in a thread, with the time of each sample."""

    def __init__(self, period: float = 0.5) -> None:
        self.period, self.samples, self._stop = period, [], threading.Event()
        self.available = shutil.which("nvidia-smi") is not None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            out = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"],
                                 capture_output=True, text=True).stdout.split()
            if out:
                self.samples.append((time.time(), sum(float(v) for v in out) / len(out)))
            self._stop.wait(self.period)

    def __enter__(self) -> "GpuSampler":
        if self.available:
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self.available:
            self._thread.join()

    def mean_between(self, start: float, end: float) -> float | None:
        values = [u for t, u in self.samples if start <= t <= end]
        return sum(values) / len(values) if values else None


def run_search(flags: list[str], storage: Path, name: str, declare_gpus: int = 0, tree: Path = ROOT) -> dict:
    """One search, timed from the outside, with its efficiency figures and GPU use; ``declare_gpus``: that many
    GPUs declared to Ray on a machine without them (``HPSEARCH_DECLARE_GPUS``); ``tree``: the checkout it runs."""
    command = [sys.executable, "-m", "search.run", *flags, "--no-dashboard", "--verbose", "0",
               "--storage-path", str(storage), "--name", name]
    data = os.environ.get("SEARCH_DATA_DIR")  # absolute: another tree's command runs in its own folder
    with GpuSampler() as gpu:
        start = time.time()
        proc = subprocess.run(command, cwd=tree, capture_output=True, text=True,
                              env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "PYTHONPATH": str(tree),
                                   **({"SEARCH_DATA_DIR": str(Path(data).resolve())} if data else {}),
                                   **({"HPSEARCH_DECLARE_GPUS": str(declare_gpus)} if declare_gpus else {})})
        wall = time.time() - start
    if proc.returncode:
        raise SystemExit(f"search failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    trials = pd.read_parquet(storage / name / "trials.parquet")
    finalists = pd.read_parquet(storage / name / "finalists.parquet")
    figures = efficiency(trials).iloc[0].to_dict()
    first = float((trials["train_started_at"] - trials["setup_s"]).min())
    search_end = float(trials["ended_at"].max())
    figures.update(
        command=" ".join(["python -m search.run", *flags]), wall_clock_s=wall,
        processes_per_trial=figures["processes"] / max(1, figures["trials"]),
        after_search_s=start + wall - search_end,  # the last trial's last report to the command's end
        end_phase=end_phase(finalists, search_end),
        timeline=timeline(trials, finalists, start),
        best_test_acc=float(finalists["test_acc"].max()) if len(finalists) else None,
        gpu_busy_pct=gpu.mean_between(first, float(trials["ended_at"].max())) if gpu.available else None,
        leaderboard=leaderboard_of(proc.stdout),
    )
    return figures


def end_phase(finalists: pd.DataFrame, search_end: float) -> dict:
    """Each model's end phase (test, refit, bundle: ``end_s``; cost to run: ``cost_s``), when it began against the
    search's end (negative: beside the trials), and the span of all of them against the slowest one's."""
    if "end_started_at" not in finalists or finalists["end_started_at"].isna().all():
        return {}
    rows = finalists.set_index("model")
    ended = rows["end_started_at"] + rows["end_s"]
    return {"per_model": {m: {"end_s": float(r["end_s"]), "cost_s": float(r["cost_s"]),
                              "began_before_search_end_s": float(search_end - r["end_started_at"])}
                          for m, r in rows.iterrows()},
            # end-phase seconds inside the trials' span: slots lent to it are busy, not the idle gaps they look like
            "during_search_s": float((ended.clip(upper=search_end) - rows["end_started_at"]).clip(lower=0).sum()),
            "span_s": float(ended.max() - rows["end_started_at"].min()),
            "slowest_model_s": float(rows["end_s"].max()),
            "span_over_slowest": float((ended.max() - rows["end_started_at"].min()) / rows["end_s"].max())}


def timeline(trials: pd.DataFrame, finalists: pd.DataFrame, start: float) -> list[list]:
    """[what, model, began, ended] in seconds from the command's start: each trial (setup included) and each
    model's end phase, in order of their start."""
    rows = [["trial", r.model, r.train_started_at - r.setup_s - start, r.ended_at - start] for r in trials.itertuples()]
    if "end_started_at" in finalists:
        rows += [["end phase", r.model, r.end_started_at - start, r.end_started_at + r.end_s - start]
                 for r in finalists.itertuples() if pd.notna(r.end_started_at)]
    return [[what, model, round(float(b), 1), round(float(e), 1)] for what, model, b, e in sorted(rows, key=lambda r: r[2])]


def leaderboard_of(stdout: str) -> str:
    """The leaderboard the search printed (from its header to the line before ``Results:``)."""
    lines = stdout.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("model ")), len(lines))
    end = next((i for i, line in enumerate(lines) if line.startswith("Results:")), len(lines))
    return "\n".join(lines[start:end]).rstrip()


def show(label: str, f: dict) -> None:
    gpu = f"{f['gpu_busy_pct']:.0f}%" if f.get("gpu_busy_pct") is not None else "n/a (no nvidia-smi)"
    gap = f"{f['mean_gap_s']:.2f} s" if pd.notna(f.get("mean_gap_s")) else "n/a"
    print(f"{label}: {f['command']}\n"
          f"  whole command {f['wall_clock_s']:.1f} s; {f['trials']} trials on {f['slots']} slots: "
          f"{f['mean_at_once']:.2f} at once on average (max {f['max_at_once']}); slot-time training "
          f"{f['slot_share']:.0%}; training began {f['startup_s']:.1f} s after the start; slot-to-trial gap {gap}; "
          f"{f['processes']} processes; tail {f.get('tail_s', float('nan')):.1f} s; after the last trial "
          f"{f['after_search_s']:.1f} s; GPU busy while trials ran: {gpu}; best test accuracy {f['best_test_acc']}\n"
          f"  end phase: {json.dumps(f['end_phase'], default=float)}\n"
          f"{f['leaderboard']}", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--baseline", action="store_true",
                   help="also run it with --max-concurrent 1 --fresh-processes (the search before packing)")
    p.add_argument("--out", default=None, help="JSON file for the figures")
    p.add_argument("--declare-gpus", type=int, default=0, metavar="N",
                   help="declare N GPUs to Ray on a machine without them (trials train on the CPU; the packing, "
                        "process reuse and end phase are those of N GPUs), for e.g. -- --model all --gpus 4")
    p.add_argument("--against", default=None, metavar="REV",
                   help="first run the same search as git revision REV ran it (a temporary worktree): both figures "
                        "from one machine, one after the other")
    p.add_argument("flags", nargs=argparse.REMAINDER, help="after --: the search's flags")
    args = p.parse_args()
    flags = [f for f in args.flags if f != "--"] or ["--model", "cnn", "--gpus", "0", "--smoke", "--num-samples", "8"]
    storage = Path(tempfile.mkdtemp(prefix="search-efficiency-"))
    record = {"machine": describe(), "declared_gpus": args.declare_gpus}
    if args.against:
        tree = storage.parent / f"{storage.name}-tree"
        subprocess.run(["git", "worktree", "add", "--detach", str(tree), args.against], cwd=ROOT, check=True,
                       capture_output=True)
        try:
            record[f"at {args.against}"] = run_search(flags, storage, "against", args.declare_gpus, tree)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT, capture_output=True)
        show(f"at {args.against}", record[f"at {args.against}"])
    record["packed"] = run_search(flags, storage, "packed", args.declare_gpus)
    show("packed", record["packed"])
    if args.baseline:
        record["baseline"] = run_search([*flags, "--max-concurrent", "1", "--fresh-processes"], storage, "baseline",
                                        args.declare_gpus)
        show("baseline", record["baseline"])
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(record, indent=2, default=float))
        print(f"written to {args.out}")
    shutil.rmtree(storage, ignore_errors=True)


if __name__ == "__main__":
    main()

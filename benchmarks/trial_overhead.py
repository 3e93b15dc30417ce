"""What a trial costs besides training, one Tune switch at a time (a benchmark, not a test).

    python benchmarks/trial_overhead.py [--trials 12] [--reports 4] [--repeats 2]

Runs ``--trials`` placeholder trials one after another (one slot) through Ray Tune. Each imports
torch and the project's trainable module, as a real trial does, and reports ``--reports`` epochs
that train nothing, with a checkpoint of a CNN-sized state (1 MB) at each report unless told not to.
So the time per trial is all overhead: process start and imports, Tune's loggers, checkpoint
writes, experiment-state snapshots and the driver's loop. Variants, each changing one switch from
the search's defaults (reused processes, Tune's default loggers, a checkpoint per report):

- ``search defaults``: what ``python -m search.run`` does now;
- ``new process per trial``: ``reuse_actors=False`` (what every trial paid before);
- ``JSON logger only``: no CSV and TensorBoard loggers (the exports read result.json);
- ``no checkpoints``: reports without a checkpoint (the search writes one per improvement);
- ``snapshots every 60 s``: ``TUNE_GLOBAL_CHECKPOINT_S=60`` instead of Tune's automatic period.

Each variant runs once with one trial and once with ``--trials``: the first gives the cost of the
first trial (worker process, imports), the difference the marginal cost of each later trial. Prints
both (medians over repeats) and writes benchmarks/results/trial_overhead.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from machine import describe  # benchmarks/machine.py: a script's folder is on its path

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = {
    "search defaults": {},
    "new process per trial": {"reuse": False},
    "JSON logger only": {"loggers": "json"},
    "no checkpoints": {"checkpoint": False},
    "snapshots every 60 s": {"env": {"TUNE_GLOBAL_CHECKPOINT_S": "60"}},
}


def placeholder_trial(config: dict) -> None:
    """Imports what a real trial imports, then reports without training."""
    import tempfile

    import torch
    from ray import tune

    import trainables.tune_trial  # noqa: F401  (torch, torchvision, sklearn, every model)

    state = {"w": torch.zeros(256 * 1024)}  # 1 MB, about the CNN's checkpoint
    for epoch in range(1, config["reports"] + 1):
        metrics = {"epoch": epoch, "val_acc": epoch / 10}
        if config["checkpoint"]:
            with tempfile.TemporaryDirectory() as folder:
                torch.save(state, Path(folder) / "model.pt")
                tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))
        else:
            tune.report(metrics)


def run_variant(trials: int, reports: int, reuse: bool = True, loggers: str = "default",
                checkpoint: bool = True) -> float:
    """Seconds of ``Tuner.fit`` for one variant (called in a fresh interpreter)."""
    import ray
    from ray import tune
    from ray.tune.logger import JsonLoggerCallback

    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    if loggers == "json":
        os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1"
    ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        tuner = tune.Tuner(
            placeholder_trial,
            param_space={"reports": reports, "checkpoint": checkpoint, "i": tune.grid_search(list(range(trials)))},
            tune_config=tune.TuneConfig(max_concurrent_trials=1, reuse_actors=reuse),
            run_config=tune.RunConfig(
                storage_path=str(Path(os.environ.get("TMPDIR", "/tmp")) / "trial_overhead"), verbose=0,
                callbacks=[JsonLoggerCallback()] if loggers == "json" else None,
                checkpoint_config=tune.CheckpointConfig(num_to_keep=1, checkpoint_score_attribute="val_acc",
                                                        checkpoint_score_order="max")),
        )
        start = time.perf_counter()
        results = tuner.fit()
        seconds = time.perf_counter() - start
        assert not results.errors, results.errors
        return seconds
    finally:
        ray.shutdown()


def measure(name: str, trials: int, reports: int) -> float:
    """Runs one variant in its own interpreter (environment variables apply from Ray's start)."""
    spec = dict(VARIANTS[name])
    env = {**os.environ, **spec.pop("env", {}), "PYTHONPATH": f"{ROOT}:{ROOT / 'benchmarks'}"}
    code = ("import trial_overhead as t; "
            f"print('PER_TRIAL', t.run_variant({trials}, {reports}, **{spec!r}))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("PER_TRIAL")]
    if proc.returncode or not lines:
        raise RuntimeError(f"{name} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    return float(lines[-1].split()[1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--trials", type=int, default=12)
    p.add_argument("--reports", type=int, default=4)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "trial_overhead.json"))
    args = p.parse_args()
    figures = {}
    print(f"{'variant':<24} {'first trial':>11} {'each later trial':>16}   (seconds; {args.trials} trials, "
          f"{args.reports} reports each, median of {args.repeats})")
    for name in VARIANTS:
        ones = [measure(name, 1, args.reports) for _ in range(args.repeats)]
        many = [measure(name, args.trials, args.reports) for _ in range(args.repeats)]
        first = statistics.median(ones)
        later = (statistics.median(many) - first) / (args.trials - 1)
        figures[name] = {"first_trial_s": first, "later_trial_s": later, "fit_s_one": ones, "fit_s_many": many}
        print(f"{name:<24} {first:11.2f} {later:16.2f}", flush=True)
    import ray
    import torch

    record = {"trials": args.trials, "reports": args.reports, "repeats": args.repeats, "figures": figures,
              "machine": describe(),
              "torch": torch.__version__, "ray": ray.__version__,
              "command": "python benchmarks/trial_overhead.py " + " ".join(sys.argv[1:])}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(record, indent=2))
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()

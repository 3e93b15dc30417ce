"""This project against the script a user would write instead (``handwritten_tune_script.py``: Ray Tune +
OptunaSearch + ASHA over PyTorch's MNIST example): the same 4-trial, 2-epoch MNIST search, each timed as a whole
command (a fresh interpreter: imports, Ray's start, the search, the winner tested once), one after the other.

    SEARCH_DATA_DIR=../shared/data python benchmarks/handwritten_tune.py [--trials 4] [--epochs 2] [--out FILE]

This project runs ``python -m search.run --model cnn --gpus 0 --num-samples 4 --max-epochs 2`` with its whole
path (exports, the winner's test, bundle and ONNX check, cost to run, the classical baselines, the report), the
dashboard on. Both use the machine's CPUs, one a trial.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from machine import describe  # noqa: E402  (benchmarks/machine.py: a script's folder is on its path)
from time_to_99 import tutorial_root  # noqa: E402
from trainables.data import resolve_data_dir  # noqa: E402


def timed(command: list[str], env: dict[str, str]) -> dict:
    start = time.perf_counter()
    proc = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode:
        raise SystemExit(f"{' '.join(command)} exited {proc.returncode}:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return {"command": " ".join(command), "seconds": round(seconds, 1), "last_lines": proc.stdout.strip().splitlines()[-3:]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--trials", type=int, default=4)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "handwritten_tune.json")
    args = p.parse_args()
    cpus = str(os.cpu_count() or 1)
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "PYTHONPATH": str(ROOT)}
    root = tutorial_root(resolve_data_dir(None))  # torchvision reads the raw files uncompressed (not timed)
    storage = Path(tempfile.mkdtemp(prefix="handwritten-ours-"))
    try:
        script = timed([sys.executable, str(ROOT / "benchmarks" / "handwritten_tune_script.py"), str(root),
                        "--trials", str(args.trials), "--epochs", str(args.epochs), "--cpus", cpus], env)
        print(f"script: {script['seconds']} s; {script['last_lines'][-1]}", flush=True)
        ours = timed([sys.executable, "-m", "search.run", "--model", "cnn", "--gpus", "0", "--cpus", cpus,
                      "--num-samples", str(args.trials), "--max-epochs", str(args.epochs), "--verbose", "0",
                      "--storage-path", str(storage)], env)
        print(f"this project: {ours['seconds']} s", flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(storage, ignore_errors=True)
    record = {"machine": describe(), "trials": args.trials, "epochs": args.epochs, "script": script, "ours": ours,
              "ratio": round(script["seconds"] / ours["seconds"], 2)}
    print(f"ratio: {record['ratio']}x")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=1))
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()

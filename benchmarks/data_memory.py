"""How much memory a search's data takes (a benchmark, not a test).

    python benchmarks/data_memory.py [--sizes 128 256 512] [--baseline REV] [--out benchmarks/results/data_memory.json]

A folder of 10,000 PNG images (Fashion-MNIST's first 10,000 training images, 1,000 a class, written once) is
searched made RGB at each ``--sizes`` (0.49, 1.97 and 7.86 GB decoded at 128, 256 and 512 pixels). For each size,
in fresh processes:

- ``load_dataset``: decode (or read the cache), carve and normalize; peak resident set (VmHWM) and peak anonymous
  memory (RssAnon, sampled every 20 ms) over the process's baseline after its imports;
- a trial process: the training split unpickled as a trial receives it, every image read; its anonymous memory's
  growth (a private copy of the data would show here; pages of a shared map do not);
- the search command: ``python -m search.run --model cnn`` with 2 trials of 1 epoch on 512 of the training
  images and 200 validation images (every split is still carved and mapped whole), the machine's used memory
  (MemTotal - MemAvailable, sampled every 50 ms: anonymous and shared memory, Ray's object store included, page
  cache left out) at its peak over its value before the command; and the same command on a 100-image folder,
  its start-up baseline (torch, Ray, the trial processes).

With ``--baseline REV`` the same for git revision REV (a worktree), for the sizes it survives. Needs
Fashion-MNIST under $SEARCH_DATA_DIR.
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

from machine import describe  # benchmarks/machine.py: a script's folder is on its path

ROOT = Path(__file__).resolve().parents[1]
COUNT = 10_000

LOAD = """
import json, sys, threading, time
from pathlib import Path
import torch  # the imports' memory is the baseline, not the data's
from trainables.data import load_dataset
def status(field):
    return int(next(l for l in Path('/proc/self/status').read_text().splitlines() if l.startswith(field)).split()[1]) * 1024
peak = {'anon': 0}
def sample():
    while True:
        peak['anon'] = max(peak['anon'], status('RssAnon'))
        time.sleep(0.02)
threading.Thread(target=sample, daemon=True).start()
Path('/proc/self/clear_refs').write_text('5')
base_rss, base_anon = status('VmRSS'), status('RssAnon')
started = time.perf_counter()
data = load_dataset(sys.argv[1], image_size=int(sys.argv[2]), channels=3, cache_dir=sys.argv[3])
seconds = time.perf_counter() - started
time.sleep(0.05)
nbytes = sum(s.images.numel() for s in (data.train, data.val, data.test))
import pickle
Path(sys.argv[4]).write_bytes(pickle.dumps(data.train))
print(json.dumps({'decoded_bytes': nbytes, 'seconds': seconds, 'peak_rss_over_baseline': status('VmHWM') - base_rss,
                  'peak_anon_over_baseline': peak['anon'] - base_anon, 'streamed': bool(getattr(data.train, 'streamed', False))}))
"""

TRIAL = """
import json, pickle, sys
from pathlib import Path
import torch, trainables.data
def status(field):
    return int(next(l for l in Path('/proc/self/status').read_text().splitlines() if l.startswith(field)).split()[1]) * 1024
before = status('RssAnon')
split = pickle.loads(Path(sys.argv[1]).read_bytes())
total = sum(int(split.images[i:i + 256].sum()) for i in range(0, len(split), 256))
print(json.dumps({'train_bytes': split.images.numel(), 'anon_growth': status('RssAnon') - before}))
"""


def used_memory() -> int:
    """The machine's memory in use that cannot be reclaimed (MemTotal - MemAvailable: anonymous and shared
    memory, Ray's object store included, each page once; page cache of files left out), in bytes."""
    fields = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in Path("/proc/meminfo").read_text().splitlines()}
    return fields["MemTotal"] - fields["MemAvailable"]


def write_folder(root: Path, count: int = COUNT) -> None:
    sys.path.insert(0, str(ROOT))
    from PIL import Image

    import imagesets

    raw = imagesets.get("fashion_mnist").read(Path(os.environ["SEARCH_DATA_DIR"]))
    images, labels = raw.splits["train"]
    taken = {c: 0 for c in range(10)}
    for image, label in zip(images, labels):
        if taken[int(label)] < count // 10:
            path = root / raw.class_names[int(label)].replace("/", "-") / f"{sum(taken.values()):05d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(path)
            taken[int(label)] += 1


def run_json(code: str, *args: str, cwd: Path) -> dict:
    proc = subprocess.run([sys.executable, "-c", code, *args], cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        return {"error": f"exit {proc.returncode}: {proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else ''}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def search_peak(folder: Path, size: int, cache: Path, out: Path, cwd: Path, train_size: int = 512,
                val_size: int = 200) -> dict:
    """The machine's used memory (``used_memory``) at the search command's peak, over its value just before."""
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "SEARCH_CACHE_DIR": str(cache)}
    command = [sys.executable, "-m", "search.run", "--model", "cnn", "--gpus", "0", "--dataset", str(folder),
               "--image-size", str(size), "--channels", "3", "--num-samples", "2", "--max-epochs", "1",
               "--grace-period", "1", "--train-size", str(train_size), "--val-size", str(val_size), "--storage-path",
               str(out), "--no-dashboard", "--verbose", "0", "--cpus", "2"]
    before = used_memory()
    proc = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peak, started = before, time.perf_counter()
    while proc.poll() is None:
        peak = max(peak, used_memory())
        time.sleep(0.05)
    output = proc.stdout.read()
    return {"exit": proc.returncode, "seconds": time.perf_counter() - started, "peak_over_before": peak - before,
            "killed": proc.returncode in (-9, 137), "last_line": output.strip().splitlines()[-1] if output.strip() else ""}


def measure(cwd: Path, folder: Path, sizes: list[int], work: Path, search: bool) -> dict:
    results = {}
    if search:  # the same command on 100 images: what the search takes without data (torch, Ray, workers)
        results["startup"] = search_peak(work / "tiny", 128, work / f"cache-{cwd.name}-tiny", work / f"out-{cwd.name}-tiny",
                                         cwd, train_size=40, val_size=10)
        print("startup", json.dumps(results["startup"]), flush=True)
    for size in sizes:
        cache = work / f"cache-{cwd.name}-{size}"
        pickled = work / "train.pkl"
        load = run_json(LOAD, str(folder), str(size), str(cache), str(pickled), cwd=cwd)
        row = {"load": load}
        if "error" not in load:
            row["trial"] = run_json(TRIAL, str(pickled), cwd=cwd)
            if search:
                row["search"] = search_peak(folder, size, cache, work / f"out-{cwd.name}-{size}", cwd)
        results[str(size)] = row
        print(size, json.dumps(row), flush=True)
        subprocess.run(["rm", "-rf", str(cache), str(pickled)])
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 256, 512])
    parser.add_argument("--baseline", default=None, help="a git revision to measure too (its worktree)")
    parser.add_argument("--baseline-sizes", type=int, nargs="+", default=None)
    parser.add_argument("--no-search", action="store_true", help="only load_dataset and a trial process")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "data_memory.json"))
    args = parser.parse_args()
    record = {"machine": describe(), "memory_total_bytes": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"),
              "command": " ".join(["python", "benchmarks/data_memory.py", *sys.argv[1:]]), "images": COUNT}
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as tmp:
        work = Path(tmp)
        write_folder(work / "folder")
        write_folder(work / "tiny", 100)
        record["after"] = measure(ROOT, work / "folder", args.sizes, work, not args.no_search)
        if args.baseline:
            tree = work / "baseline"
            subprocess.run(["git", "worktree", "add", "-q", "--detach", str(tree), args.baseline], cwd=ROOT, check=True)
            try:
                record["before"] = measure(tree, work / "folder", args.baseline_sizes or args.sizes, work,
                                           not args.no_search)
                record["baseline"] = args.baseline
            finally:
                subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT)
    Path(args.out).write_text(json.dumps(record, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    if not os.environ.get("SEARCH_DATA_DIR"):
        sys.exit("set SEARCH_DATA_DIR to the folder holding FashionMNIST/raw")
    main()

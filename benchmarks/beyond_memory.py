"""A search on decoded data larger than the machine's memory, beside the same search on data that fits
(a benchmark, not a test).

    python benchmarks/beyond_memory.py [--images 34000] [--size 512] [--out benchmarks/results/beyond_memory.json]

A folder of ``--images`` PNG files (Fashion-MNIST's first training images, as in ``data_memory.py``) is searched
made RGB at ``--size`` pixels: 34,000 images at 512 px are 26.7 GB decoded, more than this machine's 24 GiB of
memory, so the search reads its splits from the memory-mapped cache on disk in block order
(``trainables.batches.block_order``). The same command on the folder's first tenth (2.7 GB, in memory) is the
comparison. For each: ``python -m search.run --model cnn`` with 2 trials at once of 1 epoch over every training
image (a strided first block of 8 channels, so that two trials on 2 cores finish an epoch of 26 GB in minutes),
the machine's used memory at its peak over its value before (MemTotal - MemAvailable: anonymous and shared memory, page cache
left out), whether it was killed, and each trial's training speed (``train_time_s`` over the training images).

Then, for the large cache: the disk's sequential read speed (the training split's file read in 16 MiB pieces
after its pages were dropped from the page cache with ``posix_fadvise(DONTNEED)``), and one pass of the trial's
own batch iterator (``trainables.batches.iterate``, block order, no model) over the same file, dropped again:
what the data path alone reaches, the speed an epoch tends to where the model costs nothing.

Needs Fashion-MNIST under $SEARCH_DATA_DIR and about 2.1x the decoded size free on disk (the decoded cache and
its carved splits); the work folder is removed at the end.

    python benchmarks/beyond_memory.py --loader-only [--times-memory 2] [--out benchmarks/results/twice_memory.json]

The data path alone on a map larger still: a split file of ``--times-memory`` x the machine's memory (512 px RGB
images of random bytes, written here: a search of it would take hours of CNN time on 2 cores), its disk read and
one pass of the batch iterator over it as above, beside the same pass over a 4 GB file that is in the page cache.
Needs that size free on disk (about 51 GB for 2x 23.5 GiB).
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

from data_memory import used_memory, write_folder  # benchmarks/: a script's folder is on its path
from machine import describe

ROOT = Path(__file__).resolve().parents[1]
PIECE = 16 * 2**20

# Both scripts drop the file's pages from the page cache before (and the read after) they time, unless their
# last argument is "keep": then they time what the page cache holds.
DISK_READ = """
import json, os, sys, time
path, drop = sys.argv[1], sys.argv[-1] != 'keep'
fd = os.open(path, os.O_RDONLY)
if drop: os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
started, total = time.perf_counter(), 0
while chunk := os.read(fd, int(sys.argv[2])):
    total += len(chunk)
seconds = time.perf_counter() - started
if drop: os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
print(json.dumps({'bytes': total, 'seconds': seconds, 'mb_per_s': total / seconds / 1e6}))
"""

LOADER_PASS = """
import json, os, sys, time
import numpy as np, torch
from trainables.batches import iterate
from trainables.data import Split
path, labels, drop = sys.argv[1], sys.argv[2], sys.argv[-1] != 'keep'
fd = os.open(path, os.O_RDONLY)
if drop: os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
torch.set_num_threads(1)
images = np.load(path, mmap_mode='r')
split = Split(torch.from_numpy(images), torch.from_numpy(np.load(labels)), file=path, streamed=True)
started, seen = time.perf_counter(), 0
for inputs, _ in iterate(split, 64, [0.5] * images.shape[1], [0.25] * images.shape[1], shuffle=True,
                         generator=torch.Generator().manual_seed(0)):
    seen += len(inputs)
seconds = time.perf_counter() - started
print(json.dumps({'images': seen, 'bytes': int(images[0].nbytes) * seen, 'seconds': seconds,
                  'mb_per_s': int(images[0].nbytes) * seen / seconds / 1e6}))
"""


def run_json(code: str, *args: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    if proc.returncode != 0:
        return {"error": f"exit {proc.returncode}: {proc.stderr.strip()[-2000:]}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def search(folder: Path, size: int, cache: Path, out: Path) -> dict:
    """The search command, its peak used memory over the value before it, and each trial's training speed."""
    command = [sys.executable, "-m", "search.run", "--model", "cnn", "--gpus", "0", "--cpus", "2", "--dataset",
               str(folder), "--image-size", str(size), "--channels", "3", "--num-samples", "2", "--max-epochs", "1",
               "--grace-period", "1", "--max-concurrent", "2", "--val-size", "500", "--set", "stride=2", "--set", "channels=8",
               "--set", "batch_size=64", "--storage-path", str(out), "--name", "search", "--no-dashboard",
               "--verbose", "1"]
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "SEARCH_CACHE_DIR": str(cache)}
    before = used_memory()
    log = out.with_suffix(".log")
    with log.open("w") as stream:
        proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=stream, stderr=subprocess.STDOUT)
        peak, started = before, time.perf_counter()
        while proc.poll() is None:
            peak = max(peak, used_memory())
            time.sleep(0.05)
    record = {"command": " ".join(["python -m search.run", *command[3:]]), "exit": proc.returncode,
              "seconds": time.perf_counter() - started, "peak_used_over_before": peak - before,
              "killed": proc.returncode in (-9, 137), "log_tail": log.read_text()[-1500:]}
    if proc.returncode == 0:
        import pandas as pd

        data = json.loads((out / "search" / "dataset.json").read_text())
        trials = pd.read_parquet(out / "search" / "trials.parquet")
        train_images = int(data["sizes"]["train"])
        record.update(sizes=data["sizes"], streamed="trials read it from disk in blocks" in log.read_text(),
                      train_time_s=trials["train_time_s"].tolist(),
                      images_per_s=[train_images / s for s in trials["train_time_s"]],
                      mb_per_s=[train_images * data["image_size"] ** 2 * data["channels"] / s / 1e6
                                for s in trials["train_time_s"]], devices=trials["device"].tolist())
    return record


def write_split(path: Path, nbytes: int, size: int = 512) -> Path:
    """A split file of about ``nbytes``: 3 x ``size`` x ``size`` uint8 images, random bytes (so nothing on the
    way compresses or skips them), written sequentially; its labels beside it."""
    import numpy as np

    count = max(1, nbytes // (3 * size * size))
    images = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(count, 3, size, size))
    block = np.random.default_rng(0).integers(0, 256, size=(256, 3, size, size), dtype=np.uint8)  # 201 MB
    for start in range(0, count, len(block)):
        images[start:start + len(block)] = block[:count - start]
    images.flush()
    del images
    os.sync()  # written back before anything is timed: the disk then only reads
    np.save(path.with_name("train_labels.npy"), np.arange(count, dtype=np.int64) % 10)
    return path


def loader_only(work: Path, times_memory: float, record: dict) -> None:
    """The disk's read speed and the batch iterator's over a file of ``times_memory`` x memory, and the iterator's
    over a file in the page cache (read once before): does the disk or the CPU set the epoch's pace?"""
    (work / "cached").mkdir()
    cached = write_split(work / "cached" / "train_images.npy", 4 * 10**9)
    run_json(DISK_READ, str(cached), str(PIECE), "keep")  # read once: into the page cache
    record["cached_bytes"] = cached.stat().st_size
    record["loader_pass_cached"] = run_json(LOADER_PASS, str(cached), str(cached.with_name("train_labels.npy")), "keep")
    print("loader pass, in the page cache", json.dumps(record["loader_pass_cached"]), flush=True)
    shutil.rmtree(cached.parent)
    (work / "big").mkdir()
    big = write_split(work / "big" / "train_images.npy", int(times_memory * record["memory_bytes"]))
    record["map_bytes"] = big.stat().st_size
    record["disk_read"] = run_json(DISK_READ, str(big), str(PIECE))
    print("disk read", json.dumps(record["disk_read"]), flush=True)
    record["loader_pass"] = run_json(LOADER_PASS, str(big), str(big.with_name("train_labels.npy")))
    print("loader pass, from disk", json.dumps(record["loader_pass"]), flush=True)


def splits_file(cache: Path) -> tuple[Path, Path]:
    images = next(cache.rglob("train_images.npy"))
    return images, images.with_name("train_labels.npy")


def searches(work: Path, args: argparse.Namespace, record: dict) -> None:
    """The search on the whole folder and on its first tenth, then the data path on the whole one's split."""
    big, small = work / "big", work / "small"
    write_folder(big, args.images)
    for path in big.rglob("*.png"):  # the first tenth of each class
        if int(path.stem) % 10 == 0:
            (small / path.parent.name).mkdir(parents=True, exist_ok=True)
            shutil.copy(path, small / path.parent.name / path.name)
    for name, folder in (("in_memory", small), ("beyond_memory", big)):
        cache = work / f"cache-{name}"
        record[name] = search(folder, args.size, cache, work / f"out-{name}")
        print(name, json.dumps({k: v for k, v in record[name].items() if k != "log_tail"}), flush=True)
        if name == "beyond_memory" and record[name]["exit"] == 0:
            images, labels = splits_file(cache)
            record["disk_read"] = run_json(DISK_READ, str(images), str(PIECE))
            print("disk read", json.dumps(record["disk_read"]), flush=True)
            record["loader_pass"] = run_json(LOADER_PASS, str(images), str(labels))
            print("loader pass", json.dumps(record["loader_pass"]), flush=True)
        shutil.rmtree(cache, ignore_errors=True)



def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=34_000)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--loader-only", action="store_true",
                        help="only the data path, on a split file of --times-memory x memory")
    parser.add_argument("--times-memory", type=float, default=2.0)
    parser.add_argument("--work", default=None, help="work folder (default: a new one under /tmp, removed after)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "beyond_memory.json"))
    args = parser.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="beyond-memory-"))
    record: dict = {"machine": describe(), "memory_bytes": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")}
    if args.loader_only:
        record["command"] = f"python benchmarks/beyond_memory.py --loader-only --times-memory {args.times_memory}"
    else:
        record.update(command=f"python benchmarks/beyond_memory.py --images {args.images} --size {args.size}",
                      decoded_bytes=args.images * 3 * args.size ** 2)
    try:
        if args.loader_only:
            loader_only(work, args.times_memory, record)
        else:
            searches(work, args, record)
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    Path(args.out).write_text(json.dumps(record, indent=2, default=str))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

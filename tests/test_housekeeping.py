"""The cache folder's housekeeping: what killed preparations leave is removed, what a live one writes is not,
and old caches can be pruned."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from imagesets.cache import prepare
from imagesets.housekeeping import LOCK_SUFFIX, caches, main, sweep

WRITER = """
import os, signal, sys, time
from pathlib import Path
from imagesets.housekeeping import Staging
staging = Staging(Path(sys.argv[1]), '.0123456789abcdef0123-')
folder = staging.__enter__()
(folder / 'train_images.npy').write_bytes(b'x' * 2**20)  # a decode under way
print(folder, flush=True)
if sys.argv[2] == 'killed':
    os.kill(os.getpid(), signal.SIGKILL)
time.sleep(60)
"""


def start_writer(cache: Path, how: str) -> tuple[subprocess.Popen, Path]:
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(cache), how], stdout=subprocess.PIPE, text=True,
                            cwd=Path(__file__).resolve().parents[1])
    folder = Path(proc.stdout.readline().strip())
    assert folder.is_dir()
    return proc, folder


def age(path: Path, seconds: float = 3600) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


def test_a_killed_preparations_staging_folder_is_removed_by_the_next_preparation(tmp_path):
    proc, folder = start_writer(tmp_path, "killed")
    assert proc.wait(timeout=30) == -signal.SIGKILL
    age(Path(f"{folder}{LOCK_SUFFIX}"))
    legacy = tmp_path / ".fedcba9876543210fedc-abcd1234"  # an older release's staging folder: no lock beside it
    legacy.mkdir()
    unrelated = tmp_path / ".keep"
    unrelated.mkdir()
    decoded = prepare("digits", cache_dir=tmp_path)
    assert not folder.exists() and not Path(f"{folder}{LOCK_SUFFIX}").exists() and not legacy.exists()
    assert unrelated.is_dir() and decoded.splits["train"][0].shape[1:] == (1, 8, 8)


def test_a_staging_folder_a_live_process_writes_is_left_alone(tmp_path):
    proc, folder = start_writer(tmp_path, "live")
    try:
        age(Path(f"{folder}{LOCK_SUFFIX}"))  # old, but its writer holds the lock
        assert sweep(tmp_path) == 0 and (folder / "train_images.npy").is_file()
    finally:
        proc.kill()
        proc.wait(timeout=30)
    assert sweep(tmp_path) >= 2**20 and not folder.exists()  # its writer gone: litter, and its bytes counted


def test_caches_unused_for_a_while_are_listed_and_pruned(tmp_path, capsys):
    old = prepare("digits", cache_dir=tmp_path, image_size=16).cache
    recent = prepare("digits", cache_dir=tmp_path).cache
    age(old / "meta.json", 40 * 86_400)
    assert [c.folder for c in caches(tmp_path)] == [old, recent]  # least recently used first
    assert main(["--cache-dir", str(tmp_path), "--older-than", "30", "--dry-run"]) == 0
    assert "would remove 1 cache(s)" in capsys.readouterr().out and old.is_dir()
    assert main(["--cache-dir", str(tmp_path), "--older-than", "30"]) == 0
    out = capsys.readouterr().out
    assert "removed 1 cache(s)" in out and "in 1 data set(s)" in out
    assert not old.exists() and recent.is_dir()
    # Using a cache makes it recent again: an old cache read by a search is kept.
    age(recent / "meta.json", 40 * 86_400)
    prepare("digits", cache_dir=tmp_path)
    assert main(["--cache-dir", str(tmp_path), "--older-than", "30"]) == 0 and recent.is_dir()

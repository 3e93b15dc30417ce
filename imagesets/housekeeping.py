"""The cache folder's housekeeping: staging folders a killed preparation left, how much the cache holds, and
pruning caches no search has used for a while.

Every cache (a decoded data set, its carved splits) is written into a hidden staging folder and renamed into
place when complete. A process killed while writing leaves its staging folder behind (gigabytes, for a large
folder of images). To tell those from folders another search is writing right now, each staging folder has a
lock file beside it that its writer holds (``fcntl.flock``) for as long as it writes: the kernel drops the lock
when the writer dies, however it dies, so a staging folder whose lock can be taken is litter. ``sweep`` removes
that litter; preparing a data set sweeps first.

    python -m imagesets.housekeeping [--cache-dir DIR] [--older-than DAYS] [--dry-run]

lists the caches with their sizes and last use, and with ``--older-than`` removes those unused for that many
days (a search in progress keeps reading what it mapped: Linux frees a removed file's pages only when the last
map of it closes).
"""

from __future__ import annotations

import argparse
import fcntl
import os
import re
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

LOCK_SUFFIX = ".lock"
# A staging folder's name: "." + a cache key (20 hex digits, imagesets.cache._key), or "." + "splits-" + a
# splits key, then "-" and tempfile's random letters. Nothing else in the cache folder is touched.
STAGING_NAME = re.compile(r"^\.(splits-)?[0-9a-f]{16,}-[A-Za-z0-9_]+$")
LOCK_GRACE_S = 5.0  # a lock file younger than this may be between its creation and its writer's lock
USED_FILE = "meta.json"  # a cache's marker, touched at each use: its modification time is the last use


def default_cache_dir() -> Path:
    """``$SEARCH_CACHE_DIR``, else ``$XDG_CACHE_HOME/hpsearch``, else ``~/.cache/hpsearch``."""
    if os.environ.get("SEARCH_CACHE_DIR"):
        return Path(os.environ["SEARCH_CACHE_DIR"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "hpsearch"


class Staging:
    """A new hidden folder under ``parent`` to write into (``with Staging(...) as folder``), removed on the
    way out; while it exists this process holds the lock on ``<folder>.lock`` beside it. Creating it raises
    ``OSError`` where ``parent`` is not writable."""

    def __init__(self, parent: Path, prefix: str) -> None:
        parent.mkdir(parents=True, exist_ok=True)
        self._fd, lock = tempfile.mkstemp(prefix=prefix, suffix=LOCK_SUFFIX, dir=parent)
        self.lock = Path(lock)
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        self.folder = self.lock.with_name(self.lock.name[: -len(LOCK_SUFFIX)])
        self.folder.mkdir()

    def __enter__(self) -> Path:
        return self.folder

    def __exit__(self, *exc: object) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)  # gone already where it was renamed into place
        self.lock.unlink(missing_ok=True)
        os.close(self._fd)


def _abandoned(lock: Path) -> bool:
    """Whether no live process holds ``lock`` (taking it, briefly, to find out)."""
    try:
        if time.time() - lock.stat().st_mtime < LOCK_GRACE_S:
            return False
        fd = os.open(lock, os.O_RDWR)
    except FileNotFoundError:
        return False  # its writer finished meanwhile
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)


def sweep(parent: Path) -> int:
    """Remove the staging folders under ``parent`` that no live process is writing (and their locks); the
    bytes freed."""
    freed = 0
    for entry in (sorted(parent.iterdir()) if parent.is_dir() else []):
        name = entry.name.removesuffix(LOCK_SUFFIX)
        if not STAGING_NAME.match(name):
            continue
        folder, lock = entry.with_name(name), entry.with_name(name + LOCK_SUFFIX)
        if entry == lock:
            dead = _abandoned(lock)
        else:  # a staging folder exists only while its lock does: one without was left by a kill (or an older release)
            dead = entry.is_dir() and not lock.exists()
        if dead:
            freed += folder_bytes(folder)
            shutil.rmtree(folder, ignore_errors=True)
            lock.unlink(missing_ok=True)
    return freed


def folder_bytes(folder: Path) -> int:
    """The bytes the files under ``folder`` take on disk (0 where it does not exist)."""
    return sum(p.stat().st_blocks * 512 for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


def touch(cache: Path) -> None:
    """Mark a cache as used now (``prune`` removes the caches unused longest)."""
    try:
        os.utime(cache / USED_FILE)
    except OSError:
        pass  # a read-only cache folder: its age stays that of its writing


@dataclass(frozen=True)
class CacheEntry:
    folder: Path
    bytes: int
    last_used: float  # unix time


def caches(cache_dir: Path) -> list[CacheEntry]:
    """The complete caches in ``cache_dir`` (folders with a ``meta.json``), least recently used first."""
    if not cache_dir.is_dir():
        return []
    found = [CacheEntry(f, folder_bytes(f), (f / USED_FILE).stat().st_mtime)
             for f in cache_dir.iterdir() if f.is_dir() and (f / USED_FILE).is_file()]
    return sorted(found, key=lambda c: c.last_used)


def describe_usage(cache_dir: Path) -> str:
    """One line: what the cache folder holds, and how to prune it."""
    entries = caches(cache_dir)
    total = sum(c.bytes for c in entries)
    return (f"cache {cache_dir}: {total / 1e9:.2f} GB in {len(entries)} data set(s); "
            f"prune with python -m imagesets.housekeeping --older-than DAYS")


def prune(cache_dir: Path, older_than_days: float, dry_run: bool = False) -> list[CacheEntry]:
    """Remove (unless ``dry_run``) the caches unused for more than ``older_than_days`` days; those removed."""
    cutoff = time.time() - older_than_days * 86_400
    old = [c for c in caches(cache_dir) if c.last_used < cutoff]
    if not dry_run:
        for entry in old:
            shutil.rmtree(entry.folder, ignore_errors=True)
    return old


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m imagesets.housekeeping",
                                     description="List the decoded-data caches; remove old ones and killed writes.")
    parser.add_argument("--cache-dir", default=None, help="the cache folder (default: $SEARCH_CACHE_DIR or "
                        "~/.cache/hpsearch)")
    parser.add_argument("--older-than", type=float, default=None, metavar="DAYS",
                        help="remove the caches no search has used for more than DAYS days")
    parser.add_argument("--dry-run", action="store_true", help="say what would be removed, remove nothing")
    args = parser.parse_args(argv)
    if args.older_than is not None and args.older_than < 0:
        parser.error(f"--older-than must be 0 or more days, got {args.older_than}")
    cache_dir = Path(args.cache_dir).expanduser() if args.cache_dir else default_cache_dir()
    if not args.dry_run:
        freed = sweep(cache_dir) + sum(sweep(c.folder) for c in caches(cache_dir))
        if freed:
            print(f"removed staging folders of killed preparations: {freed / 1e9:.2f} GB")
    now = time.time()
    for entry in caches(cache_dir):
        print(f"{entry.bytes / 1e9:8.2f} GB  used {(now - entry.last_used) / 86_400:6.1f} days ago  {entry.folder.name}")
    if args.older_than is not None:
        removed = prune(cache_dir, args.older_than, args.dry_run)
        verb = "would remove" if args.dry_run else "removed"
        print(f"{verb} {len(removed)} cache(s), {sum(c.bytes for c in removed) / 1e9:.2f} GB, unused for more than "
              f"{args.older_than:g} days")
    print(describe_usage(cache_dir))
    return 0


if __name__ == "__main__":
    sys.exit(main())

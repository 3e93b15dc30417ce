"""Files and folders that appear whole or not at all: written under a staging name beside their place, then renamed
onto it (``os.replace``, atomic on one filesystem). A reader sees the old version or the new one, never half of
one. An error leaves the old version and no staging file; a kill -9 mid-write may leave a hidden staging name
(``.name...``) beside it, never a half-written file under the real name, and the next write of a folder removes
what a killed writer left of it. Here, at the bottom layer, so that every
package writes through it.

The decoded cache keeps a commit of its own (``imagesets.cache.commit``): there the first of two searches
decoding the same data at once wins, and the second keeps the first's copy rather than replacing it.
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path


@contextlib.contextmanager
def staged_files(paths: Sequence[Path]) -> Iterator[list[Path]]:
    """Staging names for ``paths`` to write to in the block; each renamed onto its path once the block ends without
    error (all of them, after all are written), removed if it raises."""
    paths = [Path(p) for p in paths]
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
    staging = [p.with_name(f".{p.name}.{os.getpid()}.tmp") for p in paths]
    try:
        yield staging
    except BaseException:
        for tmp in staging:
            tmp.unlink(missing_ok=True)
        raise
    for tmp, path in zip(staging, paths):
        os.replace(tmp, path)


@contextlib.contextmanager
def staged_file(path: Path) -> Iterator[Path]:
    """A staging name for ``path`` (``staged_files`` of one)."""
    with staged_files([path]) as (tmp,):
        yield tmp


def write_text(path: Path, text: str) -> Path:
    """``path`` holding ``text``, written whole."""
    with staged_file(path) as tmp:
        tmp.write_text(text)
    return Path(path)


@contextlib.contextmanager
def staged_folder(folder: Path) -> Iterator[Path]:
    """A new folder beside ``folder`` to fill in the block; it replaces ``folder`` (an earlier one removed) once the
    block ends without error, and is removed if it raises. Its name says which process writes it, so that the next
    writer of ``folder`` removes what a killed one left (``.name-host-pid-XXXX``; a --resume rewrites the bundle a
    kill -9 cut short, and no half-written copy stays beside it)."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    for litter in abandoned_stagings(folder):
        shutil.rmtree(litter, ignore_errors=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}-{socket.gethostname()}-{os.getpid()}-", dir=folder.parent))
    try:
        yield staging
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(staging, folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def abandoned_stagings(folder: Path) -> list[Path]:
    """The staging folders of ``folder`` (``staged_folder``) whose writer, a process of this machine, is gone."""
    pattern = re.compile(rf"\.{re.escape(folder.name)}-(?P<host>.+)-(?P<pid>\d+)-[^-]+")
    found = []
    for path in folder.parent.glob(f".{glob.escape(folder.name)}-*"):
        match = pattern.fullmatch(path.name)
        if match and match["host"] == socket.gethostname() and not _alive(int(match["pid"])):
            found.append(path)
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True

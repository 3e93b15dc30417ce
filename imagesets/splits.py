"""The splits carved once into the cache: one contiguous file per split, read back as memory maps.

A search's train, validation and test images are rows picked out of the decoded cache (stratified, shuffled).
Picked into memory they would be a second copy of the data in every process that holds them; written once into
the cache folder, beside the decoded images, every process maps the same file, and the machine holds the data
once, in its page cache (or reads it from disk when it is larger than memory). The files are keyed by the indices
they hold, written in byte-bounded chunks, and renamed into place when complete, like the cache itself.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from imagesets.cache import Decoded, check_disk, commit
from imagesets.housekeeping import Staging, sweep

SPLITS_VERSION = 1
COPY_CHUNK_BYTES = 16 * 2**20  # images copied at once: the carving's own memory, whatever the data's size
DONE_FILE = "splits.json"  # written last: its presence marks complete split files


def splits_key(index: dict[str, tuple[str, np.ndarray]]) -> str:
    """A short hash of which rows each split holds, in which order."""
    digest = hashlib.blake2b(digest_size=10)
    digest.update(str(SPLITS_VERSION).encode())
    for split in sorted(index):
        source, rows = index[split]
        digest.update(f"{split}:{source}:{len(rows)}".encode())
        digest.update(np.ascontiguousarray(rows, dtype=np.int64).tobytes())
    return digest.hexdigest()


def copy_rows(source: np.ndarray, rows: np.ndarray, out: np.ndarray, chunk_bytes: int = COPY_CHUNK_BYTES) -> None:
    """``out[k] = source[rows[k]]`` for every k, ``chunk_bytes`` of images at a time, each chunk read from
    ``source`` in ascending order (a memory-mapped source is then read front to back, not at random)."""
    per_row = max(1, int(np.prod(source.shape[1:])) * source.itemsize)
    step = max(1, chunk_bytes // per_row)
    for start in range(0, len(rows), step):
        chunk = rows[start:start + step]
        order = np.argsort(chunk, kind="stable")
        out[start:start + len(chunk)][order] = source[chunk[order]]


def write_splits(decoded: Decoded, index: dict[str, tuple[str, np.ndarray]]) -> dict[str, tuple[np.ndarray, np.ndarray, Path]]:
    """``{split: (images as a read-only memory map, labels, the images' file)}``, the files written into the
    decoded cache's folder the first time these splits are asked for. Raises ``DataError`` (from
    ``check_disk``) where the disk cannot hold them; raises ``OSError`` where the cache folder is read-only."""
    folder = Path(decoded.cache) / f"splits-{splits_key(index)}"
    if not (folder / DONE_FILE).is_file():
        sweep(Path(decoded.cache))  # a killed carving's files first: they count against the disk check
        row_bytes = decoded.channels * decoded.image_size ** 2
        check_disk(sum(len(rows) for _, rows in index.values()) * row_bytes, Path(decoded.cache),
                   f"{decoded.name}'s splits")
        with Staging(Path(decoded.cache), f".{folder.name}-") as staging:
            for split, (source, rows) in index.items():
                images, labels = decoded.splits[source]
                out = np.lib.format.open_memmap(staging / f"{split}_images.npy", mode="w+", dtype=np.uint8,
                                                shape=(len(rows), *images.shape[1:]))
                copy_rows(images, rows, out)
                out.flush()
                del out
                np.save(staging / f"{split}_labels.npy", np.asarray(labels)[rows].astype(np.int64))
            (staging / DONE_FILE).write_text(json.dumps({"version": SPLITS_VERSION,
                                                         "sizes": {k: len(r) for k, (_, r) in index.items()}}))
            commit(staging, folder)
    return {split: (np.load(folder / f"{split}_images.npy", mmap_mode="r"), np.load(folder / f"{split}_labels.npy"),
                    folder / f"{split}_images.npy") for split in index}

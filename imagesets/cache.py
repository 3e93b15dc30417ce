"""Decode once, share everywhere: any data set -> a uint8 cache on disk, reused by later searches.

``prepare`` turns a registered data set or a folder of images into arrays of one channel count and
one size (``Decoded``), decoding only when the cache does not already hold them. The cache is keyed by
the source files' names, sizes and modification times and by the options, is written into a temporary
folder that is renamed into place when complete (a half-written cache is never read back), and is read
back as memory maps. It lives in a folder the user chooses (``--cache-dir``), so a read-only data folder
works.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import time
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from imagesets.decode import GRAY_MODES, conform_array, decode_into, read_headers
from imagesets.folder import Listing, file_stats, scan
from imagesets.housekeeping import Staging, default_cache_dir, sweep, touch
from imagesets.registry import DataError, Raw, get, is_registered

CACHE_VERSION = 1  # bump when the cache's layout or the conversion changes
MIN_SIZE, MAX_SIZE = 8, 512
MAX_LISTED = 10  # bad files named in one error
# The share of the memory available now that a data set may fill and still be searched from the page cache; a
# larger one is read from disk in blocks (trainables.batches). The search holds its data once (imagesets.splits):
# its peak is the start-up baseline plus about the decoded data (benchmarks/data_memory.py measures the factor).
MEMORY_SHARE = 0.8
# Memory a data set takes while searched from memory, in decoded data: its splits in the page cache (1x) and the
# search's own peak over its start-up (0.39-0.45x measured at 0.5-7.9 GB, benchmarks/data_memory.py).
PEAK_FACTOR = 1.5
DISK_MARGIN = 1.05  # free disk space kept beyond what the files take

@dataclass(frozen=True, kw_only=True)
class ImageSet:
    """What a decoded data set is, and where and how fast it came from: what ``Decoded`` (with its images) and a
    search's record of it (``trainables.data.DatasetInfo``: with its splits and normalization) share."""

    name: str  # the registered name, or the folder's name
    source: str  # the registered name, or the folder's absolute path
    class_names: tuple[str, ...]
    channels: int
    image_size: int
    mirror: bool = False  # a left-right flip keeps the class (augmentation may flip)
    skipped: int = 0  # files in a folder that were not images
    cache: Path = Path()  # the cache folder it was read from
    from_cache: bool = False  # read from a cache an earlier run wrote (else decoded now)
    prepare_s: float = 0.0  # to prepare it: decoding, or reading the cache

    def image_set(self) -> dict[str, object]:
        """These fields, to make another ``ImageSet`` of the same data set from."""
        return {f.name: getattr(self, f.name) for f in fields(ImageSet)}


@dataclass(frozen=True, kw_only=True)
class Decoded(ImageSet):
    """A data set as every trial sees it: per split, uint8 images (N, C, S, S) and int64 labels."""

    splits: dict[str, tuple[np.ndarray, np.ndarray]]  # train and test (when the source has one), val


def resolve_data_dir(data_dir: str | os.PathLike | None) -> Path:
    """``--data-dir`` if given, else ``$SEARCH_DATA_DIR``, else ``./data`` (where torchvision downloads)."""
    chosen = data_dir or os.environ.get("SEARCH_DATA_DIR") or "data"
    return Path(chosen).expanduser().resolve()


def available_memory() -> int:
    """Bytes of memory available now (Linux's MemAvailable), else the machine's total; at most
    ``$SEARCH_MEMORY_LIMIT`` bytes where it is set (a machine shared with other work: data beyond it is read
    from disk in blocks instead of filling the page cache)."""
    limit = os.environ.get("SEARCH_MEMORY_LIMIT")
    if limit:
        return min(int(float(limit)), _available_memory())
    return _available_memory()


def _available_memory() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def fits_in_memory(nbytes: int, available: int | None = None) -> bool:
    """Whether ``nbytes`` of decoded images can be searched from memory (the page cache): their peak, at the
    measured ``PEAK_FACTOR``, within ``MEMORY_SHARE`` of the memory available now. Else they are read from disk."""
    available = available_memory() if available is None else available
    return nbytes * PEAK_FACTOR <= available * MEMORY_SHARE


def free_disk(folder: Path) -> int:
    """Bytes free on the disk that holds ``folder`` (or its nearest existing parent)."""
    folder = Path(folder)
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return shutil.disk_usage(folder).free


def check_disk(nbytes: int, folder: Path, what: str, free: int | None = None) -> None:
    """Refuse, before anything is written, files of ``nbytes`` that the disk holding ``folder`` cannot take:
    the only size a data set is refused for (larger than memory is read from disk)."""
    free = free_disk(folder) if free is None else free
    if nbytes * DISK_MARGIN <= free:
        return
    raise DataError(f"{what}: {_bytes(nbytes)} of decoded images to write into {folder}, and its disk has "
                    f"{_bytes(free)} free. Free space there, choose a cache on a larger disk with --cache-dir (or "
                    "SEARCH_CACHE_DIR), or pass a smaller --image-size.")


def check_decoded_size(count: int, channels: int, size: int, what: str, cache_dir: Path,
                       free: int | None = None) -> None:
    """Before decoding: room on disk for the decoded cache and for the splits carved from it (twice the data),
    or a ``DataError`` that also names the largest ``--image-size`` that would fit."""
    free = free_disk(cache_dir) if free is None else free
    try:
        check_disk(2 * count * channels * size * size, cache_dir, what, free)
    except DataError as e:
        fits = int(math.isqrt(int(free / DISK_MARGIN / 2 // max(count * channels, 1))))
        hint = f" (--image-size {fits} would fit)" if fits >= MIN_SIZE else ""
        raise DataError(f"{e} It needs room for the decoded images and for the splits carved from them{hint}.") from None


def _bytes(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:,.0f} {unit}" if unit == "bytes" else f"{n:,.1f} {unit}"
        n /= 1024
    raise AssertionError


def prepare_options(image_size: int | None, channels: int | None) -> None:
    """Refuse an ``--image-size`` or ``--channels`` that no data set can be prepared with."""
    if image_size is not None and not MIN_SIZE <= image_size <= MAX_SIZE:
        raise DataError(f"--image-size {image_size}: choose a size between {MIN_SIZE} and {MAX_SIZE} pixels")
    if channels not in (None, 1, 3):
        raise DataError(f"--channels {channels}: choose 1 (gray) or 3 (RGB)")


def _key(parts: dict) -> str:
    return hashlib.blake2b(json.dumps(parts, sort_keys=True).encode(), digest_size=10).hexdigest()


def _read_cache(folder: Path) -> tuple[dict, dict[str, tuple[np.ndarray, np.ndarray]]]:
    meta = json.loads((folder / "meta.json").read_text())
    splits = {s: (np.load(folder / f"{s}_images.npy", mmap_mode="r"), np.load(folder / f"{s}_labels.npy"))
              for s in meta["splits"]}
    return meta, splits


def commit(staging: Path, final: Path) -> None:
    """Rename the complete staging folder into place; if another search got there first, keep its copy."""
    try:
        os.replace(staging, final)
    except OSError:
        if not (final / "meta.json").is_file():
            raise
        shutil.rmtree(staging, ignore_errors=True)


def _staging(cache_dir: Path, key: str) -> Staging:
    try:
        return Staging(cache_dir, f".{key}-")
    except OSError as e:
        raise DataError(f"cache folder {cache_dir} is not writable ({e.strerror}); choose another with --cache-dir "
                        "(or SEARCH_CACHE_DIR)") from None


def prepare(dataset: str, data_dir: str | os.PathLike | None = None, cache_dir: str | os.PathLike | None = None,
            image_size: int | None = None, channels: int | None = None, download: bool = True) -> Decoded:
    """``dataset`` (a registered name, or a folder of images) decoded to uint8 (N, C, S, S) arrays, from
    the cache when it holds them. ``image_size``/``channels`` force a size and a channel count (None:
    the data's own; a folder of mixed sizes needs ``image_size``). Raises ``DataError`` naming what is
    wrong and how to fix it."""
    prepare_options(image_size, channels)
    started = time.perf_counter()
    cache_dir = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    options = dict(version=CACHE_VERSION, image_size=image_size, channels=channels)
    if is_registered(dataset):
        spec = get(dataset)
        root = resolve_data_dir(data_dir)
        files = spec.locate(root, download)
        name, source, mirror = spec.name, spec.name, spec.mirror
        key = _key({**options, "source": name, "reader": spec.version, "files": file_stats(files)})
        fill = lambda staging: _from_raw(spec.read(root), staging, name, image_size, channels, cache_dir)  # noqa: E731
    elif Path(dataset).expanduser().is_dir():
        listing = scan(Path(dataset))
        name, source, mirror = listing.root.name, str(listing.root), False
        key = _key({**options, "source": source, "files": listing.stats()})
        fill = lambda staging: _from_folder(listing, staging, image_size, channels, cache_dir)  # noqa: E731
    else:
        get(dataset)  # raises: neither registered nor a folder
        raise AssertionError
    final = cache_dir / f"{name}-{key}"
    sweep(cache_dir)  # what killed preparations left: never read, and possibly gigabytes
    hit = (final / "meta.json").is_file()
    if not hit:
        with _staging(cache_dir, key) as staging:
            fill(staging)
            commit(staging, final)
    touch(final)
    meta, splits = _read_cache(final)
    return Decoded(name=name, source=source, class_names=tuple(meta["class_names"]), channels=meta["channels"],
                   image_size=meta["image_size"], splits=splits, mirror=mirror, skipped=meta["skipped"], cache=final,
                   from_cache=hit, prepare_s=round(time.perf_counter() - started, 3))


def _write_meta(staging: Path, class_names, channels: int, size: int, splits, skipped: int = 0) -> None:
    meta = dict(class_names=list(class_names), channels=channels, image_size=size, splits=list(splits),
                skipped=skipped)
    (staging / "meta.json").write_text(json.dumps(meta))  # written last: its presence marks a complete cache


def _from_raw(raw: Raw, staging: Path, name: str, image_size: int | None, channels: int | None,
              cache_dir: Path) -> None:
    """A registered data set's arrays, converted and saved into ``staging``."""
    first = next(iter(raw.splits.values()))[0]
    native_channels = 1 if first.ndim == 3 else 3
    if image_size is None and first.shape[1] != first.shape[2]:
        raise DataError(f"{name}: its images are {first.shape[2]}x{first.shape[1]}, not square; pass --image-size N")
    size = image_size or first.shape[1]
    chosen = channels or native_channels
    check_decoded_size(sum(len(l) for _, l in raw.splits.values()), chosen, size, name, cache_dir)
    for split, (images, labels) in raw.splits.items():
        np.save(staging / f"{split}_images.npy", conform_array(images, chosen, size))
        np.save(staging / f"{split}_labels.npy", labels.astype(np.int64))
    _write_meta(staging, raw.class_names, chosen, size, raw.splits)


def _listed(failures: list[tuple[str, str]], root: Path) -> str:
    shown = "; ".join(f"{os.path.relpath(p, root)} ({why})" for p, why in failures[:MAX_LISTED])
    more = f" and {len(failures) - MAX_LISTED} more" if len(failures) > MAX_LISTED else ""
    return shown + more


def _choose_shape(listing: Listing, headers: list[tuple[int, int, str]], image_size: int | None,
                  channels: int | None) -> tuple[int, int]:
    """(channels, size): gray if every image is, one size if they all share one square size."""
    chosen = channels or (1 if all(mode in GRAY_MODES for _, _, mode in headers) else 3)
    if image_size:
        return chosen, image_size
    sizes = sorted({(w, h) for w, h, _ in headers})
    if len(sizes) == 1 and sizes[0][0] == sizes[0][1]:
        return chosen, sizes[0][0]
    examples = ", ".join(f"{w}x{h}" for w, h in sizes[:5]) + (" ..." if len(sizes) > 5 else "")
    what = f"images of {len(sizes)} different sizes ({examples})" if len(sizes) > 1 else f"{examples} images (not square)"
    raise DataError(f"{listing.root} holds {what}; pass --image-size N to resize every image to NxN once (smaller "
                    "is faster to train, larger keeps more detail)")


def _from_folder(listing: Listing, staging: Path, image_size: int | None, channels: int | None,
                 cache_dir: Path) -> None:
    """Check every image's header, choose the channels and size, then decode them all into ``staging``."""
    from PIL import Image

    max_pixels = Image.MAX_IMAGE_PIXELS or float("inf")
    order = [(split, path, label) for split, rows in listing.files.items() for path, label in rows]
    headers = read_headers([path for _, path, _ in order], max_pixels)
    bad = [(path, h) for (_, path, _), h in zip(order, headers) if isinstance(h, str)]
    if bad:
        raise DataError(f"{listing.root}: {len(bad)} image file(s) cannot be read: {_listed(bad, listing.root)}. "
                        "Remove or replace them")
    chosen, size = _choose_shape(listing, headers, image_size, channels)
    check_decoded_size(len(order), chosen, size, str(listing.root), cache_dir)
    failed = []
    for split, rows in listing.files.items():
        out = staging / f"{split}_images.npy"
        np.lib.format.open_memmap(out, mode="w+", dtype=np.uint8, shape=(len(rows), chosen, size, size)).flush()
        failed += decode_into([path for path, _ in rows], str(out), chosen, size)
        np.save(staging / f"{split}_labels.npy", np.array([label for _, label in rows], dtype=np.int64))
    if failed:
        raise DataError(f"{listing.root}: {len(failed)} image file(s) are damaged (their headers read, their pixels "
                        f"do not): {_listed(failed, listing.root)}. Remove or replace them")
    _write_meta(staging, listing.class_names, chosen, size, listing.files, len(listing.skipped))

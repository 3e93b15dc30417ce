"""Carving a decoded data set into its splits, torch-free: which rows the train, validation and test splits hold
(stratified, with a fixed seed), the checks that every class can give each split an image, and the per-channel
statistics of the training split. ``carve_data`` does all of it for a command's data flags, so that the search
checks its flags against the data, and plans, before torch or Ray load; ``trainables.data`` then maps the splits
as tensors."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from imagesets.cache import Decoded, fits_in_memory, prepare
from imagesets.options import DataOptions
from imagesets.registry import DataError

DEFAULT_VAL_SIZE = 5_000  # validation images at most, when --val-size is not given
VAL_SHARE = 0.1  # ... and at most this share of the training images (small data sets)
TEST_SHARE = 0.2  # of a data set without a test split of its own, carved as its test split
SPLITS = ("train", "val", "test")


def _small_classes(counts: np.ndarray, needed: int, class_names: tuple[str, ...]) -> list[tuple[str, int]]:
    """(name, count) of each class with fewer than ``needed`` images."""
    return [(class_names[c], int(n)) for c, n in enumerate(counts) if n < needed]


def stratified_split(labels: np.ndarray, size: int, seed: int, class_names: tuple[str, ...],
                     what: str) -> tuple[np.ndarray, np.ndarray]:
    """(held-out indices, the rest): about ``size`` held out, each class in proportion and at least one of
    each, both parts shuffled (so that the first n of either is a fair subset). A class too small to
    give one image to each part is a ``DataError`` naming it."""
    rng = np.random.default_rng(seed)
    counts = np.bincount(labels, minlength=len(class_names))
    small = _small_classes(counts, 2, class_names)
    if small:
        listed = ", ".join(f"{name!r} ({n})" for name, n in small)
        raise DataError(f"class(es) {listed} have too few images to carve a {what} split from them: each class needs "
                        "at least 2 images there (3 when the test split is carved too); add images or remove the class")
    exact = counts * size / len(labels)
    take = np.floor(exact).astype(int)
    for c in np.argsort(-(exact - take), kind="stable")[: max(size - take.sum(), 0)]:  # largest remainders
        take[c] += 1
    take = np.clip(take, 1, counts - 1)
    held, rest = [], []
    for c in range(len(class_names)):
        members = rng.permutation(np.flatnonzero(labels == c))
        held.append(members[: take[c]])
        rest.append(members[take[c]:])
    return rng.permutation(np.concatenate(held)), rng.permutation(np.concatenate(rest))


STATS_CHUNK_BYTES = 8 * 2**20  # uint8 read at once for the statistics


def channel_stats(images: np.ndarray, chunk_bytes: int = STATS_CHUNK_BYTES) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and standard deviation of uint8 (N, C, H, W) images scaled to [0, 1], streamed over
    chunks of at most ``chunk_bytes`` (so a memory-mapped split is read once, front to back, and never held
    whole): a histogram of the 256 values per channel, from which the sums and sums of squares are exact
    integers, so any chunking gives the same answer, and no chunk is ever widened to a larger type."""
    channels = images.shape[1]
    counts = np.zeros((channels, 256), dtype=np.int64)
    rows = max(1, chunk_bytes // max(1, int(np.prod(images.shape[1:]))))
    for start in range(0, len(images), rows):
        chunk = np.asarray(images[start:start + rows])
        for c in range(channels):
            counts[c] += np.bincount(chunk[:, c].reshape(-1), minlength=256)
    values = np.arange(256, dtype=np.int64)
    n = counts.sum(axis=1).astype(np.float64)
    mean = (counts @ values) / (255.0 * n)
    std = np.sqrt(np.clip((counts @ values ** 2) / (255.0 ** 2 * n) - mean ** 2, 0.0, None))
    std = np.where(std > 0, std, 1.0)  # a constant channel: nothing to scale
    return tuple(round(float(m), 6) for m in mean), tuple(round(float(v), 6) for v in std)


def check_class_sizes(decoded: Decoded, needed: int) -> None:
    """Each class of the training images must give one image to each split carved from it."""
    counts = np.bincount(decoded.splits["train"][1], minlength=len(decoded.class_names))
    small = _small_classes(counts, needed, decoded.class_names)
    if small:
        listed = ", ".join(f"{name!r} has only {n} image{'s' if n != 1 else ''}" for name, n in small)
        carved = "the test and validation splits" if needed == 3 else "the validation split"
        raise DataError(f"{decoded.source}: class {listed}: carving {carved} from the training images needs at least "
                        f"{needed} per class (one for each split); add images or remove the class")


def default_val_size(train_size: int, num_classes: int) -> int:
    return max(num_classes, min(DEFAULT_VAL_SIZE, round(VAL_SHARE * train_size)))


def carve(decoded: Decoded, val_size: int | None, split_seed: int) -> tuple[dict[str, tuple[str, np.ndarray]], bool]:
    """Where each split's images come from: ``{split: (the decoded split it is drawn from, indices into it)}``,
    and whether the test split was carved. The test split is carved first where the data set has none, then
    validation from what remains (``val_size`` images, or the data set's own ``val`` split); the training
    indices are shuffled with the split seed, so that its first n images are a fair subset."""
    names = decoded.class_names
    labels = decoded.splits["train"][1]
    carved_test = "test" not in decoded.splits
    check_class_sizes(decoded, 1 + carved_test + ("val" not in decoded.splits))
    pool, index = np.arange(len(labels)), {}
    if carved_test:
        test_idx, rest = stratified_split(labels, max(len(names), round(TEST_SHARE * len(labels))), split_seed,
                                          names, f"test (from {decoded.source})")
        index["test"], pool = ("train", np.sort(test_idx)), np.sort(rest)
    if "val" in decoded.splits:
        index["train"] = ("train", np.random.default_rng(split_seed + 1).permutation(pool))
    else:
        size = val_size or default_val_size(len(pool), len(names))
        if not 0 < size < len(pool):
            raise DataError(f"--val-size {size}: the training split of {decoded.name} has {len(pool)} images; "
                            f"choose between 1 and {len(pool) - 1}")
        val_idx, train_idx = stratified_split(labels[pool], size, split_seed + 1, names,
                                              f"validation (from {decoded.source})")
        index["val"], index["train"] = ("train", pool[val_idx]), ("train", pool[train_idx])
    for split in ("test", "val"):
        if split not in index:  # the data set's own, in its own order
            index[split] = (split, np.arange(len(decoded.splits[split][1])))
    return index, carved_test


@dataclass(frozen=True)
class Carved:
    """A decoded data set and which of its rows each split holds, before any tensor exists."""

    decoded: Decoded
    index: dict[str, tuple[str, np.ndarray]]  # split: (the decoded split it is drawn from, its rows)
    test_carved: bool  # the test split was carved from the training images
    split_seed: int
    limit: tuple[int | None, int | None, int | None]  # (train, val, test) caps: --train-size, --smoke

    @property
    def full_sizes(self) -> dict[str, int]:
        """Each split's size before the caps."""
        return {split: len(self.index[split][1]) for split in SPLITS}

    @property
    def sizes(self) -> dict[str, int]:
        """Each split's size as searched and tested (its first rows up to its cap: a fair subset, shuffled)."""
        return {split: min(n, cap) if cap else n for (split, n), cap in zip(self.full_sizes.items(), self.limit)}

    @property
    def streamed(self) -> bool:
        """Whether the split files are larger than the memory available: trials then read them from disk in
        blocks."""
        decoded = self.decoded
        return not fits_in_memory(sum(self.full_sizes.values()) * decoded.channels * decoded.image_size ** 2)

    def labels(self, split: str) -> np.ndarray:
        """The labels of ``split`` as searched (capped)."""
        source, rows = self.index[split]
        return self.decoded.splits[source][1][rows[:self.sizes[split]]]


def carve_data(options: DataOptions, download: bool = True, split_seed: int = 0) -> Carved:
    """Decode (or read from the cache) the data ``options`` name and carve its splits; a ``DataError`` says what
    the data lacks."""
    decoded = prepare(options.dataset, options.data_dir, options.cache_dir, options.image_size, options.channels,
                      download)
    index, test_carved = carve(decoded, options.val_size, split_seed)
    return Carved(decoded, index, test_carved, split_seed, options.limit)

"""A decoded data set as the trials see it: uint8 tensors per split, carved honestly, normalized per channel.

``imagesets`` decodes a data set once (into its cache); this module carves the validation split (and
the test split, where the data set has none of its own) from the training images, stratified with a
fixed seed, computes the per-channel normalization on the training split, and holds each split as one
(N, C, H, W) uint8 tensor that batches are indexed from on the training device (``trainables.batches``)
instead of going through a per-sample ``DataLoader``.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from imagesets import DataError, ImageSet, resolve_data_dir  # noqa: F401  (re-exported: one error type)
from imagesets.carving import Carved, carve_data, channel_stats
from imagesets.folds import fold_ids
from imagesets.options import DataOptions
from imagesets.splits import write_splits
from models.registry import DataShape



def _tensor(array: np.ndarray) -> torch.Tensor:
    with warnings.catch_warnings():  # a read-only array (Ray's shared memory): the splits are never written to
        warnings.filterwarnings("ignore", "The given NumPy array is not writable")
        return torch.from_numpy(array)


@dataclass(frozen=True)
class Normalization:
    """How a data set's images become model inputs: per channel, (x / 255 - mean) / std with the mean and std of
    its training split, and whether a left-right flip keeps the class (augmentation may flip: photos, not digits)."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    mirror: bool = False


@dataclass
class Split:
    """Images as one (N, C, H, W) uint8 tensor and labels as one (N,) int64 tensor.

    ``file``: the .npy file the images are a memory map of (the split as carved into the cache), whose first
    N rows they are; every process that maps it shares the machine's one copy in the page cache.
    ``streamed``: the data is larger than memory, so batches are read in blocks (``trainables.batches``).
    ``norm``: its data set's normalization (every split of one data set carries the same): training and
    evaluation read it here, so it travels with the data wherever the split goes.
    """

    images: torch.Tensor
    labels: torch.Tensor
    file: str | None = None
    streamed: bool = False
    norm: Normalization | None = None

    @property
    def normalization(self) -> Normalization:
        if self.norm is None:
            raise ValueError("this split has no normalization: load it with load_dataset, or give Split(..., norm=)")
        return self.norm

    def __len__(self) -> int:
        return len(self.labels)

    def __reduce__(self):
        if self.file is not None and self.images.device.type == "cpu":
            # A trial process maps the same file: no copy is pickled, none is made.
            return _split_from_file, (self.file, len(self), self.labels.numpy(), self.streamed, self.norm)
        # Pickled as numpy arrays: Ray then keeps them in its shared object store and every trial process
        # on a machine maps that one copy instead of unpickling its own.
        return _split_from_numpy, (self.images.numpy(), self.labels.numpy(), self.norm)

    @property
    def nbytes(self) -> int:
        return self.images.numel() * self.images.element_size()

    def subset(self, n: int | None) -> "Split":
        """The first ``n`` examples (the split is already shuffled where that matters)."""
        if n is None or n >= len(self):
            return self
        return Split(self.images[:n], self.labels[:n], self.file, self.streamed, self.norm)

    def to(self, device: torch.device | str) -> "Split":
        if torch.device(device) == self.images.device:
            return self
        return Split(self.images.to(device), self.labels.to(device), norm=self.norm)

    def in_memory(self) -> "Split":
        """This split as a plain in-memory copy (for a Ray cluster: its nodes do not have this machine's files)."""
        return Split(_tensor(np.ascontiguousarray(self.images.numpy())), self.labels.clone(), norm=self.norm)

    def class_counts(self, num_classes: int) -> list[int]:
        return np.bincount(self.labels.numpy(), minlength=num_classes).tolist()


def _split_from_numpy(images: np.ndarray, labels: np.ndarray, norm: Normalization | None = None) -> Split:
    return Split(_tensor(images), _tensor(labels), norm=norm)


def _split_from_file(file: str, count: int, labels: np.ndarray, streamed: bool,
                     norm: Normalization | None = None) -> Split:
    return Split(_tensor(np.load(file, mmap_mode="r")[:count]), _tensor(labels), file, streamed, norm)


def fold_pairs(train: Split, val: Split, k: int, seed: int) -> list[tuple[Split, Split]]:
    """The (train, validation) pair of each of ``k`` stratified folds over ``train`` and ``val`` together
    (``imagesets.folds``), on their device; every split keeps the data set's normalization. The pool is copied
    once per fold: cross-validation is for small data sets (``imagesets.folds.CV_BELOW_VAL``)."""
    images, labels = torch.cat([train.images, val.images]), torch.cat([train.labels, val.labels])
    ids = torch.as_tensor(fold_ids(labels.cpu().numpy(), k, seed), device=labels.device)
    return [(Split(images[ids != f], labels[ids != f], norm=train.norm),
             Split(images[ids == f], labels[ids == f], norm=train.norm)) for f in range(k)]


@dataclass(frozen=True, kw_only=True)
class DatasetInfo(ImageSet):
    """What a data set is (``imagesets.ImageSet``) and how it was split and normalized: recorded with the results."""

    mean: tuple[float, ...]  # per channel, of the training split, in [0, 1]
    std: tuple[float, ...]
    split_seed: int = 0
    test_carved: bool = False  # the test split was carved from the training images (no test split of its own)

    @classmethod
    def of(cls, carved: Carved, mean: tuple[float, ...], std: tuple[float, ...]) -> DatasetInfo:
        """What the carved data set says of itself, with how it was split and normalized."""
        return cls(**carved.decoded.image_set(), mean=mean, std=std, split_seed=carved.split_seed,
                   test_carved=carved.test_carved)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def normalization(self) -> Normalization:
        return Normalization(tuple(self.mean), tuple(self.std), self.mirror)

    @property
    def shape(self) -> DataShape:
        return DataShape(self.channels, self.image_size, self.num_classes)


@dataclass
class Dataset:
    """Train and validation splits for searching, and the test split kept apart for finalists."""

    info: DatasetInfo
    train: Split
    val: Split
    test: Split
    full_sizes: dict[str, int] = field(default_factory=dict)  # each split's size before --train-size/--smoke caps

    @property
    def shape(self) -> DataShape:
        """The data's shape, with the number of images each trial trains on."""
        return dataclasses.replace(self.info.shape, train_images=len(self.train))

    def class_counts(self) -> dict[str, list[int]]:
        """Per split, the number of images of each class (what the searched and tested splits hold)."""
        return {name: split.class_counts(self.info.num_classes)
                for name, split in (("train", self.train), ("val", self.val), ("test", self.test))}


def carved_splits(carved: Carved) -> dict[str, Split]:
    """The splits ``carved`` describes, as memory maps of files carved once into the cache (``imagesets.splits``);
    the training split is read in blocks when the data is larger than memory. Where the cache folder is
    read-only, they are picked into memory instead (a copy of the data), with a note."""
    decoded = carved.decoded
    try:
        files = write_splits(decoded, carved.index)
    except OSError as e:
        print(f"note: the splits cannot be written into {decoded.cache} ({e.strerror}); they are held in memory "
              "instead, a second copy of the data: give a writable --cache-dir to avoid it", file=sys.stderr)
        return {split: Split(_tensor(np.ascontiguousarray(decoded.splits[source][0][rows])),
                             _tensor(decoded.splits[source][1][rows].astype(np.int64)))
                for split, (source, rows) in carved.index.items()}
    return {split: Split(_tensor(images), _tensor(labels), str(path), carved.streamed and split == "train")
            for split, (images, labels, path) in files.items()}


def load_dataset(name: str, data_dir: str | os.PathLike | None = None, *, split_seed: int = 0, download: bool = True,
                 **options: Any) -> Dataset:
    """Decode (or read from the cache) a registered data set or a folder of images, carve its splits,
    and compute its normalization on the training split; ``options``: the other ``DataOptions`` (``val_size``,
    ``limit``, ``image_size``, ``channels``, ``cache_dir``), whose defaults are theirs.

    The splits are written once into the cache beside the decoded images (``carved``) and read back as
    memory maps: the machine holds one copy of the data, in its page cache, shared by every trial process,
    and a data set larger than memory is read from disk (``Split.streamed``). ``limit`` caps (train, val, test)
    sizes, for smoke runs and tests; the splits are carved from the whole data set first, so a limited run
    validates and tests on the same images as a full one.
    """
    paths = {k: str(v) for k, v in (("data_dir", data_dir), ("cache_dir", options.pop("cache_dir", None))) if v}
    return dataset_from(carve_data(DataOptions(dataset=name, **paths, **options), download, split_seed))


def dataset_from(carved: Carved) -> Dataset:
    """The splits ``carved`` describes as tensors (memory maps of files carved once into the cache), normalized by
    the training split's statistics."""
    splits = carved_splits(carved)
    mean, std = channel_stats(splits["train"].images.numpy())
    info = DatasetInfo.of(carved, mean, std)
    for split in splits.values():
        split.norm = info.normalization
    limit = carved.limit
    return Dataset(info, splits["train"].subset(limit[0]), splits["val"].subset(limit[1]),
                   splits["test"].subset(limit[2]), carved.full_sizes)


__all__ = ["DataError", "Dataset", "DatasetInfo", "Normalization", "Split", "load_dataset", "resolve_data_dir"]


def load_data(options: DataOptions, download: bool = True) -> Dataset:
    """The data set the data options a command was given name (``imagesets.options``)."""
    return dataset_from(carve_data(options, download))

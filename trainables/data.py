"""Reading MNIST-style IDX files into uint8 tensors, and splitting them honestly.

The whole of MNIST is 47 MB of uint8, so a data set is held as one tensor per split and batches are
indexed from it on the training device (see ``trainables.batches``) instead of going through a
per-sample ``DataLoader``.
"""

from __future__ import annotations

import gzip
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from models.registry import IMAGE_SIZE

IMAGES_MAGIC = 0x00000803  # unsigned byte, 3 dimensions
LABELS_MAGIC = 0x00000801  # unsigned byte, 1 dimension


class DataError(ValueError):
    """A data directory or file that cannot be used; the message says what to do."""


@dataclass(frozen=True)
class DatasetInfo:
    """Where a data set lives in torchvision's layout and how to normalize it."""

    name: str  # the CLI name
    folder: str  # torchvision's folder name under the data directory
    torchvision_class: str
    mean: float
    std: float
    num_classes: int = 10
    image_size: int = 28


DATASETS: dict[str, DatasetInfo] = {
    "mnist": DatasetInfo("mnist", "MNIST", "MNIST", mean=0.1307, std=0.3081),
    "fashion_mnist": DatasetInfo("fashion_mnist", "FashionMNIST", "FashionMNIST", mean=0.2860, std=0.3530),
}

SPLIT_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
SPLIT_SIZES = {"train": 60_000, "test": 10_000}


@dataclass
class Split:
    """Images as one (N, H, W) uint8 tensor and labels as one (N,) int64 tensor."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, n: int | None) -> "Split":
        """The first ``n`` examples (the split is already shuffled where that matters)."""
        if n is None or n >= len(self):
            return self
        return Split(self.images[:n], self.labels[:n])

    def to(self, device: torch.device | str) -> "Split":
        return Split(self.images.to(device), self.labels.to(device))


@dataclass
class Dataset:
    """Train and validation splits for searching, and the test split kept apart for finalists."""

    info: DatasetInfo
    train: Split
    val: Split
    test: Split


def get_dataset_info(name: str) -> DatasetInfo:
    """The data set called ``name``; an unknown name is an error listing the known ones."""
    try:
        return DATASETS[name]
    except KeyError:
        raise DataError(f"unknown dataset {name!r}; choose one of: {', '.join(DATASETS)}") from None


def resolve_data_dir(data_dir: str | os.PathLike | None) -> Path:
    """``--data-dir`` if given, else ``$SEARCH_DATA_DIR``, else ``./data``."""
    chosen = data_dir or os.environ.get("SEARCH_DATA_DIR") or "data"
    return Path(chosen).expanduser().resolve()


def _open(path: Path):
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def _find(raw_dir: Path, stem: str) -> Path | None:
    for candidate in (raw_dir / stem, raw_dir / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def read_idx(path: Path, expected_magic: int, expected_count: int | None = None) -> np.ndarray:
    """Read one IDX file (optionally gzip-compressed) after checking its header against its size.

    A wrong magic number, an unexpected count or a truncated body raises ``DataError`` naming the
    file, since a silently short data set would make every number computed from it meaningless.
    """
    try:
        with _open(path) as f:
            data = f.read()
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise DataError(f"{path}: cannot be read ({e}); delete it and download it again") from None
    if len(data) < 8:
        raise DataError(f"{path}: truncated IDX file ({len(data)} bytes); delete it and download it again")
    magic, count = struct.unpack(">II", data[:8])
    if magic != expected_magic:
        raise DataError(
            f"{path}: bad magic number {magic:#010x}, expected {expected_magic:#010x}; "
            "this is not the IDX file its name says (corrupted or swapped): replace it"
        )
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    dims = struct.unpack(f">{ndim}I", data[4:header])
    if expected_count is not None and count != expected_count:
        raise DataError(f"{path}: holds {count} items, expected {expected_count}; replace it")
    body = len(data) - header
    needed = int(np.prod(dims))
    if body != needed:
        raise DataError(
            f"{path}: header promises {needed} bytes of data for shape {dims} but the file holds {body}; "
            "it is truncated or corrupted: delete it and download it again"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def _missing_files(raw_dir: Path) -> list[str]:
    stems = [stem for pair in SPLIT_FILES.values() for stem in pair]
    return [stem for stem in stems if _find(raw_dir, stem) is None]


def _download(info: DatasetInfo, root: Path) -> None:
    import torchvision.datasets as tvd

    getattr(tvd, info.torchvision_class)(root=str(root), train=True, download=True)
    getattr(tvd, info.torchvision_class)(root=str(root), train=False, download=True)


def ensure_files(info: DatasetInfo, root: Path, download: bool = True) -> Path:
    """Return the raw folder holding the four IDX files, downloading them with torchvision if allowed.

    Raises ``DataError`` that names each missing file and the folder it belongs in.
    """
    raw_dir = root / info.folder / "raw"
    missing = _missing_files(raw_dir)
    if missing and download:
        try:
            _download(info, root)
        except Exception as e:  # offline, a proxy, a mirror down: all end in the same advice
            reason = f"downloading them with torchvision failed ({type(e).__name__}: {e})"
        else:
            missing = _missing_files(raw_dir)
            reason = "torchvision's download did not produce them"
    else:
        reason = "downloading is turned off"
    if missing:
        listing = ", ".join(f"{stem}[.gz]" for stem in missing)
        raise DataError(
            f"{info.name}: missing {listing} in {raw_dir}; {reason}. Put the IDX files (gzip-compressed or not) "
            f"there, or point --data-dir (or SEARCH_DATA_DIR) at a folder holding {info.folder}/raw/."
        )
    return raw_dir


def read_split(raw_dir: Path, split: str) -> Split:
    """Read the ``train`` or ``test`` images and labels and check that they belong together."""
    image_stem, label_stem = SPLIT_FILES[split]
    image_path, label_path = _find(raw_dir, image_stem), _find(raw_dir, label_stem)
    assert image_path is not None and label_path is not None, "ensure_files() runs first"
    images = read_idx(image_path, IMAGES_MAGIC, SPLIT_SIZES[split])
    labels = read_idx(label_path, LABELS_MAGIC, SPLIT_SIZES[split])
    if images.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
        raise DataError(f"{image_path}: images are {images.shape[1]}x{images.shape[2]}, "
                        f"expected {IMAGE_SIZE}x{IMAGE_SIZE}; replace it")
    if labels.max() > 9:
        raise DataError(f"{label_path}: labels go up to {labels.max()}, expected 0-9; replace it")
    return Split(torch.from_numpy(images.copy()), torch.from_numpy(labels.astype(np.int64)))


def carve_validation(train: Split, val_size: int, seed: int) -> tuple[Split, Split]:
    """Split the training set into (train, validation) with a fixed seed.

    The permutation is also a shuffle, so taking the first n of either part is a fair subset.
    """
    if not 0 < val_size < len(train):
        raise DataError(f"validation size {val_size} must be between 1 and {len(train) - 1}")
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))
    val_idx, train_idx = order[:val_size], order[val_size:]
    return (
        Split(train.images[train_idx], train.labels[train_idx]),
        Split(train.images[val_idx], train.labels[val_idx]),
    )


def load_dataset(
    name: str = "mnist",
    data_dir: str | os.PathLike | None = None,
    val_size: int = 5_000,
    split_seed: int = 0,
    limit: tuple[int | None, int | None, int | None] = (None, None, None),
    download: bool = True,
) -> Dataset:
    """Read a data set once and carve its validation split.

    ``limit`` caps (train, val, test) sizes, for smoke runs and tests; the validation split is
    carved from the full training set first, so a limited run validates on the same images.
    """
    info = get_dataset_info(name)
    raw_dir = ensure_files(info, resolve_data_dir(data_dir), download=download)
    train, val = carve_validation(read_split(raw_dir, "train"), val_size, split_seed)
    test = read_split(raw_dir, "test")
    return Dataset(info, train.subset(limit[0]), val.subset(limit[1]), test.subset(limit[2]))

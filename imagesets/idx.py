"""MNIST, Fashion-MNIST and Kuzushiji-MNIST: IDX files in torchvision's layout
(``<data dir>/<Folder>/raw/<file>[.gz]``), downloaded by torchvision's own classes when online."""

from __future__ import annotations

import gzip
import struct
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from imagesets.registry import DataError, ImageSetSpec, Raw, register

IMAGES_MAGIC = 0x00000803  # unsigned byte, 3 dimensions
LABELS_MAGIC = 0x00000801  # unsigned byte, 1 dimension

SPLIT_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


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


class IdxSet:
    """One IDX data set: its torchvision folder and class, split sizes and class names."""

    def __init__(self, folder: str, torchvision_class: str, sizes: dict[str, int], class_names: Sequence[str]) -> None:
        self.folder, self.torchvision_class = folder, torchvision_class
        self.sizes, self.class_names = sizes, tuple(class_names)

    def raw_dir(self, root: Path) -> Path:
        return root / self.folder / "raw"

    def _missing(self, root: Path) -> list[str]:
        return [stem for pair in SPLIT_FILES.values() for stem in pair if _find(self.raw_dir(root), stem) is None]

    def _download(self, root: Path) -> None:
        import torchvision.datasets as tvd

        for train in (True, False):
            getattr(tvd, self.torchvision_class)(root=str(root), train=train, download=True)

    def ensure(self, root: Path, download: bool) -> None:
        """The four IDX files are in ``root/<folder>/raw``, downloaded by torchvision if allowed and needed."""
        missing = self._missing(root)
        reason = "downloading is turned off"
        if missing and download:
            try:
                self._download(root)
            except Exception as e:  # offline, a proxy, a mirror down: all end in the same advice
                reason = f"downloading them with torchvision failed ({type(e).__name__}: {e})"
            else:
                missing = self._missing(root)
                reason = "torchvision's download did not produce them"
        if missing:
            listing = ", ".join(f"{stem}[.gz]" for stem in missing)
            raise DataError(
                f"{self.folder}: missing {listing} in {self.raw_dir(root)}; {reason}. Put the IDX files (gzip-compressed "
                f"or not) there, or point --data-dir (or SEARCH_DATA_DIR) at a folder holding {self.folder}/raw/."
            )

    def locate(self, root: Path, download: bool) -> list[Path]:
        self.ensure(root, download)
        return [_find(self.raw_dir(root), stem) for pair in SPLIT_FILES.values() for stem in pair]

    def read_split(self, root: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
        """The ``train`` or ``test`` images (N, 28, 28) and labels, checked to belong together."""
        image_stem, label_stem = SPLIT_FILES[split]
        image_path, label_path = _find(self.raw_dir(root), image_stem), _find(self.raw_dir(root), label_stem)
        images = read_idx(image_path, IMAGES_MAGIC, self.sizes[split])
        labels = read_idx(label_path, LABELS_MAGIC, self.sizes[split])
        if labels.max() >= len(self.class_names):
            raise DataError(f"{label_path}: labels go up to {labels.max()}, expected 0-{len(self.class_names) - 1}; "
                            "replace it")
        return images, labels.astype(np.int64)

    def read(self, root: Path) -> Raw:
        return Raw({split: self.read_split(root, split) for split in SPLIT_FILES}, self.class_names)


SIZES = {"train": 60_000, "test": 10_000}
DIGITS = [str(d) for d in range(10)]
FASHION = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
KUZUSHIJI = ["o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"]  # torchvision's KMNIST.classes

for _name, _set, _about in (
    ("mnist", IdxSet("MNIST", "MNIST", SIZES, DIGITS), "handwritten digits, 28x28 gray"),
    ("fashion_mnist", IdxSet("FashionMNIST", "FashionMNIST", SIZES, FASHION), "Zalando's clothes, 28x28 gray"),
    ("kmnist", IdxSet("KMNIST", "KMNIST", SIZES, KUZUSHIJI), "Kuzushiji (cursive Japanese) characters, 28x28 gray"),
):
    register(ImageSetSpec(_name, locate=_set.locate, read=_set.read, description=_about))

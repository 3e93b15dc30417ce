"""CIFAR-10 and CIFAR-100 through torchvision's own classes and on-disk layout
(``<data dir>/cifar-10-batches-py/``, ``<data dir>/cifar-100-python/``): downloaded when online, read
offline from that layout. torchvision checks each file's MD5 before reading it, so a truncated or
replaced file is refused, not half-read."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from imagesets.registry import DataError, ImageSetSpec, Raw, register


class CifarSet:
    """One of torchvision's CIFAR classes (``CIFAR10`` or ``CIFAR100``)."""

    def __init__(self, torchvision_class: str) -> None:
        self.torchvision_class = torchvision_class

    def _cls(self):
        import torchvision.datasets as tvd

        return getattr(tvd, self.torchvision_class)

    def locate(self, root: Path, download: bool) -> list[Path]:
        cls = self._cls()
        folder = root / cls.base_folder
        files = [folder / name for name, _ in cls.train_list + cls.test_list] + [folder / cls.meta["filename"]]
        if download and not all(f.is_file() for f in files):
            try:
                cls(root=str(root), train=True, download=True)
            except Exception as e:  # offline, a proxy, a mirror down: all end in the same advice
                raise DataError(f"{self.torchvision_class}: files missing in {folder} and downloading them with "
                                f"torchvision failed ({type(e).__name__}: {e}). Put torchvision's "
                                f"{cls.filename} unpacked there ({cls.url}), or point --data-dir (or "
                                f"SEARCH_DATA_DIR) at a folder holding {cls.base_folder}/.") from None
        missing = [f.name for f in files if not f.is_file()]
        if missing:
            raise DataError(f"{self.torchvision_class}: missing {', '.join(missing)} in {folder}"
                            f"{'' if download else ' (downloading is turned off)'}. Unpack torchvision's "
                            f"{cls.filename} ({cls.url}) there, or point --data-dir (or SEARCH_DATA_DIR) at a "
                            f"folder holding {cls.base_folder}/.")
        return files

    def read(self, root: Path) -> Raw:
        cls = self._cls()
        splits = {}
        for split, train in (("train", True), ("test", False)):
            try:
                data = cls(root=str(root), train=train, download=False)
            except RuntimeError as e:  # torchvision's "not found or corrupted" (an MD5 mismatch)
                raise DataError(f"{self.torchvision_class} in {root / cls.base_folder}: {e}; delete the folder "
                                "and download it again") from None
            splits[split] = (np.ascontiguousarray(data.data), np.asarray(data.targets, dtype=np.int64))  # (N, 32, 32, 3)
        return Raw(splits, tuple(data.classes))


for _name, _cls, _about in (("cifar10", "CIFAR10", "10 classes of 32x32 colour photos"),
                            ("cifar100", "CIFAR100", "100 classes of 32x32 colour photos")):
    _set = CifarSet(_cls)
    register(ImageSetSpec(_name, locate=_set.locate, read=_set.read, description=_about, mirror=True))

"""scikit-learn's handwritten digits: 1,797 images of 8x8 pixels with 17 gray levels, shipped inside
scikit-learn (no download, on every machine that has it). Small enough for quick searches and tests.
There is no official test split: it is carved, stratified, with the search's split seed."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from imagesets.registry import DataError, ImageSetSpec, Raw, register


def locate(root: Path, download: bool) -> list[Path]:
    # Found without importing scikit-learn (most of a second): the cache is keyed by this file.
    spec = importlib.util.find_spec("sklearn")
    if spec is None or spec.origin is None:
        raise DataError("digits: scikit-learn is not installed (pip install scikit-learn)")
    return [Path(spec.origin).parent / "datasets" / "data" / "digits.csv.gz"]


def read(root: Path) -> Raw:
    from sklearn.datasets import load_digits

    digits = load_digits()
    # 0-16 ink levels -> 0-255, the uint8 range every other data set has
    images = np.rint(digits.images * (255.0 / 16.0)).astype(np.uint8)  # (1797, 8, 8)
    return Raw({"train": (images, digits.target.astype(np.int64))}, tuple(str(d) for d in range(10)))


register(ImageSetSpec("digits", locate=locate, read=read, description="scikit-learn's 8x8 handwritten digits"))

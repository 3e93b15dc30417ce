"""The one registry of image data sets, and what every data set hands over: uint8 arrays.

A data set is one module beside this file that registers an ``ImageSetSpec``: where its files are
(and how torchvision downloads them), how to read its splits, and its class names. What a reader
returns is the data as its files hold it (``Raw``); ``imagesets.prepare`` converts it to one channel
count and one size and caches the result, so no reader deals with resizing or caching.

This package imports neither torch nor Ray: the command line checks a data set before either loads.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np


class DataError(ValueError):
    """A data set, folder or file that cannot be used; the message names it and says what to do."""


@dataclass
class Raw:
    """A data set as its files hold it.

    ``splits`` maps ``train`` and ``test`` (and optionally ``val``) to (images, labels): images are uint8
    (N, H, W) for gray or (N, H, W, 3) for colour, labels int64 (N,) in [0, len(class_names)). A data
    set with no test split of its own (scikit-learn's digits, a folder without ``test/``) gives
    ``train`` only; the test split is then carved from it, stratified, with the search's split seed.
    """

    splits: dict[str, tuple[np.ndarray, np.ndarray]]
    class_names: tuple[str, ...]


@dataclass(frozen=True)
class ImageSetSpec:
    """Everything the search needs to know about one registered data set.

    - ``locate(root, download)`` makes sure its files are in the data directory ``root`` (downloading
      them there where it can and ``download`` allows) and returns them: their names, sizes and times
      key the decoded cache, so a replaced file is decoded again. Missing files raise ``DataError``
      naming each file and the folder it belongs in.
    - ``read(root)`` returns its ``Raw`` data (called only when the cache does not hold it).
    - ``mirror``: whether a left-right flip keeps an image's class (photos of objects: yes; digits and
      letters: no). Augmentation flips only where it does.
    """

    name: str
    locate: Callable[[Path, bool], Sequence[Path]]
    read: Callable[[Path], Raw]
    description: str = ""
    mirror: bool = False
    version: str = "1"  # bump when the reader's output changes: old caches are then not reused


_REGISTRY: dict[str, ImageSetSpec] = {}


def register(spec: ImageSetSpec) -> ImageSetSpec:
    """Add ``spec`` under its name; registering a name twice is an error."""
    if spec.name in _REGISTRY:
        raise ValueError(f"data set {spec.name!r} is already registered")
    if "/" in spec.name or spec.name in {"", ".", ".."}:
        raise ValueError(f"{spec.name!r} cannot be a data set name: it reads as a path")
    _REGISTRY[spec.name] = spec
    return spec


def unregister(name: str) -> None:
    """Remove a data set (for tests that register throw-away ones)."""
    _REGISTRY.pop(name, None)


def names() -> list[str]:
    """Every registered name, in registration order."""
    return list(_REGISTRY)


def get(name: str) -> ImageSetSpec:
    """The spec registered as ``name``; an unknown name is a ``DataError`` listing the known ones."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise DataError(f"unknown data set {name!r}: it is neither a registered name ({', '.join(names())}) "
                        "nor an existing folder of images (PATH/<class>/<image>, or PATH/train/<class>/... with "
                        "PATH/test/<class>/...)") from None


def is_registered(name: str) -> bool:
    return name in _REGISTRY

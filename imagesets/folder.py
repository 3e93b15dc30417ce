"""A folder of images in torchvision's ``ImageFolder`` layout, checked before anything is decoded.

Two layouts: ``PATH/<class>/<image>`` (validation and test are carved from it, stratified), or
``PATH/train/<class>/...`` with ``PATH/test/<class>/...`` and optionally ``PATH/val/<class>/...``. Class
names are the folder names, sorted (ImageFolder's order); images may sit in subfolders of a class
folder. Files whose names do not end like an image are skipped and counted.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from imagesets.registry import DataError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm"}


@dataclass
class Listing:
    """The images of a folder, per split, with their labels, and the files that were skipped."""

    root: Path
    class_names: tuple[str, ...]
    files: dict[str, list[tuple[str, int]]]  # split -> (path, label), sorted by class then path
    skipped: list[str] = field(default_factory=list)  # not images by their names

    def stats(self) -> list[tuple[str, int, int]]:
        """``file_stats`` of every image, relative to the root: the cache key."""
        return file_stats([path for split in self.files.values() for path, _ in split], self.root)


def file_stats(paths, root: Path | None = None) -> list[tuple[str, int, int]]:
    """(path, size, modification time in ns) of each file, the path relative to ``root`` if given (else
    absolute): what keys the decoded cache, so a changed, added or removed file decodes again."""
    out = []
    for path in paths:
        st = os.stat(path)
        out.append((os.path.relpath(path, root) if root else os.path.abspath(path), st.st_size, st.st_mtime_ns))
    return out


def is_image_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES


def walk(folder: Path) -> tuple[list[str], list[str]]:
    """(image files, other files) under ``folder``, recursively, sorted; hidden files are ignored."""
    images, others = [], []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            (images if is_image_name(name) else others).append(os.path.join(dirpath, name))
    return images, others


def _class_folders(folder: Path) -> list[Path]:
    return sorted((p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")), key=lambda p: p.name)


def _scan_split(folder: Path, class_names: tuple[str, ...] | None, listing: Listing, split: str) -> tuple[str, ...]:
    classes = _class_folders(folder)
    names = tuple(c.name for c in classes)
    if class_names is None:
        if len(classes) < 2:
            found = f"one ({names[0]})" if names else "none"
            raise DataError(f"{folder}: an image folder needs at least 2 class folders (<class>/<image>), found "
                            f"{found}; put each class's images in a folder named after the class")
    elif set(names) != set(class_names):
        missing, extra = sorted(set(class_names) - set(names)), sorted(set(names) - set(class_names))
        parts = ([f"lacks {', '.join(missing)}"] if missing else []) + ([f"has {', '.join(extra)} that train/ has not"]
                                                                        if extra else [])
        raise DataError(f"{folder}: its classes differ from {listing.root / 'train'}'s: it {' and '.join(parts)}; "
                        "every split needs the same class folders")
    order = class_names or names
    rows = []
    for label, name in enumerate(order):
        images, others = walk(folder / name)
        if not images:
            raise DataError(f"{folder / name}: class folder holds no images (PNG, JPEG, BMP, ...); add images or "
                            "remove the folder")
        rows += [(path, label) for path in images]
        listing.skipped += others
    listing.skipped += [str(p) for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")]
    listing.files[split] = rows
    return order


def scan(root: Path) -> Listing:
    """List a folder's images per split, refusing a layout that cannot be searched (fewer than two
    classes, an empty class, splits whose classes differ), each time naming the folder and the fix."""
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise DataError(f"{root} is not a folder")
    listing = Listing(root, (), {})
    if (root / "train").is_dir() and (root / "test").is_dir():
        names = _scan_split(root / "train", None, listing, "train")
        for split in ("val", "test"):
            if (root / split).is_dir():
                _scan_split(root / split, names, listing, split)
    else:
        names = _scan_split(root, None, listing, "train")
    listing.class_names = names
    return listing

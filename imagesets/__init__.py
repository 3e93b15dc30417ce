"""Image data sets, by registered name or as a folder of images.

Importing this package imports every module beside this file, and each data-set module registers
itself (``mnist``, ``fashion_mnist``, ``kmnist``, ``cifar10``, ``cifar100``, ``digits``); adding a data set is
adding one file (docs/datasets.md). ``prepare(name_or_folder, ...)`` returns its images decoded once,
from a cache on disk when an earlier search decoded them. No torch and no Ray are imported here.

Not named ``datasets``: that would shadow Hugging Face's library of that name for anyone who has it.
"""

import importlib
import pkgutil

from imagesets.cache import Decoded, ImageSet, default_cache_dir, prepare, prepare_options, resolve_data_dir
from imagesets.registry import DataError, ImageSetSpec, Raw, get, is_registered, names, register, unregister

_INFRASTRUCTURE = {"registry", "cache", "decode", "folder", "options"}

for _module in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
    if _module.name not in _INFRASTRUCTURE and not _module.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["DataError", "Decoded", "ImageSet", "ImageSetSpec", "Raw", "default_cache_dir", "get", "is_registered", "names",
           "prepare", "prepare_options", "register", "resolve_data_dir", "unregister"]

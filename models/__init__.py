"""Searchable architectures, by registered name.

Importing this package imports every module beside this file, and each architecture module
registers itself; ``models.get(name)`` returns its spec. Adding an architecture is adding one file
here (its settings, space and registry entry, free of torch) and, for a network of its own, its module in
``models/nets/`` (a fine-tuned torchvision classifier needs none: ``models.finetune``).
"""

import importlib
import pkgutil

from models.registry import (BuildContext, DataShape, ModelSpec, Network, UnknownModelError, augment_shift,
                             builtin_names, get, names, parse_models, register, unregister)

_INFRASTRUCTURE = {"registry", "config", "finetune", "task", "nets", "external"}

for _module in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
    if _module.name not in _INFRASTRUCTURE and not _module.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_module.name}")

from models import external  # noqa: E402  (after the built-in models: a user's file may not take their names)

external.load_from_environment()  # in a search's worker process: the user's models the search was given

__all__ = ["BuildContext", "DataShape", "ModelSpec", "Network", "UnknownModelError", "augment_shift", "builtin_names",
           "get", "names", "parse_models", "register", "unregister"]

"""Networks of the user's own, outside this package: ``--models-from my_models.py`` (a file) or
``--models-from my_package.models`` (an importable module), whose ``models.register(ModelSpec(...))`` calls add
architectures to the registry for one search, its ``--resume``, its bundles and ``trainables.predict``.

Every process of a search needs them registered (trial workers, the finishers): the search passes the sources to
Ray's workers in ``HPSEARCH_MODELS_FROM`` and ``models`` loads them when it is imported. A model registered this way
gets the checks a built-in one gets (its settings' fields when registered, its default and its space for the data
before Ray starts), and a mistake is reported with the user's file and line. A bundle of such a model records the
file that defined it and its SHA-256 (``origin``); ``Bundle.load`` loads that file when the model is not known.

Free of torch, like the registry: the user's file may import torch itself.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path

from models.registry import names, origin_line, unregister

ENV = "HPSEARCH_MODELS_FROM"  # the sources, os.pathsep-joined, for the search's worker processes


class SourceError(Exception):
    """A source that cannot be loaded, or registers nothing usable; the message names the file and line."""


@dataclass(frozen=True)
class Source:
    """One ``--models-from``: as given, the file it loaded, that file's SHA-256, the models it registered, and the
    module name where it was imported as a module (so that its relative imports and its package's work)."""

    given: str
    file: str
    sha256: str
    names: tuple[str, ...]
    module: str | None = None

    @property
    def handle(self) -> str:
        """What another process loads: the module by its name, else the file by its absolute path."""
        return self.module or self.file


_LOADED: dict[str, Source] = {}  # by the file loaded: loading twice registers nothing twice


def sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _where(error: BaseException, file: str) -> str:
    """``file:line`` of the deepest frame of ``error``'s traceback inside ``file`` (where the user's code raised or
    called what raised), else the file alone."""
    if isinstance(error, SyntaxError) and error.filename and error.lineno:
        return f"{error.filename}:{error.lineno}"
    mine = Path(file).resolve()
    inside = [frame for frame in traceback.extract_tb(error.__traceback__) if Path(frame.filename).resolve() == mine]
    return f"{file}:{inside[-1].lineno}" if inside else file


def importable(module: str) -> str | None:
    """The file of the importable module ``module`` (a package: its ``__init__.py``), or None."""
    try:
        found = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if found is None or not found.origin or found.origin in ("built-in", "frozen"):
        return None
    return str(Path(found.origin).resolve())


def _module_file(given: str) -> tuple[str, str | None]:
    """The file behind ``given`` (a path to a ``.py`` file, or an importable module's file) and the module's name
    (None for a file)."""
    path = Path(given).expanduser()
    if given.endswith(".py") or path.is_file() or os.sep in given:
        if not path.is_file():
            raise SourceError(f"--models-from {given}: no such file (give a .py file or an importable module)")
        return str(path.resolve()), None
    file = importable(given)
    if file is None:
        raise SourceError(f"--models-from {given}: no such file, nor an importable module "
                          "(give a .py file, or a module on PYTHONPATH such as my_package.models)")
    return file, given


def load(given: str) -> Source:
    """Import ``given`` (a .py file or a module name), so that its ``register`` calls run; the ``Source``, with the
    models it registered. Loading the same file again returns what the first load did."""
    file, module_name = _module_file(given)
    if file in _LOADED:
        return _LOADED[file]
    before, digest = set(names()), sha256(file)
    try:
        if module_name is None:
            name = f"hpsearch_models_{Path(file).stem}_{digest[:8]}"
            spec = importlib.util.spec_from_file_location(name, file)
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module  # its functions pickle by this name, and find it again in the same process
            spec.loader.exec_module(module)
        else:
            importlib.import_module(module_name)
    except Exception as e:  # the user's code: whatever it raises is named with its line
        for added_name in set(names()) - before:
            unregister(added_name)
        raise SourceError(f"{_where(e, file)}: {type(e).__name__}: {e}") from None
    added = tuple(n for n in names() if n not in before)
    if not added:
        raise SourceError(f"{file}: registers no model; call models.register(models.ModelSpec(name=..., ...)) in it "
                          "(the README's example: 'A network of your own')")
    _LOADED[file] = Source(given, file, digest, added, module_name)
    return _LOADED[file]


def load_all(given: list[str] | tuple[str, ...]) -> list[Source]:
    """Load each source (``--models-from``, repeatable), and hand them to the search's worker processes."""
    sources = [load(each) for each in given]
    if sources:
        os.environ[ENV] = os.pathsep.join(s.handle for s in sources)
    return sources


def load_from_environment() -> None:
    """In a search's worker process: load the sources the search passed (``ENV``: files and module names)."""
    for handle in filter(None, os.environ.get(ENV, "").split(os.pathsep)):
        load(handle)


def origin(name: str) -> dict[str, str] | None:
    """For a bundle's card: the file that registered model ``name`` and its SHA-256 (None for this package's)."""
    for source in _LOADED.values():
        if name in source.names:
            return {"file": source.file, "sha256": source.sha256, "given": source.given, "module": source.module}
    return None


def where(error: BaseException, name: str) -> str:
    """``file:line`` for ``error``, raised while checking the user's model ``name``: the line of their code that raised,
    else their ``register`` call."""
    source = origin(name)
    found = _where(error, source["file"]) if source else ""
    return found if source and found != source["file"] else origin_line(name)

"""Typed configs at the boundary: Tune hands a flat dict, converted once into dataclasses here.

Each model declares a dataclass of its architecture's settings; ``trainables.config.TrainConfig``
holds the settings every model shares (optimizer, schedule, batch size...). ``from_flat`` picks a
dataclass's fields out of the flat dict, converts strings given on the command line (``--set
lr=0.003``) to the field's type, and lets the dataclass validate itself.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration value that is wrong; the message names the key and what is allowed."""


def check(condition: bool, message: str) -> None:
    """Raise ``ConfigError(message)`` unless ``condition`` holds."""
    if not condition:
        raise ConfigError(message)


def choice(name: str, value: Any, allowed: Iterable[Any]) -> None:
    """Check that ``value`` is one of ``allowed``, naming the key and the choices if not."""
    allowed = tuple(allowed)
    check(value in allowed, f"{name}={value!r} is not allowed; choose one of {', '.join(map(repr, allowed))}")


def _coerce(name: str, value: Any, default: Any) -> Any:
    """Convert ``value`` to the type of the field's default (strings come from ``--set``)."""
    kind = type(default)
    if isinstance(value, kind) and not (kind is int and isinstance(value, bool)):
        return value
    try:
        if kind is bool:
            if isinstance(value, str):
                lowered = value.strip().lower()
                check(lowered in {"true", "false", "1", "0", "yes", "no"}, f"{name}={value!r} is not a boolean")
                return lowered in {"true", "1", "yes"}
            return bool(value)
        if kind is int:
            as_float = float(value)
            check(as_float.is_integer(), f"{name}={value!r} must be a whole number")
            return int(as_float)
        return kind(value)
    except (TypeError, ValueError) as e:
        if isinstance(e, ConfigError):
            raise
        raise ConfigError(f"{name}={value!r} cannot be read as {kind.__name__}") from None


def from_flat(cls: type[T], flat: Mapping[str, Any]) -> T:
    """Build dataclass ``cls`` from the keys of ``flat`` that are its fields; defaults fill the rest."""
    kwargs = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if f.name in flat:
            kwargs[f.name] = value = _coerce(f.name, flat[f.name], f.default)
            # inf and nan read as floats (from --set, Tune or Optuna), but no setting trains with them,
            # and nan slips past every range check.
            check(not isinstance(value, float) or math.isfinite(value), f"{f.name}={value!r} must be a finite number")
    return cls(**kwargs)


def field_names(*classes: type) -> set[str]:
    """The union of the field names of the given dataclasses."""
    return {f.name for cls in classes for f in dataclasses.fields(cls)}


def reject_unknown(flat: Mapping[str, Any], known: set[str], model: str) -> None:
    """A key that no config of ``model`` reads is a typo, not something to ignore silently."""
    unknown = sorted(set(flat) - known)
    check(not unknown, f"unknown setting(s) {', '.join(unknown)} for model {model!r}; known: {', '.join(sorted(known))}")

"""The method registry: ``@register`` adds a class by its ``name``; configs look methods up by name."""

from __future__ import annotations

from typing import TypeVar

from corekd.errors import CorekdError
from corekd.methods.base import Method

_METHODS: dict[str, type[Method]] = {}
MethodT = TypeVar("MethodT", bound=type[Method])


def register(cls: MethodT) -> MethodT:
    name = getattr(cls, "name", None)
    if not name:
        raise TypeError(f"{cls.__qualname__} has no name")
    if name in _METHODS and _METHODS[name] is not cls:
        raise ValueError(f"method name '{name}' is already registered by {_METHODS[name].__qualname__}")
    _METHODS[name] = cls
    return cls


def method_class(name: str) -> type[Method]:
    try:
        return _METHODS[name]
    except KeyError:
        raise CorekdError(f"unknown method '{name}' (registered: {', '.join(sorted(_METHODS))})") from None


def registered() -> list[str]:
    return sorted(_METHODS)

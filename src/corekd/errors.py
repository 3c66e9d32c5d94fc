"""One error type for everything a user can get wrong (files, fields, values).

The CLI prints a :class:`CorekdError` as a single line and exits non-zero; tracebacks are
shown only with ``--debug``. Library callers catch it like any exception.
"""

from __future__ import annotations

import reprlib
import typing
from pathlib import Path

from pydantic import BaseModel, ValidationError


class CorekdError(Exception):
    """A problem with user input: names the file, the field and what was expected."""

    def __init__(self, message: str, *, path: str | Path | None = None, field: str | None = None):
        self.path = str(path) if path is not None else None
        self.field = field
        self.detail = message
        where = ": ".join(p for p in (self.path, field) if p)
        super().__init__(f"{where}: {message}" if where else message)


_SHOWN = reprlib.Repr()
_SHOWN.maxlevel, _SHOWN.maxlist, _SHOWN.maxtuple, _SHOWN.maxdict, _SHOWN.maxstring, _SHOWN.maxother = 2, 4, 4, 4, 60, 60


def shown(value: object) -> str:
    """``repr(value)`` cut to a few dozen characters: a bad value in an error line, never the whole of a big one."""
    return _SHOWN.repr(value)


def format_loc(loc: tuple) -> str:
    """A pydantic error location as a field path: ``("dialogues", 2, "id")`` -> ``dialogues[2].id``."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _model_at(model: type[BaseModel] | None, loc: tuple) -> type[BaseModel] | None:
    """Follow ``loc`` through nested pydantic models (lists and optionals included)."""
    for part in loc:
        if model is None:
            return None
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part)
        if field is None:
            return None
        model = _first_model(field.annotation)
    return model


def _first_model(annotation: object) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _first_model(arg)
        if found is not None:
            return found
    return None


def from_validation_error(
    exc: ValidationError,
    path: str | Path | None,
    *,
    model: type[BaseModel] | None = None,
    prefix: tuple = (),
) -> CorekdError:
    """Turn a pydantic ``ValidationError`` into one :class:`CorekdError` naming the first bad field.

    ``model`` (the validated class) lets an unknown key be answered with the keys that exist.
    """
    errors = exc.errors()
    first = errors[0]
    loc = tuple(prefix) + tuple(first["loc"])
    kind = first.get("type", "")
    if kind == "extra_forbidden":
        message = "unknown key"
        owner = _model_at(model, tuple(first["loc"])[:-1]) if model is not None else None
        if owner is not None:
            message += f" (expected one of: {', '.join(owner.model_fields)})"
    elif kind == "missing":
        message = "required field is missing"
    else:
        message = first["msg"].removeprefix("Value error, ")
        value = first.get("input")
        if not isinstance(value, (dict, list)):  # a whole section would drown the line
            message += f", got {shown(value)}"
    if len(errors) > 1:
        message += f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})"
    return CorekdError(message, path=path, field=format_loc(loc) or None)

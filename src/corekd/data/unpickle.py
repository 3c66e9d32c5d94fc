"""Reading untrusted pickles: only numpy arrays, numpy scalars/dtypes and builtin containers.

The field passes features around as pickles (DialogueRNN, MMGCN, COGMEN, MMSA). Unpickling calls
whatever a file names, so a hostile file could run code. :func:`safe_load` admits a short list of
constructors and refuses every other global *before* calling anything: the error names it, and
nothing has run. Python-2 era pickles are read with ``encoding="latin1"`` (their byte strings
become ``str``; numpy arrays keep their bytes).
"""

from __future__ import annotations

import importlib
import io
import pickle
from pathlib import Path

from corekd.errors import CorekdError

# (module, name) as a pickle names them -> where to find them today (numpy 2 moved numpy.core to numpy._core).
_ALLOWED: dict[tuple[str, str], tuple[str, str]] = {}
for _core in ("numpy.core", "numpy._core"):
    _ALLOWED[(f"{_core}.multiarray", "_reconstruct")] = ("numpy._core.multiarray", "_reconstruct")
    _ALLOWED[(f"{_core}.multiarray", "scalar")] = ("numpy._core.multiarray", "scalar")
    _ALLOWED[(f"{_core}.numeric", "_frombuffer")] = ("numpy._core.numeric", "_frombuffer")
for _name in ("ndarray", "dtype"):
    _ALLOWED[("numpy", _name)] = ("numpy", _name)
for _name in ("set", "frozenset", "list", "dict", "tuple", "bytearray", "complex", "slice"):
    _ALLOWED[("builtins", _name)] = ("builtins", _name)
    _ALLOWED[("__builtin__", _name)] = ("builtins", _name)
_ALLOWED[("collections", "OrderedDict")] = ("collections", "OrderedDict")
_ALLOWED[("_codecs", "encode")] = ("_codecs", "encode")  # how protocol 2 writes bytes; pure, no side effects


def _numpy_dtype_class(module: str, name: str):
    """numpy >= 1.25 pickles a dtype through its class, e.g. ``numpy.dtypes.Float32DType``."""
    if module == "numpy.dtypes" and name.endswith("DType"):
        import numpy.dtypes

        found = getattr(numpy.dtypes, name, None)
        if isinstance(found, type):
            return found
    return None


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        target = _ALLOWED.get((module, name))
        if target is not None:
            return getattr(importlib.import_module(target[0]), target[1])
        dtype_class = _numpy_dtype_class(module, name)
        if dtype_class is not None:
            return dtype_class
        raise pickle.UnpicklingError(
            f"refused to load '{module}.{name}': only numpy arrays and builtin containers are admitted"
        )


def safe_loads(data: bytes, *, path: str | Path | None = None):
    """Unpickle ``data`` admitting only numpy arrays/dtypes/scalars and builtin containers."""
    try:
        return _RestrictedUnpickler(io.BytesIO(data), encoding="latin1").load()
    except pickle.UnpicklingError as exc:
        raise CorekdError(f"untrusted pickle not loaded: {exc} (nothing in it was run)", path=path) from None
    except (EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError, ImportError) as exc:
        raise CorekdError(f"not a readable pickle ({type(exc).__name__}: {exc})", path=path) from None


def safe_load(path: str | Path):
    """:func:`safe_loads` of a file."""
    path = Path(path)
    if not path.is_file():
        raise CorekdError("file not found", path=path)
    return safe_loads(path.read_bytes(), path=path)

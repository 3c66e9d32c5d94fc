"""Reading untrusted pickles: only numpy arrays, numpy scalars/dtypes and builtin containers, sized before allocation.

The field passes features around as pickles (DialogueRNN, MMGCN, COGMEN, MMSA). Unpickling calls
whatever a file names, so a hostile file could run code. :func:`safe_load` admits a short list of
constructors and refuses every other global *before* calling anything: the error names it, and
nothing has run. Python-2 era pickles are read with ``encoding="latin1"`` (their byte strings
become ``str``; numpy arrays keep their bytes).

Memory and time are bounded by the file's size, not by numbers written in it:

- the constructors that take a size (``bytearray(n)``, ``numpy.ndarray(shape)``, numpy's
  ``_reconstruct(ndarray, shape, dtype)``) are refused a size beyond :data:`MAX_PRESIZED_BYTES`
  (numpy's own pickles pass ``(0,)`` and fill the array from bytes in the file); an array's
  state must carry exactly the data its shape needs, checked before numpy allocates it; a
  ``BYTEARRAY8`` longer than the file is refused; the memo is a dict (the C unpickler
  pre-allocates a list as long as the largest memo index the file names);
- after loading, containers referenced many times (a pickle can hold one 10^5-number list and
  10^5 references to it: 1 MB that numpy would expand into 10^10 numbers) may add at most
  :data:`MAX_SHARED_ELEMENTS` elements to what the file holds, containers may not contain
  themselves, and nesting is at most :data:`MAX_DEPTH` deep, all checked before numpy sees
  the data.

The loader is :class:`pickle._Unpickler` (the pure-Python one, whose steps can be checked one by
one); it reads real feature pickles at about the speed of the C one (large arrays are single
byte strings).
"""

from __future__ import annotations

import importlib
import io
import math
import pickle
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from corekd.errors import CorekdError

MAX_PRESIZED_BYTES = 1 << 20  # what a constructor may allocate from a size written in the file
MAX_SHARED_ELEMENTS = 10**8  # elements that references to shared containers may add to what the file holds
MAX_DEPTH = 64  # containers within containers (numpy arrays have at most 64 dimensions)


class _Refused(pickle.UnpicklingError):
    """A size or structure refused before anything was allocated."""


def _nbytes(shape, dtype) -> int:
    if isinstance(shape, int):
        shape = (shape,)
    if not isinstance(shape, (tuple, list)) or not all(isinstance(n, int) and n >= 0 for n in shape):
        raise _Refused(f"array shape {shape!r}; expected a tuple of sizes")
    return math.prod(shape) * np.dtype(dtype).itemsize


def _sized_ndarray(shape, dtype=float, *args, **kwargs):
    """``numpy.ndarray(shape, ...)`` as a pickle may call it: only small sizes (numpy's pickles never call it)."""
    if _nbytes(shape, dtype) > MAX_PRESIZED_BYTES:
        raise _Refused(
            f"numpy.ndarray{(shape,)} would allocate {_nbytes(shape, dtype):,} bytes before reading any data "
            f"(at most {MAX_PRESIZED_BYTES:,})"
        )
    return np.ndarray(shape, dtype, *args, **kwargs)


def _sized_reconstruct(subtype, shape, dtype):
    """numpy's ``_reconstruct(ndarray, (0,), b'b')``: the array is filled by its state (checked in ``load_build``)."""
    from numpy._core.multiarray import _reconstruct

    if _nbytes(shape, dtype if not isinstance(dtype, bytes) else "b") > MAX_PRESIZED_BYTES:
        raise _Refused(f"numpy _reconstruct of shape {shape!r} would allocate before reading any data")
    return _reconstruct(np.ndarray if subtype is _sized_ndarray else subtype, shape, dtype)


def _sized_bytearray(*args):
    """``bytearray(data)`` from bytes or text in the file; ``bytearray(size)`` is refused."""
    if args and isinstance(args[0], int) and not isinstance(args[0], bool):
        raise _Refused(f"bytearray({args[0]}) would allocate {args[0]:,} bytes that the file does not hold")
    return bytearray(*args)


# (module, name) as a pickle names them -> where to find them today (numpy 2 moved numpy.core to numpy._core).
_ALLOWED: dict[tuple[str, str], tuple[str, str]] = {}
for _core in ("numpy.core", "numpy._core"):
    _ALLOWED[(f"{_core}.multiarray", "scalar")] = ("numpy._core.multiarray", "scalar")
    _ALLOWED[(f"{_core}.numeric", "_frombuffer")] = ("numpy._core.numeric", "_frombuffer")
_ALLOWED[("numpy", "dtype")] = ("numpy", "dtype")
for _name in ("set", "frozenset", "list", "dict", "tuple", "complex", "slice"):
    _ALLOWED[("builtins", _name)] = ("builtins", _name)
    _ALLOWED[("__builtin__", _name)] = ("builtins", _name)
_ALLOWED[("collections", "OrderedDict")] = ("collections", "OrderedDict")
_ALLOWED[("_codecs", "encode")] = ("_codecs", "encode")  # how protocol 2 writes bytes; pure, no side effects
# the constructors that take a size, guarded
_SIZED: dict[tuple[str, str], Callable[..., Any]] = {
    ("numpy", "ndarray"): _sized_ndarray,
    ("builtins", "bytearray"): _sized_bytearray,
    ("__builtin__", "bytearray"): _sized_bytearray,
}
for _core in ("numpy.core", "numpy._core"):
    _SIZED[(f"{_core}.multiarray", "_reconstruct")] = _sized_reconstruct


def _numpy_dtype_class(module: str, name: str):
    """numpy >= 1.25 pickles a dtype through its class, e.g. ``numpy.dtypes.Float32DType``."""
    if module == "numpy.dtypes" and name.endswith("DType"):
        import numpy.dtypes

        found = getattr(numpy.dtypes, name, None)
        if isinstance(found, type):
            return found
    return None


def _check_array_state(state) -> None:
    """An ndarray's ``__setstate__`` argument carries exactly the data its shape needs (numpy allocates first)."""
    if not isinstance(state, tuple) or len(state) not in (4, 5):
        return  # numpy refuses it without allocating
    shape, dtype, _, data = state[-4:]
    if not isinstance(dtype, np.dtype):
        return
    n = _nbytes(shape, np.uint8)  # the element count
    if dtype.hasobject:
        if not isinstance(data, list) or len(data) != n:
            raise _Refused(
                f"array state of shape {shape!r} holds {len(data) if isinstance(data, list) else 'no'} "
                "objects; expected one per element"
            )
    elif not isinstance(data, (bytes, bytearray, str)) or len(data) != n * dtype.itemsize:
        raise _Refused(
            f"array state of shape {shape!r} and dtype {dtype} needs {n * dtype.itemsize:,} bytes of data, "
            f"got {len(data) if hasattr(data, '__len__') else 'none'}"
        )


class _RestrictedUnpickler(pickle._Unpickler):  # the pure-Python unpickler: its steps can be checked
    dispatch: ClassVar[dict[int, Callable[..., Any]]] = dict(pickle._Unpickler.dispatch)

    def __init__(self, data: bytes):
        super().__init__(io.BytesIO(data), encoding="latin1")
        self.size = len(data)

    def find_class(self, module: str, name: str):
        sized = _SIZED.get((module, name))
        if sized is not None:
            return sized
        target = _ALLOWED.get((module, name))
        if target is not None:
            return getattr(importlib.import_module(target[0]), target[1])
        dtype_class = _numpy_dtype_class(module, name)
        if dtype_class is not None:
            return dtype_class
        raise pickle.UnpicklingError(
            f"refused to load '{module}.{name}': only numpy arrays and builtin containers are admitted"
        )

    def load_build(self):
        if isinstance(self.stack[-2], np.ndarray):
            _check_array_state(self.stack[-1])
        pickle._Unpickler.load_build(self)

    dispatch[pickle.BUILD[0]] = load_build

    def load_bytearray8(self):
        (n,) = struct.unpack("<Q", self.read(8))
        if n > self.size:
            raise _Refused(f"a bytearray of {n:,} bytes in a file of {self.size:,} bytes")
        b = bytearray(n)
        self.readinto(b)
        self.append(b)

    dispatch[pickle.BYTEARRAY8[0]] = load_bytearray8


_CONTAINERS = (dict, list, tuple, set, frozenset, np.ndarray)


def _items(obj) -> list:
    if isinstance(obj, dict):
        return [*obj.keys(), *obj.values()]
    return list(obj.ravel()) if isinstance(obj, np.ndarray) else list(obj)  # ndarray: of dtype object


def _check_sharing(root) -> None:
    """Refuse containers that contain themselves, nesting beyond MAX_DEPTH, and shared references that would
    expand the data by more than MAX_SHARED_ELEMENTS elements. Linear in the number of references in the file."""
    expanded: dict[int, int] = {}  # id -> elements in its full expansion (every reference followed)
    held = 0  # elements the file holds (each container and array counted once)
    on_path: set[int] = set()  # the containers being expanded (ancestors of the current one)
    alive = []  # the objects whose ids are keys, kept alive while walking
    stack: list[tuple[object, int, list | None]] = [
        (root, 0, None)
    ]  # (object, depth, its nested containers once expanded)
    while stack:
        obj, depth, nested = stack.pop()
        if nested is not None:  # all its nested containers are done
            on_path.discard(id(obj))
            expanded[id(obj)] += sum(expanded[id(c)] for c in nested)
            continue
        if not isinstance(obj, _CONTAINERS):
            continue
        if id(obj) in on_path:
            raise _Refused("a container that contains itself")
        if id(obj) in expanded:
            continue
        alive.append(obj)
        if isinstance(obj, np.ndarray) and obj.dtype != object:
            expanded[id(obj)] = obj.size
            held += obj.size
            continue
        if depth >= MAX_DEPTH:
            raise _Refused(f"containers nested more than {MAX_DEPTH} deep")
        items = _items(obj)
        nested = [c for c in items if isinstance(c, _CONTAINERS)]
        expanded[id(obj)] = len(items)
        held += len(items)
        on_path.add(id(obj))
        stack.append((obj, depth, nested))
        stack.extend((c, depth + 1, None) for c in nested)
    extra = expanded.get(id(root), 0) - held
    if extra > MAX_SHARED_ELEMENTS:
        raise _Refused(
            f"shared references would expand the {held:,} elements the file holds by {extra:,} more "
            f"(at most {MAX_SHARED_ELEMENTS:,}): the same list is referenced from many places"
        )


def safe_loads(data: bytes, *, path: str | Path | None = None):
    """Unpickle ``data`` admitting only numpy arrays/dtypes/scalars and builtin containers, sized as described above."""
    try:
        obj = _RestrictedUnpickler(data).load()
        _check_sharing(obj)
        return obj
    except _Refused as exc:
        raise CorekdError(f"pickle refused before allocating: {exc} (nothing in it was run)", path=path) from None
    except pickle.UnpicklingError as exc:
        raise CorekdError(f"untrusted pickle not loaded: {exc} (nothing in it was run)", path=path) from None
    except (
        EOFError,
        ValueError,
        TypeError,
        AttributeError,
        IndexError,
        KeyError,
        ImportError,
        struct.error,
        OverflowError,
        MemoryError,
        RecursionError,
    ) as exc:
        raise CorekdError(f"not a readable pickle ({type(exc).__name__}: {exc})", path=path) from None


def safe_load(path: str | Path):
    """:func:`safe_loads` of a file."""
    path = Path(path)
    if not path.is_file():
        raise CorekdError("file not found", path=path)
    return safe_loads(path.read_bytes(), path=path)

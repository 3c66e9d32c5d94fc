"""Seeds are data: every random stream is derived by name from a recorded base seed.

No module reseeds a global generator behind the caller's back; each stream gets its own
``torch.Generator`` / ``numpy.random.Generator`` whose seed is derived from explicit parts,
so adding a stream never shifts another one.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch


def derive_seed(*parts: object) -> int:
    """A stable 63-bit seed from any sequence of printable parts (same parts -> same seed)."""
    text = "\x1f".join(repr(p) for p in parts).encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little") >> 1


def torch_generator(*parts: object) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded from ``parts`` (draw on CPU, then move: same numbers on any device)."""
    gen = torch.Generator(device="cpu")
    gen.manual_seed(derive_seed(*parts))
    return gen


def numpy_generator(*parts: object) -> np.random.Generator:
    return np.random.default_rng(derive_seed(*parts))

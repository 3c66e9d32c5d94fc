"""Model weights files (``model.safetensors``) and their ``model.json``, read as untrusted input.

A checkpoint or a bundle is a pair of files that can be truncated, damaged or edited apart. Each
check here fails with one :class:`CorekdError` naming the file (and the field or tensor):

- :func:`~corekd.data.corpus.read_json`: model.json parses (the JSON error's line named);
- :func:`check_checksum`: the weights' SHA-256 equals model.json's ``weights_sha256`` (files
  written before the field existed carry none and are not checked);
- :func:`check_shapes`: the tensors the header lists (read without loading any data) are the ones
  the model that model.json describes has, shape for shape: sizes are checked before anything
  of that size is allocated;
- :func:`load_finite`: the tensors load, and every floating-point value is finite.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file

from corekd.errors import CorekdError
from corekd.files import file_sha256

CHECKSUM_FIELD = "weights_sha256"


def check_checksum(weights: Path, recorded: str | None, meta_path: Path) -> None:
    if recorded is None:  # written before checksums were recorded
        return
    actual = file_sha256(weights)
    if actual != recorded:
        raise CorekdError(
            f"SHA-256 {actual[:12]}... differs from the {recorded[:12]}... that {meta_path.name} records "
            f"({CHECKSUM_FIELD}): the weights file is damaged or comes from another model",
            path=weights,
        )


def check_shapes(weights: Path, expected: dict[str, tuple[int, ...]], describe: str) -> None:
    """The header's tensor names and shapes equal ``expected`` (name -> shape); no tensor data is read."""
    try:
        with safe_open(str(weights), framework="pt") as fh:
            found = {k: tuple(fh.get_slice(k).get_shape()) for k in fh.keys()}
    except (SafetensorError, OSError) as exc:
        raise CorekdError(
            f"not a readable safetensors file ({exc}; the file is truncated or damaged)", path=weights
        ) from None
    missing, unexpected = sorted(set(expected) - set(found)), sorted(set(found) - set(expected))
    if missing or unexpected:
        raise CorekdError(
            f"the weights do not fit the model that {describe} describes: missing {missing[:3]}, "
            f"unexpected {unexpected[:3]}",
            path=weights,
        )
    for name, shape in expected.items():
        if found[name] != shape:
            raise CorekdError(
                f"the weights do not fit the model that {describe} describes: shape {list(found[name])} "
                f"here, {list(shape)} there (its dims, num_classes or model sizes disagree with the weights)",
                path=weights,
                field=name,
            )


def load_finite(weights: Path, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """The tensors of ``weights``; a NaN or infinite value is refused, naming the tensor."""
    try:
        tensors = load_file(str(weights), device=str(device))
    except (SafetensorError, OSError) as exc:
        raise CorekdError(
            f"not a readable safetensors file ({exc}; the file is truncated or damaged)", path=weights
        ) from None
    for name, t in tensors.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            bad = int((~torch.isfinite(t)).sum())
            raise CorekdError(
                f"{bad} non-finite value(s) (NaN/inf); a model with them cannot answer", path=weights, field=name
            )
    return tensors

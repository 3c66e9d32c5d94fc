"""Where tensors live: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``, checked against this machine."""

from __future__ import annotations

import torch

from corekd.errors import CorekdError


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise CorekdError(f"unknown device '{name}': expected auto, cpu, cuda, cuda:N or mps", field="device") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CorekdError(
            f"device '{name}' requested, but CUDA is not available here (use --device cpu or auto)", field="device"
        )
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise CorekdError(
            f"device '{name}' requested, but there are {torch.cuda.device_count()} CUDA device(s)", field="device"
        )
    if device.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise CorekdError(
            f"device '{name}' requested, but MPS is not available here (use --device cpu or auto)", field="device"
        )
    return device

"""Device choice: CUDA when present, else Apple MPS, else CPU; an explicit name wins."""

from __future__ import annotations

import os

import torch

from aecore.errors import ConfigError


def pick_device(name: str | None = None) -> torch.device:
    if name in (None, "", "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError) as err:
        raise ConfigError(f"unknown device {name!r} (use cpu, cuda, cuda:N or mps)") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} asked for, but CUDA is not available on this machine")
    if device.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConfigError(f"device {name!r} asked for, but MPS is not available on this machine")
    return device


def device_label(device: str | torch.device) -> str:
    """'cpu (2 cores, torch 2.x)' or 'cuda (NVIDIA H100 …)': what config.json records as trained_on."""
    device = str(device)
    if device.startswith("cuda") and torch.cuda.is_available():
        return f"{device} ({torch.cuda.get_device_name()})"
    if device == "cpu":
        return f"cpu ({os.cpu_count()} cores, torch {torch.__version__})"
    return device

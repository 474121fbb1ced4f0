"""Device choice: CUDA when present, else Apple MPS, else CPU; an explicit name wins."""

from __future__ import annotations

import os
import threading
from typing import Callable, TypeVar

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


def bf16_problem(device: torch.device) -> str | None:
    """Why bfloat16 autocast cannot train on `device`, or None when it can.

    On a CPU only native bfloat16 arithmetic (AVX512-BF16 or AMX) is worth it: elsewhere oneDNN
    emulates it, slower than float32. With it, the MLP AE trained 1.35× and the VAE 1.6× faster on this
    project's 2-core machine, at the same loss (bench/README.md, peers.py). Apple's MPS is left out.
    """
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return None
        return f"{torch.cuda.get_device_name(device)} has no bfloat16 support"
    if device.type == "cpu":
        checks = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
        if any(check is not None and check() for check in checks):
            return None
        return "this CPU has no native bfloat16 arithmetic (AVX512-BF16 or AMX), where it is slower than fp32"
    return f"bf16 autocast is not supported on {device.type}"


T = TypeVar("T")


def run_flushing_denormals(fn: Callable[[], T], *, on_interrupt: Callable[[], None]) -> T:
    """fn() in a new thread whose CPU arithmetic flushes denormal floats to zero; returns its result.

    Why: training drives some values into the denormal range (below 1.2e-38), where x86 arithmetic
    is many times slower: the MLP AE's output-layer gradients on MNIST's black background (sigmoid
    outputs near 0) get there within two epochs, and the trainer slows as they do (bench/README.md).
    The flag (FTZ/DAZ) belongs to a thread, and OpenMP workers copy it from the thread that creates
    them, once; so it is set in a fresh thread before its first parallel operation. The caller's
    threads keep their own setting. On an interrupt in the caller (Ctrl-C), `on_interrupt` asks fn
    to stop (the trainer's cancel flag), the thread finishes its batch, and the interrupt is re-raised.
    """
    outcome: dict[str, object] = {}
    done, entered = threading.Event(), threading.Event()

    def target() -> None:
        entered.set()
        torch.set_flush_denormal(True)  # False (and nothing changes) on CPUs without the flag
        try:
            outcome["result"] = fn()
        except BaseException as err:  # re-raised in the caller, KeyboardInterrupt and SystemExit too
            outcome["error"] = err
        finally:
            done.set()

    # Waits on an Event, not Thread.join: a join interrupted by Ctrl-C marks a live thread as finished
    # (CPython's bpo-45274 handling), so a second join would not wait for the batch to end.
    # started inside the try: a Ctrl-C that lands while start() still waits for the thread (it may have
    # run batches by then on a busy machine) must cancel it too, not leave it training
    thread = threading.Thread(target=target, name="aecore-train", daemon=True)
    try:
        thread.start()
        done.wait()
    except BaseException:
        on_interrupt()
        if entered.wait(5.0):              # the thread runs (an interrupt inside start() may come first)
            done.wait()
        raise
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return outcome["result"]  # type: ignore[return-value]


def device_label(device: str | torch.device) -> str:
    """'cpu (2 cores, torch 2.x)' or 'cuda (NVIDIA H100 …)': what config.json records as trained_on."""
    device = str(device)
    if device.startswith("cuda") and torch.cuda.is_available():
        return f"{device} ({torch.cuda.get_device_name()})"
    if device == "cpu":
        return f"cpu ({os.cpu_count()} cores, torch {torch.__version__})"
    return device
